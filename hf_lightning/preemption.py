"""Preemption that loses nothing: a complete checkpoint at the next optimiser-step boundary on SIGTERM / SIGUSR1.

Two `TrainingArguments` switches, one mechanism (`PreemptionHandler`, an HF callback the Trainer adds):

* `enable_jit_checkpoint` (transformers' own field, its semantics): on SIGTERM, after transformers' grace period
  (`CheckpointManager`'s `kill_wait`, read from the installed transformers), the run writes `checkpoint-N` and stops
  training; `train()` returns as transformers' does.
* `checkpoint_on_preemption` (hf_lightning): on SIGTERM (Kubernetes, `scancel`, SLURM's preemption) or SIGUSR1
  (SLURM's `--signal=USR1@<seconds>` before the time limit; a `SLURMEnvironment(requeue_signal=...)` in `plugins`
  names another) the checkpoint is requested at once; after it is written, on SLURM's requeue signal the job is
  requeued (`scontrol requeue`, as Lightning's auto-requeue does; `plugins=[SLURMEnvironment(auto_requeue=False)]`
  turns that off), `output_dir/preemption.json` names the checkpoint (written before the save starts: a run killed
  while saving resumes from the last complete checkpoint), and `train()` raises `TrainingPreempted`
  (a `SystemExit`, status 128 + the signal number) once training has ended cleanly. The next `train()` of the same
  `output_dir` (the requeued job, a restarted pod) resumes from that checkpoint on its own, bit-identical to a run
  that was never interrupted, and removes the marker when it completes.

Where the checkpoint is taken: at the end of an optimiser step, after that step's log and evaluation, through the HF
loop's own save (`control.should_save`), so it is atomic: written to `tmp-checkpoint-N`, then renamed; a SIGKILL
mid-write leaves nothing that resume would pick. transformers' own callback may also checkpoint before an optimiser
step or at a step's start, before the step's log; a checkpoint there cannot resume bit-identically (the window's
dropout has already drawn from the RNG, the log entry is missing), so hf_lightning always waits for the step's end (a
request made during an epoch's end is served at the next step's end). After the checkpoint the epoch-end evaluation
and save are skipped. With several processes the request is summed over the ranks at each step end, so all of them
save at the same step.

Signal handlers are installed by `train()` and restored when it returns; Lightning installs its own SIGTERM handler
(which would stop the run at the next micro-batch, without a checkpoint) when training starts, so the handler takes
the signals over again at `on_train_begin`. A signal that arrives after the last optimiser step is only reported:
the run is complete. Without either switch nothing is installed and nothing runs per step.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import signal
import subprocess
import threading
from typing import Any

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from typing_extensions import override

logger = logging.getLogger(__name__)

__all__ = ["MARKER_NAME", "PreemptionHandler", "TrainingPreempted", "pending_resume", "preemption_handler"]

MARKER_NAME = "preemption.json"
"""The file in `output_dir` that names the checkpoint a preempted run wrote (`checkpoint_on_preemption`)."""


class TrainingPreempted(SystemExit):
    """`train()` stopped after writing a preemption checkpoint (`checkpoint_on_preemption`); the process should exit.

    A `SystemExit`: uncaught, the interpreter exits quietly with status `128 + signal number` (what a shell reports
    for a process ended by that signal), so an orchestrator sees an interrupted job, not a finished one.
    """

    def __init__(self, signum: int, checkpoint: str | None, requeued: bool) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.checkpoint = checkpoint
        self.requeued = requeued

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        where = f"checkpoint saved in {self.checkpoint}" if self.checkpoint else "no checkpoint"
        return f"training preempted by {name}: {where}" + ("; SLURM job requeued" if self.requeued else "")


def hf_kill_wait() -> float:
    """transformers' grace period between SIGTERM and the JIT checkpoint request (`CheckpointManager(kill_wait=)`)."""
    from transformers.trainer_jit_checkpoint import CheckpointManager

    return float(inspect.signature(CheckpointManager.__init__).parameters["kill_wait"].default)


def _slurm_plugin(args: Any) -> SLURMEnvironment | None:
    plugins = args.plugins if isinstance(args.plugins, (list, tuple)) else [args.plugins]
    return next((p for p in plugins if isinstance(p, SLURMEnvironment)), None)


