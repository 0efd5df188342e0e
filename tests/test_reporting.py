"""`report_to` (`hf_lightning.reporting`): every transformers integration gets what transformers.Trainer gives it on
the same job, in the same place; Lightning callbacks log into the same run.

Integrations whose package is not installed are stood in for by recording callbacks put in transformers' own
`INTEGRATION_TO_CALLBACK` table (both trainers build their reporters from it); TensorBoard (installed) and W&B (when
installed, offline) are also run for real.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import ToyClassification, run_job
from lightning.pytorch.callbacks import LearningRateMonitor
from transformers import TrainerCallback
from transformers.integrations import integration_utils

import hf_lightning.reporting as hfl_reporting

JOB = dict(n_eval=8, eval_strategy="steps", eval_steps=3, save_strategy="steps", save_steps=5, logging_steps=2)
TIMED = ("runtime", "per_second")


def _untimed(logs: dict | None) -> dict | None:
    return None if logs is None else {k: ("<t>" if any(t in k for t in TIMED) else v) for k, v in logs.items()}


def recorder_for(name: str, events: list) -> type[TrainerCallback]:
    """A callback class standing in for integration `name`: records each event with its step, logs and arguments."""

    def record(event: str) -> Any:
        def hook(self: Any, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            payload = kwargs.get("logs", kwargs.get("metrics"))
            events.append(
                (name, event, state.global_step, state.is_world_process_zero, _untimed(payload), sorted(kwargs))
            )

        return hook

    hooks = ("on_train_begin", "on_log", "on_evaluate", "on_save", "on_predict", "on_train_end", "on_push_begin")
    return type(f"{name}Recorder", (TrainerCallback,), {hook: record(hook) for hook in hooks})


def test_every_integration_gets_transformers_events(tmp_path, monkeypatch) -> None:
    names = list(integration_utils.INTEGRATION_TO_CALLBACK)
    assert {"tensorboard", "wandb", "mlflow", "comet_ml", "trackio", "clearml"} <= set(names)
    monkeypatch.setattr(hfl_reporting, "_installed", lambda module: True)
    recorded = {}
    for impl in ("hf", "hfl"):
        events: list = []
        for name in names:
            monkeypatch.setitem(integration_utils.INTEGRATION_TO_CALLBACK, name, recorder_for(name, events))
        trainer = run_job(impl, str(tmp_path / impl), report_to=names, **JOB)
        trainer.evaluate()
        trainer.predict(ToyClassification(4, seed=3))
        recorded[impl] = (trainer.callback_handler.callback_list, events)
        if impl == "hfl":
            assert [lg.name for lg in trainer.report_loggers] == names
            assert [lg.name for lg in trainer.lightning_trainer.loggers] == names
    assert recorded["hfl"] == recorded["hf"]
    callback_list, events = recorded["hfl"]
    assert callback_list.splitlines() == ["DefaultFlowCallback", *(f"{n}Recorder" for n in names), "PrinterCallback"]
    summary = [e for e in events if e[1] == "on_log" and "train_loss" in e[4]]
    assert len(summary) == len(names)  # the end-of-training summary reached every integration


def _tensorboard(event_dir: str) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(event_dir)
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_lightning_callbacks_log_into_the_integration_run(tmp_path) -> None:
    """A Lightning `LearningRateMonitor` writes into transformers' TensorBoard run, named and stepped as HF names and
    steps its own logs; the run folder is transformers' (`output_dir/runs/<time>_<host>`)."""
    pytest.importorskip("tensorboard")
    monitor = LearningRateMonitor(logging_interval="step")
    trainer = run_job(
        "hfl", str(tmp_path), report_to="tensorboard", callbacks=[monitor], warmup_steps=2, max_steps=4, logging_steps=2
    )
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "*"))
    scalars = _tensorboard(run_dir)
    rates = scalars["train/lr-AdamW/pg1"]
    assert [step for step, _ in rates] == [0, 1, 2, 3]  # each step's rate, at HF's global step when it is logged
    assert rates[0][1] == 0.0 and rates[2][1] == pytest.approx(1e-3)
    assert [step for step, _ in scalars["train/loss"]] == [2, 4]
    assert trainer.lightning_trainer.logger.experiment is not None
    trainer.remove_callback(integration_utils.TensorBoardCallback)  # the logger follows the handler
    assert trainer.lightning_trainer.logger.experiment is None
    trainer.lightning_trainer.logger.log_metrics({"x": 1.0})


def test_v4_logging_dir_reaches_transformers_tensorboard_callback(tmp_path, monkeypatch) -> None:
    pytest.importorskip("tensorboard")
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    run_job("hfl", str(tmp_path / "out"), report_to="tensorboard", logging_dir=str(tmp_path / "v4"), max_steps=2)
    assert "train/loss" in _tensorboard(str(tmp_path / "v4"))
    assert not (tmp_path / "out" / "runs").exists()


def _wandb_run(impl: str, root: Path) -> tuple[str, dict, set]:
    """Train with `report_to="wandb"` in `root`; the run folder (relative), its summary and its config keys."""
    import wandb

    os.chdir(root)  # transformers' W&B callback puts `wandb/` in the working directory (or WANDB_DIR)
    run_job(impl, str(root / "out"), report_to="wandb", **JOB)
    run = wandb.run
    assert run is not None and run.project == "huggingface"  # transformers' default project
    summary, config = dict(run.summary), set(run.config.keys())
    place = os.path.relpath(run.dir, root)
    wandb.finish()
    wandb.teardown()  # the next run reads its folder afresh
    return place.split("-run-")[0], summary, config


def test_wandb_offline_run_is_transformers_run(tmp_path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    cwd = os.getcwd()
    runs = {}
    try:
        for impl in ("hf", "hfl"):
            (tmp_path / impl).mkdir()
            runs[impl] = _wandb_run(impl, tmp_path / impl)
    finally:
        os.chdir(cwd)
    (hf_place, hf_summary, hf_config), (place, summary, config) = runs["hf"], runs["hfl"]
    assert place == hf_place == "wandb/offline"
    assert set(summary) == set(hf_summary)
    assert {"train_loss", "train_runtime", "total_flos", "train/global_step", "eval/loss", "train/loss"} <= set(summary)
    assert not {"train/train_loss", "trainer/global_step"} & set(summary)
    assert summary["train/global_step"] == hf_summary["train/global_step"] == 10
    assert summary["train_loss"] == hf_summary["train_loss"]
    assert hf_config <= config  # and hf_lightning's own arguments (accelerator, devices, strategy ...)
