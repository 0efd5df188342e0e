"""What a run prints: transformers' Trainer messages, without Lightning's own banners or frames.

* HF's messages (the "***** Running training *****" block, the evaluation header, "Saving model checkpoint to ...",
  "Training completed ...") go to the `transformers.trainer` logger, as transformers logs them: `log_level`,
  `transformers.logging.set_verbosity_*` and handlers set up for transformers apply to them unchanged.
* A checkpoint is written into `tmp-checkpoint-N` and published by a rename (`hf_lightning.checkpoints`); the save
  messages (also those transformers' `save_pretrained` logs) name the published folder (`published_paths`).
* Lightning's start-up banners ("GPU available ...", "TPU available ...", its advertising tip, per-rank
  "Initializing distributed ..." lines, "GPU available but not used") are dropped while the facade builds and runs
  its `lightning.Trainer` (`quiet_lightning`); Lightning's other warnings, and what Lightning callbacks log, are kept.
* An exception raised in training is re-raised with Lightning's loop frames taken out of its traceback
  (`without_lightning_frames`): the user's frames and HF-side frames stay, so it reads like transformers'.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import types
import warnings
from collections.abc import Iterator
from typing import Any

import lightning
from transformers.trainer_pt_utils import get_model_param_count
from transformers.utils import logging as hf_logging

from hf_lightning.compat import training_log_of_5_3

__all__ = [
    "hf_logger",
    "log_evaluation_start",
    "log_training_completed",
    "log_training_start",
    "published_paths",
    "quiet_lightning",
    "without_lightning_frames",
]

hf_logger = hf_logging.get_logger("transformers.trainer")

# Lightning's banners, by the loggers that print them (its rank-zero helper, process-group set-up, CUDA devices).
_BANNER_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.distributed",
    "lightning.pytorch.accelerators.cuda",
)
_BANNER = re.compile(
    r"^(GPU available|TPU available|HPU available|💡 Tip|LOCAL_RANK: |Initializing distributed: "
    r"|-{20,}\s*distributed_backend=|`Trainer.fit` stopped: )"
)
_LIGHTNING_DIR = os.path.dirname(os.path.abspath(lightning.__file__)) + os.sep


def log_training_start(
    args: Any,
    plan: dict[str, int],
    train_batch_size: int,
    num_examples: int | None,
    model: Any,
    resumed: tuple[int, int, int] | None = None,
) -> None:
    """HF's "***** Running training *****" block (`_inner_training_loop`).

    Args:
        args: the run's `TrainingArguments`.
        plan: the step budget (`max_steps`, `num_train_epochs`, `steps_per_epoch`), as HF computes it.
        train_batch_size: the per-device batch size trained with (`auto_find_batch_size` may have lowered it).
        num_examples: the training set's size; None when the loader has no length (HF then counts
            `max_steps` total batches).
        model: the model trained (its trainable parameters are counted).
        resumed: (epochs trained, global step, batches skipped) when resuming from a checkpoint.
    """
    total_batch_size = train_batch_size * args.gradient_accumulation_steps * args.world_size
    if num_examples is None:
        num_examples = total_batch_size * args.max_steps
    hf_logger.info("***** Running training *****")
    hf_logger.info(f"  Num examples = {num_examples:,}")
    hf_logger.info(f"  Num Epochs = {plan['num_train_epochs']:,}")
    if training_log_of_5_3():
        hf_logger.info(f"  Num update steps per epoch = {plan['steps_per_epoch']:,}")
    hf_logger.info(f"  Instantaneous batch size per device = {args.per_device_train_batch_size:,}")
    if args.per_device_train_batch_size != train_batch_size:
        hf_logger.info(f"  Training with DataParallel so batch size has been adjusted to: {train_batch_size:,}")
    hf_logger.info(f"  Total train batch size (w. parallel, distributed & accumulation) = {total_batch_size:,}")
    hf_logger.info(f"  Gradient Accumulation steps = {args.gradient_accumulation_steps}")
    hf_logger.info(f"  Total optimization steps = {plan['max_steps']:,}")
    hf_logger.info(f"  Number of trainable parameters = {get_model_param_count(model, trainable_only=True):,}")
    if resumed is not None:
        epochs_trained, global_step, skipped = resumed
        if not training_log_of_5_3():
            hf_logger.info("  Continuing training from checkpoint, will skip to saved global_step")
            hf_logger.info(f"  Continuing training from epoch {epochs_trained}")
            hf_logger.info(f"  Continuing training from global step {global_step}")
            if not args.ignore_data_skip:
                hf_logger.info(
                    f"  Will skip the first {epochs_trained} epochs then the first {skipped} batches in the first "
                    "epoch."
                )
            return
        hf_logger.info(f"  Resuming training from checkpoint with epoch {epochs_trained} and global step {global_step}")
        if not args.ignore_data_skip:
            hf_logger.info(
                f"  Fast-forwarding the dataloader past {epochs_trained} epochs and {skipped} batches to resume from "
                "the exact training state."
            )


def _len(dataloader: Any) -> int | None:
    try:
        return len(dataloader)
    except (TypeError, NotImplementedError):
        return None


def log_evaluation_start(trainer: Any, dataloader: Any, description: str, batch_size: int | None) -> None:
    """HF's header of an evaluation or prediction loop."""
    hf_logger.info(f"\n***** Running {description} *****")
    if _len(dataloader) is not None:
        hf_logger.info(f"  Num examples = {trainer.num_examples(dataloader)}")
    else:
        hf_logger.info("  Num examples: Unknown")
    hf_logger.info(f"  Batch size = {batch_size}")


def log_training_completed() -> None:
    hf_logger.info("\n\nTraining completed. Do not forget to share your model on huggingface.co/models =)\n\n")


@contextlib.contextmanager
def published_paths(tmp_dir: str, final_dir: str) -> Iterator[None]:
    """Log records made meanwhile name `final_dir` where they say `tmp_dir` (the folder is renamed once complete)."""
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if isinstance(record.msg, str):
            record.msg = record.msg.replace(tmp_dir, final_dir)
        if isinstance(record.args, tuple):
            record.args = tuple(a.replace(tmp_dir, final_dir) if isinstance(a, str) else a for a in record.args)
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


class _BannerFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not _BANNER.match(str(record.msg))


_FILTER = _BannerFilter()


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Drop Lightning's informational banners (see the module docstring) for the duration, and its warning that an
    available GPU/TPU is not used (`use_cpu=True` on a GPU machine: transformers says nothing either)."""
    loggers = [logging.getLogger(name) for name in _BANNER_LOGGERS]
    added = [lg for lg in loggers if _FILTER not in lg.filters]
    for lg in added:
        lg.addFilter(_FILTER)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"(GPU|TPU|HPU) available but not used")
            yield
    finally:
        for lg in added:
            lg.removeFilter(_FILTER)


def without_lightning_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """`tb` without the frames of Lightning's package (its fit loop, hook dispatch, strategy); others are kept."""
    kept = []
    while tb is not None:
        if not os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_LIGHTNING_DIR):
            kept.append(tb)
        tb = tb.tb_next
    pruned = None
    for entry in reversed(kept):
        pruned = types.TracebackType(pruned, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return pruned
