"""`hf_lightning.compat`: what the installed transformers has, and clear errors for what it does not.

These tests run on whichever transformers is installed (`make test-compat` runs them on the oldest supported and the
newest release). A feature newer than the installed release is tested for its error; a feature the installed release
has is tested for its error by hiding it (`compat.available` patched), so both paths run everywhere.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch
import transformers
from helpers import QUIET_ARGS, tiny_bert, tiny_llama
from packaging.version import Version
from transformers import HfArgumentParser
from transformers import TrainingArguments as HFTrainingArguments

from hf_lightning import Seq2SeqTrainingArguments, TrainingArguments, compat
from hf_lightning.data import train_sampler
from hf_lightning.training_args import NEWER_FIELDS

# Each feature of `compat.SINCE`, with a value that asks for it.
FEATURE_VALUES = {
    "train_sampling_strategy": {"train_sampling_strategy": "sequential"},
    "ddp_static_graph": {"ddp_static_graph": True},
    "trackio_bucket_id": {"trackio_bucket_id": "bucket"},
    "trackio_static_space_id": {"trackio_static_space_id": "space"},
    "dataloader_in_order": {"dataloader_in_order": True},
    "dataloader_multiprocessing_context": {"dataloader_multiprocessing_context": "spawn"},
    "activation_checkpointing": {"activation_checkpointing": True},
    "activation_checkpointing_kwargs": {"activation_checkpointing_kwargs": {"use_reentrant": False}},
    "lr_scheduler_type='greedy'": {"lr_scheduler_type": "greedy", "eval_strategy": "epoch"},
    "train_sampling_strategy='batch_rebalance'": {"train_sampling_strategy": "batch_rebalance"},
}


def test_every_feature_has_a_test_value():
    layer_options = "activation_checkpointing_kwargs['every_n_layers'/'offload']"  # tested on a model below
    assert set(FEATURE_VALUES) | {layer_options} == set(compat.SINCE)


@pytest.mark.parametrize("feature", sorted(compat.SINCE))
def test_since_matches_the_installed_transformers(feature):
    """`SINCE` only words the errors; what is available is looked up. The two must agree on every release."""
    expected = compat.TRANSFORMERS_VERSION >= Version(compat.SINCE[feature])
    assert compat.available(feature) == expected, (
        f"transformers {transformers.__version__} {'has' if compat.available(feature) else 'lacks'} {feature}, "
        f"but SINCE says it came in {compat.SINCE[feature]}"
    )


def _hide(monkeypatch, feature: str) -> None:
    """Make `feature` look absent from the installed transformers."""
    real = compat.available
    monkeypatch.setattr(compat, "available", lambda f: False if f == feature else real(f))


@pytest.mark.parametrize("cls", [TrainingArguments, Seq2SeqTrainingArguments])
@pytest.mark.parametrize("feature", sorted(FEATURE_VALUES))
def test_a_newer_feature_names_the_release(tmp_path, monkeypatch, feature, cls):
    if compat.available(feature):
        _hide(monkeypatch, feature)
    field = next(iter(FEATURE_VALUES[feature]))  # a value of a field the release lacks: the field is named first
    named = field if field in compat.SINCE and not compat.available(field) else feature
    with pytest.raises(compat.NewerTransformersRequired, match=rf"transformers >= {compat.SINCE[named]}") as err:
        cls(output_dir=str(tmp_path), **QUIET_ARGS, **FEATURE_VALUES[feature])
    assert str(err.value).startswith(f"`{named}`") and transformers.__version__ in str(err.value)


@pytest.mark.parametrize("feature", sorted(FEATURE_VALUES))
def test_an_available_feature_is_accepted(tmp_path, feature):
    if not compat.available(feature):
        pytest.skip(f"{feature} needs transformers >= {compat.SINCE[feature]}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        TrainingArguments(output_dir=str(tmp_path), **QUIET_ARGS, **FEATURE_VALUES[feature])


def test_unknown_arguments_stay_type_errors(tmp_path):
    with pytest.raises(TypeError, match="no_such_argument"):
        TrainingArguments(output_dir=str(tmp_path), no_such_argument=1)


def test_newer_arguments_are_placeholders_where_missing(tmp_path):
    """Where the installed transformers lacks an argument of a later release, `TrainingArguments` declares it (so the
    command line and LightningCLI name the release too), always None and left out of `to_dict()`."""
    args = TrainingArguments(output_dir=str(tmp_path), **QUIET_ARGS)
    for name in NEWER_FIELDS:
        assert not compat.has_training_argument(name) and getattr(args, name) is None and name not in args.to_dict()
    missing = [f for f in FEATURE_VALUES if f.isidentifier() and not compat.available(f)]
    assert sorted(NEWER_FIELDS) == sorted(missing)
    if missing:
        with pytest.raises(compat.NewerTransformersRequired, match=missing[0]):
            HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(
                ["--output_dir", str(tmp_path), f"--{missing[0]}", "1"]
            )


def test_newer_argument_defaults_are_transformers(tmp_path):
    """What a field older releases lack reads as there is the default transformers gives it where it exists."""
    for name, default in compat.NEWER_ARGUMENT_DEFAULTS.items():
        if compat.has_training_argument(name):
            assert compat.hf_default(name) == default, name
        args = TrainingArguments(output_dir=str(tmp_path), **QUIET_ARGS)
        assert compat.training_argument(args, name) == default


# ---- fields an older transformers still owns -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"), [("warmup_ratio", 0.1), ("logging_dir", "runs/x"), ("group_by_length", True)]
)
def test_a_field_transformers_still_has_keeps_its_meaning(tmp_path, name, value):
    """Before 5.15 (`warmup_ratio`, `logging_dir`) and 5.2 (`group_by_length`) these are transformers' own fields, not
    hf_lightning's v4 aliases: the arguments then hold and resolve them exactly as transformers' do."""
    if not compat.has_training_argument(name):
        pytest.skip(f"transformers {transformers.__version__} no longer has `{name}` (hf_lightning's v4 alias applies)")
    kwargs = dict(output_dir=str(tmp_path), **QUIET_ARGS, **{name: value})
    ours, theirs = TrainingArguments(**kwargs), HFTrainingArguments(**kwargs)
    assert getattr(ours, name) == getattr(theirs, name) == value
    assert ours.get_warmup_steps(95) == theirs.get_warmup_steps(95)
    ours_dict, theirs_dict = ours.to_dict(), theirs.to_dict()
    assert ours_dict[name] == theirs_dict[name] and {k: ours_dict[k] for k in theirs_dict if k in ours_dict} == {
        k: v for k, v in theirs_dict.items() if k in ours_dict
    }
    # A conversion (e.g. for Seq2SeqTrainer) keeps it without conflicting with what transformers derived from it.
    assert getattr(Seq2SeqTrainingArguments(**kwargs), name) == value


def test_sampling_strategy_before_and_after_5_2(tmp_path):
    dataset = [{"input_ids": [1] * n} for n in range(1, 9)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grouped = TrainingArguments(output_dir=str(tmp_path), group_by_length=True, **QUIET_ARGS)
        plain = TrainingArguments(output_dir=str(tmp_path), **QUIET_ARGS)
    assert compat.train_sampling_strategy(grouped) == "group_by_length"
    assert compat.train_sampling_strategy(plain) == "random"
    assert type(train_sampler(dataset, grouped)).__name__ == "LengthGroupedSampler"


# ---- activation checkpointing ----------------------------------------------------------------------------------


def test_activation_checkpointing_from_either_name(tmp_path):
    """`gradient_checkpointing` works on every release (`activation_checkpointing` from 5.23)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = TrainingArguments(output_dir=str(tmp_path), gradient_checkpointing=True, **QUIET_ARGS)
    enabled, kwargs = compat.activation_checkpointing(args)
    assert enabled and kwargs == {}
    model = tiny_llama()
    compat.enable_model_activation_checkpointing(model, kwargs)
    assert compat.model_is_activation_checkpointing(model)
    assert not compat.model_is_activation_checkpointing(torch.nn.Linear(2, 2))


