"""HF events in Lightning's vocabulary (`hf_lightning.lightning_events`): Lightning's callbacks see HF's evaluations
where Lightning would look for them (epoch-end evaluations at `on_train_epoch_end` too), `callback_metrics`, Lightning
progress bars in place of HF's, and callbacks that change the training itself (`StochasticWeightAveraging`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from helpers import assert_same_weights, run_job, train_logs, without_timings
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar, StochasticWeightAveraging
from transformers import EarlyStoppingCallback
from transformers.trainer_callback import ProgressCallback


def test_early_stopping_on_epoch_evaluations_stops_where_transformers_does(tmp_path: Path) -> None:
    """`eval_strategy="epoch"`: Lightning's `EarlyStopping` checks at `on_train_epoch_end` (its rule when validation
    runs once an epoch), after the HF evaluation of that epoch, and stops at transformers' step."""
    job = dict(n_eval=8, eval_strategy="epoch", num_train_epochs=6, learning_rate=3e-2, metric_for_best_model="loss")
    hf = run_job("hf", str(tmp_path / "hf"), callbacks=[EarlyStoppingCallback(early_stopping_patience=1)], **job)
    stopper = EarlyStopping(monitor="eval_loss", patience=1)
    ours = run_job("hfl", str(tmp_path / "hfl"), callbacks=[stopper], **job)
    assert hf.state.global_step < 30 and ours.state.global_step == hf.state.global_step
    assert stopper._check_on_train_epoch_end and stopper.stopped_epoch == hf.state.epoch - 1
    assert_same_weights(ours.model, hf.model)
    assert without_timings(ours.state.log_history) == without_timings(hf.state.log_history)


def test_callbacks_monitoring_eval_metrics_need_an_eval_strategy(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"EarlyStopping\(monitor='eval_loss'\).*`eval_strategy` is 'no'"):
        run_job("hfl", str(tmp_path), callbacks=[EarlyStopping(monitor="eval_loss")])
    with pytest.raises(ValueError, match=r"ModelCheckpoint\(monitor='eval_accuracy'\)"):
        run_job("hfl", str(tmp_path), callbacks=[ModelCheckpoint(monitor="eval_accuracy")])


class MetricsSeen(pl.Callback):
    """What a Lightning callback finds in `callback_metrics` at each batch end and validation end."""

    def __init__(self) -> None:
        self.at_batch_end: list[dict] = []
        self.at_validation_end: list[dict] = []

    def on_train_batch_end(self, trainer: pl.Trainer, *_: Any) -> None:
        self.at_batch_end.append({k: v.item() for k, v in trainer.callback_metrics.items()})

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.at_validation_end.append({k: v.item() for k, v in trainer.callback_metrics.items()})


def test_callback_metrics_hold_the_hf_logs(tmp_path: Path) -> None:
    """A Lightning callback finds HF's logged values under HF's names (float64, not HF's fractional `epoch`), and the
    validation-end hook runs once per HF evaluation, after its step's batch."""
    seen = MetricsSeen()
    trainer = run_job("hfl", str(tmp_path), n_eval=8, eval_strategy="steps", eval_steps=4, callbacks=[seen])
    logs = train_logs(trainer)
    assert [m["loss"] for m in seen.at_batch_end] == [e["loss"] for e in logs]  # one batch per step (no accumulation)
    assert all("epoch" not in m for m in seen.at_batch_end)
    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert [m["eval_loss"] for m in seen.at_validation_end] == [e["eval_loss"] for e in evals]
    assert trainer.lightning_trainer.callback_metrics["eval_loss"].dtype == torch.float64


def test_without_lightning_callbacks_training_logs_are_not_published(tmp_path: Path) -> None:
    """Nothing reads `callback_metrics` then: no per-step work for it; evaluations are still published."""
    trainer = run_job("hfl", str(tmp_path), n_eval=8, eval_strategy="steps", eval_steps=5)
    assert set(trainer.lightning_trainer.callback_metrics) >= {"eval_loss"}
    assert "loss" not in trainer.lightning_trainer.callback_metrics


def test_a_lightning_progress_bar_replaces_transformers(tmp_path: Path) -> None:
    """`RichProgressBar` (refused before: the facade turned Lightning's progress bar off) shows the run, with
    Lightning's epoch count, in place of HF's tqdm bar."""
    bar = RichProgressBar()
    trainer = run_job("hfl", str(tmp_path), callbacks=[bar], disable_tqdm=False, n_eval=8, eval_strategy="epoch")
    assert trainer.lightning_trainer.progress_bar_callback is bar
    assert not any(isinstance(cb, ProgressCallback) for cb in trainer.callback_handler.callbacks)
    assert trainer.lightning_trainer.max_epochs == 2 and trainer.state.global_step == 10
    assert trainer.lightning_trainer.progress_bar_metrics["eval_loss"] == trainer.state.log_history[-2]["eval_loss"]


class WeightsAtEpochEnd(pl.Callback):
    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.weights.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})


def test_stochastic_weight_averaging(tmp_path: Path) -> None:
    """Lightning's SWA from the second epoch on: its SWALR schedule takes over from HF's (as it replaces Lightning's
    schedule), the learning rate is logged from it, and the model ends with SWA's average of the weights."""
    snapshots = WeightsAtEpochEnd()
    # a fraction of Lightning's `max_epochs` (3, from `num_train_epochs`): from the second epoch
    swa = StochasticWeightAveraging(swa_lrs=5e-3, swa_epoch_start=0.67, annealing_epochs=1)
    trainer = run_job("hfl", str(tmp_path), callbacks=[swa, snapshots], num_train_epochs=3)
    rates = [e["learning_rate"] for e in train_logs(trainer)]
    assert rates[:5] == pytest.approx([1e-3 * (1 - s / 15) for s in range(5)])  # HF's linear schedule
    assert rates[5:10] == pytest.approx([1e-3 * (1 - 5 / 15)] * 5)  # SWALR, annealing from there over one epoch
    assert rates[10:] == pytest.approx([5e-3] * 5)  # ... to `swa_lrs`
    # Lightning 2.6's SWA averages at each SWA epoch's start: the weights the first and second epochs ended with
    averaged = {k: (snapshots.weights[0][k] + snapshots.weights[1][k]) / 2 for k in snapshots.weights[1]}
    for name, value in trainer.model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, averaged[name])
