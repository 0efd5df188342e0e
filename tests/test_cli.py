"""`LightningCLI` runs of hf_lightning (`HFLightningCLI`, `HFModelModule`, `HFTextDataModule`) from a YAML config: HF
checkpoint folders with the tokenizer, the same weights as `transformers.Trainer` on the same data and arguments,
config errors raised before training, and the `examples/lightning_cli.py` smoke run.

Offline: the tokenizer is trained here on the test texts and the model is a tiny BERT built from its config.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset
from helpers import EXAMPLES, assert_same_weights, import_example, needs_demo_assets
from lightning.pytorch import seed_everything
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

from hf_lightning.cli import HFLightningCLI, HFModelModule, HFTextDataModule, main

pytest.importorskip("jsonargparse")

WORDS = "the cat sat on mat a dog ran in park stocks fell sharply today team won match".split()
LABELS = ["neg", "neutral", "pos"]  # string labels in the files: the data module encodes them in sorted order
BERT = dict(
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=32,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
)
ARGS = dict(
    per_device_train_batch_size=4,
    gradient_accumulation_steps=2,
    learning_rate=1e-3,
    logging_steps=1,
    save_steps=2,
    num_train_epochs=2,
    use_cpu=True,
    report_to="none",
    disable_tqdm=True,
    seed=7,
)
SEED = 42  # `seed_everything` (HFLightningCLI's default): the model is built under it


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.jsonl (20 rows), val.jsonl (4 rows) and a WordLevel tokenizer trained on their texts."""
    root = tmp_path_factory.mktemp("cli_assets")
    rng = random.Random(0)
    rows = [
        {"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))), "label": rng.choice(LABELS)}
        for _ in range(24)
    ]
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:20]))
    (root / "val.jsonl").write_text("\n".join(json.dumps(r) for r in rows[20:]))
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tok.train_from_iterator([r["text"] for r in rows], trainers.WordLevelTrainer(special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    fast.save_pretrained(root / "tokenizer")
    return root


def _config(assets: Path, out: Path, **data: object) -> dict:
    """The YAML config of a tiny BERT (from its config, by `class_path`) on the assets, writing to `out`."""
    config = {
        "vocab_size": len(AutoTokenizer.from_pretrained(assets / "tokenizer")),
        **BERT,
        "id2label": dict(enumerate(LABELS)),
    }
    return {
        "model": {
            "model": {
                "class_path": "transformers.BertForSequenceClassification",
                "init_args": {"config": {"class_path": "transformers.BertConfig", "init_args": config}},
            },
            "args": {"output_dir": str(out), **ARGS},
        },
        "data": {
            "tokenizer": str(assets / "tokenizer"),
            "data_files": {"train": str(assets / "train.jsonl"), "validation": str(assets / "val.jsonl")},
            "eval_split": "validation",
            "cache_dir": str(out.parent / "datasets_cache"),
            **data,
        },
        "trainer": {"logger": False, "enable_progress_bar": False, "enable_model_summary": False},
    }


def _fit(
    config: dict, path: Path, *flags: str, monkeypatch: pytest.MonkeyPatch, subcommand: str = "fit"
) -> HFLightningCLI:
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setattr(sys, "argv", ["hf_lightning.cli"])  # the CLI parses `args`, not pytest's command line
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return main([subcommand, "--config", str(path), *flags])


@pytest.fixture(scope="module")
def cli_run(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[HFLightningCLI, Path]:
    """One `fit` of the YAML config: 2 epochs of 3 optimiser steps (20 rows, batch 4, accumulation 2)."""
    out = tmp_path_factory.mktemp("cli_run") / "out"
    with pytest.MonkeyPatch.context() as monkeypatch:
        cli = _fit(_config(assets, out), out.parent / "config.yaml", monkeypatch=monkeypatch)
    return cli, out


def test_cli_fit_writes_hf_checkpoints_with_the_tokenizer(cli_run: tuple[HFLightningCLI, Path], assets: Path) -> None:
    cli, out = cli_run
    assert isinstance(cli.model, HFModelModule) and isinstance(cli.datamodule, HFTextDataModule)
    assert cli.trainer.max_epochs == 2 and cli.trainer.global_step == 6  # the budget from `model.args`
    assert cli.trainer.default_root_dir == str(out)
    assert sorted(os.listdir(out)) == ["checkpoint-2", "checkpoint-4", "checkpoint-6", "config.yaml"]
    folder = out / "checkpoint-6"
    hf_files = {"config.json", "model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"}
    run_files = {"rng_state.pth", "training_args.bin", "tokenizer.json", "tokenizer_config.json"}
    assert set(os.listdir(folder)) == hf_files | run_files
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 6
    loaded = BertForSequenceClassification.from_pretrained(folder)
    assert_same_weights(loaded, cli.model.model)
    assert loaded.config.id2label == dict(enumerate(LABELS))
    saved, original = AutoTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(assets / "tokenizer")
    assert saved("the cat won today")["input_ids"] == original("the cat won today")["input_ids"]
    assert cli.datamodule.label_names == LABELS
    assert "eval_loss" in cli.trainer.callback_metrics  # Lightning's validation loop on `eval_split`


def test_cli_weights_match_transformers_trainer(cli_run: tuple[HFLightningCLI, Path], assets: Path, tmp_path) -> None:
    """transformers.Trainer on the same rows, tokenizer, arguments and model initialisation, evaluating after each
    epoch as Lightning's validation loop does: identical weights (with dropout), losses and learning rates."""
    cli, _ = cli_run
    tokenizer = AutoTokenizer.from_pretrained(assets / "tokenizer")

    def rows(name: str) -> Dataset:
        items = [json.loads(line) for line in (assets / name).read_text().splitlines()]
        return Dataset.from_list([{**tokenizer(r["text"]), "labels": LABELS.index(r["label"])} for r in items])

    seed_everything(SEED)
    model = BertForSequenceClassification(
        BertConfig(vocab_size=len(tokenizer), **BERT, id2label=dict(enumerate(LABELS)))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = TrainingArguments(str(tmp_path), save_strategy="no", eval_strategy="epoch", **ARGS)
    train, evals = rows("train.jsonl"), rows("val.jsonl")
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=evals, processing_class=tokenizer)
    trainer.train()
    assert trainer.state.global_step == cli.trainer.global_step == 6
    assert_same_weights(cli.model.model, trainer.model)  # torch.equal on every tensor
    ours = [(e["step"], e["loss"], e["learning_rate"]) for e in cli.model.loop.state.log_history if "loss" in e]
    theirs = [(e["step"], e["loss"], e["learning_rate"]) for e in trainer.state.log_history if "loss" in e]
    assert ours == theirs
    # Lightning's validation loop runs HF's evaluation: the same entries in the log history
    ours = [(e["step"], e["epoch"], e["eval_loss"]) for e in cli.model.loop.state.log_history if "eval_loss" in e]
    theirs = [(e["step"], e["epoch"], e["eval_loss"]) for e in trainer.state.log_history if "eval_loss" in e]
    assert ours == theirs
    eval_loss = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e][-1]
    assert cli.trainer.callback_metrics["eval_loss"].item() == pytest.approx(eval_loss, abs=1e-6)


def test_cli_loads_a_model_by_path_with_the_task_auto_class(assets: Path, tmp_path, monkeypatch) -> None:
    """`model: <folder>` + `task` + `model_kwargs` (a new 3-label head on a 2-label checkpoint);
    `trainer.max_steps` overrides the HF budget."""
    tokenizer = AutoTokenizer.from_pretrained(assets / "tokenizer")
    BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), **BERT)).save_pretrained(tmp_path / "bert")
    config = _config(assets, tmp_path / "out", text_column="text", max_length=6, max_train_samples=8)
    config["model"].update(
        model=str(tmp_path / "bert"),
        task="text-classification",
        model_kwargs={"num_labels": 3, "ignore_mismatched_sizes": True},
    )
    cli = _fit(config, tmp_path / "config.yaml", "--trainer.max_steps", "1", monkeypatch=monkeypatch)
    assert cli.model.model.config.num_labels == 3 and cli.trainer.global_step == 1
    assert max(len(ids) for ids in cli.datamodule.train_dataset["input_ids"]) == 6
    assert len(cli.datamodule.train_dataset) == 8
    assert sorted(os.listdir(tmp_path / "out")) == ["checkpoint-1", "config.yaml"]


