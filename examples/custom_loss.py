"""A `Trainer` subclass with its own `compute_loss`: class-weighted cross-entropy for BBC News topics.

    python examples/custom_loss.py                           # MiniLM on BBC News, 1 epoch
    python examples/custom_loss.py --max_steps 5             # a smoke run

Overriding `compute_loss(model, inputs, return_outputs=False, num_items_in_batch=None)` is how Hugging Face users
change the training objective; `evaluate()` uses the same method for `eval_loss`. Here each topic's loss is weighted
by the inverse of its frequency in the training set, so rarer topics count as much as frequent ones (BBC News is
mildly unbalanced: 386 entertainment to 511 sport articles).
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, HfArgumentParser

from hf_lightning import PlotHistoryCallback, Trainer, TrainingArguments
from hf_lightning.metrics import classification_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bbc_news import LABEL_NAMES, classification_splits  # noqa: E402
from bundled_models import load_pretrained  # noqa: E402

TRAINING_DEFAULTS = {
    "output_dir": "outputs/custom_loss",
    "num_train_epochs": 1,
    "learning_rate": 1e-4,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 64,
    "warmup_steps": 0.1,
    "eval_strategy": "epoch",
    "logging_steps": 20,
    "save_strategy": "no",
    "seed": 42,
    "report_to": "none",
}


class WeightedLossTrainer(Trainer):
    """Cross-entropy with one weight per class."""

    def __init__(self, *args, class_weights: torch.Tensor, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
        weight = self.class_weights.to(outputs.logits.device)
        loss = F.cross_entropy(outputs.logits, labels, weight=weight)
        return (loss, outputs) if return_outputs else loss


def balanced_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """sklearn's "balanced" weights: n_samples / (n_classes * count of the class)."""
    counts = Counter(labels)
    return torch.tensor([len(labels) / (num_classes * counts[c]) for c in range(num_classes)], dtype=torch.float32)


@dataclass
class ScriptArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "Default: bundled all-MiniLM-L6-v2."})
    max_length: int = field(default=128, metadata={"help": "Articles are truncated to this many tokens."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N articles only."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N articles only."})


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = HfArgumentParser((ScriptArguments, TrainingArguments))
    parser.set_defaults(**TRAINING_DEFAULTS)
    script_args, training_args = parser.parse_args_into_dataclasses(args=argv)

    model, tokenizer = load_pretrained(
        AutoModelForSequenceClassification, script_args.model_name_or_path, num_labels=len(LABEL_NAMES)
    )
    train_ds, val_ds, test_ds = classification_splits(
        tokenizer,
        max_length=script_args.max_length,
        max_train_samples=script_args.max_train_samples,
        max_eval_samples=script_args.max_eval_samples,
    )
    weights = balanced_weights(train_ds["label"], len(LABEL_NAMES))
    print("Class weights:", {name: round(w, 3) for name, w in zip(LABEL_NAMES, weights.tolist())})

    trainer = WeightedLossTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        compute_metrics=classification_metrics(len(LABEL_NAMES)),
        callbacks=[PlotHistoryCallback()],
        class_weights=weights,
    )
    trainer.train()
    metrics = trainer.evaluate(test_ds, metric_key_prefix="test")
    print(f"Held-out test set: accuracy {metrics['test_accuracy']:.4f}, macro F1 {metrics['test_f1']:.4f}")
    return metrics


if __name__ == "__main__":
    main()
