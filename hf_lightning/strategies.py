"""HF's distributed arguments -> a Lightning `Strategy`.

`transformers.TrainingArguments` describes distribution with `ddp_*`, `fsdp` / `fsdp_config` and `deepspeed`; Lightning
with a `strategy`. `build_strategy` turns the first into the second, so the HF arguments keep their meaning:

* DDP (`strategy="ddp"`, its registered variants, or "auto" on several processes): `ddp_backend`, `ddp_timeout`,
  `ddp_find_unused_parameters` (HF's default: True unless activation checkpointing), `ddp_bucket_cap_mb`,
  `ddp_broadcast_buffers`, `ddp_static_graph` become `DDPStrategy` arguments. In a notebook the process start
  method is "fork" (Lightning's `ddp_notebook`): the other launchers cannot run from an interactive session. Under
  a launcher that already started the processes (torchrun, SLURM, `hf_lightning.launchers`) Lightning starts none,
  whatever the name (`ddp_start_method`).
* FSDP (`fsdp=True` / `fsdp_config`, or `strategy="fsdp"`): sharding, auto-wrap policy (from
  `transformer_layer_cls_to_wrap`, else the model's `_no_split_modules`), CPU offload, activation checkpointing,
  prefetching and state-dict type become `FSDPStrategy` arguments. The HF model itself is wrapped
  (`shard_hf_model`), as accelerate wraps it for HF, not the LightningModule.
* DeepSpeed (`deepspeed=` a dict or JSON path, or `strategy="deepspeed..."`): HF's `"auto"` values are resolved
  from the arguments exactly as `HfTrainerDeepSpeedConfig` does, and `HFDeepSpeedStrategy` hands the engine HF's
  accumulation, micro-batch and clipping (both in `hf_lightning.deepspeed_integration`).

Under FSDP and DeepSpeed, `full_state_dict` / `full_optimizer_state_dict` / `save_engine_checkpoint` give the
checkpoint code what HF writes: the gathered weights and optimizer state (FSDP), the engine's own partitions
(DeepSpeed).

A `Strategy` object in `args.strategy` is used as given. What a strategy cannot do raises before training.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from datetime import timedelta
from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from torch import nn
from typing_extensions import override

from hf_lightning.compat import (
    activation_checkpointing,
    hf_default,
    model_is_activation_checkpointing,
    training_argument,
)
from hf_lightning.deepspeed_integration import (
    HFDeepSpeedStrategy,
    deepspeed_batch_config,
    deepspeed_config,
    deepspeed_strategy_config,
    load_deepspeed_config,
)
from hf_lightning.process_environment import ProcessEnvironment, lightning_devices, lightning_num_nodes

logger = logging.getLogger(__name__)

__all__ = [
    "HFDeepSpeedStrategy",
    "LaunchedDDPStrategy",
    "build_strategy",
    "ddp_start_method",
    "ddp_strategy_kwargs",
    "deepspeed_batch_config",
    "deepspeed_config",
    "deepspeed_strategy_config",
    "fsdp_strategy_kwargs",
    "fsdp_wrapper",
    "full_state_dict",
    "is_interactive",
    "load_deepspeed_config",
    "shard_hf_model",
    "strategy_family",
    "uses_ddp",
]

_FAMILIES = {"DDPStrategy": "ddp", "FSDPStrategy": "fsdp", "DeepSpeedStrategy": "deepspeed"}


def is_interactive() -> bool:
    """Whether Python runs interactively (a notebook or REPL), where only forked DDP workers can start."""
    from lightning.fabric.utilities import imports

    return bool(imports._IS_INTERACTIVE)


def _registry_entry(name: str) -> tuple[str, dict[str, Any]]:
    from lightning.pytorch.strategies import StrategyRegistry

    if name not in StrategyRegistry:
        return "", {}
    entry = StrategyRegistry[name]
    return entry["strategy"].__name__, dict(entry["init_params"])


def strategy_family(args: Any) -> str:
    """ "ddp", "fsdp", "deepspeed", "auto" or "other" (a different registered name or a Strategy object), from
    `strategy`, `fsdp` and `deepspeed`; contradicting choices raise, naming the arguments."""
    strategy = getattr(args, "strategy", "auto")
    wants_fsdp, wants_ds = bool(getattr(args, "fsdp", None)), bool(getattr(args, "deepspeed", None))
    if wants_fsdp and wants_ds:
        raise ValueError("`fsdp` and `deepspeed` were both given; choose one sharding strategy.")
    if not isinstance(strategy, str):
        family = next((f for cls, f in _FAMILIES.items() if _is_a(strategy, cls)), "other")
    elif strategy == "auto":
        family = "auto"
    else:
        family = _FAMILIES.get(_registry_entry(strategy)[0], "other")
    for flag, wanted in (("fsdp", wants_fsdp), ("deepspeed", wants_ds)):
        if wanted and family not in ("auto", flag):
            raise ValueError(f"`{flag}` was given but `strategy`={_describe(strategy)} is not a {flag} strategy.")
        if wanted:
            family = flag
    return family


def _describe(strategy: Any) -> str:
    return repr(strategy) if isinstance(strategy, str) else type(strategy).__name__


# ---- DDP ----------------------------------------------------------------------------------------------


def _hf_ddp_args_given(args: Any) -> bool:
    names = ("ddp_find_unused_parameters", "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "ddp_static_graph")
    return (
        any(getattr(args, n, None) is not None for n in names)
        or getattr(args, "ddp_backend", None) is not None
        or getattr(args, "ddp_timeout", hf_default("ddp_timeout")) != hf_default("ddp_timeout")
    )


def expected_processes(args: Any) -> int:
    """How many processes the run will have (devices x nodes, or the launcher's world: torchrun, SLURM ...)."""
    devices = lightning_devices(args)
    if isinstance(devices, list):
        per_node = len(devices)
    elif isinstance(devices, int) and devices > 0:
        per_node = devices
    elif args.use_cpu or args.accelerator == "cpu" or not torch.cuda.is_available():
        per_node = 1
    else:
        per_node = torch.cuda.device_count()
    return max(per_node * lightning_num_nodes(args), ProcessEnvironment.detect().world_size)


def ddp_strategy_kwargs(args: Any, model: nn.Module | None = None) -> dict[str, Any]:
    """`DDPStrategy` keyword arguments for HF's `ddp_*` arguments (HF's `_build_accelerator_args` defaults)."""
    from transformers import PreTrainedModel

    if args.ddp_find_unused_parameters is not None:
        find_unused = args.ddp_find_unused_parameters
    elif isinstance(model, PreTrainedModel):
        find_unused = not (model_is_activation_checkpointing(model) or activation_checkpointing(args)[0])
    else:
        find_unused = True
    kwargs: dict[str, Any] = {
        "process_group_backend": args.ddp_backend,
        "timeout": timedelta(seconds=args.ddp_timeout),
        "find_unused_parameters": find_unused,
    }
    for hf_name, ddp_name in (
        ("ddp_bucket_cap_mb", "bucket_cap_mb"),
        ("ddp_broadcast_buffers", "broadcast_buffers"),
        ("ddp_static_graph", "static_graph"),
    ):
        if training_argument(args, hf_name) is not None:
            kwargs[ddp_name] = training_argument(args, hf_name)
    return kwargs


def uses_ddp(args: Any) -> bool:
    """Whether `build_strategy` gives DDP for `args`: a DDP name or object, or "auto" on several processes."""
    family = strategy_family(args)
    return family == "ddp" or (family == "auto" and expected_processes(args) > 1)


def ddp_start_method(args: Any) -> str | None:
    """How the processes of the DDP run that `args` describe are started: "popen" (Lightning re-runs the script for
    the other ranks, or a launcher such as torchrun or SLURM already started them), or "spawn" / "fork" / "forkserver"
    (Lightning's `_MultiProcessingLauncher` starts them from inside `fit`: `ddp_spawn`, `ddp_fork`, `ddp_notebook`,
    and any DDP in a notebook, where only forked workers can start). None when the strategy is not DDP.

    A DDP name's own start method (Lightning's registry) is kept, except where the processes already exist: starting
    more from each of them would multiply the world."""
    if not uses_ddp(args):
        return None
    strategy = args.strategy
    if not isinstance(strategy, str):  # a DDPStrategy object keeps what it was built with (Lightning keeps no public
        return getattr(strategy, "_start_method", "popen")  # accessor for it)
    name = strategy if strategy != "auto" else "ddp"
    requested = _registry_entry(name)[1].get("start_method", "popen")
    if ProcessEnvironment.detect().processes_exist:
        if requested != "popen":
            logger.info("The processes were started by a launcher: %r starts no more of them.", name)
        return "popen"
    if is_interactive() and requested in ("popen", "spawn", "forkserver"):
        logger.info("Interactive session: DDP workers are forked (Lightning's 'ddp_notebook') instead of %r.", name)
        return "fork"
    return requested


class _LauncherInStartedProcesses(_SubprocessScriptLauncher):
    """Lightning's script launcher where the processes already exist: it checks the launcher's world against
    `devices` x `num_nodes` and sets the threads per process, and starts nothing, so it runs in an interactive
    session too (the forked workers of a notebook's DDP, which Lightning would refuse a script launcher)."""

    @property
    @override
    def is_interactive_compatible(self) -> bool:
        return True


class LaunchedDDPStrategy(DDPStrategy):
    """`DDPStrategy` in processes a launcher already started (torchrun, SLURM, `hf_lightning.launchers`)."""

    @override
    def _configure_launcher(self) -> None:
        self._launcher = _LauncherInStartedProcesses(self.cluster_environment, self.num_processes, self.num_nodes)


def _ddp_strategy(args: Any, model: nn.Module | None) -> Any:
    name = args.strategy if isinstance(args.strategy, str) and args.strategy != "auto" else "ddp"
    kwargs = ddp_strategy_kwargs(args, model)
    kwargs.update(_registry_entry(name)[1])  # a name's own choices (find_unused_parameters ...) win
    kwargs["start_method"] = ddp_start_method(args)
    if ProcessEnvironment.detect().processes_exist:
        return LaunchedDDPStrategy(**kwargs)
    return DDPStrategy(**kwargs)


# ---- FSDP ---------------------------------------------------------------------------------------------


def _fsdp_config(args: Any) -> dict[str, Any]:
    config = getattr(args, "fsdp_config", None) or {}
    if isinstance(config, str):
        with open(config, encoding="utf-8") as f:
            config = json.load(f)
    return {k[5:] if k.startswith("fsdp_") else k: v for k, v in config.items()}


def _as_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "y", "on", "t")


