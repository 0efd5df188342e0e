"""The callbacks bridge: HF callbacks, Lightning callbacks and `report_to` loggers in one run.

HF callbacks (`TrainerCallback`) stay in HF's `CallbackHandler` and receive HF's events in HF's order from the
loop; Lightning callbacks passed in the same list go to the `lightning.Trainer`. `report_to` names become
Lightning loggers, fed by `LightningLoggersCallback` with exactly what HF logs, at HF's `global_step`.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from datetime import datetime
from typing import Any

import lightning.pytorch as pl
from transformers import TrainerCallback
from transformers.trainer_callback import DefaultFlowCallback, PrinterCallback, ProgressCallback

# report_to name -> (python module that must be importable, pip extra to install)
LOGGER_BACKENDS: dict[str, tuple[str | None, str | None]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "csv": (None, None),
    "mlflow": ("mlflow", "mlflow"),
    "wandb": ("wandb", "wandb"),
}


def split_callbacks(callbacks: list) -> tuple[list, list[pl.Callback]]:
    """Separate HF callbacks (classes or instances) from Lightning callbacks (instantiated if classes)."""
    hf, lightning = [], []
    for cb in callbacks:
        is_class = isinstance(cb, type)
        if (is_class and issubclass(cb, pl.Callback)) or isinstance(cb, pl.Callback):
            lightning.append(cb() if is_class else cb)
        elif (is_class and issubclass(cb, TrainerCallback)) or isinstance(cb, TrainerCallback):
            hf.append(cb)
        else:
            raise TypeError(
                f"`callbacks` entries must be transformers.TrainerCallback or lightning Callback, got {cb!r}."
            )
    return hf, lightning


def progress_callback(args: Any) -> type[TrainerCallback]:
    """HF's choice: PrinterCallback with `disable_tqdm`, the notebook callback in Jupyter, else tqdm."""
    if args.disable_tqdm:
        return PrinterCallback
    try:
        from IPython import get_ipython

        if get_ipython() is not None and "IPKernelApp" in get_ipython().config:
            from transformers.utils.notebook import NotebookProgressCallback

            return NotebookProgressCallback
    except (ImportError, AttributeError):
        pass
    return ProgressCallback


def report_to_names(report_to: Any) -> list[str]:
    """Normalise `report_to` ("none", "all", a name or a list) to backend names, checking each."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if names in (["none"], []):
        return []
    if names == ["all"]:
        return [n for n, (module, _) in LOGGER_BACKENDS.items() if module is None or _installed(module)]
    for name in names:
        if name not in LOGGER_BACKENDS:
            raise ValueError(f"`report_to`: {name!r} is not supported; choose from {', '.join(LOGGER_BACKENDS)}.")
        module, extra = LOGGER_BACKENDS[name]
        if module is not None and not _installed(module):
            raise ImportError(
                f"`report_to` asks for {name!r} but the {module!r} package is not installed: "
                f"pip install 'hf_lightning[{extra}]'."
            )
    return names


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def default_logging_dir(args: Any) -> str:
    """HF's TensorBoard folder: v4 `logging_dir`, env `TENSORBOARD_LOGGING_DIR`, else `output_dir/runs/<time>`."""
    explicit = getattr(args, "logging_dir", None) or os.environ.get("TENSORBOARD_LOGGING_DIR")
    if explicit:
        return explicit
    stamp = datetime.now().strftime("%b%d_%H-%M-%S")
    return os.path.join(args.output_dir, "runs", f"{stamp}_{socket.gethostname()}")


def build_loggers(args: Any) -> list:
    """Lightning loggers for `report_to`; wandb and mlflow run offline / on a local file store by default."""
    loggers: list = []
    run_name = args.run_name or os.path.basename(os.path.normpath(args.output_dir))
    for name in report_to_names(args.report_to):
        if name == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            log_dir = default_logging_dir(args)
            loggers.append(TensorBoardLogger(save_dir=log_dir, name="", version="", default_hp_metric=False))
        elif name == "csv":
            from lightning.pytorch.loggers import CSVLogger

            loggers.append(CSVLogger(save_dir=args.output_dir, name="csv_logs", version=""))
        elif name == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            uri = os.environ.get("MLFLOW_TRACKING_URI", "file:" + os.path.join(os.path.abspath(args.output_dir), "mlruns"))
            loggers.append(MLFlowLogger(experiment_name=args.project or "huggingface", run_name=run_name, tracking_uri=uri))
        elif name == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            offline = os.environ.get("WANDB_MODE", "offline") == "offline"
            loggers.append(WandbLogger(name=run_name, project=args.project, save_dir=args.output_dir, offline=offline))
    return loggers


class LightningLoggersCallback(TrainerCallback):
    """Sends every HF `log()` (train, eval, summary) to the Lightning loggers at HF's `global_step`."""

    def __init__(self, loggers: list) -> None:
        self.loggers = loggers

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        scalars = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for lg in self.loggers:
            lg.log_metrics(scalars, step=state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for lg in self.loggers:
            lg.save()


def default_callbacks(args: Any, loggers: list) -> list:
    """HF's leading callbacks: the flow callback first (it decides log/eval/save), then the reporters."""
    return [DefaultFlowCallback] + ([LightningLoggersCallback(loggers)] if loggers else [])
