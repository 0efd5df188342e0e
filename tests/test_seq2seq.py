"""`Seq2SeqTrainer` / `Seq2SeqTrainingArguments`: differential tests against transformers' `Seq2SeqTrainer`.

A tiny T5 (and GPT-2, BART, EncoderDecoderModel) is built from a config and a character-level tokenizer is built
in the test, so nothing is downloaded. The task is reversing short words (`text_target=` tokenisation,
`DataCollatorForSeq2Seq`). The same job runs on transformers ("hf") and hf_lightning ("hfl"); generated ids,
labels, metrics, `log_history` and final weights must be identical. Plus: a 2-process gloo DDP evaluation whose
ranks generate different lengths, the arguments, the ROUGE/BLEU helpers and bad input.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
import torch
import transformers
from helpers import assert_same_weights, make_args, run_gloo_ranks
from packaging.version import Version
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from torchmetrics.functional.text import sacre_bleu_score
from torchmetrics.functional.text.rouge import rouge_score
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    DataCollatorForSeq2Seq,
    DataCollatorWithPadding,
    EncoderDecoderConfig,
    EncoderDecoderModel,
    EvalPrediction,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    HfArgumentParser,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

import hf_lightning
from hf_lightning import Seq2SeqTrainer, Seq2SeqTrainingArguments, compat
from hf_lightning.metrics import bleu_metrics, rouge_metrics

SPEED_KEYS = ("runtime", "per_second", "preparation_time")
WORDS = "abc hello world xyz lightning trainer seq gen t longer words here cat sat on the mat dog ran far".split()


def char_tokenizer(padding_side: str = "right") -> PreTrainedTokenizerFast:
    """Characters a-z and space; `</s>` appended to every sequence; pad id 0, eos id 1."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz ")}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", padding_side=padding_side
    )


def reverse_words(tokenizer: Any, n: int, offset: int = 0) -> datasets.Dataset:
    words = [" ".join(WORDS[(offset + i + j) % len(WORDS)] for j in range(1 + i % 3)) for i in range(n)]
    raw = datasets.Dataset.from_dict({"src": words, "tgt": [w[::-1] for w in words]})
    return raw.map(lambda b: tokenizer(b["src"], text_target=b["tgt"]), batched=True, remove_columns=["src", "tgt"])


def tiny_t5(seed: int = 0) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=30, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, decoder_start_token_id=0,
        pad_token_id=0, eos_token_id=1, dropout_rate=0.0, attn_implementation="eager",
    )  # fmt: skip
    return T5ForConditionalGeneration(config)


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=30, n_embd=16, n_layer=2, n_head=2, n_positions=128, pad_token_id=0, eos_token_id=1,
        bos_token_id=1, attn_implementation="eager",
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def tiny_bart(seed: int = 0) -> BartForConditionalGeneration:
    torch.manual_seed(seed)
    config = BartConfig(
        vocab_size=30, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
        pad_token_id=0, eos_token_id=1, bos_token_id=1, decoder_start_token_id=1, forced_eos_token_id=None,
        attn_implementation="eager",
    )  # fmt: skip
    return BartForConditionalGeneration(config)


def tiny_encoder_decoder(seed: int = 0) -> EncoderDecoderModel:
    torch.manual_seed(seed)
    bert = dict(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                max_position_embeddings=64, pad_token_id=0)  # fmt: skip
    config = EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(**bert), BertConfig(**bert))
    model = EncoderDecoderModel(config=config)
    model.config.decoder_start_token_id, model.config.pad_token_id, model.config.eos_token_id = 1, 0, 1
    model.generation_config.decoder_start_token_id = 1
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = 0, 1
    return model


def _args(impl: str, out: Path, **overrides: Any) -> Any:
    defaults = dict(per_device_train_batch_size=4, per_device_eval_batch_size=3, learning_rate=5e-3, max_steps=3,
                    logging_steps=1, save_strategy="no", predict_with_generate=True)  # fmt: skip
    return make_args(impl, str(out), seq2seq=True, **{**defaults, **overrides})


