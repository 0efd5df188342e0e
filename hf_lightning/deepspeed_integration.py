"""HF's `deepspeed` argument -> the DeepSpeed engine's config, and the Lightning strategy that hands it over.

`deepspeed_config` resolves HF's `"auto"` values from `TrainingArguments` exactly as transformers'
`HfTrainerDeepSpeedConfig` does (without needing the `deepspeed` package). `deepspeed_strategy_config` is what
`HFDeepSpeedStrategy` receives: HF's optimiser and schedule come from the arguments, as for every strategy, and the
batch keys are set once the processes exist (`deepspeed_batch_config`), with HF's gradient accumulation, which
Lightning's own `DeepSpeedStrategy` would take from `accumulate_grad_batches` (1 under manual optimisation).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from typing import Any

from lightning.pytorch.strategies import DeepSpeedStrategy
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "HFDeepSpeedStrategy",
    "deepspeed_batch_config",
    "deepspeed_config",
    "deepspeed_strategy_config",
    "load_deepspeed_config",
]

# The methods of transformers' `HfTrainerDeepSpeedConfig` that resolve "auto" values (`tests/test_canaries.py`).
HF_CONFIG_METHODS = ("is_auto", "fill_match", "trainer_config_process", "trainer_config_finalize", "dtype")

# The optimiser and schedule come from `TrainingArguments` (HF's `optim` / `lr_scheduler_type`), as for any strategy.
_HF_OWNED_DS_SECTIONS = ("optimizer", "scheduler")


def _hf_deepspeed_config(config: dict[str, Any]) -> Any:
    """HF's `HfTrainerDeepSpeedConfig` logic on accelerate's plain-Python config class: transformers only builds the
    class when the `deepspeed` package is installed, but resolving "auto" values needs none of it, so the
    translation works (and is tested) without DeepSpeed."""
    from functools import partialmethod

    from accelerate.utils.deepspeed import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    hf = vars(HfTrainerDeepSpeedConfig)
    methods: dict[str, Any] = {name: hf[name] for name in HF_CONFIG_METHODS}
    methods["fill_only"] = partialmethod(hf["fill_match"], must_match=False)
    resolver = type("HfDeepSpeedAutoConfig", (HfDeepSpeedConfig,), methods)(copy.deepcopy(config))
    resolver._dtype = None
    resolver.mismatches = []
    return resolver


def load_deepspeed_config(value: Any) -> dict[str, Any]:
    """`deepspeed` as given to `TrainingArguments`: a dict, or a path to a JSON file."""
    if isinstance(value, dict):
        return copy.deepcopy(value)
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if not os.path.isfile(path):
            raise ValueError(f"`deepspeed`={path!r} is not a JSON file (nor a dict).")
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    raise ValueError(f"`deepspeed` must be a dict or the path of a JSON file, got {type(value).__name__}.")


def _resolve_auto_values(
    args: Any, config: dict[str, Any], model: nn.Module | None, num_training_steps: int | None
) -> dict[str, Any]:
    hf_config = _hf_deepspeed_config(config)
    hf_config.trainer_config_process(args)
    if model is not None and num_training_steps is not None:
        hf_config.trainer_config_finalize(args, model, num_training_steps)
    elif hf_config.mismatches:
        raise ValueError(
            "Please correct the following DeepSpeed config values that mismatch TrainingArguments values:\n"
            + "\n".join(hf_config.mismatches)
            + "\nThe easiest method is to set these DeepSpeed config values to 'auto'."
        )
    return hf_config.config


def deepspeed_config(
    args: Any, model: nn.Module | None = None, num_training_steps: int | None = None
) -> dict[str, Any]:
    """The DeepSpeed config with HF's `"auto"` values resolved from `args` (and, given them, the model's hidden
    size and the step budget): `trainer_config_process` then `trainer_config_finalize`, mismatches raising."""
    return _resolve_auto_values(args, load_deepspeed_config(args.deepspeed), model, num_training_steps)


def deepspeed_strategy_config(args: Any, model: nn.Module | None = None) -> dict[str, Any]:
    """The config handed to `HFDeepSpeedStrategy`: HF-resolved (the hidden-size `"auto"` keys too, given the model),
    minus the optimiser/scheduler sections (the HF loop builds those from `TrainingArguments`, so the client
    optimiser needs `zero_allow_untested_optimizer`, as HF sets it). `gradient_accumulation_steps` and an `"auto"`
    `train_batch_size` are left to the strategy, which sets them for the started processes (`deepspeed_batch_config`).
    `gradient_clipping` is HF's `max_grad_norm` where `"auto"`; absent, DeepSpeed does not clip, as under HF."""
    raw = load_deepspeed_config(args.deepspeed)
    for section in _HF_OWNED_DS_SECTIONS:
        if raw.pop(section, None) is not None:
            logger.warning(
                "The DeepSpeed config's %r section is ignored: the %s comes from TrainingArguments (`%s`).",
                section,
                section,
                "optim" if section == "optimizer" else "lr_scheduler_type",
            )
    auto_total = raw.get("train_batch_size", "auto") == "auto"
    if "gradient_clipping" not in raw and args.max_grad_norm > 0:
        logger.warning(
            "The DeepSpeed config has no `gradient_clipping`: DeepSpeed does not clip, as under transformers.Trainer; "
            'set it to "auto" to clip at `max_grad_norm`=%s.',
            args.max_grad_norm,
        )
    config = _resolve_auto_values(args, raw, model, 0 if model is not None else None)
    config.pop("gradient_accumulation_steps", None)  # HF's value, checked above; set with the world size
    if auto_total:
        config.pop("train_batch_size", None)
    config.setdefault("gradient_clipping", 0.0)
    config["zero_allow_untested_optimizer"] = True
    return config


