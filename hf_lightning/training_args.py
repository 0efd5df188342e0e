"""`TrainingArguments` for hf_lightning: Hugging Face's arguments plus Lightning fields and v4 aliases.

Every field of `transformers.TrainingArguments` keeps its name, default and validation. On top of that:

* Lightning fields (`accelerator`, `devices`, `num_nodes`, `strategy`, `precision`, `plugins`) whose defaults let
  Lightning decide;
* transformers v4 names (`evaluation_strategy`, `warmup_ratio`, `no_cuda`, ...) accepted with a `FutureWarning`
  and translated to their v5 meaning;
* extra validation of values transformers lets through but that would only fail (or misbehave) during training.
"""

import copy
import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any, Union

import torch
import transformers
from transformers.trainer_pt_utils import AcceleratorConfig
from transformers.trainer_utils import HubStrategy, IntervalStrategy, SaveStrategy, SchedulerType
from transformers.training_args import OptimizerNames, ParallelMode

from hf_lightning import compat
from hf_lightning.accelerator_config import apply_gradient_accumulation_kwargs, refuse_configured_state
from hf_lightning.argument_types import check_string_values
from hf_lightning.compat import check_newer_arguments, check_newer_value, has_training_argument, hf_default
from hf_lightning.field_accounting import refuse_unsupported
from hf_lightning.lightning_kwargs import map_into_arguments
from hf_lightning.process_environment import ProcessEnvironment, accelerate_wants_cpu

__all__ = [
    "DEFAULT_OUTPUT_DIR",
    "TrainingArguments",
    "lightning_accelerator",
    "lightning_precision",
    "to_hf_lightning_args",
]

# `output_dir` of the arguments a Trainer builds when given none (transformers' choice; `tests/test_canaries.py`).
DEFAULT_OUTPUT_DIR = "tmp_trainer"

_LEGACY_HELP = "Deprecated (transformers v4): "

# v4 names that are accepted but have no effect in v5: name -> what to use instead.
_IGNORED_LEGACY = {
    "jit_mode_eval": "`torch_compile`",
    "use_ipex": "`torch_compile` or the Lightning `accelerator`",
    "fp16_opt_level": "`fp16`/`bf16` or `precision` (torch.amp is always used)",
    "fp16_backend": "`fp16`/`bf16` or `precision` (torch.amp is always used)",
    "half_precision_backend": "`fp16`/`bf16` or `precision` (torch.amp is always used)",
}

_ENUM_FIELDS = {
    "optim": OptimizerNames,
    "lr_scheduler_type": SchedulerType,
    "eval_strategy": IntervalStrategy,
    "logging_strategy": IntervalStrategy,
    "save_strategy": SaveStrategy,
    "hub_strategy": HubStrategy,
}

# Accelerator names Lightning knows without consulting its registry.
_KNOWN_ACCELERATORS = frozenset({"auto", "cpu", "gpu", "cuda", "mps", "tpu"})
_FP16_PRECISIONS = frozenset({"16-mixed", "16-true", "transformer-engine-float16"})
_BF16_PRECISIONS = frozenset({"bf16-mixed", "bf16-true", "transformer-engine"})


_NEWER_HELP = "Needs a later transformers: "


def _newer(name: str, flag: bool = False) -> Any:
    """An argument of a later transformers release, declared where the installed one lacks it: always None; setting it
    fails naming the release (`compat.check_newer_arguments`)."""
    metadata: dict[str, Any] = {"help": f"{_NEWER_HELP}>= {compat.SINCE[name]} (not installed)."}
    if flag:
        metadata.update(nargs="?", const=True)
    return field(default=None, metadata=metadata)


def _legacy(help_text: str, flag: bool = False) -> Any:
    """A deprecated v4 field defaulting to None; `flag=True` also accepts a bare `--flag` on the command line."""
    metadata: dict[str, Any] = {"help": _LEGACY_HELP + help_text}
    if flag:
        metadata.update(nargs="?", const=True)
    return field(default=None, metadata=metadata)