def make_trainer(impl: str, out: Path, model: Any, tokenizer: Any, n_eval: int = 5, **overrides: Any) -> Any:
    cls = transformers.Seq2SeqTrainer if impl == "hf" else Seq2SeqTrainer
    return cls(
        model=model,
        args=_args(impl, out, **overrides),
        train_dataset=reverse_words(tokenizer, 16),
        eval_dataset=reverse_words(tokenizer, n_eval, offset=5),
        processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        compute_metrics=rouge_metrics(tokenizer),
    )


def _blank(metrics: dict) -> dict:
    return {k: (None if any(s in k for s in SPEED_KEYS) else v) for k, v in metrics.items()}


def _logs(trainer: Any) -> list[dict]:
    return [_blank(e) for e in trainer.state.log_history]


def _run_t5(impl: str, out: Path, case: str) -> dict[str, Any]:
    tokenizer = char_tokenizer()
    overrides: dict[str, Any] = {"eval_strategy": "steps", "eval_steps": 2}
    gen_kwargs: dict[str, Any] = {}
    if case == "args_beams":
        overrides.update(generation_num_beams=2, generation_max_length=12)
    elif case == "kwargs_beams":
        gen_kwargs = {"num_beams": 3, "max_new_tokens": 6}
    elif case == "accumulation":  # BatchEncoding windows must still count num_items_in_batch
        overrides.update(gradient_accumulation_steps=2)
    trainer = make_trainer(impl, out / impl, tiny_t5(), tokenizer, **overrides)
    trainer.train()
    evaluated = _blank(trainer.evaluate(**gen_kwargs))
    predicted = trainer.predict(reverse_words(tokenizer, 5, offset=11), **gen_kwargs)
    return {"trainer": trainer, "evaluate": evaluated, "predict": predicted}


@pytest.mark.parametrize("case", ["greedy", "args_beams", "kwargs_beams", "accumulation"])
def test_t5_train_evaluate_predict_match_transformers(case: str, tmp_path: Path) -> None:
    hf, ours = _run_t5("hf", tmp_path, case), _run_t5("hfl", tmp_path, case)
    assert _logs(ours["trainer"]) == _logs(hf["trainer"])
    assert_same_weights(ours["trainer"].model, hf["trainer"].model)
    assert ours["evaluate"] == hf["evaluate"]
    assert {"eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_gen_len"} <= set(ours["evaluate"])
    p_hf, p_ours = hf["predict"], ours["predict"]
    np.testing.assert_array_equal(p_ours.predictions, p_hf.predictions)
    np.testing.assert_array_equal(p_ours.label_ids, p_hf.label_ids)
    assert _blank(p_ours.metrics) == _blank(p_hf.metrics)
    assert np.issubdtype(p_ours.predictions.dtype, np.integer)
    if case == "kwargs_beams":  # max_new_tokens=6 pads to the generation config's max_length (20), as HF
        assert p_ours.predictions.shape[1] == 20


def test_predictions_padded_across_batches_like_transformers(tmp_path: Path) -> None:
    """Generation longer than `max_length` in one batch only: batches are padded to one width with -100."""
    tokenizer = char_tokenizer()
    results = {}
    for impl in ("hf", "hfl"):
        model = tiny_t5()
        model.generation_config.max_length = 4
        trainer = make_trainer(impl, tmp_path / impl, model, tokenizer)
        ds = reverse_words(tokenizer, 5, offset=2)
        results[impl] = [trainer.predict(ds, max_new_tokens=n) for n in (2, 8)]
    for ours, hf in zip(results["hfl"], results["hf"]):
        np.testing.assert_array_equal(ours.predictions, hf.predictions)
        np.testing.assert_array_equal(ours.label_ids, hf.label_ids)
    assert (results["hfl"][1].label_ids == -100).any()


