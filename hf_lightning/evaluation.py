"""Evaluation and prediction with HF semantics (`evaluate`, `predict`, `prediction_step`).

The loop mirrors `transformers.Trainer.evaluation_loop`: per-batch losses repeated over the batch,
logits/labels padded to one length with -100, `preprocess_logits_for_metrics` before accumulation,
`compute_metrics(EvalPrediction)` (or per batch with `batch_eval_metrics`), metric keys prefixed. Unlike
HF's container, which re-concatenates its growing tensors at every batch, each batch is copied once into
preallocated arrays and dropped (`BatchAccumulator`), so time is linear in the dataset and memory only holds the
predictions themselves. Under several processes each rank evaluates its shard and results are gathered, with the
padding samples a distributed split adds removed.

Where we differ from HF on purpose (results under DDP equal the single-process ones):
- under DDP a batch completed with padding samples is evaluated on its real rows only, and the loss gets no
  cross-rank `num_items_in_batch` (HF multiplies it by the world size, doubling the eval loss of models that
  ignore that count);
- when `compute_metrics` is set but the eval batches carry no labels, HF silently skips the metrics (and the
  loss); we do the same but log a warning naming `label_names`;
- a `compute_metrics` that returns something other than a dict raises a `TypeError` saying so (for None, HF fails
  too, with a `TypeError` about item assignment);
- with `dataloader_persistent_workers`, only the loaders of the Trainer's own eval datasets are kept for reuse: HF
  also files a dataset passed to `evaluate(eval_dataset=...)` as "eval", then evaluates later calls (with another
  dataset, or none) on that one.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import SequentialSampler
from transformers import EvalPrediction
from transformers.trainer_pt_utils import LengthGroupedSampler, find_batch_size, nested_detach
from transformers.trainer_utils import (
    EvalLoopOutput,
    PredictionOutput,
    denumpify_detensorize,
    has_length,
    speed_metrics,
)

from hf_lightning import distributed
from hf_lightning.accelerator_config import non_blocking
from hf_lightning.compat import eval_loss_filters_nan_inf, trainer_num_items
from hf_lightning.data import is_hf_dataset
from hf_lightning.eval_accumulation import BatchAccumulator
from hf_lightning.log_output import log_evaluation_start
from hf_lightning.optimization import is_metric_scheduler
from hf_lightning.strategies import fsdp_wrapper

logger = logging.getLogger(__name__)


@functools.cache
def cache_output_names() -> tuple[str, ...]:
    """The names the installed transformers gives the key/value cache in model outputs (`past_key_values` up to
    5.23, `cache` from 5.24): the fields of `CausalLMOutputWithPast` annotated with `Cache`."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    names = tuple(f.name for f in dataclasses.fields(CausalLMOutputWithPast) if "Cache" in str(getattr(f, "type", "")))
    return names or ("past_key_values",)


def default_ignore_keys(model: nn.Module) -> list[str]:
    """`prediction_step`'s default `ignore_keys`, as transformers decides it: the config's
    `keys_to_ignore_at_inference`, else the installed transformers' name for the cache output (read at run time, so
    a rename in transformers is followed, not restated); models without a config ignore nothing."""
    if not hasattr(model, "config"):
        return []
    return list(getattr(model.config, "keys_to_ignore_at_inference", cache_output_names()))


def _kept_outputs(outputs: Mapping, ignore_keys: list[str]) -> tuple:
    """The output values gathered as predictions: HF's (those not in `ignore_keys`), minus any `Cache` object left
    under another name (a cache cannot be concatenated or gathered; transformers would fail on it)."""
    from transformers.cache_utils import Cache

    return tuple(v for k, v in outputs.items() if k not in ignore_keys and not isinstance(v, Cache))


def _with_last_flag(loader: Any) -> Iterator[tuple[int, Any, bool]]:
    """`(step, batch, is_last)` over a loader, looking one batch ahead (works without a length)."""
    iterator = iter(loader)
    try:
        current = next(iterator)
    except StopIteration:
        return
    step = 0
    for upcoming in iterator:
        yield step, current, False
        current, step = upcoming, step + 1
    yield step, current, True


