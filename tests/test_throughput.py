"""`log_throughput`: samples/s, tokens/s, FLOP/s and MFU in every training log, and nothing when it is off."""

from __future__ import annotations

import csv
from typing import Any

import pytest
import torch
from helpers import (
    JOB_ARGS,
    ToyClassification,
    assert_same_weights,
    bare_lightning_trainer,
    make_args,
    run_job,
    tiny_bert,
    train_logs,
    trainer_classes,
)
from torch import nn

import hf_lightning.throughput as throughput
from hf_lightning.throughput import THROUGHPUT_KEYS, ThroughputMeter

SEQ_LEN = 8  # ToyClassification's sequence length


def test_fields_in_log_history_and_in_a_logger(tmp_path) -> None:
    trainer = run_job("hfl", str(tmp_path), log_throughput=True, report_to="csv", max_steps=6, logging_steps=2)
    logs = train_logs(trainer)
    assert [e["step"] for e in logs] == [2, 4, 6]
    non_embedding = trainer.model.num_parameters(exclude_embeddings=True)
    for entry in logs:
        assert {"samples_per_second", "tokens_per_second", "flops_per_second"} <= entry.keys()
        assert "mfu" not in entry  # no known peak FLOPs on a CPU
        assert entry["samples_per_second"] > 0
        assert entry["tokens_per_second"] / entry["samples_per_second"] == pytest.approx(SEQ_LEN)
        # HF's estimate (total_flos): 6 x non-embedding parameters x tokens
        assert entry["flops_per_second"] / entry["tokens_per_second"] == pytest.approx(6 * non_embedding)
    with open(tmp_path / "csv_logs" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row["loss"]]
    assert [float(row["samples_per_second"]) for row in rows] == [e["samples_per_second"] for e in logs]
    assert [float(row["tokens_per_second"]) for row in rows] == [e["tokens_per_second"] for e in logs]


def test_mfu_where_the_peak_is_known(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(throughput, "get_available_flops", lambda device, dtype: 10**12)
    logs = train_logs(run_job("hfl", str(tmp_path), log_throughput=True, max_steps=2, logging_steps=1))
    for entry in logs:
        assert entry["mfu"] == pytest.approx(entry["flops_per_second"] / 10**12)


def test_off_by_default_and_results_unchanged_when_on(tmp_path) -> None:
    off = run_job("hfl", str(tmp_path / "off"), max_steps=4)
    assert off.throughput_meter is None
    assert not any(isinstance(cb, ThroughputMeter) for cb in off.lightning_trainer.callbacks)
    assert not any(set(THROUGHPUT_KEYS) & e.keys() for e in off.state.log_history)
    on = run_job("hfl", str(tmp_path / "on"), max_steps=4, log_throughput=True)
    assert any(isinstance(cb, ThroughputMeter) for cb in on.lightning_trainer.callbacks)
    assert_same_weights(off.model, on.model)
    strip = [{k: v for k, v in e.items() if k not in THROUGHPUT_KEYS} for e in train_logs(on)]
    assert strip == train_logs(off)


class VectorModel(nn.Module):
    """No `input_ids`, no `num_parameters`: samples are counted, tokens and FLOPs are not."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor]:
        return (nn.functional.cross_entropy(self.layer(x), labels),)


class Vectors(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": torch.full((4,), float(i)), "labels": torch.tensor(i % 2)}


def test_only_what_makes_sense_for_the_model(tmp_path) -> None:
    trainer = run_job(
        "hfl", str(tmp_path), model=VectorModel(), train_dataset=Vectors(), log_throughput=True, max_steps=2
    )
    for entry in train_logs(trainer):
        assert "samples_per_second" in entry
        assert not {"tokens_per_second", "flops_per_second", "mfu"} & entry.keys()


class FakeBatch:
    def __init__(self, n: int, length: int) -> None:
        self.inputs = {"input_ids": torch.zeros(n, length, dtype=torch.long)}


def test_meter_excludes_time_between_a_log_and_the_next_batch(monkeypatch) -> None:
    """Evaluation and saving happen after a step's log: the clock stops at the log and restarts with the next batch."""
    clock = iter([0.0, 2.0, 10.0, 11.0])
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: next(clock))
    meter = ThroughputMeter(initial_total_flos=100.0)

    class Lightning:
        world_size = 2

    meter.on_train_start(Lightning(), None)
    meter.on_train_batch_start(Lightning(), None, FakeBatch(4, 16), 0)  # t=0
    first = meter.measure(total_flos=100.0 + 800.0)  # t=2: 4 samples, 64 tokens, 800 FLOPs (2 ranks) in 2 s
    assert first == {"samples_per_second": 4.0, "tokens_per_second": 64.0, "flops_per_second": 400.0}
    meter.on_train_batch_start(Lightning(), None, FakeBatch(4, 16), 1)  # t=10 (8 s of evaluation in between)
    second = meter.measure(total_flos=900.0 + 200.0)  # t=11
    assert second == {"samples_per_second": 8.0, "tokens_per_second": 128.0, "flops_per_second": 200.0}


