"""plot_history and PlotHistoryCallback: panels from a real log_history, PNG output, lazy matplotlib import."""

from __future__ import annotations

import ast
import sys
import warnings
from pathlib import Path

import pytest
from helpers import JOB_ARGS, ToyClassification, make_args, tiny_bert

pytest.importorskip("matplotlib")

from hf_lightning import PlotHistoryCallback, Trainer, plot_history  # noqa: E402

PACKAGE = Path(__file__).resolve().parent.parent / "hf_lightning"

LOG_HISTORY = [
    {"loss": 1.2, "grad_norm": 3.0, "learning_rate": 1e-3, "epoch": 0.5, "step": 2},
    {"eval_loss": 1.1, "eval_accuracy": 0.4, "eval_f1": 0.3, "eval_runtime": 0.1, "epoch": 0.5, "step": 2},
    {"loss": 0.9, "grad_norm": 2.0, "learning_rate": 5e-4, "epoch": 1.0, "step": 4},
    {"eval_loss": 0.8, "eval_accuracy": 0.7, "eval_f1": 0.6, "eval_runtime": 0.1, "epoch": 1.0, "step": 4},
    {"train_runtime": 1.0, "train_loss": 1.05, "total_flos": 10.0, "epoch": 1.0, "step": 4},
]


def _lines(fig) -> dict[str, list[tuple[list, list]]]:
    return {
        ax.get_title(): [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()]
        for ax in fig.axes
        if ax.get_visible()
    }


def test_panels_and_series():
    lines = _lines(plot_history(LOG_HISTORY))
    assert list(lines) == ["loss", "learning rate", "accuracy", "f1"]
    assert lines["loss"] == [([2, 4], [1.2, 0.9]), ([2, 4], [1.1, 0.8])]  # train, eval; the summary row is left out
    assert lines["learning rate"] == [([2, 4], [1e-3, 5e-4])]
    assert lines["accuracy"] == [([2, 4], [0.4, 0.7])]


def test_throughput_panels_when_logged():
    rows = [
        {"loss": 1.2, "samples_per_second": 10.0, "tokens_per_second": 80.0, "epoch": 0.5, "step": 2},
        {"loss": 0.9, "samples_per_second": 12.0, "tokens_per_second": 96.0, "epoch": 1.0, "step": 4},
    ]
    lines = _lines(plot_history(rows))
    assert list(lines) == ["loss", "samples / s", "tokens / s"]  # no MFU on a CPU, so no panel
    assert lines["tokens / s"] == [([2, 4], [80.0, 96.0])]


def test_save_path_writes_png(tmp_path):
    path = tmp_path / "sub" / "history.png"
    fig = plot_history(LOG_HISTORY, save_path=path, title="run")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig._suptitle.get_text() == "run"


def test_bad_input():
    with pytest.raises(TypeError, match="log_history"):
        plot_history({"loss": 1.0})
    with pytest.raises(ValueError, match="nothing|no losses"):
        plot_history([{"train_runtime": 1.0, "train_loss": 1.0, "step": 3}])
    with pytest.raises(ValueError, match="filename"):
        PlotHistoryCallback(filename="../x.png")


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"hf_lightning\[plot\]"):
        plot_history(LOG_HISTORY)


def test_matplotlib_imported_lazily():
    """No hf_lightning module imports matplotlib at import time (`import hf_lightning` must not need it)."""
    for path in PACKAGE.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "matplotlib" for n in names), f"{path.name} imports matplotlib"


def test_callback_writes_png_at_train_end(tmp_path):
    callback = PlotHistoryCallback()
    args = make_args("hfl", str(tmp_path), **{**JOB_ARGS, "max_steps": 4, "eval_strategy": "steps", "eval_steps": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(
            tiny_bert(),
            args,
            train_dataset=ToyClassification(16),
            eval_dataset=ToyClassification(8, seed=1),
            callbacks=[callback],
        )
        trainer.train()
    assert callback.path == str(tmp_path / "training_history.png")
    assert (tmp_path / "training_history.png").read_bytes()[:4] == b"\x89PNG"
    assert [len(v[0][0]) for v in _lines(plot_history(trainer.state.log_history)).values()] == [4, 4]
