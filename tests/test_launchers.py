"""Every launch mode runs a script that sets only HF arguments as transformers' Trainer would (issue 17, items 4-5).

One job, the tiny BERT on 16 samples with a global batch of 4, two epochs, a checkpoint every 2 steps, runs under
each launcher on 2 CPU processes (gloo) and once in this process on one; each run must give, in every calling
process, the one-process run's weights (within 1e-6: DDP sums gradients in another order), its `log_history` steps
and losses, its `TrainOutput`, and one checkpoint set written by rank 0:

* torchrun and `accelerate launch` for real (`python -m torch.distributed.run`, `accelerate launch --multi_gpu`),
  with transformers' own Trainer trained in the same processes for comparison;
* Lightning's own `ddp` launcher (the script re-run for rank 1);
* SLURM's `srun`, simulated with its variables in two forked processes;
* `ddp_spawn`, `ddp_fork` and `ddp_notebook` from this process (`hf_lightning.launchers`), followed by `evaluate()`
  and `predict()` here.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
import torch.distributed as dist
from helpers import ToyClassification, make_args, tiny_bert, trainer_classes
from test_strategies import free_port, launch
from torch import nn

from hf_lightning import Trainer, TrainingArguments
from hf_lightning.launchers import _Processes, _train_in_worker, train_in_started_processes

TESTS = Path(__file__).resolve().parent
GLOBAL_BATCH = 4
CHECKPOINTS = ["checkpoint-2", "checkpoint-4", "checkpoint-6", "checkpoint-8"]


def sum_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """Normalised by HF's `num_items_in_batch` (counted over all ranks), so 2 ranks x 2 samples and 1 rank x 4
    samples compute the same gradient; a model's own mean loss is multiplied by the world size, as in HF."""
    return nn.functional.cross_entropy(outputs.logits, labels, reduction="sum") / num_items_in_batch


def job(impl: str, out: str, world: int, **extra: Any) -> Any:
    """Train the job with `impl` ("hf": transformers, "hfl": hf_lightning) as one of `world` processes (HF
    arguments only, unless `extra` adds some); returns the trainer and its `TrainOutput`."""
    Trainer_, _ = trainer_classes(impl)
    params = dict(
        per_device_train_batch_size=GLOBAL_BATCH // world,
        learning_rate=1e-3,
        num_train_epochs=2,
        logging_steps=1,
        save_strategy="steps",
        save_steps=2,
    )
    args = make_args(impl, out, **{**params, **extra})
    trainer = Trainer_(
        model=tiny_bert(dropout=0.0),
        args=args,
        train_dataset=ToyClassification(16, seed=1),
        eval_dataset=ToyClassification(6, seed=2),
        compute_loss_func=sum_loss,
    )
    return trainer, trainer.train()