def _layer_classes(model: nn.Module | None, names: list[str]) -> set[type[nn.Module]]:
    if model is None:
        raise ValueError(
            "`fsdp_config['transformer_layer_cls_to_wrap']` names layer classes; the model is needed to find them."
        )
    by_name = {type(m).__name__: type(m) for m in model.modules()}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(
            f"`fsdp_config['transformer_layer_cls_to_wrap']`: no module of class {missing} in "
            f"{type(model).__name__}; its layer classes are e.g. {sorted(by_name)[:8]}."
        )
    return {by_name[n] for n in names}


def fsdp_strategy_kwargs(args: Any, model: nn.Module | None = None) -> dict[str, Any]:
    """`FSDPStrategy` keyword arguments for `fsdp_config` (HF's keys, with or without the `fsdp_` prefix)."""
    config = _fsdp_config(args)
    fsdp = getattr(args, "fsdp", None)
    if isinstance(fsdp, (str, list)):  # HF's legacy options ("full_shard auto_wrap offload" ...) fill what
        # `fsdp_config` leaves unset, as transformers does; before 5.10 it turns them (and `fsdp=True`) into a list of
        # `FSDPOption` members, whose values are the names
        items = fsdp.split() if isinstance(fsdp, str) else [str(getattr(item, "value", item)) for item in fsdp]
        sharding_item = next((i for i in items if i.upper() in ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD")), None)
        if sharding_item is not None:
            config.setdefault("reshard_after_forward", sharding_item)
        if "offload" in items:
            config.setdefault("cpu_offload", True)
    version = int(config.get("version", 2))
    reshard = config.get("reshard_after_forward", True if version == 2 else "full_shard")
    if isinstance(reshard, bool) or str(reshard).lower() in ("true", "false"):
        sharding = "FULL_SHARD" if _as_bool(reshard) else "SHARD_GRAD_OP"
    else:
        sharding = str(reshard).upper()
    kwargs: dict[str, Any] = {
        "sharding_strategy": sharding,
        "cpu_offload": _as_bool(config.get("cpu_offload", False)),
        "state_dict_type": "sharded"
        if str(config.get("state_dict_type", "")).upper().startswith("SHARDED")
        else "full",
        "use_orig_params": _as_bool(config.get("use_orig_params", True)),
        "process_group_backend": args.ddp_backend,
        "timeout": timedelta(seconds=args.ddp_timeout),
    }
    policy = str(config.get("auto_wrap_policy", "TRANSFORMER_BASED_WRAP")).upper()
    layers: set[type[nn.Module]] | None = None
    if policy == "TRANSFORMER_BASED_WRAP":
        names = config.get("transformer_layer_cls_to_wrap") or list(getattr(model, "_no_split_modules", None) or [])
        names = [names] if isinstance(names, str) else list(names)
        layers = _layer_classes(model, names) if names else None
        if layers:
            kwargs["auto_wrap_policy"] = layers
    elif policy == "SIZE_BASED_WRAP":
        from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy

        min_params = int(config.get("min_num_params", 0)) or int(1e8)
        kwargs["auto_wrap_policy"] = functools.partial(size_based_auto_wrap_policy, min_num_params=min_params)
    elif policy != "NO_WRAP":
        raise ValueError(
            f"`fsdp_config['auto_wrap_policy']`={policy!r}: expected TRANSFORMER_BASED_WRAP, SIZE_BASED_WRAP or "
            "NO_WRAP."
        )
    if _as_bool(config.get("activation_checkpointing", False)):
        if not layers:
            raise ValueError(
                "`fsdp_config['activation_checkpointing']` needs the layer classes to checkpoint: set "
                "`transformer_layer_cls_to_wrap` (or use a model with `_no_split_modules`)."
            )
        kwargs["activation_checkpointing_policy"] = layers
    if "backward_prefetch" in config and str(config["backward_prefetch"]).upper() != "NO_PREFETCH":
        from torch.distributed.fsdp import BackwardPrefetch

        kwargs["backward_prefetch"] = BackwardPrefetch[str(config["backward_prefetch"]).upper()]
    for key in ("forward_prefetch", "sync_module_states", "limit_all_gathers"):
        if key in config:
            kwargs[key] = _as_bool(config[key])
    if not kwargs["use_orig_params"]:
        raise ValueError(
            "`fsdp_config['use_orig_params']`=False is not supported: the HF optimizer is built over the model's own "
            "parameters before FSDP wraps it, which FSDP only keeps with `use_orig_params=True` (HF's default)."
        )
    return kwargs


def shard_hf_model(strategy: Any, model: nn.Module, wrapped: nn.Module | None = None) -> nn.Module:
    """`model` (the HF model inside the LightningModule) wrapped in FSDP with `strategy`'s settings when `strategy`
    is an `FSDPStrategy` and nothing is wrapped yet; else `model` itself. `wrapped`, the FSDP wrapper of `model` from
    an earlier fit (a second `train()`), is reused: wrapping the already flattened parameters again would fail.

    Lightning wraps the whole LightningModule in one FSDP root and runs `training_step` inside that root's forward;
    with manual optimisation the backward then runs inside the forward, which FSDP refuses ("Expects BACKWARD_PRE or
    BACKWARD_POST state but got HandleTrainingState.FORWARD"). Like accelerate for `transformers.Trainer`, the HF
    model itself is wrapped (called from the module's `setup`, before Lightning's): the LightningModule stays
    unwrapped, which Lightning's `FSDPStrategy` leaves as it is (its `configure_model` layout), every forward ends
    before its backward, and FSDP's own `clip_grad_norm_` runs on this root. On the CPU the device is named:
    Lightning passes `device_id=None` there, which torch's FSDP refuses ("FSDP needs a non-CPU accelerator")."""
    if not _is_a(strategy, "FSDPStrategy"):
        return model
    from torch.distributed.fsdp import FullyShardedDataParallel

    kwargs = dict(strategy.kwargs)
    strategy.kwargs.pop("auto_wrap_policy", None)  # applied here; Lightning would warn that it is unused
    if isinstance(wrapped, FullyShardedDataParallel) and wrapped.module is model:
        return wrapped
    if isinstance(model, FullyShardedDataParallel):
        return model
    if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
        raise ValueError(
            "The model holds FSDP-wrapped submodules but no FSDP root wrapper was kept for it: pass the model "
            "unwrapped (hf_lightning wraps it for `fsdp`/`strategy='fsdp'`), or the whole FSDP-wrapped model."
        )
    device = strategy.root_device
    return FullyShardedDataParallel(
        module=model,
        cpu_offload=strategy.cpu_offload,
        mixed_precision=strategy.mixed_precision_config,
        sharding_strategy=strategy.sharding_strategy,
        device_id=device if device.type == "cpu" else device.index,
        **kwargs,
    )


# ---- DeepSpeed (the config: `hf_lightning.deepspeed_integration`) -----------------------------------------


def _deepspeed_strategy(args: Any, model: nn.Module | None) -> Any:
    from lightning.pytorch.strategies.deepspeed import _DEEPSPEED_AVAILABLE

    name = args.strategy if isinstance(args.strategy, str) and args.strategy != "auto" else "deepspeed"
    kwargs = _registry_entry(name)[1]
    if args.deepspeed:
        kwargs = {"config": deepspeed_strategy_config(args, model)}
    if not _DEEPSPEED_AVAILABLE:
        raise ImportError(
            f"`strategy`={_describe(args.strategy)} / `deepspeed` needs the `deepspeed` package: "
            "`pip install deepspeed` (on a machine with a CUDA toolkit)."
        )
    return HFDeepSpeedStrategy(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        train_micro_batch_size_per_gpu=args.per_device_train_batch_size,
        gradient_clipping=max(args.max_grad_norm, 0.0),
        process_group_backend=args.ddp_backend,
        timeout=timedelta(seconds=args.ddp_timeout),
        **kwargs,
    )


# ---- entry points -------------------------------------------------------------------------------------


def build_strategy(args: Any, model: nn.Module | None = None) -> Any:
    """The Lightning `strategy` for `args` (a name Lightning resolves, or a configured Strategy object)."""
    family = strategy_family(args)
    strategy = args.strategy
    if not isinstance(strategy, str):
        if _hf_ddp_args_given(args) or args.fsdp or args.deepspeed:
            logger.warning(
                "`strategy` is a %s object: it is used as given; HF's ddp_*/fsdp arguments are not applied.",
                type(strategy).__name__,
            )
        return strategy
    if uses_ddp(args):
        return _ddp_strategy(args, model)
    if family == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        kwargs = fsdp_strategy_kwargs(args, model)
        kwargs.update(_registry_entry(strategy)[1] if strategy != "auto" else {})
        return FSDPStrategy(**kwargs)
    if family == "deepspeed":
        return _deepspeed_strategy(args, model)
    return strategy


def _is_a(strategy: Any, class_name: str) -> bool:
    return any(c.__name__ == class_name for c in type(strategy).__mro__)


def _fsdp_root(strategy: Any) -> nn.Module:
    """The outermost FSDP module of the strategy's model (the HF model wrapped by `shard_hf_model`, or Lightning's
    root when a LightningModule was wrapped whole)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    return next(m for m in strategy.model.modules() if isinstance(m, FullyShardedDataParallel))


def full_state_dict(strategy: Any) -> dict[str, torch.Tensor] | None:
    """The HF model's full (unsharded) state dict under a sharding strategy: a collective every rank calls, the
    tensors materialised on rank 0 only (on the CPU). None when the strategy does not shard the weights.

    FSDP: a `FULL_STATE_DICT` gathered to rank 0 (offloaded to the CPU from an accelerator; torch crashes when asked
    to offload a CPU run). DeepSpeed: the module's state dict (ZeRO-1/2 keep full weights), under ZeRO-3 the
    consolidated 16-bit one, as accelerate's `get_state_dict` gives HF."""
    if _is_a(strategy, "FSDPStrategy"):
        from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel, StateDictType

        config = FullStateDictConfig(offload_to_cpu=strategy.root_device.type != "cpu", rank0_only=True)
        with FullyShardedDataParallel.state_dict_type(strategy.model, StateDictType.FULL_STATE_DICT, config):
            full = strategy.model.state_dict()
    elif _is_a(strategy, "DeepSpeedStrategy") and strategy.zero_stage_3:
        engine = strategy.model
        if not engine.zero_gather_16bit_weights_on_model_save():
            raise ValueError(
                "Saving HF weights under DeepSpeed ZeRO-3 needs `zero_optimization.stage3_gather_16bit_weights_on_"
                "model_save: true` in the `deepspeed` config (the weights are partitioned over the ranks)."
            )
        full = engine._zero3_consolidated_16bit_state_dict()
    elif _is_a(strategy, "DeepSpeedStrategy"):
        full = strategy.lightning_module_state_dict()
    else:
        return None
    prefix = "model."
    return {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)}


def fsdp_wrapper(model: Any) -> nn.Module | None:
    """`model` when it is an FSDP wrapper (what `shard_hf_model` returned), else None."""
    if model is None or "torch.distributed.fsdp" not in type(model).__module__:
        return None
    from torch.distributed.fsdp import FullyShardedDataParallel

    return model if isinstance(model, FullyShardedDataParallel) else None


def is_sharded_strategy(strategy: Any) -> bool:
    """Whether `strategy` shards weights and optimizer state over the ranks (FSDP)."""
    return strategy is not None and _is_a(strategy, "FSDPStrategy")


def full_optimizer_state_dict(strategy: Any, optimizer: torch.optim.Optimizer) -> dict | None:
    """Under FSDP, the optimizer state gathered to full parameter shapes, keyed by the HF model's parameter names
    (rank 0 holds it; a collective every rank calls), so `optimizer.pt` is one file as HF writes it. None for other
    strategies."""
    if not is_sharded_strategy(strategy) or getattr(strategy, "model", None) is None:
        return None
    from torch.distributed.fsdp import (
        FullOptimStateDictConfig,
        FullStateDictConfig,
        FullyShardedDataParallel,
        StateDictType,
    )

    root = _fsdp_root(strategy)
    offload = strategy.root_device.type != "cpu"
    with FullyShardedDataParallel.state_dict_type(
        root,
        StateDictType.FULL_STATE_DICT,
        FullStateDictConfig(offload_to_cpu=offload, rank0_only=True),
        FullOptimStateDictConfig(offload_to_cpu=offload, rank0_only=True),
    ):
        return FullyShardedDataParallel.optim_state_dict(root, optimizer)


def save_engine_checkpoint(strategy: Any, output_dir: str) -> bool:
    """Under DeepSpeed, the engine writes its own checkpoint into `output_dir` (`global_step{N}/` with each rank's
    ZeRO partition of the optimizer state and fp32 master weights, and `latest`), as HF saves under DeepSpeed; a
    collective. False, writing nothing, for other strategies."""
    if not _is_a(strategy, "DeepSpeedStrategy") or getattr(strategy, "model", None) is None:
        return False
    strategy.model.save_checkpoint(output_dir)
    return True


def has_engine_checkpoint(folder: str) -> bool:
    """Whether DeepSpeed wrote its checkpoint into `folder` (`save_engine_checkpoint`)."""
    return os.path.isfile(os.path.join(folder, "latest"))


def load_full_optimizer_state_dict(strategy: Any, optimizer: torch.optim.Optimizer, state: dict | str) -> None:
    """Load a state written by `full_optimizer_state_dict` into the sharded optimizer (every rank has read the file;
    each keeps its shard); given the folder of a `save_engine_checkpoint`, the DeepSpeed engine loads its own
    partitions (the same world size and ZeRO stage), as HF's `deepspeed_load_checkpoint` does."""
    if isinstance(state, str):
        if not _is_a(strategy, "DeepSpeedStrategy"):
            raise ValueError(
                f"`resume_from_checkpoint`: {state} holds a DeepSpeed optimizer state (no optimizer.pt); resume it "
                "with `deepspeed` on the same number of processes."
            )
        strategy.model.load_checkpoint(state, load_optimizer_states=True, load_lr_scheduler_states=False)
        return
    from torch.distributed.fsdp import FullyShardedDataParallel

    root = _fsdp_root(strategy)
    optimizer.load_state_dict(FullyShardedDataParallel.optim_state_dict_to_load(root, optimizer, state))
