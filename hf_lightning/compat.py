"""What the installed transformers has: the parts of its API that changed within the 5.x line, in one place.

hf_lightning supports every transformers 5.x release (pyproject.toml's lower bound; `make test-compat` runs the suite
on the oldest and the newest). Three kinds of difference are handled here:

* moved or renamed names (functions that were `Trainer` methods before 5.2, modules that moved): found in the
  installed version by looking for them, not by comparing version numbers;
* features of a later release (a `TrainingArguments` field or value, a sampler, a checkpointing option): using one
  raises `NewerTransformersRequired`, naming the release. `SINCE` only words those errors; `tests/test_compat.py`
  checks it against the installed version, so a wrong entry fails there;
* rules of transformers' Trainer that changed within 5.x (how `num_items_in_batch` counts labels, `train_loss` after a
  resume, the training log ...): internal behaviour with nothing to look up, so decided by version; the differential
  tests compare them with the installed Trainer (`tests/test_canaries.py`, `test_checkpoints.py`, `test_log_output.py`).

Everything else in the package imports the version-dependent names from here, never with its own `try/except
ImportError` or version comparison.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import warnings
from types import SimpleNamespace
from typing import Any

import torch
import transformers
from packaging.version import Version
from torch import nn

__all__ = [
    "NEWER_ARGUMENT_DEFAULTS",
    "SINCE",
    "TRANSFORMERS_VERSION",
    "NewerTransformersRequired",
    "activate_neftune",
    "activation_checkpointing",
    "available",
    "batch_rebalance_sampler",
    "best_model_save_strategies",
    "check_newer_arguments",
    "check_newer_value",
    "compare_trainer_and_checkpoint_args",
    "deactivate_neftune",
    "disable_model_activation_checkpointing",
    "enable_model_activation_checkpointing",
    "eval_loss_filters_nan_inf",
    "has_training_argument",
    "hf_default",
    "is_fsdp_managed_module",
    "label_smoother_kwargs",
    "labels_to_count",
    "loss_shifts_labels",
    "metric_scheduler_classes",
    "model_is_activation_checkpointing",
    "optimizer_cls_and_kwargs",
    "rotate_checkpoints",
    "safe_globals",
    "sort_checkpoints",
    "suppress_progress_bars",
    "train_loss_steps",
    "train_mode_at_train_start",
    "train_sampling_strategy",
    "train_speed_counts",
    "trainer_helper",
    "trainer_num_items",
    "training_argument",
    "training_log_of_5_3",
]

TRANSFORMERS_VERSION = Version(transformers.__version__)

# The first transformers release with each feature hf_lightning knows may be missing from an older 5.x.
SINCE: dict[str, str] = {
    # `TrainingArguments` fields
    "train_sampling_strategy": "5.2.0",  # replaced the boolean `group_by_length`
    "ddp_static_graph": "5.6.0",
    "trackio_bucket_id": "5.6.0",
    "trackio_static_space_id": "5.6.0",
    "dataloader_in_order": "5.15.0",
    "dataloader_multiprocessing_context": "5.15.0",
    "activation_checkpointing": "5.23.0",  # renamed from `gradient_checkpointing`, which stays an alias
    "activation_checkpointing_kwargs": "5.23.0",
    # values of fields, and options inside them
    "lr_scheduler_type='greedy'": "5.4.0",
    "train_sampling_strategy='batch_rebalance'": "5.17.0",
    "activation_checkpointing_kwargs['every_n_layers'/'offload']": "5.16.0",
}

# A field that older 5.x releases lack reads as the default it was introduced with (what "not asked for" means).
NEWER_ARGUMENT_DEFAULTS: dict[str, Any] = {
    "ddp_static_graph": None,
    "dataloader_in_order": True,
    "dataloader_multiprocessing_context": None,
}

# What to use instead, on a release without the feature.
_INSTEAD = {
    "train_sampling_strategy": "`group_by_length=True` (or the default random order)",
    "activation_checkpointing": "`gradient_checkpointing`",
    "activation_checkpointing_kwargs": "`gradient_checkpointing_kwargs`",
    "train_sampling_strategy='batch_rebalance'": "another `train_sampling_strategy`",
}


class NewerTransformersRequired(ValueError):
    """A feature of a later transformers release was asked for; the message names the release."""

    def __init__(self, feature: str) -> None:
        since = SINCE[feature]
        instead = _INSTEAD.get(feature)
        hint = f", or use {instead}" if instead else ""
        super().__init__(
            f"`{feature}` needs transformers >= {since}; the installed transformers is {transformers.__version__}. "
            f"Upgrade it (pip install 'transformers>={since}'){hint}."
        )
        self.feature = feature
        self.since = since


# ---- TrainingArguments -----------------------------------------------------------------------------------------


@functools.cache
def _hf_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(transformers.TrainingArguments)}


def has_training_argument(name: str) -> bool:
    """Whether the installed `transformers.TrainingArguments` has the field `name`."""
    return name in _hf_fields()


def available(feature: str) -> bool:
    """Whether the installed transformers has `feature` (a key of `SINCE`), found by looking for it."""
    if feature == "lr_scheduler_type='greedy'":
        from transformers.trainer_utils import SchedulerType

        return "greedy" in {kind.value for kind in SchedulerType}
    if feature == "train_sampling_strategy='batch_rebalance'":
        from transformers import trainer_pt_utils

        return hasattr(trainer_pt_utils, "BatchRebalanceSampler")
    if feature == "activation_checkpointing_kwargs['every_n_layers'/'offload']":
        return "every_n_layers" in _checkpointing_enable_parameters()
    if feature not in SINCE:
        raise KeyError(f"{feature!r} is not a feature listed in hf_lightning.compat.SINCE")
    return has_training_argument(feature)


def hf_default(name: str) -> Any:
    """The default of the installed `transformers.TrainingArguments` field `name`."""
    f = _hf_fields()[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def check_newer_arguments(args: Any) -> None:
    """Raise `NewerTransformersRequired` when `args` sets (not None) an argument only a later transformers release has
    (`TrainingArguments` declares those as None-valued placeholders where the installed release lacks them)."""
    for name in SINCE:
        if name.isidentifier() and not available(name) and getattr(args, name, None) is not None:
            raise NewerTransformersRequired(name)


def check_newer_value(name: str, value: Any) -> None:
    """Raise `NewerTransformersRequired` when `value` of the field `name` is one that only a later release accepts."""
    feature = f"{name}={value!r}"
    if feature in SINCE and not available(feature):
        raise NewerTransformersRequired(feature)


def training_argument(args: Any, name: str) -> Any:
    """`args.<name>`; where the installed transformers predates the field (`NEWER_ARGUMENT_DEFAULTS`), the default
    it was introduced with."""
    if name in NEWER_ARGUMENT_DEFAULTS and not has_training_argument(name):
        return NEWER_ARGUMENT_DEFAULTS[name]
    return getattr(args, name)


def train_sampling_strategy(args: Any) -> str:
    """`train_sampling_strategy`; before 5.2 it is spelled `group_by_length=True` ('group_by_length') or left out
    ('random')."""
    if has_training_argument("train_sampling_strategy"):
        return args.train_sampling_strategy
    return "group_by_length" if getattr(args, "group_by_length", False) else "random"


def activation_checkpointing(args: Any) -> tuple[bool, dict[str, Any]]:
    """Whether activation checkpointing is asked for, and its kwargs: `activation_checkpointing(_kwargs)` (5.23+),
    `gradient_checkpointing(_kwargs)` before."""
    prefix = "activation" if has_training_argument("activation_checkpointing") else "gradient"
    return bool(getattr(args, f"{prefix}_checkpointing")), dict(getattr(args, f"{prefix}_checkpointing_kwargs") or {})


# ---- models ----------------------------------------------------------------------------------------------------

_LAYER_OPTIONS = ("every_n_layers", "offload")


def enable_model_activation_checkpointing(model: nn.Module, kwargs: dict[str, Any]) -> None:
    """Turn on activation checkpointing as the installed transformers' Trainer does. `kwargs` may hold
    `every_n_layers` and `offload` (5.16+); the rest goes to `torch.utils.checkpoint`. From 5.23 a model that only
    defines the old `gradient_checkpointing_enable` still gets it called, with transformers' FutureWarning."""
    kwargs = dict(kwargs)
    options = {k: kwargs.pop(k) for k in _LAYER_OPTIONS if k in kwargs}
    if not available("activation_checkpointing_kwargs['every_n_layers'/'offload']"):
        if options:
            raise NewerTransformersRequired("activation_checkpointing_kwargs['every_n_layers'/'offload']")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs or None)
        return
    options = {"every_n_layers": options.get("every_n_layers", 1), "offload": options.get("offload", False)}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs or None, **options)
        return
    if has_training_argument("activation_checkpointing"):
        warnings.warn(
            f"`{type(model).__name__}` only defines `gradient_checkpointing_enable`, which is deprecated and will no "
            "longer be called in v6. Define `activation_checkpointing_enable` instead.",
            FutureWarning,
            stacklevel=3,
        )
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs or None, **options)


