"""The HF state in Lightning's checkpoints: what a `.ckpt` carries so that a run resumes from it as from an HF folder.

A Lightning checkpoint (`ModelCheckpoint`, `trainer.save_checkpoint`, from either door) holds Lightning's own state
(module weights, optimizer, precision plugin scaler, loops with the resumable window loader, callbacks).
`HFLightningModule.on_save_checkpoint` adds the HF side under `hf_lightning_state`: the `TrainerState`
(`trainer_state.json`'s content: log history, best metric, flos, stateful HF callbacks), the HF schedule, this
process's RNG states (python, numpy, torch CPU and CUDA, as `rng_state.pth` holds them) and the loss accumulated since
the last log. `fit(ckpt_path=...)` (or `hf_lightning.Trainer.train(resume_from_checkpoint="....ckpt")`) restores it at
the train start, when the schedule and the data loader exist; the RNG states once the loader has skipped what the
checkpoint trained on, as HF restores them.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
from transformers import TrainerState

from hf_lightning.compat import compare_trainer_and_checkpoint_args

__all__ = ["LightningCheckpointMixin"]


def _plain_rng_states(states: dict[str, Any]) -> dict[str, Any]:
    """RNG states a Lightning checkpoint can hold: Lightning loads `.ckpt` files with `weights_only=True`, which
    refuses numpy arrays, so numpy's key array is stored as a list."""
    name, keys, pos, has_gauss, cached = states["numpy"]
    return {**states, "numpy": (name, keys.tolist(), pos, has_gauss, cached)}


def _numpy_rng_states(states: dict[str, Any]) -> dict[str, Any]:
    """`_plain_rng_states` undone."""
    name, keys, pos, has_gauss, cached = states["numpy"]
    return {**states, "numpy": (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)}


class LightningCheckpointMixin:
    """`lightning_checkpoint_state` / `load_lightning_checkpoint_state` of the `HFLoop` protocol, for the HF loop."""

    def lightning_checkpoint_state(self) -> dict[str, Any]:
        """What a Lightning checkpoint of the run must carry besides Lightning's own state (weights, optimizer, scaler,
        loops, callbacks) to resume it as HF does: the `TrainerState` (log history, best metric, flos, stateful
        callbacks, as `trainer_state.json`), the HF schedule, this process's RNG states (CPU and CUDA) and the loss
        accumulated since the last log (so the resumed log equals the uninterrupted one)."""
        self.store_flos()
        self._update_stateful_callbacks()
        scheduler = self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None
        training = getattr(self, "_tr_loss", None) is not None and self.is_in_train
        return {
            "trainer_state": dataclasses.asdict(self.state),
            "lr_scheduler": scheduler,
            "rng": _plain_rng_states(self._rng_states()),
            "logging": {
                "tr_loss": self._tr_loss.item(),
                "total_loss_scalar": self._total_loss_scalar,
                "globalstep_last_logged": self._globalstep_last_logged,
            }
            if training
            else None,
            "epoch_end_done": self.epoch_end_done,
        }

    def load_lightning_checkpoint_state(self, state: dict[str, Any]) -> None:
        """`fit(ckpt_path=...)`: keep the HF state of a Lightning checkpoint until training starts
        (`_apply_lightning_checkpoint`), when the schedule and the data loader it applies to exist."""
        self._lightning_checkpoint = dict(state)

    def _apply_lightning_checkpoint(self) -> None:
        """Restore the HF state of the Lightning checkpoint being resumed (Lightning has restored its own): the
        `TrainerState` and callback states, the schedule, the logging accumulators, and the RNG states - once the data
        loader has skipped what the checkpoint had trained on (at once when it skips nothing)."""
        saved = getattr(self, "_lightning_checkpoint", None)
        self._lightning_checkpoint = None
        if not saved:
            return
        known = {f.name for f in dataclasses.fields(TrainerState)}  # a checkpoint from another transformers
        restored = TrainerState(**{k: v for k, v in saved["trainer_state"].items() if k in known})
        if restored.train_batch_size is None:  # saved before training started (Lightning's tuners): no HF state yet
            self._set_rng_states(_numpy_rng_states(saved["rng"]))
            return
        self.state = restored
        compare_trainer_and_checkpoint_args(self.args, self.state)
        self._load_callback_state()
        self.state.init_training_references(
            self, self._plan["max_steps"], self._plan["num_train_epochs"], getattr(self, "_trial", None)
        )
        if saved.get("lr_scheduler") is not None and self.lr_scheduler is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.lr_scheduler.load_state_dict(saved["lr_scheduler"])
            if hasattr(self.lr_scheduler, "get_last_lr"):  # a schedule built after Lightning restored the optimizer
                for group, lr in zip(self.optimizer.param_groups, self.lr_scheduler.get_last_lr()):
                    group["lr"] = lr
        self._resumed_logging = saved.get("logging")
        self.epoch_end_done = bool(saved.get("epoch_end_done"))
        rng = saved.get("rng")
        rng = _numpy_rng_states(rng) if rng is not None else None
        loader = self.lightning_trainer.train_dataloader
        if rng is not None and getattr(loader, "skips_within_epoch", False):
            loader.on_skip_done = lambda: self._set_rng_states(rng)
        elif rng is not None:
            self._set_rng_states(rng)
        self._resume_rng_checkpoint = None
        if self.state.global_step >= self.state.max_steps:  # resumed at the very end: HF trains no further
            self.control.should_training_stop = True
            self.lightning_trainer.should_stop = True
