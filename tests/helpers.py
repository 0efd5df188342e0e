"""Tiny models and datasets shared by the tests, and a runner for differential jobs.

`run_job` builds the same model and data from a seed and trains them with either `transformers.Trainer` or
`hf_lightning.Trainer`, so a test can compare weights, `log_history` and events between the two.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import BertConfig, BertForSequenceClassification


class ToyClassification(Dataset):
    """Random token sequences with a label derived from the tokens (learnable, deterministic)."""

    def __init__(self, n: int, seq_len: int = 8, vocab: int = 50, num_labels: int = 3, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(1, vocab, (n, seq_len), generator=g)
        self.labels = (self.input_ids.sum(-1) % num_labels).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "input_ids": self.input_ids[i],
            "attention_mask": torch.ones_like(self.input_ids[i]),
            "labels": self.labels[i],
        }


def tiny_bert(seed: int = 0, num_labels: int = 3, dropout: float = 0.1) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=num_labels,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return BertForSequenceClassification(config)


def run_job(
    impl: str,
    output_dir: str,
    n_train: int = 20,
    n_eval: int | None = None,
    callbacks: list | None = None,
    trainer_kwargs: dict | None = None,
    **arg_overrides: Any,
) -> Any:
    """Train the tiny BERT job with `impl` in {"hf", "hfl"}; returns the trainer."""
    if impl == "hf":
        from transformers import Trainer, TrainingArguments
    else:
        from hf_lightning import Trainer, TrainingArguments
    defaults = dict(
        output_dir=output_dir,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        num_train_epochs=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=42,
    )
    defaults.update(arg_overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = TrainingArguments(**defaults)
    model = tiny_bert()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=ToyClassification(n_train, seed=1),
        eval_dataset=ToyClassification(n_eval, seed=2) if n_eval else None,
        callbacks=callbacks,
        **(trainer_kwargs or {}),
    )
    trainer.train()
    return trainer


def train_logs(trainer: Any) -> list[dict]:
    """The per-step training entries of `log_history` (no eval, no summary)."""
    return [e for e in trainer.state.log_history if "loss" in e]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"weights differ at {k}: max diff {(sa[k] - sb[k]).abs().max()}"