@functools.cache
def _checkpointing_enable_parameters() -> tuple[str, ...]:
    """The parameters of `PreTrainedModel.activation_checkpointing_enable` (5.23+), `gradient_checkpointing_enable`
    before."""
    model_cls = transformers.PreTrainedModel
    enable = getattr(model_cls, "activation_checkpointing_enable", model_cls.gradient_checkpointing_enable)
    return tuple(inspect.signature(enable).parameters)


def disable_model_activation_checkpointing(model: nn.Module) -> None:
    """`model.activation_checkpointing_disable()` (5.23+), `gradient_checkpointing_disable()` before; nothing for
    other modules."""
    disable = getattr(model, "activation_checkpointing_disable", None) or getattr(
        model, "gradient_checkpointing_disable", None
    )
    if disable is not None:
        disable()


def model_is_activation_checkpointing(model: Any) -> bool:
    """`model.is_activation_checkpointing` (5.23+), `is_gradient_checkpointing` before; False for other modules."""
    if hasattr(model, "is_activation_checkpointing"):
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))


# ---- num_items_in_batch ---------------------------------------------------------------------------------------
# transformers' Trainer counts the label tokens of a window over `labels[..., 1:]` (or a batch's `shift_labels`) for
# models whose loss shifts the labels (causal LM) from 5.10, no longer for encoder-decoder models from 5.15; before
# 5.10, over all of `labels`. Internal behaviour, so decided by version; `tests/test_canaries.py` compares the counts
# with the installed Trainer's.
_SHIFTED_LABEL_COUNT = Version("5.10.0")
_ENCODER_DECODER_NOT_SHIFTED = Version("5.15.0")


