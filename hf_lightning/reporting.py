"""`report_to`: transformers' own integration callbacks, with a Lightning logger over each for Lightning callbacks.

Every integration transformers supports (tensorboard, wandb, mlflow, comet_ml, trackio, clearml, ...) reports
through transformers' own callback (`INTEGRATION_TO_CALLBACK`), in transformers' place in the callback list: run
folders, project and run names, metric names (`train/loss`, `eval/loss`), the x-axis (`train/global_step`), summaries
(`train_loss`, `train_runtime` ...), artifacts and environment variables are transformers' by construction, so
dashboards built on transformers keep working. `report_to="csv"` (hf_lightning's own) is a Lightning `CSVLogger`
with one row per `log_history` entry, fed by `LightningLoggersCallback`.

The `lightning.Trainer` gets one `ReportToLogger` per integration: what Lightning callbacks log
(`LearningRateMonitor`, `DeviceStatsMonitor` ...) goes through that integration's callback into the same run, named
and stepped as HF names and steps its own logs.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from transformers import TrainerCallback

__all__ = [
    "LightningLoggersCallback",
    "ReportToLogger",
    "build_loggers",
    "hf_integration_callbacks",
    "integration_loggers",
    "report_to_names",
]

# hf_lightning's own report_to names (no transformers integration): name -> Lightning logger.
OWN_LOGGERS = ("csv",)
# report_to name -> (python modules of which one must be importable, pip extra of hf_lightning that installs it)
PIP_EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "mlflow": (("mlflow",), "mlflow"),
    "wandb": (("wandb",), "wandb"),
}
# Lightning logger classes whose HF counterpart renames keys with `rewrite_logs` ("loss" -> "train/loss").
_REWRITTEN = {"tensorboard", "wandb"}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def report_to_names(report_to: Any) -> list[str]:
    """Normalise `report_to` ("none", "all", a name or a list) to integration names, checking each.

    "all" is transformers' list of installed integrations. An integration whose package is missing raises an
    ImportError naming the hf_lightning extra that installs it.
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
        if name not in OWN_LOGGERS and name not in INTEGRATION_TO_CALLBACK:
            choices = sorted(set(OWN_LOGGERS) | set(INTEGRATION_TO_CALLBACK))
            raise ValueError(f"`report_to`: {name!r} is not supported; choose from {', '.join(choices)}.")
        modules, extra = PIP_EXTRAS.get(name, ((), ""))
        if modules and not any(_installed(m) for m in modules):
            raise ImportError(
                f"`report_to` asks for {name!r} but the {modules[0]!r} package is not installed: "
                f"pip install 'hf_lightning[{extra}]'."
            )
    return names


def hf_integration_callbacks(report_to: Any) -> list[type[TrainerCallback]]:
    """transformers' callbacks of the `report_to` integrations, in `report_to`'s order (as transformers adds them)."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return [INTEGRATION_TO_CALLBACK[n] for n in report_to_names(report_to) if n not in OWN_LOGGERS]


def build_loggers(args: Any) -> list:
    """The Lightning loggers of hf_lightning's own `report_to` names (`csv`: `output_dir/csv_logs/metrics.csv`)."""
    loggers: list = []
    for name in report_to_names(args.report_to):
        if name == "csv":
            from lightning.pytorch.loggers import CSVLogger

            loggers.append(CSVLogger(save_dir=args.output_dir, name="csv_logs", version=""))
    return loggers


def integration_loggers(trainer: Any) -> list[ReportToLogger]:
    """A `ReportToLogger` for each `report_to` integration of `trainer` (its callbacks already in its handler).

    The v4 `logging_dir` argument, which transformers 5 no longer reads, is handed to the TensorBoard callback (unless
    `TENSORBOARD_LOGGING_DIR` is set, which wins, as in transformers)."""
    from transformers.integrations.integration_utils import TensorBoardCallback

    v4_dir = getattr(trainer.args, "logging_dir", None)
    if v4_dir and not os.environ.get("TENSORBOARD_LOGGING_DIR"):
        for cb in trainer.callback_handler.callbacks:
            if isinstance(cb, TensorBoardCallback):
                cb.logging_dir = os.path.expanduser(v4_dir)
    names = [n for n in report_to_names(trainer.args.report_to) if n not in OWN_LOGGERS]
    return [ReportToLogger(name, trainer) for name in names]


class ReportToLogger(Logger):
    """A Lightning logger writing through one `report_to` integration's transformers callback.

    `log_metrics` hands the metrics to the callback's `on_log`, so they land in the integration's run under HF's names
    (`train/lr-AdamW` in TensorBoard and W&B) at HF's `global_step`. `experiment` is that callback (its `tb_writer`,
    `_wandb` ... as transformers keeps them). Hyperparameters: the callback records `args` and the model config
    itself when training begins.

    Args:
        name: the `report_to` name (e.g. "tensorboard").
        trainer: the HF side of the run (`args`, `state`, `control`, `model`, `callback_handler`).
    """

    def __init__(self, name: str, trainer: Any) -> None:
        super().__init__()
        from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

        self._name = name
        self._callback_type = INTEGRATION_TO_CALLBACK[name]
        self._trainer = trainer

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int:
        return 0

    @property
    def experiment(self) -> TrainerCallback | None:
        """The integration's callback in the trainer's handler (None once the user removed it)."""
        return next((cb for cb in self._trainer.callback_handler.callbacks if type(cb) is self._callback_type), None)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        callback = self.experiment
        if callback is not None and metrics:
            t = self._trainer
            callback.on_log(t.args, t.state, t.control, logs=dict(metrics), model=t.model)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        if params:
            warnings.warn(
                f"`report_to={self._name!r}`: the integration records the TrainingArguments and the model config "
                f"itself; Lightning hyperparameters {sorted(params)} are not sent to it.",
                stacklevel=2,
            )


def _backend(lg: Any) -> str:
    return type(lg).__name__.replace("Logger", "").lower()


class LightningLoggersCallback(TrainerCallback):
    """Sends every HF `log()` (train, eval, summary) to Lightning loggers at HF's `global_step`.

    Lightning's TensorBoard and W&B loggers get HF's `train/...`, `eval/...` names (as HF's own callbacks write
    them), the others (CSV) the `log_history` keys. Each logger is flushed after every log.
    """

    def __init__(self, loggers: list) -> None:
        self.loggers = loggers
        self.trainer: Any = None  # the `lightning.Trainer` running the loop, once there is one (`lightning_events`)

    def _lightning_logs_itself(self) -> bool:
        """Lightning's own `validate()`/`test()` log their metrics to the loggers (Lightning's semantics there)."""
        state = getattr(self.trainer, "state", None)
        return state is not None and state.fn in ("validate", "test") and state.stage in ("validate", "test")

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
        if not state.is_world_process_zero or not logs or self._lightning_logs_itself():
            return
        from transformers.integrations.integration_utils import rewrite_logs

        scalars = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for lg in self.loggers:
            lg.log_metrics(rewrite_logs(scalars) if _backend(lg) in _REWRITTEN else scalars, step=state.global_step)
            lg.save()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for lg in self.loggers:
            lg.save()
