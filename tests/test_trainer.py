"""The Trainer facade: seed 002's script, HF's public attributes, models, optimisers and loss hooks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import transformers
from datasets import Dataset
from helpers import ToyClassification, assert_same_weights, run_job, tiny_bert, train_logs
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    PreTrainedTokenizerFast,
    TrainerState,
)
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.trainer_callback import CallbackHandler

import hf_lightning
from hf_lightning import Trainer, TrainingArguments

SENTENCES = [
    ("the market rallied after strong earnings", 1),
    ("the team lost the final match at home", 0),
    ("shares fell as profits dropped sharply", 1),
    ("the striker scored twice in the derby", 0),
    ("the bank raised interest rates again", 1),
    ("the coach praised the young players", 0),
    ("investors sold stocks amid inflation fears", 1),
    ("fans celebrated the cup victory", 0),
] * 3


def _tokenizer() -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer trained here, so the test needs no download."""
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tok.train_from_iterator([s for s, _ in SENTENCES], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )


def _seed002_run(impl: str, out: str) -> tuple:
    """Seed 002's script with only the import changed (a local tiny model/tokenizer instead of hub names)."""
    if impl == "hf":
        from transformers import Trainer, TrainingArguments

        def make_args():
            return TrainingArguments(out, eval_strategy="epoch", report_to="none", disable_tqdm=True, use_cpu=True)
    else:
        from hf_lightning import Trainer, TrainingArguments

        def make_args():
            return TrainingArguments(
                out, evaluation_strategy="epoch", report_to="none", disable_tqdm=True, use_cpu=True
            )

    tokenizer = _tokenizer()
    raw = Dataset.from_dict({"sentence": [s for s, _ in SENTENCES], "label": [lab for _, lab in SENTENCES]})
    tokenized = raw.map(lambda ex: tokenizer(ex["sentence"], truncation=True), batched=True)
    tokenized = tokenized.train_test_split(test_size=0.25, seed=0)
    data_collator = DataCollatorWithPadding(tokenizer=tokenizer)

    def compute_metrics(eval_preds):
        logits, labels = eval_preds
        predictions = np.argmax(logits, axis=-1)
        return {"accuracy": float((predictions == labels).mean())}

    training_args = make_args()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
    )
    model = BertForSequenceClassification(config)
    kwargs = {"tokenizer": tokenizer} if impl == "hfl" else {"processing_class": tokenizer}
    trainer = Trainer(
        model,
        training_args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["test"],
        data_collator=data_collator,
        compute_metrics=compute_metrics,
        **kwargs,
    )
    trainer.train()
    return trainer


def test_seed002_script_runs_with_only_the_import_changed(tmp_path) -> None:
    with pytest.warns(FutureWarning):
        hfl = _seed002_run("hfl", str(tmp_path / "hfl"))
    hf = _seed002_run("hf", str(tmp_path / "hf"))
    assert_same_weights(hf.model, hfl.model)
    evals = [e for e in hfl.state.log_history if "eval_accuracy" in e]
    assert [e["epoch"] for e in evals] == [1.0, 2.0, 3.0]
    assert evals == [
        {k: v for k, v in e.items() if "runtime" not in k and "per_second" not in k}
        | {k: v for k, v in h.items() if "runtime" in k or "per_second" in k}
        for e, h in zip([e for e in hf.state.log_history if "eval_accuracy" in e], evals)
    ]
    assert hfl.processing_class is not None
    assert (tmp_path / "hfl" / "checkpoint-9" / "tokenizer.json").is_file()


def test_public_attributes_and_train_output(tmp_path) -> None:
    trainer = run_job("hfl", str(tmp_path), max_steps=3)
    assert isinstance(trainer.state, TrainerState)
    assert isinstance(trainer.args, TrainingArguments)
    assert isinstance(trainer.callback_handler, CallbackHandler)
    assert isinstance(trainer.optimizer, torch.optim.AdamW) and trainer.optimizer.defaults["fused"]
    assert trainer.lr_scheduler is not None and trainer.model is trainer.callback_handler.model
    assert trainer.train_dataset is not None and trainer.eval_dataset is None
    assert trainer.data_collator is not None and trainer.processing_class is None
    assert trainer.lightning_trainer.global_step == 3 == trainer.state.global_step
    out = trainer.train()
    assert out.global_step == 3
    # as in HF, the progress/printer callback pops `total_flos` from the logged (and returned) metrics
    assert set(out.metrics) == {
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "train_loss",
        "epoch",
    }
    assert trainer.state.total_flos > 0


