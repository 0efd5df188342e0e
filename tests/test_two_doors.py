"""One HF loop, two doors: the same jobs through `hf_lightning.Trainer` (the facade) and through a `lightning.Trainer`
the user owns (`HFLightningModule.from_args` + `HFDataModule`), compared with `transformers.Trainer` where HF has the
behaviour (weights, `log_history`, early stopping) and with Lightning's semantics where it is Lightning's (loggers,
`callback_metrics`, `EarlyStopping`, `ModelCheckpoint`, `.ckpt` files, `fit`/`validate`/`test`/`predict`).

Each test runs a tiny BERT with dropout on, on CPU in fp32, so every comparison is exact.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from helpers import ToyClassification, assert_same_weights, make_args, tiny_bert, without_timings
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from transformers import EarlyStoppingCallback

import hf_lightning
from hf_lightning import HFCheckpoint, HFDataModule, HFLightningModule

DOORS = ["facade", "plain"]
# 20 samples, batch 4, accumulation 2: 5 batches = 3 optimiser steps (2 + 2 + 1 batches) an epoch, 6 in all
JOB = dict(
    per_device_train_batch_size=4,
    gradient_accumulation_steps=2,
    learning_rate=1e-3,
    num_train_epochs=2,
    logging_steps=1,
    save_strategy="no",
)


class RecordingLogger(pl.loggers.Logger):
    """A Lightning logger that records what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[tuple[int | None, dict]] = []

    name = "recording"
    version = 0

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


class Run:
    """What a door's run left: the HF loop (state, model) and the `lightning.Trainer` that ran it."""

    def __init__(self, loop: Any, lightning_trainer: pl.Trainer, module: Any = None) -> None:
        self.loop, self.lightning_trainer, self.module = loop, lightning_trainer, module

    @property
    def state(self) -> Any:
        return self.loop.state

    @property
    def model(self) -> torch.nn.Module:
        return self.loop.model


