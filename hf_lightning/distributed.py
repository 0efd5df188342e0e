"""Process-group helpers for evaluation: shard the eval set like accelerate, gather like `gather_for_metrics`.

Each rank evaluates every `world_size`-th batch (the short tail completed from the first samples so all ranks
run the same number of batches); gathered batches come back in global order, and the samples beyond the
dataset's length (the completion) are cut, so every sample is counted exactly once. A batch that mixes real
and completion samples is evaluated on its real rows only (`real_rows`), so its loss is the single-process one.
Loaders without a length are not sharded: every rank evaluates all of it and nothing is gathered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader
from transformers.trainer_utils import has_length

from hf_lightning.accelerator_config import check_for_processes
from hf_lightning.data import IGNORE_INDEX, ShardedBatchSampler


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def shard_eval_loader(loader: DataLoader, args: Any) -> DataLoader:
    """Re-batch an eval loader (same sampler, batch size and `drop_last`) so this rank sees its round-robin share
    of the batches, like accelerate's `BatchSamplerShard` with `even_batches=True`."""
    world, rank = _world()
    check_for_processes(args, world)
    if world <= 1 or not has_length(loader.dataset) or loader.batch_size is None:
        return loader
    inner = BatchSampler(loader.sampler, loader.batch_size, drop_last=loader.drop_last)
    params: dict[str, Any] = {
        "num_workers": loader.num_workers,
        "pin_memory": loader.pin_memory,
        "in_order": loader.in_order,
    }
    if loader.num_workers > 0:
        params.update(
            prefetch_factor=loader.prefetch_factor,
            persistent_workers=loader.persistent_workers,
            multiprocessing_context=loader.multiprocessing_context,
        )
    return DataLoader(
        loader.dataset,
        batch_sampler=ShardedBatchSampler(inner, world, rank),
        collate_fn=loader.collate_fn,
        **params,
    )


def is_sharded(loader: Any) -> bool:
    """Whether `loader` deals its batches to the ranks (then results must be gathered)."""
    return isinstance(getattr(loader, "batch_sampler", None), ShardedBatchSampler)


def real_rows(loader: Any, step: int) -> int | None:
    """How many leading rows of this rank's `step`-th batch are real samples (the rest completes the last
    global batch); None when the loader is not sharded or nothing is completed."""
    sampler = getattr(loader, "batch_sampler", None)
    if not isinstance(sampler, ShardedBatchSampler) or sampler.drop_last or not has_length(loader.dataset):
        return None
    offset = (step * sampler.num_processes + sampler.process_index) * sampler.batch_size
    return max(0, min(sampler.batch_size, len(loader.dataset) - offset))


def take_rows(data: Any, rows: int, batch_rows: int) -> Any:
    """The first `rows` rows of every tensor of a (nested) batch whose first dimension is `batch_rows`."""
    if isinstance(data, Mapping):
        return type(data)({k: take_rows(v, rows, batch_rows) for k, v in data.items()})
    if isinstance(data, (list, tuple)):
        return type(data)(take_rows(v, rows, batch_rows) for v in data)
    if isinstance(data, torch.Tensor) and data.dim() > 0 and data.shape[0] == batch_rows:
        return data[:rows]
    return data


def fill_rows(data: Any, rows: int, batch_rows: int) -> Any:
    """Grow every tensor with `rows` rows back to `batch_rows` (repeating row 0) so all ranks gather equal shapes;
    the added rows lie past the dataset's end and are cut by the `Gatherer`."""
    if isinstance(data, Mapping):
        return type(data)({k: fill_rows(v, rows, batch_rows) for k, v in data.items()})
    if isinstance(data, (list, tuple)):
        return type(data)(fill_rows(v, rows, batch_rows) for v in data)
    if isinstance(data, torch.Tensor) and data.dim() > 0 and data.shape[0] == rows and rows < batch_rows:
        return torch.cat([data, data[:1].expand(batch_rows - rows, *data.shape[1:])])
    return data


