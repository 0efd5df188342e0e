"""hf_lightning.metrics against scikit-learn on seeded random data."""

import math
import pickle

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from hf_lightning.metrics import classification_metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _random_logits(n: int, num_labels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_labels, size=n)
    logits = rng.normal(size=(n, num_labels)).astype(np.float32)
    # Make about 60% of rows correct so the scores are not all near chance.
    good = rng.random(n) < 0.6
    logits[good, labels[good]] += 5.0
    return logits, labels


def _expected(logits: np.ndarray, labels: np.ndarray, average: str) -> dict[str, float]:
    keep = labels != -100
    y_true, y_pred = labels[keep], logits.argmax(-1)[keep]
    return {
        "accuracy": sklearn_metrics.accuracy_score(y_true, y_pred),
        "f1": sklearn_metrics.f1_score(y_true, y_pred, average=average),
    }


def _check(result: dict, expected: dict) -> None:
    assert set(result) == {"accuracy", "f1"}
    for key in result:
        assert type(result[key]) is float, (key, type(result[key]))
        assert result[key] == pytest.approx(expected[key], abs=1e-6), key


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
@pytest.mark.parametrize("num_labels", [2, 5])
def test_matches_sklearn(num_labels, average):
    logits, labels = _random_logits(257, num_labels, seed=num_labels)
    result = classification_metrics(num_labels, average=average)(EvalPrediction(predictions=logits, label_ids=labels))
    _check(result, _expected(logits, labels, average))


def test_default_is_macro():
    logits, labels = _random_logits(100, 4, seed=1)
    result = classification_metrics(4)(EvalPrediction(predictions=logits, label_ids=labels))
    _check(result, _expected(logits, labels, "macro"))


def test_binary_average():
    logits, labels = _random_logits(300, 2, seed=2)
    result = classification_metrics(2, average="binary")(EvalPrediction(predictions=logits, label_ids=labels))
    _check(result, _expected(logits, labels, "binary"))


def test_tuple_predictions_use_the_first_item():
    logits, labels = _random_logits(120, 3, seed=3)
    hidden = np.random.default_rng(3).normal(size=(120, 7, 8))  # e.g. hidden states returned beside the logits
    result = classification_metrics(3)(EvalPrediction(predictions=(logits, hidden), label_ids=labels))
    _check(result, _expected(logits, labels, "macro"))


def test_ignores_minus_100_labels():
    logits, labels = _random_logits(200, 5, seed=4)
    labels = labels.copy()
    labels[::7] = -100
    result = classification_metrics(5)(EvalPrediction(predictions=logits, label_ids=labels))
    _check(result, _expected(logits, labels, "macro"))


def test_token_classification_shapes():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(6, 11, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=(6, 11))
    labels[:, -3:] = -100  # padding
    result = classification_metrics(4)(EvalPrediction(predictions=logits, label_ids=labels))
    _check(result, _expected(logits.reshape(-1, 4), labels.reshape(-1), "macro"))


def test_class_ids_instead_of_logits_and_plain_pair():
    logits, labels = _random_logits(90, 3, seed=6)
    ids = logits.argmax(-1)
    result = classification_metrics(3)((ids, labels))
    _check(result, _expected(logits, labels, "macro"))


def test_torch_tensors_accepted():
    logits, labels = _random_logits(50, 3, seed=7)
    result = classification_metrics(3)(
        EvalPrediction(predictions=torch.from_numpy(logits).bfloat16(), label_ids=torch.from_numpy(labels))
    )
    assert result["accuracy"] == pytest.approx(
        sklearn_metrics.accuracy_score(labels, torch.from_numpy(logits).bfloat16().float().argmax(-1).numpy())
    )


def test_all_ignored_gives_nan():
    result = classification_metrics(3)(EvalPrediction(predictions=np.zeros((4, 3)), label_ids=np.full(4, -100)))
    assert math.isnan(result["accuracy"]) and math.isnan(result["f1"])


def test_picklable():
    metric = pickle.loads(pickle.dumps(classification_metrics(5, average="weighted")))
    logits, labels = _random_logits(40, 5, seed=8)
    _check(metric(EvalPrediction(predictions=logits, label_ids=labels)), _expected(logits, labels, "weighted"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_labels": 1}, "num_labels"),
        ({"num_labels": 3, "average": "none"}, "average"),
        ({"num_labels": 3, "average": "binary"}, "binary"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(**kwargs)


def test_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match="do not match labels"):
        classification_metrics(3)(EvalPrediction(predictions=np.zeros((4, 5)), label_ids=np.zeros(4, dtype=int)))


def test_absent_classes_left_out_of_macro_like_sklearn():
    logits, labels = _random_logits(150, 3, seed=9)
    padded = np.concatenate([logits, np.full((150, 2), -1e4, dtype=np.float32)], axis=1)  # classes 3, 4 never occur
    result = classification_metrics(5)(EvalPrediction(predictions=padded, label_ids=labels))
    _check(result, _expected(padded, labels, "macro"))
