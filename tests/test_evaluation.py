"""Evaluation, prediction and metrics: differential tests against `transformers.Trainer`.

Each case builds the same tiny model and data for `transformers.Trainer` ("hf") and `hf_lightning.Trainer`
("hfl") and compares what users see: metrics, `log_history` eval entries (speed values blanked, keys kept),
`PredictionOutput` arrays and what `compute_metrics` receives. Plus: DDP on CPU (gloo, 2 processes), the
memory kept during evaluation and bad input.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import JOB_ARGS, ToyClassification, assert_same, make_args, run_gloo_ranks, tiny_bert, trainer_classes
from torch import nn
from torch.utils.data import Dataset
from transformers import (
    BertConfig,
    BertForTokenClassification,
    BertTokenizer,
    DataCollatorForTokenClassification,
    TrainerCallback,
    TrainerState,
)

SPEED_KEYS = ("runtime", "per_second", "preparation_time")


# ---- shared pieces ----------------------------------------------------------------------------------------


class NoLabels(ToyClassification):
    """`ToyClassification` without its `labels` column (prediction-only data)."""

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = super().__getitem__(i)
        del item["labels"]
        return item


class TargetData(ToyClassification):
    """Labels under the key `target` (needs `label_names=["target"]`)."""

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = super().__getitem__(i)
        item["target"] = item.pop("labels")
        return item


class TupleModel(nn.Module):
    """A plain module returning tuples: `(loss, logits, probs)` with a target, `(logits, probs)` without."""

    def __init__(self, label_key: str = "labels") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(50, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: Any = None, target: Any = None) -> tuple:
        logits = self.head(self.embed(input_ids).mean(1))
        probs = logits.softmax(-1)
        if target is None:
            return logits, probs
        return nn.functional.cross_entropy(logits, target), logits, probs


class TokenData(Dataset):
    """Variable-length token sequences (3..9 tokens) with per-token labels, padded per batch by the collator."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        lengths = torch.randint(3, 10, (n,), generator=g).tolist()
        self.items = []
        for length in lengths:
            ids = torch.randint(5, 50, (length,), generator=g)
            self.items.append({"input_ids": ids.tolist(), "labels": (ids % 3).tolist()})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return dict(self.items[i])


def _tokenizer(tmp_path: Path) -> BertTokenizer:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(45)]))
    return BertTokenizer(str(vocab))


def _token_bert() -> BertForTokenClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=3,
    )
    return BertForTokenClassification(config)


def make_trainer(
    impl: str,
    out: Path,
    model: nn.Module | None = None,
    train: Any = None,
    eval_ds: Any = "default",
    **kwargs: Any,
) -> Any:
    """A trainer over the tiny BERT (7 eval samples, eval batches of 3). Trainer kwargs pass through by name."""
    trainer_keys = ("compute_metrics", "preprocess_logits_for_metrics", "data_collator", "callbacks")
    trainer_kwargs = {k: kwargs.pop(k) for k in trainer_keys if k in kwargs}
    Trainer, _ = trainer_classes(impl)
    args = make_args(
        impl, str(out / impl), **{**JOB_ARGS, "per_device_eval_batch_size": 3, "num_train_epochs": 1, **kwargs}
    )
    return Trainer(
        model=model if model is not None else tiny_bert(),
        args=args,
        train_dataset=train,
        eval_dataset=ToyClassification(7, seed=2) if eval_ds == "default" else eval_ds,
        **trainer_kwargs,
    )


def _numpy(x: Any) -> Any:
    """A detached numpy copy of a nested structure (tensors and arrays), keeping the container types."""
    if isinstance(x, torch.Tensor):
        return ("tensor", x.detach().cpu().float().numpy().copy() if x.is_floating_point() else x.cpu().numpy())
    if isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, (list, tuple)):
        return type(x)(_numpy(v) for v in x)
    if isinstance(x, dict):
        return {k: _numpy(v) for k, v in x.items()}
    return x


def _blank_speed(metrics: dict) -> dict:
    return {k: (None if any(s in k for s in SPEED_KEYS) else v) for k, v in metrics.items()}


def eval_logs(trainer: Any) -> list[dict]:
    """The evaluation entries of `log_history` (any prefix), speed values blanked."""
    entries = trainer.state.log_history
    return [_blank_speed(e) for e in entries if "train_runtime" not in e and any(k.endswith("_runtime") for k in e)]


