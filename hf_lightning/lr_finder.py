"""The learning-rate range test on an HF job: `Trainer.lr_find()` and `TrainingArguments.auto_lr_find`.

Lightning's LR finder (`lightning.pytorch.tuner.Tuner.lr_find`: an exponential (or linear) sweep of the learning rate
from `min_lr` to `max_lr` over `num_training` optimiser steps, stopped early when the smoothed loss diverges; the
suggestion is the point of steepest descent) runs on the job `train()` would run (`tuning.trial_run`: the trainer's
model, data, collator, optimiser with its decay groups, `training_step`, accumulation windows), one loss per
optimiser step, and leaves the model, the optimiser, the random generators and `output_dir` as they were.

    result = trainer.lr_find()                 # LRFinderResult(suggestion=..., lrs=[...], losses=[...])
    result.plot()                              # the loss against the learning rate (a matplotlib Figure)
    trainer.lr_find(plot=True)                 # the same, drawn inline in a notebook
    TrainingArguments(..., auto_lr_find=True)  # train() runs it first and trains with the suggestion

`lr_find_kwargs` (a dict, or JSON on the command line) passes `min_lr`, `max_lr`, `num_training`, `mode`,
`early_stop_threshold` to the run `auto_lr_find` makes. On the plain-Lightning path, Lightning's own
`Tuner(trainer).lr_find(module, datamodule=...)` works on `HFLightningModule` (it sets `module.learning_rate`, i.e.
`args.learning_rate`).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from lightning.pytorch.tuner import Tuner
from typing_extensions import override

from hf_lightning.module import HFLightningModule
from hf_lightning.tuning import trial_lightning_trainer, trial_run

if TYPE_CHECKING:
    from lightning.pytorch.tuner.lr_finder import _LRFinder
    from matplotlib.figure import Figure

__all__ = ["LR_FIND_OPTIONS", "LRFinderResult", "check_lr_find_options", "lr_find"]

logger = logging.getLogger(__name__)

LR_FIND_OPTIONS = ("min_lr", "max_lr", "num_training", "mode", "early_stop_threshold")
"""The range test's options (Lightning's `Tuner.lr_find` arguments of the same names), valid in `lr_find_kwargs`."""


@dataclass
class LRFinderResult:
    """What the range test found: `suggestion` (None when the curve was too short to suggest anything), the learning
    rates tried and the smoothed loss at each (`lrs`, `losses`: one point per optimiser step)."""

    suggestion: float | None
    lrs: list[float]
    losses: list[float]
    mode: str = "exponential"
    figure: Figure | None = field(default=None, repr=False)
    _finder: _LRFinder | None = field(default=None, repr=False)

    def plot(self, suggest: bool = True, save_path: str | None = None) -> Figure:
        """Draw the loss against the learning rate (log scale for the exponential sweep), the suggestion marked in
        red; a `matplotlib.figure.Figure` (no pyplot window), which Jupyter shows when it is a cell's value."""
        try:
            from matplotlib.figure import Figure
        except ImportError as err:
            raise ImportError("Plotting the LR finder needs matplotlib: pip install 'hf_lightning[plot]'") from err
        figure = Figure(figsize=(5.5, 3.8), layout="constrained")
        ax = figure.subplots()
        ax.plot(self.lrs, self.losses)
        if self.mode == "exponential":
            ax.set_xscale("log")
        if suggest and self.suggestion is not None:
            index = self.lrs.index(self.suggestion)
            ax.plot(self.lrs[index], self.losses[index], markersize=10, marker="o", color="red")
            ax.set_title(f"suggested learning rate: {self.suggestion:.3g}")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss (smoothed)")
        ax.grid(True, alpha=0.3)
        if save_path is not None:
            figure.savefig(save_path, dpi=100)
        self.figure = figure
        return figure


class _OneLossPerStep(pl.Callback):
    """Lightning's LR finder records a point every `accumulate_grad_batches` batches; the HF loop accumulates in
    manual optimisation, where Lightning's own setting must stay 1 when the run is checked, so the window size is set
    afterwards, for the finder to read (`TrialLoop` returns the window's loss on its last micro-batch)."""

    def __init__(self, gradient_accumulation_steps: int) -> None:
        self.gradient_accumulation_steps = gradient_accumulation_steps

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        trainer.accumulate_grad_batches = self.gradient_accumulation_steps


def check_lr_find_options(options: dict[str, Any]) -> None:
    """Refuse unknown options and values Lightning's finder would fail on (before any training)."""
    unknown = sorted(set(options) - set(LR_FIND_OPTIONS))
    if unknown:
        raise ValueError(f"Unknown lr_find option(s) {unknown}; expected some of {list(LR_FIND_OPTIONS)}.")
    min_lr, max_lr = options.get("min_lr", 1e-8), options.get("max_lr", 1.0)
    if not 0 < min_lr < max_lr:
        raise ValueError(f"lr_find needs 0 < min_lr < max_lr, got min_lr={min_lr}, max_lr={max_lr}.")
    if options.get("num_training", 100) < 2:
        raise ValueError(f"lr_find's num_training must be >= 2, got {options['num_training']}.")
    if options.get("mode", "exponential") not in ("exponential", "linear"):
        raise ValueError(f"lr_find's mode must be 'exponential' or 'linear', got {options['mode']!r}.")


def lr_find(trainer: Any, plot: bool | str = False, **options: Any) -> LRFinderResult:
    """Run Lightning's LR range test on `trainer`'s job (see the module docstring); `options` are `LR_FIND_OPTIONS`.
    `plot=True` draws the curve (inline in a notebook), a path also saves it there."""
    check_lr_find_options(options)
    if trainer.train_dataset is None:
        raise ValueError("lr_find needs the Trainer's `train_dataset`.")
    with trial_run(trainer) as (loop, root_dir), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(module\(s\) in eval mode|resuming from a checkpoint).*")
        lightning = trial_lightning_trainer(
            trainer, root_dir, callbacks=[_OneLossPerStep(trainer.args.gradient_accumulation_steps)]
        )
        module = HFLightningModule(trainer.model, loop)
        trainer.lightning_trainer, trainer.lightning_module = lightning, module
        window_loader = trainer.get_train_window_loader()
        finder = Tuner(lightning).lr_find(module, train_dataloaders=window_loader, update_attr=False, **options)
    result = LRFinderResult(
        suggestion=finder.suggestion() if finder is not None else None,
        lrs=list(finder.results.get("lr", [])) if finder is not None else [],
        losses=list(finder.results.get("loss", [])) if finder is not None else [],
        mode=options.get("mode", "exponential"),
        _finder=finder,
    )
    logger.info("lr_find: %d learning rates tried, suggestion %s", len(result.lrs), result.suggestion)
    if plot:
        result.plot(save_path=plot if isinstance(plot, str) else None)
        _display_in_notebook(result.figure)
    return result


def _display_in_notebook(figure: Figure) -> None:
    from transformers.utils import is_in_notebook

    if is_in_notebook():
        from IPython.display import display

        display(figure)