def _enum_value(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _serialisable(value: Any) -> Any:
    """JSON-friendly form of a Lightning field: objects become their class name."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_serialisable(v) for v in value]
    if isinstance(value, dict):
        return {k: _serialisable(v) for k, v in value.items()}
    return type(value).__name__


def _parse_devices(value: Any) -> str | int | list[int]:
    """Normalise `devices`: "auto", "2" -> 2, "0,1" -> [0, 1]."""
    if isinstance(value, str):
        text = value.strip().strip("[]").strip()
        if text in ("", "auto"):
            return "auto"
        try:
            parsed: Any = [int(p) for p in text.split(",") if p.strip()] if "," in text else int(text)
        except ValueError:
            raise ValueError(
                f"`devices` must be 'auto', an int or a comma-separated list of ints, got {value!r}"
            ) from None
        return _parse_devices(parsed)
    if isinstance(value, bool) or not isinstance(value, (int, list, tuple)):
        raise ValueError(f"`devices` must be 'auto', an int or a list of ints, got {value!r}")
    if isinstance(value, int):
        if value == 0 or value < -1:
            raise ValueError(f"`devices` must be a positive int or -1 (all devices), got {value}")
        return value
    ids = list(value)
    if not ids or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids):
        raise ValueError(f"`devices` as a list must hold non-negative device indices, got {value!r}")
    return ids


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    """`transformers.TrainingArguments` plus Lightning fields and transformers v4 aliases."""

    # --- Lightning ---
    # Union order matters for HfArgumentParser: `None` then `str` makes the CLI parse the value as a string.
    accelerator: Union[None, str, Any] = field(
        default="auto",
        metadata={"help": "Lightning accelerator: 'auto', 'cpu', 'gpu', 'cuda', 'mps', 'tpu' (or an Accelerator)."},
    )
    devices: Union[None, str, int, list[int]] = field(
        default="auto",
        metadata={"help": "Lightning devices: 'auto', a count ('2', '-1' for all) or device ids ('0,1')."},
    )
    num_nodes: int = field(default=1, metadata={"help": "Number of nodes for distributed training (Lightning)."})
    strategy: Union[None, str, Any] = field(
        default="auto",
        metadata={"help": "Lightning strategy: 'auto', 'ddp', 'fsdp', 'deepspeed', ... or a `Strategy` object."},
    )
    precision: Union[None, str] = field(
        default=None,
        metadata={
            "help": "Lightning precision, e.g. '32-true', '16-mixed', 'bf16-mixed'. Unset: derived from `fp16`/`bf16`."
        },
    )
    plugins: Union[None, str, Any] = field(
        default=None, metadata={"help": "Lightning plugins (an object, a registered name, or a list of them)."}
    )
    profiler: Union[None, str, Any] = field(
        default=None, metadata={"help": "Lightning profiler: 'simple', 'advanced', 'pytorch' or a Profiler object."}
    )
    auto_lr_find: bool = field(
        default=False,
        metadata={
            "help": "Before training, run the learning-rate range test (Trainer.lr_find, Lightning's LR finder) and "
            "train with its suggestion instead of learning_rate (see hf_lightning/lr_finder.py)."
        },
    )
    lr_find_kwargs: Union[None, str, dict] = field(
        default=None,
        metadata={
            "help": "Options of the range test auto_lr_find runs (a dict, or JSON on the command line): min_lr, "
            "max_lr, num_training, mode, early_stop_threshold."
        },
    )
    auto_scale_batch_size: Union[None, str] = field(
        default=None,
        metadata={
            "help": "Before training, search upward for the largest micro-batch that fits ('power' or 'binsearch', "
            "Lightning's strategies) and keep the effective batch by lowering gradient_accumulation_steps "
            "(see hf_lightning/batch_size_finder.py)."
        },
    )
    log_throughput: bool = field(
        default=False,
        metadata={
            "help": "Add samples_per_second, tokens_per_second, flops_per_second and (where the device's peak FLOPs "
            "are known) mfu to every training log (see hf_lightning/throughput.py)."
        },
    )
    checkpoint_on_preemption: bool = field(
        default=False,
        metadata={
            "help": "On SIGTERM or SIGUSR1 (SLURM's pre-timeout signal) write a checkpoint at the end of the current "
            "optimiser step and exit (SLURM: requeue the job); the next train() in output_dir resumes from it "
            "(see hf_lightning/preemption.py)."
        },
    )
    keep_freed_host_memory: bool = field(
        default=True,
        metadata={
            "help": "Training on CPU with glibc: keep memory freed between steps mapped during train() instead of "
            "handing it back to the kernel and faulting it in again each step (see hf_lightning/host_memory.py)."
        },
    )
    lightning_trainer_kwargs: Union[None, str, dict] = field(
        default=None,
        metadata={
            "help": "Extra `lightning.Trainer` keyword arguments (a dict, or JSON on the command line); they override "
            "the translated ones. `callbacks` and `logger` are added to the Trainer's own."
        },
    )

    # --- transformers v4 names (deprecated; translated in __post_init__) ---
    # Older 5.x releases still have some of them (`warmup_ratio`, `logging_dir` before 5.15, `group_by_length` before
    # 5.2) as fields of their own: there transformers' field and its handling stay, untouched.
    evaluation_strategy: Union[IntervalStrategy, str, None] = _legacy("use `eval_strategy`.")
    overwrite_output_dir: Union[bool, None] = _legacy("overwrite the output directory (kept as is).", flag=True)
    if not has_training_argument("warmup_ratio"):
        warmup_ratio: Union[float, None] = _legacy("warmup steps = ceil(ratio * total steps); use `warmup_steps`.")
    if not has_training_argument("logging_dir"):
        logging_dir: Union[str, None] = _legacy("TensorBoard dir; use env `TENSORBOARD_LOGGING_DIR`.")
    save_safetensors: Union[bool, None] = _legacy("v5 always saves safetensors.", flag=True)
    jit_mode_eval: Union[bool, None] = _legacy("ignored; use `torch_compile`.", flag=True)
    use_ipex: Union[bool, None] = _legacy("ignored.", flag=True)
    fp16_opt_level: Union[str, None] = _legacy("ignored (apex).")
    fp16_backend: Union[str, None] = _legacy("ignored; torch.amp is always used.")
    half_precision_backend: Union[str, None] = _legacy("ignored; torch.amp is always used.")
    no_cuda: Union[bool, None] = _legacy("use `use_cpu`.", flag=True)
    per_gpu_train_batch_size: Union[int, None] = _legacy("use `per_device_train_batch_size`.")
    per_gpu_eval_batch_size: Union[int, None] = _legacy("use `per_device_eval_batch_size`.")
    if not has_training_argument("group_by_length"):
        group_by_length: Union[bool, None] = _legacy("use `train_sampling_strategy='group_by_length'`.", flag=True)
    include_inputs_for_metrics: Union[bool, None] = _legacy("use `include_for_metrics=['inputs']`.", flag=True)

    # --- arguments of later transformers releases (`compat.SINCE`) ---
    # Declared only where the installed transformers lacks them, so that setting one (also on the command line)
    # fails naming the release that has it instead of as an unknown argument.
    if not has_training_argument("train_sampling_strategy"):
        train_sampling_strategy: Union[str, None] = _newer("train_sampling_strategy")
    if not has_training_argument("ddp_static_graph"):
        ddp_static_graph: Union[bool, None] = _newer("ddp_static_graph", flag=True)
    if not has_training_argument("trackio_bucket_id"):
        trackio_bucket_id: Union[str, None] = _newer("trackio_bucket_id")
    if not has_training_argument("trackio_static_space_id"):
        trackio_static_space_id: Union[str, None] = _newer("trackio_static_space_id")
    if not has_training_argument("dataloader_in_order"):
        dataloader_in_order: Union[bool, None] = _newer("dataloader_in_order", flag=True)
    if not has_training_argument("dataloader_multiprocessing_context"):
        dataloader_multiprocessing_context: Union[str, None] = _newer("dataloader_multiprocessing_context")
    if not has_training_argument("activation_checkpointing"):
        activation_checkpointing: Union[bool, None] = _newer("activation_checkpointing", flag=True)
    if not has_training_argument("activation_checkpointing_kwargs"):
        activation_checkpointing_kwargs: Union[dict, str, None] = _newer("activation_checkpointing_kwargs")

    def __post_init__(self) -> None:
        check_newer_arguments(self)
        check_string_values(self)
        self._translate_legacy()
        refuse_unsupported(self, handled=LEGACY_FIELDS)
        self._check_lightning_fields()
        self._check_values()
        # HF resolves `deepspeed` through a check that the package is installed; hf_lightning resolves the "auto"
        # values itself (`strategies.deepspeed_config`), so the arguments build (and translate) without it.
        deepspeed, self.deepspeed = self.deepspeed, None
        super().__post_init__()
        apply_gradient_accumulation_kwargs(self)
        self.deepspeed = deepspeed
        if deepspeed:
            from hf_lightning.strategies import deepspeed_config

            deepspeed_config(self)

    # --- devices and processes: Lightning's, not accelerate's ---

    @cached_property
    def _setup_devices(self) -> torch.device:
        """The device without initialising a process group: Lightning's strategy owns that (an accelerate
        `PartialState` here would bind the rendezvous port Lightning is about to use)."""
        self.distributed_state = None
        if isinstance(self.accelerator_config, AcceleratorConfig):
            refuse_configured_state(self.accelerator_config.pop("use_configured_state", False))
        on_cpu = self.use_cpu or accelerate_wants_cpu() or not torch.cuda.is_available() or self.accelerator == "cpu"
        self._n_gpu = 0 if on_cpu else 1
        if on_cpu:
            return torch.device("cpu")
        device = torch.device("cuda", self.local_process_index)
        torch.cuda.set_device(device)
        return device

    def use_lightning_processes(self, world_size: int, rank: int, local_rank: int) -> None:
        """The process layout of the `lightning.Trainer` running these arguments: `world_size`, `process_index` and
        `local_process_index` report it from now on (the loop calls this once it has the trainer)."""
        self._lightning_processes = (world_size, rank, local_rank)

    def _process_info(self) -> tuple[int, int, int]:
        """(world size, global rank, local rank): as the Lightning trainer set them, else the process group's, else
        the launcher's (torchrun, SLURM ...: `hf_lightning.process_environment`)."""
        info = getattr(self, "_lightning_processes", None)
        if info is not None:
            return info
        env = ProcessEnvironment.detect()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank(), env.local_rank
        return env.world_size, env.rank, env.local_rank

    @property
    def world_size(self) -> int:
        return self._process_info()[0]

    @property
    def process_index(self) -> int:
        return self._process_info()[1]

    @property
    def local_process_index(self) -> int:
        return self._process_info()[2]

    @property
    def parallel_mode(self) -> ParallelMode:
        return ParallelMode.DISTRIBUTED if self.world_size > 1 else ParallelMode.NOT_PARALLEL

    # --- v4 compatibility ---

    @staticmethod
    def _warn(old: str, advice: str) -> None:
        warnings.warn(f"`{old}` is a deprecated transformers v4 argument: {advice}", FutureWarning, stacklevel=5)

    def _legacy_value(self, name: str) -> Any:
        """The value of the v4 name `name` when it is hf_lightning's alias (not a field of the installed
        transformers)."""
        return getattr(self, name) if name in V4_ALIASES else None

    def _translate_legacy(self) -> None:
        if self.evaluation_strategy is not None:
            self._warn("evaluation_strategy", "use `eval_strategy` instead.")
            old = _enum_value(self.evaluation_strategy)
            current = _enum_value(self.eval_strategy)
            if current != hf_default("eval_strategy") and current != old:
                raise ValueError(
                    f"Both `evaluation_strategy`={old!r} and `eval_strategy`={current!r} were given; "
                    "use only `eval_strategy`."
                )
            self.eval_strategy = old

        if self.overwrite_output_dir is not None:
            self._warn("overwrite_output_dir", "v5 has no such argument (use a fresh `output_dir`); the value is kept.")

        if self._legacy_value("warmup_ratio") is not None:
            self._warn("warmup_ratio", "use `warmup_steps` instead (a float < 1 is a ratio there).")
            if not 0 <= self.warmup_ratio <= 1:
                raise ValueError(f"`warmup_ratio` must be in [0, 1], got {self.warmup_ratio}")
            if self.warmup_steps != 0:
                warnings.warn(
                    f"Both `warmup_ratio`={self.warmup_ratio} and `warmup_steps`={self.warmup_steps} were given: "
                    "`warmup_steps` overrides `warmup_ratio`, as in transformers v4.",
                    UserWarning,
                    stacklevel=4,
                )

        if self._legacy_value("logging_dir") is not None:
            self._warn("logging_dir", "set env `TENSORBOARD_LOGGING_DIR` instead; the value is kept.")

        if self.save_safetensors is not None:
            note = "drop it." if self.save_safetensors else "`save_safetensors=False` is ignored."
            self._warn("save_safetensors", f"transformers v5 always writes safetensors; {note}")

        for name, new in _IGNORED_LEGACY.items():
            if getattr(self, name) is not None:
                self._warn(name, f"it is ignored; use {new} instead.")

        if self.no_cuda is not None:
            self._warn("no_cuda", "use `use_cpu` instead.")
            if self.use_cpu and not self.no_cuda:
                raise ValueError("`no_cuda`=False contradicts `use_cpu`=True; use only `use_cpu`.")
            self.use_cpu = bool(self.no_cuda)

        for split in ("train", "eval"):
            old_name, new_name = f"per_gpu_{split}_batch_size", f"per_device_{split}_batch_size"
            old, current = getattr(self, old_name), getattr(self, new_name)
            if old is None:
                continue
            self._warn(old_name, f"use `{new_name}` instead.")
            if current != hf_default(new_name) and current != old:
                raise ValueError(
                    f"Both `{old_name}`={old} and `{new_name}`={current} were given; use only `{new_name}`."
                )
            setattr(self, new_name, old)

        if self._legacy_value("group_by_length") is not None:
            self._warn("group_by_length", "use `train_sampling_strategy='group_by_length'` instead.")
            if self.group_by_length:
                current = self.train_sampling_strategy
                if current not in (hf_default("train_sampling_strategy"), "group_by_length"):
                    raise ValueError(
                        f"`group_by_length`=True conflicts with `train_sampling_strategy`={current!r}; "
                        "use only `train_sampling_strategy`."
                    )
                self.train_sampling_strategy = "group_by_length"

        if self.include_inputs_for_metrics is not None:
            self._warn("include_inputs_for_metrics", "use `include_for_metrics=['inputs']` instead.")
            if self.include_inputs_for_metrics and "inputs" not in (self.include_for_metrics or []):
                self.include_for_metrics = [*(self.include_for_metrics or []), "inputs"]

    # --- validation ---

    def _check_lightning_fields(self) -> None:
        if self.accelerator is None:
            self.accelerator = "auto"
        if isinstance(self.accelerator, str):
            self.accelerator = self.accelerator.lower()
            if self.accelerator not in _KNOWN_ACCELERATORS:
                from lightning.pytorch.accelerators import AcceleratorRegistry

                if self.accelerator not in AcceleratorRegistry.available_accelerators():
                    raise ValueError(
                        f"Unknown `accelerator`={self.accelerator!r}; expected one of "
                        f"{sorted(_KNOWN_ACCELERATORS | set(AcceleratorRegistry.available_accelerators()))}."
                    )
            if self.use_cpu and self.accelerator not in ("auto", "cpu"):
                raise ValueError(f"`use_cpu`=True contradicts `accelerator`={self.accelerator!r}.")
            if self.accelerator == "cpu":  # HF's name for it (its bf16 check, CPU data loading) is `use_cpu`
                self.use_cpu = True
        else:
            from lightning.pytorch.accelerators import Accelerator

            if not isinstance(self.accelerator, Accelerator):
                raise ValueError(f"`accelerator` must be a name or an Accelerator, got {self.accelerator!r}")

        self.devices = _parse_devices("auto" if self.devices is None else self.devices)
        if isinstance(self.lightning_trainer_kwargs, str):
            import json

            try:
                self.lightning_trainer_kwargs = json.loads(self.lightning_trainer_kwargs)
            except json.JSONDecodeError as exc:
                raise ValueError(f"`lightning_trainer_kwargs` is not valid JSON: {exc}") from None
        if self.auto_scale_batch_size is True:
            self.auto_scale_batch_size = "power"
        if self.auto_scale_batch_size in (False, "", "none", "None"):
            self.auto_scale_batch_size = None
        if self.auto_scale_batch_size is not None and self.auto_scale_batch_size not in ("power", "binsearch"):
            raise ValueError(
                f"`auto_scale_batch_size` must be 'power' or 'binsearch' (or unset), got {self.auto_scale_batch_size!r}"
            )
        if isinstance(self.lr_find_kwargs, str):
            import json

            try:
                self.lr_find_kwargs = json.loads(self.lr_find_kwargs)
            except json.JSONDecodeError as exc:
                raise ValueError(f"`lr_find_kwargs` is not valid JSON: {exc}") from None
        if self.lr_find_kwargs is not None:
            if not isinstance(self.lr_find_kwargs, dict):
                raise ValueError(f"`lr_find_kwargs` must be a dict, got {self.lr_find_kwargs!r}")
            from hf_lightning.lr_finder import check_lr_find_options

            check_lr_find_options(self.lr_find_kwargs)
        if self.lightning_trainer_kwargs is not None and not isinstance(self.lightning_trainer_kwargs, dict):
            raise ValueError(f"`lightning_trainer_kwargs` must be a dict, got {self.lightning_trainer_kwargs!r}")
        if self.lightning_trainer_kwargs:  # `max_steps`, `gradient_clip_val` ... become the HF fields they mean
            self.lightning_trainer_kwargs = map_into_arguments(self, self.lightning_trainer_kwargs)
        if isinstance(self.num_nodes, bool) or not isinstance(self.num_nodes, int) or self.num_nodes < 1:
            raise ValueError(f"`num_nodes` must be an int >= 1, got {self.num_nodes!r}")

        if self.strategy is None:
            self.strategy = "auto"
        if isinstance(self.strategy, str):
            self.strategy = self.strategy.lower()
            if self.strategy != "auto":
                from lightning.pytorch.strategies import StrategyRegistry

                if self.strategy not in StrategyRegistry.available_strategies():
                    raise ValueError(
                        f"Unknown `strategy`={self.strategy!r}; expected 'auto', a registered name "
                        f"({', '.join(StrategyRegistry.available_strategies()[:6])}, ...) or a Strategy object."
                    )
        else:
            from lightning.pytorch.strategies import Strategy

            if not isinstance(self.strategy, Strategy):
                raise ValueError(f"`strategy` must be a name or a Lightning Strategy, got {self.strategy!r}")

        if self.precision is not None:
            self.precision = _normalise_precision(self.precision)
            if self.fp16 and self.precision not in _FP16_PRECISIONS:
                raise ValueError(f"`fp16`=True contradicts `precision`={self.precision!r}.")
            if self.bf16 and self.precision not in _BF16_PRECISIONS:
                raise ValueError(f"`bf16`=True contradicts `precision`={self.precision!r}.")

    def _check_values(self) -> None:
        for name, enum_cls in _ENUM_FIELDS.items():
            value = getattr(self, name)
            check_newer_value(name, _enum_value(value))
            try:
                enum_cls(value)
            except ValueError:
                choices = [e.value for e in enum_cls]
                raise ValueError(f"Unknown `{name}`={value!r}; expected one of {choices}.") from None

        def require(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"`{name}` must be {rule}, got {getattr(self, name)!r}")

        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            require(getattr(self, name) >= 1, name, ">= 1")
        for name in ("learning_rate", "num_train_epochs", "weight_decay", "adam_epsilon", "eval_delay"):
            require(getattr(self, name) >= 0, name, ">= 0")
        for name in ("adam_beta1", "adam_beta2"):
            require(0 <= getattr(self, name) < 1, name, "in [0, 1)")
        require(self.max_grad_norm is None or self.max_grad_norm >= 0, "max_grad_norm", ">= 0 (0 disables clipping)")
        require(0 <= self.label_smoothing_factor <= 1, "label_smoothing_factor", "in [0, 1]")
        require(self.dataloader_num_workers >= 0, "dataloader_num_workers", ">= 0")
        if self.dataloader_persistent_workers and self.dataloader_num_workers == 0:
            raise ValueError(
                "`dataloader_persistent_workers`=True needs `dataloader_num_workers` > 0: torch's DataLoader refuses "
                "persistent workers without workers (transformers fails when it builds the first loader)."
            )
        require(self.save_total_limit is None or self.save_total_limit >= 0, "save_total_limit", ">= 0")
        require(
            self.eval_accumulation_steps is None or self.eval_accumulation_steps >= 1, "eval_accumulation_steps", ">= 1"
        )
        # A strategy of "steps" needs a positive interval (logging_steps=0 and eval_steps=0/None are HF's business:
        # the first is HF's error, the second falls back to logging_steps).
        if _enum_value(self.logging_strategy) == "steps":
            require(self.logging_steps >= 0, "logging_steps", "> 0 when logging_strategy='steps'")
        if _enum_value(self.eval_strategy) == "steps" and self.eval_steps is not None:
            require(self.eval_steps >= 0, "eval_steps", "> 0 when eval_strategy='steps'")
        if _enum_value(self.save_strategy) == "steps":
            require(self.save_steps > 0, "save_steps", "> 0 when save_strategy='steps'")
        if has_training_argument("train_sampling_strategy"):
            check_newer_value("train_sampling_strategy", self.train_sampling_strategy)
            sampling = next(f for f in dataclasses.fields(self) if f.name == "train_sampling_strategy")
            choices = sampling.metadata.get("choices")
            if choices and self.train_sampling_strategy not in choices:
                raise ValueError(
                    f"`train_sampling_strategy` must be one of {choices}, got {self.train_sampling_strategy!r}"
                )

    # --- behaviour ---

    def get_warmup_steps(self, num_training_steps: int) -> int:
        """Warmup steps; the v4 `warmup_ratio` (if set) means `ceil(num_training_steps * warmup_ratio)` unless
        `warmup_steps` is set too, which overrides it (v4's rule)."""
        if self._legacy_value("warmup_ratio") is not None and self.warmup_steps == 0:
            return math.ceil(num_training_steps * self.warmup_ratio)
        return super().get_warmup_steps(num_training_steps)

    def to_dict(self) -> dict[str, Any]:
        """HF's `to_dict`, minus unset v4 names, with Lightning objects replaced by their class names."""
        d = super().to_dict()
        for name in NEWER_FIELDS:
            d.pop(name, None)
        for name in V4_ALIASES:
            if d.get(name) is None:
                d.pop(name, None)
        for name in ("accelerator", "strategy", "plugins", "profiler", "lightning_trainer_kwargs"):
            d[name] = _serialisable(d[name])
        return d

    def __str__(self) -> str:
        # HF's __str__ uses `asdict`, which deep-copies Lightning objects such as a Strategy; avoid that.
        d = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in NEWER_FIELDS and not (f.name in V4_ALIASES and getattr(self, f.name) is None)
        }
        d = {k: f"<{k.upper()}>" if k.endswith("_token") else v for k, v in d.items()}
        attrs = "".join(f"{k}={v},\n" for k, v in sorted(d.items()))
        return f"{self.__class__.__name__}(\n{attrs})"

    __repr__ = __str__


