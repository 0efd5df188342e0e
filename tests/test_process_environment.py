"""The launcher's environment -> the run's processes (hf_lightning.process_environment), and what Lightning is told.

Each launcher is described by the variables it sets (copied from a real run where one was possible: torchrun and
`accelerate launch` on this machine); the runs themselves are in tests/test_launchers.py.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from helpers import tiny_bert
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy
from lightning_utilities.core.rank_zero import rank_zero_only

from hf_lightning import TrainingArguments
from hf_lightning.process_environment import (
    ProcessEnvironment,
    accelerate_launch_refusals,
    lightning_devices,
    lightning_num_nodes,
    slurm_launched,
)
from hf_lightning.strategies import LaunchedDDPStrategy, build_strategy, ddp_start_method
from hf_lightning.training_args import lightning_accelerator, lightning_precision
from hf_lightning.translation import lightning_trainer_kwargs

# What `torchrun --nproc_per_node 2` sets for rank 1 (one node).
TORCHRUN = {
    "TORCHELASTIC_RUN_ID": "none",
    "WORLD_SIZE": "2",
    "RANK": "1",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "GROUP_RANK": "0",
    "GROUP_WORLD_SIZE": "1",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29500",
}
# `accelerate launch --multi_gpu --num_processes 2`: torchrun's variables plus accelerate's settings.
ACCELERATE = {**TORCHRUN, "ACCELERATE_MIXED_PRECISION": "no", "ACCELERATE_DYNAMO_BACKEND": "NO"}
# `srun --nodes 2 --ntasks-per-node 2 python train.py`, task 3 (second task of the second node).
SLURM = {
    "SLURM_NTASKS": "4",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_NNODES": "2",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_JOB_ID": "1234",
    "SLURM_JOB_NAME": "train",
    "SLURM_NODELIST": "node[1-2]",
}
# A child Lightning's own `ddp` launcher started (it sets no RANK and no LOCAL_WORLD_SIZE).
LIGHTNING_CHILD = {"LOCAL_RANK": "1", "WORLD_SIZE": "2", "NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1"}

_LAUNCHER_VARIABLES = {*TORCHRUN, *ACCELERATE, *SLURM, *LIGHTNING_CHILD, "NODE_RANK", "ACCELERATE_USE_CPU"}


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`launched(variables)`: `os.environ` holds these launcher variables and no other (until the test ends). A
    `lightning.Trainer` built here sets Lightning's process-wide rank (rank 1 silences its rank-zero messages): it is
    restored too."""
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)

    def only(variables: dict[str, str]) -> None:
        for name in list(os.environ):
            if name in _LAUNCHER_VARIABLES or name.startswith(("SLURM_", "ACCELERATE_", "TORCHELASTIC_")):
                monkeypatch.delenv(name)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)

    only({})
    return only


def make_args(out: Any, **kw: Any) -> TrainingArguments:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TrainingArguments(str(out), report_to="none", use_cpu=True, disable_tqdm=True, **kw)


# ---- reading the environment ---------------------------------------------------------------------------


def test_each_launcher_is_read() -> None:
    assert ProcessEnvironment.detect(TORCHRUN) == ProcessEnvironment("torchrun", 2, 1, 1, 2, 0, 1)
    assert ProcessEnvironment.detect(ACCELERATE).launcher == "accelerate"
    assert ProcessEnvironment.detect(SLURM) == ProcessEnvironment("slurm", 4, 3, 1, 2, 1, 2)
    child = ProcessEnvironment.detect(LIGHTNING_CHILD)
    assert (child.launcher, child.world_size, child.rank, child.local_rank) == ("env", 2, 1, 1)
    assert child.local_world_size is None and child.processes_exist
    alone = ProcessEnvironment.detect({})
    assert alone == ProcessEnvironment("none") and not alone.processes_exist
    two_nodes = {**TORCHRUN, "WORLD_SIZE": "4", "RANK": "3", "GROUP_RANK": "1", "GROUP_WORLD_SIZE": "2"}
    assert ProcessEnvironment.detect(two_nodes) == ProcessEnvironment("torchrun", 4, 3, 1, 2, 1, 2)


