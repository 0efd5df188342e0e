"""HF checkpoints: `checkpoint-{global_step}/` folders, written atomically, rotated, resumed from.

What lands on disk is what `transformers.Trainer` writes (`model.safetensors` + config via `save_pretrained`,
the processing class, `training_args.bin` (a `transformers.TrainingArguments`, see `saved_args`), `optimizer.pt`,
`scheduler.pt`, `scaler.pt`, `rng_state[_{rank}].pth`, `trainer_state.json`), so HF's own Trainer and
`from_pretrained` read it and we read HF's. Each checkpoint is
first written to a `tmp-checkpoint-N` folder, synced and renamed once complete: a crash mid-save never leaves a
folder that `get_last_checkpoint` (and so resume) would pick, and a failed save keeps the previous checkpoints.
Resume loads everything back with `torch.load(weights_only=True)` and skips checkpoint folders HF left
half-written (no `trainer_state.json`, which HF writes last).
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import warnings
from typing import Any

import numpy as np
import safetensors.torch
import torch
import torch.distributed as dist
from transformers import PreTrainedModel, TrainerControl, TrainerState
from transformers.trainer_pt_utils import (
    log_metrics,
    metrics_format,
    save_metrics,
    save_state,
    set_rng_state_for_device,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, load_sharded_checkpoint
from transformers.utils import ADAPTER_SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME
from transformers.utils.import_utils import check_torch_load_is_safe

from hf_lightning.compat import (
    best_model_save_strategies,
    compare_trainer_and_checkpoint_args,
    rotate_checkpoints,
    safe_globals,
    sort_checkpoints,
)
from hf_lightning.evaluation import metric_for_best_model_value
from hf_lightning.log_output import hf_logger, published_paths
from hf_lightning.saved_args import hf_args_for_saving
from hf_lightning.strategies import (
    full_optimizer_state_dict,
    full_state_dict,
    has_engine_checkpoint,
    is_sharded_strategy,
    load_full_optimizer_state_dict,
    save_engine_checkpoint,
)

logger = logging.getLogger(__name__)

# The file names transformers' Trainer writes; it keeps them in `transformers.trainer` (a costly import), so they are
# restated here and pinned by `tests/test_canaries.py`. The weight file names are read from `transformers.utils`.
TRAINER_STATE_NAME = "trainer_state.json"
TRAINING_ARGS_NAME = "training_args.bin"

OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
SCALER_NAME = "scaler.pt"
TMP_PREFIX = "tmp-"
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def rng_state_name(world_size: int, rank: int) -> str:
    """The file of a rank's RNG states in a checkpoint, as transformers names it."""
    return "rng_state.pth" if world_size <= 1 else f"rng_state_{rank}.pth"


class CheckpointSaveError(OSError):
    """A checkpoint could not be written; nothing was published and the previous checkpoints are kept."""


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _peft_classes() -> tuple[type, ...]:
    try:
        from peft import PeftModel

        return (PreTrainedModel, PeftModel)
    except ImportError:
        return (PreTrainedModel,)


def _fsync_tree(path: str) -> None:
    """Flush every file of `path` and the folder itself to disk (so the rename publishes complete data)."""
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(root)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - filesystems that refuse directory fsync
        pass
    finally:
        os.close(fd)


def is_complete_checkpoint(folder: str) -> bool:
    """A checkpoint folder is complete once its `trainer_state.json` exists (both trainers write it last)."""
    return os.path.isfile(os.path.join(folder, TRAINER_STATE_NAME))


def last_complete_checkpoint(folder: str) -> str | None:
    """`get_last_checkpoint`, skipping `checkpoint-N` folders a crashed (non-atomic) save left incomplete."""
    if not os.path.isdir(folder):
        return None
    steps = sorted(
        (int(m.group(1)), name)
        for name in os.listdir(folder)
        if (m := _CHECKPOINT_RE.match(name)) and os.path.isdir(os.path.join(folder, name))
    )
    for _, name in reversed(steps):
        path = os.path.join(folder, name)
        if is_complete_checkpoint(path):
            return path
        logger.warning("Skipping %s: it has no %s (an interrupted save).", path, TRAINER_STATE_NAME)
    return None


