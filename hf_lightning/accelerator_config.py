"""`TrainingArguments.accelerator_config`: accelerate's `Accelerator` options, each honoured or refused by name.

transformers hands these to the `Accelerator` that prepares its loaders and runs its backward. hf_lightning has no
`Accelerator`: its loaders rebuild accelerate's (`hf_lightning.data`, `hf_lightning.distributed`) and Lightning
moves the batches, so each sub-field is treated on its own:

- `split_batches` (transformers: with several processes, each batch is split across them): on one process it has
  no effect, as in transformers; with several it is refused.
- `dispatch_batches` (with several processes, process 0 reads the batches and sends them): no effect on one
  process; `True` refused with several.
- `even_batches` (with several processes, `False` leaves the last batches uneven): no effect on one process;
  `False` refused with several.
- `use_seedable_sampler` (`False`: torch's `RandomSampler`, drawing from the global RNG): honoured; `False` refused
  with several processes.
- `non_blocking` (asynchronous host-to-device copies of the batches): honoured for evaluation batches; training
  batches are copied by Lightning, asynchronously on CUDA whatever the value (results are the same).
- `gradient_accumulation_kwargs`: `num_steps` replaces `gradient_accumulation_steps`=1, `sync_each_batch` reduces
  the gradients after every micro-batch; `adjust_scheduler` and `sync_with_dataloader` have no effect in
  transformers' loop, nor here. Other keys are refused.
- `use_configured_state` (reuse an `Accelerator`/`PartialState` made before): `True` refused, Lightning's strategy
  owns the processes.

The refusals name the sub-field (with several processes: when the loader is built, the first moment the process
count is known).
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = [
    "GRADIENT_ACCUMULATION_KEYS",
    "apply_gradient_accumulation_kwargs",
    "check_for_processes",
    "non_blocking",
    "refuse_configured_state",
    "sync_each_batch",
    "use_seedable_sampler",
]

logger = logging.getLogger(__name__)

# accelerate's `GradientAccumulationPlugin` fields; transformers passes the dict to it.
GRADIENT_ACCUMULATION_KEYS = ("num_steps", "adjust_scheduler", "sync_with_dataloader", "sync_each_batch")

# (sub-field, values honoured with several processes, what to do instead) for the options that act only then.
_MULTI_PROCESS_ONLY = (
    ("split_batches", (False,), "set `per_device_train_batch_size` to the batch size you want per process instead"),
    ("dispatch_batches", (None, False), "each process reads its own share of the batches here"),
    ("even_batches", (True,), "the last batches are completed with the first samples, as by default"),
    ("use_seedable_sampler", (True,), "the train sampler is seeded from `data_seed`/`seed` and the epoch"),
)


def _config(args: Any) -> Any:
    return getattr(args, "accelerator_config", None)


def _get(args: Any, name: str, default: Any) -> Any:
    config = _config(args)
    return default if config is None else getattr(config, name, default)


def _accumulation_kwargs(args: Any) -> dict[str, Any]:
    return dict(_get(args, "gradient_accumulation_kwargs", None) or {})


def refuse_configured_state(value: Any) -> None:
    """`use_configured_state=True` (HF's device set-up pops it from the config; so does ours, then calls this)."""
    if value:
        raise ValueError(
            "`accelerator_config.use_configured_state`=True is not supported by hf_lightning: it reuses an accelerate "
            "state made before, while here Lightning's strategy sets up the processes. Leave it False."
        )


def apply_gradient_accumulation_kwargs(args: Any) -> None:
    """transformers' rule (which it applies when the Trainer is built; here when the arguments are, so every loop
    sees it): unknown keys are refused, `num_steps` replaces `gradient_accumulation_steps` when that is 1 and
    contradicting it is an error (transformers also refuses an equal value, which re-building the arguments would
    give); `non_blocking` without pinned memory gets transformers' warning."""
    kwargs = _accumulation_kwargs(args)
    unknown = sorted(set(kwargs) - set(GRADIENT_ACCUMULATION_KEYS))
    if unknown:
        raise ValueError(
            f"`accelerator_config.gradient_accumulation_kwargs` has unknown keys {unknown}; accepted: "
            f"{list(GRADIENT_ACCUMULATION_KEYS)}."
        )
    if "num_steps" in kwargs:
        if args.gradient_accumulation_steps not in (1, kwargs["num_steps"]):
            raise ValueError(
                "`accelerator_config.gradient_accumulation_kwargs['num_steps']` is set but "
                f"`gradient_accumulation_steps`={args.gradient_accumulation_steps} too; set only one of them "
                "(transformers refuses both)."
            )
        args.gradient_accumulation_steps = kwargs["num_steps"]
    if non_blocking(args) and not args.dataloader_pin_memory:
        logger.warning(
            "`non_blocking` is enabled but `dataloader_pin_memory` is not. For the best performance, it's recommended "
            "to enable both."
        )


def sync_each_batch(args: Any) -> bool:
    """Whether gradients are reduced across processes after every micro-batch, not only at the window's end."""
    return bool(_accumulation_kwargs(args).get("sync_each_batch", False))


def use_seedable_sampler(args: Any) -> bool:
    """Whether the random train sampler is seeded per epoch (accelerate's `SeedableRandomSampler`) or is torch's
    `RandomSampler` drawing from the global RNG."""
    return bool(_get(args, "use_seedable_sampler", True))


def non_blocking(args: Any) -> bool:
    return bool(_get(args, "non_blocking", False))


def check_for_processes(args: Any, world_size: int) -> None:
    """Refuse the options this run cannot honour with `world_size` processes (called when a loader is sharded)."""
    if world_size <= 1:
        return
    for name, honoured, instead in _MULTI_PROCESS_ONLY:
        value = _get(args, name, honoured[0])
        if value not in honoured:
            raise ValueError(
                f"`accelerator_config.{name}`={value!r} is not supported by hf_lightning with several processes "
                f"({world_size}): {instead}."
            )