def loss_shifts_labels(model: nn.Module) -> bool:
    """Whether transformers' Trainer counts `num_items_in_batch` over shifted labels for `model` (a base model, not
    a PEFT wrapper)."""
    if TRANSFORMERS_VERSION < _SHIFTED_LABEL_COUNT:
        return False
    from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss

    shifts = LOSS_MAPPING.get(getattr(model, "loss_type", None)) is ForCausalLMLoss
    if TRANSFORMERS_VERSION >= _ENCODER_DECODER_NOT_SHIFTED:
        shifts = shifts and not getattr(getattr(model, "config", None), "is_encoder_decoder", False)
    return shifts


def label_smoother_kwargs(num_items_in_batch: Any) -> dict[str, Any]:
    """What transformers' `LabelSmoother` is given besides the outputs and labels: the window's `num_items_in_batch`
    from 5.15 (the smoothed loss is then summed over the window's tokens), nothing before."""
    from transformers.trainer_pt_utils import LabelSmoother

    if "num_items_in_batch" in inspect.signature(LabelSmoother.__call__).parameters:
        return {"num_items_in_batch": num_items_in_batch}
    return {}


# From 5.19 the Trainer divides the window's count by the tensor-, context- and sequence-parallel sizes
# (`num_items_in_batch / (tp * cp * sp)`): a true division, so `compute_loss`, `training_step` and `compute_loss_func`
# receive a float tensor; before, the integer count. hf_lightning runs none of those (`parallelism_config` is refused),
# so the sizes are 1 and only the dtype changes; the value, and the loss divided by it, are the same.
_NUM_ITEMS_DIVIDED_BY_PARALLEL_SIZES = Version("5.19.0")