def is_lightning_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a Lightning checkpoint file (`ModelCheckpoint`, `save_checkpoint`), not an HF folder."""
    return os.path.isfile(path)


def save_model_files(model: torch.nn.Module, output_dir: str, state_dict: dict | None = None) -> None:
    """`save_pretrained` for HF/PEFT models (safetensors, sharded when large); a plain module's state dict
    goes to `model.safetensors`."""
    os.makedirs(output_dir, exist_ok=True)
    if isinstance(model, _peft_classes()):
        model.save_pretrained(output_dir, state_dict=state_dict)
        return
    logger.info("Trainer.model is not a `PreTrainedModel`, only saving its state dict.")
    state_dict = model.state_dict() if state_dict is None else state_dict
    state_dict = {k: v.contiguous() for k, v in state_dict.items()}
    safetensors.torch.save_file(state_dict, os.path.join(output_dir, SAFE_WEIGHTS_NAME), metadata={"format": "pt"})


def save_model_folder(
    output_dir: str,
    model: torch.nn.Module,
    args: Any,
    processing_class: Any = None,
    data_collator: Any = None,
    state_dict: dict | None = None,
) -> None:
    """What HF's `Trainer._save` writes: the weights (`save_model_files`), the processing class (else the collator's
    tokenizer) and `training_args.bin`. Shared by `Trainer.save_model` and the `HFCheckpoint` callback."""
    save_model_files(model, output_dir, state_dict)
    if processing_class is not None:
        processing_class.save_pretrained(output_dir)
    elif getattr(data_collator, "tokenizer", None) is not None:
        data_collator.tokenizer.save_pretrained(output_dir)
    save_training_args(args, output_dir)


def save_training_args(args: Any, output_dir: str) -> None:
    """`output_dir/training_args.bin`, as HF writes it: a `transformers.TrainingArguments` (`saved_args`)."""
    torch.save(hf_args_for_saving(args), os.path.join(output_dir, TRAINING_ARGS_NAME))


def load_model_files(model: torch.nn.Module, checkpoint: str) -> None:
    """Load the weights `save_model_files` (or HF) wrote: single or sharded safetensors, PEFT adapters."""
    single = os.path.join(checkpoint, SAFE_WEIGHTS_NAME)
    if os.path.isfile(single):
        result = model.load_state_dict(safetensors.torch.load_file(single, device="cpu"), strict=False)
    elif os.path.isfile(os.path.join(checkpoint, SAFE_WEIGHTS_INDEX_NAME)):
        result = load_sharded_checkpoint(model, checkpoint, strict=False)
    elif hasattr(model, "load_adapter") and os.path.isfile(os.path.join(checkpoint, ADAPTER_SAFE_WEIGHTS_NAME)):
        active = getattr(model, "active_adapters", None) or ["default"]
        model.load_adapter(checkpoint, active[0], is_trainable=True)
        return
    else:
        raise ValueError(f"Can't find a valid checkpoint at {checkpoint}")
    ignored = set(getattr(model, "_keys_to_ignore_on_save", None) or [])
    # Tied parameters (lm_head <- embeddings ...) are not saved by `save_pretrained`; they are not missing.
    tied = set(getattr(model, "_tied_weights_keys", None) or []) | ignored
    if ignored and set(result.missing_keys) == ignored:
        model.tie_weights()
    elif missing := [k for k in result.missing_keys if k not in tied]:
        logger.warning("There were missing keys in the checkpoint model loaded: %s.", missing)
    if result.unexpected_keys:
        logger.warning("There were unexpected keys in the checkpoint model loaded: %s.", result.unexpected_keys)


def _torch_load(path: str, map_location: Any = None) -> Any:
    check_torch_load_is_safe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location=map_location, weights_only=True)


class CheckpointMixin:
    """Saving, rotation, best-model tracking and resume for the Trainer."""

    log_metrics = log_metrics
    metrics_format = metrics_format
    save_metrics = save_metrics
    save_state = save_state

    # Whether the latest evaluation improved `metric_for_best_model`: HF's `save_strategy="best"` trigger, which
    # `HFCheckpoint` reads on a Lightning trainer the user owns (transformers before 5.4 records no `best_global_step`
    # under "best", so the state cannot say it).
    last_evaluation_found_new_best: bool = False

    # ---- saving -------------------------------------------------------------------------------------

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the model (and processing class, training args) so `from_pretrained` can load it."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        state_dict = self._full_state_dict()
        if self.args.should_save:
            self._save(output_dir, state_dict=state_dict)
        _barrier()
        if self.args.push_to_hub and not _internal_call:  # a user's save is pushed, as in HF
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def _full_state_dict(self) -> dict | None:
        """The full (unsharded) state dict when a sharding strategy holds the weights (gathered by every rank,
        materialised on rank 0), else None."""
        strategy = getattr(getattr(self, "lightning_trainer", None), "strategy", None)
        if strategy is None or getattr(strategy, "model", None) is None:
            return None
        return full_state_dict(strategy)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        hf_logger.info(f"Saving model checkpoint to {output_dir}")
        save_model_folder(output_dir, self.model, self.args, self.processing_class, self.data_collator, state_dict)

    def _get_output_dir(self, trial: Any) -> str:
        if self.hp_search_backend is not None and trial is not None:
            run_name = self.hp_name(trial) if self.hp_name is not None else f"run-{trial.number}"
            return os.path.join(self.args.output_dir, run_name)
        return self.args.output_dir

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """Write `checkpoint-{global_step}` into `tmp-checkpoint-{global_step}`, publish it by rename, rotate."""
        if self.hp_search_backend is None and trial is None:
            self.store_flos()
        self._write_checkpoint_folder(self._get_output_dir(trial), self.args.save_total_limit)

    def save_checkpoint_folder(self, run_dir: str | None = None, save_total_limit: int | None = None) -> str:
        """Write `checkpoint-{global_step}/` into `run_dir` (default `output_dir`) now, exactly as the HF loop saves at
        `save_strategy` (a collective: every rank calls it), then fire HF's `on_save`; `HFCheckpoint` calls this.
        Returns the folder."""
        self.store_flos()
        self.control.should_save = True  # as when the HF flow saves (the flag is part of the saved state)
        run_dir = run_dir if run_dir is not None else self.args.output_dir
        limit = save_total_limit if save_total_limit is not None else self.args.save_total_limit
        final_dir = self._write_checkpoint_folder(run_dir, limit)
        self.control = self.callback_handler.on_save(self.args, self.state, self.control)
        return final_dir

    def _write_checkpoint_folder(self, run_dir: str, save_total_limit: int | None) -> str:
        folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        final_dir = os.path.join(run_dir, folder)
        tmp_dir = os.path.join(run_dir, TMP_PREFIX + folder)
        should_save = self.args.should_save
        previous_best = self.state.best_model_checkpoint
        if should_save:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        _barrier()
        try:
            with published_paths(tmp_dir, final_dir):  # the save messages name the folder being published
                self._write_checkpoint(tmp_dir, run_dir)
            _barrier()
            if should_save:
                self._publish_checkpoint(tmp_dir, final_dir)
        except BaseException as exc:
            self.state.best_model_checkpoint = previous_best
            if should_save:
                shutil.rmtree(tmp_dir, ignore_errors=True)
            if not isinstance(exc, Exception):
                raise
            error = CheckpointSaveError(
                f"Could not save checkpoint {final_dir} ({type(exc).__name__}: {exc}). Nothing was published there; "
                f"the previous checkpoints in {run_dir} are kept and `resume_from_checkpoint=True` resumes from them."
            )
            error.errno = getattr(exc, "errno", None)
            raise error from exc
        _barrier()
        if self.args.push_to_hub:
            self._push_from_checkpoint(final_dir)
        if should_save:
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        return final_dir

    def _write_checkpoint(self, output_dir: str, run_dir: str) -> None:
        """Everything HF's `_save_checkpoint` writes, in HF's order, into `output_dir`."""
        self.save_model(output_dir, _internal_call=True)
        if self.args.save_strategy in best_model_save_strategies() and self.state.best_global_step:
            best_dir = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}")
            # The folder being written only exists under its temporary name until it is published.
            if os.path.exists(best_dir) or self.state.best_global_step == self.state.global_step:
                self.state.best_model_checkpoint = best_dir
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(output_dir)
            self._save_scaler(output_dir)
            self._save_rng_state(output_dir)
        if self.args.should_save:
            self._update_stateful_callbacks()
            self.state.save_to_json(os.path.join(output_dir, TRAINER_STATE_NAME))

    @staticmethod
    def _publish_checkpoint(tmp_dir: str, final_dir: str) -> None:
        """Atomically move a fully written `tmp_dir` to `final_dir` (replacing an older save of the same step)."""
        _fsync_tree(tmp_dir)
        stale = None
        if os.path.exists(final_dir):
            stale = os.path.join(os.path.dirname(final_dir), TMP_PREFIX + "old-" + os.path.basename(final_dir))
            shutil.rmtree(stale, ignore_errors=True)
            os.replace(final_dir, stale)
        try:
            os.replace(tmp_dir, final_dir)
        except OSError:
            if stale is not None:
                os.replace(stale, final_dir)
            raise
        _fsync_dir(os.path.dirname(final_dir))
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)

    def _update_stateful_callbacks(self) -> None:
        for cb in self._stateful_callbacks():
            name = cb.__class__.__name__
            if isinstance(self.state.stateful_callbacks.get(name), list):
                self.state.stateful_callbacks[name].append(cb.state())
            else:
                self.state.stateful_callbacks[name] = cb.state()

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        strategy = getattr(getattr(self, "lightning_trainer", None), "strategy", None)
        engine_saved = save_engine_checkpoint(strategy, output_dir)  # DeepSpeed: each rank's ZeRO partition, as HF
        state = full_optimizer_state_dict(strategy, self.optimizer)  # a collective under FSDP
        if not self.args.should_save:
            return
        if not engine_saved:
            torch.save(
                state if state is not None else self.optimizer.state_dict(), os.path.join(output_dir, OPTIMIZER_NAME)
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))

    def _grad_scaler(self) -> Any:
        return getattr(getattr(getattr(self, "lightning_trainer", None), "precision_plugin", None), "scaler", None)

    def _save_scaler(self, output_dir: str) -> None:
        scaler = self._grad_scaler()
        if scaler is not None and self.args.should_save:
            torch.save(scaler.state_dict(), os.path.join(output_dir, SCALER_NAME))

    def _rng_file(self, checkpoint: str) -> str:
        return os.path.join(checkpoint, rng_state_name(self.args.world_size, self.args.process_index))

    def _rng_states(self) -> dict[str, Any]:
        """This process's RNG states as HF saves them: python, numpy, torch CPU and, when present, CUDA."""
        states = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
        if torch.cuda.is_available():
            distributed = self.args.world_size > 1
            states["cuda"] = torch.cuda.random.get_rng_state_all() if distributed else torch.cuda.random.get_rng_state()
        return states

    def _save_rng_state(self, output_dir: str) -> None:
        states = self._rng_states()
        os.makedirs(output_dir, exist_ok=True)
        torch.save(states, self._rng_file(output_dir))

    # ---- best model -----------------------------------------------------------------------------------

    def _determine_best_metric(self, metrics: dict[str, float], trial: Any) -> bool:
        """Track `best_metric` / `best_global_step` for `metric_for_best_model` (HF's rule); also kept in
        `last_evaluation_found_new_best`."""
        self.last_evaluation_found_new_best = False
        if self.args.metric_for_best_model is None:
            return False
        value = metric_for_best_model_value(self.args, metrics)
        operator = np.greater if self.args.greater_is_better else np.less
        if self.state.best_metric is None:
            self.state.best_metric = float("-inf") if self.args.greater_is_better else float("inf")
        if operator(value, self.state.best_metric):
            self.state.best_metric = value
            if self.args.save_strategy in best_model_save_strategies():
                self.state.best_global_step = self.state.global_step
            self.last_evaluation_found_new_best = True
        return self.last_evaluation_found_new_best

    def _finish_best_model_and_rotation(self) -> None:
        """End of training: load the best model back, and with `save_total_limit=1` keep only the best."""
        if self.args.load_best_model_at_end and self.state.best_model_checkpoint is not None:
            self._load_best_model()
        run_dir = self._get_output_dir(self._trial)
        if self.args.should_save and self.state.best_model_checkpoint is not None and self.args.save_total_limit == 1:
            for checkpoint in sort_checkpoints(run_dir, best_model_checkpoint=self.state.best_model_checkpoint):
                if not os.path.samefile(checkpoint, self.state.best_model_checkpoint):
                    hf_logger.info(f"Deleting older checkpoint [{checkpoint}] due to args.save_total_limit")
                    shutil.rmtree(checkpoint, ignore_errors=True)

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        hf_logger.info(f"Loading best model from {best} (score: {self.state.best_metric}).")
        try:
            load_model_files(self.model, best)
        except ValueError:
            logger.warning(
                "Could not locate the best model in %s; if you train on several nodes, set `save_on_each_node`.", best
            )

    # ---- resuming -----------------------------------------------------------------------------------

    def _resolve_resume_checkpoint(self, resume_from_checkpoint: str | bool | None) -> str | None:
        """`True` -> the last complete checkpoint of `output_dir`; a path must be a complete checkpoint."""
        if resume_from_checkpoint is None or resume_from_checkpoint is False:
            return None
        if resume_from_checkpoint is True:
            found = last_complete_checkpoint(self.args.output_dir)
            if found is None:
                raise ValueError(f"No valid checkpoint found in output directory ({self.args.output_dir})")
            return found
        path = os.fspath(resume_from_checkpoint)
        if is_lightning_checkpoint(path):
            return path
        if not os.path.isdir(path):
            raise ValueError(
                f"`resume_from_checkpoint`: {path} is not a checkpoint folder (nor a Lightning `.ckpt` file)."
            )
        if not is_complete_checkpoint(path):
            raise ValueError(
                f"`resume_from_checkpoint`: {path} has no {TRAINER_STATE_NAME}, so it is not a complete training "
                "checkpoint (an interrupted save, or a folder written by `save_model`)."
            )
        return path

    def _load_from_checkpoint(self, checkpoint: str) -> None:
        hf_logger.info(f"Loading model from {checkpoint}.")
        load_model_files(self.model, checkpoint)

    def _restore_trainer_state(self, checkpoint: str, plan: dict[str, int]) -> tuple[int, int]:
        """Load `trainer_state.json` and callback states; return (epochs trained, batches to skip)."""
        path = os.path.join(checkpoint, TRAINER_STATE_NAME)
        if not os.path.isfile(path):
            return 0, 0
        self.state = TrainerState.load_from_json(path)
        if self.state.best_model_checkpoint is not None and not os.path.isdir(self.state.best_model_checkpoint):
            logger.warning(
                "The best checkpoint %s recorded in the resumed state does not exist anymore. Ignoring it.",
                self.state.best_model_checkpoint,
            )
            self.state.best_model_checkpoint = None
        compare_trainer_and_checkpoint_args(self.args, self.state)
        self._load_callback_state()
        epochs_trained = int(self.state.global_step // plan["steps_per_epoch"])
        skip = 0
        if not self.args.ignore_data_skip:
            skip = (self.state.global_step % plan["steps_per_epoch"]) * self.args.gradient_accumulation_steps
        return epochs_trained, skip

    def _load_callback_state(self) -> None:
        """HF's rule: rebuild each saved callback from its `args`, set its `attributes`, move it to the end."""
        if not self.args.restore_callback_states_from_checkpoint:
            return
        not_found, new_callbacks = [], []
        original = self.callback_handler.callbacks + [self.control]
        for name, saved in self.state.stateful_callbacks.items():
            saved = saved if isinstance(saved, list) else [saved]
            matches = [cb for cb in original if type(cb).__name__ == name]
            if not matches:
                not_found.append(name)
                continue
            for cb, data in zip(matches, saved):
                new_cb = type(cb)(**data.get("args", {}))
                for key, value in data.get("attributes", {}).items():
                    setattr(new_cb, key, value)
                if isinstance(cb, TrainerControl):
                    self.control = new_cb
                else:
                    new_callbacks.append(new_cb)
                self.callback_handler.remove_callback(type(new_cb))
        if not_found:
            logger.warning(
                "Checkpoint included callbacks not included in current configuration. Ignoring. (%s)",
                ", ".join(not_found),
            )
        for cb in new_callbacks:
            self.callback_handler.add_callback(cb)

    def _load_optimizer_and_scheduler(self, checkpoint: str) -> None:
        opt_path = os.path.join(checkpoint, OPTIMIZER_NAME)
        sched_path = os.path.join(checkpoint, SCHEDULER_NAME)
        engine_state = not os.path.isfile(opt_path) and has_engine_checkpoint(checkpoint)
        if not ((os.path.isfile(opt_path) or engine_state) and os.path.isfile(sched_path)):
            return
        if engine_state:  # DeepSpeed's own partitions: the engine loads them once it exists
            self._pending_optimizer_state = checkpoint
        else:
            # On the CPU: Lightning's strategy moves the optimizer state to the device with the model.
            state = _torch_load(opt_path, map_location="cpu")
            if is_sharded_strategy(getattr(getattr(self, "lightning_trainer", None), "strategy", None)):
                # A full (gathered) state is sharded onto the optimizer once the strategy has wrapped the model.
                self._pending_optimizer_state = state
            else:
                self.optimizer.load_state_dict(state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.lr_scheduler.load_state_dict(_torch_load(sched_path))

    def load_pending_optimizer_state(self) -> None:
        """`HFLightningModule.on_train_start`: shard a resumed full optimizer state onto the (now wrapped) model's
        optimizer (FSDP), or have the DeepSpeed engine load its checkpoint."""
        state = getattr(self, "_pending_optimizer_state", None)
        if state is None:
            return
        self._pending_optimizer_state = None
        load_full_optimizer_state_dict(self.lightning_trainer.strategy, self.optimizer, state)

    def _load_scaler(self, checkpoint: str | None) -> None:
        """Restore the AMP grad scaler (call once the Lightning precision plugin exists)."""
        scaler = self._grad_scaler()
        if checkpoint is None or scaler is None or not os.path.isfile(os.path.join(checkpoint, SCALER_NAME)):
            return
        scaler.load_state_dict(_torch_load(os.path.join(checkpoint, SCALER_NAME)))

    def _load_rng_state(self, checkpoint: str | None) -> None:
        """Restore python/numpy/torch (and CUDA) RNG states, loaded with `weights_only=True`."""
        if checkpoint is None:
            return
        path = self._rng_file(checkpoint)
        if not os.path.isfile(path):
            logger.info("Didn't find an RNG file in %s; reproducibility is not guaranteed.", checkpoint)
            return
        with safe_globals():
            states = _torch_load(path)
        self._set_rng_states(states)

    def _set_rng_states(self, states: dict[str, Any]) -> None:
        """Restore what `_rng_states` returned."""
        random.setstate(states["python"])
        np.random.set_state(states["numpy"])
        torch.random.set_rng_state(states["cpu"])
        if torch.cuda.is_available() and "cuda" in states:
            set_rng_state_for_device("CUDA", torch.cuda, states, self.args.world_size > 1)