def record(trainer: Any, output: Any, out: str) -> dict:
    """What a calling process holds after `train()`: written to `out` (weights, JSON) and returned."""
    rank = trainer.args.process_index
    info = {
        "world_size": trainer.args.world_size,
        "rank": rank,
        "log_history": trainer.state.log_history,
        "global_step": output.global_step,
        "training_loss": output.training_loss,
        "precision": str(getattr(trainer.args, "precision", None) or trainer.args.mixed_precision),
    }
    lightning = getattr(trainer, "lightning_trainer", None)
    if lightning is not None:
        info["lightning"] = [lightning.world_size, lightning.global_rank, str(lightning.precision)]
    torch.save(trainer.model.state_dict(), os.path.join(out, f"weights{rank}.pt"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(info, f)
    return info


class Reference(NamedTuple):
    """The job on one process: its trainer, and its log history as `train()` left it (`evaluate()` appends)."""

    trainer: Trainer
    log_history: list[dict]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    trainer, _ = job("hfl", str(tmp_path_factory.mktemp("one_process")), world=1)
    return Reference(trainer, copy.deepcopy(trainer.state.log_history))


def max_weight_diff(weights: dict, model: nn.Module) -> float:
    reference = model.state_dict()
    assert weights.keys() == reference.keys()
    return max((weights[k].float() - reference[k].float()).abs().max().item() for k in reference)


def assert_matches_one_process(info: dict, weights: dict, reference: Reference, tolerance: float = 1e-6) -> None:
    """One calling process's results against the one-process run: weights, log steps and losses, TrainOutput."""
    diff = max_weight_diff(weights, reference.trainer.model)
    assert diff < tolerance, f"rank {info['rank']}: max weight difference {diff}"
    ours, ref = info["log_history"], reference.log_history
    assert [e["step"] for e in ours] == [e["step"] for e in ref] == list(range(1, 9)) + [8]
    for a, b in zip(ours, ref):
        assert a.keys() == b.keys()
        if "loss" in b:
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["learning_rate"] == b["learning_rate"]
    assert info["global_step"] == 8
    assert info["training_loss"] == pytest.approx(ref[-1]["train_loss"], rel=1e-5)


def assert_one_checkpoint_set(out: str | Path, world: int = 2) -> None:
    """Rank 0 wrote each checkpoint once, with every rank's RNG state, and nothing was left half-written."""
    names = sorted(os.listdir(out))
    assert [n for n in names if n.startswith("checkpoint")] == CHECKPOINTS
    assert not [n for n in names if n.startswith("tmp-")]
    files = set(os.listdir(Path(out, CHECKPOINTS[-1])))
    rng = {f"rng_state_{r}.pth" for r in range(world)}
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"} | rng <= files


# ---- launchers that run the script: torchrun, accelerate launch, Lightning's `ddp` ----------------------

SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from test_launchers import job, record

if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    trainers = {{}}
    for impl, out in config["runs"]:
        trainer, output = job(impl, out, world=2, **config.get("args", {{}}))
        record(trainer, output, out)
        trainers[impl] = trainer
    # The script's end, as transformers documents it: `Trainer.end()` closes the process group. Without it, gloo's
    # worker threads can outlive the interpreter's shutdown and abort the process ("terminate called without an
    # active exception": a torch issue, seen here once in rank 1 after both runs had finished).
    trainers["hfl"].end()
"""


def run_script(tmp_path: Path, launcher: list[str], runs: list[str], **args: Any) -> dict[str, list[dict]]:
    """Run the job script under `launcher` for each impl of `runs`; returns each impl's per-rank records."""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    outs = {impl: str(tmp_path / impl) for impl in runs}
    config = {"runs": [[impl, out] for impl, out in outs.items()], "args": args}
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(name, None)
    command = [*launcher, str(script), json.dumps(config)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return {impl: [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(2)] for impl, out in outs.items()}


def weights(out: str | Path, rank: int) -> dict:
    return torch.load(Path(out, f"weights{rank}.pt"))


def test_torchrun_runs_a_script_with_hf_arguments_only(tmp_path: Path, reference: Reference) -> None:
    """Issue 17, item 5: `torchrun --nproc_per_node 2 train.py` failed ("devices=1 ... does not match the world
    size (2)"). Now DDP over both processes, as transformers' Trainer runs it in the same processes."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    # hf_lightning first: Lightning creates the process group here (accelerate's, in the accelerate test)
    records = run_script(tmp_path, [*torchrun, "--master_port", str(free_port())], ["hfl", "hf"])
    for rank, info in enumerate(records["hfl"]):
        assert (info["world_size"], info["rank"], info["lightning"][:2]) == (2, rank, [2, rank])
        ours = weights(tmp_path / "hfl", rank)
        assert_matches_one_process(info, ours, reference)
        hf = records["hf"][rank]
        assert [e["step"] for e in info["log_history"]] == [e["step"] for e in hf["log_history"]]
        for a, b in zip(info["log_history"], hf["log_history"]):
            if "loss" in b:
                assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), (a, b)
        model = tiny_bert()
        model.load_state_dict(weights(tmp_path / "hf", rank))
        assert max_weight_diff(ours, model) == 0.0  # the same DDP reductions in the same order: bit-identical
    assert_one_checkpoint_set(tmp_path / "hfl")
    hf_checkpoints = sorted(n for n in os.listdir(tmp_path / "hf") if n.startswith("checkpoint"))
    assert hf_checkpoints == CHECKPOINTS


def test_accelerate_launch_runs_the_script_with_its_mixed_precision(tmp_path: Path) -> None:
    """`accelerate launch --multi_gpu --num_processes 2 --mixed_precision bf16` (torchrun underneath, on the CPU
    here): DDP over both processes in bf16, as transformers' Trainer runs the same script in the same processes."""
    pytest.importorskip("accelerate")
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    accelerate += ["--num_machines", "1", "--mixed_precision", "bf16", "--main_process_port", str(free_port())]
    records = run_script(tmp_path, accelerate, ["hf", "hfl"])
    for rank, info in enumerate(records["hfl"]):
        assert info["lightning"] == [2, rank, "bf16-mixed"] and records["hf"][rank]["precision"] == "bf16"
        hf = records["hf"][rank]
        assert [e["step"] for e in info["log_history"]] == [e["step"] for e in hf["log_history"]]
        for a, b in zip(info["log_history"], hf["log_history"]):
            if "loss" in b:  # both autocast the forward to bf16 (HF's loss function runs outside it)
                assert a["loss"] == pytest.approx(b["loss"], rel=2e-2), (a, b)
    assert_one_checkpoint_set(tmp_path / "hfl")


def test_lightnings_ddp_launcher_runs_the_script(tmp_path: Path, reference: Reference) -> None:
    """`python train.py` with `strategy="ddp", devices=2`: Lightning re-runs the script for rank 1; each process,
    the calling one included, ends with the one-process results."""
    records = run_script(tmp_path, [sys.executable], ["hfl"], strategy="ddp", devices=2)
    for rank, info in enumerate(records["hfl"]):
        assert (info["world_size"], info["rank"]) == (2, rank)
        assert_matches_one_process(info, weights(tmp_path / "hfl", rank), reference)
    assert_one_checkpoint_set(tmp_path / "hfl")


# ---- SLURM, simulated ----------------------------------------------------------------------------------


def _slurm_task(port: int, out: str, env: dict[str, str]) -> None:
    """One `srun` task: SLURM's variables (and no torchrun ones), then the script's job."""
    from accelerate.state import AcceleratorState, PartialState

    torch.set_num_threads(1)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "TORCHELASTIC_RUN_ID"):
        os.environ.pop(name, None)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **env)
    AcceleratorState._reset_state(True)  # the forked copy of the parent's single-process state
    PartialState._reset_state()
    trainer, output = job("hfl", out, world=2)
    record(trainer, output, out)


def test_slurm_srun_tasks_train_as_one_ddp_run(tmp_path: Path, reference: Reference) -> None:
    """`srun --ntasks-per-node 2 python train.py`: the world comes from SLURM's variables (Lightning's
    `SLURMEnvironment`), with HF arguments only."""
    slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_NODEID": "0"}
    slurm.update(SLURM_JOB_ID="4242", SLURM_JOB_NAME="train.py", SLURM_NODELIST="localhost")
    tasks = [{**slurm, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)} for r in range(2)]
    assert launch(_slurm_task, free_port(), str(tmp_path), tasks) == [0, 0]
    for rank in range(2):
        info = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert (info["world_size"], info["rank"], info["lightning"][:2]) == (2, rank, [2, rank])
        assert_matches_one_process(info, weights(tmp_path, rank), reference)
    assert_one_checkpoint_set(tmp_path)


