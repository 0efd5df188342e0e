"""Tests for hf_lightning.argument_types: strings in numeric or boolean fields are named before anything runs."""

from __future__ import annotations

import warnings

import pytest
import transformers
from helpers import ToyClassification, make_args, tiny_bert, trainer_classes

from hf_lightning import Seq2SeqTrainingArguments, TrainingArguments
from hf_lightning.argument_types import typed_fields
from hf_lightning.training_args import LEGACY_FIELDS

STRING_VALUES = [
    ("learning_rate", "1e-3", "learning_rate=0.001"),
    ("per_device_train_batch_size", "8", "per_device_train_batch_size=8"),
    ("num_train_epochs", "2.5", "num_train_epochs=2.5"),
    ("max_steps", "3", "max_steps=3"),
    ("weight_decay", "0.1", "weight_decay=0.1"),
    ("warmup_steps", "two", "a number as `warmup_steps`"),
    ("seed", "3", "seed=3"),
    ("eval_steps", "5", "eval_steps=5"),
    ("fp16", "False", "fp16=True or fp16=False"),
    ("warmup_ratio", "0.1", "warmup_ratio=0.1"),  # a v4 name
]


@pytest.mark.parametrize(("name", "value", "advice"), STRING_VALUES, ids=[c[0] for c in STRING_VALUES])
def test_string_for_a_number_is_a_type_error_naming_the_field(name: str, value: str, advice: str, tmp_path) -> None:
    with pytest.raises(TypeError, match=f"`{name}` must be .*got the string '{value}'") as err:
        TrainingArguments(str(tmp_path), **{name: value})
    assert advice in str(err.value)


@pytest.mark.parametrize(("name", "value"), [("learning_rate", "1e-3"), ("per_device_train_batch_size", "8")])
def test_transformers_fails_later_without_naming_the_field(name: str, value: str, tmp_path) -> None:
    """The reference: transformers accepts the string and fails in training with an error that does not name it."""
    trainer_cls, _ = trainer_classes("hf")
    args = make_args("hf", str(tmp_path / "hf"), **{name: value})
    with pytest.raises((TypeError, ValueError)) as err:
        trainer_cls(model=tiny_bert(), args=args, train_dataset=ToyClassification(8)).train()
    assert name not in str(err.value)
    with pytest.raises(TypeError, match=name):
        make_args("hfl", str(tmp_path / "hfl"), **{name: value})


def test_converted_transformers_arguments_are_checked_too(tmp_path) -> None:
    from hf_lightning import Trainer

    args = transformers.TrainingArguments(str(tmp_path), learning_rate="1e-3", report_to="none")
    with pytest.raises(TypeError, match="learning_rate"):
        Trainer(model=tiny_bert(), args=args)


def test_typed_fields_cover_every_numeric_and_boolean_field() -> None:
    kinds = typed_fields(TrainingArguments)
    assert {kinds[n] for n in ("learning_rate", "max_steps", "logging_steps", "save_total_limit")} == {"number"}
    assert {kinds[n] for n in ("fp16", "tf32", "greater_is_better", "no_cuda")} == {"bool"}
    assert not {"output_dir", "devices", "report_to", "lr_scheduler_type", "accelerator_config"} & set(kinds)
    hf_kinds = typed_fields(transformers.TrainingArguments)
    assert {k: v for k, v in kinds.items() if k in hf_kinds} == hf_kinds
    assert {"warmup_ratio", "no_cuda"} <= set(kinds) and set(LEGACY_FIELDS) & set(kinds)
    assert typed_fields(Seq2SeqTrainingArguments)["generation_max_length"] == "number"


def test_numbers_and_command_line_strings_pass(tmp_path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = TrainingArguments(str(tmp_path), learning_rate=1e-3, per_device_train_batch_size=8, fp16=False)
    assert args.learning_rate == 1e-3
    parsed, *_ = transformers.HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--learning_rate", "1e-3", "--per_device_train_batch_size", "8", "--tf32", "0"]
    )
    assert (parsed.learning_rate, parsed.per_device_train_batch_size, parsed.tf32) == (1e-3, 8, False)
