"""Ready-made `compute_metrics` functions for `Trainer(compute_metrics=...)`, computed with torchmetrics.

    from hf_lightning.metrics import classification_metrics
    trainer = Trainer(..., compute_metrics=classification_metrics(num_labels=5))
    trainer.evaluate()  # {..., "eval_accuracy": 0.97, "eval_f1": 0.97}

The returned callables are plain picklable objects (not closures), so they also travel to spawned processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import binary_f1_score, multiclass_accuracy, multiclass_f1_score

IGNORE_INDEX = -100
_AVERAGES = ("macro", "micro", "weighted", "binary")

__all__ = ["ClassificationMetrics", "classification_metrics"]


def _first(value: Any) -> np.ndarray:
    """Models returning several outputs give a tuple of arrays; the logits (or labels) are the first item."""
    while isinstance(value, tuple) or (
        isinstance(value, list) and value and isinstance(value[0], (np.ndarray, torch.Tensor, tuple))
    ):
        if len(value) == 0:
            raise ValueError("compute_metrics got an empty tuple of predictions/labels")
        value = value[0]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = (value.float() if value.is_floating_point() else value).numpy()
    return np.asarray(value)


def _split(eval_pred: Any) -> tuple[Any, Any]:
    if hasattr(eval_pred, "predictions") and hasattr(eval_pred, "label_ids"):
        return eval_pred.predictions, eval_pred.label_ids
    predictions, label_ids = eval_pred  # a plain (predictions, label_ids) pair
    return predictions, label_ids


class ClassificationMetrics:
    """`compute_metrics` for single-label classification: `{"accuracy": float, "f1": float}`.

    Predictions are logits (`(..., num_labels)`, argmax on the last axis) or already class ids (same shape as the
    labels, e.g. from `preprocess_logits_for_metrics`). Positions whose label is -100 are ignored, so the same object
    works for token classification. Accuracy is the fraction of correct predictions; F1 uses `average`
    (`"macro"`, `"micro"`, `"weighted"`, or `"binary"` for two labels, positive class 1). As in scikit-learn, a
    class absent from both labels and predictions does not count in the macro/weighted F1.
    """

    def __init__(self, num_labels: int, average: str = "macro"):
        if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 2:
            raise ValueError(f"num_labels must be an int >= 2, got {num_labels!r}")
        if average not in _AVERAGES:
            raise ValueError(f"average must be one of {_AVERAGES}, got {average!r}")
        if average == "binary" and num_labels != 2:
            raise ValueError(f"average='binary' needs num_labels=2, got num_labels={num_labels}")
        self.num_labels = num_labels
        self.average = average

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_labels={self.num_labels}, average={self.average!r})"

    def _class_ids(self, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if predictions.shape == labels.shape and not np.issubdtype(predictions.dtype, np.floating):
            return predictions.astype(np.int64)
        if predictions.ndim == labels.ndim + 1 and predictions.shape[-1] == self.num_labels:
            return predictions.argmax(axis=-1).astype(np.int64)
        raise ValueError(
            f"predictions of shape {predictions.shape} do not match labels of shape {labels.shape}: expected logits "
            f"of shape {labels.shape + (self.num_labels,)} or class ids of shape {labels.shape}"
        )

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        predictions, label_ids = _split(eval_pred)
        if label_ids is None:
            raise ValueError("compute_metrics needs labels: the eval dataset has no `labels`/`label` column")
        labels = _first(label_ids).astype(np.int64)
        preds = self._class_ids(_first(predictions), labels)
        keep = labels != IGNORE_INDEX
        preds_t = torch.from_numpy(preds[keep].reshape(-1))
        labels_t = torch.from_numpy(labels[keep].reshape(-1))
        if labels_t.numel() == 0:
            return {"accuracy": math.nan, "f1": math.nan}
        accuracy = multiclass_accuracy(preds_t, labels_t, num_classes=self.num_labels, average="micro")
        if self.average == "binary":
            f1 = binary_f1_score(preds_t, labels_t)
        else:
            f1 = multiclass_f1_score(preds_t, labels_t, num_classes=self.num_labels, average=self.average)
        return {"accuracy": float(accuracy), "f1": float(f1)}


def classification_metrics(num_labels: int, average: str = "macro") -> Callable[[Any], dict[str, float]]:
    """`compute_metrics` returning `{"accuracy": ..., "f1": ...}` (plain floats); see `ClassificationMetrics`."""
    return ClassificationMetrics(num_labels, average=average)