def test_slurm_and_torchelastic_rules_are_lightnings_and_torchs(launched: Any) -> None:
    """Canary: the restated detection rules agree with the installed Lightning and torch."""
    cases = [SLURM, {**SLURM, "SLURM_JOB_NAME": "interactive"}, {**SLURM, "SLURM_JOB_NAME": "bash"}, {}, TORCHRUN]
    for case in cases:
        launched(case)
        assert slurm_launched() == SLURMEnvironment.detect(), case
        is_torchrun = ProcessEnvironment.detect().launcher == "torchrun"
        assert is_torchrun == torch.distributed.is_torchelastic_launched(), case
    interactive = ProcessEnvironment.detect({**SLURM, "SLURM_JOB_NAME": "interactive"})
    assert interactive.launcher == "none"


def test_torchrun_inside_slurm_is_torchrun() -> None:
    """Lightning's precedence: torchelastic first (torchrun started inside an `srun` allocation)."""
    assert ProcessEnvironment.detect({**SLURM, **TORCHRUN}).launcher == "torchrun"


# ---- what Lightning is told ----------------------------------------------------------------------------


def test_torchrun_with_hf_arguments_only_builds_a_two_process_ddp_trainer(tmp_path: Path, launched: Any) -> None:
    """Issue 17, item 5: the defaults (`devices="auto"`, one node) under `torchrun --nproc_per_node 2` became
    Lightning's `devices=1`, which it refused ("does not match the world size (2)")."""
    launched(TORCHRUN)
    args = make_args(tmp_path)
    assert (args.world_size, args.process_index, args.local_process_index) == (2, 1, 1)
    kwargs = lightning_trainer_kwargs(args, tiny_bert())
    assert kwargs["devices"] == 2 and kwargs["num_nodes"] == 1
    assert isinstance(kwargs["strategy"], DDPStrategy) and ddp_start_method(args) == "popen"
    trainer = pl.Trainer(**kwargs)
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank) == (2, 1, 1)
    assert type(trainer.strategy.cluster_environment).__name__ == "TorchElasticEnvironment"
    # Lightning's script launcher, which starts nothing here and so is accepted in a notebook's forked workers too
    assert isinstance(trainer.strategy, LaunchedDDPStrategy) and trainer.strategy.launcher.is_interactive_compatible


def test_slurm_two_nodes_build_a_four_process_trainer(tmp_path: Path, launched: Any) -> None:
    launched(SLURM)
    args = make_args(tmp_path)
    assert (args.world_size, args.process_index, args.local_process_index) == (4, 3, 1)
    assert (lightning_devices(args), lightning_num_nodes(args)) == (2, 2)
    trainer = pl.Trainer(**lightning_trainer_kwargs(args, tiny_bert()))
    assert (trainer.world_size, trainer.global_rank, trainer.node_rank, trainer.local_rank) == (4, 3, 1, 1)
    assert isinstance(trainer.strategy.cluster_environment, SLURMEnvironment)


def test_explicit_devices_and_nodes_are_kept(tmp_path: Path, launched: Any) -> None:
    launched(TORCHRUN)
    args = make_args(tmp_path, devices=1, num_nodes=2)
    assert (lightning_devices(args), lightning_num_nodes(args)) == (1, 2)
    launched({})
    alone = make_args(tmp_path)
    assert (lightning_devices(alone), lightning_num_nodes(alone)) == ("auto", 1)
    assert build_strategy(alone, tiny_bert()) == "auto"