def test_a_resumed_run_counts_only_its_own_flops(tmp_path) -> None:
    run_job("hfl", str(tmp_path), max_steps=4, save_strategy="steps", save_steps=2)
    Trainer, _ = trainer_classes("hfl")
    args = make_args("hfl", str(tmp_path), **{**JOB_ARGS, "max_steps": 4, "log_throughput": True})
    resumed = Trainer(model=tiny_bert(), args=args, train_dataset=ToyClassification(20, seed=1))
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    logs = [e for e in train_logs(resumed) if "flops_per_second" in e]  # 1 and 2 come from the checkpoint
    assert [e["step"] for e in logs] == [3, 4]
    non_embedding = resumed.model.num_parameters(exclude_embeddings=True)
    for entry in logs:
        assert entry["flops_per_second"] / entry["tokens_per_second"] == pytest.approx(6 * non_embedding)


def test_plain_lightning_path_logs_the_rates(tmp_path) -> None:
    """`HFLightningModule.from_args` in a user's `lightning.Trainer`: the rates join its HF logs and its logger."""
    from lightning.pytorch.loggers import CSVLogger

    from hf_lightning import HFDataModule, HFLightningModule

    args = make_args("hfl", str(tmp_path), per_device_train_batch_size=4, logging_steps=2, log_throughput=True)
    module = HFLightningModule.from_args(tiny_bert(), args)
    trainer = bare_lightning_trainer(
        tmp_path, max_steps=4, logger=CSVLogger(str(tmp_path), name="csv", version=""), log_every_n_steps=1
    )
    trainer.fit(module, datamodule=HFDataModule(args, train_dataset=ToyClassification(20, seed=1)))
    logs = [e for e in module._loop.state.log_history if "loss" in e]
    assert [e["step"] for e in logs] == [2, 4]
    for entry in logs:
        assert entry["tokens_per_second"] / entry["samples_per_second"] == pytest.approx(SEQ_LEN)
    with open(next(tmp_path.glob("**/metrics.csv"))) as f:  # HF's names, at HF's steps (as `report_to="csv"`)
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r.get("samples_per_second")] == [2, 4]


@pytest.mark.parametrize("field", ["auto_lr_find", "auto_scale_batch_size", "checkpoint_on_preemption"])
def test_facade_only_switches_are_refused_on_the_plain_path(tmp_path, field: str) -> None:
    from hf_lightning import HFLightningModule

    value = "power" if field == "auto_scale_batch_size" else True
    with pytest.raises(ValueError, match=f"`{field}` is acted on by `hf_lightning.Trainer`"):
        HFLightningModule.from_args(tiny_bert(), make_args("hfl", str(tmp_path), **{field: value}))
