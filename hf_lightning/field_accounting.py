"""Every `transformers.TrainingArguments` field, accounted for: honoured, mapped to Lightning, or refused.

transformers adds arguments every few releases. A field hf_lightning does not act on must never be silently ignored,
so each one has a row here saying what happens to it:

* `HONOURED`: hf_lightning's own loop acts on it as `transformers.Trainer` does; `evidence` names the test that
  proves it (`tests/test_field_accounting.py` checks that the test exists and mentions the field).
* `MAPPED`: it becomes a Lightning counterpart (strategy, precision, accelerator, logger ...); `evidence` is a test.
* `TRANSFORMERS`: transformers' own code that hf_lightning runs reads it (`DefaultFlowCallback`, `TrainerState`,
  `TrainingArguments.__post_init__`, the optimizer table ...); `evidence` names that code, and the accounting test
  checks that its source still mentions the field.
* `UNREAD`: `transformers.Trainer` does not read it either (fields meant for the user's own script).
* `REQUIRES`: read only when the field named in `evidence` is set (e.g. the `hub_*` fields need `push_to_hub`).
* `REFUSED`: not supported; a non-default value is a `ValueError` naming the field, before training starts.

`refuse_unsupported` enforces the last row kind, and refuses a non-default value of any field the installed
transformers has that this table does not know (an argument newer than this hf_lightning).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

__all__ = ["FIELDS", "Treatment", "Row", "refuse_unsupported"]


class Treatment(str, enum.Enum):
    HONOURED = "honoured"
    MAPPED = "mapped"
    TRANSFORMERS = "transformers"
    UNREAD = "unread"
    REQUIRES = "requires"
    REFUSED = "refused"


class Row(NamedTuple):
    treatment: Treatment
    detail: str
    evidence: str = ""
    probe: Any = None  # REFUSED rows: a non-default value the accounting test sets to see the refusal


H, M, T, U, R, X = (
    Treatment.HONOURED,
    Treatment.MAPPED,
    Treatment.TRANSFORMERS,
    Treatment.UNREAD,
    Treatment.REQUIRES,
    Treatment.REFUSED,
)
_PARITY = "test_trainer_parity.py::test_training_is_bit_identical_to_transformers"
_HONOURED_JOB = "test_field_accounting.py::test_honoured_field_trains_like_transformers"
_LOADER = "test_field_accounting.py::test_dataloader_fields_build_the_loader_transformers_builds"
_FLOW = "transformers.trainer_callback:DefaultFlowCallback"

_ARGS_INIT = "transformers.training_args:TrainingArguments.__post_init__"

FIELDS: dict[str, Row] = {
    # --- output, budget, batch ---
    "output_dir": Row(H, "checkpoints, logs, saved models", "test_checkpoints.py::test_save_model_state_and_metrics_match_transformers"),
    "per_device_train_batch_size": Row(H, "train loader batch size", _HONOURED_JOB),
    "num_train_epochs": Row(H, "HF loop's epoch budget (fractional epochs too)", _PARITY),
    "max_steps": Row(H, "HF loop's step budget", _PARITY),
    "gradient_accumulation_steps": Row(H, "accumulation windows of the manual-optimisation module", _PARITY),
    "auto_find_batch_size": Row(H, "halve the batch on out-of-memory", "test_advanced.py::test_auto_find_batch_size_matches_transformers"),
    # --- optimiser and schedule ---
    "learning_rate": Row(H, "optimiser lr", _HONOURED_JOB),
    "lr_scheduler_type": Row(H, "transformers.get_scheduler", _PARITY),
    "lr_scheduler_kwargs": Row(H, "transformers.get_scheduler scheduler_specific_kwargs", _HONOURED_JOB),
    "warmup_steps": Row(H, "schedule warmup (a float < 1 is a ratio)", _PARITY),
    "optim": Row(H, "transformers' optimizer table", "test_trainer.py::test_optimizers_match_transformers"),
    "optim_args": Row(H, "transformers' optimizer table", "test_optimization.py::test_optimizer_table_equals_hf_static_method"),
    "optim_target_modules": Row(T, "GaLore/APOLLO handlers of transformers' optimizer table", "transformers.trainer_optimizer"),
    "weight_decay": Row(H, "decay parameter group", _PARITY),
    "adam_beta1": Row(H, "Adam betas", _HONOURED_JOB),
    "adam_beta2": Row(H, "Adam betas", _HONOURED_JOB),
    "adam_epsilon": Row(H, "Adam eps", _HONOURED_JOB),
    "max_grad_norm": Row(H, "clipping after AMP unscaling", _PARITY),
    "label_smoothing_factor": Row(H, "LabelSmoother in compute_loss", "test_advanced.py::test_label_smoothing_matches_transformers"),
    "average_tokens_across_devices": Row(H, "loss scaled by world size", "test_advanced.py::test_average_tokens_across_devices_scales_the_loss_by_world_size"),
    # --- precision, memory, compile ---
    "bf16": Row(M, "Lightning precision 'bf16-mixed'", "test_training_args.py::test_lightning_precision"),
    "fp16": Row(M, "Lightning precision '16-mixed'; fp32 on CPU, as transformers", "test_trainer_parity.py::test_fp16_on_cpu_trains_in_fp32_like_transformers"),
    "bf16_full_eval": Row(H, "evaluation in bf16", "test_evaluation.py::test_full_eval_dtypes_match_transformers"),
    "fp16_full_eval": Row(H, "evaluation in fp16", "test_evaluation.py::test_full_eval_dtypes_match_transformers"),
    "tf32": Row(T, "TF32 matmul switch, set when the arguments are built", _ARGS_INIT),
    "activation_checkpointing": Row(H, "model.activation_checkpointing_enable", "test_advanced.py::test_activation_checkpointing_matches_transformers"),
    "activation_checkpointing_kwargs": Row(H, "passed to the model's enable call", "test_advanced.py::test_activation_checkpointing_matches_transformers"),
    "gradient_checkpointing": Row(H, "v4 name of activation_checkpointing", "test_advanced.py::test_activation_checkpointing_matches_transformers"),
    "gradient_checkpointing_kwargs": Row(H, "v4 name of activation_checkpointing_kwargs", "test_advanced.py::test_activation_checkpointing_matches_transformers"),
    "torch_compile": Row(H, "torch.compile of the training model", "test_advanced.py::test_torch_compile_really_compiles"),
    "torch_compile_backend": Row(H, "torch.compile backend", "test_advanced.py::test_torch_compile_wraps_the_training_model_with_backend_and_mode"),
    "torch_compile_mode": Row(H, "torch.compile mode", "test_advanced.py::test_torch_compile_wraps_the_training_model_with_backend_and_mode"),
    "use_liger_kernel": Row(X, "Liger kernels (Triton, GPU) are not applied by hf_lightning", probe=True),
    "liger_kernel_config": Row(R, "read only with Liger kernels", "use_liger_kernel"),
    "use_cache": Row(H, "model.config.use_cache", "test_advanced.py::test_use_cache_is_set_on_the_model_config"),
    "neftune_noise_alpha": Row(H, "NEFTune embedding noise", "test_advanced.py::test_neftune_matches_transformers_and_is_removed_after_training"),
    "torch_empty_cache_steps": Row(H, "device cache emptied every N steps", "test_advanced.py::test_torch_empty_cache_steps_matches_transformers"),
    # --- logging ---
    "logging_strategy": Row(T, "DefaultFlowCallback sets should_log", _FLOW),
    "logging_steps": Row(T, "DefaultFlowCallback / TrainerState.compute_steps", _FLOW),
    "logging_first_step": Row(T, "DefaultFlowCallback logs step 1", _FLOW),
    "log_on_each_node": Row(H, "log level of non-zero nodes", "test_callbacks.py::test_log_level_replica_and_log_on_each_node"),
    "logging_nan_inf_filter": Row(H, "NaN/Inf losses replaced by the running mean", "test_field_accounting.py::test_logging_nan_inf_filter_matches_transformers"),
    "include_num_input_tokens_seen": Row(H, "token counting", "test_advanced.py::test_include_num_input_tokens_seen_matches_transformers"),
    "log_level": Row(H, "transformers' and hf_lightning's log level", "test_callbacks.py::test_log_level_like_transformers"),
    "log_level_replica": Row(H, "log level on replicas", "test_callbacks.py::test_log_level_replica_and_log_on_each_node"),
    "disable_tqdm": Row(H, "progress callback choice", "test_callbacks.py::test_default_callbacks_match_transformers"),
    "report_to": Row(H, "transformers' integration callbacks (+ a Lightning logger over each); csv: CSVLogger", "test_reporting.py::test_every_integration_gets_transformers_events"),
    "run_name": Row(T, "read by transformers' integration callbacks (the W&B / MLflow run name)", "transformers.integrations.integration_utils:WandbCallback.setup"),
    "project": Row(T, "read by transformers' Trackio callback", "transformers.integrations.integration_utils:TrackioCallback"),
    "trackio_space_id": Row(T, "read by transformers' Trackio callback", "transformers.integrations.integration_utils:TrackioCallback"),
    "trackio_bucket_id": Row(T, "read by transformers' Trackio callback", "transformers.integrations.integration_utils:TrackioCallback"),
    "trackio_static_space_id": Row(T, "read by transformers' Trackio callback", "transformers.integrations.integration_utils"),
    # --- evaluation ---
    "eval_strategy": Row(T, "DefaultFlowCallback sets should_evaluate", _FLOW),
    "eval_steps": Row(T, "DefaultFlowCallback / TrainerState.compute_steps", _FLOW),
    "eval_delay": Row(T, "DefaultFlowCallback delays evaluation", _FLOW),
    "per_device_eval_batch_size": Row(H, "eval loader batch size", "test_evaluation.py::test_evaluate_after_training_matches_transformers"),
    "prediction_loss_only": Row(H, "evaluation returns the loss only", "test_evaluation.py::test_evaluate_after_training_matches_transformers"),
    "eval_on_start": Row(H, "evaluation before the first step", "test_evaluation.py::test_full_eval_dtypes_match_transformers"),
    "eval_do_concat_batches": Row(H, "prediction batches concatenated or listed", "test_evaluation.py::test_variable_length_predictions_are_padded_like_transformers"),
    "eval_use_gather_object": Row(X, "hf_lightning gathers tensors across ranks, not arbitrary objects", probe=True),
    "eval_accumulation_steps": Row(H, "predictions moved to the CPU every N steps", "test_evaluation.py::test_evaluate_after_training_matches_transformers"),
    "include_for_metrics": Row(H, "inputs/loss passed to compute_metrics", "test_evaluation.py::test_metric_options_match_transformers"),
    "batch_eval_metrics": Row(H, "compute_metrics per batch", "test_evaluation.py::test_iterable_eval_dataset_matches_transformers"),
    "load_best_model_at_end": Row(H, "best checkpoint loaded after training", "test_checkpoints.py::test_rotation_and_best_model_match_transformers"),
    "metric_for_best_model": Row(H, "metric that picks the best checkpoint", "test_checkpoints.py::test_rotation_and_best_model_match_transformers"),
    "greater_is_better": Row(H, "direction of metric_for_best_model", "test_field_accounting.py::test_greater_is_better_picks_the_checkpoint_transformers_picks"),
    # --- saving and resuming ---
    "save_strategy": Row(T, "DefaultFlowCallback sets should_save ('best' by the HF loop)", _FLOW),
    "save_steps": Row(T, "DefaultFlowCallback / TrainerState.compute_steps", _FLOW),
    "save_only_model": Row(H, "checkpoints without optimizer/scheduler/RNG", "test_checkpoints.py::test_resume_variants_match_transformers"),
    "save_on_each_node": Row(T, "TrainingArguments.should_save", "transformers.training_args:TrainingArguments.should_save"),
    "save_total_limit": Row(H, "checkpoint rotation", "test_checkpoints.py::test_rotation_and_best_model_match_transformers"),
    "enable_jit_checkpoint": Row(H, "SIGTERM -> checkpoint at a step end after transformers' kill_wait (hf_lightning.preemption)", "test_preemption.py::test_jit_checkpoint_after_transformers_grace_period_then_train_returns"),
    "ignore_data_skip": Row(H, "resume without skipping seen batches", "test_checkpoints.py::test_resume_variants_match_transformers"),
    "restore_callback_states_from_checkpoint": Row(H, "stateful callbacks restored on resume", "test_callbacks.py::test_stateful_callbacks_restored_on_resume_like_transformers"),
    "resume_from_checkpoint": Row(
        U,
        "for the user's script; train(resume_from_checkpoint=...) is the call (a module fitted by a user's "
        "lightning.Trainer resumes it: test_two_doors.py::test_resume_either_format_bit_identical)",
    ),
    # --- hub ---
    "push_to_hub": Row(H, "repo created at construction, checkpoints pushed (hf_lightning.hub)", "test_hub.py::test_hub_strategy_makes_transformers_calls_with_the_same_files"),
    "hub_token": Row(H, "the token of every Hub call", "test_hub.py::test_hub_strategy_makes_transformers_calls_with_the_same_files"),
    "hub_private_repo": Row(H, "create_repo(private=)", "test_hub.py::test_model_card_and_user_saves_match_transformers"),
    "hub_model_id": Row(H, "the repo pushed to", "test_hub.py::test_hub_strategy_makes_transformers_calls_with_the_same_files"),
    "hub_strategy": Row(H, "what each save pushes", "test_hub.py::test_hub_strategy_makes_transformers_calls_with_the_same_files"),
    "hub_always_push": Row(H, "push although the previous upload runs", "test_hub.py::test_a_save_while_uploading_is_skipped_unless_hub_always_push"),
    "hub_revision": Row(H, "the branch committed to", "test_hub.py::test_model_card_and_user_saves_match_transformers"),
    # --- reproducibility ---
    "full_determinism": Row(H, "deterministic algorithms + Lightning deterministic=True", "test_advanced.py::test_full_determinism_enables_deterministic_algorithms"),
    "seed": Row(H, "set_seed at construction and before model_init", _HONOURED_JOB),
    "data_seed": Row(H, "seed of the train sampler", _HONOURED_JOB),
    # --- devices and distribution ---
    "use_cpu": Row(M, "Lightning accelerator 'cpu'", "test_training_args.py::test_lightning_accelerator"),
    "accelerator_config": Row(H, "each sub-field honoured or refused by name (hf_lightning/accelerator_config.py)", "test_accelerator_config.py::test_one_process_options_train_like_transformers"),
    "parallelism_config": Row(X, "accelerate's ParallelismConfig (TP/CP/DP shards): use a Lightning `strategy`", probe={}),
    "ddp_find_unused_parameters": Row(M, "DDPStrategy(find_unused_parameters=)", "test_strategies.py::test_ddp_arguments_become_ddp_strategy_kwargs"),
    "ddp_bucket_cap_mb": Row(M, "DDPStrategy(bucket_cap_mb=)", "test_strategies.py::test_ddp_arguments_become_ddp_strategy_kwargs"),
    "ddp_broadcast_buffers": Row(M, "DDPStrategy(broadcast_buffers=)", "test_strategies.py::test_ddp_arguments_become_ddp_strategy_kwargs"),
    "ddp_static_graph": Row(M, "DDPStrategy(static_graph=)", "test_strategies.py::test_ddp_arguments_become_ddp_strategy_kwargs"),
    "ddp_backend": Row(M, "DDPStrategy(process_group_backend=)", "test_strategies.py::test_ddp_arguments_become_ddp_strategy_kwargs"),
    "ddp_timeout": Row(M, "DDPStrategy(timeout=)", "test_strategies.py::test_ddp_arguments_become_ddp_strategy_kwargs"),
    "fsdp": Row(M, "FSDPStrategy", "test_strategies.py::test_fsdp_config_becomes_fsdp_strategy_kwargs"),
    "fsdp_config": Row(M, "FSDPStrategy arguments", "test_strategies.py::test_fsdp_config_becomes_fsdp_strategy_kwargs"),
    "deepspeed": Row(M, "DeepSpeedStrategy with HF's 'auto' values", "test_strategies.py::test_deepspeed_auto_values_resolve_like_hf"),
    "local_rank": Row(U, "parsed for torch.distributed.launch; the rank comes from the environment"),
    # --- data ---
    "dataloader_drop_last": Row(H, "DataLoader(drop_last=)", "test_advanced.py::test_dataloader_drop_last_matches_transformers"),
    "dataloader_num_workers": Row(H, "DataLoader(num_workers=)", _LOADER),
    "dataloader_pin_memory": Row(H, "DataLoader(pin_memory=)", _LOADER),
    "dataloader_persistent_workers": Row(H, "DataLoader(persistent_workers=); the eval loader is reused", "test_evaluation.py::test_persistent_workers_reuse_the_eval_loader_like_transformers"),
    "dataloader_prefetch_factor": Row(H, "DataLoader(prefetch_factor=)", _LOADER),
    "dataloader_multiprocessing_context": Row(H, "DataLoader(multiprocessing_context=)", _LOADER),
    "dataloader_in_order": Row(H, "DataLoader(in_order=)", _LOADER),
    "remove_unused_columns": Row(H, "columns the model does not take are dropped", "test_field_accounting.py::test_remove_unused_columns_like_transformers"),
    "label_names": Row(H, "which inputs are labels", "test_evaluation.py::test_label_names_and_tuple_outputs_match_transformers"),
    "train_sampling_strategy": Row(H, "random / sequential / group_by_length / batch_rebalance", "test_advanced.py::test_sampling_strategies_match_transformers"),
    "length_column_name": Row(H, "lengths for group_by_length", "test_advanced.py::test_group_by_length_v4_name_and_length_column"),
    # --- debugging, metrics ---
    "debug": Row(X, "underflow/overflow and TPU-metrics debugging are not implemented", probe="underflow_overflow"),
    "skip_memory_metrics": Row(H, "transformers' TrainerMemoryTracker `*_mem_*` metrics", "test_memory_metrics.py::test_memory_metrics_are_transformers_own"),
    # --- script-level fields ---
    "do_train": Row(U, "for the user's script"),
    "do_eval": Row(U, "for the user's script"),
    "do_predict": Row(U, "for the user's script"),
    # --- Seq2SeqTrainingArguments ---
    "sortish_sampler": Row(U, "no effect in transformers v5 either"),
    "predict_with_generate": Row(H, "generation in evaluate/predict", "test_seq2seq.py::test_t5_train_evaluate_predict_match_transformers"),
    "generation_max_length": Row(H, "generate(max_length=)", "test_seq2seq.py::test_bart_and_encoder_decoder_match_transformers"),
    "generation_num_beams": Row(H, "generate(num_beams=)", "test_seq2seq.py::test_arguments_parse_from_the_command_line_with_v4_names"),
    "generation_config": Row(H, "the GenerationConfig used", "test_seq2seq.py::test_generation_config_argument_replaces_the_models"),
}  # fmt: skip


# How to tell the default of fields whose value is normalised by transformers (`rebuild_args` passes the normalised
# form of a `transformers.TrainingArguments`; a user passes the raw one).
_IS_DEFAULT: dict[str, Callable[[Any], bool]] = {
    "debug": lambda value: value in (None, "", []),
}


def _default(field: dataclasses.Field) -> Any:
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def _is_default(field: dataclasses.Field, value: Any) -> bool:
    check = _IS_DEFAULT.get(field.name)
    if check is not None:
        return check(value)
    default = _default(field)
    return value == getattr(default, "value", default) or value == default


def refuse_unsupported(args: Any, handled: Collection[str] = ()) -> None:
    """Raise a `ValueError` naming the field when `args` sets a `REFUSED` field, or a field of the installed
    transformers this table does not know, to a non-default value (called as the arguments are built). `handled`:
    names the caller translates itself (the transformers v4 aliases, real fields in older transformers)."""
    import transformers

    for field in dataclasses.fields(transformers.Seq2SeqTrainingArguments):
        row = FIELDS.get(field.name)
        if field.name in handled or (row is not None and row.treatment is not Treatment.REFUSED):
            continue
        if not hasattr(args, field.name) or _is_default(field, getattr(args, field.name)):
            continue
        value = getattr(args, field.name)
        if row is None:
            raise ValueError(
                f"`{field.name}`={value!r} is a transformers {transformers.__version__} argument that this "
                f"hf_lightning does not know, so it would be ignored; leave it at its default ({_default(field)!r})."
            )
        raise ValueError(f"`{field.name}`={value!r} is not supported by hf_lightning: {row.detail}.")
