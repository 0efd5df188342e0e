"""`TrainingArguments` -> `lightning.Trainer`: the whole translation in one table.

Each row names the Lightning keyword, where its value comes from, and why. HF semantics that Lightning
expresses differently (step budget, accumulation, clipping, evaluation/save cadence, logging) are not
handed to Lightning at all: the HF loop (`hf_lightning.hf_loop`, run by `hf_lightning.module`) owns them, so
Lightning is told to stay out of the way (`max_steps=-1`, no clipping, no own checkpointing ...), and only told
what its callbacks need to know (when HF evaluates, whether a `ModelCheckpoint` or progress bar was given).
The other direction - a `lightning.Trainer` argument with an HF meaning given in `lightning_trainer_kwargs` - is
`hf_lightning.lightning_kwargs`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.plugins.precision import Precision
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


def _has_precision_plugin(plugins: Any) -> bool:
    return any(isinstance(p, Precision) for p in _as_list(plugins))


def _precision(args: Any) -> str | None:
    """`lightning_precision`, or None when `plugins` holds a precision plugin (Lightning takes one or the other)."""
    if not _has_precision_plugin(getattr(args, "plugins", None)):
        return lightning_precision(args)
    if getattr(args, "precision", None) is not None or args.fp16 or args.bf16:
        raise ValueError(
            "`plugins` holds a precision plugin and `precision`/`fp16`/`bf16` ask for a precision too: use one of them."
        )
    return None


def _eval_cadence(args: Any) -> tuple[int | None, int | float]:
    """(`check_val_every_n_epoch`, `val_check_interval`) saying when the HF loop evaluates, in Lightning's terms.
    Lightning never validates itself (`limit_val_batches=0`), but its callbacks read these to decide where to look for
    the metrics: at each train epoch end (`eval_strategy="epoch"`, and "no"), else at validation end."""
    if str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "steps":
        steps = args.eval_steps if args.eval_steps is not None else args.logging_steps
        return None, max(1, int(steps * args.gradient_accumulation_steps)) if steps >= 1 else 1
    return 1, 1.0


TRANSLATION: list[tuple[str, Callable[[Any], Any], str]] = [
    ("accelerator", lightning_accelerator, "`use_cpu` forces 'cpu'; else the `accelerator` field ('auto')"),
    ("devices", lightning_devices, "`devices` field ('auto': the launcher's processes per node, else every device)"),
    ("num_nodes", lightning_num_nodes, "`num_nodes` field (1: the launcher's node count, e.g. torchrun, SLURM)"),
    ("strategy", build_strategy, "`strategy` / `fsdp` / `deepspeed` / `ddp_*` (see `hf_lightning.strategies`)"),
    (
        "precision",
        _precision,
        "`precision` field, else fp16 -> '16-mixed', bf16 -> 'bf16-mixed', '32-true'; unset with a precision plugin",
    ),
    ("plugins", lambda a: a.plugins, "`plugins` field"),
    ("profiler", _profiler, "`profiler` field; unset -> a pass-through profiler that adds no per-hook cost"),
    ("max_epochs", lambda a: -1, "HF's epoch budget (fractional epochs) is enforced by the HF loop"),
    ("max_steps", lambda a: -1, "HF's `max_steps` is enforced by `DefaultFlowCallback` -> `should_stop`"),
    ("accumulate_grad_batches", lambda a: 1, "windows of `gradient_accumulation_steps` run in manual optimisation"),
    ("gradient_clip_val", lambda a: None, "`max_grad_norm` is applied by the module after AMP unscaling"),
    ("limit_val_batches", lambda a: 0, "HF evaluation runs at optimiser-step boundaries, not Lightning's loop"),
    (
        "check_val_every_n_epoch",
        lambda a: _eval_cadence(a)[0],
        "`eval_strategy` (read by EarlyStopping/ModelCheckpoint)",
    ),
    ("val_check_interval", lambda a: _eval_cadence(a)[1], "`eval_steps` in batches (`eval_strategy='steps'`)"),
    ("num_sanity_val_steps", lambda a: 0, "no sanity validation (HF has none)"),
    (
        "enable_checkpointing",
        lambda a: False,
        "HF `checkpoint-N/` folders are written by the HF loop; on when a `ModelCheckpoint` is among the callbacks",
    ),
    ("use_distributed_sampler", lambda a: False, "HF's seeded sampler and batch sharding are kept"),
    (
        "enable_progress_bar",
        lambda a: False,
        "HF's ProgressCallback / NotebookProgressCallback report progress; on when a Lightning progress bar callback "
        "is given (it replaces HF's)",
    ),
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
    if "plugins" in extra and _has_precision_plugin(extra["plugins"]) and "precision" not in extra:
        _precision(args)  # raises when the arguments also ask for a precision
        kwargs["precision"] = None
    kwargs.update(extra)
    _match_lightning_callbacks(args, kwargs)
    return kwargs


def _match_lightning_callbacks(args: Any, kwargs: dict[str, Any]) -> None:
    """Lightning callbacks that need a Trainer flag get it: a `ModelCheckpoint` turns checkpointing on, a progress bar
    callback the progress bar; a callback monitoring an `eval_*` metric needs HF to evaluate."""
    callbacks = kwargs["callbacks"]
    if any(isinstance(cb, ModelCheckpoint) for cb in callbacks):
        kwargs["enable_checkpointing"] = True
    if any(isinstance(cb, ProgressBar) for cb in callbacks):
        kwargs["enable_progress_bar"] = True
    if str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "no":
        for cb in callbacks:
            monitor = getattr(cb, "monitor", None)
            if isinstance(monitor, str) and monitor.startswith("eval_"):
                raise ValueError(
                    f"`{type(cb).__name__}(monitor={monitor!r})` watches an evaluation metric but `eval_strategy` is "
                    "'no': set `eval_strategy` ('steps' or 'epoch') and an `eval_dataset`."
                )
