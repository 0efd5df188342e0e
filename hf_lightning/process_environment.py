"""The processes of a run, as the launcher set them up: torchrun, `accelerate launch`, SLURM's `srun`, Lightning.

transformers' Trainer learns its world from the environment (accelerate's `PartialState` reads torchrun's
`WORLD_SIZE` / `RANK` / `LOCAL_RANK`), so a script that sets only HF arguments trains as DDP under `torchrun
--nproc_per_node 2`. Lightning instead wants `devices` x `num_nodes` to equal the launcher's world size, and with
its defaults (one CPU device, one node) raises. `ProcessEnvironment.detect()` reads what the launcher set, in the
order Lightning picks its cluster environment (torchelastic, then SLURM, then variables set by hand or by Lightning's
own launchers), and `lightning_devices` / `lightning_num_nodes` hand Lightning the matching numbers when the
arguments left `devices` / `num_nodes` at their defaults.

`accelerate launch` runs torchrun underneath and adds `ACCELERATE_*` settings; those transformers' Trainer acts on
are honoured (`ACCELERATE_USE_CPU`, and `ACCELERATE_MIXED_PRECISION` through HF's own `args.mixed_precision`) or
refused before training with the argument to use instead (`accelerate_launch_refusals`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ProcessEnvironment",
    "accelerate_launch_refusals",
    "accelerate_wants_cpu",
    "lightning_devices",
    "lightning_num_nodes",
]

# SLURM job names under which `srun` only allocates a shell: Lightning's `SLURMEnvironment` then stands aside.
_SLURM_INTERACTIVE_JOB_NAMES = ("bash", "interactive")
_TRUE = ("1", "true", "yes", "y", "on", "t")


def _int(environ: Mapping[str, str], *names: str) -> int | None:
    for name in names:
        value = environ.get(name)
        if value not in (None, ""):
            return int(value)
    return None


def slurm_launched(environ: Mapping[str, str] | None = None) -> bool:
    """Whether `srun` started this process as one task of a job (Lightning's `SLURMEnvironment.detect()` rule)."""
    environ = os.environ if environ is None else environ
    return "SLURM_NTASKS" in environ and environ.get("SLURM_JOB_NAME") not in _SLURM_INTERACTIVE_JOB_NAMES


@dataclass(frozen=True)
class ProcessEnvironment:
    """This process's place in the run, as its launcher described it.

    Args:
        launcher: "torchrun", "accelerate" (torchrun started by `accelerate launch`), "slurm", "env" (the variables
            set by hand or by Lightning's own launchers) or "none" (a single process nobody launched).
        world_size: Processes in the run.
        rank: This process's global rank.
        local_rank: Its rank on its node.
        local_world_size: Processes per node, when the launcher says (Lightning's launchers do not).
        node_rank: Its node's rank.
        num_nodes: Nodes in the run, when the launcher says.
    """

    launcher: str
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world_size: int | None = None
    node_rank: int = 0
    num_nodes: int | None = None

    @property
    def processes_exist(self) -> bool:
        """Whether the run's processes were started before Lightning runs (so Lightning must start none): Lightning's
        own test, `LOCAL_RANK` in the environment, or a launcher that says so (SLURM)."""
        return self.launcher != "none"

    @classmethod
    def detect(cls, environ: Mapping[str, str] | None = None) -> ProcessEnvironment:
        """Read the environment (`os.environ` unless given)."""
        env = os.environ if environ is None else environ
        if env.get("TORCHELASTIC_RUN_ID") is not None and "WORLD_SIZE" in env:  # torch's is_torchelastic_launched()
            world = _int(env, "WORLD_SIZE") or 1
            local_world = _int(env, "LOCAL_WORLD_SIZE") or world
            accelerate = any(name.startswith("ACCELERATE_") for name in env)
            return cls(
                launcher="accelerate" if accelerate else "torchrun",
                world_size=world,
                rank=_int(env, "RANK") or 0,
                local_rank=_int(env, "LOCAL_RANK") or 0,
                local_world_size=local_world,
                node_rank=_int(env, "GROUP_RANK", "NODE_RANK") or 0,
                num_nodes=_int(env, "GROUP_WORLD_SIZE") or max(1, world // local_world),
            )
        if slurm_launched(env):
            world = _int(env, "SLURM_NTASKS") or 1
            nodes = _int(env, "SLURM_NNODES", "SLURM_JOB_NUM_NODES") or 1
            return cls(
                launcher="slurm",
                world_size=world,
                rank=_int(env, "SLURM_PROCID") or 0,
                local_rank=_int(env, "SLURM_LOCALID") or 0,
                local_world_size=_int(env, "SLURM_NTASKS_PER_NODE") or max(1, world // nodes),
                node_rank=_int(env, "SLURM_NODEID") or 0,
                num_nodes=nodes,
            )
        if "LOCAL_RANK" in env:  # Lightning's `LightningEnvironment.creates_processes_externally`
            local_rank = _int(env, "LOCAL_RANK") or 0
            node_rank = _int(env, "NODE_RANK", "GROUP_RANK") or 0
            local_world = _int(env, "LOCAL_WORLD_SIZE")
            rank = _int(env, "RANK")
            if rank is None:  # Lightning's launchers set no RANK
                rank = node_rank * local_world + local_rank if local_world else local_rank
            world = _int(env, "WORLD_SIZE") or 1
            nodes = max(1, world // local_world) if local_world else None
            return cls("env", world, rank, local_rank, local_world, node_rank, nodes)
        return cls(launcher="none")


def lightning_devices(args: Any) -> Any:
    """Lightning's `devices`: the `devices` argument, except that "auto" under a launcher that started the processes
    is the launcher's processes per node (Lightning's "auto" would count this machine's devices instead)."""
    devices = args.devices
    if devices != "auto":
        return devices
    env = ProcessEnvironment.detect()
    if env.processes_exist and env.world_size > 1 and env.local_world_size:
        return env.local_world_size
    return devices


def lightning_num_nodes(args: Any) -> int:
    """Lightning's `num_nodes`: the `num_nodes` argument, except that the default (1) under a launcher that started
    processes on several nodes is the launcher's node count."""
    env = ProcessEnvironment.detect()
    if args.num_nodes == 1 and env.processes_exist and env.num_nodes and env.num_nodes > 1:
        return env.num_nodes
    return args.num_nodes


# ---- accelerate launch ---------------------------------------------------------------------------------

# ACCELERATE_* switches transformers' Trainer follows (through accelerate) that hf_lightning does not take from the
# environment: variable -> (values meaning "off", the TrainingArguments field that, when set, makes it moot, what to
# set instead).
_ACCELERATE_REFUSED = {
    "ACCELERATE_USE_FSDP": (("false", "0"), "fsdp", "`fsdp` / `fsdp_config` (or `strategy='fsdp'`)"),
    "ACCELERATE_USE_DEEPSPEED": (("false", "0"), "deepspeed", "`deepspeed` (or `strategy='deepspeed'`)"),
    "ACCELERATE_USE_MEGATRON_LM": (("false", "0"), None, "a Lightning `strategy` (Megatron-LM is not supported)"),
    "ACCELERATE_DYNAMO_BACKEND": (("no", "none"), "torch_compile", "`torch_compile=True` / `torch_compile_backend`"),
}


def accelerate_wants_cpu(environ: Mapping[str, str] | None = None) -> bool:
    """`accelerate launch --cpu`: transformers' `TrainingArguments` trains on the CPU when `ACCELERATE_USE_CPU` is
    true, as with `use_cpu=True`."""
    environ = os.environ if environ is None else environ
    return environ.get("ACCELERATE_USE_CPU", "false").strip().lower() in _TRUE


def accelerate_launch_refusals(args: Any, environ: Mapping[str, str] | None = None) -> list[str]:
    """What `accelerate launch` asked for through the environment (FSDP, DeepSpeed, Megatron-LM, a dynamo backend)
    that transformers' Trainer would do but hf_lightning takes only from `TrainingArguments`: one message per
    setting, naming the argument to use. Empty when there is nothing to refuse (a setting the arguments already make
    is not refused)."""
    environ = os.environ if environ is None else environ
    refused = []
    for name, (off, field, instead) in _ACCELERATE_REFUSED.items():
        value = environ.get(name)
        if value is None or value.strip().lower() in (*off, "") or (field and getattr(args, field, None)):
            continue
        refused.append(f"{name}={value} (from `accelerate launch` or its config): set {instead} in TrainingArguments")
    return refused