def lightning_flags(callbacks: list) -> dict[str, Any]:
    return dict(
        enable_checkpointing=any(isinstance(cb, ModelCheckpoint) for cb in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def run_door(
    door: str,
    out: Path,
    n_eval: int | None = None,
    hf_callbacks: list | None = None,
    lightning_callbacks: list | None = None,
    loggers: list | None = None,
    ckpt_path: str | None = None,
    folder: str | None = None,
    trainer_kwargs: dict | None = None,
    lightning_budget: dict | None = None,
    **overrides: Any,
) -> Run:
    """The job through `door`: the facade's `train()`, or `fit` of a `lightning.Trainer` the test builds as a Lightning
    user would (its budget and evaluation cadence the same as the arguments'). `folder` / `ckpt_path` resume an HF
    checkpoint folder / a Lightning checkpoint; `lightning_budget` replaces the plain door's `max_epochs` /
    `max_steps`."""
    params = {**JOB, **overrides}
    lightning_callbacks = list(lightning_callbacks or [])
    train, evals = ToyClassification(20, seed=1), ToyClassification(n_eval, seed=2) if n_eval else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if door == "facade":
            args = make_args(
                "hfl", str(out), lightning_trainer_kwargs={"logger": loggers} if loggers else None, **params
            )
            trainer = hf_lightning.Trainer(
                model=tiny_bert(),
                args=args,
                train_dataset=train,
                eval_dataset=evals,
                callbacks=list(hf_callbacks or []) + lightning_callbacks,
                **(trainer_kwargs or {}),
            )
            trainer.train(resume_from_checkpoint=folder or ckpt_path)
            return Run(trainer, trainer.lightning_trainer, trainer.lightning_module)
        args = make_args("hfl", str(out), resume_from_checkpoint=folder, **params)
        module = HFLightningModule.from_args(tiny_bert(), args, callbacks=hf_callbacks, **(trainer_kwargs or {}))
        data = HFDataModule(args, train, evals)
        cadence: dict[str, Any] = {"limit_val_batches": 0}  # evaluation is the arguments' `eval_strategy`
        if params.get("eval_strategy") == "steps":  # tell Lightning's callbacks evaluations come every few steps
            cadence.update(check_val_every_n_epoch=None, val_check_interval=params["eval_steps"] * 2)
        lightning_trainer = pl.Trainer(
            accelerator="cpu",
            **(
                lightning_budget
                or dict(max_epochs=int(params["num_train_epochs"]), max_steps=params.get("max_steps", -1))
            ),
            logger=loggers or False,
            default_root_dir=str(out),
            use_distributed_sampler=False,
            num_sanity_val_steps=0,
            callbacks=lightning_callbacks,
            **cadence,
            **lightning_flags(lightning_callbacks),
        )
        lightning_trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
        return Run(module.loop, lightning_trainer, module)


@pytest.fixture(scope="module")
def hf_job(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`transformers.Trainer` on the job, evaluating every 2 steps, label smoothing on."""
    from helpers import run_job

    return run_job(
        "hf",
        str(tmp_path_factory.mktemp("hf")),
        n_eval=8,
        eval_strategy="steps",
        eval_steps=2,
        label_smoothing_factor=0.1,
        gradient_accumulation_steps=2,
    )


# ---- the same training, the same log ---------------------------------------------------------------------------


@pytest.mark.parametrize("door", DOORS)
def test_training_and_log_match_transformers(door: str, hf_job: Any, tmp_path: Path) -> None:
    """Dropout on, label smoothing on, evaluation every 2 steps: both doors end with transformers' weights and log."""
    run = run_door(door, tmp_path, n_eval=8, eval_strategy="steps", eval_steps=2, label_smoothing_factor=0.1)
    assert run.state.global_step == hf_job.state.global_step == 6
    assert_same_weights(run.model, hf_job.model)
    assert without_timings(run.state.log_history) == without_timings(hf_job.state.log_history)


@pytest.mark.parametrize("door", DOORS)
def test_lightning_loggers_get_every_hf_log_at_the_hf_step(door: str, tmp_path: Path) -> None:
    """A logger given as Lightning users give it (`lightning_trainer_kwargs={"logger": ...}`, `Trainer(logger=...)`)
    gets every HF log, at HF's `global_step`; the evaluation metrics are in `callback_metrics`."""
    logger = RecordingLogger()
    run = run_door(door, tmp_path, n_eval=8, loggers=[logger], eval_strategy="steps", eval_steps=3)
    history = run.state.log_history
    expected = [(e["step"], {k: float(v) for k, v in e.items() if k != "step"}) for e in history]
    assert logger.metrics == expected
    assert [step for step, m in logger.metrics if "loss" in m] == [1, 2, 3, 4, 5, 6]
    last_eval = [e for e in history if "eval_loss" in e][-1]
    assert run.lightning_trainer.callback_metrics["eval_loss"].item() == last_eval["eval_loss"]


# ---- Lightning's callbacks hear HF's evaluations -----------------------------------------------------------------


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("patience", [1, 2])
def test_early_stopping_stops_where_transformers_does(door: str, patience: int, tmp_path: Path) -> None:
    """Lightning's `EarlyStopping(monitor="eval_loss")` stops at the step transformers' `EarlyStoppingCallback` does
    (the same patience and threshold), after the evaluation that exhausts the patience."""
    from helpers import run_job

    job = dict(eval_strategy="steps", eval_steps=1, num_train_epochs=4, metric_for_best_model="eval_loss")
    job.update(learning_rate=3e-2, gradient_accumulation_steps=2)  # a bumpy descent: the loss stops improving early
    hf = run_job(
        "hf", str(tmp_path / "hf"), n_eval=8, callbacks=[EarlyStoppingCallback(early_stopping_patience=patience)], **job
    )
    stopper = EarlyStopping(monitor="eval_loss", patience=patience, mode="min")
    run = run_door(door, tmp_path / door, n_eval=8, lightning_callbacks=[stopper], **job)
    assert hf.state.global_step < 12  # it did stop early
    assert run.state.global_step == hf.state.global_step
    assert stopper.wait_count == patience and run.lightning_trainer.should_stop
    assert_same_weights(run.model, hf.model)
    assert without_timings(run.state.log_history) == without_timings(hf.state.log_history)


@pytest.mark.parametrize("door", DOORS)
def test_model_checkpoint_keeps_the_best_eval_loss_with_the_hf_state(door: str, tmp_path: Path) -> None:
    """`ModelCheckpoint(monitor="eval_loss")` needs no extra flag; it keeps the best evaluation, and its `.ckpt` carries
    the HF state (`TrainerState`, schedule, RNG)."""
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="eval_loss", mode="min", save_top_k=1)
    run = run_door(door, tmp_path, n_eval=8, lightning_callbacks=[best], eval_strategy="steps", eval_steps=2)
    evals = [e for e in run.state.log_history if "eval_loss" in e]
    best_eval = min(evals, key=lambda e: e["eval_loss"])
    assert best.best_model_score.item() == best_eval["eval_loss"]
    assert Path(best.best_model_path).name == f"epoch={int(best_eval['epoch'] - 1e-9)}-step={best_eval['step']}.ckpt"
    saved = torch.load(best.best_model_path, weights_only=True)["hf_lightning_state"]
    assert saved["trainer_state"]["global_step"] == best_eval["step"]
    assert set(saved["rng"]) >= {"python", "numpy", "cpu"}
    assert saved["lr_scheduler"]["last_epoch"] == best_eval["step"]


# ---- resuming: either door, either format -----------------------------------------------------------------------


RESUME_JOB = dict(save_strategy="steps", save_steps=2)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Per door, an uninterrupted run that wrote, at step 2 (mid-epoch), an HF folder and a Lightning `.ckpt`, and at
    step 3 (the epoch's last step, before Lightning's epoch end) another `.ckpt`."""
    runs = {}
    for door in DOORS:
        out = tmp_path_factory.mktemp(door)
        every_2 = ModelCheckpoint(dirpath=out / "ckpt", every_n_train_steps=2, save_top_k=-1)
        every_3 = ModelCheckpoint(dirpath=out / "ckpt3", every_n_train_steps=3, save_top_k=-1)
        callbacks: list = [every_2, every_3] + ([HFCheckpoint()] if door == "plain" else [])
        run = run_door(door, out, lightning_callbacks=callbacks, **RESUME_JOB)
        runs[door] = {
            "run": run,
            "folder": str(out / "checkpoint-2"),
            "ckpt": str(out / "ckpt" / "epoch=0-step=2.ckpt"),
            "ckpt-epoch-end": str(out / "ckpt3" / "epoch=0-step=3.ckpt"),
        }
    return runs


@pytest.mark.parametrize("fmt", ["folder", "ckpt", "ckpt-epoch-end"])
@pytest.mark.parametrize(
    ("door", "written_by"), [("facade", "plain"), ("plain", "facade"), ("facade", "facade"), ("plain", "plain")]
)
def test_resume_either_format_bit_identical(door: str, written_by: str, fmt: str, checkpoints: dict, tmp_path) -> None:
    """Either door resumes a step-2 checkpoint, HF folder or Lightning `.ckpt`, written by either door, to the weights
    and log of the uninterrupted run (dropout on: the RNG states are restored). A `.ckpt` of an epoch's last step
    resumes into Lightning's end of that epoch (it ran no batch there: this once stopped the run as an empty epoch)."""
    source = checkpoints[written_by]
    full = source["run"]
    resume = {fmt: source[fmt]} if fmt == "folder" else {"ckpt_path": source[fmt]}
    run = run_door(door, tmp_path, **RESUME_JOB, **resume)
    assert run.state.global_step == 6
    assert_same_weights(run.model, full.model)
    assert without_timings(run.state.log_history) == without_timings(full.state.log_history)


@pytest.mark.parametrize("door", DOORS)
def test_resume_a_monitoring_checkpoint_of_an_epoch_end(door: str, tmp_path: Path) -> None:
    """With `eval_strategy="epoch"`, `ModelCheckpoint(monitor="eval_loss")` saves at Lightning's end of the epoch, after
    HF's (evaluation included): resumed under a step budget (`max_steps`, no epoch limit: Lightning itself resumes
    such a checkpoint one epoch too far when both are set), Lightning replays that epoch end, where HF's had already
    run. The resumed run trained nothing and stopped ("not a single sample"); now it ends as the uninterrupted one."""
    job = dict(eval_strategy="epoch", metric_for_best_model="eval_loss", max_steps=6)
    budget = dict(max_epochs=-1, max_steps=6)
    best = ModelCheckpoint(dirpath=tmp_path / "full" / "ckpt", monitor="eval_loss", save_top_k=-1)
    full = run_door(door, tmp_path / "full", n_eval=4, lightning_callbacks=[best], lightning_budget=budget, **job)
    epoch_end = tmp_path / "full" / "ckpt" / "epoch=0-step=3.ckpt"
    assert epoch_end.is_file(), sorted(p.name for p in (tmp_path / "full" / "ckpt").iterdir())
    resumed = run_door(door, tmp_path / "resumed", n_eval=4, ckpt_path=str(epoch_end), lightning_budget=budget, **job)
    assert resumed.state.global_step == full.state.global_step == 6
    assert_same_weights(resumed.model, full.model)
    assert without_timings(resumed.state.log_history) == without_timings(full.state.log_history)


def test_both_doors_write_the_same_checkpoint_folder(checkpoints: dict) -> None:
    """The `HFCheckpoint` folder of the plain door is the facade's `save_strategy` folder: the same files and
    `trainer_state.json` (batch size, save steps, epochs, flos ... which the facade needs to resume it)."""
    facade, plain = Path(checkpoints["facade"]["folder"]), Path(checkpoints["plain"]["folder"])
    assert sorted(os.listdir(plain)) == sorted(os.listdir(facade))
    ours, theirs = (json.loads((p / "trainer_state.json").read_text()) for p in (plain, facade))
    ours["log_history"], theirs["log_history"] = (
        without_timings(ours["log_history"]),
        without_timings(theirs["log_history"]),
    )
    assert ours == theirs
    assert theirs["train_batch_size"] == 4 and theirs["save_steps"] == 2 and theirs["num_train_epochs"] == 2
    assert theirs["total_flos"] > 0


# ---- Lightning's other entry points ---------------------------------------------------------------------------


def accuracy(prediction: Any) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def test_validate_test_predict_are_hfs_evaluation(tmp_path: Path) -> None:
    """On a `lightning.Trainer` the user owns, `validate()` / `test()` return (and log) what the facade's `evaluate()`
    computes (`compute_metrics` included; `test_` prefix for `test`), `predict()` the facade's `predict()` logits."""
    args = make_args("hfl", str(tmp_path), per_device_eval_batch_size=3)
    evals, tests = ToyClassification(8, seed=2), ToyClassification(7, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        facade = hf_lightning.Trainer(model=tiny_bert(), args=args, eval_dataset=evals, compute_metrics=accuracy)
        expected_eval = facade.evaluate()
        expected_test = facade.evaluate(tests, metric_key_prefix="test")
        expected_logits = facade.predict(tests).predictions
        module = HFLightningModule.from_args(tiny_bert(), args, compute_metrics=accuracy)
        data = HFDataModule(args, eval_dataset=evals, test_dataset=tests)
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        (validated,) = trainer.validate(module, datamodule=data)
        (tested,) = trainer.test(module, datamodule=data)
        logits = torch.cat(trainer.predict(module, datamodule=data))
    for ours, theirs in ((validated, expected_eval), (tested, expected_test)):
        keys = [k for k in theirs if k.endswith(("_loss", "_accuracy"))]
        assert {k: ours[k] for k in keys} == pytest.approx({k: theirs[k] for k in keys}, abs=1e-6)
    assert module.loop.state.log_history[0]["eval_loss"] == validated["eval_loss"]  # HF's log of the evaluation
    torch.testing.assert_close(logits, torch.as_tensor(expected_logits))
    batch = next(iter(data.test_dataloader()))
    assert module(batch).logits.shape == module(**batch).logits.shape == (3, 3)  # a batch dict, as Lightning passes it


@pytest.mark.parametrize("strategy", ["epoch", "best"])
def test_hf_checkpoint_saves_where_the_facade_saves(strategy: str, tmp_path: Path) -> None:
    """`HFCheckpoint` follows `save_strategy` as the facade does: at each epoch end, or after each evaluation that found
    a new best `metric_for_best_model` (evaluations every step, learning rate high enough for the loss to bounce)."""
    job = dict(save_strategy=strategy, eval_strategy="steps", eval_steps=1, learning_rate=3e-2)
    job.update(metric_for_best_model="eval_loss")
    facade = run_door("facade", tmp_path / "facade", n_eval=8, **job)
    plain = run_door(
        "plain", tmp_path / "plain", n_eval=8, lightning_callbacks=[HFCheckpoint(save_on_train_end=False)], **job
    )
    saved = sorted(p.name for p in (tmp_path / "facade").glob("checkpoint-*"))
    assert saved and sorted(p.name for p in (tmp_path / "plain").glob("checkpoint-*")) == saved
    if strategy == "epoch":
        assert saved == ["checkpoint-3", "checkpoint-6"]
    assert plain.state.best_global_step == facade.state.best_global_step
