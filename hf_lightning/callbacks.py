"""The callbacks bridge: HF callbacks, Lightning callbacks and `report_to` reporters in one run.

HF callbacks (`TrainerCallback`) stay in HF's `CallbackHandler` and receive HF's events in HF's order from the
loop; Lightning callbacks passed in the same list go to the `lightning.Trainer`. `report_to` integrations keep
transformers' own callbacks, in transformers' place (`hf_lightning.reporting`). Log levels follow
`args.get_process_log_level()`.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
from transformers import TrainerCallback
from transformers.trainer_callback import DefaultFlowCallback, PrinterCallback, ProgressCallback
from transformers.utils import is_in_notebook
from transformers.utils import logging as hf_logging

from hf_lightning.reporting import LightningLoggersCallback, hf_integration_callbacks

# ---- HF and Lightning callbacks ----------------------------------------------------------------------


def is_lightning_callback(callback: Any) -> bool:
    """Whether `callback` is a `lightning.pytorch.Callback` (class or instance)."""
    return isinstance(callback, pl.Callback) or (isinstance(callback, type) and issubclass(callback, pl.Callback))


def split_callbacks(callbacks: list) -> tuple[list, list[pl.Callback]]:
    """Separate HF callbacks (classes or instances) from Lightning callbacks (instantiated if classes)."""
    hf, lightning = [], []
    for cb in callbacks:
        is_class = isinstance(cb, type)
        if is_lightning_callback(cb):
            lightning.append(cb() if is_class else cb)
        elif (is_class and issubclass(cb, TrainerCallback)) or isinstance(cb, TrainerCallback):
            hf.append(cb)
        else:
            raise TypeError(
                f"`callbacks` entries must be transformers.TrainerCallback or lightning Callback, got {cb!r}."
            )
    return hf, lightning


def pop_lightning_callback(callbacks: list[pl.Callback], callback: Any) -> pl.Callback | None:
    """Remove and return `callback` (an instance, or the first instance of a class) from `callbacks`."""
    for cb in callbacks:
        if cb is callback or (isinstance(callback, type) and type(cb) is callback):
            callbacks.remove(cb)
            return cb
    return None


def progress_callback(args: Any) -> type[TrainerCallback]:
    """HF's choice: PrinterCallback with `disable_tqdm`, the notebook callback in Jupyter, else tqdm."""
    if args.disable_tqdm:
        return PrinterCallback
    if is_in_notebook():
        from transformers.utils.notebook import NotebookProgressCallback

        return NotebookProgressCallback
    return ProgressCallback


def default_callbacks(args: Any, loggers: list) -> list:
    """HF's leading callbacks: the flow callback first (it decides log/eval/save), then the reporters (`loggers`:
    Lightning loggers of hf_lightning's own `report_to` names, then transformers' integration callbacks)."""
    reporters = [LightningLoggersCallback(loggers)] if loggers else []
    return [DefaultFlowCallback] + reporters + hf_integration_callbacks(args.report_to)


# ---- log levels --------------------------------------------------------------------------------------


def set_log_levels(args: Any) -> int:
    """HF's verbosity for this process (`log_level`, `log_level_replica`, `log_on_each_node`), applied to the
    `transformers`, `lightning.pytorch` and `hf_lightning` loggers; returns the level."""
    level = args.get_process_log_level()
    hf_logging.set_verbosity(level)
    for name in ("lightning.pytorch", "hf_lightning"):
        logging.getLogger(name).setLevel(level)
    return level
