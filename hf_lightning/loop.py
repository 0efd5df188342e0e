"""The HF side of each Lightning training event: step budget, loss tracking, log / evaluate / save.

`HFLightningModule` runs the optimisation; at each Lightning event (set-up, train/epoch start and end, micro-batch,
optimiser step) it calls the matching member of the `HFLoop` protocol here (`on_lightning_train_start`,
`on_micro_batch_end`, `on_optimizer_step_end` ...), which does what `transformers.Trainer`'s `_inner_training_loop` /
`_run_epoch` / `_maybe_log_save_evaluate` / `_finalize_training` do at that point. Mixed into `HFTrainingLoop`, so the
same code runs behind both doors: `hf_lightning.Trainer` (which builds the `lightning.Trainer` and prepares training
before `fit`) and a `lightning.Trainer` the user owns (the loop is attached to it in `setup` and prepares training at
`on_train_start`, once Lightning's loader exists).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Mapping
from operator import attrgetter
from typing import Any

import torch
from transformers import PreTrainedModel, TrainerState
from transformers.trainer_utils import TrainOutput, has_length, speed_metrics

from hf_lightning import data as hf_data
from hf_lightning.compat import train_loss_steps, train_mode_at_train_start, train_speed_counts
from hf_lightning.features import compile_model
from hf_lightning.lightning_events import LightningEvents
from hf_lightning.log_output import log_training_completed, log_training_start

logger = logging.getLogger(__name__)

# `train` implementations that do nothing but set `training` flags when the mode does not change.
_NO_OP_TRAIN = (torch.nn.Module.train, PreTrainedModel.train)
_IN_TRAINING_MODE = attrgetter("training")  # read in C by `map`: no generator frame per module and step


class TrainingLoopMixin:
    """HF's loop bookkeeping, driven by `HFLightningModule`."""

    # HF's end of the current epoch has run (`on_lightning_epoch_end`; cleared when the next epoch starts). A Lightning
    # checkpoint written then (by a callback hearing the epoch's last HF evaluation, or a `ModelCheckpoint` saving at
    # Lightning's epoch end) keeps it (`LightningCheckpointMixin`): Lightning, resuming it, replays its own end of that
    # epoch, where HF's (callbacks, log, evaluation, save) is not run again.
    epoch_end_done: bool = False

    def floating_point_ops(self, inputs: dict) -> int:
        main_input = getattr(self.model, "main_input_name", "input_ids")
        if isinstance(inputs, Mapping) and main_input in inputs and hasattr(self.model, "num_parameters"):
            return 6 * inputs[main_input].numel() * self._num_non_embedding_parameters()
        return 0

    def _num_non_embedding_parameters(self) -> int:
        """`model.num_parameters(exclude_embeddings=True)`, counted once per model and training run: HF recounts
        it every micro-batch, a walk over all modules that costs more than a tiny model's step."""
        cached = getattr(self, "_flos_param_count", None)
        if cached is None or cached[0] is not self.model:
            cached = self._flos_param_count = (self.model, self.model.num_parameters(exclude_embeddings=True))
        return cached[1]

    def _ensure_train_mode(self, model: torch.nn.Module) -> None:
        """HF's per-micro-batch `model.train()`, skipped when it would change nothing: every module is already in
        training mode and none overrides `train` (`PreTrainedModel.train` only acts on a mode change). The call
        walks the whole module tree (~0.2 ms a step)."""
        cached = getattr(self, "_train_mode_modules", None)
        if cached is None or cached[0] is not model:
            modules = list(model.modules())
            plain = all(type(m).train in _NO_OP_TRAIN for m in modules)
            cached = self._train_mode_modules = (model, modules if plain else None)
        modules = cached[1]
        if modules is None or not all(map(_IN_TRAINING_MODE, modules)):
            model.train()

    def store_flos(self) -> None:
        flos = self.current_flos
        if self.lightning_trainer is not None and self.lightning_trainer.world_size > 1:
            flos = float(
                self.lightning_trainer.strategy.reduce(torch.tensor(flos, dtype=torch.float64), reduce_op="sum")
            )
        self.state.total_flos += flos
        self.current_flos = 0

    def _count_items(self, batches: list) -> Any:
        if self.model_accepts_loss_kwargs or self.compute_loss_func is not None:
            return hf_data.count_label_items(batches, self._loss_shifts_labels)
        return None

    def _training_budget(self) -> tuple[int, float]:
        """(max_steps, num_train_epochs) of the run: HF's arguments, except that on a `lightning.Trainer` the user
        owns, its `max_steps` (else, when `args.max_steps` is unset, its `max_epochs`) is the budget. The facade
        maps a `max_steps`/`max_epochs` in `lightning_trainer_kwargs` into the arguments (`lightning_kwargs`)."""
        args = self.args
        trainer = self.lightning_trainer
        if self.owns_lightning_trainer or trainer is None:
            return args.max_steps, args.num_train_epochs
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return trainer.max_steps, args.num_train_epochs
        if args.max_steps < 0 and trainer.max_epochs is not None and trainer.max_epochs > 0:
            return -1, trainer.max_epochs
        return args.max_steps, args.num_train_epochs

    def _step_plan(self, dataloader: torch.utils.data.DataLoader) -> dict[str, int]:
        """HF's `set_initial_training_values`: step budget, epochs and nominal sample count.

        As in transformers, only a negative `max_steps` means "from the epochs": `max_steps=0` keeps a budget of
        zero steps over `num_train_epochs` epochs, and `DefaultFlowCallback` stops the run after its first step."""
        args = self.args
        ga = args.gradient_accumulation_steps
        budget_steps, budget_epochs = self._training_budget()
        max_steps = budget_steps
        total_batch_size = self.get_total_train_batch_size(args)
        len_dataloader = len(dataloader) if has_length(dataloader) else None
        if len_dataloader:
            steps_per_epoch = max(len_dataloader // ga + int(len_dataloader % ga > 0), 1)
            if max_steps < 0:
                max_steps = math.ceil(budget_epochs * steps_per_epoch)
            if budget_steps > 0:
                num_train_epochs = max_steps // steps_per_epoch + int(max_steps % steps_per_epoch > 0)
                num_train_samples = max_steps * total_batch_size
            else:
                num_train_epochs = math.ceil(budget_epochs)
                num_train_samples = self.num_examples(dataloader) * budget_epochs
        elif budget_steps > 0:
            num_train_epochs = sys.maxsize
            steps_per_epoch = max_steps
            num_train_samples = budget_steps * total_batch_size
        else:
            raise ValueError(
                f"args.max_steps must be set to a positive value if dataloader does not have a length, was {max_steps}"
            )
        return {
            "max_steps": max_steps,
            "num_train_epochs": num_train_epochs,
            "steps_per_epoch": steps_per_epoch,
            "num_train_samples": num_train_samples,
            "steps_in_epoch": len_dataloader if len_dataloader is not None else max_steps * ga,
        }

    # ---- the HF side of a Lightning fit: set-up ------------------------------------------------------------

    def _prepare_training(
        self, train_dataloader: Any, resume_from_checkpoint: str | None, trial: Any
    ) -> tuple[int, int]:
        """HF's `_inner_training_loop` prologue: the step plan, a fresh `TrainerState` (or the one of the checkpoint
        folder resumed from), the optimiser (kept when it exists) and schedule over the plan, their resumed states.
        Returns (epochs already trained, batches of the next epoch to skip)."""
        args = self.args
        plan = self._step_plan(train_dataloader)
        self._plan = plan
        self.state = TrainerState(stateful_callbacks=self._stateful_callbacks())
        self.state.epoch = 0  # HF's train start (the default of `TrainerState.epoch` was None before 5.3)
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
        self._resume_rng_checkpoint = resume_from_checkpoint if skip_batches == 0 else None
        return epochs_trained, skip_batches

    def _connect_lightning_trainer(self, trainer: Any) -> None:
        """Both doors: the `lightning.Trainer` running the loop, its process layout, and what of it hears HF's events
        (its loggers get every HF log, its callbacks HF's evaluations, its progress bar replaces HF's)."""
        self.lightning_trainer = trainer
        self.args.use_lightning_processes(trainer.world_size, trainer.global_rank, trainer.local_rank)
        self.lightning_events = LightningEvents(trainer, self.callback_handler)

    def attach_lightning(self, module: Any, stage: str) -> None:
        """`HFLightningModule.setup`: the module is the one Lightning runs. On a `lightning.Trainer` the user owns,
        the loop joins that trainer: processing class and collator from its datamodule (saved with checkpoints),
        the weights of `args.resume_from_checkpoint` when fitting from an HF checkpoint folder."""
        self.lightning_module = module
        if self.owns_lightning_trainer:
            return
        trainer = module.trainer
        self._connect_lightning_trainer(trainer)
        datamodule = trainer.datamodule
        if self.processing_class is None:
            self.processing_class = getattr(datamodule, "processing_class", None)
        collator = getattr(datamodule, "data_collator", None)
        if collator is not None:
            self.data_collator = collator
        self._resume_folder = None
        if stage == "fit" and self.args.resume_from_checkpoint:
            if trainer.ckpt_path is not None:
                raise ValueError(
                    f"Both `args.resume_from_checkpoint`={self.args.resume_from_checkpoint!r} and "
                    f"`fit(ckpt_path={trainer.ckpt_path!r})` were given; resume from one of them."
                )
            resume = self.args.resume_from_checkpoint
            self._resume_folder = self._resolve_resume_checkpoint(True if resume in (True, "True", "true") else resume)
            self._load_from_checkpoint(self._resume_folder)

    def configure_optimizer(self) -> torch.optim.Optimizer:
        """`HFLightningModule.configure_optimizers`: HF's optimiser (the one given or built before `fit`, else built
        now, after the strategy has set the model up)."""
        return self.create_optimizer()

    def _prepare_lightning_door(self) -> None:
        """A `lightning.Trainer` the user owns, at `on_train_start`: HF's training set-up over Lightning's loader
        (`HFDataModule`'s accumulation windows), resuming the HF checkpoint folder of `args.resume_from_checkpoint`."""
        loader = self.lightning_trainer.train_dataloader
        if not isinstance(loader, hf_data.AccumulationWindowLoader):
            raise TypeError(
                "`HFLightningModule` trains on HF's gradient-accumulation windows: fit it with an `HFDataModule` (or "
                f"a train loader of `hf_data.AccumulationWindowLoader`), got {type(loader).__name__}."
            )
        if loader.gradient_accumulation_steps != self.args.gradient_accumulation_steps:
            raise ValueError(
                f"The train loader groups {loader.gradient_accumulation_steps} batches per window but the module's "
                f"`gradient_accumulation_steps` is {self.args.gradient_accumulation_steps}: give the `HFDataModule` "
                "the module's `TrainingArguments`."
            )
        if self.args.eval_strategy != "no" and self._lightning_val_dataloader() is None and self.eval_dataset is None:
            raise ValueError(
                f"`args.eval_strategy`={self.args.eval_strategy!r} but the datamodule has no evaluation data: give "
                "`HFDataModule` an `eval_dataset` or set `eval_strategy='no'`."
            )
        self.is_in_train = True
        self._ignore_keys_for_eval = None
        self._memory_tracker.start_stage("train")
        resume = self._resume_folder
        epochs_trained, skip_batches = self._prepare_training(loader.loader, resume, None)
        loader.count_items = self._count_items
        if resume is not None:
            rng = (lambda: self._load_rng_state(resume)) if skip_batches > 0 else None
            loader.resume_at(epochs_trained, skip_batches, on_skip_done=rng)

    # ---- hooks called by HFLightningModule (the HF side of each Lightning event) ---------------------

    def on_lightning_train_start(self) -> None:
        """Lightning's `on_train_start` (after Lightning restored a `.ckpt`): HF's `on_train_begin`."""
        if not self.owns_lightning_trainer:
            self._prepare_lightning_door()
        self._apply_lightning_checkpoint()
        self._on_loop_train_start()

    def _on_loop_train_start(self) -> None:
        args = self.args
        self._train_start_time = time.time()
        self._initial_num_input_tokens_seen = self.state.num_input_tokens_seen
        self._initial_global_step = self.state.global_step
        self._tr_loss = torch.tensor(0.0, device=self.lightning_module.device)
        self._total_loss_scalar = 0.0
        self._globalstep_last_logged = self.state.global_step
        resumed, self._resumed_logging = getattr(self, "_resumed_logging", None), None
        if resumed:  # a `.ckpt` taken between two logs: the next log averages the same steps as without the resume
            self._tr_loss += resumed["tr_loss"]
            self._globalstep_last_logged = resumed["globalstep_last_logged"]
        self._last_grad_norm = None
        self._last_learning_rate = None
        self._flos_param_count = self._train_mode_modules = None
        # A mid-epoch `.ckpt` resume starts without `on_train_epoch_start`: the epoch is Lightning's (which, resuming a
        # checkpoint that closed an epoch, may already be the next one: the loader then starts that one afresh).
        self._epoch = self._epochs_trained + self.lightning_trainer.current_epoch
        loader = self.lightning_trainer.train_dataloader
        if isinstance(loader, hf_data.AccumulationWindowLoader):
            loader.start_epoch(self._epoch)
        self._micro_step = -1
        if train_mode_at_train_start():
            self.model.train()
        self.model.zero_grad()
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        if args.eval_on_start:
            self._evaluate(self._trial, self._ignore_keys_for_eval, skip_scheduler=True)

    def on_lightning_epoch_start(self, lightning_epoch: int) -> None:
        """Lightning's `on_train_epoch_start`: HF's `on_epoch_begin` (the resumed RNG state first). The window loader
        draws HF's permutation of this epoch, also when Lightning restarts its iteration after a `.ckpt` resume."""
        self._epoch = self._epochs_trained + lightning_epoch
        loader = self.lightning_trainer.train_dataloader
        if isinstance(loader, hf_data.AccumulationWindowLoader):
            loader.start_epoch(self._epoch)
        if self._resume_rng_checkpoint is not None:
            self._load_rng_state(self._resume_rng_checkpoint)
            self._resume_rng_checkpoint = None
        self._micro_step = -1
        self.epoch_end_done = False
        self._last_grad_norm = self._last_learning_rate = None
        self.control = self.callback_handler.on_epoch_begin(self.args, self.state, self.control)

    def on_micro_batch_start(self, batch: hf_data.MicroBatch) -> None:
        """Before a micro-batch's forward: its window's size (HF's loss scaling), HF's `on_step_begin` on the first
        micro-batch of a window."""
        self.current_gradient_accumulation_steps = batch.window_size
        if batch.step % self.args.gradient_accumulation_steps == 0:
            self.control = self.callback_handler.on_step_begin(self.args, self.state, self.control)

    def on_micro_batch_end(self, batch: hf_data.MicroBatch, loss: torch.Tensor) -> None:
        """After a micro-batch's backward: the loss, flos and tokens tracked; HF's `on_substep_end` inside a window."""
        self._track_micro_batch(batch.inputs, loss)
        self._micro_step = batch.step
        if not batch.is_last_in_window:
            self.control = self.callback_handler.on_substep_end(self.args, self.state, self.control)

    def _track_micro_batch(self, inputs: dict, loss: torch.Tensor) -> None:
        args = self.args
        # HF tests `torch.isnan(loss) or torch.isinf(loss)`: the same host sync, as one scalar read.
        if args.logging_nan_inf_filter and not math.isfinite(loss.item()):
            self._tr_loss += self._tr_loss / (1 + self.state.global_step - self._globalstep_last_logged)
        else:
            self._tr_loss += loss
        self.current_flos += float(self.floating_point_ops(inputs))
        self._track_num_input_tokens(inputs)

    def _track_num_input_tokens(self, inputs: dict) -> None:
        mode = self.args.include_num_input_tokens_seen
        if mode == "no" or not isinstance(inputs, Mapping):
            return
        main_input_name = getattr(self.model, "main_input_name", "input_ids")
        if main_input_name not in inputs:
            return
        if mode == "non_padding" and "attention_mask" in inputs:
            tokens = inputs["attention_mask"].sum()
        else:
            tokens = torch.tensor(inputs[main_input_name].numel())
        if self.lightning_trainer.world_size > 1:
            tokens = self.lightning_trainer.strategy.reduce(tokens.to(self.lightning_module.device), reduce_op="sum")
        self.state.num_input_tokens_seen += int(tokens.item())

    def on_optimizer_step_end(self, grad_norm: Any, learning_rate: float) -> None:
        """After an optimiser step (gradients zeroed): HF's `on_step_end`, then log / evaluate / save."""
        self.state.global_step += 1
        self.state.epoch = self._epoch + (self._micro_step + 1) / self._plan["steps_in_epoch"]
        self._last_grad_norm, self._last_learning_rate = grad_norm, learning_rate
        self.control = self.callback_handler.on_step_end(self.args, self.state, self.control)
        self._maybe_log_save_evaluate(grad_norm, learning_rate)
        self._apply_stop_flags()

    def _apply_stop_flags(self, epoch_end: bool = False) -> None:
        """HF's stop is Lightning's: `trainer.should_stop`. On a `lightning.Trainer` the user owns, a stop its own
        budget makes there anyway (`max_steps`, `max_epochs`) is left to it: Lightning's tuners rerun the loop after
        it, which a raised `should_stop` would end at once."""
        if not self.control.should_training_stop:
            return
        trainer = self.lightning_trainer
        if not self.owns_lightning_trainer:
            steps_done = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step
            epochs_done = (
                epoch_end and trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch + 1
            )
            if steps_done or epochs_done:
                return
        trainer.should_stop = True

    def on_lightning_batch_end(self) -> bool:
        """Lightning's `on_train_batch_end`: an HF evaluation of this batch's step reaches Lightning's validation-end
        hooks now (`EarlyStopping`, `ModelCheckpoint` ...), where Lightning runs its own validation. Returns whether
        the epoch stops here (HF checks its stop flags after each micro-batch)."""
        if self.lightning_events.pending:
            self._end_lightning_validation()
        control = self.control
        return control.should_epoch_stop or control.should_training_stop

    def _end_lightning_validation(self) -> None:
        """Lightning's validation-end hooks for the HF evaluation just done; a stop they ask for is HF's too."""
        if self.lightning_events.validation_end():
            self.control.should_training_stop = True
            self._apply_stop_flags()

    def on_lightning_epoch_end(self) -> None:
        """Lightning's `on_train_epoch_end` (before its monitoring callbacks): HF's `on_epoch_end`, then log /
        evaluate / save."""
        if not self.epoch_end_done:  # else a `.ckpt` written during this epoch's end is resumed: HF's part ran
            self.epoch_end_done = True
            if self._micro_step < 0:
                logger.warning("There seems not to be a single sample in your epoch_iterator, stopping training.")
                self.control.should_training_stop = True
            self.control = self.callback_handler.on_epoch_end(self.args, self.state, self.control)
            self._maybe_log_save_evaluate(self._last_grad_norm, self._last_learning_rate)
            if self.lightning_events.pending:
                self._end_lightning_validation()
        if self._epoch + 1 >= self._plan["num_train_epochs"]:
            self.control.should_training_stop = True
        self._apply_stop_flags(epoch_end=True)

    def _maybe_log_save_evaluate(self, grad_norm: Any, learning_rate: float | None) -> None:
        """HF's step-boundary order: log, then evaluate (and decide the best), then save."""
        if self.control.should_log and self.state.global_step > self._globalstep_last_logged:
            tr_loss = self._tr_loss
            if self.lightning_trainer.world_size > 1:
                tr_loss = self.lightning_trainer.strategy.reduce(tr_loss.clone(), reduce_op="mean")
            tr_loss_scalar = tr_loss.item()
            self._tr_loss -= self._tr_loss
            logs: dict[str, float] = {"loss": tr_loss_scalar / (self.state.global_step - self._globalstep_last_logged)}
            if grad_norm is not None:
                logs["grad_norm"] = grad_norm.item() if isinstance(grad_norm, torch.Tensor) else grad_norm
            logs["learning_rate"] = learning_rate if learning_rate is not None else self._get_learning_rate()
            self._total_loss_scalar += tr_loss_scalar
            self._globalstep_last_logged = self.state.global_step
            self.store_flos()
            if self.throughput_meter is not None:  # `log_throughput`
                logs.update(self.throughput_meter.measure(self.state.total_flos))
            self.log(logs, self._train_start_time)
        metrics = None
        if self.control.should_evaluate:
            metrics = self._evaluate(self._trial, self._ignore_keys_for_eval)
            is_new_best = self._determine_best_metric(metrics, self._trial)
            if self.args.save_strategy == "best":
                self.control.should_save = is_new_best
        if not self.owns_lightning_trainer:  # a Lightning callback saves there (`HFCheckpoint`, `ModelCheckpoint`)
            self.control.should_save = False
        if self.control.should_save:
            self._save_checkpoint(self.model, self._trial)
            self.control = self.callback_handler.on_save(self.args, self.state, self.control)

    def on_lightning_train_end(self) -> None:
        """Lightning's `on_train_end`: HF's summary log, best model, `on_train_end`; the `TrainOutput`."""
        self._on_loop_train_end()
        if not self.owns_lightning_trainer:  # `hf_lightning.Trainer.train` ends its own training
            self.is_in_train = False

    def _on_loop_train_end(self) -> None:
        log_training_completed()
        self._total_loss_scalar += self._tr_loss.item()
        steps = self.state.global_step - self._initial_global_step
        train_loss = self._total_loss_scalar / max(train_loss_steps(self.state.global_step, steps), 0.001)
        num_samples, num_steps = train_speed_counts(self._plan["num_train_samples"], self.state.max_steps, steps)
        metrics = speed_metrics("train", self._train_start_time, num_samples=num_samples, num_steps=num_steps)
        self.store_flos()
        metrics["total_flos"] = self.state.total_flos
        metrics["train_loss"] = train_loss
        self._memory_tracker.stop_stage("train", metrics)
        self.log(metrics)
        self._finish_best_model_and_rotation()
        self.control = self.callback_handler.on_train_end(self.args, self.state, self.control)
        self._train_output = TrainOutput(self.state.global_step, train_loss, metrics)
