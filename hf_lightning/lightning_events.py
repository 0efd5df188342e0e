"""HF events in Lightning's vocabulary: what the HF loop logs and evaluates, as Lightning's callbacks, loggers and
progress bar expect to hear it.

The HF loop decides when to log and evaluate (`logging_steps`, `eval_strategy` ...), inside Lightning's training
step, where Lightning's own validation loop never runs. `LightningEvents` tells the `lightning.Trainer` running the
loop, in Lightning's terms:

* every HF log lands in `trainer.callback_metrics` (as float64 tensors, under HF's names: `eval_loss`, `loss`,
  `learning_rate` ...; not HF's fractional `epoch`, which would rename Lightning's checkpoints), so
  `EarlyStopping(monitor="eval_loss")` and `ModelCheckpoint(monitor="eval_accuracy")` find it. Training logs are
  published only when the trainer has Lightning callbacks (nothing else reads them): a run without any pays nothing
  per step;
* every HF log reaches every Lightning logger of the trainer (its own, those of `report_to` and of
  `lightning_trainer_kwargs`) at HF's `global_step`, through `reporting.LightningLoggersCallback` (a `report_to`
  integration's logger, `reporting.ReportToLogger`, is its HF callback, which hears HF's logs itself);
* an HF evaluation during training runs the validation-end hooks of the Lightning callbacks (`on_validation_epoch_end`,
  `on_validation_end`) once the batch of that optimiser step has ended - where Lightning would run its own validation
  - so EarlyStopping decides and ModelCheckpoint saves exactly as after a Lightning validation; a stop they ask for
  (`trainer.should_stop`) stops the HF loop after that step, as HF's `EarlyStoppingCallback` does;
* Lightning's progress bar, when the trainer has one, replaces HF's (`ProgressCallback`, `NotebookProgressCallback`)
  and shows the logged values.

Which hooks run when is Lightning's rule: `EarlyStopping` and `ModelCheckpoint` check at `on_train_epoch_end` when the
trainer validates once per epoch (`check_val_every_n_epoch=1`, `val_check_interval=1.0`), else at validation end;
`hf_lightning.translation` sets those two from `eval_strategy`, so an epoch-end HF evaluation (which runs before the
monitoring callbacks' `on_train_epoch_end`) and a step evaluation are each seen where Lightning looks.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ProgressBar
from transformers.trainer_callback import CallbackHandler, ProgressCallback

from hf_lightning.reporting import LightningLoggersCallback, ReportToLogger

__all__ = ["LightningEvents", "hf_progress_bar_classes"]

# Names Lightning's callbacks read as its own counters (`ModelCheckpoint` file names use `epoch` and `step`): HF's
# fractional `epoch` stays out of `callback_metrics`.
_LIGHTNING_OWNED = frozenset({"epoch", "step"})
# Logged values a progress bar does not show (timings, flos).
_NOT_SHOWN = ("_runtime", "_per_second", "total_flos")


def hf_progress_bar_classes() -> tuple[type, ...]:
    """HF's progress bar callbacks (tqdm, and the notebook one when it imports)."""
    try:
        from transformers.utils.notebook import NotebookProgressCallback
    except ImportError:  # pragma: no cover - notebook extras missing
        return (ProgressCallback,)
    return (ProgressCallback, NotebookProgressCallback)


class LightningEvents:
    """The bridge from one HF loop to the `lightning.Trainer` running it (`trainer=None`: no trainer yet)."""

    def __init__(self, trainer: pl.Trainer | None = None, callback_handler: CallbackHandler | None = None) -> None:
        self.trainer = trainer
        self.pending = False  # an HF evaluation whose validation-end hooks have not run yet
        callbacks = list(trainer.callbacks) if trainer is not None else []
        self._callbacks = [cb for cb in callbacks if not isinstance(cb, ProgressBar)]
        self._progress_bar = trainer.progress_bar_callback if trainer is not None else None
        self._publish_train_logs = bool(callbacks)
        if trainer is not None and callback_handler is not None:
            self._connect_loggers(trainer, callback_handler)
            if self._progress_bar is not None:
                for cls in hf_progress_bar_classes():
                    callback_handler.remove_callback(cls)

    @staticmethod
    def _connect_loggers(trainer: pl.Trainer, callback_handler: CallbackHandler) -> None:
        """Point HF's logger bridge at every logger of `trainer` (plus those `report_to` built); add it after the flow
        callback when `report_to` built none but the trainer has loggers."""
        reporter = next((cb for cb in callback_handler.callbacks if isinstance(cb, LightningLoggersCallback)), None)
        loggers = list(reporter.loggers) if reporter is not None else []
        # A `ReportToLogger` writes through a `report_to` integration's own HF callback, which hears HF's logs itself.
        others = [lg for lg in trainer.loggers if not isinstance(lg, ReportToLogger)]
        loggers += [lg for lg in others if all(lg is not known for known in loggers)]
        if reporter is not None:
            reporter.loggers = loggers
        elif loggers:
            callback_handler.callbacks.insert(1, LightningLoggersCallback(loggers))
        for reporter in (cb for cb in callback_handler.callbacks if isinstance(cb, LightningLoggersCallback)):
            reporter.trainer = trainer

    # ---- metrics --------------------------------------------------------------------------------------------

    def publish(self, logs: dict[str, Any], training_step: bool = False) -> None:
        """Put HF's logged scalars in `callback_metrics` (and the progress bar's metrics); a training-step log only
        when Lightning callbacks may read it."""
        trainer = self.trainer
        if trainer is None or (training_step and not self._publish_train_logs):
            return
        values = {
            k: torch.tensor(float(v), dtype=torch.float64)
            for k, v in logs.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _LIGHTNING_OWNED
        }
        trainer.callback_metrics.update(values)
        if self._progress_bar is not None:
            shown = {k: v.item() for k, v in values.items() if not k.endswith(_NOT_SHOWN)}
            trainer.progress_bar_metrics.update(shown)

    # ---- evaluation -------------------------------------------------------------------------------------------

    def evaluated(self) -> None:
        """An HF evaluation during training just ended: Lightning's validation-end hooks are due (not when Lightning's
        own validation loop ran it: Lightning calls them itself)."""
        trainer = self.trainer
        if trainer is None or not trainer.training or trainer.sanity_checking:
            return
        self.pending = bool(self._callbacks)

    def validation_end(self) -> bool:
        """Run the due validation-end hooks of the Lightning callbacks; returns whether one asked to stop."""
        self.pending = False
        trainer = self.trainer
        module = trainer.lightning_module
        for hook in ("on_validation_epoch_end", "on_validation_end"):
            for callback in self._callbacks:
                getattr(callback, hook)(trainer, module)
        return bool(trainer.should_stop)