def test_without_predict_with_generate_is_the_base_trainer(tmp_path: Path) -> None:
    tokenizer = char_tokenizer()
    out = {}
    for impl in ("hf", "hfl"):
        trainer = make_trainer(impl, tmp_path / impl, tiny_t5(), tokenizer, predict_with_generate=False)
        trainer.compute_metrics = None
        pred = trainer.predict(reverse_words(tokenizer, 4))
        out[impl] = (_blank(trainer.evaluate()), pred)
    assert out["hfl"][0] == out["hf"][0]
    np.testing.assert_array_equal(out["hfl"][1].predictions[0], out["hf"][1].predictions[0])  # logits
    assert out["hfl"][1].predictions[0].ndim == 3


def test_predict_without_labels_matches_transformers(tmp_path: Path) -> None:
    """Unlabelled data: DataCollatorForSeq2Seq gives `labels=None`, which transformers passes to the model (and
    fails), so its run uses a collator without the key; ours works with either."""
    tokenizer = char_tokenizer()
    ds = datasets.Dataset.from_dict(tokenizer(["abc", "hello there", "t"]).data)
    preds = {}
    for impl in ("hf", "hfl"):
        trainer = make_trainer(impl, tmp_path / impl, tiny_t5(), tokenizer)
        if impl == "hf":
            trainer.data_collator = DataCollatorWithPadding(tokenizer)
        preds[impl] = trainer.predict(ds, num_beams=2)
    assert preds["hfl"].label_ids is None
    np.testing.assert_array_equal(preds["hfl"].predictions, preds["hf"].predictions)
    assert _blank(preds["hfl"].metrics) == _blank(preds["hf"].metrics)


def test_decoder_only_generation_eval_matches_transformers(tmp_path: Path) -> None:
    """GPT-2 (left padding): generated ids include the prompt; prompts longer than max_length are not padded."""
    tokenizer = char_tokenizer(padding_side="left")
    words = ["a", "hello world again and again", "xyz", "the cat sat on the mat", "t", "dog"]
    raw = datasets.Dataset.from_dict({"text": words})
    ds = raw.map(lambda b: {**tokenizer(b["text"]), "labels": tokenizer(b["text"])["input_ids"]}, batched=True)
    ds = ds.remove_columns(["text"])
    results = {}
    for impl in ("hf", "hfl"):
        model = tiny_gpt2()
        trainer = make_trainer(impl, tmp_path / impl, model, tokenizer)
        trainer.train_dataset = ds
        trainer.train()
        results[impl] = (_blank(trainer.evaluate(ds, max_new_tokens=5)), trainer.predict(ds, max_new_tokens=5))
    assert results["hfl"][0] == results["hf"][0]
    ours, hf = results["hfl"][1], results["hf"][1]
    np.testing.assert_array_equal(ours.predictions, hf.predictions)
    np.testing.assert_array_equal(ours.label_ids, hf.label_ids)
    assert ours.predictions.shape[1] > 20 and (ours.predictions == -100).any()


@pytest.mark.parametrize("build", [tiny_t5, tiny_gpt2, tiny_bart], ids=["t5", "gpt2", "bart"])
def test_default_ignore_keys_follow_the_installed_transformers(build: Any, tmp_path: Path) -> None:
    """Canary for the default `ignore_keys`: transformers drops the key/value cache from the gathered outputs by
    name (`past_key_values` up to 5.23, `cache` from 5.24); `prediction_step` without `ignore_keys` keeps exactly
    the outputs transformers keeps, with the model's cache on, and never a `Cache` object."""
    from transformers.cache_utils import Cache

    tokenizer = char_tokenizer()
    batch = DataCollatorForSeq2Seq(tokenizer)([reverse_words(tokenizer, 2)[i] for i in range(2)])
    if build is tiny_gpt2:
        batch = {"input_ids": batch["input_ids"], "labels": batch["input_ids"]}
    outputs = {}
    for impl in ("hf", "hfl"):
        model = build()
        model.config.use_cache = True
        model.eval()
        trainer = make_trainer(impl, tmp_path / impl, model, tokenizer, predict_with_generate=False)
        outputs[impl] = trainer.prediction_step(model, dict(batch), prediction_loss_only=False)
    (hf_loss, hf_logits, _), (loss, logits, _) = outputs["hf"], outputs["hfl"]
    assert torch.equal(loss, hf_loss)
    hf_logits = hf_logits if isinstance(hf_logits, tuple) else (hf_logits,)
    logits = logits if isinstance(logits, tuple) else (logits,)
    assert len(logits) == len(hf_logits) and not any(isinstance(v, Cache) for v in logits)
    for ours, theirs in zip(logits, hf_logits):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("build", [tiny_bart, tiny_encoder_decoder], ids=["bart", "encoder_decoder"])
