"""`Trainer.hyperparameter_search` / `model_init` (`hf_lightning.hp_search`): optuna trials re-create the model,
apply their arguments, write `run-{n}` folders, report at each evaluation (pruning) and return `BestRun`."""

from __future__ import annotations

import os
from typing import Any

import pytest
from helpers import ToyClassification, make_args, tiny_bert
from transformers.trainer_utils import BestRun

from hf_lightning import Trainer, TrainerCallback, TrainingArguments

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)

LOW, HIGH = 1e-6, 5e-3


def _fresh_bert():
    return tiny_bert()


def _args(out: str, **overrides: Any) -> TrainingArguments:
    defaults = dict(per_device_train_batch_size=4, max_steps=6, eval_strategy="steps", eval_steps=3,
                    save_strategy="steps", save_steps=6, logging_steps=3)  # fmt: skip
    return make_args("hfl", out, **{**defaults, **overrides})


class _Record(TrainerCallback):
    """What each trial trained with: its learning rate and the model object."""

    def __init__(self) -> None:
        self.runs: list[dict] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.runs.append({"learning_rate": args.learning_rate, "model": model, "trial_params": state.trial_params})


def test_optuna_search_finds_the_better_learning_rate(tmp_path) -> None:
    record = _Record()
    data = ToyClassification(16, seed=1)  # evaluated on the training data: the higher rate fits it better
    trainer = Trainer(
        model_init=_fresh_bert, args=_args(str(tmp_path)), train_dataset=data, eval_dataset=data, callbacks=[record]
    )

    def hp_space(trial):
        return {"learning_rate": trial.suggest_categorical("learning_rate", [LOW, HIGH])}

    best = trainer.hyperparameter_search(
        hp_space=hp_space, n_trials=3, direction="minimize", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    assert isinstance(best, BestRun)
    assert best.hyperparameters == {"learning_rate": HIGH}
    assert len(record.runs) == 3 and {r["learning_rate"] for r in record.runs} == {LOW, HIGH}
    assert len({id(r["model"]) for r in record.runs}) == len(record.runs)  # model_init re-ran for every trial
    assert all(r["trial_params"] == {"learning_rate": r["learning_rate"]} for r in record.runs)
    for n in range(len(record.runs)):
        assert os.path.isdir(tmp_path / f"run-{n}" / "checkpoint-6")
    assert trainer.hp_search_backend is None


def test_model_init_receives_the_trial_and_hp_name_names_the_run(tmp_path) -> None:
    seen = []

    def model_init(trial):
        seen.append(trial)
        return tiny_bert()

    trainer = Trainer(
        model_init=model_init,
        args=_args(str(tmp_path), max_steps=2, eval_steps=2, save_steps=2),
        train_dataset=ToyClassification(8),
        eval_dataset=ToyClassification(4),
    )
    assert seen == [None]  # the constructor builds a first model without a trial
    best = trainer.hyperparameter_search(
        hp_space=lambda t: {"num_train_epochs": t.suggest_int("num_train_epochs", 1, 3)},
        n_trials=2,
        hp_name=lambda t: f"trial_{t.number}",
    )
    assert isinstance(seen[1], optuna.Trial) and isinstance(seen[2], optuna.Trial)
    assert os.path.isdir(tmp_path / "trial_0" / "checkpoint-2") and os.path.isdir(tmp_path / "trial_1")
    assert best.run_id in {"0", "1"} and isinstance(best.objective, float)


class _PruneAfterFirstTrial(optuna.pruners.BasePruner):
    """Prunes every trial but the first at its first report; keeps the study to look at."""

    study = None

    def prune(self, study, trial) -> bool:
        type(self).study = study
        return trial.number > 0


def test_each_evaluation_is_reported_and_pruned_trials_stop(tmp_path) -> None:
    steps = []

    class Steps(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            steps.append(state.global_step)

    trainer = Trainer(
        model_init=_fresh_bert,
        args=_args(str(tmp_path), save_strategy="no", eval_steps=2),
        train_dataset=ToyClassification(16),
        eval_dataset=ToyClassification(8),
        callbacks=[Steps()],
    )
    trainer.hyperparameter_search(
        hp_space=lambda t: {"learning_rate": t.suggest_float("learning_rate", 1e-4, 1e-2, log=True)},
        n_trials=2,
        pruner=_PruneAfterFirstTrial(),
    )
    first, second = _PruneAfterFirstTrial.study.trials
    assert sorted(first.intermediate_values) == [2, 4, 6] and first.state == optuna.trial.TrialState.COMPLETE
    assert first.value == first.intermediate_values[6]
    assert list(second.intermediate_values) == [2] and second.state == optuna.trial.TrialState.PRUNED
    assert steps == [6, 2]  # on_train_end is fired for the pruned trial too, as HF does


def test_backend_and_model_init_errors(tmp_path) -> None:
    data = ToyClassification(8)
    with_init = Trainer(model_init=_fresh_bert, args=_args(str(tmp_path)), train_dataset=data, eval_dataset=data)
    with pytest.raises(ValueError, match="backend"):
        with_init.hyperparameter_search(backend="sigopt")
    try:
        import ray.tune  # noqa: F401

        with pytest.raises(ValueError, match="ray"):  # installed: refused, Ray Tune re-creates the Trainer
            with_init.hyperparameter_search(backend="ray")
    except ImportError:
        with pytest.raises(RuntimeError, match=r"ray\[tune\]"):
            with_init.hyperparameter_search(backend="ray")
    with pytest.raises(ValueError, match="n_trials"):
        with_init.hyperparameter_search(n_trials=0)
    plain = Trainer(model=tiny_bert(), args=_args(str(tmp_path)), train_dataset=data, eval_dataset=data)
    with pytest.raises(RuntimeError, match="model_init"):
        plain.hyperparameter_search(backend="optuna")