NEWER_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(TrainingArguments) if f.metadata.get("help", "").startswith(_NEWER_HELP)
)
"""Arguments of later transformers releases the installed one lacks: declared to refuse them by name, never set, left
out of `to_dict()`."""

V4_ALIASES: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(TrainingArguments) if f.metadata.get("help", "").startswith(_LEGACY_HELP)
)
"""The v4 names hf_lightning declares and translates (in `__post_init__`); `to_dict()` omits them while they are
None."""

LEGACY_FIELDS: tuple[str, ...] = V4_ALIASES + tuple(
    name for name in ("warmup_ratio", "logging_dir", "group_by_length") if has_training_argument(name)
)
"""The v4 names accepted for backward compatibility: hf_lightning's aliases, and the deprecated fields older 5.x
releases still have themselves (transformers' meaning applies there, as does its `to_dict`)."""


def _normalise_precision(value: Any) -> str:
    """Validate a Lightning precision string and resolve aliases ("bf16" -> "bf16-mixed")."""
    from typing import get_args

    from lightning.fabric.plugins.precision.precision import (
        _PRECISION_INPUT_STR,
        _PRECISION_INPUT_STR_ALIAS_CONVERSION,
    )

    text = str(value).strip().lower()
    text = _PRECISION_INPUT_STR_ALIAS_CONVERSION.get(text, text)
    allowed = get_args(_PRECISION_INPUT_STR)
    if text not in allowed:
        raise ValueError(f"Unknown `precision`={value!r}; expected one of {list(allowed)}.")
    return text