def _check_metrics(metrics: Any) -> dict[str, Any]:
    """`compute_metrics`' result as a JSON-friendly dict; a clear error when it is not a dict (None included:
    transformers fails on it too, with "'NoneType' object does not support item assignment")."""
    if metrics is None:
        raise TypeError(
            "`compute_metrics` returned None; it must return a dict of metric name -> value ({} for no metrics)."
        )
    if not isinstance(metrics, dict):
        raise TypeError(
            f"`compute_metrics` must return a dict of metric name -> value, got {type(metrics).__name__}: {metrics!r}."
        )
    return denumpify_detensorize(metrics)


def metric_for_best_model_value(args: Any, metrics: dict[str, float]) -> float:
    """The value of `metric_for_best_model` (`eval_`-prefixed as HF does); a KeyError naming it when absent."""
    metric_to_check = args.metric_for_best_model
    if not metric_to_check.startswith("eval_"):
        metric_to_check = f"eval_{metric_to_check}"
    if metric_to_check not in metrics:
        raise KeyError(
            f"The `metric_for_best_model` training argument is set to '{metric_to_check}', which is not found in "
            f"the evaluation metrics. The available evaluation metrics are: {list(metrics.keys())}. Consider "
            "changing the `metric_for_best_model` via the TrainingArguments."
        )
    return metrics[metric_to_check]


@dataclass
class EvaluationRun:
    """One evaluation in progress: what `_begin_evaluation` set up and the batches accumulated so far."""

    model: nn.Module
    dataloader: Any
    description: str
    prediction_loss_only: bool
    ignore_keys: list[str] | None
    metric_key_prefix: str
    device: torch.device
    gather: distributed.Gatherer
    containers: list[BatchAccumulator]  # losses, predictions, labels, inputs
    batch_size: int | None
    keep_batches: bool
    observed: int = 0
    metrics: Any = None
    start_time: float = field(default_factory=time.time)


