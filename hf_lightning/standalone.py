"""hf_lightning from a plain `lightning.Trainer`: the HF step without the `hf_lightning.Trainer` facade.

`StandaloneLoop` is the HF side of `HFLightningModule` when Lightning's own `Trainer` (or `LightningCLI`) runs the
job: the loss as HF computes it (model loss, `num_items_in_batch`, world-size scaling, accumulation windows from
`HFDataModule`), HF's optimiser and schedule built from `TrainingArguments` in `configure_optimizers` (after the
strategy has wrapped the model), HF's `log_history` at `logging_steps`, also sent to Lightning's loggers with
`self.log`. The step budget, devices, strategy, loggers and callbacks are Lightning's.

`HFCheckpoint` is a Lightning callback writing `checkpoint-{step}/` folders in HF's layout (weights gathered from
sharded strategies, `model.safetensors` from rank 0 only, the tokenizer or other processing class,
optimizer/scheduler/RNG/`trainer_state.json`), so the models load with `from_pretrained` and the folders with
`hf_lightning.Trainer(resume_from_checkpoint=...)`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import random
import shutil
import warnings
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from transformers import TrainerControl, TrainerState
from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from hf_lightning import optimization
from hf_lightning.checkpoints import (
    OPTIMIZER_NAME,
    SCHEDULER_NAME,
    TMP_PREFIX,
    TRAINER_STATE_NAME,
    CheckpointMixin,
    save_model_files,
    save_model_folder,
)
from hf_lightning.data import AccumulationWindowLoader
from hf_lightning.log_output import published_paths
from hf_lightning.module import HFLightningModule
from hf_lightning.strategies import full_optimizer_state_dict, full_state_dict, save_engine_checkpoint
from hf_lightning.throughput import ThroughputMeter

__all__ = ["HFCheckpoint", "StandaloneLoop", "StandaloneModule"]

HF_STATE_KEY = "hf_lightning_state"


class StandaloneModule(HFLightningModule):
    """`HFLightningModule.from_args(...)`: the HF step plus Lightning's validation loop (the facade evaluates HF's
    way and has none)."""

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """The model's loss on an eval batch, averaged over the ranks and logged as `eval_loss`."""
        outputs = self.model(**batch)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs[0]
        size = next((v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() > 0), 1)
        self.log("eval_loss", loss, sync_dist=True, batch_size=size, prog_bar=True)
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A Lightning checkpoint (`ModelCheckpoint`, `trainer.save_checkpoint`) also carries the HF side Lightning
        does not know: the `TrainerState` (log history ...) and the HF schedule, stepped by the module itself."""
        checkpoint[HF_STATE_KEY] = self._loop.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """`fit(ckpt_path=...)`: Lightning restores the weights, optimizer and step count; this restores the HF
        state saved by `on_save_checkpoint`. Only when fitting: `validate`/`test`/`predict(ckpt_path=...)` must not
        leave a schedule behind for a later `fit`."""
        if HF_STATE_KEY in checkpoint and self.trainer.state.fn == "fit":
            self._loop.load_state_dict(checkpoint[HF_STATE_KEY])


# `TrainingArguments` switches that act around `hf_lightning.Trainer.train()`, and what a plain `lightning.Trainer` user
# does instead.
_FACADE_ONLY = {
    "auto_lr_find": "run Lightning's `Tuner(trainer).lr_find(module, datamodule=...)` before `fit` (it sets "
    "`module.learning_rate`)",
    "auto_scale_batch_size": "run Lightning's `Tuner(trainer).scale_batch_size(module, datamodule=...)` before `fit` "
    "(it sets `HFDataModule.batch_size`)",
    "checkpoint_on_preemption": "use Lightning's SLURM auto-requeue (`SLURMEnvironment`; its `.ckpt` carries the HF "
    "state) or `OnExceptionCheckpoint`",
    "enable_jit_checkpoint": "use Lightning's SLURM auto-requeue (`SLURMEnvironment`) or `OnExceptionCheckpoint`",
}


def refuse_facade_only_fields(args: Any) -> None:
    """A switch only `hf_lightning.Trainer` acts on, set for a plain `lightning.Trainer`, is an error naming what to
    use there (it would otherwise be silently ignored)."""
    for name, instead in _FACADE_ONLY.items():
        if getattr(args, name, None):
            raise ValueError(
                f"`{name}` is acted on by `hf_lightning.Trainer`; with a plain `lightning.Trainer`, {instead}."
            )


class StandaloneLoop:
    """The `HFLoop` of an `HFLightningModule` trained by a plain `lightning.Trainer`."""

    model_wrapped = None

    def __init__(
        self,
        model: nn.Module,
        args: Any,
        compute_loss_func: Callable | None = None,
        callbacks: list | None = None,
    ) -> None:
        from hf_lightning.training_args import to_hf_lightning_args

        self.model = model
        self.args = to_hf_lightning_args(args)
        if self.args.push_to_hub:
            raise ValueError(
                "`push_to_hub=True` is pushed by `hf_lightning.Trainer`; with a plain `lightning.Trainer`, upload the "
                "`HFCheckpoint` folders with `huggingface_hub.HfApi().upload_folder` (or use the facade)."
            )
        refuse_facade_only_fields(self.args)
        self.compute_loss_func = compute_loss_func
        self.throughput_meter = (
            ThroughputMeter(getattr(model, "main_input_name", "input_ids")) if self.args.log_throughput else None
        )
        self.state = TrainerState()
        self.control = TrainerControl()
        self.optimizer: torch.optim.Optimizer | None = None
        self.lr_scheduler: Any = None
        self.callback_handler = CallbackHandler([DefaultFlowCallback(), *(callbacks or [])], model, None, None, None)
        self.current_gradient_accumulation_steps = 1
        self.module: pl.LightningModule | None = None
        self._restored: dict[str, Any] = {}
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        params = inspect.signature(base.forward).parameters.values()
        self.model_accepts_loss_kwargs = getattr(
            base, "accepts_loss_kwargs", any(p.kind == p.VAR_KEYWORD for p in params)
        )

    # ---- optimisation ----------------------------------------------------------------------------------

    def configure_optimizers(self, module: pl.LightningModule) -> torch.optim.Optimizer:
        """HF's optimiser (decay groups, `optim`) and schedule over Lightning's optimiser-step budget."""
        self.module = module
        trainer = module.trainer
        self.optimizer = optimization.build_optimizer(
            self.model, self.args, optimization.decay_parameter_names(self.model)
        )
        self.lr_scheduler = optimization.build_scheduler(self.args, self.optimizer, self.num_training_steps(trainer))
        self._apply_restored_schedule()
        self.callback_handler.optimizer, self.callback_handler.lr_scheduler = self.optimizer, self.lr_scheduler
        return self.optimizer

    def num_training_steps(self, trainer: pl.Trainer) -> int:
        """Optimiser steps Lightning will run: `max_steps`, else windows per epoch x `max_epochs`."""
        if trainer.max_steps and trainer.max_steps > 0:
            return trainer.max_steps
        loader = trainer.datamodule.train_dataloader() if trainer.datamodule is not None else None
        windows = math.ceil(len(loader) / self.args.gradient_accumulation_steps) if loader is not None else 1
        return max(1, windows * max(trainer.max_epochs or 1, 1))

    def state_dict(self) -> dict[str, Any]:
        """The HF state a Lightning checkpoint carries: `TrainerState`'s fields (what HF writes to
        `trainer_state.json`), the schedule's state."""
        scheduler = self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None
        return {"trainer_state": dataclasses.asdict(self.state), "lr_scheduler": scheduler}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Apply `state` (`state_dict`): the schedule at once when it exists (FSDP and DeepSpeed restore checkpoints
        after `configure_optimizers`), else when `configure_optimizers` builds it; the `TrainerState` at the train
        start."""
        self._restored = dict(state)
        self._apply_restored_schedule()

    def _apply_restored_schedule(self) -> None:
        """Load a restored schedule state into the scheduler once both exist (whichever comes second calls this)."""
        if self.lr_scheduler is not None and self._restored.get("lr_scheduler") is not None:
            self.lr_scheduler.load_state_dict(self._restored.pop("lr_scheduler"))

    # ---- the step -----------------------------------------------------------------------------------------

    def training_step(self, model: nn.Module, inputs: dict, num_items_in_batch: Any = None) -> torch.Tensor:
        """HF's `compute_loss` + `training_step`: loss kwargs, world-size scaling, accumulation scaling, backward."""
        model.train()
        inputs = dict(inputs)
        labels = inputs.pop("labels", None) if self.compute_loss_func is not None else None
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            inputs = {**inputs, "num_items_in_batch": num_items_in_batch}
        outputs = model(**inputs)
        if self.compute_loss_func is not None:
            loss = self.compute_loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
        else:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs[0]
        scaled = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func
        world = self.module.trainer.world_size
        if self.args.average_tokens_across_devices and scaled and num_items_in_batch is not None and world > 1:
            loss = loss * world
        if not scaled:
            loss = loss / self.current_gradient_accumulation_steps
        self.module.manual_backward(loss)
        return loss.detach()

    # ---- HF events and logging ------------------------------------------------------------------------------

    def _on_loop_train_start(self) -> None:
        trainer = self.module.trainer
        self.state = TrainerState(max_steps=self.num_training_steps(trainer), logging_steps=self.args.logging_steps)
        saved = self._restored.get("trainer_state")
        if saved:
            known = {f.name for f in dataclasses.fields(TrainerState)}  # a checkpoint from another transformers
            restored = TrainerState(**{k: v for k, v in saved.items() if k in known})
            self.state.log_history, self.state.epoch = restored.log_history, restored.epoch
            self.state.total_flos = restored.total_flos
        self._restored = {}
        # A mid-epoch checkpoint resumes without `on_train_epoch_start`: the epoch is Lightning's.
        self._set_epoch(trainer.current_epoch)
        self.state.global_step = trainer.global_step
        self.state.is_world_process_zero = trainer.is_global_zero
        self._tr_loss = torch.tensor(0.0, device=self.module.device)
        self._last_logged = self.state.global_step
        self.control = self.callback_handler.on_train_begin(self.args, self.state, self.control)

    def _on_loop_epoch_start(self, epoch: int) -> None:
        self._set_epoch(epoch)
        self.control = self.callback_handler.on_epoch_begin(self.args, self.state, self.control)

    def _set_epoch(self, epoch: int) -> None:
        self._epoch, self._micro_step = epoch, -1
        loader = self.module.trainer.train_dataloader
        if isinstance(loader, AccumulationWindowLoader):  # HF's per-epoch shuffle, also after `ckpt_path` resume
            loader.epoch = epoch

    def _track_micro_batch(self, inputs: dict, loss: torch.Tensor) -> None:
        self._tr_loss += loss
        self._micro_step += 1

    def _on_loop_step_end(self, grad_norm: Any, learning_rate: float) -> None:
        self.state.global_step += 1
        loader_len = len(self.module.trainer.train_dataloader) if self.module.trainer.train_dataloader else 1
        self.state.epoch = self._epoch + (self._micro_step + 1) / max(loader_len, 1)
        self.control = self.callback_handler.on_step_end(self.args, self.state, self.control)
        if self.control.should_log and self.state.global_step > self._last_logged:
            self._log(grad_norm, learning_rate)
        self.control.should_save = False  # saving is `HFCheckpoint`'s (or Lightning's ModelCheckpoint's) job
        self.control.should_evaluate = False  # evaluation is Lightning's validation loop

    def _log(self, grad_norm: Any, learning_rate: float) -> None:
        strategy = self.module.trainer.strategy
        tr_loss = strategy.reduce(self._tr_loss.clone(), reduce_op="mean") if strategy.world_size > 1 else self._tr_loss
        logs = {"loss": tr_loss.item() / (self.state.global_step - self._last_logged)}
        if grad_norm is not None:
            logs["grad_norm"] = grad_norm.item() if isinstance(grad_norm, torch.Tensor) else float(grad_norm)
        logs["learning_rate"] = learning_rate
        if self.throughput_meter is not None:  # `log_throughput` (no FLOPs: this loop does not count them)
            logs.update(self.throughput_meter.measure(self.state.total_flos))
        self._tr_loss -= self._tr_loss
        self._last_logged = self.state.global_step
        self.module.log_dict({f"train/{k}": v for k, v in logs.items()}, on_step=True, on_epoch=False)
        logs["epoch"] = self.state.epoch
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.control = self.callback_handler.on_log(self.args, self.state, self.control, logs)

    def _on_loop_epoch_end(self) -> None:
        self.control = self.callback_handler.on_epoch_end(self.args, self.state, self.control)

    def _on_loop_train_end(self) -> None:
        self.control = self.callback_handler.on_train_end(self.args, self.state, self.control)