def to_hf_lightning_args(args: transformers.TrainingArguments) -> TrainingArguments:
    """Convert a `transformers.TrainingArguments` into hf_lightning's subclass (ours are returned unchanged)."""
    if isinstance(args, TrainingArguments):
        return args
    return rebuild_args(args, TrainingArguments)


def rebuild_args(args: transformers.TrainingArguments, cls: type[TrainingArguments]) -> Any:
    """`args` rebuilt as `cls` from its init fields: fields `cls` lacks are dropped with a warning, fields `args`
    lacks take their defaults, mutable values are copied (HF's device setup pops keys from `accelerator_config`)."""
    if not isinstance(args, transformers.TrainingArguments):
        raise TypeError(f"Expected a transformers.TrainingArguments, got {type(args).__name__}")
    ours = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    dropped = []
    for f in dataclasses.fields(args):
        if not f.init:
            continue
        if f.name not in ours:
            dropped.append(f.name)
            continue
        value = getattr(args, f.name)
        mutable = isinstance(value, (list, dict, AcceleratorConfig)) or hasattr(value, "to_diff_dict")
        kwargs[f.name] = copy.deepcopy(value) if mutable else value
    if dropped:
        warnings.warn(
            f"Fields of {type(args).__name__} not known to hf_lightning were dropped: {dropped}", stacklevel=3
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # v4 names were already reported when `args` was built
        return cls(**kwargs)


def lightning_accelerator(args: transformers.TrainingArguments) -> Any:
    """The Lightning `accelerator`: "cpu" when `use_cpu` is set (or `accelerate launch --cpu` set
    `ACCELERATE_USE_CPU`, which transformers honours), else `args.accelerator` (default "auto")."""
    if args.use_cpu or accelerate_wants_cpu():
        return "cpu"
    return getattr(args, "accelerator", "auto")


def _runs_on_cpu(args: transformers.TrainingArguments) -> bool:
    accelerator = lightning_accelerator(args)
    if accelerator == "cpu":
        return True
    if accelerator in ("auto", "gpu", "cuda") and not torch.cuda.is_available():
        return not (accelerator != "cuda" and torch.backends.mps.is_available())
    return False


def lightning_precision(args: transformers.TrainingArguments) -> str:
    """The Lightning `precision`: `args.precision`, else "16-mixed" (fp16; "32-true" on CPU, as transformers does),
    "bf16-mixed" (bf16), else what `accelerate launch --mixed_precision` asked for (HF reads it into
    `args.mixed_precision`), else "32-true"."""
    precision = getattr(args, "precision", None)
    launched = getattr(args, "mixed_precision", "no")  # HF: ACCELERATE_MIXED_PRECISION, then fp16 / bf16
    fp16 = args.fp16 or launched == "fp16"
    if precision is not None:
        precision = _normalise_precision(precision)
        if precision == "16-mixed" and _runs_on_cpu(args):
            raise ValueError(
                "`precision`='16-mixed' was requested but the run is on CPU (`use_cpu` or no CUDA), where Lightning "
                "would silently switch to bf16. Use 'bf16-mixed' or '32-true' (with `fp16`=True and no `precision`, "
                "a CPU run trains in fp32, as transformers does)."
            )
    elif fp16 and _runs_on_cpu(args):
        # accelerate enables fp16 autocast and loss scaling only off the CPU: transformers.Trainer trains in fp32.
        warnings.warn(
            "`fp16`=True but the run is on CPU (`use_cpu` or no CUDA), which has no fp16 mixed precision: training "
            "in fp32, as transformers.Trainer does. Use `bf16` for mixed precision on CPU.",
            UserWarning,
            stacklevel=2,
        )
        precision = "32-true"
    elif fp16:
        precision = "16-mixed"
    elif args.bf16 or launched == "bf16":
        precision = "bf16-mixed"
    elif launched not in ("no", None):
        raise ValueError(
            f"`accelerate launch --mixed_precision {launched}` (ACCELERATE_MIXED_PRECISION) is not supported; use "
            "`bf16`/`fp16` or a Lightning `precision` (e.g. 'transformer-engine')."
        )
    else:
        precision = "32-true"
    return precision