def test_bart_and_encoder_decoder_match_transformers(build: Any, tmp_path: Path) -> None:
    tokenizer = char_tokenizer()
    results = {}
    for impl in ("hf", "hfl"):
        trainer = make_trainer(impl, tmp_path / impl, build(), tokenizer, max_steps=2, generation_max_length=10)
        trainer.train()
        results[impl] = (trainer, _blank(trainer.evaluate()))
    assert results["hfl"][1] == results["hf"][1]
    assert "eval_rougeL" in results["hfl"][1]
    assert_same_weights(results["hfl"][0].model, results["hf"][0].model)


# ---- arguments ---------------------------------------------------------------------------------------------


def test_arguments_fields_defaults_and_to_dict_match_transformers(tmp_path: Path) -> None:
    ours = _args("hfl", tmp_path, generation_config=GenerationConfig(max_length=7, num_beams=2))
    hf = _args("hf", tmp_path, generation_config=GenerationConfig(max_length=7, num_beams=2))
    d_ours, d_hf = ours.to_dict(), hf.to_dict()
    assert d_ours["generation_config"] == d_hf["generation_config"] and isinstance(d_ours["generation_config"], dict)
    for name in ("sortish_sampler", "predict_with_generate", "generation_max_length", "generation_num_beams"):
        assert d_ours[name] == d_hf[name]
    json.loads(ours.to_json_string())
    assert isinstance(ours, hf_lightning.TrainingArguments) and ours.accelerator == "auto"


def test_arguments_parse_from_the_command_line_with_v4_names(tmp_path: Path) -> None:
    parser = HfArgumentParser(Seq2SeqTrainingArguments)
    argv = ["--output_dir", str(tmp_path), "--predict_with_generate", "--generation_num_beams", "3",
            "--generation_config", str(tmp_path / "gen"), "--evaluation_strategy", "epoch",
            "--devices", "1"]  # fmt: skip
    with pytest.warns(FutureWarning, match="evaluation_strategy"):
        (args,) = parser.parse_args_into_dataclasses(argv)
    assert args.predict_with_generate and args.generation_num_beams == 3
    assert str(args.generation_config) == str(tmp_path / "gen") and args.eval_strategy == "epoch" and args.devices == 1
    (hf_args,) = HfArgumentParser(transformers.Seq2SeqTrainingArguments).parse_args_into_dataclasses(argv[:-4])
    assert type(hf_args.generation_config) is type(args.generation_config)  # a Path, as transformers parses it


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("generation_max_length", 0),
        ("generation_num_beams", -1),
        ("generation_num_beams", 1.5),
        ("generation_config", 3),
    ],
)
def test_bad_generation_arguments_name_the_argument(field: str, value: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=field):
        Seq2SeqTrainingArguments(str(tmp_path), **{field: value})


def test_transformers_arguments_are_converted(tmp_path: Path) -> None:
    tokenizer = char_tokenizer()
    trainer = Seq2SeqTrainer(
        model=tiny_t5(), args=_args("hf", tmp_path, generation_num_beams=2), processing_class=tokenizer
    )
    assert isinstance(trainer.args, Seq2SeqTrainingArguments)
    assert trainer.args.predict_with_generate and trainer.args.generation_num_beams == 2
    plain = Seq2SeqTrainer(model=tiny_t5(), args=hf_lightning.TrainingArguments(str(tmp_path), report_to="none"))
    assert isinstance(plain.args, Seq2SeqTrainingArguments) and not plain.args.predict_with_generate


