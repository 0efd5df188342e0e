"""Optimiser, scheduler and gradient clipping with HF's choices.

HF builds two parameter groups (no weight decay on biases and normalisation weights), picks the optimiser
class from `args.optim` (the v5 default is fused AdamW), builds the schedule with `transformers.get_scheduler`
over the HF step budget, and clips by the global norm over `model.parameters()`. Lightning only receives
the resulting objects; the step order is kept by the module's manual optimisation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import get_scheduler
from transformers.trainer_pt_utils import get_parameter_names

from hf_lightning import compat

NO_DECAY_NAME_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


def decay_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters weight decay applies to: everything but biases and norm weights."""
    return get_parameter_names(model, [nn.LayerNorm], NO_DECAY_NAME_PATTERNS)


def grouped_parameters(model: nn.Module, weight_decay: float, decay_names: list[str]) -> list[dict[str, Any]]:
    """HF's two optimiser groups, in HF's order (decayed first)."""
    decay = set(decay_names)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
    ]


def optimizer_cls_and_kwargs(args: Any, model: nn.Module | None = None) -> tuple[type, dict[str, Any]]:
    """The optimiser class and kwargs for `args.optim`, from transformers' own table (every HF optim name)."""
    return compat.optimizer_cls_and_kwargs(args, model)


def build_optimizer(
    model: nn.Module, args: Any, decay_names: list[str], cls_and_kwargs: tuple[type, dict[str, Any]] | None = None
) -> torch.optim.Optimizer:
    """Instantiate the optimiser over HF's parameter groups."""
    groups = grouped_parameters(model, args.weight_decay, decay_names)
    optimizer_cls, kwargs = cls_and_kwargs if cls_and_kwargs is not None else optimizer_cls_and_kwargs(args, model)
    kwargs = dict(kwargs)
    for key in ("params", "model", "optimizer_dict"):
        if key in kwargs:
            groups = kwargs.pop(key)
    return optimizer_cls(groups, **kwargs)


def build_scheduler(args: Any, optimizer: torch.optim.Optimizer, num_training_steps: int) -> Any:
    """`transformers.get_scheduler` for `lr_scheduler_type`, with HF's warmup and `lr_scheduler_kwargs`."""
    return get_scheduler(
        args.lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=args.get_warmup_steps(num_training_steps),
        num_training_steps=num_training_steps,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )


_METRIC_SCHEDULERS = compat.metric_scheduler_classes()


def is_metric_scheduler(scheduler: Any) -> bool:
    """Schedulers HF steps with an eval metric after evaluation instead of once per optimiser step."""
    return isinstance(scheduler, _METRIC_SCHEDULERS)


def current_learning_rate(optimizer: torch.optim.Optimizer, scheduler: Any) -> float:
    """The learning rate HF logs: the scheduler's last value (the optimiser's for metric schedulers)."""
    if scheduler is None or is_metric_scheduler(scheduler):
        lr = optimizer.param_groups[0]["lr"]
    else:
        lr = scheduler.get_last_lr()[0]
    return lr.item() if torch.is_tensor(lr) else lr


def clip_grad_norm(model: nn.Module, max_norm: float, parameters: list[nn.Parameter] | None = None) -> torch.Tensor:
    """Clip by the global norm over `model.parameters()` (or `parameters`, that list taken once) and return the
    pre-clip norm.

    FSDP-wrapped modules provide their own sharding-aware `clip_grad_norm_`; everything else uses torch's,
    which is what HF's accelerator calls on one process.
    """
    own = getattr(model, "clip_grad_norm_", None)
    if callable(own):
        return own(max_norm)
    return torch.nn.utils.clip_grad_norm_(model.parameters() if not parameters else parameters, max_norm)