def test_layer_options_need_5_16(monkeypatch):
    feature = "activation_checkpointing_kwargs['every_n_layers'/'offload']"
    if compat.available(feature):
        model = tiny_llama()
        compat.enable_model_activation_checkpointing(model, {"every_n_layers": 2})
        assert compat.model_is_activation_checkpointing(model)
        _hide(monkeypatch, feature)
    with pytest.raises(compat.NewerTransformersRequired, match=r"every_n_layers.*transformers >= 5\.16\.0"):
        compat.enable_model_activation_checkpointing(tiny_llama(), {"every_n_layers": 2})


# ---- moved functions -------------------------------------------------------------------------------------------


def test_checkpoint_rotation(tmp_path):
    """`rotate_checkpoints` / `sort_checkpoints` (transformers functions from 5.2, `Trainer` methods before) keep the
    newest `save_total_limit` folders and the best one."""
    for step in (1, 2, 3, 4):
        os.makedirs(tmp_path / f"checkpoint-{step}")
    best = str(tmp_path / "checkpoint-1")
    assert compat.sort_checkpoints(str(tmp_path), best_model_checkpoint=best)[-2:] == [
        best,
        str(tmp_path / "checkpoint-4"),
    ]
    compat.rotate_checkpoints(str(tmp_path), save_total_limit=2, best_model_checkpoint=best)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-1", "checkpoint-4"]


def test_neftune_hook_on_and_off():
    model = tiny_llama()
    embeddings = model.get_input_embeddings()
    handle = compat.activate_neftune(model, 5.0)
    assert embeddings.neftune_noise_alpha == 5.0 and len(embeddings._forward_hooks) == 1
    compat.deactivate_neftune(model, handle)
    assert not hasattr(embeddings, "neftune_noise_alpha") and not embeddings._forward_hooks


def test_optimizer_table_and_metric_schedulers(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), **QUIET_ARGS)
    optimizer_cls, kwargs = compat.optimizer_cls_and_kwargs(args, tiny_bert())
    assert issubclass(optimizer_cls, torch.optim.Optimizer) and kwargs["lr"] == args.learning_rate
    greedy = compat.available("lr_scheduler_type='greedy'")
    assert len(compat.metric_scheduler_classes()) == (2 if greedy else 1)


def test_safe_globals_loads_an_rng_state(tmp_path):
    import random

    import numpy as np

    path = tmp_path / "rng.pth"
    torch.save({"python": random.getstate(), "numpy": np.random.get_state()}, path)
    with compat.safe_globals():
        assert set(torch.load(path, weights_only=True)) == {"python", "numpy"}


def test_fsdp_managed_module():
    assert compat.is_fsdp_managed_module(tiny_bert()) is False
