"""Differential tests: the same tiny BERT job through transformers.Trainer and hf_lightning.Trainer.

CPU, fp32, dropout on, clipping active (max_grad_norm below the observed norms): the final weights must be
bit-identical and the training entries of `log_history` equal.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_same_weights, run_job, train_logs, v4_alias

from hf_lightning import TrainingArguments

SPEED_KEYS = ("runtime", "per_second")


def _strip_speed(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if not any(s in k for s in SPEED_KEYS)}


CASES = {
    "ga1-linear-warmup": dict(gradient_accumulation_steps=1, warmup_steps=2),
    "ga3-short-last-window": dict(gradient_accumulation_steps=3),
    "ga3-cosine": dict(gradient_accumulation_steps=3, lr_scheduler_type="cosine", warmup_steps=0.2),
    "max-steps": dict(gradient_accumulation_steps=2, max_steps=7),
    "fractional-epochs": dict(gradient_accumulation_steps=1, num_train_epochs=1.5),
    "weight-decay-adamw-torch": dict(weight_decay=0.1, optim="adamw_torch", logging_steps=2),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_is_bit_identical_to_transformers(case: str, tmp_path) -> None:
    overrides = dict(max_grad_norm=0.5, **CASES[case])
    hf = run_job("hf", str(tmp_path / "hf"), **overrides)
    hfl = run_job("hfl", str(tmp_path / "hfl"), **overrides)
    assert_same_weights(hf.model, hfl.model)
    assert train_logs(hf) == train_logs(hfl)
    assert any(e["grad_norm"] > 0.5 for e in train_logs(hf)), "clipping must be active in the parity job"
    hf_final, hfl_final = hf.state.log_history[-1], hfl.state.log_history[-1]
    assert _strip_speed(hf_final) == _strip_speed(hfl_final)
    assert hf.state.global_step == hfl.state.global_step
    assert hf.state.max_steps == hfl.state.max_steps


def _accuracy(pred) -> dict:
    return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}


@pytest.mark.parametrize("strategy", ["steps", "epoch"])
def test_eval_during_training_matches_transformers(strategy: str, tmp_path) -> None:
    overrides = dict(
        gradient_accumulation_steps=2,
        eval_strategy=strategy,
        eval_steps=2,
        per_device_eval_batch_size=3,
        trainer_kwargs={"compute_metrics": _accuracy},
    )
    hf = run_job("hf", str(tmp_path / "hf"), n_eval=10, **overrides)
    hfl = run_job("hfl", str(tmp_path / "hfl"), n_eval=10, **overrides)
    assert_same_weights(hf.model, hfl.model)
    hf_logs = [_strip_speed(e) for e in hf.state.log_history]
    hfl_logs = [_strip_speed(e) for e in hfl.state.log_history]
    assert hf_logs == hfl_logs
    assert any("eval_accuracy" in e for e in hfl_logs)


ZERO_BUDGETS = {
    "max-steps-0": dict(max_steps=0),  # one step (the linear schedule's lr is 0 from the start), then stop
    "max-steps-0-constant-lr": dict(max_steps=0, lr_scheduler_type="constant"),  # that one step moves the weights
    "zero-epochs": dict(num_train_epochs=0),  # no step at all
}


@pytest.mark.parametrize("case", sorted(ZERO_BUDGETS))
def test_zero_step_budgets_match_transformers(case: str, tmp_path) -> None:
    hf = run_job("hf", str(tmp_path / "hf"), **ZERO_BUDGETS[case])
    hfl = run_job("hfl", str(tmp_path / "hfl"), **ZERO_BUDGETS[case])
    assert_same_weights(hf.model, hfl.model)
    assert [_strip_speed(e) for e in hf.state.log_history] == [_strip_speed(e) for e in hfl.state.log_history]
    assert (hf.state.global_step, hf.state.max_steps) == (hfl.state.global_step, hfl.state.max_steps)
    assert hfl.state.global_step == (0 if case == "zero-epochs" else 1)


def test_fp16_on_cpu_trains_in_fp32_like_transformers(tmp_path) -> None:
    """accelerate enables fp16 autocast and loss scaling only off the CPU: both train in fp32 (we warn)."""
    hf = run_job("hf", str(tmp_path / "hf"), fp16=True, max_grad_norm=0.5)
    with pytest.warns(UserWarning, match="fp16.*CPU.*fp32"):
        hfl = run_job("hfl", str(tmp_path / "hfl"), fp16=True, max_grad_norm=0.5)
    fp32 = run_job("hfl", str(tmp_path / "fp32"), max_grad_norm=0.5)
    assert_same_weights(hf.model, hfl.model)
    assert_same_weights(fp32.model, hfl.model)
    assert train_logs(hf) == train_logs(hfl)
    assert not any(p.name == "scaler.pt" for p in tmp_path.rglob("*"))


@v4_alias("warmup_ratio")
def test_v4_warmup_steps_override_warmup_ratio(tmp_path) -> None:
    """The seed's rule (transformers v4's): with both, `warmup_steps` wins; the same run as `warmup_steps` alone on
    transformers."""
    with pytest.warns(UserWarning, match="`warmup_steps` overrides `warmup_ratio`"):
        TrainingArguments(str(tmp_path / "args"), warmup_steps=3, warmup_ratio=0.5, report_to="none")
    hf = run_job("hf", str(tmp_path / "hf"), warmup_steps=3)
    hfl = run_job("hfl", str(tmp_path / "hfl"), warmup_steps=3, warmup_ratio=0.5)
    assert_same_weights(hf.model, hfl.model)
    assert train_logs(hf) == train_logs(hfl)
