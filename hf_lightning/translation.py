"""`TrainingArguments` -> `lightning.Trainer`: the whole translation in one table.

Each row names the Lightning keyword, where its value comes from, and why. HF semantics that Lightning
expresses differently (step budget, accumulation, clipping, evaluation/save cadence, logging) are not
handed to Lightning at all: the HF loop in `hf_lightning.module` / `hf_lightning.Trainer` owns them, so
Lightning is told to stay out of the way (`max_steps=-1`, no clipping, no own checkpointing ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hf_lightning.training_args import lightning_accelerator, lightning_precision


def _strategy(args: Any) -> Any:
    return args.strategy


TRANSLATION: list[tuple[str, Callable[[Any], Any], str]] = [
    ("accelerator", lightning_accelerator, "`use_cpu` forces 'cpu'; else the `accelerator` field ('auto')"),
    ("devices", lambda a: a.devices, "`devices` field ('auto' = every visible device)"),
    ("num_nodes", lambda a: a.num_nodes, "`num_nodes` field"),
    ("strategy", _strategy, "`strategy` field: a name or a Lightning Strategy object"),
    ("precision", lightning_precision, "`precision` field, else fp16 -> '16-mixed', bf16 -> 'bf16-mixed', '32-true'"),
    ("plugins", lambda a: a.plugins, "`plugins` field"),
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


def lightning_trainer_kwargs(args: Any) -> dict[str, Any]:
    """Evaluate the table for `args`; `lightning_trainer_kwargs` fields of `args` override rows."""
    kwargs = {name: value(args) for name, value, _ in TRANSLATION}
    kwargs.update(getattr(args, "lightning_trainer_kwargs", None) or {})
    return kwargs
