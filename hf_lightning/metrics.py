"""Ready-made `compute_metrics` functions for `Trainer(compute_metrics=...)`, computed with torchmetrics.

    from hf_lightning.metrics import classification_metrics
    trainer = Trainer(..., compute_metrics=classification_metrics(num_labels=5))
    trainer.evaluate()  # {..., "eval_accuracy": 0.97, "eval_f1": 0.97}

    from hf_lightning.metrics import rouge_metrics  # or bleu_metrics, for translation
    trainer = Seq2SeqTrainer(..., args=Seq2SeqTrainingArguments(..., predict_with_generate=True),
                             compute_metrics=rouge_metrics(tokenizer))
    trainer.evaluate()  # {..., "eval_rouge1": 41.2, "eval_rouge2": 18.9, "eval_rougeL": 38.5, "eval_gen_len": 12.3}

The returned callables are plain picklable objects (not closures), so they also travel to spawned processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import binary_f1_score, multiclass_accuracy, multiclass_f1_score
from torchmetrics.functional.text import sacre_bleu_score
from torchmetrics.functional.text.rouge import rouge_score

IGNORE_INDEX = -100
_AVERAGES = ("macro", "micro", "weighted", "binary")

__all__ = [
    "BleuMetrics",
    "ClassificationMetrics",
    "RougeMetrics",
    "bleu_metrics",
    "classification_metrics",
    "rouge_metrics",
]


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


class _GenerationMetrics:
    """Decodes generated ids and labels the way transformers' summarization/translation examples do: -100 becomes
    the pad token, special tokens are skipped, texts are stripped; `gen_len` is the mean count of non-pad ids."""

    def __init__(self, tokenizer: Any):
        if not callable(getattr(tokenizer, "batch_decode", None)):
            raise ValueError(f"tokenizer must be a transformers tokenizer (with batch_decode), got {tokenizer!r}")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("tokenizer has neither a pad_token_id nor an eos_token_id to replace -100 with")
        self.tokenizer = tokenizer
        self.pad_token_id = int(pad)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.tokenizer).__name__})"

    def _ids(self, value: Any) -> np.ndarray:
        ids = _first(value)
        if np.issubdtype(ids.dtype, np.floating) and ids.ndim == 3:  # logits (predict_with_generate unset)
            ids = ids.argmax(axis=-1)
        if ids.ndim == 1:
            ids = ids[None, :]
        return np.where(ids != IGNORE_INDEX, ids, self.pad_token_id).astype(np.int64)

    def decode(self, eval_pred: Any) -> tuple[list[str], list[str], float]:
        """(predicted texts, reference texts, mean generated length) of an `EvalPrediction`."""
        predictions, label_ids = _split(eval_pred)
        if label_ids is None:
            raise ValueError("compute_metrics needs labels: the eval dataset has no `labels` column")
        preds, labels = self._ids(predictions), self._ids(label_ids)
        decoded_preds = [t.strip() for t in self.tokenizer.batch_decode(preds, skip_special_tokens=True)]
        decoded_labels = [t.strip() for t in self.tokenizer.batch_decode(labels, skip_special_tokens=True)]
        gen_len = float(np.mean([np.count_nonzero(p != self.pad_token_id) for p in preds])) if len(preds) else 0.0
        return decoded_preds, decoded_labels, gen_len


class RougeMetrics(_GenerationMetrics):
    """`compute_metrics` for summarization: ROUGE F-measures x 100 (`rouge1`, `rouge2`, `rougeL`) and `gen_len`,
    rounded to 4 digits like transformers' `run_summarization.py`.

    `use_stemmer=True` (Porter stemming, as the HF example) and the `"rougeLsum"` key need `nltk` (and, for
    `rougeLsum`, its `punkt_tab` data, which torchmetrics downloads); the defaults need neither.
    """

    def __init__(
        self, tokenizer: Any, rouge_keys: tuple[str, ...] = ("rouge1", "rouge2", "rougeL"), use_stemmer: bool = False
    ):
        super().__init__(tokenizer)
        if isinstance(rouge_keys, str):
            rouge_keys = (rouge_keys,)
        if not rouge_keys:
            raise ValueError("rouge_keys must name at least one ROUGE variant, e.g. ('rouge1', 'rougeL')")
        self.rouge_keys = tuple(rouge_keys)
        self.use_stemmer = use_stemmer

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        preds, refs, gen_len = self.decode(eval_pred)
        result: dict[str, float] = {}
        if preds:
            scores = rouge_score(preds, refs, rouge_keys=self.rouge_keys, use_stemmer=self.use_stemmer)
            result = {key: float(scores[f"{key}_fmeasure"]) * 100 for key in self.rouge_keys}
        result["gen_len"] = gen_len
        return {k: round(v, 4) for k, v in result.items()}


class BleuMetrics(_GenerationMetrics):
    """`compute_metrics` for translation: corpus SacreBLEU x 100 (`bleu`, 13a tokenisation, one reference per
    sample) and `gen_len`, rounded to 4 digits like transformers' `run_translation.py`."""

    def __init__(self, tokenizer: Any, lowercase: bool = False):
        super().__init__(tokenizer)
        self.lowercase = lowercase

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        preds, refs, gen_len = self.decode(eval_pred)
        bleu = float(sacre_bleu_score(preds, [[r] for r in refs], tokenize="13a", lowercase=self.lowercase)) * 100
        return {"bleu": round(bleu, 4), "gen_len": round(gen_len, 4)}


def rouge_metrics(
    tokenizer: Any, rouge_keys: tuple[str, ...] = ("rouge1", "rouge2", "rougeL"), use_stemmer: bool = False
) -> Callable[[Any], dict[str, float]]:
    """`compute_metrics` returning ROUGE F-measures x 100 and `gen_len` from generated ids; see `RougeMetrics`."""
    return RougeMetrics(tokenizer, rouge_keys=rouge_keys, use_stemmer=use_stemmer)


def bleu_metrics(tokenizer: Any, lowercase: bool = False) -> Callable[[Any], dict[str, float]]:
    """`compute_metrics` returning SacreBLEU x 100 and `gen_len` from generated ids; see `BleuMetrics`."""
    return BleuMetrics(tokenizer, lowercase=lowercase)
