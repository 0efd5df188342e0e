"""Trainer hooks overridden with their transformers v4 signatures, called the way they accept.

transformers v5 calls some overridable `Trainer` methods with a parameter their v4 signature lacks
(`compute_loss(..., num_items_in_batch=)`, `training_step(model, inputs, num_items_in_batch)`,
`log(logs, start_time)`, `_get_train_sampler(train_dataset)`). A v4-era subclass overriding one of them would
crash with "unexpected keyword argument" on the first call. `adapt_legacy_overrides` inspects the subclass once,
when the Trainer is built, warns once per such hook (FutureWarning) and puts an adapter on the instance that drops
the new argument, so every caller (training, evaluation, prediction, the user's own code) keeps using the v5 call
shape and this module is the only place that knows the v4 one.

A v4 `compute_loss` never receives `num_items_in_batch`, so its loss is a per-micro-batch mean: unless the class says
otherwise (`loss_is_scaled_for_ga`), `training_step` divides it by the accumulation window, as transformers v4 did.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["HOOK_CHANGES", "HookChange", "accepts_added_parameter", "adapt_legacy_overrides"]


@dataclass(frozen=True)
class HookChange:
    """A hook whose v5 signature gained the parameter `added` (v4 overrides lack it)."""

    name: str
    added: str


# Pinned against the installed transformers by tests/test_legacy_signatures.py.
HOOK_CHANGES: tuple[HookChange, ...] = (
    HookChange("compute_loss", "num_items_in_batch"),
    HookChange("training_step", "num_items_in_batch"),
    HookChange("log", "start_time"),
    HookChange("_get_train_sampler", "train_dataset"),
)


def _position(signature: inspect.Signature, name: str) -> int:
    """Index of parameter `name` among the positional parameters after `self`."""
    positional = [
        p.name for p in signature.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return positional.index(name) - 1


def accepts_added_parameter(method: Callable, change: HookChange, position: int) -> bool:
    """Whether an override (an unbound function) can take `change.added` the way v5 passes it: by name, through
    `**kwargs`, or positionally at `position`."""
    params = inspect.signature(method).parameters.values()
    if any(p.name == change.added or p.kind == p.VAR_KEYWORD for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) - 1 > position or any(p.kind == p.VAR_POSITIONAL for p in params)


def _without_argument(method: Callable, name: str, position: int) -> Callable:
    """`method` (bound) called with the v5 shape, minus argument `name` (by keyword or at `position`)."""

    @functools.wraps(method)
    def adapter(*args: Any, **kwargs: Any) -> Any:
        kwargs.pop(name, None)
        if len(args) > position:
            args = args[:position] + args[position + 1 :]
        return method(*args, **kwargs)

    return adapter


def adapt_legacy_overrides(trainer: Any, base: type) -> list[str]:
    """Install v4 adapters on `trainer` for the hooks its class overrides with a v4 signature (`base` holds the
    v5 ones); returns the names adapted. One FutureWarning per hook."""
    cls = type(trainer)
    adapted = []
    for change in HOOK_CHANGES:
        override = getattr(cls, change.name, None)
        default = getattr(base, change.name, None)
        if override is None or default is None or override is default:
            continue
        position = _position(inspect.signature(default), change.added)
        if accepts_added_parameter(override, change, position):
            continue
        owner = next((k.__qualname__ for k in cls.__mro__ if change.name in vars(k)), cls.__qualname__)
        warnings.warn(
            f"`{owner}.{change.name}` has the transformers v4 signature (no `{change.added}` parameter), so it is "
            f"called without `{change.added}`. Add `{change.added}=None` to its parameters: transformers v5 passes "
            "it and no longer accepts the v4 signature.",
            FutureWarning,
            stacklevel=3,
        )
        setattr(trainer, change.name, _without_argument(getattr(trainer, change.name), change.added, position))
        adapted.append(change.name)
    if "compute_loss" in adapted and getattr(cls, "loss_is_scaled_for_ga", None) is None:
        trainer.loss_is_scaled_for_ga = False  # a v4 loss was never normalised by `num_items_in_batch`
    return adapted
