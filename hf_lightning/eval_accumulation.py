"""Accumulating evaluation outputs: HF's `EvalLoopContainer`, without keeping per-batch tensors.

HF's container keeps every batch's logits/labels as tensors and re-concatenates them (padding dim 1 with -100) as
the evaluation goes. `BatchAccumulator` gives the same arrays, but copies each host batch at once into a few
preallocated per-stream chunks (`RowStream`) and drops it: time stays linear in the dataset and the process's memory
holds only the predictions themselves (per-batch tensors kept alive while each forward pass allocates and frees its
activations fragment the heap, and RSS then grows with the number of batches).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from hf_lightning.data import IGNORE_INDEX

__all__ = ["BatchAccumulator", "RowStream"]


class BatchAccumulator:
    """Collects (nested) per-batch tensors as numpy arrays, padding dim 1 with -100 like HF.

    Host (CPU) batches are copied at once into a few preallocated per-stream chunks (`RowStream`) and dropped, so
    nothing per batch stays alive: keeping hundreds of small per-batch tensors while each forward pass allocates
    and frees its activations fragments the allocator's heap, and the process's RSS then grows with the number of
    batches even though the kept data is a few bytes per sample. Batches on an accelerator stay there until
    `to_cpu` (`eval_accumulation_steps`) or the end, as in HF. `expected_batches` (the loader's length, when known)
    sizes the first chunk so that a whole evaluation usually fills a single one."""

    def __init__(
        self, concat: bool = True, padding_index: int = IGNORE_INDEX, expected_batches: int | None = None
    ) -> None:
        self.concat = concat
        self.padding_index = padding_index
        self.expected_batches = expected_batches
        self.pending: list[Any] = []
        self.streams: Any = None
        self.items: list[Any] = []

    def add(self, tensors: Any) -> None:
        self.pending.append(tensors)
        if all(t.device.type == "cpu" for t in _tensors(tensors)):
            self.to_cpu()

    def to_cpu(self) -> None:
        """Move what is held on the device to the host arrays (`eval_accumulation_steps`)."""
        for batch in self.pending:
            arrays = _nested_apply(batch, _to_numpy)
            if not self.concat:
                self.items.append(arrays)
                continue
            if self.streams is None:
                self.streams = _nested_map(arrays, lambda _: RowStream(self.padding_index, self.expected_batches))
            _nested_append(self.streams, arrays)
        self.pending = []

    def get_arrays(self) -> Any:
        self.to_cpu()
        if not self.concat:
            return self.items or None
        return None if self.streams is None else _nested_map(self.streams, RowStream.result)


class RowStream:
    """The rows of one (nested) output, copied batch by batch into preallocated chunks.

    A chunk takes batches of its dtype, trailing shape and at most its width (dim 1; narrower rows are padded); a
    batch that does not fit starts a new chunk (the first sized for `expected_batches`, the next ones doubling), and
    `result` pads and concatenates the chunks once, which gives the arrays that concatenating the batches gives."""

    def __init__(self, padding_index: int, expected_batches: int | None) -> None:
        self.padding_index = padding_index
        self.expected_batches = expected_batches
        self.batches = 0
        self.rows = 0
        self.chunks: list[np.ndarray] = []
        self.filled = 0

    def append(self, array: Any) -> None:
        array = np.atleast_1d(array)
        n = array.shape[0]
        if not self.chunks or not self._fits(self.chunks[-1], array):
            self._new_chunk(array)
        chunk = self.chunks[-1]
        if array.ndim == 1:
            chunk[self.filled : self.filled + n] = array
        else:
            chunk[self.filled : self.filled + n, : array.shape[1]] = array
        self.filled += n
        self.rows += n
        self.batches += 1

    def _fits(self, chunk: np.ndarray, array: np.ndarray) -> bool:
        if chunk.dtype != array.dtype or chunk.ndim != array.ndim or self.filled + array.shape[0] > chunk.shape[0]:
            return False
        return array.ndim == 1 or (array.shape[1] <= chunk.shape[1] and array.shape[2:] == chunk.shape[2:])

    def _new_chunk(self, array: np.ndarray) -> None:
        n = array.shape[0]
        capacity = max(n, self.rows)
        if self.expected_batches is not None and self.batches < self.expected_batches:
            remaining = n * (self.expected_batches - self.batches)
            capacity = remaining if not self.chunks else min(capacity, remaining)
        if self.chunks:
            self._trim_last()
        shape = (max(capacity, n), *array.shape[1:])
        if array.ndim == 1:
            self.chunks.append(np.empty(shape, array.dtype))
        else:
            self.chunks.append(np.full(shape, self.padding_index, array.dtype))
        self.filled = 0

    def _trim_last(self) -> None:
        """Cut the last chunk to its filled rows (copied, so a mostly empty chunk's memory is released)."""
        chunk = self.chunks[-1]
        if self.filled < chunk.shape[0]:
            self.chunks[-1] = chunk[: self.filled].copy()

    def result(self) -> np.ndarray:
        """All rows: the only chunk's filled part (a view; its unused tail is under one batch), or the chunks padded
        and concatenated."""
        if len(self.chunks) == 1:
            return self.chunks[0][: self.filled]
        self._trim_last()
        return _pad_and_concat(self.chunks, self.padding_index)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.cpu()
    if t.dtype == torch.bfloat16:
        t = t.to(torch.float32)
    return t.numpy()


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)
    elif isinstance(obj, torch.Tensor):
        yield obj


def _nested_map(obj: Any, fn: Any) -> Any:
    """`fn` on every leaf (anything but a list, tuple or dict) of a nested structure, keeping the containers."""
    if isinstance(obj, (list, tuple)):
        return type(obj)(_nested_map(o, fn) for o in obj)
    if isinstance(obj, dict):
        return type(obj)({k: _nested_map(v, fn) for k, v in obj.items()})
    return fn(obj)


def _nested_apply(obj: Any, fn: Any) -> Any:
    """`fn` on the tensor leaves of a nested structure; other leaves are kept as they are."""
    return _nested_map(obj, lambda leaf: fn(leaf) if isinstance(leaf, torch.Tensor) else leaf)


def _nested_append(streams: Any, arrays: Any) -> None:
    """Append a batch to the streams built from the first batch's structure."""
    if isinstance(streams, RowStream):
        streams.append(arrays)
    elif isinstance(streams, (list, tuple)):
        for i, stream in enumerate(streams):
            _nested_append(stream, arrays[i])
    else:
        for k, stream in streams.items():
            _nested_append(stream, arrays[k])


def _pad_and_concat(items: list[Any], padding_index: int) -> Any:
    first = items[0]
    if isinstance(first, (list, tuple)):
        return type(first)(_pad_and_concat([it[i] for it in items], padding_index) for i in range(len(first)))
    if isinstance(first, dict):
        return type(first)({k: _pad_and_concat([it[k] for it in items], padding_index) for k in first})
    arrays = [np.atleast_1d(a) for a in items]
    if arrays[0].ndim == 1 or all(a.shape[1] == arrays[0].shape[1] for a in arrays):
        return np.concatenate(arrays, axis=0)
    width = max(a.shape[1] for a in arrays)
    out = np.full((sum(a.shape[0] for a in arrays), width, *arrays[0].shape[2:]), padding_index, arrays[0].dtype)
    row = 0
    for a in arrays:
        out[row : row + a.shape[0], : a.shape[1]] = a
        row += a.shape[0]
    return out
