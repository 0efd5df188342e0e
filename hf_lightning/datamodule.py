"""`HFDataModule`: HF's training and evaluation loaders as a `LightningDataModule`.

For a plain `lightning.Trainer` / `LightningCLI` run of `HFLightningModule.from_args(...)`: the train loader is the
one `transformers.Trainer` would build (column removal, collator, `data_seed`-seeded sampler, batches dealt to the
ranks like accelerate) grouped into HF's gradient-accumulation windows with their `num_items_in_batch`; the eval
loader is sharded over the ranks like HF's evaluation. Lightning's own `DistributedSampler` must stay off
(`use_distributed_sampler=False`): the batches are already sharded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase, default_data_collator
from transformers.utils import find_labels

from hf_lightning import data as hf_data
from hf_lightning.compat import loss_shifts_labels
from hf_lightning.distributed import shard_eval_loader

__all__ = ["HFDataModule"]


class HFDataModule(pl.LightningDataModule):
    """Train/eval loaders with `transformers.Trainer`'s semantics, for `HFLightningModule`."""

    def __init__(
        self,
        args: Any,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        data_collator: Callable | None = None,
        processing_class: Any = None,
        model: nn.Module | None = None,
        test_dataset: Any = None,
        predict_dataset: Any = None,
    ) -> None:
        super().__init__()
        from hf_lightning.training_args import to_hf_lightning_args

        if all(d is None for d in (train_dataset, eval_dataset, test_dataset, predict_dataset)):
            raise ValueError(
                "`HFDataModule` needs a `train_dataset`, `eval_dataset`, `test_dataset` or `predict_dataset`."
            )
        if data_collator is None:
            is_tokenizer = isinstance(processing_class, PreTrainedTokenizerBase)
            data_collator = DataCollatorWithPadding(processing_class) if is_tokenizer else default_data_collator
        if not callable(data_collator):
            raise TypeError("`data_collator` must be callable.")
        self.args = to_hf_lightning_args(args)
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.test_dataset = test_dataset
        self.predict_dataset = predict_dataset
        self.data_collator = data_collator
        self.processing_class = processing_class
        self.model = model

    @property
    def batch_size(self) -> int:
        """`args.per_device_train_batch_size`, under the name Lightning's batch-size finder looks for
        (`Tuner(trainer).scale_batch_size(module, datamodule=...)`)."""
        return self.args.per_device_train_batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.args.per_device_train_batch_size = value

    def _model(self) -> nn.Module | None:
        if self.model is not None:
            return self.model
        module = getattr(self.trainer, "lightning_module", None) if self.trainer is not None else None
        return getattr(module, "model", None)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _prepared(self, dataset: Any, description: str) -> tuple[Any, Callable]:
        model = self._model()
        if model is None:
            return dataset, self.data_collator
        label_names = self.args.label_names or find_labels(model.__class__)
        return hf_data.prepare_dataset_and_collator(
            dataset,
            self.data_collator,
            self.args,
            lambda: hf_data.signature_columns(model, label_names),
            model.__class__.__name__,
            description,
        )

    def _count_items(self, batches: list) -> torch.Tensor | None:
        model = self._model()
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return hf_data.count_label_items(batches, loss_shifts_labels(base))

    def train_dataloader(self) -> hf_data.AccumulationWindowLoader:
        """HF's train loader in accumulation windows (`MicroBatch`es)."""
        if self.train_dataset is None:
            raise ValueError("`HFDataModule.train_dataloader`: no `train_dataset` was given.")
        dataset, collator = self._prepared(self.train_dataset, "training")
        world, rank = self._world()
        sampler = hf_data.train_sampler(dataset, self.args, self.processing_class)
        loader = hf_data.build_dataloader(
            dataset, self.args.per_device_train_batch_size, collator, sampler, self.args, True, world, rank
        )
        return hf_data.AccumulationWindowLoader(
            loader, self.args.gradient_accumulation_steps, self._count_items, len(loader)
        )

    def _eval_loader(self, dataset: Any, description: str) -> torch.utils.data.DataLoader | list:
        if dataset is None:
            return []
        dataset, collator = self._prepared(dataset, description)
        loader = hf_data.build_dataloader(
            dataset, self.args.per_device_eval_batch_size, collator, None, self.args, False
        )
        return shard_eval_loader(loader, self.args)

    def val_dataloader(self) -> torch.utils.data.DataLoader | list:
        """HF's eval loader (sequential), sharded over the ranks; empty without an `eval_dataset`."""
        return self._eval_loader(self.eval_dataset, "evaluation")

    def test_dataloader(self) -> torch.utils.data.DataLoader | list:
        """HF's eval loader of the `test_dataset` (`trainer.test`: metrics prefixed `test_`)."""
        return self._eval_loader(self.test_dataset, "test")

    def predict_dataloader(self) -> torch.utils.data.DataLoader | list:
        """HF's eval loader of the `predict_dataset` (else the `test_dataset`; `trainer.predict`: the logits)."""
        return self._eval_loader(
            self.predict_dataset if self.predict_dataset is not None else self.test_dataset, "test"
        )
