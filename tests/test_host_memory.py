"""glibc keeps freed memory mapped during a CPU train(): no page faults for memory a step frees and reallocates."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from contextlib import contextmanager

import pytest
from helpers import run_job

import hf_lightning.trainer
from hf_lightning import host_memory

glibc_only = pytest.mark.skipif(host_memory._glibc() is None, reason="mallopt settings are glibc's")

# A fresh process runs six "steps", each allocating, writing and freeing tensors of a MiniLM step's sizes (the
# embedding gradient is 47 MB, above the largest threshold under which glibc reuses heap memory), and prints the
# page faults of each step and its RSS (MB) with the freed memory held and after `keep_freed_host_memory` exits.
PROBE = """
import json, resource, sys, torch
from hf_lightning.host_memory import keep_freed_host_memory

MB = 1024 * 1024
SIZES = [47 * MB, 40 * MB, 12 * MB, 12 * MB, 3 * MB, 3 * MB, 3 * MB]

def faults_of_a_step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensors = [torch.ones(size // 4) for size in SIZES]
    del tensors
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / MB

with keep_freed_host_memory(enabled=sys.argv[1] == "keep") as applied:
    faults = [faults_of_a_step() for _ in range(6)]
    held = rss_mb()
print(json.dumps({"applied": applied, "faults": faults, "held": held, "after": rss_mb()}))
"""
STEP_PAGES = (47 + 40 + 12 + 12 + 3 + 3 + 3) * 1024 * 1024 // resource.getpagesize()


def run_probe(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@glibc_only
def test_freed_memory_is_reused_while_kept_and_handed_back_after():
    kept, default = run_probe("keep"), run_probe("default")
    assert kept["applied"] and not default["applied"]
    assert all(f > STEP_PAGES / 4 for f in default["faults"][2:])  # glibc maps the big blocks in again each step
    assert all(f < STEP_PAGES / 50 for f in kept["faults"][3:])  # once the heap has grown, freed pages are reused
    assert kept["held"] - kept["after"] > 50  # on exit the kept free memory goes back to the kernel (MB)


def test_off_glibc_nothing_is_applied(monkeypatch):
    monkeypatch.setattr(host_memory, "_glibc", lambda: None)
    with host_memory.keep_freed_host_memory() as applied:
        assert not applied


@pytest.mark.parametrize("keep", [True, False])
def test_cpu_train_keeps_freed_memory_unless_asked_not_to(tmp_path, monkeypatch, keep):
    seen = []
    original = host_memory.keep_freed_host_memory

    @contextmanager
    def spy(enabled: bool = True):
        with original(enabled) as applied:
            seen.append((enabled, applied))
            yield applied

    monkeypatch.setattr(hf_lightning.trainer, "keep_freed_host_memory", spy)
    trainer = run_job("hfl", str(tmp_path), keep_freed_host_memory=keep)
    assert trainer.state.global_step > 0
    assert [enabled for enabled, _ in seen] == [keep]
    is_glibc = host_memory._glibc() is not None
    assert seen[0][1] == (keep and is_glibc)
