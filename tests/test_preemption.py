"""Preemption: SIGTERM / SIGUSR1 -> a checkpoint at the next optimiser-step boundary -> resume, bit-identical.

The job is the tiny BERT (dropout on) with gradient accumulation 2 over windows of 2, 2 and a short 1 (3 steps an
epoch, 9 in all). The signal is sent to the training process itself at a given step (a real signal, handled by the
handler `train()` installs) or, in the subprocess test, by another process at a moment it does not choose; SLURM is
simulated with its environment variables and a stand-in `scontrol` on the PATH that records its arguments.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import ToyClassification, assert_same_weights, make_args, tiny_bert, trainer_classes
from transformers import TrainerCallback

from hf_lightning.preemption import MARKER_NAME, TrainingPreempted, hf_kill_wait, pending_resume

TESTS_DIR = Path(__file__).resolve().parent
JOB = dict(
    per_device_train_batch_size=4,
    gradient_accumulation_steps=2,
    num_train_epochs=3,
    learning_rate=1e-3,
    logging_steps=1,
    save_strategy="no",
)
STEPS = 9


class SignalAt(TrainerCallback):
    """Sends `signum` to its own process when step `step` begins (the checkpoint follows at that step's end)."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def job(out: Any, callbacks: list | None = None, impl: str = "hfl", n_eval: int = 0, **overrides: Any) -> Any:
    trainer_cls, _ = trainer_classes(impl)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trainer_cls(
            model=tiny_bert(),
            args=make_args(impl, str(out), **{**JOB, **overrides}),
            train_dataset=ToyClassification(20, seed=1),
            eval_dataset=ToyClassification(n_eval, seed=2) if n_eval else None,
            callbacks=callbacks,
        )


def train_entries(trainer: Any) -> list[dict]:
    return [e for e in trainer.state.log_history if "loss" in e]


def comparable(log_history: list[dict]) -> list[dict]:
    """The step entries of `log_history` (train and eval) without their timings; the end-of-training summary is left
    out (its averages cover the steps of one `train()` call, as in transformers)."""
    return [
        {k: v for k, v in e.items() if "runtime" not in k and "per_second" not in k}
        for e in log_history
        if "train_runtime" not in e
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Any:
    trainer = job(tmp_path_factory.mktemp("reference"))
    trainer.train()
    return trainer


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """A SLURM batch job as the environment shows it, and an `scontrol` that appends its arguments to a file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls.txt"
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for name, value in dict(
        SLURM_JOB_ID="4242", SLURM_NTASKS="1", SLURM_JOB_NAME="train", SLURM_PROCID="0", SLURM_LOCALID="0"
    ).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLURM_NODEID", "0")
    return calls


def assert_resumed_identically(reference: Any, resumed: Any) -> None:
    assert_same_weights(reference.model, resumed.model)
    assert train_entries(resumed) == train_entries(reference)
    assert resumed.state.global_step == reference.state.global_step == STEPS


# ---- checkpoint_on_preemption -------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [1, 4], ids=["mid-epoch-1", "mid-epoch-2"])
def test_sigterm_mid_epoch_checkpoints_exits_and_resumes_bit_identically(reference, tmp_path, step) -> None:
    out = tmp_path / "run"
    handlers_before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)
    preempted = job(out, [SignalAt(step, signal.SIGTERM)], checkpoint_on_preemption=True)
    with pytest.raises(TrainingPreempted) as stop:
        preempted.train()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)) == handlers_before
    assert stop.value.code == 128 + signal.SIGTERM and not stop.value.requeued
    checkpoint = out / f"checkpoint-{step + 1}"  # the step that was running when the signal came
    assert stop.value.checkpoint == str(checkpoint)
    assert sorted(p.name for p in out.iterdir()) == [checkpoint.name, MARKER_NAME]  # nothing else, nothing temporary
    assert (checkpoint / "trainer_state.json").is_file() and (checkpoint / "optimizer.pt").is_file()
    marker = json.loads((out / MARKER_NAME).read_text())
    assert marker == {"checkpoint": checkpoint.name, "signal": "SIGTERM", "slurm_job_id": None}
    assert train_entries(preempted) == train_entries(reference)[: step + 1]  # the step's log is in the checkpoint

    resumed = job(out, checkpoint_on_preemption=True)
    resumed.train()  # no resume_from_checkpoint: the marker names the checkpoint
    assert_resumed_identically(reference, resumed)
    assert not (out / MARKER_NAME).exists()


def test_slurm_usr1_requeues_and_the_requeued_job_resumes(reference, tmp_path, fake_slurm, monkeypatch) -> None:
    out = tmp_path / "run"
    preempted = job(out, [SignalAt(4, signal.SIGUSR1)], checkpoint_on_preemption=True)
    with pytest.raises(TrainingPreempted) as stop:
        preempted.train()
    assert stop.value.code == 128 + signal.SIGUSR1 and stop.value.requeued
    assert fake_slurm.read_text().split("\n") == ["requeue 4242", ""]
    assert json.loads((out / MARKER_NAME).read_text())["slurm_job_id"] == "4242"

    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # what SLURM adds in the requeued job
    resumed = job(out, checkpoint_on_preemption=True)
    resumed.train()
    assert_resumed_identically(reference, resumed)


def test_slurm_array_task_and_requeue_opt_out(tmp_path, fake_slurm, monkeypatch) -> None:
    from lightning.fabric.plugins.environments import SLURMEnvironment

    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    with pytest.raises(TrainingPreempted) as stop:
        job(tmp_path / "array", [SignalAt(1, signal.SIGUSR1)], checkpoint_on_preemption=True).train()
    assert stop.value.requeued and fake_slurm.read_text() == "requeue 77_3\n"
    # SIGTERM is SLURM cancelling or preempting the job: checkpoint and exit, no requeue (SLURM decides).
    with pytest.raises(TrainingPreempted) as stop:
        job(tmp_path / "term", [SignalAt(1, signal.SIGTERM)], checkpoint_on_preemption=True).train()
    assert not stop.value.requeued
    # Lightning's own switch turns requeueing off.
    plugin = SLURMEnvironment(auto_requeue=False)
    with pytest.raises(TrainingPreempted) as stop:
        job(tmp_path / "off", [SignalAt(1, signal.SIGUSR1)], checkpoint_on_preemption=True, plugins=[plugin]).train()
    assert not stop.value.requeued and fake_slurm.read_text() == "requeue 77_3\n"


def test_preemption_at_an_evaluation_step_keeps_the_best_model_bookkeeping(tmp_path) -> None:
    """`save_strategy="best"`: the step's evaluation decides on its own save; the preemption checkpoint is written
    anyway (at the epoch end the stop triggers, without evaluating again) and the run resumes identically."""
    kw = dict(eval_strategy="steps", eval_steps=2, save_strategy="best", metric_for_best_model="loss", n_eval=4)

    def run(out: Any, callbacks: list | None = None) -> Any:
        return job(out, callbacks, checkpoint_on_preemption=True, **kw)

    full = run(tmp_path / "full")
    full.train()
    preempted = run(tmp_path / "run", [SignalAt(3, signal.SIGTERM)])
    with pytest.raises(TrainingPreempted) as stop:
        preempted.train()
    assert stop.value.checkpoint.endswith("checkpoint-4")
    assert sum("eval_loss" in e for e in preempted.state.log_history) == 2  # steps 2 and 4, no epoch-end extra
    resumed = run(tmp_path / "run")
    resumed.train()
    assert_same_weights(full.model, resumed.model)
    assert comparable(resumed.state.log_history) == comparable(full.state.log_history)
    # (None for both before transformers 5.4, which records no best checkpoint under save_strategy="best")
    best = [t.state.best_model_checkpoint for t in (resumed, full)]
    assert [Path(b).name if b else None for b in best] == [Path(best[1]).name if best[1] else None] * 2


def test_a_signal_after_the_last_step_is_only_reported(tmp_path, caplog) -> None:
    class LateSignal(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)

    trainer = job(tmp_path, [LateSignal()], checkpoint_on_preemption=True)
    with caplog.at_level("WARNING", logger="hf_lightning"):
        trainer.train()  # completes: no checkpoint to write, no exit
    assert "after the last optimiser step" in caplog.text
    assert not any(p.name.startswith("checkpoint-") for p in tmp_path.iterdir())


def test_marker_pointing_at_an_incomplete_checkpoint_falls_back(tmp_path, caplog) -> None:
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (tmp_path / "tmp-checkpoint-4").mkdir()
    (tmp_path / MARKER_NAME).write_text(json.dumps({"checkpoint": "checkpoint-4", "signal": "SIGTERM"}))
    with caplog.at_level("WARNING", logger="hf_lightning"):
        assert pending_resume(str(tmp_path)) == str(tmp_path / "checkpoint-2")
    assert "incomplete or gone" in caplog.text
    assert pending_resume(str(tmp_path / "elsewhere")) is None


def test_save_only_model_cannot_resume_so_it_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="save_only_model"):
        job(tmp_path, checkpoint_on_preemption=True, save_only_model=True)


def test_off_by_default_nothing_installed(tmp_path) -> None:
    trainer = job(tmp_path)
    assert trainer.preemption is None
    assert not any(type(cb).__name__ == "PreemptionHandler" for cb in trainer.callback_handler.callbacks)


# ---- enable_jit_checkpoint: transformers' semantics ------------------------------------------------------------


def test_kill_wait_is_read_from_transformers(monkeypatch) -> None:
    from transformers.trainer_jit_checkpoint import CheckpointManager

    assert hf_kill_wait() == inspect.signature(CheckpointManager.__init__).parameters["kill_wait"].default
    monkeypatch.setattr(CheckpointManager.__init__, "__defaults__", (0.25,))
    assert hf_kill_wait() == 0.25


class SlowSteps(TrainerCallback):
    """SIGTERM at step 1, then each step end waits `pause` s: transformers' grace period spans a few steps."""

    def __init__(self, pause: float) -> None:
        self.pause = pause

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(self.pause)


def test_jit_checkpoint_after_transformers_grace_period_then_train_returns(reference, tmp_path, monkeypatch) -> None:
    """Like transformers: the checkpoint is requested `kill_wait` s after SIGTERM, training stops, `train()` returns
    normally (no exit). Here the checkpoint is at a step end, so resuming it is bit-identical."""
    from transformers.trainer_jit_checkpoint import CheckpointManager

    monkeypatch.setattr(CheckpointManager.__init__, "__defaults__", (0.5,))  # both trainers read it
    handler_before = signal.getsignal(signal.SIGTERM)
    for impl in ("hf", "hfl"):
        out = tmp_path / impl
        trainer = job(out, [SlowSteps(0.2)], impl=impl, enable_jit_checkpoint=True)
        trainer.train()  # returns: transformers' JIT checkpoint stops training, it does not exit
        steps = trainer.state.global_step
        assert 2 < steps < STEPS, f"{impl}: stopped at {steps}"  # after the grace period, before the end
        assert any(p.name.startswith("checkpoint-") for p in out.iterdir()), impl
        assert not (out / MARKER_NAME).exists()
        assert signal.getsignal(signal.SIGTERM) == handler_before, impl
    checkpoint = out / f"checkpoint-{steps}"  # hf_lightning's: at the end of the last step trained
    resumed = job(out, enable_jit_checkpoint=True)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert_resumed_identically(reference, resumed)


# ---- a real external SIGTERM, and a SIGKILL in the middle of the preemption save --------------------------------


def preemption_child(out: str, mode: str) -> None:
    """The training script of a child process: waits for an outside SIGTERM ("external"), or sends one itself and is
    SIGKILLed while writing the preemption checkpoint ("killed-mid-save")."""
    trainer = job(out, checkpoint_on_preemption=True, save_strategy="steps", save_steps=2)

    class Progress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            Path(out, "progress").write_text(str(state.global_step))
            time.sleep(0.3 if mode == "external" else 0)

        def on_step_begin(self, args, state, control, **kwargs):
            if mode == "killed-mid-save" and state.global_step == 4:
                os.kill(os.getpid(), signal.SIGTERM)

    real_save_rng = trainer._save_rng_state

    def dying_save(output_dir: str) -> None:
        if mode == "killed-mid-save" and trainer.state.global_step == 5:  # the preemption checkpoint (5 is odd)
            os.kill(os.getpid(), signal.SIGKILL)
        real_save_rng(output_dir)

    trainer._save_rng_state = dying_save
    trainer.add_callback(Progress())
    trainer.train()


def preemption_driver(root: str) -> None:
    """Subprocess entry: import once, then fork the two children; SIGTERM the first from here when it has trained a
    few steps; record how each ended."""
    statuses = {}
    for mode in ("external", "killed-mid-save"):
        out = os.path.join(root, mode)
        os.makedirs(out)
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                preemption_child(out, mode)
            except SystemExit as stop:
                code = stop.code
            finally:
                os._exit(code)
        progress = Path(out, "progress")
        while mode == "external":
            if progress.is_file() and progress.read_text() and int(progress.read_text()) >= 3:
                os.kill(pid, signal.SIGTERM)  # from outside, at whatever point the child is
                break
            time.sleep(0.02)
        _, status = os.waitpid(pid, 0)
        statuses[mode] = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    Path(root, "statuses.json").write_text(json.dumps(statuses))


@pytest.fixture
def one_thread():
    """torch on one intra-op thread, as the forked children below train: a CPU kernel split over more threads may sum
    in another order (a 4e-9 difference on a many-core machine), and the comparison is bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_external_sigterm_and_sigkill_mid_save(one_thread, tmp_path) -> None:
    code = f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import test_preemption as t; "
    code += "t.preemption_driver(sys.argv[1])"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    statuses = json.loads((tmp_path / "statuses.json").read_text())
    assert statuses == {"external": 128 + signal.SIGTERM, "killed-mid-save": -signal.SIGKILL}

    marker = json.loads((tmp_path / "external" / MARKER_NAME).read_text())
    assert (tmp_path / "external" / marker["checkpoint"] / "trainer_state.json").is_file()
    left = sorted(p.name for p in (tmp_path / "killed-mid-save").iterdir())
    assert "tmp-checkpoint-5" in left and "checkpoint-5" not in left and "checkpoint-4" in left
    reference = job(tmp_path / "reference")  # on one thread, as the children
    reference.train()
    for mode in ("external", "killed-mid-save"):  # the next run resumes (from checkpoint-4 after the SIGKILL)
        resumed = job(tmp_path / mode, checkpoint_on_preemption=True, save_strategy="steps", save_steps=2)
        resumed.train()
        assert_resumed_identically(reference, resumed)


# ---- several processes: the ranks agree on the step ---------------------------------------------------------------


class SignalOnRank(SignalAt):
    """SIGTERM to one rank only: the others learn of it through the step-end reduction."""

    def __init__(self, step: int, rank: int) -> None:
        super().__init__(step, signal.SIGTERM)
        self.rank = rank

    def on_step_begin(self, args, state, control, **kwargs):
        if args.process_index == self.rank:
            super().on_step_begin(args, state, control, **kwargs)


def _ddp_rank(port: int, out: str, rank: int) -> None:
    from accelerate.state import AcceleratorState, PartialState

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank)
    )
    os.environ["NODE_RANK"] = "0"
    AcceleratorState._reset_state(True)  # the forked copy of the parent's single-process state
    PartialState._reset_state()
    trainer = job(
        out,
        [SignalOnRank(step=2, rank=1)],
        checkpoint_on_preemption=True,
        strategy="ddp",
        devices=2,
        ddp_backend="gloo",
        per_device_train_batch_size=2,
    )
    try:
        trainer.train()
    except TrainingPreempted as stop:
        record = {"code": stop.code, "checkpoint": stop.checkpoint, "step": trainer.state.global_step}
        Path(out, f"rank{rank}.json").write_text(json.dumps(record))
        raise


def ddp_driver(root: str) -> None:
    """Subprocess entry: fork the two ranks before anything has trained in this process."""
    import multiprocessing

    from helpers import free_port

    ctx = multiprocessing.get_context("fork")
    port = free_port()
    procs = [ctx.Process(target=_ddp_rank, args=(port, root, rank)) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        if p.exitcode is None:
            p.kill()
    Path(root, "exitcodes.json").write_text(json.dumps([p.exitcode for p in procs]))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_ddp_ranks_checkpoint_at_the_same_step_when_one_is_signalled(tmp_path) -> None:
    code = f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import test_preemption as t; "
    code += "t.ddp_driver(sys.argv[1])"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    exits = json.loads((tmp_path / "exitcodes.json").read_text())
    assert exits == [128 + signal.SIGTERM] * 2, result.stderr.decode()[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1] == {"code": 143, "checkpoint": str(tmp_path / "checkpoint-3"), "step": 3}
    assert (tmp_path / "checkpoint-3" / "trainer_state.json").is_file()
    assert json.loads((tmp_path / MARKER_NAME).read_text())["checkpoint"] == "checkpoint-3"
