"""Hyperparameter search (`Trainer.hyperparameter_search`) with HF's semantics.

Each trial re-creates the model with `model_init`, sets the trial's values on `TrainingArguments`, trains
(checkpoints go to `output_dir/run-{trial.number}`), reports the objective at every evaluation so the backend
can prune, and the best trial comes back as transformers' `BestRun`. transformers' backend table gives the
availability checks, error messages and default search spaces; optuna trials are run here because
transformers' optuna runner frees an `accelerate.Accelerator` the Lightning run does not have. W&B sweeps use
transformers' runner; Ray Tune is refused with a clear error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from transformers.hyperparameter_search import ALL_HYPERPARAMETER_SEARCH_BACKENDS, default_hp_search_backend
from transformers.trainer_utils import BestRun, HPSearchBackend, default_compute_objective

logger = logging.getLogger(__name__)


def run_optuna(trainer: Any, n_trials: int, direction: str | list[str], **kwargs: Any) -> BestRun | list[BestRun]:
    """transformers' `run_hp_search_optuna` for one process: `create_study` kwargs plus `timeout`, `n_jobs`,
    `gc_after_trial` and `catch` for `optimize`."""
    import optuna

    if trainer.args.world_size > 1:
        raise RuntimeError("hyperparameter_search with optuna runs on one process; launch it without DDP.")

    def objective(trial: optuna.Trial) -> float | list[float]:
        trainer.objective = None
        trainer.train(trial=trial)
        if getattr(trainer, "objective", None) is None:
            trainer.objective = trainer.compute_objective(trainer.evaluate())
        return trainer.objective

    timeout = kwargs.pop("timeout", None)
    n_jobs = kwargs.pop("n_jobs", 1)
    gc_after_trial = kwargs.pop("gc_after_trial", False)
    catch = kwargs.pop("catch", ())
    directions = direction if isinstance(direction, list) else None
    study = optuna.create_study(direction=None if directions else direction, directions=directions, **kwargs)
    study.optimize(
        objective, n_trials=n_trials, timeout=timeout, n_jobs=n_jobs, gc_after_trial=gc_after_trial, catch=catch
    )
    if not study._is_multi_objective():
        best = study.best_trial
        return BestRun(str(best.number), best.value, best.params)
    return [BestRun(str(best.number), best.values, best.params) for best in study.best_trials]


class HyperparameterSearchMixin:
    """`hyperparameter_search` and the per-trial set-up / reporting the training loop calls."""

    def hyperparameter_search(
        self,
        hp_space: Callable[[Any], dict[str, float]] | None = None,
        compute_objective: Callable[[dict[str, float]], float] | None = None,
        n_trials: int = 20,
        direction: str | list[str] = "minimize",
        backend: str | HPSearchBackend | None = None,
        hp_name: Callable[[Any], str] | None = None,
        **kwargs: Any,
    ) -> BestRun | list[BestRun]:
        """Search hyperparameters with optuna (or Ray Tune / W&B); returns the best run(s) as HF's `BestRun`."""
        if backend is None:
            backend = default_hp_search_backend()
        try:
            backend = HPSearchBackend(backend)
        except ValueError as exc:
            names = ", ".join(repr(b.value) for b in HPSearchBackend)
            raise ValueError(
                f"`backend`={backend!r} is not a hyperparameter search backend; use one of {names}."
            ) from exc
        backend_obj = ALL_HYPERPARAMETER_SEARCH_BACKENDS[backend]()
        backend_obj.ensure_available()
        if backend == HPSearchBackend.RAY:
            raise ValueError(
                "`backend`='ray' is not supported by hf_lightning: Ray Tune re-creates the Trainer in its own worker "
                "processes, which Lightning's launcher does not allow. Use backend='optuna' (or 'wandb')."
            )
        if self.model_init is None:
            raise RuntimeError(
                "To use hyperparameter search, you need to pass your model through a model_init function."
            )
        if not isinstance(n_trials, int) or n_trials < 1:
            raise ValueError(f"`n_trials` must be a positive integer, got {n_trials!r}.")
        self.hp_search_backend = backend
        self.hp_space = backend_obj.default_hp_space if hp_space is None else hp_space
        self.hp_name = hp_name
        self.compute_objective = default_compute_objective if compute_objective is None else compute_objective
        try:
            if backend == HPSearchBackend.OPTUNA:
                return run_optuna(self, n_trials, direction, **kwargs)
            return backend_obj.run(self, n_trials, direction, **kwargs)
        finally:
            self.hp_search_backend = None

    def _hp_search_setup(self, trial: Any) -> None:
        """Put the trial's hyperparameters on `self.args` (cast to the field's type), as HF does."""
        self._trial = trial
        if self.hp_search_backend is None or trial is None:
            return
        if self.hp_search_backend == HPSearchBackend.OPTUNA:
            params = self.hp_space(trial)
        else:
            params = dict(trial)
            params.pop("wandb", None)
        for key, value in params.items():
            if not hasattr(self.args, key):
                logger.warning(
                    "Trying to set %s in the hyperparameter search but there is no corresponding field in "
                    "`TrainingArguments`.",
                    key,
                )
                continue
            old = getattr(self.args, key, None)
            setattr(self.args, key, type(old)(value) if old is not None else value)
        if self.hp_search_backend == HPSearchBackend.OPTUNA:
            logger.info("Trial: %s", trial.params)
        self._train_batch_size = self.args.train_batch_size

    def _report_to_hp_search(self, trial: Any, step: int, metrics: dict[str, float]) -> None:
        """Give the backend the objective of this evaluation; an optuna trial it prunes stops training here."""
        if self.hp_search_backend is None or trial is None:
            return
        metrics = metrics.copy()
        self.objective = self.compute_objective(metrics)
        if self.hp_search_backend == HPSearchBackend.OPTUNA:
            import optuna

            if hasattr(trial, "study") and not trial.study._is_multi_objective():
                trial.report(self.objective, step)
                if trial.should_prune():
                    self.callback_handler.on_train_end(self.args, self.state, self.control)
                    raise optuna.TrialPruned()

    def _evaluate(self, trial: Any, ignore_keys_for_eval: list[str] | None, skip_scheduler: bool = False) -> dict:
        """Evaluation during training, then the hyperparameter-search report (HF's `_evaluate`)."""
        metrics = super()._evaluate(trial, ignore_keys_for_eval, skip_scheduler=skip_scheduler)
        self._report_to_hp_search(trial, self.state.global_step, metrics)
        return metrics
