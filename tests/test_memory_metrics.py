"""Tests for hf_lightning.memory_metrics: `skip_memory_metrics=False` reports what transformers.Trainer reports."""

from __future__ import annotations

import pytest
from helpers import ToyClassification, make_args, run_job, tiny_bert

import hf_lightning
from hf_lightning.memory_metrics import MemoryMetrics


def _memory_keys(metrics: dict) -> list[str]:
    return [k for k in metrics if "_mem_" in k]


def _reports(impl: str, out: str) -> dict:
    """The memory keys of each place a job reports metrics, in order, plus the values of the training entry."""
    trainer = run_job(
        impl, out, n_eval=6, skip_memory_metrics=False, eval_strategy="epoch", num_train_epochs=1, logging_steps=2
    )
    train_entry = trainer.state.log_history[-1]
    return {
        "train": list(train_entry),
        "eval-in-training": [_memory_keys(e) for e in trainer.state.log_history if "eval_loss" in e],
        "evaluate": _memory_keys(trainer.evaluate()),
        "predict": _memory_keys(trainer.predict(ToyClassification(4)).metrics),
        "values": [train_entry[k] for k in _memory_keys(train_entry)],
    }


def test_memory_metrics_are_transformers_own(tmp_path) -> None:
    hf = _reports("hf", str(tmp_path / "hf"))
    hfl = _reports("hfl", str(tmp_path / "hfl"))
    values = hfl.pop("values")
    hf.pop("values")
    assert hf == hfl
    assert "train_mem_cpu_peaked_delta" in hfl["train"] and "before_init_mem_cpu" in hfl["train"]
    assert hfl["evaluate"] == ["eval_mem_cpu_alloc_delta", "eval_mem_cpu_peaked_delta"]
    assert hfl["eval-in-training"] == [[]]  # nested in training: not measured, as in transformers
    assert all(isinstance(v, int) for v in values)


def test_skipped_by_default(tmp_path) -> None:
    trainer = run_job("hfl", str(tmp_path), n_eval=4, num_train_epochs=1)
    assert not _memory_keys(trainer.state.log_history[-1]) and not _memory_keys(trainer.evaluate())


def test_a_failed_training_run_stops_measuring(tmp_path) -> None:
    class Failing(hf_lightning.Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            raise RuntimeError("boom")

    args = make_args("hfl", str(tmp_path), skip_memory_metrics=False)
    trainer = Failing(
        model=tiny_bert(), args=args, train_dataset=ToyClassification(8), eval_dataset=ToyClassification(4)
    )
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train()
    assert trainer._memory_tracker.cur_stage is None and not trainer._memory_tracker.peak_monitoring
    assert "eval_mem_cpu_alloc_delta" in trainer.evaluate()


def test_stage_is_named_by_the_caller() -> None:
    tracker = MemoryMetrics(skip_memory_metrics=False)
    tracker.start_stage("init")
    tracker.stop_stage("init")
    metrics: dict = {}
    tracker.start_stage("eval")
    tracker.start_stage("train")  # another stage while "eval" runs: ignored
    tracker.stop_stage("train", metrics)
    assert metrics == {} and tracker.cur_stage == "eval"
    tracker.stop_stage("eval", metrics)
    assert list(metrics) == [
        "init_mem_cpu_alloc_delta",
        "init_mem_cpu_peaked_delta",
        "eval_mem_cpu_alloc_delta",
        "eval_mem_cpu_peaked_delta",
        "before_init_mem_cpu",
    ]
    skipped = MemoryMetrics(skip_memory_metrics=True)
    skipped.start_stage("eval")
    skipped.stop_stage("eval", metrics := {})
    skipped.abandon_stage("eval")
    assert metrics == {}
