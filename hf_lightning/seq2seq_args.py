"""`Seq2SeqTrainingArguments`: hf_lightning's `TrainingArguments` plus the generation fields of transformers'.

The fields, defaults and `to_dict` are those of `transformers.Seq2SeqTrainingArguments`; the base class brings the
Lightning fields (`accelerator`, `devices`, `strategy`, ...) and the transformers v4 names. `sortish_sampler` is
kept so v4 scripts and command lines still parse; like in transformers v5 it has no effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import GenerationConfig

from hf_lightning.training_args import DEFAULT_OUTPUT_DIR, TrainingArguments, rebuild_args

__all__ = ["Seq2SeqTrainingArguments", "to_seq2seq_args"]


@dataclass
class Seq2SeqTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus `predict_with_generate`, `generation_max_length`, `generation_num_beams`,
    `generation_config` (a `GenerationConfig`, a folder or file saved by `save_pretrained`, or a model name) and
    `sortish_sampler` (no effect, as in transformers v5)."""

    sortish_sampler: bool = field(default=False, metadata={"help": "Whether to use SortishSampler or not."})
    predict_with_generate: bool = field(
        default=False, metadata={"help": "Whether to use generate to calculate generative metrics (ROUGE, BLEU)."}
    )
    generation_max_length: int | None = field(
        default=None,
        metadata={
            "help": (
                "The `max_length` to use on each evaluation loop when `predict_with_generate=True`. Will default "
                "to the `max_length` value of the model configuration."
            )
        },
    )
    generation_num_beams: int | None = field(
        default=None,
        metadata={
            "help": (
                "The `num_beams` to use on each evaluation loop when `predict_with_generate=True`. Will default "
                "to the `num_beams` value of the model configuration."
            )
        },
    )
    generation_config: str | Path | GenerationConfig | None = field(
        default=None,
        metadata={
            "help": "Model id, file path or url pointing to a GenerationConfig json file, to use during prediction."
        },
    )

    def __post_init__(self) -> None:
        for name in ("generation_max_length", "generation_num_beams"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive int or None, got {value!r}")
        if self.generation_config is not None and not isinstance(self.generation_config, (str, Path, GenerationConfig)):
            raise ValueError(
                "`generation_config` must be a GenerationConfig, a path or a model name, got "
                f"{type(self.generation_config).__name__}: {self.generation_config!r}"
            )
        super().__post_init__()

    def to_dict(self) -> dict[str, Any]:
        """The base `to_dict` with a `GenerationConfig` replaced by its dict (JSON-serialisable), as transformers."""
        d = super().to_dict()
        for k, v in d.items():
            if isinstance(v, GenerationConfig):
                d[k] = v.to_dict()
        return d


def to_seq2seq_args(args: Any) -> Seq2SeqTrainingArguments:
    """`args` as our `Seq2SeqTrainingArguments`: returned as is when it is one, else rebuilt from its fields (any
    `transformers.TrainingArguments`, e.g. transformers' `Seq2SeqTrainingArguments` or our `TrainingArguments`,
    whose missing generation fields take their defaults); None gives the defaults with `output_dir="tmp_trainer"`."""
    if args is None:
        return Seq2SeqTrainingArguments(output_dir=DEFAULT_OUTPUT_DIR)
    if isinstance(args, Seq2SeqTrainingArguments):
        return args
    return rebuild_args(args, Seq2SeqTrainingArguments)
