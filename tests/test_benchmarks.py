"""Smoke test of benchmarks/run.py, and the lazy top-level import the import-time benchmark relies on."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_runs_and_checks_bit_identity(tmp_path):
    """The quick lock-step run, with a second checkout as `--baseline` (an A/B of two versions in one ring): its
    worker imports hf_lightning from that checkout, the others from this one."""
    baseline = tmp_path / "baseline"
    shutil.copytree(ROOT / "hf_lightning", baseline / "hf_lightning", ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--baseline", str(baseline)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"hfl": "bit-identical"' in proc.stdout
    assert '"raw": "bit-identical"' in proc.stdout
    assert '"base": "bit-identical"' in proc.stdout
    imported = json.loads(next(line for line in proc.stdout.splitlines() if '"hf_lightning"' in line))
    assert imported["hf_lightning"]["base"] == str(baseline.resolve())
    assert imported["hf_lightning"]["hfl"] != str(baseline.resolve())
    assert "quick run OK" in proc.stdout
    # Every implementation, the Lightning floor (`plm`) included, spends part of each step in the timed kernels
    # (`ComputeClock`) and part outside them.
    timed = json.loads(next(line for line in proc.stdout.splitlines() if '"compute_and_wall_ms"' in line))
    assert set(timed["compute_and_wall_ms"]) == {"raw", "hf", "hfl", "plm", "base"}
    for impl, (compute, wall) in timed["compute_and_wall_ms"].items():
        assert 0 < compute < wall, (impl, compute, wall)


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("hfl_benchmark_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_compute_clock_counts_only_the_outermost_of_nested_regions(monkeypatch):
    """Lightning clips inside `optimizer.step()` (and automatic optimisation runs forward and backward there): a
    region inside another is not counted twice."""
    bench = _benchmark_module()
    now = iter(range(0, 1000, 10))  # each clock read is 10 s after the last
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(now))
    clock = bench.ComputeClock
    monkeypatch.setattr(clock, "total", 0.0)
    clock.enter()  # read: 0
    clock.timed(lambda: clock.timed(lambda: None)())()  # nested: no reads
    clock.leave()  # read: 10
    assert clock.total == 10
    clock.timed(lambda: None)()  # reads 20 and 30
    assert clock.total == 20


def test_import_hf_lightning_is_lazy():
    code = (
        "import sys, hf_lightning\n"
        "heavy = [m for m in ('lightning', 'transformers.trainer_utils', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from hf_lightning import Trainer, TrainingArguments\n"
        "assert Trainer.__module__ == 'hf_lightning.trainer'\n"
        "assert hf_lightning.metrics.__name__ == 'hf_lightning.metrics'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
