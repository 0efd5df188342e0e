"""The generic LightningModule: HF's optimisation step, run by Lightning.

`HFLightningModule` wraps any HF model (or an `nn.Module` whose forward returns the loss first) and uses
Lightning's manual optimisation so that each optimiser step happens exactly where `transformers.Trainer`
does it: micro-batches of one accumulation window are back-propagated with HF's loss scaling, then the
gradients are clipped (after AMP unscaling, in `on_before_optimizer_step`), the optimiser and scheduler
stepped, the gradients zeroed and the HF step-end events fired. Lightning keeps the loop, the devices, the
strategy (DDP, FSDP ...) and the precision plugin. Lightning's validation, test and predict loops run HF's
evaluation; Lightning checkpoints (`.ckpt`) carry the HF state.

The HF side (callbacks, `TrainerState`, loss, logging, evaluation, saving, RNG) is the `HFLoop` the module is given,
through the members the protocol lists and nothing else: an `HFTrainingLoop` (`hf_lightning.hf_loop`), either the
`hf_lightning.Trainer` facade that built the `lightning.Trainer`, or the one `from_args` attaches to a
`lightning.Trainer` the user owns.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import lightning.pytorch as pl
import torch
from torch import nn
from transformers import TrainerControl, TrainerState
from transformers.trainer_callback import CallbackHandler
from typing_extensions import override

from hf_lightning.accelerator_config import sync_each_batch
from hf_lightning.compat import trainer_num_items
from hf_lightning.data import MicroBatch
from hf_lightning.hf_loop import HFTrainingLoop
from hf_lightning.lightning_kwargs import check_lightning_trainer
from hf_lightning.optimization import clip_grad_norm, current_learning_rate, is_metric_scheduler
from hf_lightning.profiling import HFStepProfiling, is_profiling
from hf_lightning.strategies import shard_hf_model

__all__ = ["HF_STATE_KEY", "HFLightningModule", "HFLoop"]

# Where a Lightning checkpoint (`.ckpt`) keeps the HF side of the run.
HF_STATE_KEY = "hf_lightning_state"


class HFLoop(Protocol):
    """Everything `HFLightningModule` uses of the HF side of the run: `hf_lightning.hf_loop.HFTrainingLoop` implements
    it (so `hf_lightning.Trainer` does), for both doors."""

    args: Any
    state: TrainerState
    control: TrainerControl
    callback_handler: CallbackHandler
    optimizer: torch.optim.Optimizer | None
    lr_scheduler: Any
    model_wrapped: nn.Module | None
    throughput_meter: pl.Callback | None  # `log_throughput`: run with the fit (`configure_callbacks`), or None
    owns_lightning_trainer: bool  # the facade built the `lightning.Trainer` (else the user's: the plain door)

    # HF's step (the overridable `Trainer.training_step`)
    def training_step(self, model: nn.Module, inputs: dict, num_items_in_batch: Any = None) -> torch.Tensor: ...

    # Lightning's set-up
    def attach_lightning(self, module: pl.LightningModule, stage: str) -> None: ...

    def use_learning_rate(self, value: float) -> None: ...

    def configure_optimizer(self) -> torch.optim.Optimizer: ...

    def load_pending_optimizer_state(self) -> None: ...

    # training events
    def on_lightning_train_start(self) -> None: ...

    def on_lightning_epoch_start(self, epoch: int) -> None: ...

    def on_micro_batch_start(self, batch: MicroBatch) -> None: ...

    def on_micro_batch_end(self, batch: MicroBatch, loss: torch.Tensor) -> None: ...

    def on_optimizer_step_end(self, grad_norm: Any, learning_rate: float) -> None: ...

    def on_lightning_batch_end(self) -> bool: ...

    def on_lightning_epoch_end(self) -> None: ...

    def on_lightning_train_end(self) -> None: ...

    # Lightning checkpoints (`.ckpt`)
    def lightning_checkpoint_state(self) -> dict[str, Any]: ...

    def load_lightning_checkpoint_state(self, state: dict[str, Any]) -> None: ...

    # Lightning's validation, test and predict loops
    def begin_lightning_evaluation(self, model: nn.Module, dataloader: Any, metric_key_prefix: str) -> None: ...

    def lightning_evaluation_step(self, inputs: Any, step: int, is_last: bool) -> None: ...

    def end_lightning_evaluation(self) -> dict[str, float]: ...

    def lightning_predict_step(self, model: nn.Module, inputs: Any) -> Any: ...


# Attributes set on every batch (Lightning's `_current_fx_name` around each hook call, the step's bookkeeping) that
# are never parameters, buffers or submodules: `nn.Module.__setattr__`'s registry checks cost ~1.5 us each, about
# 30 times a step.
_PLAIN_ATTRIBUTES = frozenset(
    {"_current_fx_name", "_grad_norm", "_scale_before_step", "_stop_epoch", "_set_gradient_sync", "_lr_schedulers"}
)


class HFLightningModule(pl.LightningModule):
    """Runs one HF micro-batch per Lightning batch and one HF optimiser step per accumulation window; Lightning's
    validation, test and predict loops run HF's evaluation (`prediction_step`, `compute_metrics`)."""

    # Set once per fit: the HF model is FSDP-wrapped (`setup`); the strategy trains a DeepSpeed engine
    # (`on_train_start`).
    _fsdp_wrapped = False
    _deepspeed = False
    _sync_each_batch = False  # accelerator_config.gradient_accumulation_kwargs["sync_each_batch"]

    def __init__(self, model: nn.Module, loop: HFLoop) -> None:
        super().__init__()
        self.model = model
        self.automatic_optimization = False
        self._loop = loop
        self._grad_norm: Any = None
        self._scale_before_step: float | None = None
        self._stop_epoch = False
        self._set_gradient_sync: Callable[[bool], None] | None = None
        self._train_parameters: list[nn.Parameter] = []
        # Learning-rate schedules Lightning holds (none of the module's own: `configure_optimizers` returns the
        # optimiser alone), installed by its LR finder (the range test's) or a callback (`StochasticWeightAveraging`'s
        # SWALR): they take over from HF's schedule and are stepped at their interval, as Lightning would step them.
        self._lr_schedulers: list[Any] = []

    @classmethod
    def from_args(
        cls,
        model: nn.Module,
        args: Any = None,
        compute_loss_func: Callable | None = None,
        callbacks: list | None = None,
        **loop_kwargs: Any,
    ) -> HFLightningModule:
        """A module for a `lightning.Trainer` (or `LightningCLI`) the user owns: the same HF loop as
        `hf_lightning.Trainer` (HF's loss, optimiser, schedule, logging, evaluation, checkpoints and RNG from `args`),
        attached to that trainer when it sets the module up. Feed it an `HFDataModule`; `HFCheckpoint` writes HF
        checkpoint folders. `callbacks` are HF `TrainerCallback`s (Lightning callbacks go to the `lightning.Trainer`);
        `loop_kwargs` are other `hf_lightning.Trainer` arguments (`compute_metrics`, `processing_class`,
        `optimizers`, `preprocess_logits_for_metrics` ...)."""
        loop = HFTrainingLoop.for_lightning_trainer(
            model, args, compute_loss_func=compute_loss_func, callbacks=callbacks, **loop_kwargs
        )
        return cls(model, loop)

    @property
    def learning_rate(self) -> float:
        """`args.learning_rate`, under the name Lightning's LR finder looks for (`Tuner.lr_find(update_attr=True)`
        sets it to the suggestion, which the next `fit` trains with: `HFLoop.use_learning_rate`)."""
        return self._loop.args.learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self._loop.use_learning_rate(value)

    @property
    def loop(self) -> HFLoop:
        """The HF side of the run: `TrainerState` (`loop.state.log_history`), callbacks, optimiser, schedule."""
        return self._loop

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, *args: Any, **inputs: Any) -> Any:
        """The HF model's forward: keyword inputs (a batch dict), or a batch dict given positionally."""
        if len(args) == 1 and not inputs and isinstance(args[0], Mapping):
            return self.model(**args[0])
        return self.model(*args, **inputs)

    @override
    def configure_callbacks(self) -> list[pl.Callback]:
        """The Lightning callbacks the HF loop runs with: its throughput meter (`log_throughput`), when it has one,
        and on a profiling `lightning.Trainer` the user owns, the recording of HF's steps (`HFStepProfiling`; the
        facade records them itself). Before Lightning checks its configuration, a `lightning.Trainer` argument that
        has an HF meaning is refused with the `TrainingArguments` field to use (`hf_lightning.lightning_kwargs`)."""
        check_lightning_trainer(self.trainer, self._loop.args)
        callbacks: list[pl.Callback] = [] if self._loop.throughput_meter is None else [self._loop.throughput_meter]
        if not self._loop.owns_lightning_trainer and is_profiling(self.trainer.profiler):
            callbacks.append(HFStepProfiling(self._loop))
        return callbacks

    def configure_optimizers(self) -> Any:
        return self._loop.configure_optimizer()

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move a micro-batch's inputs and item count; Lightning's default would deep-copy the whole
        `MicroBatch` dataclass on every batch."""
        if not isinstance(batch, MicroBatch):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        batch.inputs = super().transfer_batch_to_device(batch.inputs, device, dataloader_idx)
        if isinstance(batch.num_items_in_batch, torch.Tensor):
            batch.num_items_in_batch = batch.num_items_in_batch.to(device)
        return batch

    def setup(self, stage: str) -> None:
        """The loop joins the run (a user's `lightning.Trainer`: see `HFLoop.attach_lightning`); under FSDP the HF model
        itself is wrapped before Lightning's setup (`strategies.shard_hf_model`) and, as in HF, the wrapped model is the
        loop's `model_wrapped`, the one the HF step runs."""
        self._loop.attach_lightning(self, stage)
        wrapped = shard_hf_model(self.trainer.strategy, self.model, self._loop.model_wrapped)
        if wrapped is not self.model:
            self.model = wrapped
            self._loop.model_wrapped = wrapped
            self._fsdp_wrapped = True

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Lightning's backward; under DeepSpeed with `scale_wrt_gas=False`, as HF passes it: the loss is already
        scaled for the accumulation window, the engine must not divide it again."""
        if self._deepspeed:
            kwargs.setdefault("scale_wrt_gas", False)
        super().manual_backward(loss, *args, **kwargs)

    # ---- Lightning checkpoints carry the HF side --------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A Lightning checkpoint (`ModelCheckpoint`, `trainer.save_checkpoint`) also carries what Lightning does not
        know: the `TrainerState` (log history, best metric, callback states), the HF schedule and the RNG states."""
        checkpoint[HF_STATE_KEY] = self._loop.lightning_checkpoint_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """`fit(ckpt_path=...)`: Lightning restores the weights, optimizer, scaler, loops and callbacks; the loop the HF
        state of `on_save_checkpoint`. Only when fitting: `validate`/`test`/`predict(ckpt_path=...)` leave it."""
        if HF_STATE_KEY in checkpoint and self.trainer.state.fn == "fit":
            self._loop.load_lightning_checkpoint_state(checkpoint[HF_STATE_KEY])

    # ---- Lightning hooks mapped to HF events ----------------------------------------------------------

    def on_train_start(self) -> None:
        self._deepspeed = hasattr(self.trainer.strategy.model, "set_gradient_accumulation_boundary")
        self._set_gradient_sync = self._gradient_sync_switch()
        self._sync_each_batch = sync_each_batch(self._loop.args)
        self._lr_schedulers = list(self.trainer.lr_scheduler_configs)
        self._loop.load_pending_optimizer_state()  # a resumed state that needs the strategy-wrapped model (FSDP)
        self._loop.on_lightning_train_start()
        # `model.parameters()` walks every submodule; clipping and `zero_grad` need it each step, so the walk is done
        # once per fit (after `on_train_begin` callbacks), in the same order.
        self._train_parameters = list(self.model.parameters())

    def on_train_epoch_start(self) -> None:
        self._stop_epoch = False
        self._lr_schedulers = list(self.trainer.lr_scheduler_configs)  # after the callbacks' epoch start (SWA)
        self._loop.on_lightning_epoch_start(self.trainer.current_epoch)

    def on_train_batch_start(self, batch: MicroBatch, batch_idx: int) -> int | None:
        if self._stop_epoch:
            return -1
        self._sync_gradients(batch.is_last_in_window or self._sync_each_batch)
        return None

    def on_train_batch_end(self, outputs: Any, batch: MicroBatch, batch_idx: int) -> None:
        self._stop_epoch = self._loop.on_lightning_batch_end()

    def on_train_epoch_end(self) -> None:
        self._loop.on_lightning_epoch_end()
        for config in self._lr_schedulers:  # Lightning steps none under manual optimisation
            if config.interval == "epoch" and (self.trainer.current_epoch + 1) % config.frequency == 0:
                config.scheduler.step()

    def on_train_end(self) -> None:
        self._loop.on_lightning_train_end()

    # ---- the HF step ---------------------------------------------------------------------------------

    def _gradient_sync_switch(self) -> Callable[[bool], None] | None:
        """What turns the gradient reduction of the next backward on or off, looked up once per fit: DDP's
        `require_backward_grad_sync` (the flag its `no_sync` sets; Lightning's DDP wrapper runs `training_step` inside
        its forward, so no context manager can span it), DeepSpeed's window boundary (the engine reduces and steps
        there). None for FSDP (its `no_sync` wraps the HF model's forward and backward in `training_step`) and
        single-process runs."""
        wrapped = getattr(self.trainer.strategy, "model", None)
        if hasattr(wrapped, "require_backward_grad_sync"):
            return functools.partial(setattr, wrapped, "require_backward_grad_sync")
        if self._deepspeed:
            return wrapped.set_gradient_accumulation_boundary
        return None

    def _sync_gradients(self, sync: bool) -> None:
        """Skip the gradient reduction on all but the last micro-batch of a window (HF's `no_sync`)."""
        if self._set_gradient_sync is not None:
            self._set_gradient_sync(sync)

    def training_step(self, batch: MicroBatch, batch_idx: int) -> torch.Tensor:
        loop = self._loop
        loop.on_micro_batch_start(batch)
        num_items = batch.num_items_in_batch
        if num_items is not None and loop.args.average_tokens_across_devices and self.trainer.world_size > 1:
            # A copy: the reduction is in place and the window's micro-batches share one count tensor.
            num_items = self.trainer.strategy.reduce(num_items.to(self.device).clone(), reduce_op="sum")
        num_items = trainer_num_items(num_items)
        model = loop.model_wrapped
        model = self.model if model is None else model
        if self._fsdp_wrapped and not (batch.is_last_in_window or self._sync_each_batch):  # unsharded, as HF does
            with self.model.no_sync():
                loss = loop.training_step(model, batch.inputs, num_items)
        else:
            loss = loop.training_step(model, batch.inputs, num_items)
        loop.on_micro_batch_end(batch, loss)
        if batch.is_last_in_window:
            self._optimizer_step()
        return loss

    def _optimizer_step(self) -> None:
        loop = self._loop
        args = loop.args
        optimizer = self.optimizers()
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        self._scale_before_step = scaler.get_scale() if scaler is not None else None
        self._grad_norm = None
        optimizer.step()
        engine = self.trainer.strategy.model
        if self._grad_norm is None and hasattr(engine, "get_global_grad_norm"):
            self._grad_norm = engine.get_global_grad_norm()  # DeepSpeed's pre-clip norm, as HF logs it
        loop.control = loop.callback_handler.on_optimizer_step(args, loop.state, loop.control)
        lightning_held = self._lr_schedulers
        scheduler = lightning_held[0].scheduler if lightning_held else loop.lr_scheduler
        learning_rate = current_learning_rate(loop.optimizer, scheduler)
        skipped = scaler is not None and scaler.get_scale() < self._scale_before_step
        if self._deepspeed:  # DeepSpeed's fp16 loss scaler skipped the step on overflow
            skipped = bool(getattr(getattr(engine, "optimizer", None), "overflow", False))
        # HF's schedule, or the interval-"step" ones Lightning holds (the LR finder's range test)
        schedules = [c.scheduler for c in lightning_held if c.interval == "step"] if lightning_held else [scheduler]
        for schedule in schedules if not skipped else ():
            if schedule is not None and not is_metric_scheduler(schedule):
                schedule.step()
        for p in self._train_parameters:  # `model.zero_grad()` (set_to_none, HF's default) without the module walk
            p.grad = None
        loop.on_optimizer_step_end(self._grad_norm, learning_rate)
        self._sync_gradients(True)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip after AMP unscaling and before the step, then fire HF's `on_pre_optimizer_step`."""
        loop = self._loop
        max_norm = loop.args.max_grad_norm
        model = self.trainer.strategy.model if self.trainer.strategy.model is not None else self.model
        if hasattr(model, "get_global_grad_norm"):  # DeepSpeed clips itself (config `gradient_clipping`)
            self._grad_norm = None
        else:  # FSDP: its own `clip_grad_norm_` on the wrapped HF model (`setup`), the norm over all shards
            model = self.model if self._fsdp_wrapped else model
            self._grad_norm = clip_grad_norm(model, max_norm if max_norm > 0 else float("inf"), self._train_parameters)
        loop.control = loop.callback_handler.on_pre_optimizer_step(loop.args, loop.state, loop.control)

    # ---- Lightning's validation, test and predict loops: HF's evaluation ----------------------------------

    def _begin_evaluation(self, dataloaders: Any, prefix: str) -> None:
        loaders = dataloaders if isinstance(dataloaders, (list, tuple)) else [dataloaders]
        if len(loaders) > 1:
            raise ValueError(
                f"`HFLightningModule` evaluates one dataloader per {prefix} run (HF's `evaluate`), got {len(loaders)}."
            )
        self._loop.begin_lightning_evaluation(self.model, loaders[0], prefix)

    def _evaluation_step(self, batch: Any, batch_idx: int, num_batches: Any) -> None:
        total = num_batches[0] if isinstance(num_batches, (list, tuple)) else num_batches
        self._loop.lightning_evaluation_step(batch, batch_idx, batch_idx == total - 1)

    def _end_evaluation(self) -> None:
        """HF's metrics of the run: in `callback_metrics` during `fit` (the loop logs them to the loggers at HF's
        step); in `validate()`/`test()`, logged with `self.log` so that Lightning returns and logs them, as there."""
        metrics = self._loop.end_lightning_evaluation()
        if self.trainer.state.fn != "fit":
            self.log_dict({k: float(v) for k, v in metrics.items()}, on_epoch=True, sync_dist=False)

    def on_validation_epoch_start(self) -> None:
        self._begin_evaluation(self.trainer.val_dataloaders, "eval")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """One batch of HF's evaluation (loss, logits and labels gathered over the ranks for `compute_metrics`)."""
        self._evaluation_step(batch, batch_idx, self.trainer.num_val_batches)

    def on_validation_epoch_end(self) -> None:
        self._end_evaluation()

    def on_test_epoch_start(self) -> None:
        self._begin_evaluation(self.trainer.test_dataloaders, "test")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """One batch of HF's evaluation with the `test_` prefix (HF's `predict` metrics)."""
        self._evaluation_step(batch, batch_idx, self.trainer.num_test_batches)

    def on_test_epoch_end(self) -> None:
        self._end_evaluation()

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        """HF's `prediction_step` logits of the batch (its labels and loss are not returned)."""
        return self._loop.lightning_predict_step(self.model, batch)


# Lightning inspects `training_step`'s signature on every batch (does it take `batch_idx`?); a precomputed
# `__signature__` answers that without re-parsing the function each time.
HFLightningModule.training_step.__signature__ = inspect.signature(HFLightningModule.training_step)
