"""Python function calls per optimiser step of hf_lightning's tiny benchmark job: a cost that does not move with the
machine's load (wall time on a shared VM does), to check that code added around the loop costs nothing per step.

    PYTHONPATH=<checkout> .venv/bin/python benchmarks/calls_per_step.py              # the features off
    PYTHONPATH=<checkout> .venv/bin/python benchmarks/calls_per_step.py --log_throughput

The job is `run.py`'s tiny one (BERT hidden 32, 2 layers, seq 32, batch 8, logging every 10); two runs of 20 and 120
steps are profiled with cProfile and the difference divided by 100, so start-up and the end of training cancel out.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import ToyClassification  # noqa: E402


def calls(steps: int, **extra: object) -> int:
    from hf_lightning import Trainer, TrainingArguments

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
    )
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = TrainingArguments(
            out,
            per_device_train_batch_size=8,
            max_steps=steps,
            logging_steps=10,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            seed=42,
            **extra,
        )
        trainer = Trainer(
            BertForSequenceClassification(config),
            args,
            train_dataset=ToyClassification(800, seq_len=32, vocab=100, seed=1),
        )
        profile = cProfile.Profile()
        profile.enable()
        trainer.train()
        profile.disable()
    return pstats.Stats(profile).total_calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log_throughput", action="store_true")
    options = parser.parse_args()
    extra = {"log_throughput": True} if options.log_throughput else {}
    per_step = (calls(120, **extra) - calls(20, **extra)) / 100
    import hf_lightning

    print(f"{Path(hf_lightning.__file__).parent}: {per_step:.2f} calls per optimiser step")


if __name__ == "__main__":
    main()