def slurm_job_id() -> str | None:
    """The id `scontrol requeue` takes: `<array job>_<task>` for an array task, else `SLURM_JOB_ID`."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ.get("SLURM_JOB_ID")
    return job if job and re.fullmatch(r"[0-9_]+", job) else None


def requeue_slurm_job(job_id: str) -> bool:
    """`scontrol requeue <job_id>`, as Lightning's SLURM signal handler runs it; True when it succeeded."""
    try:
        status = subprocess.call(["scontrol", "requeue", job_id])
    except FileNotFoundError:
        logger.warning("Cannot requeue SLURM job %s: `scontrol` is not on the PATH.", job_id)
        return False
    if status != 0:
        logger.warning("Requeuing SLURM job %s failed with exit code %s.", job_id, status)
    return status == 0


def preemption_handler(trainer: Any) -> PreemptionHandler | None:
    """The handler `trainer.args` asks for (`checkpoint_on_preemption` or `enable_jit_checkpoint`), or None."""
    args = trainer.args
    if getattr(args, "checkpoint_on_preemption", False):
        if args.save_only_model:
            raise ValueError(
                "`checkpoint_on_preemption` resumes from the checkpoint it writes, which needs the optimizer, "
                "scheduler and RNG states that `save_only_model=True` leaves out: unset one of them."
            )
        plugin = _slurm_plugin(args)
        requeue_signal = plugin.requeue_signal if plugin is not None else signal.SIGUSR1
        signals = tuple(dict.fromkeys([signal.SIGTERM, signal.SIGUSR1, requeue_signal]))
        requeue = SLURMEnvironment.detect() and (plugin is None or plugin.auto_requeue)
        return PreemptionHandler(trainer, signals, kill_wait=0.0, requeue_signal=requeue_signal if requeue else None)
    if args.enable_jit_checkpoint:
        return PreemptionHandler(trainer, (signal.SIGTERM,), kill_wait=hf_kill_wait(), requeue_signal=None)
    return None


