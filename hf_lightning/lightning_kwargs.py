"""`lightning.Trainer` arguments that have an HF meaning, in one table, and what each door does with them.

`hf_lightning.translation` maps `TrainingArguments` onto a `lightning.Trainer`; this is the other direction. Some
Lightning arguments say something HF already has a field for (the step budget, gradient clipping, gradient
accumulation, the evaluation cadence). The HF loop owns those semantics - it steps the optimiser in HF's windows with
manual optimisation, clips after AMP unscaling, evaluates on HF's schedule - so such an argument is either translated
into its `TrainingArguments` field or refused with a message naming the field:

* the facade (`lightning_trainer_kwargs={...}`): mapped into the arguments when they are built
  (`map_into_arguments`), refused when HF has no faithful equivalent;
* `HFLightningCLI` (`--trainer.gradient_clip_val`, `--trainer.accumulate_grad_batches`): mapped into `model.args`;
* a `lightning.Trainer` the user built (`HFLightningModule.from_args`): refused before Lightning checks its
  configuration (`check_lightning_trainer`), since its data module's accumulation windows are already built from the
  arguments. Its step budget (`max_steps` / `max_epochs`) and its validation cadence are Lightning's there, by design.

A mapped value must agree with the field unless the field is at its default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["HF_MEANINGS", "check_lightning_trainer", "map_into_arguments"]


@dataclass(frozen=True)
class HFMeaning:
    """A `lightning.Trainer` argument and the HF field it means (`hf_field=None`: refused, `advice` says instead)."""

    lightning: str
    hf_field: str | None
    unset: tuple  # Lightning values that ask for nothing
    advice: str
    convert: Callable[[Any], Any] = lambda value: value


HF_MEANINGS: tuple[HFMeaning, ...] = (
    HFMeaning("max_steps", "max_steps", (None, -1), "HF's step budget: the schedule and progress bar target it", int),
    HFMeaning("max_epochs", "num_train_epochs", (None, -1), "HF's epoch budget", float),
    HFMeaning(
        "gradient_clip_val",
        "max_grad_norm",
        (None, 0, 0.0),
        "HF clips the gradient norm after AMP unscaling (Lightning cannot clip in manual optimisation)",
        float,
    ),
    HFMeaning("gradient_clip_algorithm", None, (None, "norm"), "HF clips by norm only: set `max_grad_norm`"),
    HFMeaning(
        "accumulate_grad_batches",
        "gradient_accumulation_steps",
        (None, 1),
        "HF's accumulation windows (loss scaling, `num_items_in_batch`) are built by the data loader",
        int,
    ),
    HFMeaning(
        "val_check_interval", None, (None, 1.0), "HF evaluates on its schedule: set `eval_strategy`/`eval_steps`"
    ),
    HFMeaning("check_val_every_n_epoch", None, (None, 1), "HF evaluates on its schedule: `eval_strategy='epoch'`"),
    HFMeaning("limit_val_batches", None, (None,), "HF evaluates the whole `eval_dataset` at `eval_strategy`"),
    HFMeaning("num_sanity_val_steps", None, (None, 0), "HF runs no sanity evaluation (`eval_on_start` evaluates)"),
    HFMeaning("limit_train_batches", None, (None, 1.0), "HF's budget is `max_steps` (or `num_train_epochs`)"),
)
_BY_NAME = {meaning.lightning: meaning for meaning in HF_MEANINGS}
# The ones a `lightning.Trainer` refuses itself under manual optimisation (the others keep their Lightning meaning on a
# trainer the user owns).
_MANUAL_OPTIMISATION = ("gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches")


def _field_default(args: Any, name: str) -> Any:
    for f in dataclasses.fields(type(args)):
        if f.name == name:
            return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    raise KeyError(name)


def map_into_arguments(args: Any, kwargs: dict[str, Any], names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Set on `args` the HF fields meant by the `lightning.Trainer` arguments in `kwargs` (only `names`, when given);
    return the other arguments. A refused argument, or one contradicting a field set to a non-default value, raises a
    ValueError naming the field."""
    rest = dict(kwargs)
    for name, value in kwargs.items():
        meaning = _BY_NAME.get(name)
        if meaning is None or (names is not None and name not in names):
            continue
        del rest[name]
        if value in meaning.unset:
            continue
        if meaning.hf_field is None:
            raise ValueError(f"`lightning.Trainer({name}={value!r})` is not used by hf_lightning: {meaning.advice}.")
        converted = meaning.convert(value)
        current = getattr(args, meaning.hf_field)
        if current != converted and current != _field_default(args, meaning.hf_field):
            raise ValueError(
                f"`lightning.Trainer({name}={value!r})` means `{meaning.hf_field}={converted!r}` "
                f"({meaning.advice}), but `{meaning.hf_field}`={current!r} was given: set only `{meaning.hf_field}`."
            )
        setattr(args, meaning.hf_field, converted)
    return rest


def check_lightning_trainer(trainer: Any, args: Any) -> None:
    """A `lightning.Trainer` the user built for an `HFLightningModule`: refuse the arguments HF owns that it cannot
    take from there (Lightning itself would refuse them under manual optimisation, without naming the HF field)."""
    values = {
        "gradient_clip_val": trainer.gradient_clip_val,
        "gradient_clip_algorithm": trainer.gradient_clip_algorithm,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
    }
    for name in _MANUAL_OPTIMISATION:
        meaning, value = _BY_NAME[name], values[name]
        if value in meaning.unset:
            continue
        instead = (
            f"set `TrainingArguments({meaning.hf_field}={meaning.convert(value)!r})` instead and "
            if (meaning.hf_field)
            else ""
        )
        raise ValueError(
            f"`lightning.Trainer({name}={value!r})`: {meaning.advice}; {instead}remove it from the `lightning.Trainer` "
            f"(`HFLightningCLI` maps `--trainer.{name}` for you)."
        )
