"""The generic LightningModule: HF's optimisation step, run by Lightning.

`HFLightningModule` wraps any HF model (or an `nn.Module` whose forward returns the loss first) and uses
Lightning's manual optimisation so that each optimiser step happens exactly where `transformers.Trainer`
does it: micro-batches of one accumulation window are back-propagated with HF's loss scaling, then the
gradients are clipped (after AMP unscaling, in `on_before_optimizer_step`), the optimiser and scheduler
stepped, the gradients zeroed and the HF step-end events fired. Lightning keeps the loop, the devices, the
strategy (DDP, FSDP ...) and the precision plugin.

The HF-facing half (callbacks, `TrainerState`, logging, evaluation, saving) lives in an `HFLoop` the module
is given: `hf_lightning.Trainer` is one.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Protocol

import lightning.pytorch as pl
import torch
from torch import nn

from hf_lightning.accelerator_config import sync_each_batch
from hf_lightning.data import MicroBatch
from hf_lightning.optimization import clip_grad_norm, current_learning_rate, is_metric_scheduler
from hf_lightning.strategies import shard_hf_model


class HFLoop(Protocol):
    """What the module needs from the HF side of the run (implemented by `hf_lightning.Trainer`)."""

    args: Any
    state: Any
    control: Any
    callback_handler: Any
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    throughput_meter: pl.Callback | None  # `log_throughput`: run with the fit (`configure_callbacks`), or None

    def training_step(self, model: nn.Module, inputs: dict, num_items_in_batch: Any = None) -> torch.Tensor: ...

    def _on_loop_train_start(self) -> None: ...

    def _on_loop_epoch_start(self, epoch: int) -> None: ...

    def _on_loop_step_end(self, grad_norm: Any, learning_rate: float) -> None: ...

    def _on_loop_epoch_end(self) -> None: ...

    def _on_loop_train_end(self) -> None: ...

    def _track_micro_batch(self, inputs: dict, loss: torch.Tensor) -> None: ...


# Attributes set on every batch (Lightning's `_current_fx_name` around each hook call, the step's bookkeeping) that
# are never parameters, buffers or submodules: `nn.Module.__setattr__`'s registry checks cost ~1.5 us each, about
# 30 times a step.
_PLAIN_ATTRIBUTES = frozenset(
    {"_current_fx_name", "_grad_norm", "_scale_before_step", "_stop_epoch", "_set_gradient_sync"}
)


class HFLightningModule(pl.LightningModule):
    """Runs one HF micro-batch per Lightning batch and one HF optimiser step per accumulation window."""

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
        self._tuner_schedule: Any = None

    @classmethod
    def from_args(
        cls,
        model: nn.Module,
        args: Any,
        compute_loss_func: Callable | None = None,
        callbacks: list | None = None,
    ) -> HFLightningModule:
        """A module for a plain `lightning.Trainer` (or `LightningCLI`), without the `hf_lightning.Trainer` facade:
        HF's loss, optimiser and schedule from `args` (`TrainingArguments`); feed it an `HFDataModule` and save HF
        checkpoints with `HFCheckpoint`. `callbacks` are HF `TrainerCallback`s."""
        from hf_lightning.standalone import StandaloneLoop, StandaloneModule

        module_cls = cls if issubclass(cls, StandaloneModule) else StandaloneModule
        return module_cls(model, StandaloneLoop(model, args, compute_loss_func, callbacks))

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def learning_rate(self) -> float:
        """`args.learning_rate`, under the name Lightning's LR finder looks for (`Tuner.lr_find(update_attr=True)`
        sets it to the suggestion, which the next `configure_optimizers` trains with)."""
        return self._loop.args.learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self._loop.args.learning_rate = value

    def forward(self, **inputs: Any) -> Any:
        return self.model(**inputs)

    def configure_callbacks(self) -> list[pl.Callback]:
        """The Lightning callbacks the HF loop runs with: its throughput meter (`log_throughput`), when it has one."""
        meter = self._loop.throughput_meter
        return [meter] if meter is not None else []

    def configure_optimizers(self) -> Any:
        own = getattr(self._loop, "configure_optimizers", None)
        return own(self) if own is not None else self._loop.optimizer

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
        """Under FSDP, wrap the HF model itself before Lightning's setup (`strategies.shard_hf_model`); as in HF, the
        wrapped model is the loop's `model_wrapped`, the one the HF step runs."""
        wrapped = shard_hf_model(self.trainer.strategy, self.model, getattr(self._loop, "model_wrapped", None))
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

    # ---- Lightning hooks mapped to HF events ----------------------------------------------------------

    def on_train_start(self) -> None:
        self._deepspeed = hasattr(self.trainer.strategy.model, "set_gradient_accumulation_boundary")
        self._set_gradient_sync = self._gradient_sync_switch()
        self._sync_each_batch = sync_each_batch(self._loop.args)
        restore = getattr(self._loop, "_load_pending_optimizer_state", None)
        if restore is not None:  # a resumed optimizer state that needs the strategy-wrapped model (FSDP)
            restore()
        # Manual optimisation: the module steps the schedule. Lightning holds none of its own (`configure_optimizers`
        # returns the optimiser alone) unless its LR finder swapped in the range test's, which is then the one to step.
        configs = self.trainer.lr_scheduler_configs
        self._tuner_schedule = configs[0].scheduler if configs else None
        self._loop._on_loop_train_start()
        # `model.parameters()` walks every submodule; clipping and `zero_grad` need it each step, so the walk is done
        # once per fit (after `on_train_begin` callbacks), in the same order.
        self._train_parameters = list(self.model.parameters())

    def on_train_epoch_start(self) -> None:
        self._stop_epoch = False
        self._loop._on_loop_epoch_start(self.trainer.current_epoch)

    def on_train_batch_start(self, batch: MicroBatch, batch_idx: int) -> int | None:
        if self._stop_epoch:
            return -1
        self._sync_gradients(batch.is_last_in_window or self._sync_each_batch)
        return None

    def on_train_batch_end(self, outputs: Any, batch: MicroBatch, batch_idx: int) -> None:
        # HF checks the stop flags after each micro-batch (never before the first one of an epoch).
        control = self._loop.control
        self._stop_epoch = control.should_epoch_stop or control.should_training_stop

    def on_train_epoch_end(self) -> None:
        self._loop._on_loop_epoch_end()

    def on_train_end(self) -> None:
        self._loop._on_loop_train_end()

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
        args = loop.args
        if batch.step % args.gradient_accumulation_steps == 0:
            loop.control = loop.callback_handler.on_step_begin(args, loop.state, loop.control)
        loop.current_gradient_accumulation_steps = batch.window_size
        num_items = batch.num_items_in_batch
        if num_items is not None and args.average_tokens_across_devices and self.trainer.world_size > 1:
            # A copy: the reduction is in place and the window's micro-batches share one count tensor.
            num_items = self.trainer.strategy.reduce(num_items.to(self.device).clone(), reduce_op="sum")
        model = getattr(loop, "model_wrapped", None)
        model = self.model if model is None else model
        if self._fsdp_wrapped and not (batch.is_last_in_window or self._sync_each_batch):  # unsharded, as HF does
            with self.model.no_sync():
                loss = loop.training_step(model, batch.inputs, num_items)
        else:
            loss = loop.training_step(model, batch.inputs, num_items)
        loop._track_micro_batch(batch.inputs, loss)
        loop._micro_step = batch.step
        if not batch.is_last_in_window:
            loop.control = loop.callback_handler.on_substep_end(args, loop.state, loop.control)
            return loss
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
        scheduler = loop.lr_scheduler if self._tuner_schedule is None else self._tuner_schedule
        learning_rate = current_learning_rate(loop.optimizer, scheduler)
        skipped = scaler is not None and scaler.get_scale() < self._scale_before_step
        if self._deepspeed:  # DeepSpeed's fp16 loss scaler skipped the step on overflow
            skipped = bool(getattr(getattr(engine, "optimizer", None), "overflow", False))
        if not skipped and scheduler is not None and not is_metric_scheduler(scheduler):
            scheduler.step()
        for p in self._train_parameters:  # `model.zero_grad()` (set_to_none, HF's default) without the module walk
            p.grad = None
        loop._on_loop_step_end(self._grad_norm, learning_rate)
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


# Lightning inspects `training_step`'s signature on every batch (does it take `batch_idx`?); a precomputed
# `__signature__` answers that without re-parsing the function each time.
HFLightningModule.training_step.__signature__ = inspect.signature(HFLightningModule.training_step)