class EvaluationMixin:
    """`evaluate`, `predict`, `prediction_step`, `get_eval_dataloader`, `get_test_dataloader` for the Trainer."""

    # HF's Trainer counts a short last batch's loss once per sample; its Seq2SeqTrainer gathers without that cut, so
    # the loss is the plain mean of the batch losses. Subclasses set this to get that weighting.
    eval_loss_per_batch: bool = False

    def _gather_losses(self, gather: distributed.Gatherer, losses: torch.Tensor, repeats: int) -> torch.Tensor:
        """Gather a batch's repeated loss; with `eval_loss_per_batch` the last step keeps all `repeats` copies of
        each real batch's loss (so under DDP the result still equals the single-process one)."""
        if not self.eval_loss_per_batch or gather.cut is None or repeats <= 0:
            return gather(losses)
        cut = gather.cut
        gather.cut = math.ceil(cut / repeats) * repeats
        try:
            return gather(losses)
        finally:
            gather.cut = cut

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        """HF's eval sampler: length-grouped with `train_sampling_strategy="group_by_length"`, else sequential."""
        if eval_dataset is None or not has_length(eval_dataset):
            return None
        if getattr(self.args, "train_sampling_strategy", "random") == "group_by_length":
            lengths = None
            if is_hf_dataset(eval_dataset):
                if self.args.length_column_name in eval_dataset.column_names:
                    lengths = eval_dataset[self.args.length_column_name]
            processing_class = getattr(self, "processing_class", None)
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return LengthGroupedSampler(
                self.args.eval_batch_size,
                dataset=eval_dataset,
                lengths=lengths,
                model_input_name=processing_class.model_input_names[0] if processing_class is not None else None,
                generator=torch.Generator().manual_seed(seed),
            )
        return SequentialSampler(eval_dataset)

    def get_eval_dataloader(self, eval_dataset: Any = None) -> torch.utils.data.DataLoader:
        """The evaluation loader (sequential; a dataset name picks from a dict of eval datasets); on a
        `lightning.Trainer` the user owns, without an `eval_dataset`, its datamodule's `val_dataloader()`. Overridable.

        With `dataloader_persistent_workers`, the loader of each of the Trainer's own eval datasets is built once and
        reused by every evaluation (its workers stay alive), as in transformers."""
        if eval_dataset is None and self.eval_dataset is None:
            loader = self._lightning_val_dataloader()
            if loader is not None:
                return loader
            raise ValueError("Trainer: evaluation requires an eval_dataset.")
        own = eval_dataset is None or eval_dataset is self.eval_dataset  # what `evaluate()` passes by default
        key = eval_dataset if isinstance(eval_dataset, str) else "eval" if own else None
        persistent = self.args.dataloader_persistent_workers and key is not None
        loaders = self.__dict__.setdefault("_eval_dataloaders", {})  # transformers' name for the cache
        if persistent and key in loaders:
            return loaders[key]
        if isinstance(eval_dataset, str):
            eval_dataset = self.eval_dataset[eval_dataset]
        elif eval_dataset is None:
            eval_dataset = self.eval_dataset
        loader = self._get_distributed_eval_loader(eval_dataset, "Evaluation")
        if persistent:
            loaders[key] = loader
        return loader

    def get_test_dataloader(self, test_dataset: Any) -> torch.utils.data.DataLoader:
        """The prediction loader (sequential). Overridable."""
        return self._get_distributed_eval_loader(test_dataset, "test")

    def _get_distributed_eval_loader(self, dataset: Any, description: str) -> torch.utils.data.DataLoader:
        loader = self._get_dataloader(dataset, description, self.args.eval_batch_size, self._get_eval_sampler)
        return distributed.shard_eval_loader(loader, self.args)

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Evaluate and return metrics (`{prefix}_loss`, prefixed `compute_metrics` keys, speed, `epoch`); a dict of
        datasets is evaluated one by one with the prefix `{prefix}_{name}`."""
        override = eval_dataset is not None
        eval_dataset = eval_dataset if override else self.eval_dataset
        if isinstance(eval_dataset, dict):
            metrics: dict[str, float] = {}
            for name, dataset in eval_dataset.items():
                metrics.update(
                    self.evaluate(
                        eval_dataset=dataset if override else name,
                        ignore_keys=ignore_keys,
                        metric_key_prefix=f"{metric_key_prefix}_{name}",
                    )
                )
            return metrics
        self._memory_tracker.start_stage("eval")
        eval_dataloader = self.get_eval_dataloader(eval_dataset)
        start_time = time.time()
        output = self.evaluation_loop(
            eval_dataloader,
            description="Evaluation",
            prediction_loss_only=True if self.compute_metrics is None else None,
            ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        self._add_speed_metrics(output, start_time, metric_key_prefix)
        self.log(output.metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, output.metrics)
        self._memory_tracker.stop_stage("eval", output.metrics)
        return output.metrics

    def predict(
        self, test_dataset: Any, ignore_keys: list[str] | None = None, metric_key_prefix: str = "test"
    ) -> PredictionOutput:
        """Predict on `test_dataset`: predictions, label_ids (if any) and metrics (not logged, as in HF)."""
        self._memory_tracker.start_stage("test")
        test_dataloader = self.get_test_dataloader(test_dataset)
        start_time = time.time()
        output = self.evaluation_loop(
            test_dataloader, description="Prediction", ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )
        self._add_speed_metrics(output, start_time, metric_key_prefix)
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, output.metrics)
        self._memory_tracker.stop_stage("test", output.metrics)
        return PredictionOutput(predictions=output.predictions, label_ids=output.label_ids, metrics=output.metrics)

    def _add_speed_metrics(self, output: EvalLoopOutput, start_time: float, prefix: str) -> None:
        total_batch_size = self.args.eval_batch_size * self.args.world_size
        start_time += output.metrics.get(f"{prefix}_model_preparation_time", 0.0)
        output.metrics.update(
            speed_metrics(
                prefix,
                start_time,
                num_samples=output.num_samples,
                num_steps=math.ceil(output.num_samples / total_batch_size),
            )
        )

    def _eval_model(self) -> nn.Module:
        """The model to evaluate, on the run's device and, outside training, in `*_full_eval` dtype.

        Like HF, the first evaluation before any training "prepares" the model and from then on every metrics
        dict carries `{prefix}_model_preparation_time`. Under FSDP, the wrapped model (HF's `_wrap_model`): each rank
        holds only its shard of the weights, the wrapper gathers them for each forward."""
        sharded = fsdp_wrapper(getattr(self, "model_wrapped", None))
        if sharded is not None and getattr(self, "lightning_trainer", None) is not None:
            return sharded
        model = self.model
        device = distributed.eval_device(self)
        if getattr(self, "lightning_trainer", None) is None and not getattr(self, "_eval_model_prepared", False):
            start = time.time()
            model = model.to(device)
            self.model_preparation_time = round(time.time() - start, 4)
            self._eval_model_prepared = True
        if not self.is_in_train:
            if self.args.fp16_full_eval:
                return model.to(dtype=torch.float16, device=device)
            if self.args.bf16_full_eval:
                return model.to(dtype=torch.bfloat16, device=device)
        return model.to(device)

    def _mark_model_prepared(self) -> None:
        """The model was trained in processes this one started (`hf_lightning.launchers`): as after a `train()`
        here, evaluation does not count a model preparation."""
        self._eval_model_prepared = True

    def evaluation_loop(
        self,
        dataloader: torch.utils.data.DataLoader,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        """HF's evaluation loop, shared by `evaluate` and `predict`. Leaves the model in eval mode, as HF does
        (`training_step` puts it back in train mode)."""
        run = self._begin_evaluation(
            self._eval_model(), dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
        )
        copy_async = non_blocking(self.args)
        for step, inputs, is_last in _with_last_flag(dataloader):
            self._evaluation_batch(run, step, distributed.move_to_device(inputs, run.device, copy_async), is_last)
        return self._end_evaluation(run)

    def _begin_evaluation(
        self,
        model: nn.Module,
        dataloader: Any,
        description: str,
        prediction_loss_only: bool | None,
        ignore_keys: list[str] | None,
        metric_key_prefix: str,
    ) -> EvaluationRun:
        """Start an evaluation of `model` over `dataloader` (its batches are then fed to `_evaluation_batch`, by
        `evaluation_loop` or by Lightning's evaluation loop)."""
        args = self.args
        log_evaluation_start(self, dataloader, description, args.eval_batch_size)
        model.eval()
        if hasattr(self.optimizer, "eval") and callable(self.optimizer.eval):
            self.optimizer.eval()
        self.callback_handler.eval_dataloader = dataloader
        expected_batches = len(dataloader) if has_length(dataloader) else None
        return EvaluationRun(
            model=model,
            dataloader=dataloader,
            description=description,
            prediction_loss_only=(
                prediction_loss_only if prediction_loss_only is not None else args.prediction_loss_only
            ),
            ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
            device=distributed.eval_device(self),
            gather=distributed.Gatherer(args, dataloader),
            containers=[
                BatchAccumulator(args.eval_do_concat_batches, expected_batches=expected_batches) for _ in range(4)
            ],
            batch_size=args.eval_batch_size,
            keep_batches=not args.batch_eval_metrics or description == "Prediction",
        )

    def _evaluation_batch(self, run: EvaluationRun, step: int, inputs: Any, is_last: bool) -> None:
        """One batch (already on the device) of `run`: predict, gather over the ranks, accumulate."""
        args = self.args
        gather = run.gather
        include = args.include_for_metrics or []
        all_losses, all_preds, all_labels, all_inputs = run.containers
        observed_batch_size = find_batch_size(inputs)
        gather.begin_step(is_last, observed_batch_size)
        if observed_batch_size is not None:
            run.observed += observed_batch_size
            run.batch_size = run.batch_size if run.batch_size is not None else observed_batch_size
        batch_size = run.batch_size
        losses, logits, labels = self._distributed_prediction_step(
            run.model, inputs, run.dataloader, step, observed_batch_size, run.prediction_loss_only, run.ignore_keys
        )
        main_input_name = getattr(self.model, "main_input_name", "input_ids")
        inputs_decode = inputs[main_input_name] if "inputs" in include else None
        if losses is not None:
            losses = self._gather_losses(gather, losses.repeat(batch_size), batch_size)
            all_losses.add(losses)
        if inputs_decode is not None:
            inputs_decode = gather(gather.pad(inputs_decode))
            if run.keep_batches:
                all_inputs.add(inputs_decode)
        if labels is not None:
            labels = gather.pad(labels)
        if logits is not None:
            logits = gather.pad(logits)
            if self.preprocess_logits_for_metrics is not None:
                logits = self.preprocess_logits_for_metrics(logits, labels)
            logits = gather(logits)
            if run.keep_batches:
                all_preds.add(logits)
        if labels is not None:
            labels = gather(labels)
            if run.keep_batches:
                all_labels.add(labels)
        self.control = self.callback_handler.on_prediction_step(args, self.state, self.control)
        if args.batch_eval_metrics:
            if self.compute_metrics is not None and logits is not None and labels is not None:
                prediction = EvalPrediction(
                    predictions=logits,
                    label_ids=labels,
                    losses=losses if "loss" in include else None,
                    inputs=inputs if "inputs" in include else None,
                )
                run.metrics = self.compute_metrics(prediction, compute_result=is_last)
        elif args.eval_accumulation_steps is not None and (step + 1) % args.eval_accumulation_steps == 0:
            for container in run.containers:
                container.to_cpu()

    def _end_evaluation(self, run: EvaluationRun) -> EvalLoopOutput:
        """The predictions, labels and metrics of `run` (`compute_metrics`, the mean loss, prefixed keys)."""
        args = self.args
        include = args.include_for_metrics or []
        metric_key_prefix = run.metric_key_prefix
        losses_arr, preds_arr, labels_arr, inputs_arr = (c.get_arrays() for c in run.containers)
        num_samples = distributed.num_eval_samples(run.dataloader, run.observed)
        metrics = run.metrics
        if self.compute_metrics is not None and preds_arr is not None and labels_arr is not None:
            if not args.batch_eval_metrics:
                metrics = _check_metrics(
                    self.compute_metrics(
                        EvalPrediction(
                            predictions=preds_arr,
                            label_ids=labels_arr,
                            losses=losses_arr if "loss" in include else None,
                            inputs=inputs_arr if "inputs" in include else None,
                        )
                    )
                )
        elif self.compute_metrics is not None and labels_arr is None and run.description == "Evaluation":
            logger.warning(
                "`compute_metrics` was not called: the evaluation batches carry none of the label columns "
                "`label_names`=%s (HF skips the metrics and the loss then too).",
                self.label_names,
            )
        metrics = {} if metrics is None else _check_metrics(metrics)  # a last batch_eval_metrics call may give None
        losses = np.concatenate(losses_arr) if isinstance(losses_arr, list) and losses_arr else losses_arr
        if isinstance(losses, np.ndarray):
            if eval_loss_filters_nan_inf(args):
                finite = np.isfinite(losses)
                if finite.any():
                    losses = losses[finite]
            metrics[f"{metric_key_prefix}_loss"] = losses.mean().item()
        if getattr(self, "model_preparation_time", None) is not None:
            metrics[f"{metric_key_prefix}_model_preparation_time"] = self.model_preparation_time
        for key in list(metrics.keys()):
            if not key.startswith(f"{metric_key_prefix}_"):
                metrics[f"{metric_key_prefix}_{key}"] = metrics.pop(key)
        return EvalLoopOutput(predictions=preds_arr, label_ids=labels_arr, metrics=metrics, num_samples=num_samples)

    def _distributed_prediction_step(
        self,
        model: nn.Module,
        inputs: Any,
        dataloader: Any,
        step: int,
        batch_rows: int | None,
        prediction_loss_only: bool,
        ignore_keys: list[str] | None,
    ) -> tuple[Any, Any, Any]:
        """`prediction_step`, on the real rows only of a batch that completes the last one of a distributed
        split (its outputs grown back to the batch's rows, the completion cut after gathering)."""
        rows = distributed.real_rows(dataloader, step)
        if rows is None or batch_rows is None or rows in (0, batch_rows) or not isinstance(inputs, Mapping):
            return self.prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        real = distributed.take_rows(inputs, rows, batch_rows)
        loss, logits, labels = self.prediction_step(model, real, prediction_loss_only, ignore_keys=ignore_keys)
        return loss, distributed.fill_rows(logits, rows, batch_rows), distributed.fill_rows(labels, rows, batch_rows)

    def prediction_step(
        self, model: nn.Module, inputs: dict, prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> tuple[torch.Tensor | None, Any, Any]:
        """Loss, logits and labels of one batch, as HF computes them. Overridable."""
        has_labels = False if len(self.label_names) == 0 else all(inputs.get(k) is not None for k in self.label_names)
        return_loss = inputs.get("return_loss")
        if return_loss is None:
            return_loss = self.can_return_loss
        loss_without_labels = len(self.label_names) == 0 and return_loss
        inputs = self._prepare_inputs(inputs)
        if ignore_keys is None:
            ignore_keys = default_ignore_keys(self.model)
        if has_labels or loss_without_labels:
            labels = nested_detach(tuple(inputs.get(name) for name in self.label_names))
            if len(labels) == 1:
                labels = labels[0]
        else:
            labels = None
        with torch.no_grad():
            if has_labels or loss_without_labels:
                # Under DDP HF sums the count over ranks and scales the loss by the world size, which doubles the
                # eval loss of models that ignore the count; the model's own per-batch loss keeps it single-process.
                num_items = trainer_num_items(self._count_items([inputs])) if self.args.world_size <= 1 else None
                loss, outputs = self.compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items)
                loss = loss.detach().mean()
                if isinstance(outputs, dict):
                    logits = _kept_outputs(outputs, ignore_keys + ["loss"])
                else:
                    logits = outputs[1:]
            else:
                loss = None
                outputs = model(**inputs)
                if isinstance(outputs, dict):
                    logits = _kept_outputs(outputs, ignore_keys)
                else:
                    logits = outputs
        if prediction_loss_only:
            return (loss, None, None)
        logits = nested_detach(logits)
        if len(logits) == 1:
            logits = logits[0]
        return (loss, logits, labels)

    def _evaluate(self, trial: Any, ignore_keys_for_eval: list[str] | None, skip_scheduler: bool = False) -> dict:
        """Evaluation during training; steps a metric-driven scheduler afterwards, as HF does. Lightning's
        validation-end hooks follow once the batch ends (`lightning_events`)."""
        metrics = self.evaluate(ignore_keys=ignore_keys_for_eval)
        if is_metric_scheduler(self.lr_scheduler) and not skip_scheduler:
            self.lr_scheduler.step(metric_for_best_model_value(self.args, metrics))
        self.lightning_events.evaluated()
        return metrics

    def _lightning_val_dataloader(self) -> Any:
        """The validation loader of the datamodule of a `lightning.Trainer` the user owns, if it has one."""
        trainer = getattr(self, "lightning_trainer", None)
        datamodule = getattr(trainer, "datamodule", None)
        if self.owns_lightning_trainer or datamodule is None or not hasattr(datamodule, "val_dataloader"):
            return None
        loader = datamodule.val_dataloader()
        return loader if loader is not None and not isinstance(loader, (list, tuple)) else None

    # ---- Lightning's validation / test / predict loops (`HFLightningModule`) --------------------------------

    def begin_lightning_evaluation(self, model: nn.Module, dataloader: Any, metric_key_prefix: str) -> None:
        """Lightning's `on_{validation,test}_epoch_start`: an HF evaluation (`evaluate`'s semantics, keys prefixed
        `metric_key_prefix`) of the batches Lightning's loop will feed to `lightning_evaluation_step`."""
        prediction_loss_only = True if self.compute_metrics is None else None
        self._lightning_evaluation = self._begin_evaluation(
            model, dataloader, "Evaluation", prediction_loss_only, None, metric_key_prefix
        )

    def lightning_evaluation_step(self, inputs: Any, step: int, is_last: bool) -> None:
        """One batch of Lightning's evaluation loop (Lightning has moved it to the device)."""
        self._evaluation_batch(self._lightning_evaluation, step, inputs, is_last)

    def end_lightning_evaluation(self) -> dict[str, float]:
        """The metrics of the evaluation Lightning's loop ran. A validation is HF's `evaluate()`: logged (log history,
        loggers, `callback_metrics`) and announced (`on_evaluate`); during `fit` it is an evaluation during training
        (a metric-driven schedule steps, the best metric is tracked). A test is HF's `predict()` (`on_predict`). Not
        during Lightning's sanity check."""
        run, self._lightning_evaluation = self._lightning_evaluation, None
        output = self._end_evaluation(run)
        prefix = run.metric_key_prefix
        self._add_speed_metrics(output, run.start_time, prefix)
        metrics = output.metrics
        trainer = self.lightning_trainer
        if trainer is None or trainer.sanity_checking:
            return metrics
        if prefix != "eval":
            self.control = self.callback_handler.on_predict(self.args, self.state, self.control, metrics)
            return metrics
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        if trainer.state.fn == "fit" and self.is_in_train:
            if is_metric_scheduler(self.lr_scheduler):
                self.lr_scheduler.step(metric_for_best_model_value(self.args, metrics))
            self._determine_best_metric(metrics, getattr(self, "_trial", None))
        return metrics

    def lightning_predict_step(self, model: nn.Module, inputs: Any) -> Any:
        """Lightning's `predict_step`: HF's `prediction_step` logits of one batch."""
        _, logits, _ = self.prediction_step(model, inputs, prediction_loss_only=False)
        self.control = self.callback_handler.on_prediction_step(self.args, self.state, self.control)
        return logits
