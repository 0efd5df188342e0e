"""The HF side of each Lightning training event: step budget, loss tracking, log / evaluate / save.

`HFLightningModule` runs the optimisation; at each Lightning event (train/epoch start and end, micro-batch,
optimiser step) it calls the matching `_on_loop_*` hook here, which does what `transformers.Trainer`'s
`_inner_training_loop` / `_run_epoch` / `_maybe_log_save_evaluate` / `_finalize_training` do at that point.
Mixed into `hf_lightning.Trainer`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Mapping
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.trainer_utils import TrainOutput, has_length, speed_metrics

from hf_lightning import data as hf_data
from hf_lightning.log_output import log_training_completed

logger = logging.getLogger(__name__)

# `train` implementations that do nothing but set `training` flags when the mode does not change.
_NO_OP_TRAIN = (torch.nn.Module.train, PreTrainedModel.train)


class TrainingLoopMixin:
    """HF's loop bookkeeping, driven by `HFLightningModule`."""

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
        if modules is None or not all(m.training for m in modules):
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

    def _step_plan(self, dataloader: torch.utils.data.DataLoader) -> dict[str, int]:
        """HF's `set_initial_training_values`: step budget, epochs and nominal sample count.

        As in transformers, only a negative `max_steps` means "from the epochs": `max_steps=0` keeps a budget of
        zero steps over `num_train_epochs` epochs, and `DefaultFlowCallback` stops the run after its first step."""
        args = self.args
        ga = args.gradient_accumulation_steps
        max_steps = args.max_steps
        total_batch_size = self._train_batch_size * ga * args.world_size
        len_dataloader = len(dataloader) if has_length(dataloader) else None
        if len_dataloader:
            steps_per_epoch = max(len_dataloader // ga + int(len_dataloader % ga > 0), 1)
            if max_steps < 0:
                max_steps = math.ceil(args.num_train_epochs * steps_per_epoch)
            if args.max_steps > 0:
                num_train_epochs = max_steps // steps_per_epoch + int(max_steps % steps_per_epoch > 0)
                num_train_samples = max_steps * total_batch_size
            else:
                num_train_epochs = math.ceil(args.num_train_epochs)
                num_train_samples = self.num_examples(dataloader) * args.num_train_epochs
        elif args.max_steps > 0:
            num_train_epochs = sys.maxsize
            steps_per_epoch = max_steps
            num_train_samples = args.max_steps * total_batch_size
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

    # ---- hooks called by HFLightningModule (the HF side of each Lightning event) ---------------------

    def _on_loop_train_start(self) -> None:
        args = self.args
        self._train_start_time = time.time()
        self._initial_num_input_tokens_seen = self.state.num_input_tokens_seen
        self._initial_global_step = self.state.global_step
        self._tr_loss = torch.tensor(0.0, device=self.lightning_module.device)
        self._total_loss_scalar = 0.0
        self._globalstep_last_logged = self.state.global_step
        self._last_grad_norm = None
        self._last_learning_rate = None
        self._flos_param_count = self._train_mode_modules = None
        self.model.zero_grad()
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        if args.eval_on_start:
            self._evaluate(self._trial, self._ignore_keys_for_eval, skip_scheduler=True)

    def _on_loop_epoch_start(self, lightning_epoch: int) -> None:
        self._epoch = self._epochs_trained + lightning_epoch
        if self._resume_rng_checkpoint is not None:
            self._load_rng_state(self._resume_rng_checkpoint)
            self._resume_rng_checkpoint = None
        self._micro_step = -1
        self._last_grad_norm = self._last_learning_rate = None
        self.control = self.callback_handler.on_epoch_begin(self.args, self.state, self.control)

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

    def _on_loop_step_end(self, grad_norm: Any, learning_rate: float) -> None:
        self.state.global_step += 1
        self.state.epoch = self._epoch + (self._micro_step + 1) / self._plan["steps_in_epoch"]
        self._last_grad_norm, self._last_learning_rate = grad_norm, learning_rate
        self.control = self.callback_handler.on_step_end(self.args, self.state, self.control)
        self._maybe_log_save_evaluate(grad_norm, learning_rate)
        self._apply_stop_flags()

    def _apply_stop_flags(self) -> None:
        if self.control.should_training_stop:
            self.lightning_trainer.should_stop = True

    def _on_loop_epoch_end(self) -> None:
        if self._micro_step < 0:
            logger.warning("There seems not to be a single sample in your epoch_iterator, stopping training.")
            self.control.should_training_stop = True
        self.control = self.callback_handler.on_epoch_end(self.args, self.state, self.control)
        self._maybe_log_save_evaluate(self._last_grad_norm, self._last_learning_rate)
        if self._epoch + 1 >= self._plan["num_train_epochs"]:
            self.control.should_training_stop = True
        self._apply_stop_flags()

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
        if self.control.should_save:
            self._save_checkpoint(self.model, self._trial)
            self.control = self.callback_handler.on_save(self.args, self.state, self.control)

    def _on_loop_train_end(self) -> None:
        log_training_completed()
        self._total_loss_scalar += self._tr_loss.item()
        steps = self.state.global_step - self._initial_global_step
        train_loss = self._total_loss_scalar / max(steps, 0.001)
        metrics = speed_metrics(
            "train",
            self._train_start_time,
            num_samples=self._plan["num_train_samples"] * steps / max(self.state.max_steps, 1),
            num_steps=steps,
        )
        self.store_flos()
        metrics["total_flos"] = self.state.total_flos
        metrics["train_loss"] = train_loss
        self._memory_tracker.stop_stage("train", metrics)
        self.log(metrics)
        self._finish_best_model_and_rotation()
        self.control = self.callback_handler.on_train_end(self.args, self.state, self.control)
        self._train_output = TrainOutput(self.state.global_step, train_loss, metrics)
