"""Bad input fails before any training step, with an error that names the argument."""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import ToyClassification, tiny_bert
from torch import nn
from transformers import BertConfig, BertModel

from hf_lightning import Trainer as HFLTrainer
from hf_lightning import TrainerCallback, TrainingArguments


class StepCounter(TrainerCallback):
    def __init__(self) -> None:
        self.steps = 0

    def on_step_begin(self, args, state, control, **kwargs):
        self.steps += 1


class NoLossModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 3)

    def forward(self, input_ids, labels=None, attention_mask=None):
        return {"logits": self.linear(input_ids.float())}


class LogitsFirstModel(NoLossModel):
    def forward(self, input_ids, labels=None, attention_mask=None):
        return (self.linear(input_ids.float()),)


def _args(tmp_path, **kw):
    kw = {"report_to": "none", "use_cpu": True, "disable_tqdm": True, **kw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TrainingArguments(str(tmp_path), **kw)


ARG_ERRORS = [
    ("unknown-scheduler", dict(lr_scheduler_type="warp_speed"), "lr_scheduler_type"),
    ("unknown-optim", dict(optim="adamw_quantum"), "optim"),
    ("zero-batch", dict(per_device_train_batch_size=0), "per_device_train_batch_size"),
    ("negative-eval-batch", dict(per_device_eval_batch_size=-2), "per_device_eval_batch_size"),
    ("both-eval-strategy-names", dict(evaluation_strategy="epoch", eval_strategy="steps"), "evaluation_strategy"),
    ("zero-accumulation", dict(gradient_accumulation_steps=0), "gradient_accumulation_steps"),
    ("negative-lr", dict(learning_rate=-1.0), "learning_rate"),
    ("fp16-and-bf16", dict(fp16=True, bf16=True), "bf16"),
    ("bad-precision", dict(precision="17-weird"), "precision"),
]


@pytest.mark.parametrize("name,kwargs,argument", ARG_ERRORS, ids=[c[0] for c in ARG_ERRORS])
def test_bad_arguments_fail_naming_the_argument(name, kwargs, argument, tmp_path) -> None:
    counter = StepCounter()
    with pytest.raises(ValueError, match=argument):
        args = _args(tmp_path, **kwargs)
        HFLTrainer(model=tiny_bert(), args=args, train_dataset=ToyClassification(8), callbacks=[counter]).train()
    assert counter.steps == 0


TRAINER_ERRORS = [
    ("eval-steps-without-eval-dataset", dict(eval_strategy="steps"), {}, ValueError, "eval_dataset"),
    (
        "save-best-without-metric",
        dict(eval_strategy="epoch", save_strategy="best"),
        {"eval_dataset": ToyClassification(4)},
        ValueError,
        "metric_for_best_model",
    ),
    (
        "best-model-mismatched-strategies",
        dict(load_best_model_at_end=True, eval_strategy="epoch", save_strategy="steps", metric_for_best_model="loss"),
        {"eval_dataset": ToyClassification(4)},
        ValueError,
        r"[Ss]ave[_ ]strategy",  # transformers' own message (older releases: "Save strategy")
    ),
    ("empty-train-dataset", {}, {"train_dataset": ToyClassification(0)}, ValueError, "train_dataset"),
    ("model-and-model-init", {}, {"model_init": tiny_bert}, ValueError, "model_init"),
    (
        "tokenizer-and-processing-class",
        {},
        {"tokenizer": object(), "processing_class": object()},
        ValueError,
        "tokenizer",
    ),
    ("uncallable-compute-metrics", {}, {"compute_metrics": 3}, TypeError, "compute_metrics"),
    ("uncallable-collator", {}, {"data_collator": 3}, TypeError, "data_collator"),
    (
        "optimizers-and-cls-kwargs",
        {},
        {
            "optimizers": (torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1), None),
            "optimizer_cls_and_kwargs": (torch.optim.SGD, {"lr": 1}),
        },
        RuntimeError,
        "optimizer_cls_and_kwargs",
    ),
    ("bad-callback", {}, {"callbacks": [object()]}, TypeError, "callbacks"),
    ("unknown-report-to", dict(report_to="carrier_pigeon"), {}, ValueError, "report_to"),
    (
        "batch-metrics-without-compute-result",
        dict(batch_eval_metrics=True),
        {"compute_metrics": lambda p: {}},
        ValueError,
        "compute_result",
    ),
]


@pytest.mark.parametrize("name,arg_kwargs,trainer_kwargs,exc,match", TRAINER_ERRORS, ids=[c[0] for c in TRAINER_ERRORS])
def test_bad_trainer_input_fails_before_training(name, arg_kwargs, trainer_kwargs, exc, match, tmp_path) -> None:
    counter = StepCounter()
    kwargs = {"model": tiny_bert(), "train_dataset": ToyClassification(8), **trainer_kwargs}
    kwargs["callbacks"] = kwargs.get("callbacks", []) + ([counter] if "callbacks" not in trainer_kwargs else [])
    with pytest.raises(exc, match=match):
        HFLTrainer(args=_args(tmp_path, **arg_kwargs), **kwargs).train()
    assert counter.steps == 0


def test_base_model_without_head_is_refused(tmp_path) -> None:
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    with pytest.raises(ValueError, match="model"):
        HFLTrainer(model=BertModel(config), args=_args(tmp_path), train_dataset=ToyClassification(8))


@pytest.mark.parametrize("model_cls", [NoLossModel, LogitsFirstModel])
def test_model_that_returns_no_loss_fails_at_the_first_step(model_cls, tmp_path) -> None:
    counter = StepCounter()
    trainer = HFLTrainer(
        model=model_cls(), args=_args(tmp_path, max_steps=2), train_dataset=ToyClassification(8), callbacks=[counter]
    )
    with pytest.raises(ValueError, match="loss"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_iterable_dataset_without_max_steps(tmp_path) -> None:
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from ()

    with pytest.raises(ValueError, match="max_steps"):
        HFLTrainer(model=tiny_bert(), args=_args(tmp_path), train_dataset=Stream())


def test_train_without_train_dataset(tmp_path) -> None:
    with pytest.raises(ValueError, match="train_dataset"):
        HFLTrainer(model=tiny_bert(), args=_args(tmp_path)).train()


def test_model_or_model_init_is_required(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="model_init"):
        HFLTrainer(args=_args(tmp_path), train_dataset=ToyClassification(8))


def test_resume_from_missing_checkpoint(tmp_path) -> None:
    trainer = HFLTrainer(model=tiny_bert(), args=_args(tmp_path / "out"), train_dataset=ToyClassification(8))
    with pytest.raises(ValueError, match="checkpoint"):
        trainer.train(resume_from_checkpoint=True)
    with pytest.raises(ValueError, match="resume_from_checkpoint"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "nope"))
