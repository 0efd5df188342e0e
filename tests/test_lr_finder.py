"""`Trainer.lr_find()` / `auto_lr_find`: Lightning's LR range test on the HF job, leaving no trace.

The demo-scale check (MiniLM on BBC News: the suggestion trains to >= 0.95 held-out accuracy) is a slow run whose
figures are in `benchmarks/README.md`; the notebook cell that plots the curve is executed by `test_notebooks.py`.
"""

from __future__ import annotations

import copy
import math
import os
import random
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from helpers import (
    JOB_ARGS,
    ToyClassification,
    assert_same_weights,
    bare_lightning_trainer,
    make_args,
    needs_transformers,
    tiny_bert,
    train_logs,
)

from hf_lightning import Trainer
from hf_lightning.lr_finder import LRFinderResult


def trainer_for(out: Any, model: Any = None, trainer_cls: type = Trainer, **overrides: Any) -> Trainer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trainer_cls(
            model=model if model is not None else tiny_bert(),
            args=make_args("hfl", str(out), **{**JOB_ARGS, **overrides}),
            train_dataset=ToyClassification(48, seed=1),
        )


def rng_draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_lr_find_leaves_model_optimizer_rng_and_output_dir_unchanged(tmp_path) -> None:
    """After lr_find, train() ends bit-identical to a train() without it: same weights, same logs."""
    plain = trainer_for(tmp_path / "plain")
    plain.train()

    model = tiny_bert()
    weights = copy.deepcopy(model.state_dict())
    trainer = trainer_for(tmp_path / "found", model=model)
    before = sorted(os.listdir(tmp_path / "found"))
    state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    result = trainer.lr_find(num_training=20)
    assert_same_weights_dict(model.state_dict(), weights)
    assert all(p.grad is None for p in model.parameters()) and model.training
    assert sorted(os.listdir(tmp_path / "found")) == before
    assert trainer.optimizer is None and trainer.lightning_trainer is None and trainer.lightning_module is None
    after = random.getstate(), np.random.get_state(), torch.get_rng_state()
    assert after[0] == state[0] and np.array_equal(after[1][1], state[1][1]) and torch.equal(after[2], state[2])
    assert isinstance(result, LRFinderResult) and result.suggestion is not None
    trainer.train()
    assert_same_weights(plain.model, trainer.model)
    assert train_logs(plain) == train_logs(trainer)


