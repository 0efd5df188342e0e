"""The largest micro-batch that fits, at the same effective batch: `Trainer.scale_batch_size()` and
`TrainingArguments.auto_scale_batch_size`.

HF's `auto_find_batch_size` only goes down (it halves the batch after an out-of-memory error, which changes the
effective batch and with it the results). This searches upward from `per_device_train_batch_size` with Lightning's
batch-size finder strategies and keeps the effective batch per device, `per_device_train_batch_size x
gradient_accumulation_steps`, by trading accumulation steps for batch size:

* `"power"`: double the micro-batch until a trial runs out of memory, keep the last size that fitted;
* `"binsearch"`: double until out of memory, then bisect between the last fit and the first failure, and keep
  `margin` (5 %) of headroom below that limit, as Lightning's finder does.

Each trial runs `steps_per_trial` optimiser steps of the real job at that micro-batch (no accumulation: one
micro-batch is what has to fit, optimiser state included) through `tuning.trial_run`, which restores the model,
optimiser and RNG afterwards. The search never goes above the effective batch (nothing larger can keep it) or the
samples a process sees per epoch; the micro-batch used is the largest divisor of the effective batch that fitted,
and `gradient_accumulation_steps` becomes the quotient. An out-of-memory error is what Lightning's finder recognises
(`is_oom_error`), any `torch.OutOfMemoryError` and what accelerate's `find_executable_batch_size` halves on.

Lightning's `BatchSizeFinder` itself is not used for the facade: it stops doubling at its `max_val` and returns that
value without trying it, and it cannot keep an effective batch. On the plain-Lightning path,
`Tuner(trainer).scale_batch_size(module, datamodule=HFDataModule(...))` works with Lightning's own semantics
(`HFDataModule.batch_size` is `per_device_train_batch_size`).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch.utilities.memory import garbage_collection_cuda, is_oom_error
from transformers.trainer_utils import has_length

from hf_lightning.module import HFLightningModule
from hf_lightning.tuning import trial_lightning_trainer, trial_run

__all__ = ["BatchSizeResult", "SCALE_MODES", "is_out_of_memory", "scale_batch_size"]

logger = logging.getLogger(__name__)

SCALE_MODES = ("power", "binsearch")


@dataclass
class BatchSizeResult:
    """The search's outcome: the largest micro-batch that fitted (`max_fitting`), the plan that keeps the effective
    batch (`per_device_train_batch_size` x `gradient_accumulation_steps` = `effective_batch_size`), and every trial
    (`trials`: micro-batch -> whether it fitted, in the order tried)."""

    max_fitting: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    effective_batch_size: int
    trials: dict[int, bool] = field(default_factory=dict)


def is_out_of_memory(error: BaseException) -> bool:
    """An out-of-memory error on any device: Lightning's test, `torch.OutOfMemoryError`, or accelerate's."""
    if isinstance(error, torch.OutOfMemoryError) or is_oom_error(error):
        return True
    from accelerate.utils.memory import should_reduce_batch_size

    return isinstance(error, Exception) and should_reduce_batch_size(error)


def _largest_divisor_at_most(total: int, limit: int) -> int:
    return max(d for d in range(1, min(total, limit) + 1) if total % d == 0)


def _next_size(size: int, fits: dict[int, bool], mode: str, cap: int) -> int | None:
    """Lightning's strategies: the next micro-batch to try after the trials in `fits`, or None when the search is
    over."""
    fitted = [s for s, ok in fits.items() if ok]
    failed = [s for s, ok in fits.items() if not ok]
    low, high = max(fitted, default=0), min(failed, default=None)
    if high is None:  # still growing
        return None if low >= cap else min(2 * low, cap)
    if not fitted:  # even the first size failed: halve until something fits
        return high // 2 if high > 1 else None
    if mode == "power" or high - low <= 1:
        return None
    return (low + high) // 2


def scale_batch_size(
    trainer: Any,
    mode: str = "power",
    steps_per_trial: int = 3,
    init_val: int | None = None,
    max_trials: int = 25,
    margin: float = 0.05,
) -> BatchSizeResult:
    """Search the largest micro-batch of `trainer`'s job that fits (see the module docstring). Starts at `init_val`
    (default: `per_device_train_batch_size`); `margin` applies to `"binsearch"` as in Lightning."""
    if mode not in SCALE_MODES:
        raise ValueError(f"Batch-size search `mode` must be one of {SCALE_MODES}, got {mode!r}.")
    if steps_per_trial < 1 or max_trials < 1 or not 0 <= margin < 1:
        raise ValueError("scale_batch_size needs steps_per_trial >= 1, max_trials >= 1 and 0 <= margin < 1.")
    if trainer.train_dataset is None:
        raise ValueError("scale_batch_size needs the Trainer's `train_dataset`.")
    args = trainer.args
    effective = args.per_device_train_batch_size * args.gradient_accumulation_steps
    cap = effective
    if has_length(trainer.train_dataset):
        cap = min(cap, max(len(trainer.train_dataset) // max(args.world_size, 1), 1))
    size = min(init_val or args.per_device_train_batch_size, cap)
    fits: dict[int, bool] = {}
    with trial_run(trainer) as (loop, root_dir), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(module\(s\) in eval mode|does not have many workers).*")
        while size is not None and len(fits) < max_trials:
            fits[size] = _fits(trainer, loop, root_dir, size, steps_per_trial)
            logger.info("scale_batch_size: micro-batch %d %s", size, "fits" if fits[size] else "is out of memory")
            size = _next_size(size, fits, mode, cap)
    fitted = [s for s, ok in fits.items() if ok]
    if not fitted:
        raise RuntimeError(f"scale_batch_size: no micro-batch fits in memory (tried {sorted(fits)}).")
    best = max(fitted)
    if mode == "binsearch" and margin > 0 and not all(fits.values()):  # headroom below a memory limit that was hit
        best = max(1, int(best * (1 - margin)))
    per_device = _largest_divisor_at_most(effective, best)
    return BatchSizeResult(best, per_device, effective // per_device, effective, fits)


def _fits(trainer: Any, loop: Any, root_dir: str, size: int, steps: int) -> bool:
    """Run `steps` optimiser steps at micro-batch `size`; False when it ran out of memory."""
    lightning = trial_lightning_trainer(trainer, root_dir, max_steps=steps, limit_train_batches=steps)
    module = HFLightningModule(trainer.model, loop)
    trainer.lightning_trainer, trainer.lightning_module = lightning, module
    fitted = False
    try:
        lightning.fit(module, train_dataloaders=trainer.get_train_window_loader(size, gradient_accumulation_steps=1))
        fitted = True
    except Exception as error:
        if not is_out_of_memory(error):
            raise
    finally:
        trainer.lightning_trainer = trainer.lightning_module = None
    if not fitted and torch.cuda.is_available():
        garbage_collection_cuda()  # what the failed trial allocated is freed before the next one (a full gc: ~1 s)
    return fitted
