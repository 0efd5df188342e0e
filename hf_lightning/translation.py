"""`TrainingArguments` -> `lightning.Trainer`: the whole translation in one table.

Each row names the Lightning keyword, where its value comes from, and why. HF semantics that Lightning
expresses differently (step budget, accumulation, clipping, evaluation/save cadence, logging) are not
handed to Lightning at all: the HF loop in `hf_lightning.module` / `hf_lightning.Trainer` owns them, so
Lightning is told to stay out of the way (`max_steps=-1`, no clipping, no own checkpointing ...).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from lightning.pytorch.profilers import PassThroughProfiler

from hf_lightning.process_environment import accelerate_launch_refusals, lightning_devices, lightning_num_nodes
from hf_lightning.strategies import build_strategy
from hf_lightning.training_args import lightning_accelerator, lightning_precision


def _as_list(value: Any) -> list:
    if value is None or value is False or value is True:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


_NO_PROFILING = contextlib.nullcontext()


class _UnprofiledRun(PassThroughProfiler):
    """Lightning's default `PassThroughProfiler`, minus its cost: Lightning enters `profiler.profile(...)` around
    every hook call (~25 a step), and the base class makes each a fresh generator-based context manager."""

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return _NO_PROFILING


def _profiler(args: Any) -> Any:
    profiler = getattr(args, "profiler", None)
    return _UnprofiledRun() if profiler is None else profiler


TRANSLATION: list[tuple[str, Callable[[Any], Any], str]] = [
    ("accelerator", lightning_accelerator, "`use_cpu` forces 'cpu'; else the `accelerator` field ('auto')"),
    ("devices", lightning_devices, "`devices` field ('auto': the launcher's processes per node, else every device)"),
    ("num_nodes", lightning_num_nodes, "`num_nodes` field (1: the launcher's node count, e.g. torchrun, SLURM)"),
    ("strategy", build_strategy, "`strategy` / `fsdp` / `deepspeed` / `ddp_*` (see `hf_lightning.strategies`)"),
    ("precision", lightning_precision, "`precision` field, else fp16 -> '16-mixed', bf16 -> 'bf16-mixed', '32-true'"),
    ("plugins", lambda a: a.plugins, "`plugins` field"),
    ("profiler", _profiler, "`profiler` field; unset -> a pass-through profiler that adds no per-hook cost"),
    ("max_epochs", lambda a: -1, "HF's epoch budget (fractional epochs) is enforced by the HF loop"),
    ("max_steps", lambda a: -1, "HF's `max_steps` is enforced by `DefaultFlowCallback` -> `should_stop`"),
    ("accumulate_grad_batches", lambda a: 1, "windows of `gradient_accumulation_steps` run in manual optimisation"),
    ("gradient_clip_val", lambda a: None, "`max_grad_norm` is applied by the module after AMP unscaling"),
    ("limit_val_batches", lambda a: 0, "HF evaluation runs at optimiser-step boundaries, not Lightning's loop"),
    ("num_sanity_val_steps", lambda a: 0, "no sanity validation (HF has none)"),
    ("enable_checkpointing", lambda a: False, "HF `checkpoint-N/` folders are written by the HF loop"),
    ("use_distributed_sampler", lambda a: False, "HF's seeded sampler and batch sharding are kept"),
    ("enable_progress_bar", lambda a: False, "HF's ProgressCallback / NotebookProgressCallback report progress"),
    ("enable_model_summary", lambda a: False, "HF prints no model summary"),
    ("log_every_n_steps", lambda a: 1, "HF logging decides when; Lightning loggers receive what HF logs"),
    ("deterministic", lambda a: True if a.full_determinism else None, "`full_determinism`"),
    ("default_root_dir", lambda a: a.output_dir, "`output_dir`"),
]


def lightning_trainer_kwargs(
    args: Any, model: Any = None, callbacks: list | None = None, loggers: list | None = None
) -> dict[str, Any]:
    """Evaluate the table for `args` (`model` informs the strategy: DDP's unused-parameter default, FSDP's wrap
    policy); `args.lightning_trainer_kwargs` override rows, except `callbacks` and `logger`, which are added to
    `callbacks` / `loggers` (the Trainer's Lightning callbacks and `report_to` loggers). What `accelerate launch`
    asked for through the environment but hf_lightning only takes from the arguments is refused here."""
    refused = accelerate_launch_refusals(args)
    if refused:
        raise ValueError("Not taken from the environment: " + "; ".join(refused) + ".")
    kwargs = {
        name: (build_strategy(args, model) if value is build_strategy else value(args))
        for name, value, _ in TRANSLATION
    }
    extra = dict(getattr(args, "lightning_trainer_kwargs", None) or {})
    kwargs["callbacks"] = list(callbacks or []) + _as_list(extra.pop("callbacks", None))
    user_logger = extra.pop("logger", None)
    all_loggers = list(loggers or []) + _as_list(user_logger)
    kwargs["logger"] = all_loggers if all_loggers else user_logger is True
    kwargs.update(extra)
    return kwargs
