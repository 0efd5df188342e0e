"""`train()` under a strategy whose processes Lightning starts from inside `fit` (`ddp_spawn`, `ddp_fork`,
`ddp_notebook`, any DDP in a notebook), with HF's results back in the calling process.

Lightning's `_MultiProcessingLauncher` runs `fit` in worker processes and hands the calling process only the
LightningModule's weights and Lightning's own state. A `transformers.Trainer` user expects what `train()` gives
everywhere else: the `TrainOutput`, `trainer.state` (log history, global step, best checkpoint ...), the trained
weights, optimizer and scheduler, and `evaluate()` / `predict()` / `save_model()` working afterwards.

So under such a strategy `train()` runs as under torchrun: Lightning's own launcher (start method, rendezvous port,
threads per process, for `spawn` the global RNG and determinism flags) starts one process per device; each gets the
environment of a launched rank (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `NODE_RANK`) and runs the
whole HF `train()` as one rank of a DDP run, in which Lightning starts no further process
(`strategies.ddp_start_method`). Rank 0 writes the checkpoints; each node's local rank 0 sends its results back
(`TrainResult`) and the calling process takes them over, as Lightning's launcher does for its own state
(`_WorkerOutput`, `update_main_process_results`).

HF callbacks run in the workers, as Lightning callbacks do under these strategies: the calling process gets their
effect on the state, not their calls.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import lightning.pytorch as pl
import torch
from torch import nn
from transformers import TrainerControl, TrainerState
from transformers.trainer_utils import TrainOutput

from hf_lightning.log_output import quiet_lightning
from hf_lightning.strategies import ddp_start_method
from hf_lightning.translation import lightning_trainer_kwargs

__all__ = ["LaunchedTrainer", "TrainResult", "starts_processes", "train_in_started_processes"]

# Start methods of Lightning's `_MultiProcessingLauncher` (from inside `fit`); "popen" re-runs the script instead.
_STARTED_IN_FIT = ("spawn", "fork", "forkserver")


class LaunchedTrainer(Protocol):
    """What this module uses of `hf_lightning.Trainer`."""

    args: Any
    model: nn.Module
    state: TrainerState
    control: TrainerControl
    optimizer: torch.optim.Optimizer | None
    lr_scheduler: Any

    def train(self, resume_from_checkpoint: Any = None, trial: Any = None, **kwargs: Any) -> TrainOutput: ...

    def create_optimizer(self) -> torch.optim.Optimizer: ...

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any: ...

    def _mark_model_prepared(self) -> None: ...

    def end(self) -> None: ...


def starts_processes(args: Any) -> bool:
    """Whether Lightning would start this run's processes from inside `fit` (and `train()` must run there)."""
    return ddp_start_method(args) in _STARTED_IN_FIT


def _to_bytes(obj: Any) -> bytes | None:
    """Tensors cross the process boundary as bytes (Lightning does the same: no shared-memory handles)."""
    if obj is None:
        return None
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


@dataclass
class TrainResult:
    """What a worker's `train()` leaves in its trainer, sent to the calling process.

    Args:
        output: The `TrainOutput` `train()` returned.
        state: `trainer.state` at the end (log history, global step, best checkpoint ...).
        control: `trainer.control` at the end.
        weights: The model's state dict (bytes).
        optimizer: The optimizer's state dict (bytes), None if there is no optimizer.
        scheduler: The scheduler's state dict (bytes), None if there is no scheduler.
    """

    output: TrainOutput
    state: TrainerState
    control: TrainerControl
    weights: bytes
    optimizer: bytes | None
    scheduler: bytes | None

    @classmethod
    def collect(cls, trainer: LaunchedTrainer, output: TrainOutput) -> TrainResult:
        scheduler = trainer.lr_scheduler
        return cls(
            output=output,
            state=trainer.state,
            control=trainer.control,
            weights=_to_bytes({k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}),
            optimizer=_to_bytes(trainer.optimizer.state_dict()) if trainer.optimizer is not None else None,
            scheduler=_to_bytes(scheduler.state_dict()) if hasattr(scheduler, "state_dict") else None,
        )

    def restore(self, trainer: LaunchedTrainer) -> TrainOutput:
        """Make `trainer` (in the calling process) hold what the worker's trainer held after `train()`."""
        trainer.model.load_state_dict(_from_bytes(self.weights))
        trainer.state = self.state
        trainer.control = self.control
        if self.optimizer is not None:
            trainer.create_optimizer().load_state_dict(_from_bytes(self.optimizer))
        if self.scheduler is not None:
            scheduler = trainer.create_scheduler(num_training_steps=self.state.max_steps, optimizer=trainer.optimizer)
            scheduler.load_state_dict(_from_bytes(self.scheduler))
        trainer._mark_model_prepared()
        return self.output


