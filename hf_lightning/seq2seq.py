"""`Seq2SeqTrainer`: `transformers.Seq2SeqTrainer` on hf_lightning's `Trainer`.

With `predict_with_generate`, `evaluate`/`predict` run `model.generate` on every batch: predictions are the
generated token ids (padded with the pad token to the generation `max_length` inside a batch, then with -100 across
batches and ranks, as transformers does), labels are padded to the same length, and `compute_metrics` receives
both. Generation settings come, by priority, from the `**gen_kwargs` of `evaluate`/`predict`, then
`generation_max_length` / `generation_num_beams`, then `model.generation_config` (replaced by
`args.generation_config` when set). Without `predict_with_generate` everything is the base `Trainer`'s.

As in transformers, the eval loss is the plain mean of the batch losses (a short last batch weighs as a full one:
transformers' Seq2SeqTrainer gathers without the base Trainer's cut).

Where we differ from transformers on purpose:
- under DDP every sample is counted once (transformers' Seq2SeqTrainer gathers without dropping the samples a
  distributed split repeats, so its metrics then see duplicates); results equal the single-process ones;
- `evaluate(**gen_kwargs)` on a dict of eval datasets uses the `gen_kwargs` for every dataset (transformers
  forgets them after the first re-entry);
- `predict_with_generate` with a model that has no `generate`: a `ValueError` naming the argument when generation
  is needed (transformers: an `AttributeError`), and at construction when the evaluations during training will
  generate (`eval_strategy` with `compute_metrics`), instead of after the first epoch; evaluating the loss works,
  as in transformers;
- a batch with `labels=None` (what `DataCollatorForSeq2Seq` gives unlabelled data) is predicted without labels
  (transformers passes the None on to the model, which fails).
"""

from __future__ import annotations

import contextlib
import warnings
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.trainer_utils import PredictionOutput

from hf_lightning.seq2seq_args import Seq2SeqTrainingArguments, to_seq2seq_args
from hf_lightning.trainer import Trainer

__all__ = ["Seq2SeqTrainer", "Seq2SeqTrainingArguments"]


def _is_fsdp_managed(model: nn.Module) -> bool:
    from hf_lightning.compat import is_fsdp_managed_module

    return is_fsdp_managed_module(model)