def assert_same_weights_dict(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_curve_one_point_per_optimiser_step(tmp_path) -> None:
    """Gradient accumulation 2: the sweep has one learning rate and one (window) loss per optimiser step, from
    min_lr up exponentially; the trainer's own `compute_loss` computes every micro-batch."""
    calls = []

    class Counting(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            calls.append(inputs["input_ids"].shape[0])
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    trainer = trainer_for(tmp_path, trainer_cls=Counting, gradient_accumulation_steps=2)
    result = trainer.lr_find(min_lr=1e-6, max_lr=1e-1, num_training=14, early_stop_threshold=None)
    assert len(result.lrs) == len(result.losses) == 14
    assert result.lrs[0] == 1e-6 and result.lrs[-1] == pytest.approx(1e-1)
    ratios = [b / a for a, b in zip(result.lrs[1:], result.lrs[2:])]  # Lightning's sweep: geometric after the start
    assert all(r == pytest.approx(ratios[0]) for r in ratios) and ratios[0] > 1
    assert all(math.isfinite(loss) for loss in result.losses)
    assert len(calls) == 28  # 14 steps x 2 micro-batches
    assert result.suggestion in result.lrs  # Lightning skips the first 10 points and the last one


@needs_transformers("activation_checkpointing")
def test_activation_checkpointing_is_on_for_the_sweep_only(tmp_path) -> None:
    """Like `train()`, the sweep runs with `activation_checkpointing`; it leaves the model as it found it."""
    model = tiny_bert()
    seen = []

    class Probe(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            seen.append(model.is_activation_checkpointing)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    trainer = trainer_for(tmp_path, model=model, trainer_cls=Probe, activation_checkpointing=True)
    trainer.lr_find(num_training=3)
    assert seen == [True] * 3 and not model.is_activation_checkpointing


def test_a_user_optimizer_gets_its_state_back(tmp_path) -> None:
    model = tiny_bert()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    trainer = trainer_for(tmp_path, model=model, max_steps=3, save_strategy="no")
    trainer.optimizer = optimizer
    trainer.train()  # the optimiser now has state
    state = copy.deepcopy(optimizer.state_dict())
    weights = copy.deepcopy(model.state_dict())
    trainer.lr_find(num_training=5)
    assert trainer.optimizer is optimizer
    restored = optimizer.state_dict()
    assert restored["param_groups"] == state["param_groups"]
    for key, value in state["state"].items():
        for name, tensor in value.items():
            assert torch.equal(restored["state"][key][name], tensor), name
    assert_same_weights_dict(model.state_dict(), weights)


def test_plot(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    result = trainer_for(tmp_path).lr_find(num_training=10, plot=str(tmp_path / "lr.png"))
    assert (tmp_path / "lr.png").stat().st_size > 0
    axes = result.figure.axes[0]
    assert axes.get_xscale() == "log" and axes.get_xlabel() == "learning rate"


def test_auto_lr_find_trains_with_the_suggestion(tmp_path, caplog) -> None:
    kw = dict(auto_lr_find=True, lr_scheduler_type="constant", max_steps=3)
    trainer = trainer_for(tmp_path / "found", lr_find_kwargs={"num_training": 20}, **kw)
    suggestion = trainer_for(tmp_path / "probe").lr_find(num_training=20).suggestion
    with caplog.at_level("WARNING", logger="hf_lightning"):
        trainer.train()
    assert suggestion is not None and trainer.args.learning_rate == suggestion == trainer.lr_find_result.suggestion
    assert "auto_lr_find: learning_rate 0.001 ->" in caplog.text
    assert train_logs(trainer)[0]["learning_rate"] == suggestion
    # Too short a sweep for Lightning to suggest anything (it skips the first 10 points): the rate stays.
    short = trainer_for(tmp_path / "short", lr_find_kwargs={"num_training": 10}, **kw)
    short.train()
    assert short.args.learning_rate == 1e-3 and "no suggestion" in caplog.text


def test_bad_options_are_refused_before_training(tmp_path) -> None:
    with pytest.raises(ValueError, match="Unknown lr_find option"):
        make_args("hfl", str(tmp_path), auto_lr_find=True, lr_find_kwargs={"steps": 5})
    with pytest.raises(ValueError, match="min_lr < max_lr"):
        trainer_for(tmp_path).lr_find(min_lr=1.0, max_lr=0.1)
    model = tiny_bert()
    with pytest.raises(ValueError, match="auto_lr_find"):
        Trainer(
            model=model,
            args=make_args("hfl", str(tmp_path), auto_lr_find=True),
            train_dataset=ToyClassification(8),
            optimizers=(torch.optim.SGD(model.parameters(), lr=0.1), None),
        )


def test_plain_lightning_tuner_on_hf_lightning_module(tmp_path) -> None:
    """Lightning's own `Tuner.lr_find` on the plain path: it steps its range-test schedule through the module's manual
    optimisation, leaves the weights alone and sets `module.learning_rate` (= `args.learning_rate`)."""
    from lightning.pytorch.tuner import Tuner

    from hf_lightning import HFDataModule, HFLightningModule

    args = make_args("hfl", str(tmp_path), per_device_train_batch_size=4, learning_rate=1e-3)
    model = tiny_bert()
    weights = copy.deepcopy(model.state_dict())
    module = HFLightningModule.from_args(model, args)
    data = HFDataModule(args, train_dataset=ToyClassification(48, seed=1))
    trainer = bare_lightning_trainer(tmp_path, max_steps=3)
    finder = Tuner(trainer).lr_find(module, datamodule=data, num_training=15)
    lrs = finder.results["lr"]
    assert len(lrs) == 15 and lrs[-1] > 100 * lrs[0]  # the schedule was stepped: the sweep moved
    assert args.learning_rate == finder.suggestion() == module.learning_rate
    assert_same_weights_dict(model.state_dict(), weights)
    trainer.fit(module, datamodule=data)
    assert trainer.optimizers[0].param_groups[0]["initial_lr"] == finder.suggestion()