# ---- Lightning's launchers that start the processes from inside fit --------------------------------------


def assert_calling_process_has_the_results(trainer: Trainer, output: Any, reference: Reference) -> None:
    """After `train()` returned here: TrainOutput, state, weights, optimizer and scheduler of the run; then
    `evaluate()` and `predict()` work here, on one process, as on the one-process run."""
    info = {
        "rank": 0,
        "log_history": trainer.state.log_history,
        "global_step": output.global_step,
        "training_loss": output.training_loss,
    }
    assert_matches_one_process(info, trainer.model.state_dict(), reference)
    assert trainer.state.global_step == trainer.state.max_steps == 8 and trainer.state.is_world_process_zero
    assert (trainer.args.world_size, trainer.args.process_index) == (1, 0)  # this process trains nothing itself
    one = reference.trainer
    assert trainer.lr_scheduler.last_epoch == one.lr_scheduler.last_epoch == 8
    ours, ref = trainer.optimizer.state_dict()["state"], one.optimizer.state_dict()["state"]
    assert ours.keys() == ref.keys() and all(ours[k]["step"] == ref[k]["step"] for k in ref)
    metrics, expected = trainer.evaluate(), one.evaluate()
    assert metrics.keys() == expected.keys() and "eval_model_preparation_time" not in metrics
    assert metrics["eval_loss"] == pytest.approx(expected["eval_loss"], rel=1e-5)
    assert trainer.state.log_history[-1]["step"] == 8 and "eval_loss" in trainer.state.log_history[-1]
    predictions = trainer.predict(ToyClassification(6, seed=2)).predictions
    assert predictions.shape == (6, 3)
    assert abs(predictions - one.predict(ToyClassification(6, seed=2)).predictions).max() < 1e-5


