"""A plain `lightning.Trainer` training an HF model with `HFLightningModule.from_args`, `HFDataModule` and
`HFCheckpoint`: the same weights and losses as `hf_lightning.Trainer`, HF checkpoints that `from_pretrained` loads."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from helpers import ToyClassification, assert_same_weights, tiny_bert, without_timings
from lightning.pytorch.callbacks import ModelCheckpoint
from transformers import BertForSequenceClassification, set_seed

from hf_lightning import HFCheckpoint, HFDataModule, HFLightningModule, Trainer, TrainingArguments

KW = dict(
    per_device_train_batch_size=4,
    gradient_accumulation_steps=2,
    learning_rate=1e-3,
    logging_steps=1,
    save_steps=2,
    num_train_epochs=2,
    report_to="none",
    use_cpu=True,
    seed=42,
    disable_tqdm=True,
)


def _args(out: Path) -> TrainingArguments:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TrainingArguments(str(out), **KW)


def _plain_lightning(
    out: Path, callbacks: list | None = None, ckpt_path: str | None = None
) -> tuple[pl.Trainer, HFLightningModule]:
    model = tiny_bert(dropout=0.0)
    set_seed(42)  # the sampler's seed, as `hf_lightning.Trainer` sets it after the model is built
    args = _args(out)
    module = HFLightningModule.from_args(model, args)
    data = HFDataModule(args, ToyClassification(20, seed=1), ToyClassification(8, seed=2))
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        default_root_dir=str(out),
        enable_checkpointing=bool(callbacks),
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=callbacks if callbacks is not None else [HFCheckpoint()],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return trainer, module


def test_plain_lightning_run_matches_the_facade(tmp_path: Path) -> None:
    trainer, module = _plain_lightning(tmp_path / "pl")
    facade = Trainer(
        model=tiny_bert(dropout=0.0), args=_args(tmp_path / "hfl"), train_dataset=ToyClassification(20, seed=1)
    )
    facade.train()
    assert trainer.global_step == facade.state.global_step == 6
    assert_same_weights(module.model, facade.model)
    ours = [
        (e["step"], e["loss"], e["learning_rate"], e["epoch"]) for e in module.loop.state.log_history if "loss" in e
    ]
    theirs = [(e["step"], e["loss"], e["learning_rate"], e["epoch"]) for e in facade.state.log_history if "loss" in e]
    assert ours == theirs
    assert "eval_loss" in trainer.callback_metrics


def test_hf_checkpoint_callback_writes_hf_layout(tmp_path: Path) -> None:
    trainer, module = _plain_lightning(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    files = set(os.listdir(tmp_path / "checkpoint-6"))
    expected = {"config.json", "model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"}
    assert expected | {"rng_state.pth", "training_args.bin"} == files
    loaded = BertForSequenceClassification.from_pretrained(tmp_path / "checkpoint-6")
    assert_same_weights(loaded, module.model)


def test_lightning_ckpt_path_resume_restores_the_hf_state(tmp_path: Path) -> None:
    """`fit(ckpt_path=...)` from a Lightning checkpoint of epoch 1: Lightning restores the weights, optimizer and step
    count, the module the HF side (log history, the schedule): the resumed run ends as the uninterrupted one."""
    every_epoch = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_epochs=1, save_top_k=-1)
    full_trainer, full = _plain_lightning(tmp_path / "full", callbacks=[every_epoch])
    first_epoch = str(tmp_path / "ckpt" / "epoch=0-step=3.ckpt")
    saved = torch.load(first_epoch, weights_only=False)["hf_lightning_state"]
    assert saved["lr_scheduler"]["last_epoch"] == 3
    resumed_trainer, resumed = _plain_lightning(tmp_path / "resumed", callbacks=[], ckpt_path=first_epoch)
    assert resumed_trainer.global_step == full_trainer.global_step == 6
    assert without_timings(resumed.loop.state.log_history) == without_timings(full.loop.state.log_history)
    assert resumed.loop.lr_scheduler.state_dict() == full.loop.lr_scheduler.state_dict()
    assert_same_weights(resumed.model, full.model)


def test_lightning_mid_epoch_resume_continues_the_hf_schedule_and_log(tmp_path: Path) -> None:
    """A checkpoint taken mid-epoch (Lightning skips `on_train_epoch_start` on resume): the window loader is resumable,
    so the epoch goes on after the batches already trained on, and the run ends as the uninterrupted one did: same
    weights, same log history. `validate(ckpt_path=...)` leaves nothing behind for a later fit."""
    every_step = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    full_trainer, full = _plain_lightning(tmp_path / "full", callbacks=[every_step])
    mid = str(tmp_path / "ckpt" / "epoch=0-step=2.ckpt")
    assert torch.load(mid, weights_only=False)["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 0, "batches": 4}  # 2 steps of 2 micro-batches
    ]
    resumed_trainer, resumed = _plain_lightning(tmp_path / "resumed", callbacks=[], ckpt_path=mid)
    assert resumed_trainer.global_step == full_trainer.global_step == 6
    assert without_timings(resumed.loop.state.log_history) == without_timings(full.loop.state.log_history)
    assert_same_weights(resumed.model, full.model)
    history, schedule = list(resumed.loop.state.log_history), resumed.loop.lr_scheduler.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed_trainer.validate(
            resumed,
            datamodule=HFDataModule(_args(tmp_path), ToyClassification(8, seed=2), ToyClassification(8, seed=2)),
            ckpt_path=mid,
        )
    # the validation is logged; the checkpoint's HF state (an older log, an earlier schedule) is not restored
    assert resumed.loop.state.log_history[: len(history)] == history
    assert resumed.loop.lr_scheduler.state_dict() == schedule


def test_window_loader_state_resumes_mid_epoch_and_after_a_closed_epoch() -> None:
    """The loader's state is (epoch, micro-batches yielded); a fresh loader given it continues after them (inside a
    window too). After a complete epoch it yields nothing of that epoch (Lightning iterates it once more to end it,
    under a step budget) and the next epoch is whole, whether Lightning starts it (`start_epoch`) or not."""
    from hf_lightning.data import AccumulationWindowLoader

    def loader() -> AccumulationWindowLoader:
        return AccumulationWindowLoader(list(range(5)), 2, sum, 5)  # "items": the sum of the window's batches

    first = loader()
    iterator = iter(first)
    seen = [next(iterator).step for _ in range(3)]
    assert seen == [0, 1, 2] and first.state_dict() == {"epoch": 0, "batches": 3}
    resumed = loader()
    resumed.load_state_dict(first.state_dict())
    rest = list(resumed)
    assert [(b.inputs, b.step, b.window_size, b.is_last_in_window) for b in rest] == [(3, 3, 2, True), (4, 4, 1, True)]
    assert [b.num_items_in_batch for b in rest] == [2 + 3, 4]  # the window of batches 2-3 is counted whole
    closed = loader()
    closed.load_state_dict({"epoch": 0, "batches": 5})
    assert list(closed) == [] and closed.state_dict() == {"epoch": 0, "batches": 5}
    assert [b.step for b in closed] == [0, 1, 2, 3, 4] and closed.state_dict() == {"epoch": 1, "batches": 5}
    started = loader()
    started.load_state_dict({"epoch": 0, "batches": 5})
    started.start_epoch(1)  # Lightning went on to the next epoch without iterating the closed one
    assert [b.step for b in started] == [0, 1, 2, 3, 4] and started.state_dict()["epoch"] == 1


def test_datamodule_and_callback_reject_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train_dataset"):
        HFDataModule(_args(tmp_path))
    with pytest.raises(ValueError, match="every_n_steps"):
        HFCheckpoint(every_n_steps=0)
