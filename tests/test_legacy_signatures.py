"""Tests for hf_lightning.legacy_signatures: Trainer subclasses written for transformers v4 keep working.

transformers 5.x itself rejects v4 hook signatures, so the reference is the same subclass written with v5
signatures, run by `transformers.Trainer`: training, evaluation and prediction must give the same weights, logs,
metrics and predictions.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch
import transformers
from helpers import ToyClassification, assert_same, assert_same_weights, make_args, tiny_bert, trainer_classes
from packaging.version import Version

import hf_lightning
from hf_lightning import compat
from hf_lightning.legacy_signatures import HOOK_CHANGES

SPEED_KEYS = ("runtime", "per_second")


def _strip_speed(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if not any(s in k for s in SPEED_KEYS)}


@pytest.mark.parametrize("change", HOOK_CHANGES, ids=lambda c: c.name)
def test_hook_changes_are_those_of_installed_transformers(change) -> None:
    """Canary: each hook's v5 parameter exists in transformers.Trainer at the position hf_lightning's Trainer has it."""

    def positional(cls: type) -> list[str]:
        params = inspect.signature(getattr(cls, change.name)).parameters.values()
        return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]

    hf, ours = positional(transformers.Trainer), positional(hf_lightning.Trainer)
    assert change.added in hf
    assert hf.index(change.added) == ours.index(change.added)


class SeedBodies:
    """Seed 004's `compute_loss` and `training_step` bodies (a cross-entropy on the logits, `loss.backward()`)."""

    def seed_loss(self, model, inputs, return_outputs):
        outputs = model(**inputs)
        logits = outputs.get("logits")
        labels = inputs.get("labels")
        loss = torch.nn.CrossEntropyLoss()(logits.view(-1, self.model.config.num_labels), labels.view(-1))
        return (loss, outputs) if return_outputs else loss

    def seed_step(self, model, inputs):
        model.train()
        inputs = self._prepare_inputs(inputs)
        with self.autocast_smart_context_manager():
            loss = self.compute_loss(model, inputs)
        if self.args.gradient_accumulation_steps > 1:
            loss = loss / self.args.gradient_accumulation_steps
        loss.backward()
        return loss.detach()


class V4Hooks(SeedBodies):
    def compute_loss(self, model, inputs, return_outputs=False):
        return self.seed_loss(model, inputs, return_outputs)

    def training_step(self, model, inputs):
        return self.seed_step(model, inputs)


class V5Hooks(SeedBodies):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return self.seed_loss(model, inputs, return_outputs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        return self.seed_step(model, inputs)


class V4LossOnly:
    """Only `compute_loss`, v4 style: the default `training_step` must divide its loss by the window."""

    def compute_loss(self, model, inputs, return_outputs=False):
        return super().compute_loss(model, inputs, return_outputs)


class V5LossOnly:
    loss_is_scaled_for_ga = False  # what v5 asks of a loss not normalised by `num_items_in_batch`

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return super().compute_loss(model, inputs, return_outputs)


class V4LogAndSampler:
    """`log(self, logs)` (before v4.47) and `_get_train_sampler(self)` (before v4.52), both v4 style."""

    def log(self, logs):
        logs["custom"] = 1.0
        super().log(logs)

    def _get_train_sampler(self):
        return torch.utils.data.SequentialSampler(self.train_dataset)


class V5LogAndSampler:
    def log(self, logs, start_time=None):
        logs["custom"] = 1.0
        super().log(logs, start_time)

    def _get_train_sampler(self, train_dataset=None):
        return torch.utils.data.SequentialSampler(self.train_dataset)


def _accuracy(pred) -> dict:
    return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}


