"""Process-group helpers for evaluation: shard the eval set like accelerate, gather like `gather_for_metrics`.

Each rank evaluates every `world_size`-th batch (the short tail completed from the first samples so all ranks
run the same number of batches); gathered batches come back in global order, and the samples beyond the
dataset's length (the completion) are cut, so every sample is counted exactly once.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler
from transformers.trainer_utils import has_length

from hf_lightning.data import ShardedBatchSampler


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def shard_eval_loader(loader: DataLoader, args: Any) -> DataLoader:
    """Re-batch a sequential eval loader so this rank sees its round-robin share of the batches."""
    world, rank = _world()
    if world <= 1 or not has_length(loader.dataset) or loader.batch_size is None:
        return loader
    inner = BatchSampler(SequentialSampler(loader.dataset), loader.batch_size, drop_last=False)
    return DataLoader(
        loader.dataset,
        batch_sampler=ShardedBatchSampler(inner, world, rank),
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
    )


def eval_device(trainer: Any) -> torch.device:
    """The device the model trains on (Lightning's root device once fitted, else the model's own)."""
    lt = getattr(trainer, "lightning_trainer", None)
    if lt is not None and getattr(lt, "strategy", None) is not None and lt.strategy.root_device is not None:
        return lt.strategy.root_device
    try:
        return next(trainer.model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def move_to_device(data: Any, device: torch.device) -> Any:
    if isinstance(data, dict):
        return type(data)({k: move_to_device(v, device) for k, v in data.items()})
    if isinstance(data, (list, tuple)):
        return type(data)(move_to_device(v, device) for v in data)
    return data.to(device) if isinstance(data, torch.Tensor) else data


def sum_across_processes(value: Any) -> Any:
    """Sum a tensor over all ranks (identity on one process)."""
    world, _ = _world()
    if world <= 1 or not isinstance(value, torch.Tensor):
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value


def num_eval_samples(loader: DataLoader, observed: int) -> int:
    """HF's `num_samples`: the dataset's length when known, else what was seen."""
    dataset = getattr(loader, "dataset", None)
    if has_length(dataset) and len(dataset) > 0:
        return len(dataset)
    return observed


class Gatherer:
    """Gathers each batch's tensors from all ranks (global order) and drops the rows past the dataset end.

    Like accelerate's `gather_for_metrics`, this also trims the last batch's per-sample losses, which HF
    repeats `eval_batch_size` times even when the batch is short."""

    def __init__(self, args: Any, loader: DataLoader) -> None:
        self.world, _ = _world()
        self.limit = len(loader.dataset) if has_length(getattr(loader, "dataset", None)) else None
        self.seen: dict[int, int] = {}
        self.call = 0

    def begin_step(self) -> None:
        """Start a batch: gather calls are matched to their stream (losses, inputs, logits, labels) by order."""
        self.call = 0

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
        out = tensor.new_full((tensor.shape[0], width, *tensor.shape[2:]), -100)
        out[:, : tensor.shape[1]] = tensor
        return out

    def __call__(self, tensor: Any) -> Any:
        if isinstance(tensor, (list, tuple, dict)):
            return _nested(tensor, self)
        gathered = tensor
        if self.world > 1:
            parts = [torch.empty_like(tensor) for _ in range(self.world)]
            dist.all_gather(parts, tensor.contiguous())
            gathered = torch.cat(parts, dim=0)
        if self.limit is None:
            return gathered
        slot = self.call
        self.call += 1
        seen = self.seen.get(slot, 0)
        keep = max(0, min(gathered.shape[0], self.limit - seen))
        self.seen[slot] = seen + gathered.shape[0]
        return gathered if keep == gathered.shape[0] else gathered[:keep]

    def finish(self) -> None:
        self.seen.clear()


def _nested(obj: Any, fn: Any) -> Any:
    if isinstance(obj, dict):
        return type(obj)({k: fn(v) for k, v in obj.items()})
    return type(obj)(fn(v) for v in obj)