def test_bad_config_fails_before_training(assets: Path, tmp_path, monkeypatch, capsys) -> None:
    config = _config(assets, tmp_path / "out")
    config["model"]["task"] = "text-clasification"
    with pytest.raises(SystemExit):
        _fit(config, tmp_path / "config.yaml", monkeypatch=monkeypatch)
    assert 'Parser key "model.task"' in capsys.readouterr().err
    config = _config(assets, tmp_path / "out", text_column="body")
    with pytest.raises(ValueError, match=r"`text_column`='body' is not a column of the train split"):
        _fit(config, tmp_path / "config.yaml", monkeypatch=monkeypatch)
    config = _config(assets, tmp_path / "out")
    config["model"]["args"]["num_train_epochs"] = 2.5
    with pytest.raises(ValueError, match=r"`args.num_train_epochs`=2.5: Lightning runs whole epochs"):
        _fit(config, tmp_path / "config.yaml", monkeypatch=monkeypatch)
    assert not (tmp_path / "out").exists() or not any(
        p.name.startswith("checkpoint") for p in (tmp_path / "out").iterdir()
    )
    with pytest.raises(ValueError, match="`task` must be one of"):
        HFModelModule(str(tmp_path), task="summarization")
    with pytest.raises(ValueError, match="`model_kwargs`"):
        HFModelModule(torch.nn.Linear(2, 2), model_kwargs={"num_labels": 2})
    with pytest.raises(ValueError, match="`data_files`"):
        HFTextDataModule(assets / "tokenizer", data_files="rows.xml").load_splits()