def test_the_calling_process_keeps_its_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning's launcher hands its port to the workers through the calling process's environment; a later run
    (a notebook's next cell) picks a free port again instead of the one the last run may still hold."""
    monkeypatch.delenv("MASTER_PORT", raising=False)
    job("hfl", str(tmp_path), world=2, strategy="ddp_fork", devices=2, save_strategy="no", max_steps=1)
    assert "MASTER_PORT" not in os.environ and "WORLD_SIZE" not in os.environ


FORKED_AFTER_THREADS = """
import sys
sys.path.insert(0, {tests!r})
import torch
from test_launchers import job

torch.nn.functional.layer_norm(torch.randn(512, 4096), (4096,))  # the calling process's OpenMP pool is in use
trainer, output = job("hfl", sys.argv[1], world=2, strategy="ddp_fork", devices=2, save_strategy="no", max_steps=2)
assert output.global_step == 2, output
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_workers_train_with_omp_num_threads_set(tmp_path: Path) -> None:
    """With OMP_NUM_THREADS=2 in the environment (Lightning then leaves the thread count alone) the forked workers
    deadlocked in their first forward, in the OpenMP pool copied from the calling process; they now train on one
    thread each."""
    env = dict(os.environ, OMP_NUM_THREADS="2", HF_HUB_OFFLINE="1")
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-c", FORKED_AFTER_THREADS.format(tests=str(TESTS)), str(tmp_path)]
    process = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        out, _ = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)  # the workers too
        pytest.fail("the forked workers hung")
    assert process.returncode == 0, out.decode()[-3000:]


def test_a_started_worker_closes_its_process_group_before_it_exits(tmp_path: Path, monkeypatch) -> None:
    """A process `train_in_started_processes` starts ends as a launched script should, with `Trainer.end()`: left to
    the interpreter's shutdown, gloo's threads can abort the worker after training (seen: rank 1 of the ddp_spawn
    test below killed by SIGABRT, "terminate called without an active exception")."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR"):
        # The worker sets them. setenv first so that monkeypatch records their absence too and restores it: left set,
        # they make the next test's TrainingArguments wait for a rendezvous that never comes.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("LOCAL_RANK", "1")  # as Lightning's launcher sets it; not local rank 0: no result to send
    trainer = Trainer(model=tiny_bert(), args=make_args("hfl", str(tmp_path)))

    def train(**kwargs: Any) -> Any:  # the worker's run: a process group (of one) is open when it returns
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
        return None

    monkeypatch.setattr(trainer, "train", train)
    try:
        assert _train_in_worker(trainer, trainer.model, {}, _Processes(2, 1, 0, "127.0.0.1", "spawn")) is None
        assert not dist.is_initialized()
        assert (os.environ["WORLD_SIZE"], os.environ["RANK"]) == ("2", "1")
    finally:  # (the environment is restored by monkeypatch after this)
        if dist.is_initialized():
            dist.destroy_process_group()


