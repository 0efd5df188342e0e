"""`BatchAccumulator`: the arrays of HF's `EvalLoopContainer`, at a cost linear in the number of batches."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import torch
from helpers import assert_same

from hf_lightning import eval_accumulation


def _accumulate(n_batches: int, monkeypatch: pytest.MonkeyPatch) -> tuple[int, float]:
    calls = {"n": 0}
    real = np.concatenate

    def counting(*args: Any, **kwargs: Any) -> np.ndarray:
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "concatenate", counting)
    acc = eval_accumulation.BatchAccumulator()
    batch = (torch.zeros(4, 3), {"h": torch.zeros(4, 5)})
    start = time.perf_counter()
    for step in range(n_batches):
        acc.add(batch)
        if step % 7 == 6:
            acc.to_cpu()  # eval_accumulation_steps
    arrays = acc.get_arrays()
    elapsed = time.perf_counter() - start
    assert arrays[0].shape == (4 * n_batches, 3) and arrays[1]["h"].shape == (4 * n_batches, 5)
    return calls["n"], elapsed


def test_accumulation_is_linear_in_the_number_of_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF's container re-concatenates its growing buffer at each `eval_accumulation_steps` (quadratic); ours
    concatenates each stream once."""
    small = [_accumulate(500, monkeypatch) for _ in range(3)]
    large = [_accumulate(5000, monkeypatch) for _ in range(3)]
    assert {calls for calls, _ in small + large} == {2}, "one concatenation per stream, whatever the batch count"
    small_time, large_time = min(t for _, t in small), min(t for _, t in large)
    assert large_time < 30 * small_time, f"{large_time:.3f}s for 10x the batches of {small_time:.3f}s"


def _hf_container_arrays(batches: list[Any], flush_every: int | None) -> Any:
    from transformers.trainer_pt_utils import EvalLoopContainer

    container = EvalLoopContainer(padding_index=-100)
    for step, batch in enumerate(batches):
        container.add(batch)
        if flush_every and (step + 1) % flush_every == 0:
            container.to_cpu_and_numpy()
    return container.get_arrays()


@pytest.mark.parametrize("expected_batches", [None, 3, 6, 20])
@pytest.mark.parametrize("flush_every", [None, 2])
def test_accumulator_matches_transformers_container(expected_batches: int | None, flush_every: int | None) -> None:
    """Batches of varying widths (wider and narrower than before, dim 1 padded with -100), a short last batch and
    nested tuples/dicts give HF's `EvalLoopContainer` arrays, whatever the chunk sizing (`expected_batches` exact,
    too small, too large or unknown)."""
    g = torch.Generator().manual_seed(0)
    widths, rows = [4, 4, 2, 6, 6, 3], [5, 5, 5, 5, 5, 2]
    batches = [
        (
            torch.randn(n, w, 3, generator=g),
            {"labels": torch.randint(0, 9, (n, w), generator=g), "loss": torch.randn(n, generator=g)},
        )
        for n, w in zip(rows, widths)
    ]
    acc = eval_accumulation.BatchAccumulator(expected_batches=expected_batches)
    for step, batch in enumerate(batches):
        acc.add(batch)
        if flush_every and (step + 1) % flush_every == 0:
            acc.to_cpu()
    ours = acc.get_arrays()
    assert_same(ours, _hf_container_arrays(batches, flush_every))
    assert ours[0].shape == (27, 6, 3) and ours[1]["labels"].shape == (27, 6) and ours[1]["loss"].shape == (27,)