def deepspeed_batch_config(
    config: dict[str, Any], *, gradient_accumulation_steps: int, micro_batch_size: int, world_size: int
) -> dict[str, int]:
    """The batch keys DeepSpeed gets: HF's accumulation and micro-batch (the config's where it has them), and
    `train_batch_size` = micro-batch x accumulation x world size, HF's formula with the processes actually started.
    A numeric `train_batch_size` in the config that disagrees raises, naming the factors."""
    accumulation = int(config.get("gradient_accumulation_steps", gradient_accumulation_steps))
    micro = int(config.get("train_micro_batch_size_per_gpu", micro_batch_size))
    total = micro * accumulation * world_size
    given = config.get("train_batch_size")
    if given is not None and given != total:
        raise ValueError(
            f"The DeepSpeed config's `train_batch_size`={given} is not train_micro_batch_size_per_gpu ({micro}) x "
            f'gradient_accumulation_steps ({accumulation}) x world size ({world_size}) = {total}; set it to "auto".'
        )
    return {
        "gradient_accumulation_steps": accumulation,
        "train_micro_batch_size_per_gpu": micro,
        "train_batch_size": total,
    }


class HFDeepSpeedStrategy(DeepSpeedStrategy):
    """Lightning's `DeepSpeedStrategy` with HF's gradient accumulation handed to the engine.

    Lightning sets the engine's `gradient_accumulation_steps` from `accumulate_grad_batches`, which must stay 1 under
    the manual optimisation hf_lightning runs; this strategy sets HF's value instead (`deepspeed_batch_config`). The
    step then matches transformers.Trainer + accelerate (`Accelerator.backward`, `DeepSpeedEngineWrapper`): the
    module marks each micro-batch's boundary (`engine.set_gradient_accumulation_boundary`, True on the last one of
    HF's window, so a short last window of an epoch steps too), back-propagates with `engine.backward(loss,
    scale_wrt_gas=False)` (the loss is already divided by the window size or normalised by `num_items_in_batch` in
    `training_step`, as HF does: no second division), calls `engine.step()` once at the window's end (DeepSpeed
    reduces, clips at `gradient_clipping`, steps and zeroes there), logs `engine.get_global_grad_norm()` as
    `grad_norm` and skips the HF scheduler step when the engine's optimiser overflowed (fp16). One difference: for
    a config without `gradient_accumulation_steps` accelerate writes 1, here it is HF's value; with the boundary
    and the scaling owned by the loop, that only changes DeepSpeed's `train_batch_size` bookkeeping.
    """

    def __init__(
        self,
        *args: Any,
        gradient_accumulation_steps: int = 1,
        train_micro_batch_size_per_gpu: int = 1,
        gradient_clipping: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.hf_gradient_accumulation_steps = gradient_accumulation_steps
        self.hf_micro_batch_size = train_micro_batch_size_per_gpu
        self.hf_gradient_clipping = gradient_clipping

    def _format_batch_size_and_grad_accum_config(self) -> None:
        batch = deepspeed_batch_config(
            self.config,
            gradient_accumulation_steps=self.hf_gradient_accumulation_steps,
            micro_batch_size=self.hf_micro_batch_size,
            world_size=self.world_size,
        )
        self.config.update(batch)
        self.config.setdefault("gradient_clipping", self.hf_gradient_clipping)
