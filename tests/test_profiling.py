"""`profiler=`: Lightning's report is shown at the end of `train()` whatever HF's log level, with HF's step names."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from helpers import run_job

from hf_lightning.profiling import HF_STEP_NAMES, PROFILER_LOGGER


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def report() -> Records:
    """What reaches the profiler logger (a handler on it sees only what its level lets through)."""
    handler = Records()
    profiler_logger = logging.getLogger(PROFILER_LOGGER)
    profiler_logger.addHandler(handler)
    yield handler
    profiler_logger.removeHandler(handler)


EVAL_AND_SAVE = dict(
    max_steps=4, n_eval=4, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2, logging_steps=2
)


def test_simple_report_at_hfs_default_log_level_with_hf_step_names(tmp_path, report) -> None:
    trainer = run_job("hfl", str(tmp_path), profiler="simple", **EVAL_AND_SAVE)
    assert trainer.args.get_process_log_level() == logging.WARNING  # HF's default ("passive")
    text = "\n".join(report.messages)
    assert "Profiler Report" in text
    for action in HF_STEP_NAMES.values():
        assert action in text, action
    rows = {
        line.split("|")[1].strip(): line.split("|")[3].strip() for line in text.splitlines() if "[HF Trainer]" in line
    }
    assert rows["[HF Trainer]training_step()"] == "4"  # one micro-batch a step
    assert rows["[HF Trainer]evaluate()"] == "2" and rows["[HF Trainer]save_checkpoint()"] == "2"
    assert not {"training_step", "evaluate", "_save_checkpoint", "log"} & vars(trainer).keys()  # unwrapped again


def test_pytorch_profiler_writes_its_trace_and_report(tmp_path, report) -> None:
    run_job("hfl", str(tmp_path), profiler="pytorch", max_steps=3)
    assert any("[pl][profile][HF Trainer]training_step()" in m for m in report.messages)
    assert list(Path(tmp_path).glob("*.pt.trace.json"))


def test_no_profiler_nothing_wrapped_and_the_logger_follows_hf(tmp_path, report) -> None:
    trainer = run_job("hfl", str(tmp_path), max_steps=2)
    assert logging.getLogger(PROFILER_LOGGER).level == logging.NOTSET
    assert report.messages == []
    assert trainer.lightning_trainer.profiler.__class__.__name__ == "_UnprofiledRun"


def test_plain_door_reports_hf_step_names(tmp_path, report) -> None:
    """The plain door: a `lightning.Trainer(profiler="simple")` the user owns reports the HF steps under the facade's
    names, and the loop is unwrapped afterwards."""
    from helpers import ToyClassification, bare_lightning_trainer, make_args, tiny_bert

    from hf_lightning import HFDataModule, HFLightningModule

    args = make_args("hfl", str(tmp_path), per_device_train_batch_size=4, eval_strategy="steps", eval_steps=2)
    module = HFLightningModule.from_args(tiny_bert(), args)
    data = HFDataModule(args, train_dataset=ToyClassification(16, seed=1), eval_dataset=ToyClassification(4, seed=2))
    trainer = bare_lightning_trainer(tmp_path, max_steps=4, profiler="simple")
    trainer.fit(module, datamodule=data)
    text = "\n".join(report.messages)
    rows = {
        line.split("|")[1].strip(): line.split("|")[3].strip() for line in text.splitlines() if "[HF Trainer]" in line
    }
    assert rows["[HF Trainer]training_step()"] == "4" and rows["[HF Trainer]evaluate()"] == "2", text
    assert not set(HF_STEP_NAMES) & vars(module.loop).keys()  # unwrapped again