@needs_demo_assets
def test_lightning_cli_example_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """`examples/lightning_cli.py fit --config examples/configs/lightning_cli.yaml`, briefly (in this process: a
    fresh interpreter would spend most of the time importing)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sys, "argv", ["lightning_cli.py"])
    flags = ["fit", "--config", str(EXAMPLES / "configs" / "lightning_cli.yaml"), "--trainer.max_steps", "2"]
    flags += ["--data.max_train_samples", "8", "--data.max_eval_samples", "4", "--data.max_length", "32"]
    flags += ["--model.args.per_device_train_batch_size", "2", "--model.args.output_dir", str(tmp_path)]
    flags += ["--trainer.enable_progress_bar", "false", "--trainer.logger", "false"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import_example("lightning_cli").BBCNewsCLI(args=flags)
    assert re.search(r"Validation loss \d+\.\d{4} after 2 steps", capsys.readouterr().out)
    assert {"model.safetensors", "tokenizer.json", "trainer_state.json"} <= set(os.listdir(tmp_path / "checkpoint-2"))


def _test_config(assets: Path, out: Path) -> dict:
    """`_config` with `val.jsonl` as the `test_split` too."""
    config = _config(assets, out)
    config["data"]["test_split"] = "validation"
    return config


def test_cli_test_and_predict_are_hfs_evaluation(assets: Path, tmp_path, monkeypatch) -> None:
    """`test` gives HF's metrics of `test_split` (prefixed `test_`), `predict` HF's `prediction_step` logits: what
    `transformers.Trainer` computes for the same model and rows (`forward` gets the batch as keywords)."""
    config = _test_config(assets, tmp_path / "test")
    tested = _fit(config, tmp_path / "test.yaml", monkeypatch=monkeypatch, subcommand="test")
    metrics = tested.trainer.callback_metrics
    config = _test_config(assets, tmp_path / "predict")
    predicted = _fit(config, tmp_path / "predict.yaml", monkeypatch=monkeypatch, subcommand="predict")
    logits = torch.cat(predicted.trainer.predict_loop.predictions)
    tokenizer = AutoTokenizer.from_pretrained(assets / "tokenizer")
    items = [json.loads(line) for line in (assets / "val.jsonl").read_text().splitlines()]
    rows = Dataset.from_list([{**tokenizer(r["text"]), "labels": LABELS.index(r["label"])} for r in items])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = TrainingArguments(str(tmp_path / "hf"), **ARGS)
    hf = Trainer(model=tested.model.model, args=args, processing_class=tokenizer)
    expected = hf.evaluate(rows, metric_key_prefix="test")
    assert metrics["test_loss"].item() == pytest.approx(expected["test_loss"], abs=1e-6)
    hf = Trainer(model=predicted.model.model, args=args, processing_class=tokenizer)
    torch.testing.assert_close(logits, torch.as_tensor(hf.predict(rows).predictions))


def test_cli_trainer_clip_and_accumulation_are_the_hf_fields(assets: Path, tmp_path, monkeypatch) -> None:
    """`--trainer.gradient_clip_val` / `--trainer.accumulate_grad_batches` (Lightning refuses them under manual
    optimisation) become `max_grad_norm` / `gradient_accumulation_steps`: the run of the HF fields."""
    config = _config(assets, tmp_path / "a")
    del config["model"]["args"]["gradient_accumulation_steps"]
    flags = ["--trainer.gradient_clip_val", "0.5", "--trainer.accumulate_grad_batches", "2"]
    mapped = _fit(config, tmp_path / "a.yaml", *flags, monkeypatch=monkeypatch)
    args = mapped.model.args
    assert (args.max_grad_norm, args.gradient_accumulation_steps) == (0.5, 2)
    assert mapped.trainer.gradient_clip_val is None and mapped.trainer.accumulate_grad_batches == 1
    config = _config(assets, tmp_path / "b")
    fields = _fit(config, tmp_path / "b.yaml", "--model.args.max_grad_norm", "0.5", monkeypatch=monkeypatch)
    assert mapped.trainer.global_step == fields.trainer.global_step == 6
    assert_same_weights(mapped.model.model, fields.model.model)


def test_cli_honours_the_hf_arguments(assets: Path, tmp_path, monkeypatch) -> None:
    """`--model.args.precision/strategy/report_to/eval_strategy` were silently ignored: now the trainer runs in the
    precision and strategy they name, HF evaluates at `eval_steps` (Lightning's own validation loop off) and the CSV
    logger of `report_to` gets every log at HF's step. A value contradicting the trainer's is refused."""
    from lightning.pytorch.strategies import DDPStrategy

    out = tmp_path / "out"
    flags = ["--model.args.precision", "bf16-mixed", "--model.args.strategy", "ddp", "--model.args.devices", "1"]
    flags += ["--model.args.eval_strategy", "steps", "--model.args.eval_steps", "2", "--model.args.report_to", "csv"]
    environ = dict(os.environ)
    try:
        cli = _fit(_config(assets, out), tmp_path / "config.yaml", *flags, monkeypatch=monkeypatch)
    finally:  # Lightning's DDP keeps its group and sets LOCAL_RANK, MASTER_PORT ...: later tests would see a launcher
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(environ)
    assert cli.trainer.precision == "bf16-mixed" and isinstance(cli.trainer.strategy, DDPStrategy)
    assert cli.trainer.limit_val_batches == 0
    history = cli.model.loop.state.log_history
    assert [e["step"] for e in history if "eval_loss" in e] == [2, 4, 6]
    with open(out / "csv_logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(float(r["step"])) for r in rows if r.get("eval_loss")] == [2, 4, 6]
    with pytest.raises(ValueError, match=r"precision='bf16-mixed' and `trainer.precision`='32-true'"):
        _fit(
            _config(assets, tmp_path / "x"),
            tmp_path / "x.yaml",
            "--model.args.precision",
            "bf16-mixed",
            "--trainer.precision",
            "32-true",
            monkeypatch=monkeypatch,
        )