def _leaves(x: Any) -> list[np.ndarray]:
    if isinstance(x, (list, tuple)):
        return [leaf for v in x for leaf in _leaves(v)]
    if isinstance(x, dict):
        return [leaf for v in x.values() for leaf in _leaves(v)]
    if isinstance(x, torch.Tensor):
        return [x.detach().cpu().double().numpy()]
    return [np.asarray(x, dtype=np.float64)] if x is not None else []


class Recorder:
    """A `compute_metrics` that records every `EvalPrediction` and returns metrics derived from all of it."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, p: Any, compute_result: bool = True) -> dict:
        fields = ("predictions", "label_ids", "losses", "inputs")
        self.calls.append({"compute_result": compute_result, **{f: _numpy(getattr(p, f)) for f in fields}})
        metrics = {"calls": len(self.calls)}
        for f in fields:
            leaves = _leaves(getattr(p, f))
            if leaves:
                metrics[f"{f}_sum"] = float(sum(np.nansum(leaf) for leaf in leaves))
                metrics[f"{f}_rows"] = int(sum(leaf.shape[0] if leaf.ndim else 1 for leaf in leaves))
        return metrics


def _argmax(logits: torch.Tensor, labels: Any) -> torch.Tensor:
    return logits.argmax(-1)


# ---- standalone evaluate / predict --------------------------------------------------------------------------


def _standalone(impl: str, tmp_path: Path) -> dict[str, Any]:
    recorder = Recorder()
    trainer = make_trainer(impl, tmp_path, compute_metrics=recorder)
    results: dict[str, Any] = {"training_before": trainer.model.training}
    results["evaluate"] = _blank_speed(trainer.evaluate())
    results["training_after"] = trainer.model.training
    two = {"a": ToyClassification(5, seed=3), "b": ToyClassification(4, seed=4)}
    results["evaluate_dict"] = _blank_speed(trainer.evaluate(two))
    results["evaluate_prefix"] = _blank_speed(trainer.evaluate(ToyClassification(4, seed=5), metric_key_prefix="dev"))
    out = trainer.predict(ToyClassification(7, seed=2))
    results["predict"] = (out.predictions, out.label_ids, _blank_speed(out.metrics))
    out = trainer.predict(NoLabels(5, seed=6))
    results["predict_no_labels"] = (out.predictions, out.label_ids, _blank_speed(out.metrics))
    results["calls"] = recorder.calls
    results["log"] = eval_logs(trainer)
    return results


def test_standalone_evaluate_and_predict_match_transformers(tmp_path: Path) -> None:
    hf, hfl = _standalone("hf", tmp_path), _standalone("hfl", tmp_path)
    assert_same(hf, hfl)
    epoch = {"epoch"} if TrainerState().epoch is not None else set()  # `state.epoch` is None before 5.3
    assert set(hfl["evaluate"]) >= {"eval_loss", "eval_predictions_sum", "eval_runtime", *epoch}
    assert {"eval_a_loss", "eval_b_loss", "eval_a_calls"} <= set(hfl["evaluate_dict"])
    assert "dev_loss" in hfl["evaluate_prefix"]
    predictions, label_ids, metrics = hfl["predict"]
    assert predictions.shape == (7, 3) and label_ids.shape == (7,) and "test_loss" in metrics
    predictions, label_ids, metrics = hfl["predict_no_labels"]
    assert predictions.shape == (5, 3) and label_ids is None and "test_loss" not in metrics
    assert len(hfl["log"]) == 4  # evaluate, two datasets, custom prefix; predict does not log


def test_evaluate_after_training_matches_transformers(tmp_path: Path) -> None:
    results = []
    for impl in ("hf", "hfl"):
        recorder = Recorder()
        trainer = make_trainer(impl, tmp_path, train=ToyClassification(12, seed=1), compute_metrics=recorder)
        trainer.train()
        metrics = _blank_speed(trainer.evaluate())
        out = trainer.predict(ToyClassification(7, seed=2))
        results.append((metrics, out.predictions, recorder.calls, eval_logs(trainer), trainer.model.training))
    assert_same(*results)
    assert results[1][0]["epoch"] == 1.0


# ---- metric options -----------------------------------------------------------------------------------------

OPTIONS: dict[str, dict[str, Any]] = {
    "preprocess-logits": dict(preprocess_logits_for_metrics=_argmax),
    "include-inputs-and-loss": dict(include_for_metrics=["inputs", "loss"]),
    "batch-eval-metrics": dict(batch_eval_metrics=True, include_for_metrics=["loss"]),
    "prediction-loss-only": dict(prediction_loss_only=True),
    "eval-accumulation-steps": dict(eval_accumulation_steps=2, include_for_metrics=["inputs"]),
    "no-concat": dict(eval_do_concat_batches=False, include_for_metrics=["inputs", "loss"]),
    "eval-batch-size-1": dict(per_device_eval_batch_size=1),
    "eval-batch-size-larger-than-set": dict(per_device_eval_batch_size=16),
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_metric_options_match_transformers(option: str, tmp_path: Path) -> None:
    results = []
    for impl in ("hf", "hfl"):
        recorder = Recorder()
        trainer = make_trainer(impl, tmp_path, compute_metrics=recorder, **OPTIONS[option])
        metrics = _blank_speed(trainer.evaluate())
        out = trainer.predict(ToyClassification(5, seed=3))
        results.append((metrics, out.predictions, out.label_ids, _blank_speed(out.metrics), recorder.calls))
    assert_same(*results)
    metrics, predictions, _, _, calls = results[1]
    assert OPTION_CHECKS[option](metrics, predictions, calls), f"{option}: {metrics}"


OPTION_CHECKS: dict[str, Any] = {
    "preprocess-logits": lambda m, p, c: p.shape == (5,) and p.dtype == np.int64,
    "include-inputs-and-loss": lambda m, p, c: c[0]["inputs"].shape == (7, 8) and c[0]["losses"].shape == (7,),
    "batch-eval-metrics": lambda m, p, c: (
        [x["compute_result"] for x in c] == [False, False, True, False, True]
        and c[0]["losses"][0] == "tensor"
        and p.shape == (5, 3)
    ),
    "prediction-loss-only": lambda m, p, c: c == [] and p is None and "eval_loss" in m,
    "eval-accumulation-steps": lambda m, p, c: c[0]["inputs"].shape == (7, 8) and p.shape == (5, 3),
    "no-concat": lambda m, p, c: isinstance(p, list) and len(p) == 2 and len(c[0]["losses"]) == 3,
    "eval-batch-size-1": lambda m, p, c: m["eval_predictions_rows"] == 7 and p.shape == (5, 3),
    "eval-batch-size-larger-than-set": lambda m, p, c: m["eval_predictions_rows"] == 7 and p.shape == (5, 3),
}


def test_v4_include_inputs_for_metrics_matches_include_for_metrics(tmp_path: Path) -> None:
    recorders = [Recorder(), Recorder()]
    # One trainer at a time: building TrainingArguments resets accelerate's global state under a live HF trainer.
    hf = _blank_speed(
        make_trainer("hf", tmp_path, compute_metrics=recorders[0], include_for_metrics=["inputs"]).evaluate()
    )
    hfl = make_trainer("hfl", tmp_path, compute_metrics=recorders[1], include_inputs_for_metrics=True)
    assert hfl.args.include_for_metrics == ["inputs"]
    assert_same(hf, _blank_speed(hfl.evaluate()))
    assert_same(recorders[0].calls, recorders[1].calls)
    assert recorders[1].calls[0]["inputs"].shape == (7, 8)


class IterableToy(torch.utils.data.IterableDataset):
    """`ToyClassification` streamed, without a length."""

    def __init__(self, n: int, seed: int) -> None:
        self.data = ToyClassification(n, seed=seed)

    def __iter__(self) -> Any:
        return (self.data[i] for i in range(len(self.data)))


@pytest.mark.parametrize("batch_metrics", [False, True])
def test_iterable_eval_dataset_matches_transformers(batch_metrics: bool, tmp_path: Path) -> None:
    results = []
    for impl in ("hf", "hfl"):
        recorder = Recorder()
        trainer = make_trainer(
            impl, tmp_path, eval_ds=IterableToy(7, seed=2), compute_metrics=recorder, batch_eval_metrics=batch_metrics
        )
        out = trainer.predict(IterableToy(5, seed=3))
        results.append((_blank_speed(trainer.evaluate()), out.predictions, _blank_speed(out.metrics), recorder.calls))
    assert_same(*results)
    flags = [call["compute_result"] for call in results[1][3]]
    assert flags == ([False, True, False, False, True] if batch_metrics else [True, True])


def test_label_names_and_tuple_outputs_match_transformers(tmp_path: Path) -> None:
    results = []
    for impl in ("hf", "hfl"):
        recorder = Recorder()
        trainer = make_trainer(
            impl, tmp_path, model=TupleModel(), eval_ds=TargetData(7, seed=2), compute_metrics=recorder
        )
        no_label_names = (_blank_speed(trainer.evaluate()), trainer.predict(TargetData(5)).predictions)
        trainer = make_trainer(
            impl,
            tmp_path,
            model=TupleModel(),
            eval_ds=TargetData(7, seed=2),
            compute_metrics=recorder,
            label_names=["target"],
        )
        out = trainer.predict(TargetData(5))
        out = (out.predictions, out.label_ids, _blank_speed(out.metrics))
        results.append((no_label_names, _blank_speed(trainer.evaluate()), out, recorder.calls))
    assert_same(*results)
    (metrics, _), with_labels, out, _ = results[1]
    assert "eval_loss" not in metrics  # HF: no label among `label_names` -> no loss, no compute_metrics
    assert "eval_loss" in with_labels and "eval_predictions_rows" in with_labels
    predictions, label_ids, _ = out
    assert isinstance(predictions, tuple) and len(predictions) == 2 and label_ids.shape == (5,)


def test_ignore_keys_on_dict_outputs_match_transformers(tmp_path: Path) -> None:
    results = []
    for impl in ("hf", "hfl"):
        model = tiny_bert()
        model.config.output_hidden_states = True
        recorder = Recorder()
        trainer = make_trainer(impl, tmp_path, model=model, compute_metrics=recorder)
        full = trainer.predict(ToyClassification(5, seed=3))
        logits_only = trainer.predict(ToyClassification(5, seed=3), ignore_keys=["hidden_states"])
        metrics = _blank_speed(trainer.evaluate(ignore_keys=["hidden_states"]))
        results.append((full.predictions, logits_only.predictions, metrics, recorder.calls))
    assert_same(*results)
    full, logits_only = results[1][0], results[1][1]
    assert isinstance(full, tuple) and len(full[1]) == 3  # logits, (embeddings + 2 layers)
    assert isinstance(logits_only, np.ndarray) and logits_only.shape == (5, 3)


@pytest.mark.parametrize("concat", [True, False])
def test_variable_length_predictions_are_padded_like_transformers(concat: bool, tmp_path: Path) -> None:
    results = []
    for impl in ("hf", "hfl"):
        recorder = Recorder()
        trainer = make_trainer(
            impl,
            tmp_path,
            model=_token_bert(),
            eval_ds=TokenData(7, seed=2),
            data_collator=DataCollatorForTokenClassification(_tokenizer(tmp_path)),
            compute_metrics=recorder,
            include_for_metrics=["inputs"],
            eval_do_concat_batches=concat,
        )
        out = trainer.predict(TokenData(7, seed=2))
        results.append((_blank_speed(trainer.evaluate()), out.predictions, out.label_ids, recorder.calls))
    assert_same(*results)
    predictions, labels = results[1][1], results[1][2]
    if concat:
        lengths = [len(item["input_ids"]) for item in TokenData(7, seed=2).items]
        assert predictions.shape == (7, max(lengths), 3) and labels.shape == (7, max(lengths))
        short = int(np.argmin(lengths))
        assert (labels[short, lengths[short] :] == -100).all()
        batch_widths = [max(lengths[i : i + 3]) for i in range(0, 7, 3)]
        assert len(set(batch_widths)) > 1, "the batches must have different widths to exercise the padding"
    else:
        assert isinstance(predictions, list) and len(predictions) == 3


class DtypeProbe(TrainerCallback):
    """Records the parameter dtype and train mode at each step start and evaluation."""

    def __init__(self, out: list) -> None:
        self.out = out

    def on_step_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.out.append(("step", state.global_step, model.training, str(next(model.parameters()).dtype)))

    def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.out.append(("evaluate", state.global_step, model.training, str(next(model.parameters()).dtype)))

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.out.append(("optimizer_step", state.global_step, model.training, str(next(model.parameters()).dtype)))


@pytest.mark.parametrize("flag", ["fp16_full_eval", "bf16_full_eval"])
def test_full_eval_dtypes_match_transformers(flag: str, tmp_path: Path) -> None:
    results = []
    for impl in ("hf", "hfl"):
        trainer = make_trainer(
            impl,
            tmp_path,
            train=ToyClassification(8, seed=1),
            eval_strategy="epoch",
            compute_metrics=Recorder(),
            **{flag: True},
        )
        dtypes = []
        trainer.add_callback(DtypeProbe(dtypes))
        trainer.train()
        dtypes.append(("after_train", str(next(trainer.model.parameters()).dtype)))
        metrics = _blank_speed(trainer.evaluate())
        dtypes.append(("after_evaluate", str(next(trainer.model.parameters()).dtype)))
        results.append((eval_logs(trainer), metrics, dtypes))
    assert_same(*results)
    half = "torch.float16" if flag == "fp16_full_eval" else "torch.bfloat16"
    dtypes = results[1][2]
    assert ("evaluate", 2, False, "torch.float32") in dtypes, "no cast during training"
    assert dtypes[-1] == ("after_evaluate", half) and ("after_train", "torch.float32") in dtypes


# ---- evaluation during training ------------------------------------------------------------------------------


DURING_TRAINING: dict[str, dict[str, Any]] = {
    "dict-eval-sets-steps": dict(
        eval_ds={"a": ToyClassification(5, seed=3), "b": ToyClassification(4, seed=4)},
        eval_strategy="steps",
        eval_steps=2,
    ),
    "ga2-delay-on-start": dict(
        gradient_accumulation_steps=2, eval_strategy="steps", eval_steps=1, eval_delay=2, eval_on_start=True
    ),
    "epoch-batch-metrics-evaluate-first": dict(
        eval_strategy="epoch", num_train_epochs=2, batch_eval_metrics=True, evaluate_first=True
    ),
}


@pytest.mark.parametrize("case", sorted(DURING_TRAINING))
def test_eval_during_training_matches_transformers(case: str, tmp_path: Path) -> None:
    results = []
    for impl in ("hf", "hfl"):
        recorder, probes, kwargs = Recorder(), [], dict(DURING_TRAINING[case])
        evaluate_first = kwargs.pop("evaluate_first", False)
        trainer = make_trainer(impl, tmp_path, train=ToyClassification(16, seed=1), compute_metrics=recorder, **kwargs)
        trainer.add_callback(DtypeProbe(probes))
        if evaluate_first:
            trainer.evaluate()
        trainer.train()
        results.append((eval_logs(trainer), recorder.calls, probes, trainer.state.global_step))
    assert_same(*results)
    logs, _, probes, _ = results[1]
    assert len(logs) >= 2
    # HF leaves the model in eval mode after evaluating; `training_step` switches it back before the forward.
    assert all(training for kind, _, training, _ in probes if kind == "optimizer_step"), "trained in train mode"
    assert any(kind == "step" and not training for kind, _, training, _ in probes), "HF: eval mode until the forward"
    if "evaluate_first" in DURING_TRAINING[case]:
        assert all("eval_model_preparation_time" in e for e in logs)


# ---- distributed -------------------------------------------------------------------------------------------


def _accuracy(p: Any) -> dict:
    return {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean()), "n": int(p.label_ids.shape[0])}


DDP_SETS = {"seven": (7, 2), "five": (5, 3)}  # (size, seed): 7 ends in a half-completed batch, 5 in a filler one


def _ddp_rank(rank: int, out: str) -> dict:
    """One of 2 gloo ranks: evaluate and predict with our Trainer."""
    from hf_lightning import Trainer

    args = make_args("hfl", out, per_device_eval_batch_size=2)
    sizes: list[int] = []

    def metrics(p: Any) -> dict:
        sizes.append(int(p.label_ids.shape[0]))
        return _accuracy(p)

    eval_sets = {name: ToyClassification(n, seed=seed) for name, (n, seed) in DDP_SETS.items()}
    trainer = Trainer(model=tiny_bert(), args=args, eval_dataset=eval_sets, compute_metrics=metrics)
    result = trainer.evaluate()
    pred = trainer.predict(ToyClassification(7, seed=2))
    np.save(os.path.join(out, f"pred{rank}.npy"), pred.predictions)
    return {"metrics": result, "test": pred.metrics, "sizes": sizes, "world": args.world_size}


def test_ddp_evaluation_counts_every_sample_once(tmp_path: Path) -> None:
    ranks = run_gloo_ranks(_ddp_rank, tmp_path, timeout=60)
    assert [r["world"] for r in ranks] == [2, 2]

    eval_sets = {name: ToyClassification(n, seed=seed) for name, (n, seed) in DDP_SETS.items()}
    single = make_trainer("hfl", tmp_path, per_device_eval_batch_size=2, eval_ds=eval_sets, compute_metrics=_accuracy)
    expected = _blank_speed(single.evaluate())
    expected_pred = single.predict(ToyClassification(7, seed=2))
    assert expected["eval_seven_n"] == 7 and expected["eval_five_n"] == 5
    for r in range(2):
        assert ranks[r]["sizes"] == [7, 5, 7], "compute_metrics sees every sample exactly once"
        assert _blank_speed(ranks[r]["metrics"]) == expected
        assert _blank_speed(ranks[r]["test"]) == _blank_speed(expected_pred.metrics)
        np.testing.assert_array_equal(np.load(tmp_path / f"pred{r}.npy"), expected_pred.predictions)


# ---- bad input ---------------------------------------------------------------------------------------------


def test_metric_for_best_model_missing_names_it(tmp_path: Path) -> None:
    for impl in ("hf", "hfl"):
        trainer = make_trainer(
            impl,
            tmp_path,
            train=ToyClassification(8, seed=1),
            eval_strategy="epoch",
            metric_for_best_model="f1",
            compute_metrics=Recorder(),
        )
        with pytest.raises(KeyError, match="eval_f1"):
            trainer.train()


def test_compute_metrics_returning_non_dict_is_a_type_error(tmp_path: Path) -> None:
    trainer = make_trainer("hfl", tmp_path, compute_metrics=lambda p: 0.5)
    with pytest.raises(TypeError, match="compute_metrics.*dict.*float"):
        trainer.evaluate()


def test_compute_metrics_returning_none_fails_like_transformers(tmp_path: Path) -> None:
    """transformers fails on it ("'NoneType' object does not support item assignment"); we fail naming it."""
    with pytest.raises(TypeError):
        make_trainer("hf", tmp_path, compute_metrics=lambda p: None).evaluate()
    with pytest.raises(TypeError, match="compute_metrics.*returned None"):
        make_trainer("hfl", tmp_path, compute_metrics=lambda p: None).evaluate()


def test_batch_eval_metrics_ending_with_none_gives_no_metrics_like_transformers(tmp_path: Path) -> None:
    def metrics(pred: Any, compute_result: bool) -> None:
        return None

    results = [
        make_trainer(impl, tmp_path, compute_metrics=metrics, batch_eval_metrics=True).evaluate()
        for impl in ("hf", "hfl")
    ]
    assert _blank_speed(results[0]) == _blank_speed(results[1])
    assert "eval_loss" in results[1]


@pytest.mark.parametrize("dataset", ["list", "torch"])
def test_empty_eval_dataset_evaluates_like_transformers(dataset: str, tmp_path: Path) -> None:
    """No samples: transformers returns speed metrics without a loss, logs them during training and predicts
    None; so do we (it used to be an error at construction)."""
    empty = [] if dataset == "list" else ToyClassification(0)
    results = {}
    for impl in ("hf", "hfl"):
        trainer = make_trainer(
            impl, tmp_path, train=ToyClassification(8), eval_ds=empty, eval_strategy="epoch", compute_metrics=_accuracy
        )
        trainer.train()
        metrics = trainer.evaluate()
        prediction = trainer.predict(empty)
        results[impl] = (
            [_blank_speed(e) for e in trainer.state.log_history],
            _blank_speed(metrics),
            prediction.predictions,
            prediction.label_ids,
            _blank_speed(prediction.metrics),
        )
    assert_same(results["hf"], results["hfl"])
    assert results["hfl"][1]["eval_samples_per_second"] is None and "eval_loss" not in results["hfl"][1]


def test_persistent_workers_reuse_the_eval_loader_like_transformers(tmp_path: Path) -> None:
    """One loader (and its worker) for every evaluation, during training and after, as transformers keeps it."""
    results = {}
    for impl in ("hf", "hfl"):
        trainer = make_trainer(
            impl,
            tmp_path,
            train=ToyClassification(8),
            eval_strategy="steps",
            eval_steps=1,
            max_steps=2,
            dataloader_num_workers=1,
            dataloader_persistent_workers=True,
        )
        trainer.train()
        loader = trainer.get_eval_dataloader()
        workers = loader._iterator  # the persistent workers' iterator, kept between evaluations
        metrics = trainer.evaluate()
        assert trainer.get_eval_dataloader() is loader and loader._iterator is workers is not None
        results[impl] = ([_blank_speed(e) for e in trainer.state.log_history], _blank_speed(metrics))
    assert results["hf"] == results["hfl"]
    other = ToyClassification(3, seed=5)
    assert trainer.get_eval_dataloader(other) is not loader  # a dataset passed in: not filed as "eval"
    assert trainer.get_eval_dataloader() is loader


def test_persistent_workers_without_workers_is_refused(tmp_path: Path) -> None:
    """torch's DataLoader refuses it, so transformers fails when it builds its first loader; we fail naming both."""
    with pytest.raises(ValueError, match="persistent_workers"):
        make_trainer("hf", tmp_path, train=ToyClassification(4), dataloader_persistent_workers=True).train()
    with pytest.raises(ValueError, match="`dataloader_persistent_workers`=True needs `dataloader_num_workers`"):
        make_args("hfl", str(tmp_path), dataloader_persistent_workers=True)


