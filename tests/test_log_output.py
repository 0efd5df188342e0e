"""What a run prints (`hf_lightning.log_output`), compared with transformers.Trainer on the same jobs: the log
records at `log_level="info"`, no Lightning banners, tracebacks without Lightning's frames, no pin_memory warning on
CPU."""

from __future__ import annotations

import logging
import re
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from helpers import ToyClassification, make_args, run_job, tiny_bert, trainer_classes
from transformers import BertForSequenceClassification
from transformers.utils import logging as hf_logging

from hf_lightning import compat

# Loggers whose records reach the console in a run: transformers' (its handler) and Lightning's (its own handler).
CONSOLE_LOGGERS = ("transformers", "lightning.pytorch", "lightning.fabric")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def console() -> Iterator[_Records]:
    """The messages logged to the console loggers (at their levels, after their filters); levels restored after."""
    handler = _Records()
    levels = {name: logging.getLogger(name).level for name in CONSOLE_LOGGERS}
    verbosity = hf_logging.get_verbosity()
    for name in CONSOLE_LOGGERS:
        logging.getLogger(name).addHandler(handler)
    yield handler
    for name, level in levels.items():
        logging.getLogger(name).removeHandler(handler)
        logging.getLogger(name).setLevel(level)
    hf_logging.set_verbosity(verbosity)


# transformers' `warning_once` messages: printed by whichever trainer runs first in the process.
ONCE_A_PROCESS = ("mtime may not be reliable",)


def _normalised(messages: list[str], out: Path) -> list[str]:
    return [m.replace(str(out), "<out>") for m in messages if not m.startswith(ONCE_A_PROCESS)]


def _session(impl: str, out: Path, console: _Records, **overrides: Any) -> list[str]:
    """Train with saves and evaluations, resume from the first checkpoint, evaluate and predict; the messages."""
    console.messages.clear()
    job = dict(log_level="info", n_eval=8, eval_strategy="steps", eval_steps=5, save_strategy="steps", save_steps=5)
    job.update(save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="loss", **overrides)
    trainer = run_job(impl, str(out), **job)
    trainer.train(resume_from_checkpoint=str(out / "checkpoint-5"))
    trainer.evaluate()
    trainer.predict(ToyClassification(6, seed=3))
    return _normalised(console.messages, out)


def test_info_log_is_transformers_log(tmp_path, console) -> None:
    theirs = _session("hf", tmp_path / "hf", console)
    ours = _session("hfl", tmp_path / "hfl", console)
    assert ours == theirs
    for line in (
        "***** Running training *****",
        "  Num examples = 20",
        "  Total optimization steps = 10",
        "  Number of trainable parameters = 6,147",
        "\n***** Running Evaluation *****",
        "\n***** Running Prediction *****",
        "Saving model checkpoint to <out>/checkpoint-5",
        "Configuration saved in <out>/checkpoint-5/config.json",
        # transformers' resume line (reworded in 5.3)
        "  Resuming training from checkpoint with epoch 1 and global step 5"
        if compat.training_log_of_5_3()
        else "  Continuing training from global step 5",
        "\n\nTraining completed. Do not forget to share your model on huggingface.co/models =)\n\n",
    ):
        assert line in ours
    assert not [m for m in ours if "tmp-" in m or "GPU available" in m or "TPU available" in m or "Tip:" in m]


def test_lightning_banners_return_outside_the_facade(tmp_path, console) -> None:
    """Only the facade's own `lightning.Trainer` is quiet: a plain one afterwards prints Lightning's banners."""
    run_job("hfl", str(tmp_path / "hfl"), log_level="info", max_steps=1)
    assert not [m for m in console.messages if m.startswith(("GPU available", "TPU available"))]
    logging.getLogger("lightning.pytorch").setLevel(logging.INFO)
    pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, default_root_dir=str(tmp_path / "pl"))
    assert [m for m in console.messages if m.startswith(("GPU available", "TPU available"))]


