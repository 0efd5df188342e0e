"""`hf_lightning.Trainer`: the `transformers.Trainer` API, with a `lightning.Trainer` running the loop.

The facade is one of the two doors into the HF loop (`hf_lightning.hf_loop.HFTrainingLoop`: HF's constructor,
callbacks, data, optimiser, loss and step, logging, evaluation, checkpoints, RNG, Hub pushes); the other is a
`lightning.Trainer` the user owns (`HFLightningModule.from_args`). What the facade adds is HF's `train()`: it translates
the arguments into a `lightning.Trainer` (`hf_lightning.translation`), prepares the HF side of training (step plan,
state, optimiser, schedule, resume) and fits an `HFLightningModule` on HF's accumulation windows. Hyperparameter
search (`hp_search`), the learning-rate and batch-size searches (`lr_finder`, `batch_size_finder`), launchers that
start processes (`launchers`), preemption and what `TrainingArguments` switches on around the loop (`features`:
activation checkpointing, `torch_compile`, NEFTune) are mixed in or called here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.accelerators import CPUAccelerator
from transformers import TrainerState
from transformers.trainer_utils import (
    TrainOutput,
    enable_full_determinism,
    find_executable_batch_size,
    has_length,
    set_seed,
)

from hf_lightning import batch_size_finder, lr_finder
from hf_lightning import data as hf_data
from hf_lightning.batch_size_finder import BatchSizeResult
from hf_lightning.callbacks import set_log_levels
from hf_lightning.checkpoints import TRAINER_STATE_NAME, is_lightning_checkpoint
from hf_lightning.compat import suppress_progress_bars
from hf_lightning.features import activate_neftune, deactivate_neftune, enable_activation_checkpointing
from hf_lightning.hf_loop import HFTrainingLoop
from hf_lightning.host_memory import keep_freed_host_memory
from hf_lightning.hp_search import HyperparameterSearchMixin
from hf_lightning.launchers import starts_processes, train_in_started_processes
from hf_lightning.log_output import quiet_lightning, without_lightning_frames
from hf_lightning.lr_finder import LRFinderResult
from hf_lightning.module import HFLightningModule
from hf_lightning.preemption import pending_resume
from hf_lightning.profiling import profiled_hf_steps, show_profiler_report
from hf_lightning.strategies import fsdp_wrapper
from hf_lightning.throughput import ThroughputMeter
from hf_lightning.translation import lightning_trainer_kwargs

__all__ = ["Trainer"]

logger = logging.getLogger(__name__)


class Trainer(HyperparameterSearchMixin, HFTrainingLoop):
    """Drop-in replacement for `transformers.Trainer` whose training loop is run by Lightning."""

    def _validate_args(self) -> None:
        """The loop's checks, plus those of the datasets the facade is given (HF's constructor checks)."""
        super()._validate_args()
        args = self.args
        if args.eval_strategy != "no" and self.eval_dataset is None:
            raise ValueError(
                f"You have set `args.eval_strategy` to {args.eval_strategy} but you didn't pass an `eval_dataset` to "
                "`Trainer`. Either set `args.eval_strategy` to `no` or pass an `eval_dataset`."
            )
        # An empty `eval_dataset` is evaluated as transformers does (speed metrics, no loss); an empty training set
        # would only fail later, with a message about `max_steps`.
        if self.train_dataset is not None and has_length(self.train_dataset) and len(self.train_dataset) == 0:
            raise ValueError("`train_dataset` is empty: it has no samples to train on.")
        if self.train_dataset is not None and not has_length(self.train_dataset) and args.max_steps <= 0:
            raise ValueError(
                "The `train_dataset` does not implement __len__, so the number of training steps cannot be inferred; "
                "`max_steps` has to be specified."
            )

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
        """Train with HF semantics on a `lightning.Trainer`; returns HF's `TrainOutput`. `resume_from_checkpoint` is
        an HF `checkpoint-N/` folder (`True`: the last one in `output_dir`) or a Lightning checkpoint file (the `.ckpt`
        of a `ModelCheckpoint`, from this door or a `lightning.Trainer` training `HFLightningModule`)."""
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
            if resume_from_checkpoint is not None and not is_lightning_checkpoint(resume_from_checkpoint):
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
        self.owns_lightning_trainer = True
        self._connect_lightning_trainer(self._build_lightning_trainer())
        lightning_ckpt = None
        if resume_from_checkpoint is not None and is_lightning_checkpoint(resume_from_checkpoint):
            lightning_ckpt, resume_from_checkpoint = resume_from_checkpoint, None
        train_dataloader = self.get_train_dataloader()
        epochs_trained, skip_batches = self._prepare_training(train_dataloader, resume_from_checkpoint, trial)
        plan = self._plan
        window_loader = hf_data.AccumulationWindowLoader(
            train_dataloader,
            args.gradient_accumulation_steps,
            self._count_items,
            plan["steps_in_epoch"],
            first_epoch=epochs_trained,
        )
        if resume_from_checkpoint is not None and skip_batches > 0:
            folder = resume_from_checkpoint
            window_loader.resume_at(epochs_trained, skip_batches, on_skip_done=lambda: self._load_rng_state(folder))
        self.throughput_meter = (
            ThroughputMeter(getattr(self.model, "main_input_name", "input_ids"), self.state.total_flos)
            if args.log_throughput
            else None
        )
        # Lightning's own epoch budget, for its progress bar and callbacks (SWA's `swa_epoch_start`); HF's flow stops
        # the run there too (or before, at `max_steps`).
        self.lightning_trainer.fit_loop.max_epochs = plan["num_train_epochs"] - epochs_trained
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
                # the module's validation hooks serve Lightning's own loops; the facade evaluates HF's way
                warnings.filterwarnings("ignore", message=r".*defined a `validation_step` but have no `val_dataloader`")
                try:
                    self.lightning_trainer.fit(
                        self.lightning_module, train_dataloaders=window_loader, ckpt_path=lightning_ckpt
                    )
                except Exception as exc:  # the user's and HF's frames, not Lightning's loop: as long as HF's
                    raise exc.with_traceback(without_lightning_frames(exc.__traceback__.tb_next))  # noqa: B904
        return self._train_output

    def _build_lightning_trainer(self) -> pl.Trainer:
        kwargs = lightning_trainer_kwargs(self.args, self.model, self.lightning_callbacks, self.report_loggers)
        set_log_levels(self.args)
        show_profiler_report(self.args.profiler)
        with warnings.catch_warnings(), quiet_lightning():
            warnings.filterwarnings("ignore", message=".*treespec.*")
            return pl.Trainer(**kwargs)