def test_ddp_spawn_returns_hf_results_to_the_calling_process(tmp_path: Path, reference: Reference) -> None:
    """Issue 17, item 4: under `ddp_spawn` every worker acted as rank 0 (both published each checkpoint, so the
    save failed), and with saving off this process got no `TrainOutput` and an empty state."""
    trainer, output = job("hfl", str(tmp_path), world=2, strategy="ddp_spawn", devices=2)
    assert_one_checkpoint_set(tmp_path)
    assert_calling_process_has_the_results(trainer, output, reference)


@pytest.mark.parametrize("strategy", ["ddp_fork", "ddp_notebook"])
def test_forked_ddp_returns_hf_results_to_the_calling_process(
    strategy: str, tmp_path: Path, reference: Reference
) -> None:
    trainer, output = job("hfl", str(tmp_path), world=2, strategy=strategy, devices=2)
    assert_one_checkpoint_set(tmp_path)
    assert_calling_process_has_the_results(trainer, output, reference)


def test_ddp_in_a_notebook_without_saving(
    tmp_path: Path, reference: Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notebook's `strategy="ddp"` forks its workers; with saving off the results still come back."""
    from lightning.fabric.utilities import imports

    monkeypatch.setattr(imports, "_IS_INTERACTIVE", True)
    trainer, output = job("hfl", str(tmp_path), world=2, strategy="ddp", devices=2, save_strategy="no")
    assert not os.listdir(tmp_path)
    assert_calling_process_has_the_results(trainer, output, reference)


def test_a_spawning_strategy_object_is_refused(tmp_path: Path) -> None:
    """A `DDPStrategy(start_method="spawn")` object cannot be rebuilt without its launcher in the workers: refused
    before any process starts, naming the way that works."""
    from lightning.pytorch.strategies import DDPStrategy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = TrainingArguments(str(tmp_path), use_cpu=True, report_to="none", devices=2)
    args.strategy = DDPStrategy(start_method="spawn")
    trainer = Trainer(model=tiny_bert(), args=args, train_dataset=ToyClassification(8))
    with pytest.raises(ValueError, match=r"strategy='ddp_spawn'"):
        train_in_started_processes(trainer)


NOTEBOOK_CELLS = [
    "import sys\nsys.path.insert(0, {tests!r})\nfrom test_launchers import job, record",
    'trainer, output = job("hfl", {out!r}, world=2, strategy="ddp", devices=2)\nprint(output)',
    "info = record(trainer, output, {out!r})\nprint(trainer.evaluate())",
]


@pytest.mark.skipif(importlib.util.find_spec("nbclient") is None, reason="needs nbclient and ipykernel")
def test_ddp_from_a_jupyter_kernel(tmp_path: Path, reference: Reference) -> None:
    """`strategy="ddp", devices=2` in a notebook cell (a real kernel, no `__main__` guard): the workers are forked
    and the cell gets the `TrainOutput`; later cells evaluate on the trained model."""
    import nbformat
    from nbclient import NotebookClient

    out = str(tmp_path / "run")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(c.format(tests=str(TESTS), out=out)) for c in NOTEBOOK_CELLS]
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    printed = "".join(o.get("text", "") for cell in notebook.cells for o in cell.outputs if o["name"] == "stdout")
    assert "TrainOutput(global_step=8" in printed and "'eval_loss'" in printed
    info = json.loads(Path(out, "rank0.json").read_text())
    assert_matches_one_process(info, weights(out, 0), reference)
    assert_one_checkpoint_set(out)
