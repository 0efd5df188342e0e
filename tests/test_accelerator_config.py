"""Tests for hf_lightning.accelerator_config: each `accelerator_config` sub-field honoured as transformers does, or
refused by name."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import transformers
from helpers import ToyClassification, assert_same_weights, make_args, run_job, tiny_bert, train_logs

import hf_lightning
from hf_lightning import accelerator_config as config
from hf_lightning.data import build_dataloader, train_sampler
from hf_lightning.module import HFLightningModule

ONE_PROCESS = {
    "split-even-dispatch-nonblocking": {
        "split_batches": True,
        "even_batches": False,
        "dispatch_batches": True,
        "non_blocking": True,
    },
    "not-seedable-sampler": {"use_seedable_sampler": False},
    "num-steps": {"gradient_accumulation_kwargs": {"num_steps": 3}},
    "sync-each-batch": {
        "gradient_accumulation_kwargs": {
            "sync_each_batch": True,
            "adjust_scheduler": False,
            "sync_with_dataloader": False,
        }
    },
}


@pytest.mark.parametrize("case", sorted(ONE_PROCESS))
def test_one_process_options_train_like_transformers(case: str, tmp_path) -> None:
    """On one process each accelerator_config option trains (and evaluates) as transformers.Trainer does with it:
    bit-identical weights and logs (dropout on, 2 epochs)."""
    job = dict(max_grad_norm=0.5, n_eval=5, eval_strategy="epoch")
    # a copy each: transformers writes num_steps=1 into the `gradient_accumulation_kwargs` dict it is given
    hf = run_job("hf", str(tmp_path / "hf"), accelerator_config=copy.deepcopy(ONE_PROCESS[case]), **job)
    hfl = run_job("hfl", str(tmp_path / "hfl"), accelerator_config=copy.deepcopy(ONE_PROCESS[case]), **job)
    assert_same_weights(hf.model, hfl.model)
    assert train_logs(hf) == train_logs(hfl)
    strip = ("runtime", "per_second")
    evals = [
        [{k: v for k, v in e.items() if not any(s in k for s in strip)} for e in t.state.log_history] for t in (hf, hfl)
    ]
    assert evals[0] == evals[1]
    assert hfl.args.gradient_accumulation_steps == hf.args.gradient_accumulation_steps
    default = run_job("hfl", str(tmp_path / "default"), **job)
    if case in ("not-seedable-sampler", "num-steps"):  # these change the run
        assert train_logs(default) != train_logs(hfl)
    else:  # these have no effect on one process, in transformers too
        assert_same_weights(default.model, hfl.model)


def test_seedable_sampler_switch_picks_the_sampler(tmp_path) -> None:
    seeded = make_args("hfl", str(tmp_path))
    plain = make_args("hfl", str(tmp_path), accelerator_config={"use_seedable_sampler": False})
    data = ToyClassification(4)
    assert type(train_sampler(data, seeded)).__name__ == "SeedableRandomSampler"
    sampler = train_sampler(data, plain)
    assert type(sampler) is torch.utils.data.RandomSampler and sampler.generator is None


def test_sync_each_batch_reduces_gradients_after_every_micro_batch(tmp_path, monkeypatch) -> None:
    """What the module tells DDP/DeepSpeed (`require_backward_grad_sync`) before each micro-batch, recorded on one
    process: only the window's last micro-batch by default, every one with `sync_each_batch`."""
    flags: dict[bool, list[bool]] = {}
    for each in (False, True):
        seen: list[bool] = []
        monkeypatch.setattr(HFLightningModule, "_gradient_sync_switch", lambda self, seen=seen: seen.append)
        kwargs = {"sync_each_batch": True} if each else {}
        run_job(
            "hfl",
            str(tmp_path / str(each)),
            n_train=16,
            num_train_epochs=1,
            gradient_accumulation_steps=2,
            accelerator_config={"gradient_accumulation_kwargs": kwargs},
        )
        flags[each] = seen
    # before each of the 4 micro-batches, then True again after each of the 2 optimiser steps
    assert flags[False] == [False, True, True, False, True, True]
    assert flags[True] == [True] * 6


def test_num_steps_with_gradient_accumulation_steps_is_refused_like_transformers(tmp_path) -> None:
    kwargs = dict(gradient_accumulation_steps=2, accelerator_config={"gradient_accumulation_kwargs": {"num_steps": 3}})
    with pytest.raises(ValueError, match="num_steps"):
        transformers.Trainer(model=tiny_bert(), args=make_args("hf", str(tmp_path), **kwargs))
    with pytest.raises(ValueError, match="`accelerator_config.gradient_accumulation_kwargs\\['num_steps'\\]`"):
        make_args("hfl", str(tmp_path), **kwargs)
    args = make_args("hfl", str(tmp_path), accelerator_config={"gradient_accumulation_kwargs": {"num_steps": 3}})
    assert args.gradient_accumulation_steps == 3
    again = hf_lightning.TrainingArguments(**{**args.to_dict(), "output_dir": str(tmp_path)})  # rebuilt: accepted
    assert again.gradient_accumulation_steps == 3


def test_unknown_gradient_accumulation_key_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="gradient_accumulation_kwargs.*unknown keys \\['num_stepz'\\]"):
        make_args("hfl", str(tmp_path), accelerator_config={"gradient_accumulation_kwargs": {"num_stepz": 3}})


def test_use_configured_state_is_refused(tmp_path) -> None:
    """transformers needs an accelerate state made before; hf_lightning's processes are Lightning's."""
    with pytest.raises(ValueError, match="`accelerator_config.use_configured_state`=True is not supported"):
        make_args("hfl", str(tmp_path), accelerator_config={"use_configured_state": True})


def test_non_blocking_without_pinned_memory_warns_like_transformers(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="hf_lightning"):
        make_args("hfl", str(tmp_path), accelerator_config={"non_blocking": True}, dataloader_pin_memory=False)
    assert "`non_blocking` is enabled but `dataloader_pin_memory` is not" in caplog.text


MULTI_PROCESS_REFUSED = [
    ("split_batches", True),
    ("dispatch_batches", True),
    ("even_batches", False),
    ("use_seedable_sampler", False),
]


@pytest.mark.parametrize(("name", "value"), MULTI_PROCESS_REFUSED, ids=[c[0] for c in MULTI_PROCESS_REFUSED])
def test_multi_process_options_are_refused_by_name(name: str, value, tmp_path) -> None:
    args = make_args("hfl", str(tmp_path), accelerator_config={name: value})
    config.check_for_processes(args, 1)  # one process: accepted
    with pytest.raises(ValueError, match=f"`accelerator_config.{name}`={value!r} is not supported.*several processes"):
        build_dataloader(ToyClassification(8), 2, lambda b: b, None, args, True, world_size=2, process_index=0)
    config.check_for_processes(make_args("hfl", str(tmp_path), accelerator_config={"dispatch_batches": False}), 2)
