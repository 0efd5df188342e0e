"""Tuning runs on the user's HF job that leave no trace: the shared part of `lr_finder` and `batch_size_finder`.

A tuning run is a short Lightning `fit` of the job `train()` would run: the trainer's model, its data and collator
(`get_train_dataloader`), its optimiser (`create_optimizer`: decay groups, `optim`, `optim_args`; or the one the user
passed) and its own `training_step` / `compute_loss` (loss scaling, `num_items_in_batch`, label smoothing, user
overrides), in HF's accumulation windows, through `HFLightningModule`. What is not the job's is the HF side of the
loop: `TrialLoop` fires no HF callback, logs, evaluates or saves nothing, and leaves the scheduling to the tuner.

`trial_run` puts everything back afterwards: the weights and buffers (copied to the CPU first, so the search does
not double the device memory it measures), gradients, train/eval modes, the optimiser and its state, the scheduler,
the python / numpy / torch (and CUDA) random generators and the trainer's attributes; the Lightning trainer of the
run works in a temporary folder (Lightning's tuners write a checkpoint there), so `output_dir` is not touched.
"""

from __future__ import annotations

import contextlib
import copy
import random
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from transformers import TrainerControl, TrainerState

from hf_lightning.compat import (
    activation_checkpointing,
    disable_model_activation_checkpointing,
    model_is_activation_checkpointing,
)
from hf_lightning.data import MicroBatch
from hf_lightning.features import activate_neftune, deactivate_neftune, enable_activation_checkpointing
from hf_lightning.translation import lightning_trainer_kwargs

__all__ = ["TrialLoop", "trial_lightning_trainer", "trial_run"]


class _NoCallbacks:
    """A `CallbackHandler` stand-in for tuning runs: every HF event is heard by nobody (`on_*` returns `control`)."""

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("on_"):
            raise AttributeError(name)
        return lambda args, state, control, *_, **__: control


