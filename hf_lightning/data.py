"""Data loading with Hugging Face semantics, fed to Lightning.

HF's Trainer builds its loaders through `accelerate`: a `RandomSampler` replaced by a sampler seeded with
`data_seed` (or `torch.initial_seed()`) plus the epoch, batches dealt round-robin to the ranks, and gradient
accumulation windows pre-fetched so that `num_items_in_batch` can be counted over the whole window. Lightning
would instead inject a `DistributedSampler` and divide the loss by a constant. This module rebuilds HF's
behaviour so the same samples arrive in the same order, grouped in the same windows.
"""

from __future__ import annotations

import inspect
import logging
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset, RandomSampler, SequentialSampler
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import RemoveColumnsCollator, has_length, seed_worker

from hf_lightning import compat
from hf_lightning.accelerator_config import check_for_processes, use_seedable_sampler

logger = logging.getLogger(__name__)

# The label value transformers' losses, collators and padding ignore (`tests/test_canaries.py` pins it).
IGNORE_INDEX = -100


class SeedableRandomSampler(RandomSampler):
    """A `RandomSampler` whose permutation depends only on `initial_seed + epoch` (accelerate's semantics).

    Every rank draws the same permutation, and resuming at epoch `e` replays epoch `e`'s order exactly.
    """

    def __init__(self, data_source: Sequence, data_seed: int | None = None) -> None:
        super().__init__(data_source)
        self.initial_seed = data_seed if data_seed is not None else torch.random.initial_seed()
        self.epoch = 0

    def __iter__(self) -> Iterator[int]:
        if self.generator is None:
            self.generator = torch.Generator()
        self.generator.manual_seed(self.initial_seed + self.epoch)
        yield from super().__iter__()
        self.set_epoch(self.epoch + 1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class ShardedBatchSampler(BatchSampler):
    """Deals the batches of a global batch sampler round-robin to `num_processes` ranks (accelerate's
    `BatchSamplerShard` with `even_batches=True`): a short tail is completed from the first samples so every
    rank runs the same number of steps.

    Lightning's prediction loop re-creates a loader's batch sampler from its arguments with its own `sampler` (the
    loader's, where `use_distributed_sampler=False`) and `drop_last=False`: given, they replace those of
    `batch_sampler`, and the batches are dealt as before."""

    def __init__(
        self,
        batch_sampler: BatchSampler,
        num_processes: int,
        process_index: int,
        sampler: Any = None,
        drop_last: bool | None = None,
    ) -> None:
        if sampler is not None or drop_last is not None:
            batch_sampler = BatchSampler(
                sampler if sampler is not None else batch_sampler.sampler,
                batch_sampler.batch_size,
                batch_sampler.drop_last if drop_last is None else drop_last,
            )
        self.batch_sampler = batch_sampler
        self.sampler = batch_sampler.sampler  # `BatchSampler`'s attribute, which Lightning's data hooks read
        self.num_processes = num_processes
        self.process_index = process_index
        self.batch_size = batch_sampler.batch_size
        self.drop_last = batch_sampler.drop_last

    def __len__(self) -> int:
        n = len(self.batch_sampler)
        return n // self.num_processes if self.drop_last else math.ceil(n / self.num_processes)

    def set_epoch(self, epoch: int) -> None:
        sampler = getattr(self.batch_sampler, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        batches = list(self.batch_sampler)
        if not batches:
            return
        if self.drop_last:
            usable = len(batches) - len(batches) % self.num_processes
            yield from batches[self.process_index : usable : self.num_processes]
            return
        first = [i for b in batches[: self.num_processes] for i in b]
        if len(batches[-1]) < self.batch_size:
            missing = self.batch_size - len(batches[-1])
            batches[-1] = batches[-1] + (first * math.ceil(missing / max(len(first), 1)))[:missing]
        while len(batches) % self.num_processes:
            start = (len(batches) % self.num_processes) * self.batch_size
            filler = (first * math.ceil((start + self.batch_size) / len(first)))[start : start + self.batch_size]
            batches.append(filler)
        yield from batches[self.process_index :: self.num_processes]


def signature_columns(model: torch.nn.Module, label_names: list[str]) -> list[str]:
    """Names `model.forward` accepts, plus the label names the default collator understands."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    columns = list(inspect.signature(target.forward).parameters.keys())
    return columns + list({"label", "label_ids", *label_names})


def is_hf_dataset(dataset: Any) -> bool:
    """Whether `dataset` is a `datasets.Dataset`. Looked up in `sys.modules` instead of importing `datasets`
    (with pandas and pyarrow, ~80 MB): a `datasets.Dataset` can only exist once the user has imported it."""
    module = sys.modules.get("datasets")
    return module is not None and isinstance(dataset, module.Dataset)


def remove_unused_columns(dataset: Any, columns: list[str], model_name: str, description: str) -> Any:
    """Drop the columns of a `datasets.Dataset` that `model.forward` does not accept (HF's rule)."""
    ignored = sorted(set(dataset.column_names) - set(columns))
    if len(ignored) == len(dataset.column_names):
        raise ValueError(
            f"No columns in the {description} dataset match `{model_name}.forward`'s signature ({', '.join(columns)}). "
            f"The dataset has: {', '.join(dataset.column_names)}. Set `remove_unused_columns=False` in "
            "`TrainingArguments` if your collator needs them."
        )
    return dataset.remove_columns(ignored) if ignored else dataset


def prepare_dataset_and_collator(
    dataset: Any, collator: Callable, args: Any, columns: Callable[[], list[str]], model_name: str, description: str
) -> tuple[Any, Callable]:
    """Apply `remove_unused_columns` the way HF does: on the dataset when it is a `datasets.Dataset`, else in a
    collator wrapper."""
    if not args.remove_unused_columns:
        return dataset, collator
    if is_hf_dataset(dataset):
        return remove_unused_columns(dataset, columns(), model_name, description), collator
    return dataset, RemoveColumnsCollator(
        data_collator=collator, signature_columns=columns(), description=description, model_name=model_name
    )


def _lengths_column(dataset: Any, args: Any) -> Any:
    if is_hf_dataset(dataset) and args.length_column_name in dataset.column_names:
        return dataset[args.length_column_name]
    return None


def train_sampler(dataset: Dataset, args: Any, processing_class: Any = None) -> Any:
    """HF's train sampler for `train_sampling_strategy` ('random' seeded like accelerate's, 'sequential',
    'group_by_length' with `length_column_name`, 'batch_rebalance'); None for an `IterableDataset`."""
    strategy = compat.train_sampling_strategy(args)
    if not has_length(dataset):
        if dataset is not None and strategy in ("group_by_length", "batch_rebalance"):
            logger.warning(
                "`train_sampling_strategy=%r` is ignored because the training dataset does not implement `__len__` "
                "(e.g. an `IterableDataset`). Examples will be consumed in the dataset's own order.",
                strategy,
            )
        return None
    model_input_name = processing_class.model_input_names[0] if processing_class is not None else None
    if strategy == "group_by_length":
        return LengthGroupedSampler(
            args.train_batch_size * args.gradient_accumulation_steps,
            dataset=dataset,
            lengths=_lengths_column(dataset, args),
            model_input_name=model_input_name,
        )
    if strategy == "batch_rebalance":
        lengths = _lengths_column(dataset, args)
        if lengths is None:
            name = model_input_name if model_input_name is not None else "input_ids"
            if not isinstance(dataset[0], Mapping) or name not in dataset[0]:
                raise ValueError(
                    "`train_sampling_strategy='batch_rebalance'` can only infer lengths for datasets whose items are "
                    f"dictionaries with an '{name}' key; add a `length_column_name` column."
                )
            lengths = [len(feature[name]) for feature in dataset]
        elif isinstance(lengths, torch.Tensor):
            lengths = lengths.tolist()
        world_size = max(1, args.world_size)
        return compat.batch_rebalance_sampler()(
            lengths=lengths,
            effective_batch_size=args.train_batch_size * args.gradient_accumulation_steps * world_size,
            dp_size=world_size,
            grad_accum=args.gradient_accumulation_steps,
            rank=args.process_index if world_size > 1 else 0,
            drop_last=args.dataloader_drop_last,
        )
    if strategy == "sequential":
        return SequentialSampler(dataset)
    if not use_seedable_sampler(args):  # accelerator_config: torch's sampler, drawing from the global RNG
        return RandomSampler(dataset)
    return SeedableRandomSampler(dataset, data_seed=args.data_seed)


def _accelerator_available() -> bool:
    """What torch's DataLoader checks before pinning memory."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        return accelerator.is_available()
    return torch.cuda.is_available()


def build_dataloader(
    dataset: Any,
    batch_size: int,
    collate_fn: Callable,
    sampler: Any,
    args: Any,
    is_training: bool,
    world_size: int = 1,
    process_index: int = 0,
) -> DataLoader:
    """A `DataLoader` with HF's `dataloader_*` options; under several processes the batches are sharded like
    accelerate shards them."""
    params: dict[str, Any] = {
        "collate_fn": collate_fn,
        "num_workers": args.dataloader_num_workers,
        # Without an accelerator torch pins nothing and warns at every iteration of the loader (HF: once a process).
        "pin_memory": args.dataloader_pin_memory and _accelerator_available(),
        "persistent_workers": args.dataloader_persistent_workers and args.dataloader_num_workers > 0,
        "in_order": compat.training_argument(args, "dataloader_in_order"),
    }
    if args.dataloader_num_workers > 0:
        params["prefetch_factor"] = args.dataloader_prefetch_factor
        params["multiprocessing_context"] = compat.training_argument(args, "dataloader_multiprocessing_context")
    if isinstance(dataset, IterableDataset):
        return DataLoader(dataset, batch_size=batch_size, **params)
    if is_training:
        params["worker_init_fn"] = partial(seed_worker, num_workers=args.dataloader_num_workers, rank=process_index)
    if compat.is_batch_rebalance_sampler(sampler):  # rank-aware batches: used as the batch sampler as is
        return DataLoader(dataset, batch_sampler=sampler, **params)
    if sampler is None:
        sampler = SequentialSampler(dataset)
    if world_size > 1:
        check_for_processes(args, world_size)
        inner = BatchSampler(sampler, batch_size, drop_last=args.dataloader_drop_last)
        return DataLoader(dataset, batch_sampler=ShardedBatchSampler(inner, world_size, process_index), **params)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=args.dataloader_drop_last, **params)


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell the sampler (or sharded batch sampler) which epoch's permutation to draw."""
    for holder in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if holder is not None and hasattr(holder, "set_epoch"):
            holder.set_epoch(epoch)


def skip_first_batches(loader: Any, num_batches: int) -> DataLoader | None:
    """A copy of a map-style `DataLoader` whose batch sampler skips its first `num_batches` batches (accelerate's
    `skip_first_batches`, which HF's resume uses): the skipped batches are never loaded or collated, so a collator
    drawing from the global RNG draws nothing for them. None when `loader` is not a plain `DataLoader` over a
    batch sampler (an `IterableDataset`, a custom loader): those skip by reading the batches, as accelerate does."""
    if type(loader) is not DataLoader or isinstance(loader.dataset, IterableDataset) or loader.batch_sampler is None:
        return None
    from accelerate.data_loader import SkipBatchSampler

    ignored = {"self", "dataset", "batch_size", "shuffle", "sampler", "batch_sampler", "drop_last"}
    kwargs = {
        name: getattr(loader, name)
        for name in inspect.signature(DataLoader.__init__).parameters
        if name not in ignored and hasattr(loader, name)
    }
    return DataLoader(loader.dataset, batch_sampler=SkipBatchSampler(loader.batch_sampler, num_batches), **kwargs)


def one_batch_ahead(loader: Any) -> Iterator[Any]:
    """Iterate `loader` one batch ahead, as accelerate's `DataLoaderShard` (which HF's train loader is) does: batch
    `k + 1` is fetched (collated) before batch `k` is handed out. A collator drawing from the global RNG
    (`DataCollatorForLanguageModeling`'s masking ...) therefore draws in the same order relative to the model's dropout
    as under `transformers.Trainer`."""
    iterator = iter(loader)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for upcoming in iterator:
        yield current
        current = upcoming
    yield current


@dataclass
class MicroBatch:
    """One micro-batch of a gradient-accumulation window, as HF's `_run_epoch` sees it."""

    inputs: Any
    num_items_in_batch: Any
    step: int
    window_size: int
    is_last_in_window: bool


class AccumulationWindowLoader:
    """Iterates a train loader in HF's gradient-accumulation windows.

    Each window of `gradient_accumulation_steps` batches (shorter at the end of an epoch) is fetched ahead so
    `count_items` can count the label tokens of the whole window; its micro-batches are then yielded one by one
    to Lightning, each tagged with the window's size and count. Like HF's (accelerate-prepared) loader, the
    underlying loader is read one batch ahead (`one_batch_ahead`), so random collators consume the global RNG
    exactly when they do under `transformers.Trainer`. `skip_batches` drops the first batches of the
    next epoch (resume). `state_dict`/`load_state_dict` make it a resumable loader for Lightning's own mid-epoch
    checkpoints (`fit(ckpt_path=...)`), which then continue the epoch where it stopped, as HF's resume does.
    """

    def __init__(
        self,
        loader: DataLoader,
        gradient_accumulation_steps: int,
        count_items: Callable[[list], Any],
        steps_in_epoch: int,
        first_epoch: int = 0,
    ) -> None:
        self.loader = loader
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.count_items = count_items
        self.steps_in_epoch = steps_in_epoch
        self.epoch = first_epoch
        self.skip_batches = 0
        self.on_skip_done: Callable[[], None] | None = None
        self._iterated_epoch, self._yielded = first_epoch, 0

    def __len__(self) -> int:
        return self.steps_in_epoch

    def state_dict(self) -> dict[str, int]:
        """The epoch being iterated and the micro-batches yielded from it. Lightning does not prefetch from a loader
        with a length, so these are the batches trained on when a checkpoint is taken."""
        return {"epoch": self._iterated_epoch, "batches": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume from `state_dict`: the next iteration skips the batches already trained on. A checkpoint that
        closed its epoch leaves nothing of it to yield: Lightning, resuming under a step budget, iterates that epoch
        once more to end it, and gets no batch (the next epoch's would train inside the old one); resuming under an
        epoch budget, it starts the next epoch at once (`start_epoch`)."""
        self.epoch, self.skip_batches = state["epoch"], state["batches"]

    def resume_at(self, epoch: int, skip_batches: int, on_skip_done: Callable[[], None] | None = None) -> None:
        """Resume an HF checkpoint: the next iteration is epoch `epoch`, after its first `skip_batches` batches;
        `on_skip_done` runs once they are skipped (HF restores the RNG states there)."""
        self.epoch, self.skip_batches, self.on_skip_done = epoch, skip_batches, on_skip_done

    @property
    def skips_within_epoch(self) -> bool:
        """Whether the next iteration reads batches it does not yield (a resume inside an epoch), which may draw
        from the RNG (a random collator): the resumed RNG state is restored after them (`on_skip_done`)."""
        return 0 < self.skip_batches < self.steps_in_epoch

    def start_epoch(self, epoch: int) -> None:
        """Lightning starts epoch `epoch` (its `on_train_epoch_start`): the next iteration is that epoch's. A pending
        skip of another epoch (a checkpoint that closed the epoch before; until an iteration takes it, the skip is
        `self.epoch`'s) no longer applies."""
        if self.skip_batches and self.epoch != epoch:
            self.skip_batches = 0
            self._skip_done()
        self.epoch = epoch

    def _skip_done(self) -> None:
        """The resumed batches are skipped: `on_skip_done` runs, once."""
        done, self.on_skip_done = self.on_skip_done, None
        if done is not None:
            done()

    def __iter__(self) -> Iterator[MicroBatch]:
        set_loader_epoch(self.loader, self.epoch)
        self._iterated_epoch = self.epoch
        self.epoch += 1
        ga = self.gradient_accumulation_steps
        skip, self.skip_batches = self.skip_batches, 0
        if skip >= self.steps_in_epoch:  # the epoch was closed by the checkpoint resumed: nothing to read
            self._yielded = skip
            self._skip_done()
            return
        # Whole windows already trained on are skipped in the sampler when the loader allows it (HF's resume), else
        # read and dropped. A resume inside a window (a Lightning checkpoint between optimiser steps) reads the
        # window's trained batches again so its size and item count stay those of the uninterrupted run; only the
        # rest is yielded.
        loader, first = self.loader, 0
        if skip >= ga:
            skipping = skip_first_batches(self.loader, skip - skip % ga)
            if skipping is not None:
                loader, first = skipping, skip - skip % ga
        iterator = one_batch_ahead(loader)
        already_in_window = []
        for i in range(first, skip):
            batch = next(iterator, None)
            if i >= skip - skip % ga and batch is not None:
                already_in_window.append(batch)
        step = skip - 1
        self._yielded = skip
        num_windows = math.ceil(self.steps_in_epoch / ga)
        remainder = self.steps_in_epoch % ga or ga
        for window in range(skip // ga, num_windows):
            size = ga if window != num_windows - 1 else remainder
            batches, already_in_window = already_in_window, []
            while len(batches) < size:
                batch = next(iterator, None)
                if batch is None:
                    break
                batches.append(batch)
            if not batches:
                return
            num_items = self.count_items(batches)
            if skip:
                self._skip_done()
                skip = 0
            for i in range(step + 1 - window * ga, len(batches)):
                step += 1
                self._yielded = step + 1
                yield MicroBatch(batches[i], num_items, step, len(batches), i == len(batches) - 1)


def count_label_items(batches: list, shift_labels: bool) -> torch.Tensor | None:
    """HF's `num_items_in_batch`: the labels that are not -100 over a whole window (shifted for causal LM)."""
    if not batches or not isinstance(batches[0], Mapping) or "labels" not in batches[0]:
        return None
    try:
        labels = [compat.labels_to_count(b, shift_labels) for b in batches]
        return sum(label.ne(IGNORE_INDEX).sum() for label in labels)
    except (TypeError, AttributeError):
        return None
