"""Tests for hf_lightning.saved_args: a checkpoint's `training_args.bin` loads where only transformers is installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import transformers
from helpers import run_job

from hf_lightning import Seq2SeqTrainingArguments, TrainingArguments
from hf_lightning.saved_args import hf_args_for_saving

# Run in a fresh interpreter where importing hf_lightning or Lightning fails, as in a plain transformers environment.
LOADER = """
import importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("hf_lightning", "lightning", "lightning_fabric", "pytorch_lightning"):
            raise ImportError(f"{name} is not installed here")
        return None

sys.meta_path.insert(0, Block())
import torch

result = {}
for name, path in json.loads(sys.argv[1]).items():
    args = torch.load(path, weights_only=False)
    result[name] = {
        "class": type(args).__module__ + "." + type(args).__qualname__,
        "dict": args.to_dict(),
        "accelerator": getattr(args, "accelerator", None),
    }
assert not [m for m in sys.modules if m.split(".")[0] in ("hf_lightning", "lightning")]
print(json.dumps(result, default=str))
"""


def _load_without_hf_lightning(paths: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", LOADER, json.dumps(paths)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_training_args_bin_loads_without_hf_lightning_like_transformers_own(tmp_path: Path) -> None:
    """The same job saved by both trainers: each `training_args.bin` is a `transformers.TrainingArguments` that a
    process unable to import hf_lightning (or Lightning) loads, with the same values for transformers' fields."""
    job = dict(max_steps=2, save_strategy="steps", save_steps=2)
    for impl in ("hf", "hfl"):
        run_job(impl, str(tmp_path / impl), **job)
    loaded = _load_without_hf_lightning(
        {impl: str(tmp_path / impl / "checkpoint-2" / "training_args.bin") for impl in ("hf", "hfl")}
    )
    assert loaded["hf"]["class"] == loaded["hfl"]["class"] == "transformers.training_args.TrainingArguments"
    hf, hfl = loaded["hf"]["dict"], loaded["hfl"]["dict"]
    different = {k for k in hf if hf[k] != hfl.get(k)}
    assert different == {"output_dir"}, {k: (hf[k], hfl.get(k)) for k in different}
    assert loaded["hf"]["accelerator"] is None and loaded["hfl"]["accelerator"] == "auto"  # ours travel along


def test_seq2seq_arguments_are_saved_as_transformers_seq2seq_arguments(tmp_path: Path) -> None:
    args = Seq2SeqTrainingArguments(str(tmp_path), report_to="none", predict_with_generate=True, strategy="ddp")
    stored = hf_args_for_saving(args)
    assert type(stored) is transformers.Seq2SeqTrainingArguments
    assert stored.predict_with_generate and stored.strategy == "ddp" and stored.learning_rate == args.learning_rate
    path = tmp_path / "training_args.bin"
    torch.save(stored, path)
    loaded = _load_without_hf_lightning({"s2s": str(path)})["s2s"]
    assert loaded["class"] == "transformers.training_args_seq2seq.Seq2SeqTrainingArguments"
    assert loaded["dict"]["predict_with_generate"] is True


def test_live_arguments_are_left_alone(tmp_path: Path) -> None:
    args = TrainingArguments(str(tmp_path), report_to="none", profiler="simple")
    args._lightning_processes = (1, 0, 0)
    stored = hf_args_for_saving(args)
    assert type(args) is TrainingArguments and args._lightning_processes == (1, 0, 0)
    assert "_lightning_processes" not in vars(stored) and stored.profiler == "simple"
    plain = transformers.TrainingArguments(str(tmp_path), report_to="none")
    assert hf_args_for_saving(plain) is plain