class HFCheckpoint(pl.Callback):
    """Writes `checkpoint-{global_step}/` in HF's layout every `every_n_steps` optimiser steps (default: the module's
    `save_steps` when `save_strategy="steps"`) and at the end of training; keeps `save_total_limit` folders.

    Like `transformers.Trainer`, each folder also gets the `processing_class` (tokenizer, processor ...): the one
    given here, else the datamodule's `processing_class` (`HFDataModule`, `HFTextDataModule`), else its collator's
    tokenizer.

    Every rank takes part (sharded weights and optimizer state are gathered); rank 0 writes into a temporary folder
    that is renamed once complete, and every rank waits for the write."""

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
        self._last_saved = -1

    @staticmethod
    def _args(module: pl.LightningModule) -> Any:
        return getattr(getattr(module, "_loop", None), "args", None)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        args = self._args(pl_module)
        if self.dirpath is None:
            self.dirpath = args.output_dir if args is not None else trainer.default_root_dir
        if (
            self.every_n_steps is None
            and args is not None
            and str(getattr(args.save_strategy, "value", args.save_strategy)) == "steps"
        ):
            self.every_n_steps = int(args.save_steps)
        if self.save_total_limit is None and args is not None:
            self.save_total_limit = args.save_total_limit

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > max(self._last_saved, 0) and step % self.every_n_steps == 0:
            self.save(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_on_train_end and trainer.global_step > max(self._last_saved, 0):
            self.save(trainer, pl_module)

    def save(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        """Write `checkpoint-{global_step}` now (a collective: call it on every rank); returns its path."""
        step = trainer.global_step
        loop = getattr(pl_module, "_loop", None)
        model = getattr(pl_module, "model", pl_module)
        final_dir = os.path.join(self.dirpath, f"{PREFIX_CHECKPOINT_DIR}-{step}")
        tmp_dir = os.path.join(self.dirpath, TMP_PREFIX + os.path.basename(final_dir))
        strategy = trainer.strategy
        if trainer.is_global_zero:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        strategy.barrier("hf_checkpoint_cleared")
        # The collectives every rank joins: DeepSpeed's engine writes each rank's ZeRO partition (then no
        # optimizer.pt, as HF), FSDP gathers the weights and the optimizer state to rank 0.
        engine_saved = save_engine_checkpoint(strategy, tmp_dir)
        state_dict = full_state_dict(strategy)
        optimizer = trainer.optimizers[0] if trainer.optimizers and not engine_saved else None
        optim_state = full_optimizer_state_dict(strategy, optimizer) if optimizer is not None else None
        if trainer.is_global_zero:
            with published_paths(tmp_dir, final_dir):  # the save messages name the folder being published
                self._save_model(tmp_dir, trainer, model, getattr(loop, "args", None), state_dict)
                self._write_training_state(tmp_dir, trainer, loop, optimizer, optim_state)
        strategy.barrier("hf_checkpoint_written")
        rng_name = "rng_state.pth" if trainer.world_size <= 1 else f"rng_state_{trainer.global_rank}.pth"
        states = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
        torch.save(states, os.path.join(tmp_dir, rng_name))
        strategy.barrier("hf_checkpoint_rng")
        if trainer.is_global_zero:
            CheckpointMixin._publish_checkpoint(tmp_dir, final_dir)
            rotate_checkpoints(output_dir=self.dirpath, save_total_limit=self.save_total_limit, use_mtime=True)
        strategy.barrier("hf_checkpoint_published")
        self._last_saved = step
        return final_dir

    def _save_model(self, output_dir: str, trainer: pl.Trainer, model: nn.Module, args: Any, state: dict) -> None:
        """The weights, processing class and training arguments, written by the facade's own `save_model` code."""
        if args is None:
            save_model_files(model, output_dir, state)
            return
        datamodule = trainer.datamodule
        processing_class = self.processing_class
        if processing_class is None:
            processing_class = getattr(datamodule, "processing_class", None)
        collator = getattr(datamodule, "data_collator", None)
        save_model_folder(output_dir, model, args, processing_class, collator, state)

    @staticmethod
    def _write_training_state(
        output_dir: str, trainer: pl.Trainer, loop: Any, optimizer: Any, optim_state: dict | None
    ) -> None:
        if optimizer is not None:
            torch.save(
                optim_state if optim_state is not None else optimizer.state_dict(),
                os.path.join(output_dir, OPTIMIZER_NAME),
            )
        scheduler = getattr(loop, "lr_scheduler", None)
        if scheduler is None and trainer.lr_scheduler_configs:
            scheduler = trainer.lr_scheduler_configs[0].scheduler
        if scheduler is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.save(scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))
        state = getattr(loop, "state", None) or TrainerState()
        state.global_step = trainer.global_step
        state.save_to_json(os.path.join(output_dir, TRAINER_STATE_NAME))