class Seq2SeqTrainer(Trainer):
    """Drop-in replacement for `transformers.Seq2SeqTrainer`; takes the same arguments as `hf_lightning.Trainer`.

    `args` may be our `Seq2SeqTrainingArguments`, transformers' (converted), or a plain `TrainingArguments` (the
    generation fields then take their defaults)."""

    args: Seq2SeqTrainingArguments
    eval_loss_per_batch = True

    def __init__(self, model: nn.Module | None = None, args: Any = None, *rest: Any, **kwargs: Any) -> None:
        super().__init__(model, to_seq2seq_args(args), *rest, **kwargs)
        self._check_generate_method()
        # Priority: args.generation_config > model.generation_config > default GenerationConfig.
        if self.args.generation_config is not None:
            self.model.generation_config = self.load_generation_config(self.args.generation_config)

    def _check_generate_method(self) -> None:
        """`predict_with_generate` on a model without `generate`: transformers trains, and evaluates the loss, and
        fails (AttributeError) only when it generates. The same here, with a warning now and a clear error then; but
        when the evaluations during training will generate (`compute_metrics` set), the error comes before training
        instead of after the first epoch's steps."""
        if not self.args.predict_with_generate or callable(getattr(self.model, "generate", None)):
            return
        name = type(self.model).__name__
        args = self.args
        evaluates = args.eval_strategy != "no" or args.eval_on_start
        if evaluates and self.compute_metrics is not None and not args.prediction_loss_only:
            raise ValueError(
                f"`predict_with_generate`=True needs a model with a `generate` method and {name} has none: the "
                "evaluations during training (`eval_strategy` with `compute_metrics`) would fail. Set "
                "`predict_with_generate`=False to evaluate on the logits."
            )
        warnings.warn(
            f"`predict_with_generate`=True but {name} has no `generate` method: evaluating the loss works (as in "
            "transformers), `predict()` and evaluating with `compute_metrics` will raise.",
            UserWarning,
            stacklevel=3,
        )

    @staticmethod
    def load_generation_config(gen_config_arg: str | Path | GenerationConfig) -> GenerationConfig:
        """A `GenerationConfig` from `Seq2SeqTrainingArguments.generation_config`: a copy of the object, or loaded
        from a `generation_config.json` file, a folder holding one, or a model name; strictly validated."""
        if isinstance(gen_config_arg, GenerationConfig):
            gen_config = deepcopy(gen_config_arg)
        else:
            path = Path(gen_config_arg)
            if path.is_file():
                gen_config = GenerationConfig.from_pretrained(path.parent, path.name)
            elif path.is_dir():
                gen_config = GenerationConfig.from_pretrained(path)
            else:
                gen_config = GenerationConfig.from_pretrained(gen_config_arg)
        # `GenerationConfig.save_pretrained()` (run when the model is saved) fails on warnings: fail early instead.
        try:
            gen_config.validate(strict=True)
        except ValueError as exc:
            raise ValueError(str(exc) + "\n\nFix these issues to train your model.") from exc
        return gen_config

    def _set_gen_kwargs(self, gen_kwargs: dict[str, Any]) -> None:
        """Explicit `gen_kwargs` first, then the `generation_*` arguments (HF's legacy settings)."""
        gen_kwargs = gen_kwargs.copy()
        if (
            gen_kwargs.get("max_length") is None
            and gen_kwargs.get("max_new_tokens") is None
            and self.args.generation_max_length is not None
        ):
            gen_kwargs["max_length"] = self.args.generation_max_length
        if gen_kwargs.get("num_beams") is None and self.args.generation_num_beams is not None:
            gen_kwargs["num_beams"] = self.args.generation_num_beams
        self._gen_kwargs = gen_kwargs

    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
        **gen_kwargs: Any,
    ) -> dict[str, float]:
        """`Trainer.evaluate`, generating with `gen_kwargs` (e.g. `max_length`, `max_new_tokens`, `num_beams`)
        when `predict_with_generate` is set."""
        override = eval_dataset is not None
        datasets = eval_dataset if override else self.eval_dataset
        if isinstance(datasets, dict):
            metrics: dict[str, float] = {}
            for name, dataset in datasets.items():
                metrics.update(
                    self.evaluate(
                        eval_dataset=dataset if override else name,
                        ignore_keys=ignore_keys,
                        metric_key_prefix=f"{metric_key_prefix}_{name}",
                        **gen_kwargs,
                    )
                )
            return metrics
        self._set_gen_kwargs(gen_kwargs)
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def predict(
        self,
        test_dataset: Any,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "test",
        **gen_kwargs: Any,
    ) -> PredictionOutput:
        """`Trainer.predict`; with `predict_with_generate` the predictions are generated token ids (see above)."""
        self._set_gen_kwargs(gen_kwargs)
        return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def _default_synced_gpus(self) -> bool:
        """Whether ranks must step `generate` together: the model is sharded (DeepSpeed ZeRO-3 or FSDP, set up by
        transformers or by the Lightning strategy), so every forward is a collective."""
        if is_deepspeed_zero3_enabled() or _is_fsdp_managed(self.model):
            return True
        lt = getattr(self, "lightning_trainer", None)
        strategy = getattr(lt, "strategy", None)
        if strategy is None or lt.world_size <= 1:
            return False
        from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

        return isinstance(strategy, FSDPStrategy) or (
            isinstance(strategy, DeepSpeedStrategy) and bool(strategy.zero_stage_3)
        )

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
        **gen_kwargs: Any,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Loss, generated token ids and labels of one batch (transformers' `Seq2SeqTrainer.prediction_step`);
        the base `prediction_step` without `predict_with_generate` or with `prediction_loss_only`."""
        if not self.args.predict_with_generate or prediction_loss_only:
            return super().prediction_step(
                model, inputs, prediction_loss_only=prediction_loss_only, ignore_keys=ignore_keys
            )

        if not callable(getattr(self.model, "generate", None)):
            raise ValueError(
                f"`predict_with_generate`=True needs a model with a `generate` method; {type(self.model).__name__} "
                "has none. Set `predict_with_generate`=False to predict logits (or `prediction_loss_only`=True)."
            )
        # DataCollatorForSeq2Seq sets `labels=None` for unlabelled data: that is no labels (HF would crash on it).
        has_labels = inputs.get("labels") is not None
        inputs = self._prepare_inputs(inputs)
        if "labels" in inputs and not has_labels:
            inputs = {k: v for k, v in inputs.items() if k != "labels"}
        # Priority (resolved by `generate`): non-None gen_kwargs > model.generation_config > GenerationConfig().
        if len(gen_kwargs) == 0 and hasattr(self, "_gen_kwargs"):
            gen_kwargs = self._gen_kwargs.copy()
        for key in ("num_beams", "max_length"):
            if key in gen_kwargs and gen_kwargs[key] is None:
                gen_kwargs.pop(key)
        gen_kwargs["synced_gpus"] = gen_kwargs.get("synced_gpus", self._default_synced_gpus())

        generation_inputs = inputs.copy()
        # `decoder_input_ids` made from `labels` (DataCollatorForSeq2Seq) would make generate continue them: drop.
        if (
            "labels" in generation_inputs
            and "decoder_input_ids" in generation_inputs
            and generation_inputs["labels"].shape == generation_inputs["decoder_input_ids"].shape
        ):
            generation_inputs = {
                k: v for k, v in inputs.items() if k not in ("decoder_input_ids", "decoder_attention_mask")
            }
        with self._full_params():
            generated_tokens = self.model.generate(**generation_inputs, **gen_kwargs)

        # Keep generate from re-deriving the generation config from the model config on every batch (HF's hack).
        if self.model.generation_config._from_model_config:
            self.model.generation_config._from_model_config = False
        gen_config = self.model.generation_config
        gen_config.update(**gen_config._get_default_generation_params(), defaults_only=True)
        target = self._padded_length(generated_tokens, gen_config)
        if target is not None:
            generated_tokens = self._pad_tensors_to_max_len(generated_tokens, target)

        with torch.no_grad():
            if has_labels:
                outputs = model(**inputs)
                if self.label_smoother is not None:
                    loss = self.label_smoother(outputs, inputs["labels"]).detach().mean()
                else:
                    loss = (outputs["loss"] if isinstance(outputs, dict) else outputs[0]).detach().mean()
            else:
                loss = None

        if self.args.prediction_loss_only:
            return loss, None, None
        labels = None
        if has_labels:
            labels = inputs["labels"]
            target = self._padded_length(labels, gen_config)
            if target is not None:
                labels = self._pad_tensors_to_max_len(labels, target)
        return loss, generated_tokens, labels

    @staticmethod
    def _padded_length(tensor: torch.Tensor, gen_config: GenerationConfig) -> int | None:
        """The length HF pads a shorter batch to: `max_length`, or `max_new_tokens + 1` when that is longer."""
        if tensor.shape[-1] < gen_config.max_length:
            return gen_config.max_length
        if gen_config.max_new_tokens is not None and tensor.shape[-1] < gen_config.max_new_tokens + 1:
            return gen_config.max_new_tokens + 1
        return None

    def _full_params(self) -> contextlib.AbstractContextManager:
        """FSDP (v1) holds shards: gather the full parameters around `generate`, as transformers does."""
        if torch.distributed.is_available():
            from torch.distributed.fsdp import FullyShardedDataParallel

            if isinstance(self.model, FullyShardedDataParallel):
                return FullyShardedDataParallel.summon_full_params(self.model)
        return contextlib.nullcontext()

    def _pad_tensors_to_max_len(self, tensor: torch.Tensor, max_length: int) -> torch.Tensor:
        """Right-pad `tensor` to `max_length` with the tokenizer's pad (else eos) token, or the model's pad id."""
        if self.processing_class is not None and hasattr(self.processing_class, "pad_token_id"):
            pad_token_id = (
                self.processing_class.pad_token_id
                if self.processing_class.pad_token_id is not None
                else self.processing_class.eos_token_id
            )
        elif getattr(self.model.config, "pad_token_id", None) is not None:
            pad_token_id = self.model.config.pad_token_id
        else:
            raise ValueError("Pad_token_id must be set in the configuration of the model, in order to pad tensors")
        padded = pad_token_id * torch.ones((tensor.shape[0], max_length), dtype=tensor.dtype, device=tensor.device)
        padded[:, : tensor.shape[-1]] = tensor
        return padded
