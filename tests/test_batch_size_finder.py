"""`Trainer.scale_batch_size()` / `auto_scale_batch_size`: the largest micro-batch that fits, same effective batch.

Out-of-memory errors are simulated on the CPU by a forward pre-hook that raises `torch.OutOfMemoryError` (with
CUDA's message) for batches above a size, as a GPU would for a model too large for them.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from typing import Any

import accelerate
import pytest
import torch
from helpers import (
    JOB_ARGS,
    ToyClassification,
    assert_same_weights,
    bare_lightning_trainer,
    make_args,
    tiny_bert,
    train_logs,
)
from packaging.version import Version

import hf_lightning.batch_size_finder as finder
from hf_lightning import Trainer
from hf_lightning.batch_size_finder import is_out_of_memory


def oom_above(limit: int) -> Any:
    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        size = kwargs["input_ids"].shape[0]
        if size > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {size} GiB")

    return hook


def trainer_for(out: Any, limit: int | None = None, n_train: int = 64, **overrides: Any) -> Trainer:
    model = tiny_bert()
    if limit is not None:
        model.register_forward_pre_hook(oom_above(limit), with_kwargs=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Trainer(
            model=model,
            args=make_args("hfl", str(out), **{**JOB_ARGS, **overrides}),
            train_dataset=ToyClassification(n_train, seed=1),
        )


def test_power_search_keeps_the_effective_batch(tmp_path) -> None:
    trainer = trainer_for(tmp_path, limit=13, per_device_train_batch_size=4, gradient_accumulation_steps=8)
    weights = copy.deepcopy(trainer.model.state_dict())
    result = trainer.scale_batch_size("power")
    assert result.trials == {4: True, 8: True, 16: False}
    assert (result.max_fitting, result.per_device_train_batch_size, result.gradient_accumulation_steps) == (8, 8, 4)
    assert result.effective_batch_size == 32
    assert all(torch.equal(v, weights[k]) for k, v in trainer.model.state_dict().items())
    assert (trainer.args.per_device_train_batch_size, trainer.args.gradient_accumulation_steps) == (4, 8)  # untouched


def test_binsearch_with_lightnings_margin_then_a_divisor_of_the_effective_batch(tmp_path) -> None:
    trainer = trainer_for(tmp_path, limit=13, per_device_train_batch_size=4, gradient_accumulation_steps=8)
    result = trainer.scale_batch_size("binsearch", max_trials=10)
    assert result.trials == {4: True, 8: True, 16: False, 12: True, 14: False, 13: True}
    assert result.max_fitting == 12  # 13 less 5 %
    assert (result.per_device_train_batch_size, result.gradient_accumulation_steps) == (8, 4)  # 8 x 4 = 32


def test_never_above_the_effective_batch_and_down_when_the_start_does_not_fit(tmp_path) -> None:
    roomy = trainer_for(tmp_path / "roomy", per_device_train_batch_size=4, gradient_accumulation_steps=2)
    for mode in ("power", "binsearch"):  # no memory limit met: no margin below it either
        result = roomy.scale_batch_size(mode)
        assert result.trials == {4: True, 8: True}  # 8 is the effective batch: larger could not keep it
        assert (result.per_device_train_batch_size, result.gradient_accumulation_steps) == (8, 1)
    tight = trainer_for(tmp_path / "tight", limit=5, per_device_train_batch_size=16, gradient_accumulation_steps=1)
    result = tight.scale_batch_size("power")
    assert result.trials == {16: False, 8: False, 4: True}
    assert (result.per_device_train_batch_size, result.gradient_accumulation_steps) == (4, 4)  # still 16 a step


def test_auto_scale_batch_size_trains_like_the_same_plan_set_by_hand(tmp_path, caplog) -> None:
    """The search changes how the effective batch is split, nothing else: the run equals one configured with the
    plan it found (same weights and logs)."""
    kw = dict(num_train_epochs=1, logging_steps=1, max_grad_norm=0.0)
    auto = trainer_for(tmp_path / "auto", limit=9, per_device_train_batch_size=4, gradient_accumulation_steps=4, **kw)
    auto.args.auto_scale_batch_size = "power"
    with caplog.at_level("WARNING", logger="hf_lightning"):
        auto.train()
    assert "per_device_train_batch_size=8 x gradient_accumulation_steps=2" in caplog.text
    assert (auto.args.per_device_train_batch_size, auto.args.gradient_accumulation_steps) == (8, 2)
    assert auto.state.train_batch_size == 8
    by_hand = trainer_for(tmp_path / "by_hand", per_device_train_batch_size=8, gradient_accumulation_steps=2, **kw)
    by_hand.train()
    assert_same_weights(by_hand.model, auto.model)
    assert train_logs(by_hand) == train_logs(auto)


def test_resume_takes_the_checkpoints_batch_without_searching(tmp_path, monkeypatch) -> None:
    kw = dict(per_device_train_batch_size=4, gradient_accumulation_steps=4, save_strategy="steps", save_steps=1)
    first = trainer_for(tmp_path, limit=9, auto_scale_batch_size="power", max_steps=2, **kw)
    first.train()
    monkeypatch.setattr(finder, "scale_batch_size", lambda *a, **k: pytest.fail("searched again on resume"))
    resumed = trainer_for(tmp_path, limit=9, auto_scale_batch_size="power", max_steps=3, **kw)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert (resumed.args.per_device_train_batch_size, resumed.args.gradient_accumulation_steps) == (8, 2)


def test_other_errors_propagate_and_nothing_fitting_is_an_error(tmp_path) -> None:
    def broken(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        raise RuntimeError("not a memory problem")

    trainer = trainer_for(tmp_path)
    trainer.model.register_forward_pre_hook(broken, with_kwargs=True)
    with pytest.raises(RuntimeError, match="not a memory problem"):
        trainer.scale_batch_size()
    nothing = trainer_for(tmp_path, limit=0, per_device_train_batch_size=2)
    with pytest.raises(RuntimeError, match="no micro-batch fits"):
        nothing.scale_batch_size()


def test_out_of_memory_errors_recognised() -> None:
    assert is_out_of_memory(torch.OutOfMemoryError("anything"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    # accelerate's test, which recognises Apple's MPS message from accelerate 1.15 (as for transformers.Trainer)
    mps = RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)")
    assert is_out_of_memory(mps) == (Version(accelerate.__version__) >= Version("1.15.0"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_bad_mode_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="auto_scale_batch_size"):
        make_args("hfl", str(tmp_path), auto_scale_batch_size="triple")
    with pytest.raises(ValueError, match="mode"):
        trainer_for(tmp_path).scale_batch_size("triple")


def test_plain_lightning_tuner_scales_the_datamodule(tmp_path, monkeypatch) -> None:
    """Lightning's own `Tuner.scale_batch_size` on the plain path finds `HFDataModule.batch_size`."""
    import lightning.pytorch.tuner.batch_size_scaling as scaling
    from lightning.pytorch.tuner import Tuner

    monkeypatch.setattr(scaling, "garbage_collection_cuda", lambda: None)  # a full gc.collect (~1 s) per trial

    from hf_lightning import HFDataModule, HFLightningModule

    args = make_args("hfl", str(tmp_path), per_device_train_batch_size=2)
    model = tiny_bert()
    model.register_forward_pre_hook(oom_above(6), with_kwargs=True)
    module = HFLightningModule.from_args(model, args)
    data = HFDataModule(args, train_dataset=ToyClassification(64, seed=1))
    trainer = bare_lightning_trainer(tmp_path, max_steps=2)
    # Lightning >= 2.6 keeps a 5% `margin` below the largest batch that fits; before, it has none
    no_margin = {"margin": 0} if "margin" in inspect.signature(Tuner.scale_batch_size).parameters else {}
    found = Tuner(trainer).scale_batch_size(module, datamodule=data, mode="binsearch", steps_per_trial=1, **no_margin)
    assert found == 6 and data.batch_size == 6 == args.per_device_train_batch_size