class _Processes(NamedTuple):
    """The layout the launcher starts: processes per node, nodes, this node's rank, the rendezvous address."""

    per_node: int
    num_nodes: int
    node_rank: int
    main_address: str
    start_method: str | None


def _train_in_worker(
    trainer: LaunchedTrainer, model: nn.Module, train_kwargs: dict[str, Any], processes: _Processes
) -> str | None:
    """One started process: become a launched rank, run HF's `train()`, hand local rank 0's results back.

    `model` is `trainer.model`, passed on its own so that Lightning's launcher finds it among the arguments: under
    "spawn" on the CPU it gives each process its own copy of the weights (pickled tensors would otherwise share
    one memory between the processes)."""
    local_rank = int(os.environ["LOCAL_RANK"])  # set by Lightning's launcher
    rank = processes.node_rank * processes.per_node + local_rank
    os.environ.update(
        WORLD_SIZE=str(processes.per_node * processes.num_nodes),
        RANK=str(rank),
        LOCAL_WORLD_SIZE=str(processes.per_node),
        NODE_RANK=str(processes.node_rank),
        MASTER_ADDR=processes.main_address,
    )
    if processes.start_method == "fork":
        # A forked copy of an OpenMP thread pool the calling process already used deadlocks at the first parallel
        # kernel (GNU libgomp is not fork-safe). Lightning sets one thread per worker only where OMP_NUM_THREADS is
        # unset; with it set (as many clusters and containers do), forked DDP would hang in the first forward.
        torch.set_num_threads(1)
    output = trainer.train(**train_kwargs)
    # The worker's script ends here, so it closes its process group as a launched script should (`Trainer.end()`).
    # Left to the interpreter's shutdown (a "spawn" worker exits through it), gloo's threads can abort the process
    # after training ("terminate called without an active exception", a torch issue), failing the whole launch.
    trainer.end()
    if local_rank != 0:
        return None
    # Through a file, as Lightning sends its weights: the launcher reads the queue only once every process has
    # exited, so a result larger than the pipe's buffer would block the sender forever. A fresh local folder: the
    # output folder may be shared between nodes.
    path = os.path.join(tempfile.mkdtemp(prefix="hf_lightning-"), "train_result.pkl")
    with open(path, "wb") as f:
        pickle.dump(TrainResult.collect(trainer, output), f)
    return path


def train_in_started_processes(trainer: LaunchedTrainer, **train_kwargs: Any) -> TrainOutput:
    """Run `trainer.train(**train_kwargs)` in the processes Lightning's launcher starts for `trainer.args`, and return
    local rank 0's `TrainOutput` with its state, weights, optimizer and scheduler taken over by `trainer`."""
    from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher

    if not isinstance(trainer.args.strategy, str):
        raise ValueError(
            f"`strategy` is a {type(trainer.args.strategy).__name__} object that starts its processes from inside "
            "`fit`; each of them must run HF's `train()` with a strategy that starts none, which an object cannot be "
            "rebuilt into. Pass its name instead (strategy='ddp_spawn', 'ddp_fork' or 'ddp_notebook'; HF's `ddp_*` "
            "arguments configure it), or launch with torchrun."
        )
    with warnings.catch_warnings(), quiet_lightning():  # built for its launcher: the workers build their own
        warnings.filterwarnings("ignore", message=".*treespec.*")
        strategy = pl.Trainer(**lightning_trainer_kwargs(trainer.args, trainer.model)).strategy
    launcher = strategy.launcher
    if not isinstance(launcher, _MultiProcessingLauncher):
        raise RuntimeError(f"Expected Lightning's multiprocessing launcher for {strategy!r}, got {launcher!r}.")
    environment = strategy.cluster_environment
    processes = _Processes(
        per_node=strategy.num_processes,
        num_nodes=strategy.num_nodes,
        node_rank=environment.node_rank(),
        main_address=environment.main_address,
        start_method=ddp_start_method(trainer.args),
    )
    port = os.environ.get("MASTER_PORT")
    try:
        path = launcher.launch(_train_in_worker, trainer, trainer.model, train_kwargs, processes)
    finally:  # the launcher publishes its port to the workers through this process's environment: take it back
        if port is None:
            os.environ.pop("MASTER_PORT", None)
        else:
            os.environ["MASTER_PORT"] = port
    try:
        with open(path, "rb") as f:
            result = pickle.load(f)  # written by our own worker, just now
    finally:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    return result.restore(trainer)