def test_default_args_use_tmp_trainer(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    trainer = Trainer(model=tiny_bert(), train_dataset=ToyClassification(8))
    assert trainer.args.output_dir == "tmp_trainer"


def test_transformers_training_arguments_are_accepted(tmp_path) -> None:
    import transformers

    args = transformers.TrainingArguments(str(tmp_path), max_steps=2, report_to="none", use_cpu=True)
    trainer = Trainer(model=tiny_bert(), args=args, train_dataset=ToyClassification(8))
    assert isinstance(trainer.args, TrainingArguments)
    assert trainer.train().global_step == 2


@pytest.mark.parametrize("optim", ["adamw_torch", "sgd", "adagrad", "adafactor", "rmsprop"])
def test_optimizers_match_transformers(optim: str, tmp_path) -> None:
    overrides = dict(optim=optim, max_steps=4, learning_rate=1e-2)
    hf = run_job("hf", str(tmp_path / "hf"), **overrides)
    hfl = run_job("hfl", str(tmp_path / "hfl"), **overrides)
    assert type(hf.optimizer.optimizer if hasattr(hf.optimizer, "optimizer") else hf.optimizer) is type(hfl.optimizer)
    assert_same_weights(hf.model, hfl.model)


def test_optimizers_argument_and_optimizer_cls_and_kwargs_are_honoured(tmp_path) -> None:
    model = tiny_bert()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    args = TrainingArguments(str(tmp_path), max_steps=3, report_to="none", use_cpu=True, logging_steps=1)
    trainer = Trainer(model=model, args=args, train_dataset=ToyClassification(12), optimizers=(opt, sched))
    trainer.train()
    assert trainer.optimizer is opt and trainer.lr_scheduler is sched
    assert [e["learning_rate"] for e in train_logs(trainer)] == [0.05, 0.025, 0.0125]

    trainer = Trainer(
        model=tiny_bert(),
        args=args,
        train_dataset=ToyClassification(12),
        optimizer_cls_and_kwargs=(torch.optim.Adagrad, {"lr": 0.01}),
    )
    trainer.train()
    assert isinstance(trainer.optimizer, torch.optim.Adagrad)


class LossFirstModule(nn.Module):
    """A plain module whose forward returns (loss, logits)."""

    def __init__(self, as_output: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.head = nn.Linear(8, 3)
        self.as_output = as_output

    def forward(self, input_ids, labels=None, attention_mask=None):
        logits = self.head(self.emb(input_ids).mean(1))
        loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits) if self.as_output else (loss, logits)


@pytest.mark.parametrize("as_output", [False, True])
def test_plain_module_returning_loss_first(as_output: bool, tmp_path) -> None:
    args = TrainingArguments(str(tmp_path), max_steps=3, report_to="none", use_cpu=True, save_steps=3)
    trainer = Trainer(model=LossFirstModule(as_output), args=args, train_dataset=ToyClassification(12))
    before = trainer.model.head.weight.detach().clone()
    trainer.train()
    assert not torch.equal(before, trainer.model.head.weight)
    assert (tmp_path / "checkpoint-3" / "model.safetensors").is_file()


def test_model_is_put_in_train_mode(tmp_path) -> None:
    model = tiny_bert()
    model.eval()
    seen = []

    class Spy(hf_lightning.TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            seen.append(model.training)

    args = TrainingArguments(str(tmp_path), max_steps=2, report_to="none", use_cpu=True)
    Trainer(model=model, args=args, train_dataset=ToyClassification(8), callbacks=[Spy()]).train()
    assert seen == [True, True]


def test_steps_do_not_walk_the_model_for_its_parameters(tmp_path, monkeypatch) -> None:
    """Clipping and `zero_grad` use the parameter list taken at train start: `model.parameters()`, a walk over every
    submodule (~0.4 ms on a tiny BERT), is not called per step."""
    calls = []
    parameters = nn.Module.parameters
    monkeypatch.setattr(
        nn.Module, "parameters", lambda self, recurse=True: calls.append(1) or parameters(self, recurse)
    )

    def walks(steps: int) -> int:
        calls.clear()
        args = TrainingArguments(
            str(tmp_path / str(steps)), max_steps=steps, report_to="none", use_cpu=True, save_strategy="no"
        )
        Trainer(model=tiny_bert(), args=args, train_dataset=ToyClassification(40)).train()
        return len(calls)

    assert walks(8) == walks(2)


def test_compute_loss_override_and_compute_loss_func_receive_num_items(tmp_path) -> None:
    seen = []

    def loss_func(outputs, labels, num_items_in_batch=None):
        seen.append(int(num_items_in_batch))
        return nn.functional.cross_entropy(outputs.logits, labels, reduction="sum") / num_items_in_batch

    overrides = dict(gradient_accumulation_steps=3, max_grad_norm=0.5, trainer_kwargs={"compute_loss_func": loss_func})
    hfl = run_job("hfl", str(tmp_path / "hfl"), **overrides)
    assert seen[:3] == [12, 12, 12] and seen[3:5] == [8, 8]
    hf = run_job("hf", str(tmp_path / "hf"), **overrides)
    assert_same_weights(hf.model, hfl.model)
    assert train_logs(hf) == train_logs(hfl)

    class MyTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self.calls = getattr(self, "calls", 0) + 1
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    args = TrainingArguments(str(tmp_path / "sub"), max_steps=2, report_to="none", use_cpu=True)
    trainer = MyTrainer(model=tiny_bert(), args=args, train_dataset=ToyClassification(8))
    trainer.train()
    assert trainer.calls == 2


def test_iterable_dataset_with_max_steps(tmp_path) -> None:
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield from (ToyClassification(40, seed=3)[i] for i in range(40))

    args = TrainingArguments(str(tmp_path), max_steps=5, report_to="none", use_cpu=True, logging_steps=1)
    trainer = Trainer(model=tiny_bert(), args=args, train_dataset=Stream())
    assert trainer.train().global_step == 5
    assert len(train_logs(trainer)) == 5


def test_logging_first_step_and_ratio_steps_match_transformers(tmp_path) -> None:
    overrides = dict(logging_steps=0.5, logging_first_step=True, num_train_epochs=2)
    hf = run_job("hf", str(tmp_path / "hf"), **overrides)
    hfl = run_job("hfl", str(tmp_path / "hfl"), **overrides)
    assert [e["step"] for e in train_logs(hfl)] == [e["step"] for e in train_logs(hf)] == [1, 5, 10]
    assert train_logs(hf) == train_logs(hfl)


def test_trainer_log_appends_with_epoch_and_step(tmp_path) -> None:
    trainer = run_job("hfl", str(tmp_path), max_steps=2)
    with warnings.catch_warnings():
        trainer.log({"custom": 1.5})
    assert trainer.state.log_history[-1] == {"custom": 1.5, "epoch": trainer.state.epoch, "step": 2}


def test_parameter_and_optimizer_helpers_match_transformers(tmp_path) -> None:
    """`get_num_trainable_parameters`, `get_learning_rates`, `get_optimizer_group` (transformers' helpers)."""
    results = {}
    for impl in ("hf", "hfl"):
        trainer = run_job(impl, str(tmp_path / impl), max_steps=3, warmup_steps=2, weight_decay=0.1)
        trainer.model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
        names = {p: n for n, p in trainer.model.named_parameters()}
        first = next(trainer.model.parameters())
        group = trainer.get_optimizer_group(first)
        results[impl] = (
            trainer.get_num_trainable_parameters(),
            trainer.get_learning_rates(),
            [[names[p] for p in params] for params in trainer.get_optimizer_group()],
            {k: v for k, v in group.items() if k != "params"},
            any(p is first for p in group["params"]),
        )
        fresh = (transformers.Trainer if impl == "hf" else Trainer)(model=tiny_bert(), args=trainer.args)
        with pytest.raises(ValueError, match="optimizer is None"):
            fresh.get_learning_rates()
    assert results["hf"] == results["hfl"]
    assert results["hfl"][0] == sum(p.numel() for p in tiny_bert().parameters()) - 50 * 16