class PreemptionHandler(TrainerCallback):
    """Turns a preemption signal into a checkpoint at the next optimiser-step boundary and a clean stop.

    Args:
        trainer: the `hf_lightning.Trainer` (its loop saves the checkpoint; its Lightning strategy sums the request
            over the ranks).
        signals: the signals that request the checkpoint.
        kill_wait: seconds between the signal and the request (transformers' JIT grace period; 0: at once).
        requeue_signal: the signal on which the SLURM job is requeued after the checkpoint (None: never).
    """

    def __init__(
        self, trainer: Any, signals: tuple[int, ...], kill_wait: float = 0.0, requeue_signal: int | None = None
    ) -> None:
        self.trainer = trainer
        self.signals = signals
        self.kill_wait = kill_wait
        self.requeue_signal = requeue_signal
        self.exits = bool(getattr(trainer.args, "checkpoint_on_preemption", False))
        self.signum: int | None = None  # the signal received (first one wins)
        self.requested = False  # the checkpoint is asked for (after `kill_wait`)
        self.checkpoint: str | None = None  # the preemption checkpoint, once written
        self.requeued = False
        self._due = False  # the checkpoint is on its way in this step's (or the epoch end's) save
        self._previous: dict[int, Any] = {}
        self._timer: threading.Timer | None = None

    # ---- signals ----------------------------------------------------------------------------------------

    def install(self) -> None:
        """Take the signals over (again at `on_train_begin`: Lightning registers its own handlers when training
        starts). The first call of a `train()` also forgets what a previous `train()` received."""
        if threading.current_thread() is not threading.main_thread():
            logger.warning("Preemption checkpoints need the main thread to receive signals; they are off.")
            return
        if not self._previous:
            self.signum, self.requested, self.checkpoint, self.requeued, self._due = None, False, None, False, False
        for signum in self.signals:
            if signal.getsignal(signum) is not self._on_signal:
                previous = signal.signal(signum, self._on_signal)
                self._previous.setdefault(signum, previous)

    def uninstall(self) -> None:
        """Give the signals back to the handlers `install` found."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}
        if self.signum is not None and self.checkpoint is None:
            logger.warning(
                "%s arrived after the last optimiser step: training completed, no preemption checkpoint was needed.",
                signal.Signals(self.signum).name,
            )

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        name = signal.Signals(signum).name
        if self.kill_wait > 0:
            logger.warning("%s received: checkpoint requested in %ss, then training stops.", name, self.kill_wait)
            self._timer = threading.Timer(self.kill_wait, self._request)
            self._timer.daemon = True
            self._timer.start()
        else:
            logger.warning("%s received: checkpoint at the end of this optimiser step, then training stops.", name)
            self._request()

    def _request(self) -> None:
        self.requested = True

    def _agreed_request(self) -> int | None:
        """The signal a checkpoint was requested for, on this process or on any other (the largest signal number
        when they differ), so every rank acts at the same step; None when no rank asked."""
        local = self.signum if self.requested else None
        lightning = self.trainer.lightning_trainer
        if lightning is None or lightning.world_size <= 1:
            return local
        from torch.distributed import ReduceOp

        value = torch.tensor(float(local or 0), device=lightning.strategy.root_device)
        agreed = int(lightning.strategy.reduce(value, reduce_op=ReduceOp.MAX).item())
        return agreed or None

    # ---- HF events ---------------------------------------------------------------------------------------

    @override
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.install()

    @override
    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """A requested checkpoint is saved by the loop at this step, after its log and evaluation; training stops."""
        signum = self._agreed_request() if self.checkpoint is None and not self._due else None
        if signum is not None:
            self.signum = self.signum if self.signum is not None else signum  # asked on another rank
            self._due = True
            control.should_save = True
            control.should_training_stop = True
            if self.exits and args.should_save:  # before the save: killed while saving, the next run still resumes
                write_marker(args.output_dir, self._checkpoint_path(state), self.signum)

    @override
    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._due:
            self._written(args, state)

    @override
    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """The stop ends the epoch: no evaluation or save there once the checkpoint is written; when the step's save
        did not happen (`save_strategy="best"` and no new best), it happens here, without evaluating again."""
        if self._due:
            control.should_save, control.should_evaluate = True, False
        elif self.checkpoint is not None:
            control.should_save = control.should_evaluate = False

    # ---- after the checkpoint --------------------------------------------------------------------------

    def _checkpoint_path(self, state: Any) -> str:
        run_dir = self.trainer._get_output_dir(getattr(self.trainer, "_trial", None))
        return os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")

    def _written(self, args: Any, state: Any) -> None:
        self._due = False
        self.checkpoint = self._checkpoint_path(state)
        logger.warning("Preemption checkpoint written: %s", self.checkpoint)
        if not self.exits:
            return
        if self.requeue_signal is not None and self.signum == self.requeue_signal and state.is_world_process_zero:
            job = slurm_job_id()
            self.requeued = job is not None and requeue_slurm_job(job)
            if self.requeued:
                logger.warning("Requeued SLURM job %s: it resumes from %s.", job, self.checkpoint)

    def exit_if_preempted(self) -> None:
        """After `train()` has finished its run: raise `TrainingPreempted` when a preemption stopped it
        (`checkpoint_on_preemption`); otherwise, a completed run, remove its marker."""
        if self.exits and self.checkpoint is not None:
            raise TrainingPreempted(self.signum, self.checkpoint, self.requeued)
        if self.exits and self.trainer.args.should_save:
            remove_marker(self.trainer.args.output_dir)


# ---- the marker and automatic resume -----------------------------------------------------------------------


def write_marker(output_dir: str, checkpoint: str, signum: int | None) -> None:
    """Write `output_dir/preemption.json` atomically (temporary file, then rename)."""
    record = {
        "checkpoint": os.path.relpath(checkpoint, output_dir),
        "signal": signal.Signals(signum).name if signum is not None else None,
        "slurm_job_id": slurm_job_id(),
    }
    path = os.path.join(output_dir, MARKER_NAME)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_marker(output_dir: str) -> None:
    path = os.path.join(output_dir, MARKER_NAME)
    if os.path.exists(path):
        os.remove(path)


def pending_resume(output_dir: str) -> str | None:
    """The checkpoint a preempted run of `output_dir` left for the next `train()` to resume from, or None.

    If the marked checkpoint is gone or incomplete, the last complete checkpoint of `output_dir` is used instead."""
    from hf_lightning.checkpoints import is_complete_checkpoint, last_complete_checkpoint

    path = os.path.join(output_dir, MARKER_NAME)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        record = json.load(f)
    checkpoint = os.path.join(output_dir, record.get("checkpoint") or "")
    if not is_complete_checkpoint(checkpoint):
        fallback = last_complete_checkpoint(output_dir)
        logger.warning("The preemption checkpoint %s is incomplete or gone; resuming from %s.", checkpoint, fallback)
        return fallback
    logger.warning("Resuming from %s, written when the previous run was preempted (%s).", checkpoint, record["signal"])
    return checkpoint
