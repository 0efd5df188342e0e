"""Training curves from `trainer.state.log_history`: losses, learning rate, eval metrics (and throughput) by step.

matplotlib is an optional extra (`pip install 'hf_lightning[plot]'`) and is imported only when a plot is drawn, so
`import hf_lightning` stays light. The figure is built with `matplotlib.figure.Figure` (no pyplot): it needs no GUI
backend, touches no global state, and Jupyter shows it when it is the value of a cell.

    from hf_lightning import plot_history, PlotHistoryCallback
    fig = plot_history(trainer.state.log_history, save_path="history.png")
    trainer = Trainer(..., callbacks=[PlotHistoryCallback()])   # writes output_dir/training_history.png
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# log_history keys that are bookkeeping, not curves worth a panel.
_NOT_METRICS = {"epoch", "step", "runtime", "samples_per_second", "steps_per_second", "total_flos", "num_tokens"}
_TRAIN_SUMMARY = "train_runtime"  # the row HF appends at the end of train(); its train_loss is an average
# `log_throughput` (hf_lightning.throughput): drawn when the training logs have them.
_THROUGHPUT_PANELS = [
    ("samples / s", [("samples_per_second", "samples/s")]),
    ("tokens / s", [("tokens_per_second", "tokens/s")]),
    ("model FLOPs utilisation", [("mfu", "MFU")]),
]


def _series(log_history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for row in log_history:
        value = row.get(key)
        if _TRAIN_SUMMARY in row or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if "step" in row and math.isfinite(value):
            steps.append(row["step"])
            values.append(float(value))
    return steps, values


def _eval_metric_names(log_history: list[dict[str, Any]]) -> list[str]:
    """Eval metrics in first-seen order, e.g. eval_accuracy, eval_f1 (eval_loss has the loss panel)."""
    names: list[str] = []
    for row in log_history:
        for key in row:
            if not key.startswith("eval_") or key == "eval_loss" or key in names:
                continue
            if key.removeprefix("eval_") not in _NOT_METRICS:
                names.append(key)
    return names


def _panels(log_history: list[dict[str, Any]]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(title, [(log key, legend)]) for each panel that has data."""
    panels = (
        [
            ("loss", [("loss", "train"), ("eval_loss", "eval")]),
            ("learning rate", [("learning_rate", "learning rate")]),
        ]
        + [(name.removeprefix("eval_"), [(name, name)]) for name in _eval_metric_names(log_history)]
        + _THROUGHPUT_PANELS
    )
    return [(label, keys) for label, keys in panels if any(_series(log_history, key)[0] for key, _ in keys)]


def _import_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ImportError("plot_history needs matplotlib: pip install 'hf_lightning[plot]'") from err


def plot_history(
    log_history: list[dict[str, Any]],
    save_path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """Draw train/eval loss, learning rate, every eval metric and the throughput (`log_throughput`: samples/s, tokens/s,
    MFU) of `log_history` against the global step.

    `log_history` is `trainer.state.log_history` (or a `trainer_state.json`'s). Panels with no data are left out.
    Returns the `matplotlib.figure.Figure`; with `save_path` it is also written there (PNG by default).
    """
    if not isinstance(log_history, (list, tuple)) or not all(isinstance(row, dict) for row in log_history):
        raise TypeError("`log_history` must be a list of dicts, as in `trainer.state.log_history`.")
    _import_matplotlib()
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = _panels(log_history)
    if not panels:
        raise ValueError("`log_history` has no losses, learning rates or eval metrics to plot.")

    ncols = 2 if len(panels) == 4 else min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.5 * ncols, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (label, keys) in zip(axes, panels):
        all_steps: set[int] = set()
        for key, legend in keys:
            steps, values = _series(log_history, key)
            if steps:
                marker = "o" if key.startswith("eval_") or len(steps) == 1 else None
                ax.plot(steps, values, marker=marker, markersize=4, label=legend)
                all_steps.update(steps)
        if len(all_steps) == 1:  # one point: centre it on integer steps instead of a +-0.1 range
            ax.set_xlim(min(all_steps) - 1, min(all_steps) + 1)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if label == "loss":
            ax.legend()
        if label == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    if save_path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(save_path)), exist_ok=True)
        fig.savefig(save_path, dpi=100)
    return fig


class PlotHistoryCallback(TrainerCallback):
    """Writes `plot_history(state.log_history)` to `output_dir/<filename>` when training ends (main process).

    Works with `hf_lightning.Trainer` and `transformers.Trainer`: `Trainer(..., callbacks=[PlotHistoryCallback()])`.
    """

    def __init__(self, filename: str = "training_history.png", title: str | None = None) -> None:
        if not filename or os.path.basename(filename) != filename:
            raise ValueError(f"`filename` must be a plain file name inside output_dir, got {filename!r}.")
        _import_matplotlib()
        self.filename = filename
        self.title = title
        self.path: str | None = None

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not _panels(state.log_history):
            return
        self.path = os.path.join(args.output_dir, self.filename)
        plot_history(state.log_history, save_path=self.path, title=self.title)
