"""The callbacks bridge: HF callbacks, Lightning callbacks and `report_to` loggers in one run.

HF callbacks (`TrainerCallback`) stay in HF's `CallbackHandler` and receive HF's events in HF's order from the
loop; Lightning callbacks passed in the same list go to the `lightning.Trainer`. `report_to` names with a
Lightning logger (tensorboard, csv, mlflow, wandb) become Lightning loggers, fed by `LightningLoggersCallback`
with exactly what HF logs, at HF's `global_step` and under HF's names; the other HF integrations (comet_ml,
clearml, codecarbon ...) keep HF's own callback. Log levels follow `args.get_process_log_level()`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from datetime import datetime
from typing import Any

import lightning.pytorch as pl
from transformers import TrainerCallback
from transformers.trainer_callback import DefaultFlowCallback, PrinterCallback, ProgressCallback
from transformers.utils import is_in_notebook
from transformers.utils import logging as hf_logging

# report_to name -> (python modules of which one must be importable, pip extra to install)
LOGGER_BACKENDS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "csv": ((), None),
    "mlflow": (("mlflow",), "mlflow"),
    "wandb": (("wandb",), "wandb"),
}
# Loggers whose HF callback renames keys with `rewrite_logs` ("loss" -> "train/loss", "eval_loss" -> "eval/loss").
_REWRITTEN = {"tensorboard", "wandb"}


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
    """HF's leading callbacks: the flow callback first (it decides log/eval/save), then the reporters."""
    reporters = [LightningLoggersCallback(loggers)] if loggers else []
    return [DefaultFlowCallback] + reporters + hf_integration_callbacks(args.report_to)


# ---- report_to ---------------------------------------------------------------------------------------


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def report_to_names(report_to: Any) -> list[str]:
    """Normalise `report_to` ("none", "all", a name or a list) to integration names, checking each.

    "all" is HF's list of installed integrations. A Lightning-logger backend whose package is missing raises an
    ImportError naming the extra to install.
    """
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if names in (["none"], []):
        return []
    if names == ["all"]:
        return list(get_available_reporting_integrations())
    for name in names:
        if name not in LOGGER_BACKENDS and name not in INTEGRATION_TO_CALLBACK:
            choices = sorted(set(LOGGER_BACKENDS) | set(INTEGRATION_TO_CALLBACK))
            raise ValueError(f"`report_to`: {name!r} is not supported; choose from {', '.join(choices)}.")
        modules, extra = LOGGER_BACKENDS.get(name, ((), None))
        if modules and not any(_installed(m) for m in modules):
            raise ImportError(
                f"`report_to` asks for {name!r} but the {modules[0]!r} package is not installed: "
                f"pip install 'hf_lightning[{extra}]'."
            )
    return names


def hf_integration_callbacks(report_to: Any) -> list[type[TrainerCallback]]:
    """HF's own callbacks for the `report_to` integrations that have no Lightning logger here."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return [INTEGRATION_TO_CALLBACK[n] for n in report_to_names(report_to) if n not in LOGGER_BACKENDS]


def default_logging_dir(args: Any) -> str:
    """HF's TensorBoard folder: env `TENSORBOARD_LOGGING_DIR`, v4 `logging_dir`, else `output_dir/runs/<time>`."""
    explicit = os.environ.get("TENSORBOARD_LOGGING_DIR") or getattr(args, "logging_dir", None)
    if explicit:
        return os.path.expanduser(explicit)
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

            default_uri = "file:" + os.path.join(os.path.abspath(args.output_dir), "mlruns")
            uri = os.environ.get("MLFLOW_TRACKING_URI", default_uri)
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", args.project or "huggingface")
            loggers.append(MLFlowLogger(experiment_name=experiment, run_name=run_name, tracking_uri=uri))
        elif name == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            offline = os.environ.get("WANDB_MODE", "offline") == "offline"
            project = os.environ.get("WANDB_PROJECT", args.project)
            loggers.append(WandbLogger(name=run_name, project=project, save_dir=args.output_dir, offline=offline))
    return loggers


def _backend(lg: Any) -> str:
    return type(lg).__name__.replace("Logger", "").lower()


class LightningLoggersCallback(TrainerCallback):
    """Sends every HF `log()` (train, eval, summary) to the Lightning loggers at HF's `global_step`.

    TensorBoard and wandb get HF's `train/...`, `eval/...` names (as HF's own callbacks write them), the others
    the `log_history` keys. Each logger is flushed after every log, as HF's TensorBoard callback does.
    """

    def __init__(self, loggers: list) -> None:
        self.loggers = loggers

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        for lg in self.loggers:
            if _backend(lg) == "tensorboard":
                lg.experiment.add_text("args", args.to_json_string())
                if getattr(model, "config", None) is not None:
                    lg.experiment.add_text("model_config", model.config.to_json_string())
            elif _backend(lg) != "csv":
                lg.log_hyperparams(args.to_sanitized_dict())

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        from transformers.integrations.integration_utils import rewrite_logs

        scalars = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for lg in self.loggers:
            lg.log_metrics(rewrite_logs(scalars) if _backend(lg) in _REWRITTEN else scalars, step=state.global_step)
            lg.save()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for lg in self.loggers:
            lg.save()


# ---- log levels --------------------------------------------------------------------------------------


def set_log_levels(args: Any) -> int:
    """HF's verbosity for this process (`log_level`, `log_level_replica`, `log_on_each_node`), applied to the
    `transformers`, `lightning.pytorch` and `hf_lightning` loggers; returns the level."""
    level = args.get_process_log_level()
    hf_logging.set_verbosity(level)
    for name in ("lightning.pytorch", "hf_lightning"):
        logging.getLogger(name).setLevel(level)
    return level