@pytest.mark.parametrize("form", ["object", "folder", "file"])
def test_generation_config_argument_replaces_the_models(form: str, tmp_path: Path) -> None:
    config = GenerationConfig(max_length=9, num_beams=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    config.save_pretrained(tmp_path / "gen")
    value = {
        "object": config,
        "folder": str(tmp_path / "gen"),
        "file": str(tmp_path / "gen" / "generation_config.json"),
    }
    tokenizer = char_tokenizer()
    gens = {}
    for impl in ("hf", "hfl"):
        trainer = make_trainer(impl, tmp_path / impl, tiny_t5(), tokenizer, generation_config=value[form])
        assert trainer.model.generation_config.max_length == 9 and trainer.model.generation_config.num_beams == 2
        gens[impl] = trainer.predict(reverse_words(tokenizer, 4)).predictions
    np.testing.assert_array_equal(gens["hfl"], gens["hf"])
    # transformers' own generate() returns one column more for this config before 5.3 (both trainers alike, above)
    assert gens["hfl"].shape[1] == (9 if compat.TRANSFORMERS_VERSION >= Version("5.3.0") else 10)


def test_invalid_generation_config_fails_at_construction(tmp_path: Path) -> None:
    bad = GenerationConfig(num_beams=1, early_stopping=True)  # beam-only flag with greedy search
    with pytest.raises(ValueError, match="Fix these issues"):
        make_trainer("hfl", tmp_path, tiny_t5(), char_tokenizer(), generation_config=bad)


def test_predict_with_generate_without_generate_trains_and_evaluates_the_loss_like_transformers(
    tmp_path: Path,
) -> None:
    """transformers trains and evaluates the loss, and fails only when it must generate; so do we, with a warning
    up front and a ValueError naming the argument (transformers: an AttributeError)."""
    from helpers import ToyClassification, tiny_bert

    results = {}
    for impl in ("hf", "hfl"):
        cls = transformers.Seq2SeqTrainer if impl == "hf" else Seq2SeqTrainer
        args = _args(impl, tmp_path / impl, eval_strategy="steps", eval_steps=2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = cls(
                model=tiny_bert(), args=args, train_dataset=ToyClassification(8), eval_dataset=ToyClassification(5)
            )
        trainer.train()
        results[impl] = (trainer, _logs(trainer), _blank(trainer.evaluate()), caught)
        error = AttributeError if impl == "hf" else ValueError
        with pytest.raises(error, match="generate"):
            trainer.predict(ToyClassification(3))
        trainer.compute_metrics = lambda p: {}
        with pytest.raises(error, match="generate"):
            trainer.evaluate()
    assert_same_weights(results["hf"][0].model, results["hfl"][0].model)
    assert results["hf"][1:3] == results["hfl"][1:3]
    assert any("no `generate` method" in str(w.message) for w in results["hfl"][3])


def test_predict_with_generate_without_generate_fails_before_training_when_evaluations_would_generate(
    tmp_path: Path,
) -> None:
    """Stricter on purpose: transformers would train until the first evaluation, then fail."""
    from helpers import ToyClassification, tiny_bert

    with pytest.raises(ValueError, match="predict_with_generate.*generate"):
        Seq2SeqTrainer(
            model=torch.nn.Sequential(tiny_bert()),
            args=_args("hfl", tmp_path, eval_strategy="epoch"),
            eval_dataset=ToyClassification(4),
            compute_metrics=lambda p: {},
        )


# ---- metric helpers --------------------------------------------------------------------------------------


def test_rouge_and_bleu_helpers_decode_and_score_like_the_hf_examples() -> None:
    tokenizer = char_tokenizer()
    preds_text, refs_text = ["the cat sat", "a dog ran far"], ["the cat sat on the mat", "a dog ran"]
    preds = tokenizer(preds_text, padding=True, return_tensors="np")["input_ids"]
    labels = tokenizer(refs_text, padding=True, return_tensors="np")["input_ids"]
    labels = np.where(labels == tokenizer.pad_token_id, -100, labels)  # as DataCollatorForSeq2Seq pads them
    preds = np.concatenate([preds, np.full((2, 3), -100)], axis=1)  # as batches are padded across
    gen_len = round(float(np.mean([len(t) + 1 for t in preds_text])), 4)  # characters + eos
    rouge = rouge_metrics(tokenizer)(EvalPrediction(predictions=preds, label_ids=labels))
    expected = rouge_score(preds_text, refs_text, rouge_keys=("rouge1", "rouge2", "rougeL"))
    assert rouge == {
        **{k: round(float(expected[f"{k}_fmeasure"]) * 100, 4) for k in ("rouge1", "rouge2", "rougeL")},
        "gen_len": gen_len,
    }
    bleu = bleu_metrics(tokenizer)((preds, labels))
    expected_bleu = float(sacre_bleu_score(preds_text, [[r] for r in refs_text], tokenize="13a")) * 100
    assert bleu == {"bleu": round(expected_bleu, 4), "gen_len": gen_len}
    assert bleu_metrics(tokenizer)((labels, labels))["bleu"] == 100.0


def test_metric_helpers_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="tokenizer"):
        rouge_metrics(object())
    with pytest.raises(ValueError, match="labels"):
        rouge_metrics(char_tokenizer())(EvalPrediction(predictions=np.zeros((1, 2), int), label_ids=None))
    with pytest.raises(ValueError, match="rouge_keys"):
        rouge_metrics(char_tokenizer(), rouge_keys=())


# ---- distributed -------------------------------------------------------------------------------------------

DDP_WORDS = ["a", "b", "the cat sat on the mat and more", "dog", "hello world again and again and", "t", "x"]


def _ddp_dataset(tokenizer: Any) -> datasets.Dataset:
    raw = datasets.Dataset.from_dict({"text": DDP_WORDS})
    return raw.map(
        lambda b: {**tokenizer(b["text"]), "labels": tokenizer(b["text"])["input_ids"]},
        batched=True,
        remove_columns=["text"],
    )


def _ddp_trainer(out: str) -> Seq2SeqTrainer:
    tokenizer = char_tokenizer(padding_side="left")
    args = make_args("hfl", out, seq2seq=True, per_device_eval_batch_size=2, predict_with_generate=True)
    model = tiny_gpt2()
    return Seq2SeqTrainer(
        model=model,
        args=args,
        eval_dataset=_ddp_dataset(tokenizer),
        processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        compute_metrics=rouge_metrics(tokenizer),
    )


def _ddp_rank(rank: int, out: str) -> dict:
    """One of 2 gloo ranks: batches of different prompt lengths, so the ranks generate different widths."""
    trainer = _ddp_trainer(out)
    widths: list[int] = []
    real_step = trainer.prediction_step

    def step(*args: Any, **kwargs: Any) -> Any:
        result = real_step(*args, **kwargs)
        widths.append(int(result[1].shape[1]))
        return result

    trainer.prediction_step = step
    metrics = trainer.evaluate(max_new_tokens=4)
    pred = trainer.predict(trainer.eval_dataset, max_new_tokens=4)
    np.save(os.path.join(out, f"pred{rank}.npy"), pred.predictions)
    return {"metrics": metrics, "widths": widths, "world": trainer.args.world_size}


def test_ddp_generation_with_different_lengths_per_rank(tmp_path: Path) -> None:
    ranks = run_gloo_ranks(_ddp_rank, tmp_path)
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["widths"][0] != ranks[1]["widths"][0], "the ranks were meant to generate different widths"

    single = _ddp_trainer(str(tmp_path / "single"))
    expected = _blank(single.evaluate(max_new_tokens=4))
    expected_pred = single.predict(single.eval_dataset, max_new_tokens=4).predictions
    for r in range(2):
        assert _blank(ranks[r]["metrics"]) == expected
        np.testing.assert_array_equal(np.load(tmp_path / f"pred{r}.npy"), expected_pred)