class TrialLoop:
    """The `HFLoop` (`hf_lightning.module`) of a tuning run: the trainer's own `training_step` on its model and
    `optimizer`; no HF events.

    The loss returned for the last micro-batch of an accumulation window is the window's (the sum of its scaled
    micro-batch losses, what HF logs as the step's loss), so a tuner reading the step outputs sees one loss per
    optimiser step. `lr_scheduler` is None: a tuner that installs its own schedule (Lightning's LR finder) has it
    stepped by `HFLightningModule`.

    Args:
        trainer: the `hf_lightning.Trainer` whose job is tuned.
        optimizer: the optimiser to step.
    """

    model_wrapped = None
    throughput_meter = None
    lr_scheduler = None
    owns_lightning_trainer = True  # the tuner's trainer is the facade's

    def __init__(self, trainer: Any, optimizer: torch.optim.Optimizer) -> None:
        self.trainer = trainer
        self.args = trainer.args
        self.optimizer = optimizer
        self.state = TrainerState()
        self.control = TrainerControl()
        self.callback_handler = _NoCallbacks()
        self.steps = 0
        self._window_loss: torch.Tensor | None = None
        self._in_window = 0

    @property
    def current_gradient_accumulation_steps(self) -> int:
        return self.trainer.current_gradient_accumulation_steps

    @current_gradient_accumulation_steps.setter
    def current_gradient_accumulation_steps(self, value: int) -> None:
        # The trainer's `training_step` divides by it: the window size is the trainer's to know.
        self.trainer.current_gradient_accumulation_steps = value

    def attach_lightning(self, module: pl.LightningModule, stage: str) -> None:
        pass

    def use_learning_rate(self, value: float) -> None:
        raise RuntimeError("The sweep's learning rates are the tuner's: it does not take one (`update_attr=False`).")

    def configure_optimizer(self) -> torch.optim.Optimizer:
        return self.optimizer

    def load_pending_optimizer_state(self) -> None:
        pass

    def training_step(self, model: torch.nn.Module, inputs: dict, num_items_in_batch: Any = None) -> torch.Tensor:
        loss = self.trainer.training_step(model, inputs, num_items_in_batch)
        self._window_loss = loss if self._in_window == 0 else self._window_loss + loss
        self._in_window += 1
        if self._in_window < self.current_gradient_accumulation_steps:
            return loss
        window_loss, self._window_loss, self._in_window = self._window_loss, None, 0
        return window_loss

    def on_lightning_train_start(self) -> None:
        self._window_loss, self._in_window = None, 0

    def on_lightning_epoch_start(self, epoch: int) -> None:
        self._in_window = 0

    def on_micro_batch_start(self, batch: MicroBatch) -> None:
        self.current_gradient_accumulation_steps = batch.window_size

    def on_micro_batch_end(self, batch: MicroBatch, loss: torch.Tensor) -> None:
        pass

    def on_optimizer_step_end(self, grad_norm: Any, learning_rate: float) -> None:
        self.steps += 1
        self.state.global_step = self.steps

    def on_lightning_batch_end(self) -> bool:
        return False

    def on_lightning_epoch_end(self) -> None:
        pass

    def on_lightning_train_end(self) -> None:
        pass

    def lightning_checkpoint_state(self) -> dict[str, Any]:
        return {}  # the tuner's own checkpoint (`trial_run` puts everything back itself)

    def load_lightning_checkpoint_state(self, state: dict[str, Any]) -> None:
        pass

    def _no_evaluation(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("A tuning run only trains: it has no validation, test or predict loop.")

    begin_lightning_evaluation = lightning_evaluation_step = end_lightning_evaluation = _no_evaluation
    lightning_predict_step = _no_evaluation


def trial_lightning_trainer(trainer: Any, root_dir: str, **overrides: Any) -> pl.Trainer:
    """A `lightning.Trainer` as `train()` would build it (devices, strategy, precision ...) for a tuning run: in
    `root_dir`, without the user's Lightning callbacks, loggers or profiler, without a progress bar."""
    from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher

    kwargs = lightning_trainer_kwargs(trainer.args, trainer.model)
    kwargs.update(
        default_root_dir=root_dir,
        callbacks=[],
        logger=False,
        profiler=None,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    kwargs.update(overrides)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*treespec.*")
        lightning = pl.Trainer(**kwargs)
    if isinstance(lightning.strategy.launcher, _MultiProcessingLauncher):
        raise ValueError(
            f"Tuning runs in this process, but `strategy`={trainer.args.strategy!r} starts its workers with "
            f"multiprocessing ({lightning.strategy.launcher._start_method}); launch the script with torchrun "
            "(or use one device) to tune."
        )
    return lightning


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


class _ModelSnapshot:
    """Weights, buffers, gradients and train/eval modes of a model, kept on the CPU and copied back in place (the
    parameters stay the same tensors: an optimiser the user built over them keeps working)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict(keep_vars=True).items()}
        self.grads = {
            name: None if p.grad is None else p.grad.detach().to("cpu", copy=True)
            for name, p in model.named_parameters()
        }
        self.modes = [(m, m.training) for m in model.modules()]

    def restore(self) -> None:
        live = self.model.state_dict(keep_vars=True)
        with torch.no_grad():
            for name, saved in self.state.items():
                live[name].copy_(saved)
        for name, p in self.model.named_parameters():
            saved = self.grads.get(name)
            p.grad = None if saved is None else saved.to(p.device)
        for module, training in self.modes:
            module.training = training


@contextlib.contextmanager
def trial_run(trainer: Any) -> Iterator[tuple[TrialLoop, str]]:
    """Set `trainer` up for tuning runs and put everything back afterwards (see the module docstring).

    Yields the `TrialLoop` (its optimiser is the one `train()` would use) and a temporary folder for the Lightning
    trainers of the runs; the caller builds the module (`HFLightningModule(trainer.model, loop)`) and fits it, as
    often as it needs."""
    model, args = trainer.model, trainer.args
    snapshot = _ModelSnapshot(model)
    rng = _rng_state()
    saved_attributes = {
        name: getattr(trainer, name, None)
        for name in ("optimizer", "lightning_trainer", "lightning_module", "current_gradient_accumulation_steps")
    }
    user_optimizer = trainer.optimizer
    optimizer_state = copy.deepcopy(user_optimizer.state_dict()) if user_optimizer is not None else None
    # Inside `train()` (`auto_lr_find`, `auto_scale_batch_size`) activation checkpointing and NEFTune are already on.
    set_up_here = not trainer.is_in_train
    was_checkpointing = model_is_activation_checkpointing(model)
    if set_up_here:
        enable_activation_checkpointing(model, args)
    alpha = trainer.neftune_noise_alpha
    neftune = activate_neftune(model, alpha) if set_up_here and alpha is not None else None
    root_dir = tempfile.mkdtemp(prefix="hf_lightning_tuning_")
    try:
        optimizer = trainer.create_optimizer()  # the user's, or HF's from `args` (a subclass may override it)
        yield TrialLoop(trainer, optimizer), root_dir
    finally:
        shutil.rmtree(root_dir, ignore_errors=True)
        if neftune is not None:
            deactivate_neftune(model, neftune)
        if set_up_here and activation_checkpointing(args)[0] and not was_checkpointing:
            disable_model_activation_checkpointing(model)
        if user_optimizer is not None:
            user_optimizer.load_state_dict(optimizer_state)
        for name, value in saved_attributes.items():
            setattr(trainer, name, value)
        snapshot.restore()
        _set_rng_state(rng)