def _run(impl: str, hooks: type, out: str, **params):
    """Train, evaluate and predict with `impl`'s Trainer subclassed by `hooks`; returns (trainer, metrics, predictions,
    FutureWarnings raised while building the Trainer)."""
    base, _ = trainer_classes(impl)
    cls = type(f"Custom{hooks.__name__}", (hooks, base), {})
    args = make_args(
        impl,
        out,
        **{
            "per_device_train_batch_size": 4,
            "per_device_eval_batch_size": 3,
            "learning_rate": 1e-3,
            "num_train_epochs": 2,
            "logging_steps": 1,
            "save_strategy": "no",
            "eval_strategy": "epoch",
            "max_grad_norm": 0.5,
            **params,
        },
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = cls(
            model=tiny_bert(),
            args=args,
            train_dataset=ToyClassification(18, seed=1),
            eval_dataset=ToyClassification(7, seed=2),
            compute_metrics=_accuracy,
        )
    future = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    trainer.train()
    metrics = trainer.evaluate()
    prediction = trainer.predict(ToyClassification(5, seed=3))
    return trainer, metrics, prediction, future


CASES = {
    "seed-004-hooks": (V4Hooks, V5Hooks, ["compute_loss", "training_step"]),
    "compute-loss-only": (V4LossOnly, V5LossOnly, ["compute_loss"]),
    "log-and-train-sampler": (V4LogAndSampler, V5LogAndSampler, ["log", "_get_train_sampler"]),
}


@pytest.mark.parametrize("ga", [1, 2])
@pytest.mark.parametrize("case", sorted(CASES))
def test_v4_subclass_matches_its_v5_twin_on_transformers(case: str, ga: int, tmp_path) -> None:
    if case == "compute-loss-only" and ga > 1 and compat.TRANSFORMERS_VERSION < Version("5.19.0"):
        pytest.skip("the v5 twin declares `loss_is_scaled_for_ga`, which transformers reads from 5.19")
    v4, v5, adapted = CASES[case]
    hfl, hfl_metrics, hfl_pred, warned = _run("hfl", v4, str(tmp_path / "hfl"), gradient_accumulation_steps=ga)
    hf, hf_metrics, hf_pred, _ = _run("hf", v5, str(tmp_path / "hf"), gradient_accumulation_steps=ga)
    assert_same_weights(hf.model, hfl.model)
    assert [_strip_speed(e) for e in hf.state.log_history] == [_strip_speed(e) for e in hfl.state.log_history]
    assert _strip_speed(hf_metrics) == _strip_speed(hfl_metrics)
    assert_same(hf_pred.predictions, hfl_pred.predictions)
    assert_same(_strip_speed(hf_pred.metrics), _strip_speed(hfl_pred.metrics))
    assert len(warned) == len(adapted), warned
    for name, message in zip(adapted, warned):
        assert f".{name}` has the transformers v4 signature" in message


def test_v5_overrides_are_left_alone(tmp_path) -> None:
    class V5(V5Hooks, hf_lightning.Trainer):
        pass

    args = make_args("hfl", str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        trainer = V5(model=tiny_bert(), args=args, train_dataset=ToyClassification(4))
    assert "compute_loss" not in vars(trainer) and "training_step" not in vars(trainer)
    assert trainer.loss_is_scaled_for_ga is None


def test_v4_loss_counts_as_unscaled_unless_the_class_says_otherwise(tmp_path) -> None:
    class Scaled(V4LossOnly, hf_lightning.Trainer):
        loss_is_scaled_for_ga = True

    class Unscaled(V4LossOnly, hf_lightning.Trainer):
        pass

    args = make_args("hfl", str(tmp_path))
    with pytest.warns(FutureWarning, match="compute_loss"):
        assert Unscaled(model=tiny_bert(), args=args).loss_is_scaled_for_ga is False
    with pytest.warns(FutureWarning, match="compute_loss"):
        assert Scaled(model=tiny_bert(), args=args).loss_is_scaled_for_ga is True


def test_adapter_drops_the_new_argument_by_keyword_or_position(tmp_path) -> None:
    calls: list = []

    class V4(hf_lightning.Trainer):
        def training_step(self, model, inputs):
            calls.append((model, inputs))
            return torch.tensor(0.0)

    with pytest.warns(FutureWarning, match="training_step"):
        trainer = V4(model=tiny_bert(), args=make_args("hfl", str(tmp_path)))
    trainer.training_step("m", "i", 3)
    trainer.training_step("m", "i", num_items_in_batch=3)
    trainer.training_step("m", "i")
    assert calls == [("m", "i")] * 3
    assert trainer.training_step.__name__ == "training_step"
