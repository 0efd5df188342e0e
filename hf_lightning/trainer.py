"""`hf_lightning.Trainer`: the `transformers.Trainer` API, with a `lightning.Trainer` running the loop.

The facade keeps HF's public surface (constructor, `train`, `evaluate`, `predict`, `save_model`, `log`, the
overridable hooks `compute_loss` / `training_step` / `prediction_step` / `get_*_dataloader` /
`create_optimizer` / `create_scheduler`, and the attributes users touch). It translates the arguments into a
`lightning.Trainer` (see `hf_lightning.translation`) and hands it `HFLightningModule`, which runs HF's
optimisation step. The HF side of the loop (`loop`), evaluation, checkpoints, Hub pushes (`hub`) and hyperparameter
search live in their own modules, mixed in here; `features` holds what `TrainingArguments` switches on around the loop
(activation checkpointing, `torch_compile`, NEFTune, device-cache emptying).
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
from lightning.pytorch.accelerators import CPUAccelerator
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
from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_MAPPING_NAMES
from transformers.trainer_callback import CallbackHandler, ExportableState
from transformers.trainer_pt_utils import (
    LabelSmoother,
    get_learning_rates,
    get_num_trainable_parameters,
    get_optimizer_group,
)
from transformers.trainer_utils import (
    TrainOutput,
    enable_full_determinism,
    find_executable_batch_size,
    has_length,
    set_seed,
    speed_metrics,
    suppress_progress_bars,
)
from transformers.utils import can_return_loss, find_labels

from hf_lightning import batch_size_finder, lr_finder, optimization
from hf_lightning import data as hf_data
from hf_lightning.batch_size_finder import BatchSizeResult
from hf_lightning.callbacks import (
    default_callbacks,
    is_lightning_callback,
    pop_lightning_callback,
    progress_callback,
    set_log_levels,
    split_callbacks,
)
from hf_lightning.checkpoints import TRAINER_STATE_NAME, CheckpointMixin
from hf_lightning.evaluation import EvaluationMixin
from hf_lightning.features import (
    LightningAccelerator,
    activate_neftune,
    compile_model,
    deactivate_neftune,
    enable_activation_checkpointing,
    maybe_empty_device_cache,
)
from hf_lightning.host_memory import keep_freed_host_memory
from hf_lightning.hp_search import HyperparameterSearchMixin
from hf_lightning.hub import HubMixin
from hf_lightning.launchers import starts_processes, train_in_started_processes
from hf_lightning.legacy_signatures import adapt_legacy_overrides
from hf_lightning.log_output import log_training_start, quiet_lightning, without_lightning_frames
from hf_lightning.loop import TrainingLoopMixin
from hf_lightning.lr_finder import LRFinderResult
from hf_lightning.memory_metrics import MemoryMetrics
from hf_lightning.module import HFLightningModule
from hf_lightning.preemption import pending_resume, preemption_handler
from hf_lightning.profiling import profiled_hf_steps, show_profiler_report
from hf_lightning.reporting import build_loggers, integration_loggers
from hf_lightning.strategies import fsdp_wrapper
from hf_lightning.throughput import ThroughputMeter
from hf_lightning.training_args import TrainingArguments, to_hf_lightning_args
from hf_lightning.translation import lightning_trainer_kwargs

logger = logging.getLogger(__name__)

# Headless base models (BertModel, LlamaModel ...) return hidden states, never a loss.
_BASE_MODEL_CLASS_NAMES = {
    name for value in MODEL_MAPPING_NAMES.values() for name in ((value,) if isinstance(value, str) else value)
}


class Trainer(HyperparameterSearchMixin, TrainingLoopMixin, EvaluationMixin, CheckpointMixin, HubMixin):
    """Drop-in replacement for `transformers.Trainer` whose training loop is run by Lightning."""

    loss_is_scaled_for_ga: bool | None = None

    # transformers' helpers for external use (functions of the trainer in `transformers.trainer_pt_utils`).
    get_learning_rates = get_learning_rates
    get_num_trainable_parameters = get_num_trainable_parameters
    get_optimizer_group = get_optimizer_group

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
        self.args = to_hf_lightning_args(args if args is not None else TrainingArguments(output_dir="tmp_trainer"))
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
        self.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs
        adapt_legacy_overrides(self, Trainer)
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
        self.lightning_module: HFLightningModule | None = None
        self.throughput_meter: ThroughputMeter | None = None
        self.lr_find_result: LRFinderResult | None = None  # `auto_lr_find`'s range test (its curve, its suggestion)
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
        self._loss_shifts_labels = LOSS_MAPPING.get(getattr(base, "loss_type", None)) is ForCausalLMLoss and not (
            getattr(config, "is_encoder_decoder", False)
        )
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
        if args.eval_strategy != "no" and self.eval_dataset is None:
            raise ValueError(
                f"You have set `args.eval_strategy` to {args.eval_strategy} but you didn't pass an `eval_dataset` to "
                "`Trainer`. Either set `args.eval_strategy` to `no` or pass an `eval_dataset`."
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
        # An empty `eval_dataset` is evaluated as transformers does (speed metrics, no loss); an empty training set
        # would only fail later, with a message about `max_steps`.
        if self.train_dataset is not None and has_length(self.train_dataset) and len(self.train_dataset) == 0:
            raise ValueError("`train_dataset` is empty: it has no samples to train on.")
        if self.train_dataset is not None and not has_length(self.train_dataset) and args.max_steps <= 0:
            raise ValueError(
                "The `train_dataset` does not implement __len__, so the number of training steps cannot be inferred; "
                "`max_steps` has to be specified."
            )

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
            loss = self.label_smoother(outputs, labels, shift_labels=shift, num_items_in_batch=num_items_in_batch)
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
        """Append to `state.log_history` (with `epoch` and `step`) and fire `on_log`, as HF does."""
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        if self.args.include_num_input_tokens_seen != "no":
            logs["num_input_tokens_seen"] = self.state.num_input_tokens_seen
            if start_time is not None:
                tokens = self.state.num_input_tokens_seen - self._initial_num_input_tokens_seen
                logs.update(speed_metrics("train", start_time, num_tokens=tokens))
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self.control = self.callback_handler.on_log(self.args, self.state, self.control, logs)

    # ---- tuning ------------------------------------------------------------------------------------------

    def lr_find(self, plot: bool | str = False, **options: Any) -> LRFinderResult:
        """Lightning's learning-rate range test on this job; the model, optimiser, RNG and `output_dir` are left as they
        were. `options`: `min_lr`, `max_lr`, `num_training`, `mode`, `early_stop_threshold` (see
        `hf_lightning.lr_finder`); `plot=True` draws the curve (inline in a notebook), a path saves it."""
        return lr_finder.lr_find(self, plot=plot, **options)

    def scale_batch_size(
        self, mode: str = "power", steps_per_trial: int = 3, init_val: int | None = None, max_trials: int = 25
    ) -> BatchSizeResult:
        """Search upward for the largest micro-batch that fits (Lightning's "power" / "binsearch" strategies) and
        the `gradient_accumulation_steps` that keep the effective batch; the job is left as it was (see
        `hf_lightning.batch_size_finder`). `auto_scale_batch_size` applies the result before training."""
        return batch_size_finder.scale_batch_size(self, mode, steps_per_trial, init_val, max_trials)

    def _apply_batch_size_search(self, resumed: TrainerState | None) -> None:
        """`auto_scale_batch_size`: train with the largest micro-batch that fits at the same effective batch; a resumed
        run takes the micro-batch its checkpoint was trained with."""
        args = self.args
        effective = args.per_device_train_batch_size * args.gradient_accumulation_steps
        if resumed is not None and resumed.train_batch_size:
            per_device = resumed.train_batch_size
        else:
            found = self.scale_batch_size(args.auto_scale_batch_size)
            per_device = found.per_device_train_batch_size
            logger.warning(
                "auto_scale_batch_size (%s): micro-batches up to %d fit (tried %s); training with "
                "per_device_train_batch_size=%d x gradient_accumulation_steps=%d (effective batch %d per device, as "
                "configured).",
                args.auto_scale_batch_size,
                found.max_fitting,
                found.trials,
                per_device,
                effective // per_device,
                effective,
            )
        if effective % per_device:
            raise ValueError(
                f"auto_scale_batch_size: the checkpoint's batch size {per_device} does not divide the effective batch "
                f"{effective} (per_device_train_batch_size x gradient_accumulation_steps)."
            )
        args.per_device_train_batch_size, args.gradient_accumulation_steps = per_device, effective // per_device
        self._train_batch_size = args.train_batch_size

    # ---- train -------------------------------------------------------------------------------------------

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
        **kwargs: Any,
    ) -> TrainOutput:
        """Train with HF semantics on a `lightning.Trainer`; returns HF's `TrainOutput`."""
        if kwargs:
            raise TypeError(f"train() got unexpected keyword arguments: {', '.join(kwargs)}.")
        if resume_from_checkpoint is None and self.args.checkpoint_on_preemption:
            resume_from_checkpoint = pending_resume(self.args.output_dir)  # left by a preempted run of this output_dir
        if resume_from_checkpoint is False:
            resume_from_checkpoint = None
        if starts_processes(self.args):  # ddp_spawn, ddp_fork, a notebook's DDP: train() runs in the started ones
            return train_in_started_processes(
                self,
                resume_from_checkpoint=resume_from_checkpoint,
                trial=trial,
                ignore_keys_for_eval=ignore_keys_for_eval,
            )
        self._memory_tracker.start_stage("train")
        args = self.args
        self.is_in_train = True
        self._ignore_keys_for_eval = ignore_keys_for_eval
        if self.model_init is not None:
            enable_full_determinism(args.seed) if args.full_determinism else set_seed(args.seed)
            self.model = self.model_wrapped = self.call_model_init(trial)
            self._inspect_model()
            self.optimizer, self.lr_scheduler = None, None
        enable_activation_checkpointing(self.model, args)
        if self.neftune_noise_alpha is not None:
            self.neftune_hook_handle = activate_neftune(self.model, self.neftune_noise_alpha)
        if self.preemption is not None:
            self.preemption.install()
        try:
            self._hp_search_setup(trial)
            resume_from_checkpoint = self._resolve_resume_checkpoint(resume_from_checkpoint)
            saved = None
            if resume_from_checkpoint is not None:
                self._load_from_checkpoint(resume_from_checkpoint)
                saved = TrainerState.load_from_json(os.path.join(resume_from_checkpoint, TRAINER_STATE_NAME))
                if saved.train_batch_size is not None and args.auto_find_batch_size:
                    self._train_batch_size = saved.train_batch_size
            if args.auto_scale_batch_size:
                self._apply_batch_size_search(saved)
            if args.auto_lr_find and saved is None:  # a resumed run keeps the rate its checkpoint was trained with
                self._apply_lr_find()
            inner_training_loop = find_executable_batch_size(
                self._inner_training_loop, self._train_batch_size, args.auto_find_batch_size
            )
            # Uploads during training keep huggingface_hub's progress bars out of the log, as in HF.
            with suppress_progress_bars() if args.push_to_hub else contextlib.nullcontext():
                output = inner_training_loop(args=args, resume_from_checkpoint=resume_from_checkpoint, trial=trial)
            self._finish_current_push()  # wait for the checkpoints' background uploads
        finally:
            if self.neftune_noise_alpha is not None:
                deactivate_neftune(self.model, self.neftune_hook_handle)
            if self.preemption is not None:
                self.preemption.uninstall()
            self.is_in_train = False
            self._memory_tracker.abandon_stage("train")  # still running only if training raised
        if self.preemption is not None:
            self.preemption.exit_if_preempted()
        return output

    def _apply_lr_find(self) -> None:
        """`auto_lr_find`: run the range test (with `lr_find_kwargs`) and train with its suggestion."""
        result = self.lr_find_result = self.lr_find(**(self.args.lr_find_kwargs or {}))
        if result.suggestion is None:
            logger.warning(
                "auto_lr_find: no suggestion (too few points); learning_rate stays %s.", self.args.learning_rate
            )
            return
        logger.warning(
            "auto_lr_find: learning_rate %s -> %s (suggested by the range test over %d steps).",
            self.args.learning_rate,
            result.suggestion,
            len(result.lrs),
        )
        self.args.learning_rate = result.suggestion

    def _inner_training_loop(
        self,
        batch_size: int | None = None,
        args: Any = None,
        resume_from_checkpoint: str | None = None,
        trial: Any = None,
    ) -> TrainOutput:
        """One training attempt at `batch_size` (`auto_find_batch_size` retries smaller ones on out-of-memory)."""
        if args.auto_find_batch_size:
            self._train_batch_size = batch_size
            sharded = fsdp_wrapper(self.model_wrapped)  # kept: FSDP has flattened the model's parameters into it
            self.model_wrapped = sharded if sharded is not None and sharded.module is self.model else self.model
        self.lightning_trainer = self._build_lightning_trainer()
        lt = self.lightning_trainer
        args._lightning_processes = (lt.world_size, lt.global_rank, lt.local_rank)
        train_dataloader = self.get_train_dataloader()
        plan = self._step_plan(train_dataloader)
        self._plan = plan
        self.state = TrainerState(stateful_callbacks=self._stateful_callbacks())
        self.state.is_hyper_param_search = trial is not None
        self.state.train_batch_size = self._train_batch_size
        self.state.compute_steps(args, plan["max_steps"])
        epochs_trained, skip_batches = 0, 0
        if resume_from_checkpoint is not None:
            epochs_trained, skip_batches = self._restore_trainer_state(resume_from_checkpoint, plan)
        self.state.init_training_references(self, plan["max_steps"], plan["num_train_epochs"], trial)
        self._epochs_trained = epochs_trained

        if self._created_lr_scheduler:
            self.lr_scheduler, self._created_lr_scheduler = None, False
        self.create_optimizer()
        if self.model_wrapped is self.model:
            self.model_wrapped = compile_model(self.model, args)
        self.create_scheduler(num_training_steps=plan["max_steps"])
        if resume_from_checkpoint is not None:
            self._load_optimizer_and_scheduler(resume_from_checkpoint)
            self._load_scaler(resume_from_checkpoint)
        for attr in ("model", "optimizer", "lr_scheduler"):
            setattr(self.callback_handler, attr, getattr(self, attr))
        self.callback_handler.train_dataloader = train_dataloader
        num_examples = self.num_examples(train_dataloader) if has_length(train_dataloader) else None
        resumed = (epochs_trained, self.state.global_step, skip_batches) if resume_from_checkpoint else None
        log_training_start(args, plan, self._train_batch_size, num_examples, self.model, resumed)

        window_loader = hf_data.AccumulationWindowLoader(
            train_dataloader,
            args.gradient_accumulation_steps,
            self._count_items,
            plan["steps_in_epoch"],
            first_epoch=epochs_trained,
        )
        window_loader.skip_batches = skip_batches
        if resume_from_checkpoint is not None and skip_batches > 0:
            window_loader.on_skip_done = lambda: self._load_rng_state(resume_from_checkpoint)
        self._resume_rng_checkpoint = resume_from_checkpoint if skip_batches == 0 else None
        self.throughput_meter = (
            ThroughputMeter(getattr(self.model, "main_input_name", "input_ids"), self.state.total_flos)
            if args.log_throughput
            else None
        )
        self.lightning_module = HFLightningModule(self.model, self)
        self._train_start_time = None
        if epochs_trained >= plan["num_train_epochs"]:  # resumed at the very end: HF runs no epoch
            self._on_loop_train_start()
            self._on_loop_train_end()
        else:
            on_cpu = isinstance(self.lightning_trainer.accelerator, CPUAccelerator)
            with (
                warnings.catch_warnings(),
                keep_freed_host_memory(args.keep_freed_host_memory and on_cpu),
                quiet_lightning(),
                profiled_hf_steps(self, self.lightning_trainer.profiler),
            ):
                # HF sets train mode in training_step, after Lightning's check
                warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training")
                try:
                    self.lightning_trainer.fit(self.lightning_module, train_dataloaders=window_loader)
                except Exception as exc:  # the user's and HF's frames, not Lightning's loop: as long as HF's
                    raise exc.with_traceback(without_lightning_frames(exc.__traceback__.tb_next))  # noqa: B904
        return self._train_output

    def _build_lightning_trainer(self) -> pl.Trainer:
        kwargs = lightning_trainer_kwargs(self.args, self.model, self.lightning_callbacks, self.report_loggers)
        set_log_levels(self.args)
        show_profiler_report(self.args)
        with warnings.catch_warnings(), quiet_lightning():
            warnings.filterwarnings("ignore", message=".*treespec.*")
            return pl.Trainer(**kwargs)