def test_quiet_lightning_drops_the_banners_of_gpu_and_distributed_runs(console) -> None:
    """The banners a GPU or multi-process run prints (not producible on a CPU test machine), sent through the loggers
    Lightning sends them through: dropped inside `quiet_lightning`, printed outside; other messages kept."""
    from lightning.fabric.utilities.rank_zero import rank_zero_info
    from lightning.fabric.utilities.warnings import PossibleUserWarning
    from lightning.pytorch.utilities.rank_zero import rank_zero_warn

    from hf_lightning.log_output import quiet_lightning

    logging.getLogger("lightning.pytorch").setLevel(logging.INFO)
    logging.getLogger("lightning.fabric").setLevel(logging.INFO)

    def emit() -> None:
        rank_zero_info("GPU available: True (cuda), used: True")
        logging.getLogger("lightning.pytorch.accelerators.cuda").info("LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]")
        dist = logging.getLogger("lightning.fabric.utilities.distributed")
        dist.info("Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2")
        rank_zero_info(f"{'-' * 100}\ndistributed_backend=nccl\nAll distributed processes registered.\n{'-' * 100}\n")
        rank_zero_info("Epoch 0, global step 2: 'eval_loss' reached 1.1 (best 1.1), saving model")  # a callback's
        rank_zero_warn("GPU available but not used. You can set it by doing `Trainer(accelerator='gpu')`.",
                       category=PossibleUserWarning)  # fmt: skip

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_lightning():
            emit()
    assert console.messages == ["Epoch 0, global step 2: 'eval_loss' reached 1.1 (best 1.1), saving model"]
    assert not caught
    console.messages.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emit()
    assert len(console.messages) == 5 and len(caught) == 1


class ExplodingBert(BertForSequenceClassification):
    """Raises from its own forward in training (a user's bug)."""

    def forward(self, input_ids: Any = None, attention_mask: Any = None, labels: Any = None, **kwargs: Any) -> Any:
        if self.training:
            raise ValueError("a bug in the user's forward")
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)


def _training_traceback(impl: str, out: Path) -> traceback.StackSummary:
    model = ExplodingBert(tiny_bert().config)
    with pytest.raises(ValueError, match="a bug in the user's forward") as info:
        run_job(impl, str(out), model=model)
    return traceback.extract_tb(info.value.__traceback__)


def test_training_traceback_is_as_short_as_transformers(tmp_path) -> None:
    theirs = _training_traceback("hf", tmp_path / "hf")
    ours = _training_traceback("hfl", tmp_path / "hfl")
    assert not [f for f in ours if f"{Path('lightning', 'pytorch')}" in f.filename]
    assert ours[-1].name == theirs[-1].name == "forward" and ours[-1].filename == __file__  # the user's frame, last
    assert ours[0].name == theirs[0].name == "_training_traceback"
    assert len(ours) <= len(theirs) + 2, "\n".join(traceback.format_list(ours))


@pytest.mark.skipif(torch.accelerator.is_available(), reason="pinning works here: torch does not warn")
def test_no_pin_memory_warning_on_cpu(tmp_path) -> None:
    """With the default `dataloader_pin_memory=True` on a machine without an accelerator (and without `use_cpu`),
    torch warns at each loader iteration that it pins nothing; hf_lightning does not ask it to."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = run_job("hfl", str(tmp_path), use_cpu=False, n_eval=8, eval_strategy="epoch")
        trainer.predict(ToyClassification(4, seed=3))
    assert not [w for w in caught if re.search("pin_memory", str(w.message))]
    Trainer, _ = trainer_classes("hfl")
    assert Trainer(model=tiny_bert(), args=make_args("hfl", str(tmp_path), use_cpu=False)).args.dataloader_pin_memory


def test_hf_checkpoint_save_messages_name_the_published_folder(tmp_path, console) -> None:
    """The plain-Lightning door: `HFCheckpoint` writes into `tmp-checkpoint-N` too, its messages say `checkpoint-N`."""
    from hf_lightning import HFCheckpoint, HFDataModule, HFLightningModule

    hf_logging.set_verbosity_info()
    args = make_args("hfl", str(tmp_path), per_device_train_batch_size=4, save_steps=2)
    module = HFLightningModule.from_args(tiny_bert(), args)
    data = HFDataModule(args, ToyClassification(8, seed=1))
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(tmp_path), use_distributed_sampler=False, callbacks=[HFCheckpoint()],
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=data)
    assert f"Configuration saved in {tmp_path / 'checkpoint-2' / 'config.json'}" in console.messages
    assert not [m for m in console.messages if "tmp-" in m]