def test_eval_without_labels_skips_metrics_like_transformers(tmp_path: Path, caplog: Any) -> None:
    """HF silently skips `compute_metrics` (and the loss) when the batches carry none of `label_names`; we mirror
    that, with a warning naming `label_names`."""
    results = []
    for impl in ("hf", "hfl"):
        recorder = Recorder()
        trainer = make_trainer(impl, tmp_path, eval_ds=NoLabels(7, seed=2), compute_metrics=recorder)
        with caplog.at_level("WARNING", logger="hf_lightning"):
            results.append((_blank_speed(trainer.evaluate()), recorder.calls))
    assert_same(*results)
    assert "eval_loss" not in results[1][0] and results[1][1] == []
    assert "label_names" in caplog.text


def test_eval_strategy_without_eval_dataset_fails_before_training(tmp_path: Path) -> None:
    for impl in ("hf", "hfl"):
        with pytest.raises(ValueError, match="eval_dataset"):
            make_trainer(impl, tmp_path, train=ToyClassification(8), eval_ds=None, eval_strategy="steps")


# ---- memory: nothing kept per batch ------------------------------------------------------------------------


class LiveTensors(TrainerCallback):
    """Counts the tensors alive after the 3rd and the 11th prediction steps."""

    def __init__(self) -> None:
        self.steps = 0
        self.counts: list[int] = []

    def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        import gc

        self.steps += 1
        if self.steps in (3, 11):
            gc.collect()
            self.counts.append(sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor)))


def test_evaluation_keeps_no_per_batch_tensors(tmp_path: Path) -> None:
    """Each batch's loss, logits and labels are copied into preallocated arrays and dropped, so the tensors alive
    during evaluation do not grow with the batches. (Keeping every batch's small tensors while each forward pass
    frees its activations fragmented the heap: RSS grew by ~3 KB per evaluated sample.)"""
    probe = LiveTensors()
    trainer = make_trainer(
        "hfl",
        tmp_path,
        eval_ds=ToyClassification(24, seed=2),
        compute_metrics=Recorder(),
        callbacks=[probe],
        per_device_eval_batch_size=2,
    )
    metrics = trainer.evaluate()
    assert metrics["eval_predictions_rows"] == 24 and probe.steps == 12
    assert probe.counts[0] == probe.counts[1], f"tensors alive after steps 3 and 11: {probe.counts}"