def trainer_num_items(count: Any) -> Any:
    """`num_items_in_batch` as the installed Trainer hands it to the loss: the window's count (already summed over
    ranks under `average_tokens_across_devices`), divided by the parallel sizes (all 1) from 5.19."""
    if TRANSFORMERS_VERSION >= _NUM_ITEMS_DIVIDED_BY_PARALLEL_SIZES and isinstance(count, torch.Tensor):
        return count / 1
    return count


def labels_to_count(batch: Any, shifted: bool) -> Any:
    """The labels of one batch whose non-ignored tokens make `num_items_in_batch`."""
    if TRANSFORMERS_VERSION < _SHIFTED_LABEL_COUNT:
        return batch["labels"]
    if "shift_labels" in batch:
        return batch["shift_labels"]
    return batch["labels"][..., 1:] if shifted else batch["labels"]


# ---- other Trainer rules that changed within 5.x ------------------------------------------------------------------
# Internal behaviour, decided by version; the differential tests (`test_checkpoints.py`) check them against the
# installed Trainer.
_BEST_MODEL_WITH_SAVE_STRATEGY_BEST = Version("5.4.0")
_TRAIN_SUMMARY_OF_THIS_CALL = Version("5.19.0")  # train_loss and the speed metrics count this train() call
_EVAL_LOSS_WITHOUT_NAN_INF = Version("5.23.0")
_NO_TRAIN_MODE_AT_TRAIN_START = Version("5.3.0")
_TRAINING_LOG_OF_5_3 = Version("5.3.0")


def best_model_save_strategies() -> tuple[str, ...]:
    """The `save_strategy` values under which transformers records `best_global_step` / `best_model_checkpoint`
    ("best" from 5.4)."""
    best = ("best",) if TRANSFORMERS_VERSION >= _BEST_MODEL_WITH_SAVE_STRATEGY_BEST else ()
    return ("steps", "epoch", *best)


def train_mode_at_train_start() -> bool:
    """Whether transformers' `train()` puts the model in train mode before `on_train_begin` (before 5.3; later
    releases leave it to the first training step)."""
    return TRANSFORMERS_VERSION < _NO_TRAIN_MODE_AT_TRAIN_START


def training_log_of_5_3() -> bool:
    """Whether transformers logs the start of training as 5.3 reworded it: a "Num update steps per epoch" line, and a
    resume reported as "Resuming training from checkpoint with epoch E and global step S" (before: three "Continuing
    training ..." lines)."""
    return TRANSFORMERS_VERSION >= _TRAINING_LOG_OF_5_3


def train_loss_steps(global_step: int, steps_this_run: int) -> int:
    """What the summary `train_loss` divides the summed loss by: the optimiser steps of this `train()` call (from
    5.19), before that every step of the run, including those before a resume."""
    return steps_this_run if TRANSFORMERS_VERSION >= _TRAIN_SUMMARY_OF_THIS_CALL else global_step


def train_speed_counts(num_train_samples: int, max_steps: int, steps_this_run: int) -> tuple[float, int]:
    """The samples and steps the summary's `train_samples_per_second` / `train_steps_per_second` count: from 5.19
    those of this `train()` call (after a resume or an early stop, the share of the schedule it ran), before that the
    whole schedule's."""
    if TRANSFORMERS_VERSION >= _TRAIN_SUMMARY_OF_THIS_CALL:
        return num_train_samples * steps_this_run / max(max_steps, 1), steps_this_run
    return num_train_samples, max_steps


