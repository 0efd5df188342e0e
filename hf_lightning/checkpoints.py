"""HF checkpoints: `checkpoint-{global_step}/` folders, written atomically, rotated, resumed from.

What lands on disk is what `transformers.Trainer` writes (`model.safetensors` + config via `save_pretrained`,
the processing class, `training_args.bin`, `optimizer.pt`, `scheduler.pt`, `rng_state[_{rank}].pth`,
`trainer_state.json`), so HF's own Trainer and `from_pretrained` read it. Each checkpoint is first written to
a `tmp-checkpoint-N` folder and renamed once complete: a crash mid-save never leaves a folder that
`get_last_checkpoint` (and so resume) would pick.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import warnings
from typing import Any

import numpy as np
import safetensors.torch
import torch
import torch.distributed as dist
from transformers import PreTrainedModel, TrainerState
from transformers.trainer_pt_utils import log_metrics, metrics_format, save_metrics, save_state
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, rotate_checkpoints, sort_checkpoints

logger = logging.getLogger(__name__)

TRAINER_STATE_NAME = "trainer_state.json"
TRAINING_ARGS_NAME = "training_args.bin"
OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
SCALER_NAME = "scaler.pt"
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
TMP_PREFIX = "tmp-"


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _peft_classes() -> tuple[type, ...]:
    try:
        from peft import PeftModel

        return (PreTrainedModel, PeftModel)
    except ImportError:
        return (PreTrainedModel,)


def save_model_files(model: torch.nn.Module, output_dir: str, state_dict: dict | None = None) -> None:
    """`save_pretrained` for HF/PEFT models (safetensors, sharded when large); a plain module's state dict
    goes to `model.safetensors`."""
    os.makedirs(output_dir, exist_ok=True)
    if isinstance(model, _peft_classes()):
        model.save_pretrained(output_dir, state_dict=state_dict)
        return
    state_dict = model.state_dict() if state_dict is None else state_dict
    state_dict = {k: v.contiguous() for k, v in state_dict.items()}
    safetensors.torch.save_file(state_dict, os.path.join(output_dir, SAFE_WEIGHTS_NAME), metadata={"format": "pt"})


def load_model_files(model: torch.nn.Module, checkpoint: str) -> None:
    """Load the weights `save_model_files` wrote (single or sharded safetensors, PEFT adapters)."""
    from transformers.modeling_utils import load_sharded_checkpoint

    if hasattr(model, "load_adapter") and os.path.isfile(os.path.join(checkpoint, "adapter_model.safetensors")):
        model.load_adapter(checkpoint, model.active_adapter, is_trainable=True)
        return
    single = os.path.join(checkpoint, SAFE_WEIGHTS_NAME)
    if os.path.isfile(single):
        state = safetensors.torch.load_file(single, device="cpu")
        result = model.load_state_dict(state, strict=False)
        tied = set(getattr(model, "_tied_weights_keys", None) or [])
        missing = [k for k in result.missing_keys if k not in tied]
        if missing:
            logger.warning("Missing keys when loading %s: %s", checkpoint, missing)
    elif os.path.isfile(os.path.join(checkpoint, SAFE_WEIGHTS_INDEX_NAME)):
        load_sharded_checkpoint(model, checkpoint, strict=False)
    else:
        raise ValueError(f"Can't find a valid checkpoint at {checkpoint}")


class CheckpointMixin:
    """Saving, rotation, best-model tracking and resume for the Trainer."""

    log_metrics = log_metrics
    metrics_format = metrics_format
    save_metrics = save_metrics
    save_state = save_state

    # ---- saving -------------------------------------------------------------------------------------

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the model (and processing class, training args) so `from_pretrained` can load it."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        state_dict = self._full_state_dict()
        if self.args.should_save:
            self._save(output_dir, state_dict=state_dict)
        _barrier()

    def _full_state_dict(self) -> dict | None:
        """The full (unsharded) state dict when a sharding strategy holds the weights, else None."""
        lt = getattr(self, "lightning_trainer", None)
        strategy = getattr(lt, "strategy", None)
        if strategy is None or type(strategy).__name__ not in ("FSDPStrategy", "DeepSpeedStrategy"):
            return None
        full = strategy.lightning_module_state_dict()
        return {k[len("model.") :]: v for k, v in full.items() if k.startswith("model.")}

    def _save(self, output_dir: str, state_dict: dict | None = None) -> None:
        save_model_files(self.model, output_dir, state_dict)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        elif getattr(self.data_collator, "tokenizer", None) is not None:
            self.data_collator.tokenizer.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _get_output_dir(self, trial: Any) -> str:
        if self.hp_search_backend is not None and trial is not None:
            run_name = self.hp_name(trial) if self.hp_name is not None else f"run-{trial.number}"
            return os.path.join(self.args.output_dir, run_name)
        return self.args.output_dir

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """Write `checkpoint-{global_step}` atomically (temp folder, then rename), then rotate."""
        folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        run_dir = self._get_output_dir(trial)
        final_dir = os.path.join(run_dir, folder)
        tmp_dir = os.path.join(run_dir, TMP_PREFIX + folder)
        if self.args.should_save:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        _barrier()
        self.store_flos()
        try:
            self.save_model(tmp_dir, _internal_call=True)
            if self.state.best_global_step:
                best_dir = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}")
                if os.path.exists(best_dir) or self.state.best_global_step == self.state.global_step:
                    self.state.best_model_checkpoint = best_dir
            if not self.args.save_only_model:
                self._save_optimizer_and_scheduler(tmp_dir)
                self._save_rng_state(tmp_dir)
            if self.args.should_save:
                self._update_stateful_callbacks()
                self.state.save_to_json(os.path.join(tmp_dir, TRAINER_STATE_NAME))
            _barrier()
            if self.args.should_save:
                if os.path.exists(final_dir):
                    shutil.rmtree(final_dir)
                os.replace(tmp_dir, final_dir)
        except OSError as exc:
            if self.args.should_save:
                shutil.rmtree(tmp_dir, ignore_errors=True)
            raise OSError(
                f"Saving checkpoint {final_dir} failed ({exc}); the previous checkpoints in {run_dir} are kept."
            ) from exc
        _barrier()
        if self.args.should_save:
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )

    def _update_stateful_callbacks(self) -> None:
        from transformers.trainer_callback import ExportableState

        for cb in [cb for cb in self.callback_handler.callbacks + [self.control] if isinstance(cb, ExportableState)]:
            name = cb.__class__.__name__
            if isinstance(self.state.stateful_callbacks.get(name), list):
                self.state.stateful_callbacks[name].append(cb.state())
            else:
                self.state.stateful_callbacks[name] = cb.state()

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if self.args.should_save:
            torch.save(self.optimizer.state_dict(), os.path.join(output_dir, OPTIMIZER_NAME))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))
            scaler = getattr(getattr(self.lightning_trainer, "precision_plugin", None), "scaler", None)
            if scaler is not None:
                torch.save(scaler.state_dict(), os.path.join(output_dir, SCALER_NAME))

    def _save_rng_state(self, output_dir: str) -> None:
        states = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
        if torch.cuda.is_available():
            distributed = self.args.world_size > 1
            states["cuda"] = torch.cuda.random.get_rng_state_all() if distributed else torch.cuda.random.get_rng_state()
        os.makedirs(output_dir, exist_ok=True)
        name = "rng_state.pth" if self.args.world_size <= 1 else f"rng_state_{self.args.process_index}.pth"
        torch.save(states, os.path.join(output_dir, name))

    def _determine_best_metric(self, metrics: dict[str, float], trial: Any) -> bool:
        """Track `best_metric` / `best_global_step` for `metric_for_best_model` (HF's rule)."""
        if self.args.metric_for_best_model is None:
            return False
        metric_to_check = self.args.metric_for_best_model
        if not metric_to_check.startswith("eval_"):
            metric_to_check = f"eval_{metric_to_check}"
        if metric_to_check not in metrics:
            raise KeyError(
                f"The `metric_for_best_model` training argument is set to '{metric_to_check}', which is not found in "
                f"the evaluation metrics. The available evaluation metrics are: {list(metrics.keys())}. Consider "
                "changing the `metric_for_best_model` via the TrainingArguments."
            )
        value = metrics[metric_to_check]
        operator = np.greater if self.args.greater_is_better else np.less
        if self.state.best_metric is None:
            self.state.best_metric = float("-inf") if self.args.greater_is_better else float("inf")
        if operator(value, self.state.best_metric):
            self.state.best_metric = value
            if self.args.save_strategy in ("steps", "epoch", "best"):
                self.state.best_global_step = self.state.global_step
            return True
        return False

    def _finish_best_model_and_rotation(self) -> None:
        """End of training: load the best model back, and with `save_total_limit=1` keep only the best."""
        if self.args.load_best_model_at_end and self.state.best_model_checkpoint is not None:
            self._load_best_model()
        run_dir = self._get_output_dir(self._trial)
        if self.args.should_save and self.state.best_model_checkpoint is not None and self.args.save_total_limit == 1:
            for checkpoint in sort_checkpoints(run_dir, best_model_checkpoint=self.state.best_model_checkpoint):
                if not os.path.samefile(checkpoint, self.state.best_model_checkpoint):
                    shutil.rmtree(checkpoint, ignore_errors=True)

    def _load_best_model(self) -> None:
        logger.info("Loading best model from %s (score: %s).", self.state.best_model_checkpoint, self.state.best_metric)
        load_model_files(self.model, self.state.best_model_checkpoint)

    # ---- resuming -----------------------------------------------------------------------------------

    def _resolve_resume_checkpoint(self, resume_from_checkpoint: str | bool | None) -> str | None:
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No valid checkpoint found in output directory ({self.args.output_dir})")
        if resume_from_checkpoint is not None and not os.path.isdir(resume_from_checkpoint):
            raise ValueError(f"`resume_from_checkpoint`: {resume_from_checkpoint} is not a checkpoint folder.")
        return resume_from_checkpoint

    def _load_from_checkpoint(self, checkpoint: str) -> None:
        load_model_files(self.model, checkpoint)

    def _restore_trainer_state(self, checkpoint: str, plan: dict[str, int]) -> tuple[int, int]:
        """Load `trainer_state.json` and callback states; return (epochs trained, batches to skip)."""
        path = os.path.join(checkpoint, TRAINER_STATE_NAME)
        if not os.path.isfile(path):
            return 0, 0
        self.state = TrainerState.load_from_json(path)
        if self.state.best_model_checkpoint is not None and not os.path.isdir(self.state.best_model_checkpoint):
            self.state.best_model_checkpoint = None
        self._load_callback_state()
        epochs_trained = int(self.state.global_step // plan["steps_per_epoch"])
        skip = 0
        if not self.args.ignore_data_skip:
            skip = (self.state.global_step % plan["steps_per_epoch"]) * self.args.gradient_accumulation_steps
        return epochs_trained, skip

    def _load_callback_state(self) -> None:
        if not self.args.restore_callback_states_from_checkpoint:
            return
        from transformers.trainer_callback import ExportableState

        not_found = []
        for name, states in self.state.stateful_callbacks.items():
            states = states if isinstance(states, list) else [states]
            matches = [cb for cb in self.callback_handler.callbacks + [self.control] if type(cb).__name__ == name]
            if not matches:
                not_found.append(name)
            for cb, saved in zip(matches, states):
                if isinstance(cb, ExportableState):
                    for key, value in saved.get("args", {}).items():
                        setattr(cb, key, value)
                    for key, value in saved.get("attributes", {}).items():
                        setattr(cb, key, value)
        if not_found:
            logger.warning("Checkpoint has states for callbacks not in this Trainer: %s", not_found)

    def _load_optimizer_and_scheduler(self, checkpoint: str) -> None:
        opt_path = os.path.join(checkpoint, OPTIMIZER_NAME)
        sched_path = os.path.join(checkpoint, SCHEDULER_NAME)
        if os.path.isfile(opt_path) and os.path.isfile(sched_path):
            self.optimizer.load_state_dict(torch.load(opt_path, map_location="cpu", weights_only=True))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.lr_scheduler.load_state_dict(torch.load(sched_path, weights_only=True))

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        name = "rng_state.pth" if self.args.world_size <= 1 else f"rng_state_{self.args.process_index}.pth"
        path = os.path.join(checkpoint, name)
        if not os.path.isfile(path):
            logger.info("Didn't find an RNG file in %s; reproducibility is not guaranteed.", checkpoint)
            return
        states = torch.load(path, weights_only=False)
        random.setstate(states["python"])
        np.random.set_state(states["numpy"])
        torch.random.set_rng_state(states["cpu"])
        if torch.cuda.is_available() and "cuda" in states:
            if self.args.world_size > 1:
                torch.cuda.random.set_rng_state_all(states["cuda"])
            else:
                torch.cuda.random.set_rng_state(states["cuda"])
