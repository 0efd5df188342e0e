"""Lightning's profilers on an HF run: a report the user sees, with HF's step names in it.

`TrainingArguments.profiler` ("simple", "advanced", "pytorch" or a Lightning `Profiler`) goes to the
`lightning.Trainer`, which profiles its own hooks and prints the report when `fit` ends. Two things make that report
useful to an HF user:

* it is shown whatever HF's `log_level` is: Lightning writes it with `logging.info` on the
  `lightning.pytorch.profilers` logger, which `hf_lightning` would otherwise silence with the rest of Lightning's
  logging (HF's default level is `warning`); `show_profiler_report` opens that one logger;
* the HF side of each step is timed under HF's method names: `profiled_hf_steps` wraps the trainer's
  `training_step`, `compute_loss`, `evaluate`, `_save_checkpoint` and `log` for the span of a profiled run (rows
  `[HF Trainer]training_step()`, ...). Names do not end in `training_step`, which Lightning's `PyTorchProfiler`
  reserves for its own step counting.

On a `lightning.Trainer` the user owns (the plain-Lightning door) the profiler is the user's; `HFStepProfiling`, a
callback `HFLightningModule` adds when that trainer profiles, records the loop's HF steps in it under the same names.

Without a profiler nothing is wrapped: no cost per step.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.profilers import PassThroughProfiler, Profiler
from typing_extensions import override

__all__ = ["HF_STEP_NAMES", "PROFILER_LOGGER", "HFStepProfiling", "profiled_hf_steps", "show_profiler_report"]

PROFILER_LOGGER = "lightning.pytorch.profilers"
"""The logger Lightning's profilers write their report to (when they are not given a `filename`)."""

HF_STEP_NAMES: dict[str, str] = {
    "training_step": "[HF Trainer]training_step()",
    "compute_loss": "[HF Trainer]compute_loss()",
    "evaluate": "[HF Trainer]evaluate()",
    "_save_checkpoint": "[HF Trainer]save_checkpoint()",
    "log": "[HF Trainer]log()",
}
"""Trainer method -> the action its calls are recorded under."""


def is_profiling(profiler: Any) -> bool:
    """Whether `profiler` (a `TrainingArguments.profiler` value or a Lightning trainer's profiler) records anything."""
    return profiler is not None and not isinstance(profiler, PassThroughProfiler)


def show_profiler_report(profiler: Any) -> None:
    """Let the report of `profiler` (`TrainingArguments.profiler` or a Lightning trainer's) through at the end of `fit`,
    whatever HF's log level (`set_log_levels` runs first)."""
    level = logging.INFO if is_profiling(profiler) else logging.NOTSET
    logging.getLogger(PROFILER_LOGGER).setLevel(level)


def _profiled(profiler: Profiler, action: str, method: Callable) -> Callable:
    @functools.wraps(method)  # keeps the signature: `training_step` callers look at its parameters
    def run(*args: Any, **kwargs: Any) -> Any:
        with profiler.profile(action):
            return method(*args, **kwargs)

    return run


@contextlib.contextmanager
def profiled_hf_steps(trainer: Any, profiler: Any) -> Iterator[None]:
    """Record `trainer`'s HF steps (`HF_STEP_NAMES`) in `profiler` while the block runs; a no-op when `profiler`
    records nothing. The wrappers are instance attributes over the methods as the trainer has them (user overrides,
    legacy-signature adapters) and are taken off afterwards, also when training fails."""
    if not is_profiling(profiler):
        yield
        return
    replaced: dict[str, Any] = {}  # name -> the instance attribute it shadowed (a legacy-signature adapter), or None
    for name, action in HF_STEP_NAMES.items():
        method = getattr(trainer, name, None)
        if callable(method):
            replaced[name] = vars(trainer).get(name)
            setattr(trainer, name, _profiled(profiler, action, method))
    try:
        yield
    finally:
        for name, previous in replaced.items():
            if previous is None:
                delattr(trainer, name)
            else:
                setattr(trainer, name, previous)


class HFStepProfiling(pl.Callback):
    """The plain door's `profiled_hf_steps`: from `setup` to `teardown` (or an exception) of each run of the
    user's `lightning.Trainer`, `loop`'s HF steps are recorded in that trainer's profiler, whose report is shown
    whatever HF's log level (`show_profiler_report`).

    Args:
        loop: the HF loop of the `HFLightningModule` (its `training_step`, `compute_loss`, `evaluate`, ... are
            wrapped for the span of the run).
    """

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self._span: contextlib.ExitStack | None = None

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._span is None:
            show_profiler_report(trainer.profiler)
            self._span = contextlib.ExitStack()
            self._span.enter_context(profiled_hf_steps(self.loop, trainer.profiler))

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._close()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self._span is not None:
            self._span.close()
            self._span = None