def eval_device(trainer: Any) -> torch.device:
    """The device the model trains on (Lightning's root device once fitted, else the model's own)."""
    lt = getattr(trainer, "lightning_trainer", None)
    if lt is not None and getattr(lt, "strategy", None) is not None and lt.strategy.root_device is not None:
        return lt.strategy.root_device
    try:
        return next(trainer.model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def move_to_device(data: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor of a (nested) batch; a `Mapping` keeps its type (e.g. the `BatchEncoding` of tokenizer
    collators), as HF's `_prepare_input` does. `non_blocking`: `accelerator_config.non_blocking`."""
    if isinstance(data, Mapping):
        return type(data)({k: move_to_device(v, device, non_blocking) for k, v in data.items()})
    if isinstance(data, (list, tuple)):
        return type(data)(move_to_device(v, device, non_blocking) for v in data)
    return data.to(device, non_blocking=non_blocking) if isinstance(data, torch.Tensor) else data


def num_eval_samples(loader: DataLoader, observed: int) -> int:
    """HF's `num_samples`: the dataset's length when known, else what was seen."""
    dataset = getattr(loader, "dataset", None)
    if has_length(dataset) and len(dataset) > 0:
        return len(dataset)
    return observed


class Gatherer:
    """Gathers each batch's tensors from all ranks (global order) and, like accelerate's `gather_for_metrics`, cuts
    the last batch to the rows that belong to the dataset.

    The cut is accelerate's `remainder`: `len(dataset) % (batch_size * world)` for a sized dataset (none with
    `drop_last`), the observed size of the last batch for one without a length. It also trims the last batch's
    per-sample losses, which HF repeats `eval_batch_size` times even when the batch is short."""

    def __init__(self, args: Any, loader: DataLoader) -> None:
        self.world = _world()[0] if is_sharded(loader) else 1
        dataset = getattr(loader, "dataset", None)
        self.sized = has_length(dataset)
        batch_sampler = getattr(loader, "batch_sampler", None)
        batch_size = getattr(loader, "batch_size", None) or getattr(batch_sampler, "batch_size", None)
        drop_last = bool(getattr(loader, "drop_last", False) or getattr(batch_sampler, "drop_last", False))
        self.remainder = -1
        if self.sized and batch_size and not drop_last:
            self.remainder = len(dataset) % (batch_size * self.world)
        self.cut: int | None = None

    def begin_step(self, is_last: bool, observed_batch_size: int | None) -> None:
        """Start a batch; on the last one, set how many gathered rows to keep."""
        self.cut = None
        if is_last and self.remainder > 0:
            self.cut = self.remainder
        elif is_last and not self.sized and observed_batch_size:
            self.cut = observed_batch_size * self.world

    def pad(self, tensor: Any) -> Any:
        """Pad dim 1 to the longest across ranks with -100 (HF's `pad_across_processes`)."""
        if self.world <= 1 or not isinstance(tensor, torch.Tensor) or tensor.dim() < 2:
            return _nested(tensor, self.pad) if isinstance(tensor, (list, tuple, dict)) else tensor
        size = torch.tensor([tensor.shape[1]], device=tensor.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world)]
        dist.all_gather(sizes, size)
        width = int(max(s.item() for s in sizes))
        if width == tensor.shape[1]:
            return tensor
        out = tensor.new_full((tensor.shape[0], width, *tensor.shape[2:]), IGNORE_INDEX)
        out[:, : tensor.shape[1]] = tensor
        return out

    def __call__(self, tensor: Any) -> Any:
        if isinstance(tensor, (list, tuple, dict)):
            return _nested(tensor, self)
        gathered = tensor
        if self.world > 1:
            part = tensor.reshape(1) if tensor.dim() == 0 else tensor.contiguous()
            parts = [torch.empty_like(part) for _ in range(self.world)]
            dist.all_gather(parts, part)
            gathered = torch.cat(parts, dim=0)
        if self.cut is None or tensor.dim() == 0:
            return gathered  # a scalar has no sample rows to cut (accelerate leaves it too)
        return gathered[: self.cut]


def _nested(obj: Any, fn: Any) -> Any:
    if isinstance(obj, dict):
        return type(obj)({k: fn(v) for k, v in obj.items()})
    return type(obj)(fn(v) for v in obj)