def eval_loss_filters_nan_inf(args: Any) -> bool:
    """Whether `eval_loss` leaves out the batches whose loss is NaN or infinite (`logging_nan_inf_filter`, when at
    least one is finite): from 5.23; before, their mean was the eval loss."""
    return TRANSFORMERS_VERSION >= _EVAL_LOSS_WITHOUT_NAN_INF and bool(args.logging_nan_inf_filter)


# ---- checkpoints -----------------------------------------------------------------------------------------------
# transformers 5.2 moved these out of `Trainer` into `trainer_utils` functions; on 5.0/5.1 transformers' own
# `Trainer` methods run, on a stand-in holding the few attributes they read.


def _hf_trainer() -> type:
    from transformers.trainer import Trainer

    return Trainer


def sort_checkpoints(output_dir: str, best_model_checkpoint: str | None = None) -> list[str]:
    """transformers' `sort_checkpoints`: the `checkpoint-N` folders, oldest first, the best one kept from deletion."""
    from transformers import trainer_utils

    if hasattr(trainer_utils, "sort_checkpoints"):
        return trainer_utils.sort_checkpoints(output_dir, best_model_checkpoint=best_model_checkpoint)
    stand_in = SimpleNamespace(state=SimpleNamespace(best_model_checkpoint=best_model_checkpoint))
    return _hf_trainer()._sorted_checkpoints(stand_in, output_dir=output_dir)


def rotate_checkpoints(
    output_dir: str, save_total_limit: int | None, best_model_checkpoint: str | None = None, use_mtime: bool = False
) -> None:
    """transformers' `rotate_checkpoints`: delete the oldest folders beyond `save_total_limit`."""
    from transformers import trainer_utils

    if hasattr(trainer_utils, "rotate_checkpoints"):
        trainer_utils.rotate_checkpoints(
            output_dir=output_dir,
            save_total_limit=save_total_limit,
            best_model_checkpoint=best_model_checkpoint,
            use_mtime=use_mtime,
        )
        return
    hf_trainer = _hf_trainer()
    stand_in = SimpleNamespace(
        args=SimpleNamespace(save_total_limit=save_total_limit),
        state=SimpleNamespace(best_model_checkpoint=best_model_checkpoint),
    )
    stand_in._sorted_checkpoints = functools.partial(hf_trainer._sorted_checkpoints, stand_in)
    hf_trainer._rotate_checkpoints(stand_in, use_mtime=use_mtime, output_dir=output_dir)


def compare_trainer_and_checkpoint_args(args: Any, state: Any) -> None:
    """transformers' warning when resumed arguments differ from the checkpoint's `trainer_state.json`."""
    from transformers import trainer_utils

    if hasattr(trainer_utils, "compare_trainer_and_checkpoint_args"):
        trainer_utils.compare_trainer_and_checkpoint_args(args, state)
    else:
        _hf_trainer().compare_trainer_and_checkpoint_args(None, args, state)


def safe_globals() -> Any:
    """transformers' `torch.load(weights_only=True)` allow-list context (numpy RNG states)."""
    from transformers import trainer_pt_utils

    if hasattr(trainer_pt_utils, "safe_globals"):
        return trainer_pt_utils.safe_globals()
    from transformers import trainer

    return trainer.safe_globals()


# ---- training features -----------------------------------------------------------------------------------------


def activate_neftune(model: nn.Module, noise_alpha: float) -> Any:
    """transformers' NEFTune forward hook on the input embeddings; returns the hook handle."""
    try:
        from transformers.integrations.neftune import activate_neftune as activate
    except ImportError:  # before 5.2: a `Trainer` method
        stand_in = _neftune_stand_in(noise_alpha)
        _hf_trainer()._activate_neftune(stand_in, model)
        return stand_in.neftune_hook_handle
    return activate(model, noise_alpha)


