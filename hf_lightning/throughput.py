"""Throughput and model-FLOPs utilisation with every HF training log (`TrainingArguments.log_throughput`).

Lightning's `ThroughputMonitor` idea on HF's steps: `ThroughputMeter` is a Lightning callback that counts the samples
and tokens of each micro-batch (from tensor shapes: no device sync) and the time spent training; at each
HF logging step the loop asks it to `measure`, and the rates since the previous log join the log entry, so they
reach `log_history`, the progress output and every logger like the loss does:

* `samples_per_second`: samples of all processes per second;
* `tokens_per_second`: input tokens (padding included: what the model computes on) of all processes per second, when
  the batches carry the model's main input (`input_ids` ...);
* `flops_per_second`: model FLOPs per second, by HF's own estimate (the `floating_point_ops` behind `total_flos`:
  6 x non-embedding parameters x tokens), when the model has one;
* `mfu`: model FLOPs utilisation, `flops_per_second` over the devices' peak for the run's precision, where
  Lightning knows that peak (`get_available_flops`: recent NVIDIA GPUs and TPUs). Absent on CPU.

The rates are Lightning's `Throughput` with a window of two updates (one interval between logs), counted on the
local process and scaled by the world size, as Lightning's monitor does: no collective. Time spent evaluating or
saving between two logs is left out (the clock restarts at the next training batch). Off by default; when off, no
callback is added and nothing runs per step.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.throughput import Throughput, get_available_flops
from typing_extensions import override

__all__ = ["THROUGHPUT_KEYS", "ThroughputMeter"]

THROUGHPUT_KEYS = ("samples_per_second", "tokens_per_second", "flops_per_second", "mfu")
"""The log keys `ThroughputMeter.measure` can add, in their order."""


def _compute_dtype(trainer: pl.Trainer) -> torch.dtype:
    """The dtype the matmuls run in under the trainer's precision plugin (Lightning's own mapping)."""
    from lightning.pytorch.callbacks.throughput_monitor import _plugin_to_compute_dtype

    return _plugin_to_compute_dtype(trainer.precision_plugin)


class ThroughputMeter(pl.Callback):
    """Counts samples, tokens and training time between HF logs; `measure` turns them into rates.

    Args:
        main_input_name: the model's main input (`model.main_input_name`); its shape gives the batch size and the
            token count. Batches without it count their samples from their first tensor, and no tokens.
        initial_total_flos: HF's `state.total_flos` when training starts (non-zero when resuming a checkpoint).
    """

    def __init__(self, main_input_name: str = "input_ids", initial_total_flos: float = 0.0) -> None:
        self.main_input_name = main_input_name
        self.initial_total_flos = initial_total_flos
        self.available_flops: int | None = None
        self._throughput: Throughput | None = None
        self._reset_counts()

    def _reset_counts(self) -> None:
        self._batches = self._samples = self._tokens = 0
        self._train_time = 0.0
        self._clock_started: float | None = None
        self._last_total_flos = self.initial_total_flos
        self._counts_tokens: bool | None = None  # decided by the first batch: does it carry the main input?

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.available_flops = get_available_flops(trainer.strategy.root_device, _compute_dtype(trainer))

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset_counts()
        self._throughput = None
        self._world_size = trainer.world_size

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        # Counted when the batch starts: the HF log of a step happens inside its last micro-batch's `training_step`.
        if self._clock_started is None:
            self._clock_started = time.perf_counter()
        inputs = getattr(batch, "inputs", batch)  # a `MicroBatch` of the accumulation windows, or a plain batch
        tensors = inputs if isinstance(inputs, Mapping) else {}
        main = tensors.get(self.main_input_name)
        has_main = isinstance(main, torch.Tensor) and main.dim() > 0
        if self._counts_tokens is None:
            self._counts_tokens = has_main
        if has_main:
            self._samples += main.shape[0]
            if self._counts_tokens:
                self._tokens += main.numel()
        else:
            first = next((v for v in tensors.values() if isinstance(v, torch.Tensor) and v.dim() > 0), None)
            self._samples += first.shape[0] if first is not None else 1
        self._batches += 1

    def measure(self, total_flos: float) -> dict[str, float]:
        """The rates since the previous call (since the training start for the first one): the keys of
        `THROUGHPUT_KEYS` that make sense for this run. `total_flos` is HF's `state.total_flos` (all processes)."""
        if self._clock_started is not None:
            self._train_time += time.perf_counter() - self._clock_started
            self._clock_started = None  # paused until the next training batch: evaluation and saving are not counted
        if self._batches == 0 or self._train_time <= 0:
            return {}
        world = self._world_size
        throughput = self._throughput
        if throughput is None:  # the first measurement: the window opens at the training start
            throughput = Throughput(available_flops=self.available_flops, world_size=world, window_size=2)
            throughput.update(time=0.0, batches=0, samples=0, lengths=0 if self._counts_tokens else None, flops=0)
            self._throughput = throughput
        interval_flops = max(total_flos - self._last_total_flos, 0.0)
        self._last_total_flos = total_flos
        throughput.update(
            time=self._train_time,
            batches=self._batches,
            samples=max(self._samples, self._batches),
            lengths=max(self._tokens, self._samples) if self._counts_tokens else None,
            flops=interval_flops / world,
        )
        rates = throughput.compute()
        metrics = {"samples_per_second": rates["device/samples_per_sec"] * world}
        if "device/items_per_sec" in rates:
            metrics["tokens_per_second"] = rates["device/items_per_sec"] * world
        if interval_flops > 0:
            metrics["flops_per_second"] = rates["device/flops_per_sec"] * world
            if "device/mfu" in rates:
                metrics["mfu"] = rates["device/mfu"]
        return metrics
