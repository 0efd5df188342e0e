"""`lightning.Trainer` arguments that have an HF meaning (`hf_lightning.lightning_kwargs`): translated into their
`TrainingArguments` field (the same run as setting the field) or refused with a message naming it; precision plugins
and `accelerator="cpu"` with `bf16`."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
from helpers import ToyClassification, assert_same_weights, make_args, run_job, tiny_bert, train_logs
from lightning.pytorch.plugins.precision import MixedPrecision

from hf_lightning import HFDataModule, HFLightningModule, TrainingArguments


@pytest.mark.parametrize(
    ("lightning", "hf"),
    [
        ({"max_steps": 3}, {"max_steps": 3}),
        ({"gradient_clip_val": 0.05}, {"max_grad_norm": 0.05}),
        ({"accumulate_grad_batches": 2}, {"gradient_accumulation_steps": 2}),
        ({"max_epochs": 1}, {"num_train_epochs": 1}),
    ],
    ids=["max_steps", "gradient_clip_val", "accumulate_grad_batches", "max_epochs"],
)
def test_lightning_kwargs_are_the_hf_fields(lightning: dict, hf: dict, tmp_path: Path) -> None:
    """`lightning_trainer_kwargs={"max_steps": 3}` is `max_steps=3` (budget, schedule, progress bar), and so on."""
    unset = {"num_train_epochs": 3.0} if "max_epochs" in lightning else {}  # the field at its default
    ours = run_job("hfl", str(tmp_path / "kwargs"), lightning_trainer_kwargs=lightning, **unset)
    theirs = run_job("hf", str(tmp_path / "hf"), **hf)
    assert ours.state.max_steps == theirs.state.max_steps
    assert ours.state.global_step == theirs.state.global_step
    assert_same_weights(ours.model, theirs.model)
    assert [e["learning_rate"] for e in train_logs(ours)] == [e["learning_rate"] for e in train_logs(theirs)]
    field, value = next(iter(hf.items()))
    assert getattr(ours.args, field) == value and not ours.args.lightning_trainer_kwargs


def test_lightning_kwargs_refused_or_contradicting_name_the_hf_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"val_check_interval=0.5.*`eval_strategy`/`eval_steps`"):
        make_args("hfl", str(tmp_path), lightning_trainer_kwargs={"val_check_interval": 0.5})
    with pytest.raises(ValueError, match=r"gradient_clip_algorithm='value'.*`max_grad_norm`"):
        make_args("hfl", str(tmp_path), lightning_trainer_kwargs={"gradient_clip_algorithm": "value"})
    with pytest.raises(ValueError, match=r"means `max_steps=3`.*`max_steps`=5 was given"):
        make_args("hfl", str(tmp_path), max_steps=5, lightning_trainer_kwargs={"max_steps": 3})
    args = make_args("hfl", str(tmp_path), max_steps=3, lightning_trainer_kwargs={"max_steps": 3, "benchmark": True})
    assert args.max_steps == 3 and args.lightning_trainer_kwargs == {"benchmark": True}


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ({"gradient_clip_val": 0.5}, r"TrainingArguments\(max_grad_norm=0.5\)"),
        ({"accumulate_grad_batches": 2}, r"TrainingArguments\(gradient_accumulation_steps=2\)"),
    ],
)
def test_a_users_lightning_trainer_is_told_the_hf_field(setting: dict, field: str, tmp_path: Path) -> None:
    """On a `lightning.Trainer` the user built, Lightning would refuse these under manual optimisation without
    naming HF's field; the module refuses first, naming it."""
    args = make_args("hfl", str(tmp_path))
    module = HFLightningModule.from_args(tiny_bert(), args)
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, **setting)
    with pytest.raises(ValueError, match=field), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=HFDataModule(args, ToyClassification(8)))


def test_precision_plugin_and_bf16_on_cpu_are_accepted(tmp_path: Path) -> None:
    """`plugins=[MixedPrecision("bf16-mixed", "cpu")]` runs (the facade passes no `precision` then), and so does
    `bf16=True` with `accelerator="cpu"` (no `use_cpu` needed): the same bf16 autocast run."""
    plugin = MixedPrecision("bf16-mixed", "cpu")
    with_plugin = run_job("hfl", str(tmp_path / "plugin"), max_steps=2, plugins=[plugin])
    assert with_plugin.lightning_trainer.precision_plugin is plugin
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = TrainingArguments(str(tmp_path / "bf16"), bf16=True, accelerator="cpu", report_to="none")
    assert args.use_cpu
    bf16 = run_job("hfl", str(tmp_path / "bf16"), max_steps=2, bf16=True, use_cpu=False, accelerator="cpu")
    assert bf16.lightning_trainer.precision == "bf16-mixed"
    assert_same_weights(bf16.model, with_plugin.model)
    with pytest.raises(ValueError, match="precision plugin"):
        run_job("hfl", str(tmp_path / "both"), max_steps=2, bf16=True, plugins=[plugin])
