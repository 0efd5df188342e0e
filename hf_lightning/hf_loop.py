"""`HFTrainingLoop`: the HF side of a run, once, for both doors into it.

Everything `transformers.Trainer` does around the optimisation step lives here: the constructor and what it learns
from the model, HF callbacks (`CallbackHandler`, `TrainerState`, `TrainerControl`), data loaders, the optimiser and
schedule, `compute_loss` / `training_step` (HF's subclass contract), `log`, and, mixed in from their own modules, the
loop bookkeeping at each Lightning event (`loop`), evaluation (`evaluation`), checkpoints and RNG (`checkpoints`; the
HF state of Lightning's `.ckpt`: `lightning_checkpoint`). `HFLightningModule` drives it through the `HFLoop` protocol
(`hf_lightning.module`).

Two doors lead into the same loop object:

* `hf_lightning.Trainer` (the facade) subclasses it and adds HF's `train()`: it builds the `lightning.Trainer` from
  `TrainingArguments` and fits an `HFLightningModule` with it;
* `HFLightningModule.from_args(...)` builds one for a `lightning.Trainer` (or `LightningCLI`) the user owns: the loop
  is attached to that trainer when Lightning sets the module up, and sets up the HF side of training once Lightning's
  loader exists (`loop.TrainingLoopMixin.on_lightning_train_start`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from transformers import (
    DataCollatorWithPadding,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    default_data_collator,
)
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_MAPPING_NAMES
from transformers.trainer_callback import CallbackHandler, ExportableState
from transformers.trainer_pt_utils import LabelSmoother
from transformers.trainer_utils import enable_full_determinism, has_length, set_seed, speed_metrics
from transformers.utils import can_return_loss, find_labels

from hf_lightning import data as hf_data
from hf_lightning import optimization
from hf_lightning.callbacks import (
    default_callbacks,
    is_lightning_callback,
    pop_lightning_callback,
    progress_callback,
    set_log_levels,
    split_callbacks,
)
from hf_lightning.checkpoints import CheckpointMixin
from hf_lightning.compat import label_smoother_kwargs, loss_shifts_labels, trainer_helper
from hf_lightning.evaluation import EvaluationMixin
from hf_lightning.features import LightningAccelerator, maybe_empty_device_cache
from hf_lightning.hub import HubMixin
from hf_lightning.legacy_signatures import adapt_legacy_overrides
from hf_lightning.lightning_checkpoint import LightningCheckpointMixin
from hf_lightning.lightning_events import LightningEvents
from hf_lightning.loop import TrainingLoopMixin
from hf_lightning.memory_metrics import MemoryMetrics
from hf_lightning.parallelism import ParallelismMixin
from hf_lightning.preemption import preemption_handler
from hf_lightning.reporting import build_loggers, integration_loggers
from hf_lightning.throughput import ThroughputMeter
from hf_lightning.training_args import DEFAULT_OUTPUT_DIR, TrainingArguments, to_hf_lightning_args

__all__ = ["HFTrainingLoop"]

logger = logging.getLogger(__name__)

# `TrainingArguments` switches that act around `hf_lightning.Trainer.train()`, and what a `lightning.Trainer` user does
# instead (`HFTrainingLoop.for_lightning_trainer`).
_FACADE_ONLY = {
    "auto_lr_find": "run Lightning's `Tuner(trainer).lr_find(module, datamodule=...)` before `fit` (it sets "
    "`module.learning_rate`)",
    "auto_scale_batch_size": "run Lightning's `Tuner(trainer).scale_batch_size(module, datamodule=...)` before `fit` "
    "(it sets `HFDataModule.batch_size`)",
    "checkpoint_on_preemption": "use Lightning's SLURM auto-requeue (`SLURMEnvironment`; its `.ckpt` carries the HF "
    "state) or `OnExceptionCheckpoint`",
    "enable_jit_checkpoint": "use Lightning's SLURM auto-requeue (`SLURMEnvironment`) or `OnExceptionCheckpoint`",
}

# Headless base models (BertModel, LlamaModel ...) return hidden states, never a loss.
_BASE_MODEL_CLASS_NAMES = {
    name for value in MODEL_MAPPING_NAMES.values() for name in ((value,) if isinstance(value, str) else value)
}


class HFTrainingLoop(
    TrainingLoopMixin, EvaluationMixin, CheckpointMixin, LightningCheckpointMixin, HubMixin, ParallelismMixin
):
    """The HF side of a run: `transformers.Trainer` minus its `train()` door (see the module docstring)."""

    loss_is_scaled_for_ga: bool | None = None

    @classmethod
    def for_lightning_trainer(cls, model: nn.Module, args: Any = None, **kwargs: Any) -> HFTrainingLoop:
        """The loop of an `HFLightningModule` that a `lightning.Trainer` the user owns will run (its data from the
        trainer's datamodule). A switch only `hf_lightning.Trainer.train()` acts on is an error naming what to use
        there (it would otherwise be silently ignored)."""
        for name in ("train_dataset", "eval_dataset", "model_init"):
            if kwargs.get(name) is not None:
                raise ValueError(f"`{name}`: the data of a Lightning run come from its datamodule (`HFDataModule`).")
        checked = to_hf_lightning_args(args if args is not None else TrainingArguments(output_dir=DEFAULT_OUTPUT_DIR))
        if checked.push_to_hub:
            raise ValueError(
                "`push_to_hub=True` is pushed by `hf_lightning.Trainer`; with a plain `lightning.Trainer`, upload the "
                "`HFCheckpoint` folders with `huggingface_hub.HfApi().upload_folder` (or use the facade)."
            )
        for name, instead in _FACADE_ONLY.items():
            if getattr(checked, name, None):
                raise ValueError(
                    f"`{name}` is acted on by `hf_lightning.Trainer`; with a plain `lightning.Trainer`, {instead}."
                )
        return cls(model=model, args=checked, **kwargs)

    def use_learning_rate(self, value: float) -> None:
        """Train the next run with `value` (`args.learning_rate`; Lightning's `Tuner.lr_find(update_attr=True)` sets
        it through `HFLightningModule.learning_rate`). An optimiser and schedule this loop built for an earlier run
        (the tuner's own) is dropped, so that the next `fit` builds it with it, as a LightningModule's
        `configure_optimizers` would (a schedule the loop built is rebuilt each run anyway); what was passed in
        `optimizers` is the user's and is kept."""
        self.args.learning_rate = value
        if not self._optimizers_given and not self.is_in_train:
            self.optimizer = None

    # transformers' helpers for external use (functions of the trainer in `transformers.trainer_pt_utils`).
    get_learning_rates = trainer_helper("get_learning_rates")
    get_num_trainable_parameters = trainer_helper("get_num_trainable_parameters")
    get_optimizer_group = trainer_helper("get_optimizer_group")

    def __init__(
        self,
        model: nn.Module | None = None,
        args: Any = None,
        data_collator: Callable | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        model_init: Callable[..., nn.Module] | None = None,
        compute_loss_func: Callable | None = None,
        compute_metrics: Callable | None = None,
        callbacks: list | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, Any] = (None, None),
        optimizer_cls_and_kwargs: tuple[type, dict[str, Any]] | None = None,
        preprocess_logits_for_metrics: Callable | None = None,
        tokenizer: Any = None,
    ) -> None:
        if tokenizer is not None:
            if processing_class is not None:
                raise ValueError("Pass either `processing_class` or its deprecated alias `tokenizer`, not both.")
            warnings.warn(
                "`tokenizer` is deprecated (removed from transformers v5); use `processing_class` instead.",
                FutureWarning,
                stacklevel=2,
            )
            processing_class = tokenizer
        self.args = to_hf_lightning_args(args if args is not None else TrainingArguments(output_dir=DEFAULT_OUTPUT_DIR))
        if self.args.full_determinism:
            enable_full_determinism(self.args.seed)
        else:
            set_seed(self.args.seed)
        self._memory_tracker = MemoryMetrics(self.args.skip_memory_metrics)  # transformers' name for it
        self._memory_tracker.start_stage("init")
        set_log_levels(self.args)

        if model is None:
            if model_init is None:
                raise RuntimeError("`Trainer` requires either a `model` or `model_init` argument")
            self.model_init = model_init
            model = self.call_model_init()
        elif model_init is not None:
            raise ValueError("`Trainer` requires either a `model` or `model_init` argument, but not both.")
        else:
            self.model_init = None
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
        if model.__class__.__name__ in _BASE_MODEL_CLASS_NAMES:
            raise ValueError(
                f"The `model` you have picked ({model.__class__.__name__}) cannot be used as is for training: it only "
                "computes hidden states and does not accept any labels. Choose a model with a head (AutoModelForXxx)."
            )
        self.model = model
        self.model_wrapped = model
        self._inspect_model()

        self.data_collator = data_collator if data_collator is not None else self._default_collator(processing_class)
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.processing_class = processing_class
        self.neftune_noise_alpha = self.args.neftune_noise_alpha
        self.compute_loss_func = compute_loss_func
        self.compute_metrics = compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.optimizer, self.lr_scheduler = optimizers
        self._optimizers_given = any(part is not None for part in optimizers)
        self.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs
        adapt_legacy_overrides(self, HFTrainingLoop)
        self._validate_args()

        hf_callbacks, self.lightning_callbacks = split_callbacks(callbacks or [])
        own_loggers = build_loggers(self.args)
        self.callback_handler = CallbackHandler(
            default_callbacks(self.args, own_loggers) + hf_callbacks,
            self.model,
            self.processing_class,
            self.optimizer,
            self.lr_scheduler,
        )
        self.add_callback(progress_callback(self.args))
        self.report_loggers = own_loggers + integration_loggers(self)  # the Lightning side of `report_to`
        self.hub_model_id = None
        if self.args.push_to_hub:  # before training: offline or a refused token stops here (HubRepoError)
            self.init_hf_repo()
        self.preemption = preemption_handler(self)  # `checkpoint_on_preemption` / `enable_jit_checkpoint`, or None
        if self.preemption is not None:
            self.callback_handler.add_callback(self.preemption)
        if self.args.should_save:
            os.makedirs(self.args.output_dir, exist_ok=True)
        self.control = TrainerControl()
        self.state = TrainerState(
            is_local_process_zero=self.is_local_process_zero(),
            is_world_process_zero=self.is_world_process_zero(),
            stateful_callbacks=self._stateful_callbacks(),
        )
        self.is_in_train = False
        self.hp_name = None
        self.hp_search_backend = None
        self._trial = None
        self.current_flos = 0
        self._signature_columns: list[str] | None = None
        self._train_batch_size = self.args.train_batch_size
        self._created_lr_scheduler = False
        self.lightning_trainer: pl.Trainer | None = None
        self.lightning_module: pl.LightningModule | None = None
        # Whether this loop built `lightning_trainer` itself (`hf_lightning.Trainer.train`) or was attached to one the
        # user owns (`HFLightningModule.from_args`); what the HF events tell it (`lightning_events`).
        self.owns_lightning_trainer = False
        self.lightning_events = LightningEvents()
        self._epochs_trained = 0
        self._resume_rng_checkpoint: str | None = None
        self._resume_folder: str | None = None
        self._ignore_keys_for_eval: list[str] | None = None
        main_input = getattr(self.model, "main_input_name", "input_ids")
        self.throughput_meter = ThroughputMeter(main_input) if self.args.log_throughput else None
        self.lr_find_result: Any = None  # `Trainer.lr_find`'s last range test (`lr_finder.LRFinderResult`)
        self.accelerator = LightningAccelerator(self)
        self.control = self.callback_handler.on_init_end(self.args, self.state, self.control)
        if getattr(self.model, "config", None) is not None:
            self.model.config.use_cache = self.args.use_cache
        self._memory_tracker.stop_stage("init")

    # ---- construction helpers ----------------------------------------------------------------------

    def _inspect_model(self) -> None:
        """What HF learns from the model class: loss kwargs, label names, label shifting, label smoothing."""
        model = self.model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        if hasattr(base, "accepts_loss_kwargs"):
            self.model_accepts_loss_kwargs = base.accepts_loss_kwargs
        else:
            params = inspect.signature(base.forward).parameters.values()
            self.model_accepts_loss_kwargs = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params)
        default_label_names = find_labels(base.__class__)
        self.label_names = default_label_names if self.args.label_names is None else self.args.label_names
        self.can_return_loss = can_return_loss(base.__class__)
        config = getattr(base, "config", None)
        self._loss_shifts_labels = loss_shifts_labels(base)
        self.label_smoother = None
        if self.args.label_smoothing_factor != 0:
            if getattr(config, "problem_type", None) == "multi_label_classification":
                warnings.warn(
                    "Label smoothing is not compatible with multi-label classification.", UserWarning, stacklevel=2
                )
            else:
                self.label_smoother = LabelSmoother(epsilon=self.args.label_smoothing_factor)

    @staticmethod
    def _default_collator(processing_class: Any) -> Callable:
        if isinstance(processing_class, (PreTrainedTokenizerBase, SequenceFeatureExtractor)):
            return DataCollatorWithPadding(processing_class)
        return default_data_collator

    def _validate_args(self) -> None:
        """HF's constructor checks, plus ours, all before any training starts."""
        args = self.args
        if args.batch_eval_metrics and self.compute_metrics is not None:
            if "compute_result" not in inspect.signature(self.compute_metrics).parameters:
                raise ValueError(
                    "When using `batch_eval_metrics`, your `compute_metrics` function must take a `compute_result` "
                    "boolean argument, set to True after the last batch of the eval set."
                )
        if (args.save_strategy == "best" or args.load_best_model_at_end) and args.metric_for_best_model is None:
            raise ValueError(
                "`args.metric_for_best_model` must be provided when using 'best' save_strategy or if "
                "`args.load_best_model_at_end` is set to `True`."
            )
        if self.optimizer_cls_and_kwargs is not None and self.optimizer is not None:
            raise RuntimeError("Passing both `optimizers` and `optimizer_cls_and_kwargs` arguments is incompatible.")
        if self.model_init is not None and (self.optimizer is not None or self.lr_scheduler is not None):
            raise RuntimeError(
                "Passing a `model_init` is incompatible with providing the `optimizers` argument. Subclass `Trainer` "
                "and override `create_optimizer_and_scheduler` instead."
            )
        if args.auto_lr_find and (self.optimizer is not None or self.optimizer_cls_and_kwargs is not None):
            raise ValueError(
                "`auto_lr_find` trains with the suggested `learning_rate`, which an optimizer passed in `optimizers` "
                "or `optimizer_cls_and_kwargs` does not read: call `trainer.lr_find()` and build the optimizer with it."
            )
        if self.compute_metrics is not None and not callable(self.compute_metrics):
            raise TypeError("`compute_metrics` must be callable (it receives an `EvalPrediction`).")
        if not callable(self.data_collator):
            raise TypeError("The `data_collator` should be a simple callable (function, class with `__call__`).")

    def _stateful_callbacks(self) -> list:
        return [cb for cb in self.callback_handler.callbacks + [self.control] if isinstance(cb, ExportableState)]

    def call_model_init(self, trial: Any = None) -> nn.Module:
        """Build the model with `model_init` (taking the trial when its signature asks for one)."""
        n_args = len(inspect.signature(self.model_init).parameters)
        model = self.model_init() if n_args == 0 else self.model_init(trial) if n_args == 1 else None
        if model is None:
            raise RuntimeError("`model_init` should have 0 or 1 argument and return a model.")
        return model

    # ---- callbacks -------------------------------------------------------------------------------------

    def add_callback(self, callback: type[TrainerCallback] | TrainerCallback | pl.Callback) -> None:
        """Add an HF callback (class or instance) or a Lightning callback."""
        if is_lightning_callback(callback):
            self.lightning_callbacks.append(callback() if isinstance(callback, type) else callback)
        else:
            self.callback_handler.add_callback(callback)

    def pop_callback(self, callback: Any) -> TrainerCallback | pl.Callback | None:
        """Remove and return an HF or Lightning callback (class: the first of that class)."""
        if is_lightning_callback(callback):
            return pop_lightning_callback(self.lightning_callbacks, callback)
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback: Any) -> None:
        """Remove an HF or Lightning callback (class: the first of that class)."""
        if is_lightning_callback(callback):
            pop_lightning_callback(self.lightning_callbacks, callback)
        else:
            self.callback_handler.remove_callback(callback)

    def get_total_train_batch_size(self, args: TrainingArguments) -> int:
        """HF's samples per optimiser step: micro-batch x gradient accumulation x data-parallel processes."""
        data_parallel = args.world_size // (self.get_tp_size() * self.get_cp_size() * self.get_sp_size())
        return self._train_batch_size * args.gradient_accumulation_steps * data_parallel

    def is_local_process_zero(self) -> bool:
        return self.args.local_process_index == 0

    def is_world_process_zero(self) -> bool:
        return self.args.process_index == 0

    # ---- data ----------------------------------------------------------------------------------------

    def _set_signature_columns_if_needed(self) -> list[str]:
        if self._signature_columns is None:
            self._signature_columns = hf_data.signature_columns(self.model, self.label_names)
        return self._signature_columns

    def _get_dataloader(
        self, dataset: Any, description: str, batch_size: int, sampler_fn: Callable | None, is_training: bool = False
    ) -> torch.utils.data.DataLoader:
        dataset, collator = hf_data.prepare_dataset_and_collator(
            dataset,
            self.data_collator,
            self.args,
            self._set_signature_columns_if_needed,
            self.model.__class__.__name__,
            description,
        )
        sampler = sampler_fn(dataset) if sampler_fn is not None else None
        return hf_data.build_dataloader(
            dataset,
            batch_size,
            collator,
            sampler,
            self.args,
            is_training,
            world_size=self.args.world_size if is_training else 1,
            process_index=self.args.process_index if is_training else 0,
        )

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return hf_data.train_sampler(dataset, self.args, self.processing_class)

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        """The training loader: HF's sampler, seed, collator and column removal. Overridable."""
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        return self._get_dataloader(
            self.train_dataset, "Training", self._train_batch_size, self._get_train_sampler, is_training=True
        )

    def get_train_window_loader(
        self, batch_size: int | None = None, gradient_accumulation_steps: int | None = None
    ) -> hf_data.AccumulationWindowLoader:
        """The training data as `HFLightningModule` takes it: `get_train_dataloader()` in HF's accumulation windows,
        each with its `num_items_in_batch`. `batch_size` / `gradient_accumulation_steps` replace the run's (tuning runs
        try other sizes)."""
        saved = self._train_batch_size
        if batch_size is not None:
            self._train_batch_size = batch_size
        try:
            train_dataloader = self.get_train_dataloader()
        finally:
            self._train_batch_size = saved
        ga = gradient_accumulation_steps or self.args.gradient_accumulation_steps
        steps_in_epoch = len(train_dataloader) if has_length(train_dataloader) else max(self.args.max_steps, 1) * ga
        return hf_data.AccumulationWindowLoader(train_dataloader, ga, self._count_items, steps_in_epoch)

    def num_examples(self, dataloader: torch.utils.data.DataLoader) -> int:
        try:
            return len(dataloader.dataset)
        except (NameError, AttributeError, TypeError):
            return len(dataloader) * self.args.per_device_train_batch_size

    # ---- optimisation ----------------------------------------------------------------------------------

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        return optimization.decay_parameter_names(model)

    @staticmethod
    def get_optimizer_cls_and_kwargs(args: Any, model: nn.Module | None = None) -> tuple[Any, Any]:
        return optimization.optimizer_cls_and_kwargs(args, model)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """HF's optimiser (decay groups, `optim`, `optim_args`) unless one was given. Overridable."""
        if self.optimizer is None:
            model = self.model if model is None else model
            self.optimizer = optimization.build_optimizer(
                model, self.args, self.get_decay_parameter_names(model), self.optimizer_cls_and_kwargs
            )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        """HF's scheduler from `lr_scheduler_type` over `num_training_steps`, unless one was given. Overridable."""
        if self.lr_scheduler is None:
            self.lr_scheduler = optimization.build_scheduler(self.args, optimizer or self.optimizer, num_training_steps)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        self.create_optimizer()
        self.create_scheduler(num_training_steps=num_training_steps)

    def _get_learning_rate(self) -> float:
        return optimization.current_learning_rate(self.optimizer, self.lr_scheduler)

    # ---- loss and step (HF's subclass contract) -----------------------------------------------------

    def compute_loss(
        self, model: nn.Module, inputs: dict, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        """HF's loss: the model's own (with `num_items_in_batch` when it accepts loss kwargs), label smoothing,
        or `compute_loss_func`. Overridable."""
        if (self.label_smoother is not None or self.compute_loss_func is not None) and "labels" in inputs:
            labels = inputs.pop("labels")
        else:
            labels = None
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            inputs = {**inputs, "num_items_in_batch": num_items_in_batch}
        outputs = model(**inputs)
        if self.compute_loss_func is not None:
            loss = self.compute_loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
        elif labels is not None:
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            shift = base._get_name() in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
            loss = self.label_smoother(outputs, labels, shift_labels=shift, **label_smoother_kwargs(num_items_in_batch))
        else:
            if isinstance(outputs, dict) and "loss" not in outputs:
                raise ValueError(
                    "The model did not return a loss from the inputs, only the following keys: "
                    f"{','.join(outputs.keys())}. For reference, the inputs it received are {','.join(inputs.keys())}."
                )
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs[0]
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                raise ValueError(
                    "The model must return its loss first (a scalar tensor, as the first element of a tuple or the "
                    f"`loss` of a ModelOutput); got {type(loss).__name__}. Pass `labels` in the batch or a "
                    "`compute_loss_func`."
                )
        world = self.args.world_size
        if self.args.average_tokens_across_devices and (self.model_accepts_loss_kwargs or self.compute_loss_func):
            if num_items_in_batch is not None and world > 1:
                loss = loss * world
        return (loss, outputs) if return_outputs else loss

    def _prepare_inputs(self, inputs: Any) -> Any:
        if isinstance(inputs, Mapping) and len(inputs) == 0:
            raise ValueError("The batch received was empty, your model won't be able to train on it.")
        return inputs

    def training_step(self, model: nn.Module, inputs: dict, num_items_in_batch: Any = None) -> torch.Tensor:
        """Forward and backward of one micro-batch with HF's gradient-accumulation scaling. Overridable."""
        self._ensure_train_mode(model)
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        with self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        del inputs
        maybe_empty_device_cache(self.args, self.state.global_step)
        if self.loss_is_scaled_for_ga is not None:
            scaled = self.loss_is_scaled_for_ga
        else:
            scaled = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or (
                self.compute_loss_func is not None
            )
        if not scaled and self.current_gradient_accumulation_steps != 1:  # x / 1 is x: skip the op and its backward
            loss = loss / self.current_gradient_accumulation_steps
        self.accelerator.backward(loss)
        return loss.detach()

    def compute_loss_context_manager(self) -> contextlib.ExitStack:
        """HF's wrapper around the loss computation (Lightning's precision plugin does the autocasting)."""
        stack = contextlib.ExitStack()
        autocast = self.autocast_smart_context_manager()
        if not isinstance(autocast, contextlib.nullcontext):
            stack.enter_context(autocast)
        return stack

    def autocast_smart_context_manager(self, cache_enabled: bool | None = True) -> contextlib.AbstractContextManager:
        """A no-op, as in HF: the training step already runs under the precision plugin's autocast."""
        return contextlib.nullcontext()

    # ---- logging ----------------------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Append to `state.log_history` (with `epoch` and `step`) and fire `on_log`, as HF does (the Lightning
        loggers hear it there); Lightning's `callback_metrics` get the values too (`lightning_events`)."""
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        if self.args.include_num_input_tokens_seen != "no":
            logs["num_input_tokens_seen"] = self.state.num_input_tokens_seen
            if start_time is not None:
                tokens = self.state.num_input_tokens_seen - self._initial_num_input_tokens_seen
                logs.update(speed_metrics("train", start_time, num_tokens=tokens))
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.lightning_events.publish(logs, training_step=start_time is not None)
        self.control = self.callback_handler.on_log(self.args, self.state, self.control, logs)