def deactivate_neftune(model: nn.Module, hook_handle: Any) -> None:
    """Remove the hook `activate_neftune` returned (and the noise setting from the embeddings)."""
    try:
        from transformers.integrations.neftune import deactivate_neftune as deactivate
    except ImportError:  # before 5.2
        stand_in = _neftune_stand_in(None)
        stand_in.neftune_hook_handle = hook_handle
        _hf_trainer()._deactivate_neftune(stand_in, model)
        return
    deactivate(model, hook_handle)


def _neftune_stand_in(noise_alpha: float | None) -> SimpleNamespace:
    return SimpleNamespace(accelerator=SimpleNamespace(unwrap_model=lambda m: m), neftune_noise_alpha=noise_alpha)


def trainer_helper(name: str) -> Any:
    """One of transformers' Trainer helpers for external use (`get_learning_rates`, `get_num_trainable_parameters`,
    `get_optimizer_group`): a `trainer_pt_utils` function taking the trainer from 5.2, a `Trainer` method before."""
    from transformers import trainer_pt_utils

    helper = getattr(trainer_pt_utils, name, None)
    if helper is not None:
        return helper

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:  # `transformers.trainer` imported only when called
        return getattr(_hf_trainer(), name)(self, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    return method


def suppress_progress_bars() -> Any:
    """transformers' context that hides huggingface_hub's progress bars around pushes (5.3+); before 5.3
    transformers shows them, so nothing is suppressed."""
    from transformers import trainer_utils

    suppress = getattr(trainer_utils, "suppress_progress_bars", None)
    return suppress() if suppress is not None else contextlib.nullcontext()


def batch_rebalance_sampler() -> type:
    """transformers' `BatchRebalanceSampler` (5.17+)."""
    from transformers import trainer_pt_utils

    if not available("train_sampling_strategy='batch_rebalance'"):
        raise NewerTransformersRequired("train_sampling_strategy='batch_rebalance'")
    return trainer_pt_utils.BatchRebalanceSampler


def is_batch_rebalance_sampler(sampler: Any) -> bool:
    from transformers import trainer_pt_utils

    cls = getattr(trainer_pt_utils, "BatchRebalanceSampler", None)
    return cls is not None and isinstance(sampler, cls)


def metric_scheduler_classes() -> tuple[type, ...]:
    """Schedulers stepped with an eval metric: `ReduceLROnPlateau`, and transformers' `GreedyLR` (5.4+)."""
    from transformers import optimization

    greedy = getattr(optimization, "GreedyLR", None)
    return (torch.optim.lr_scheduler.ReduceLROnPlateau,) + ((greedy,) if greedy is not None else ())


def optimizer_cls_and_kwargs(args: Any, model: nn.Module | None = None) -> tuple[type, dict[str, Any]]:
    """The optimiser class and kwargs for `args.optim`, from transformers' own table.

    From 5.2 the table lives in `transformers.trainer_optimizer`; calling it directly spares importing
    `transformers.trainer` (which imports `datasets` and pandas, ~80 MB of RSS). Before, it is `Trainer`'s static
    method."""
    try:
        from transformers.trainer_optimizer import _OPTIMIZER_HANDLERS, OptimizerContext, _parse_optim_args
    except ImportError:
        return _hf_trainer().get_optimizer_cls_and_kwargs(args, model)
    ctx = OptimizerContext(
        args=args,
        model=model,
        optimizer_kwargs={"lr": args.learning_rate},
        adam_kwargs={"betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon},
        optim_args=_parse_optim_args(args.optim_args),
    )
    handler = _OPTIMIZER_HANDLERS.get(args.optim)
    if handler is None:
        raise ValueError(f"Trainer cannot instantiate unsupported optimizer: {args.optim}")
    return handler(ctx)


def is_fsdp_managed_module(model: nn.Module) -> bool:
    """transformers' `is_fsdp_managed_module` (`transformers.distributed.fsdp` from 5.14, `integrations.fsdp`
    before)."""
    try:
        from transformers.distributed.fsdp import is_fsdp_managed_module as check
    except ImportError:
        from transformers.integrations.fsdp import is_fsdp_managed_module as check
    return check(model)