def test_lightnings_own_children_keep_the_scripts_devices(tmp_path: Path, launched: Any) -> None:
    """A process Lightning's `ddp` launcher started re-runs the script: its `devices` decide (no LOCAL_WORLD_SIZE)."""
    launched(LIGHTNING_CHILD)
    args = make_args(tmp_path, strategy="ddp", devices=2)
    assert lightning_devices(args) == 2 and ddp_start_method(args) == "popen"
    assert lightning_devices(make_args(tmp_path)) == "auto"


# ---- start methods -------------------------------------------------------------------------------------


def test_start_methods(tmp_path: Path, launched: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning's registry decides where no launcher started the processes; where one did (torchrun, SLURM, or
    `hf_lightning.launchers` for ddp_spawn), Lightning must start none, whatever the name."""
    names = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork", "fsdp": None}
    for name, method in names.items():
        assert ddp_start_method(make_args(tmp_path, strategy=name, devices=2)) == method, name
    assert ddp_start_method(make_args(tmp_path)) is None  # one process: no DDP
    assert ddp_start_method(make_args(tmp_path, devices=2)) == "popen"
    assert ddp_start_method(make_args(tmp_path, strategy=DDPStrategy(start_method="spawn"))) == "spawn"
    launched(TORCHRUN)
    for name in ("ddp_spawn", "ddp_fork", "ddp_notebook", "auto"):
        args = make_args(tmp_path, strategy=name)
        assert ddp_start_method(args) == "popen", name
        strategy = build_strategy(args, tiny_bert())
        assert isinstance(strategy, LaunchedDDPStrategy) and strategy._start_method == "popen", name
    from lightning.fabric.utilities import imports

    launched({})
    monkeypatch.setattr(imports, "_IS_INTERACTIVE", True)
    assert ddp_start_method(make_args(tmp_path, strategy="ddp", devices=2)) == "fork"
    assert ddp_start_method(make_args(tmp_path, devices=2)) == "fork"


# ---- accelerate launch ---------------------------------------------------------------------------------


def test_accelerate_launch_settings_are_honoured(tmp_path: Path, launched: Any) -> None:
    """`accelerate launch --mixed_precision bf16` and `--cpu`: transformers' Trainer trains in bf16 / on the CPU."""
    launched({**ACCELERATE, "ACCELERATE_MIXED_PRECISION": "bf16"})
    args = make_args(tmp_path)
    assert args.mixed_precision == "bf16"  # HF's own reading of the variable
    assert lightning_precision(args) == "bf16-mixed"
    assert lightning_precision(make_args(tmp_path, precision="32-true")) == "32-true"  # an explicit choice wins
    launched({"ACCELERATE_MIXED_PRECISION": "fp8"})
    with pytest.raises(ValueError, match="--mixed_precision fp8"):
        lightning_precision(make_args(tmp_path))
    launched({"ACCELERATE_MIXED_PRECISION": "no", "ACCELERATE_USE_CPU": "True"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        on_any = TrainingArguments(str(tmp_path), report_to="none")
    assert lightning_accelerator(on_any) == "cpu" and on_any.device == torch.device("cpu")


def test_accelerate_launch_settings_hf_lightning_does_not_read_are_refused(tmp_path: Path, launched: Any) -> None:
    launched(ACCELERATE)
    args = make_args(tmp_path)
    assert accelerate_launch_refusals(args) == []  # accelerate's defaults ("no", "NO") ask for nothing
    launched({"ACCELERATE_USE_FSDP": "true", "ACCELERATE_DYNAMO_BACKEND": "INDUCTOR"})
    refused = accelerate_launch_refusals(args)
    assert len(refused) == 2 and "`fsdp` / `fsdp_config`" in refused[0] and "`torch_compile=True`" in refused[1]
    with pytest.raises(ValueError, match="ACCELERATE_USE_FSDP=true .* set `fsdp` / `fsdp_config`"):
        lightning_trainer_kwargs(args, tiny_bert())
    compiled = make_args(tmp_path, fsdp=True, torch_compile=True)  # the arguments already ask for both
    assert accelerate_launch_refusals(compiled) == []
