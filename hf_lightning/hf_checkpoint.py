"""`HFCheckpoint`: HF's `checkpoint-N/` folders from a `lightning.Trainer`, as a Lightning callback.

On a `lightning.Trainer` the user owns, checkpointing is a callback's job (Lightning's vocabulary): `ModelCheckpoint`
writes Lightning's `.ckpt` files (the module adds the HF state to them), `HFCheckpoint` writes HF's folders. Both doors
write those folders with the same code: `HFCheckpoint` asks the module's HF loop to save
(`HFTrainingLoop.save_checkpoint_folder`), the writer `hf_lightning.Trainer` uses at `save_strategy`: weights in HF's
layout gathered from sharded strategies (`model.safetensors` + config, which `from_pretrained` loads), the processing
class, `training_args.bin`, optimizer / scheduler / scaler / RNG (CPU and CUDA) states and `trainer_state.json`,
written into a temporary folder published by rename, rotated by `save_total_limit`. A folder resumes with either door:
`hf_lightning.Trainer(...).train(resume_from_checkpoint=...)` or `TrainingArguments(resume_from_checkpoint=...)` on
the module.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from typing_extensions import override

__all__ = ["HFCheckpoint"]


def _loop_of(pl_module: pl.LightningModule) -> Any:
    loop = getattr(pl_module, "loop", None)
    if loop is None or not hasattr(loop, "save_checkpoint_folder"):
        raise TypeError(
            f"`HFCheckpoint` saves the HF checkpoints of an `HFLightningModule`; the module is a {type(pl_module)}."
        )
    return loop


class HFCheckpoint(pl.Callback):
    """Writes `checkpoint-{global_step}/` in HF's layout into `dirpath` (default: `args.output_dir`).

    When: every `every_n_steps` optimiser steps; unset, as the module's `args.save_strategy` says - every `save_steps`
    ("steps"), at each epoch end ("epoch"), after an evaluation that found a new best `metric_for_best_model` ("best"),
    never ("no") - and at the end of training (`save_on_train_end`). Keeps `save_total_limit` folders (default: the
    arguments'). `processing_class` (else the datamodule's `processing_class`, else its collator's tokenizer) is saved
    with each folder, as `transformers.Trainer` does.

    Every rank takes part (sharded weights and optimizer state are gathered); rank 0 writes."""

    def __init__(
        self,
        dirpath: str | None = None,
        every_n_steps: int | None = None,
        save_total_limit: int | None = None,
        save_on_train_end: bool = True,
        processing_class: Any = None,
    ) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"`every_n_steps` must be >= 1, got {every_n_steps}.")
        self.dirpath = dirpath
        self.every_n_steps = every_n_steps
        self.save_total_limit = save_total_limit
        self.save_on_train_end = save_on_train_end
        self.processing_class = processing_class
        self._strategy = "steps" if every_n_steps is not None else None
        self._last_saved = -1

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        loop = _loop_of(pl_module)
        args = loop.args
        if self.dirpath is None:
            self.dirpath = args.output_dir
        if self._strategy is None:
            self._strategy = str(getattr(args.save_strategy, "value", args.save_strategy))
            if self._strategy == "steps":
                self.every_n_steps = int(args.save_steps)
        if self.save_total_limit is None:
            self.save_total_limit = args.save_total_limit
        if self.processing_class is not None:
            loop.processing_class = self.processing_class

    def _step(self, pl_module: pl.LightningModule) -> int:
        return _loop_of(pl_module).state.global_step

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        step = self._step(pl_module)
        if self._strategy == "steps" and self.every_n_steps and step > max(self._last_saved, 0):
            if step % self.every_n_steps == 0:
                self.save(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._strategy == "epoch" and self._step(pl_module) > max(self._last_saved, 0):
            self.save(trainer, pl_module)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loop = _loop_of(pl_module)
        new_best = loop.last_evaluation_found_new_best and loop.state.global_step > max(self._last_saved, 0)
        if self._strategy == "best" and trainer.state.fn == "fit" and new_best:
            self.save(trainer, pl_module)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_on_train_end and self._step(pl_module) > max(self._last_saved, 0):
            self.save(trainer, pl_module)

    def save(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        """Write `checkpoint-{global_step}` now (a collective: call it on every rank); returns its path."""
        folder = _loop_of(pl_module).save_checkpoint_folder(self.dirpath, self.save_total_limit)
        self._last_saved = self._step(pl_module)
        return folder
