"""Tests for hf_lightning.data: batches are read when transformers.Trainer reads them.

A collator that draws from the global RNG (`DataCollatorForLanguageModeling`'s masking) shares that RNG with the
model's dropout, so the order in which batches are collated decides the weights. HF's accelerate-prepared loader
reads one batch ahead and its resume skips whole windows in the sampler, without collating them; these tests train
a masked-LM BERT with dropout through both trainers and compare bit for bit.
"""

from __future__ import annotations

import pytest
import torch
from helpers import assert_same_weights, make_args, trainer_classes
from tokenizers import Tokenizer, models, pre_tokenizers
from torch.utils.data import DataLoader
from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, PreTrainedTokenizerFast

from hf_lightning.data import AccumulationWindowLoader, one_batch_ahead, skip_first_batches

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def mlm_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(SPECIAL + [f"w{i}" for i in range(45)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def mlm_samples(n: int = 20) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(len(SPECIAL), 50, (8,), generator=g).tolist()} for _ in range(n)]


def tiny_bert_mlm() -> BertForMaskedLM:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    return BertForMaskedLM(config)  # dropout 0.1: drawn from the same global RNG as the masking


def _mlm_trainer(impl: str, out: str, **params):
    trainer_cls, _ = trainer_classes(impl)
    args = make_args(
        impl,
        out,
        **{
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-3,
            "num_train_epochs": 2,
            "logging_steps": 1,
            "save_strategy": "no",
            **params,
        },
    )
    return trainer_cls(
        model=tiny_bert_mlm(),
        args=args,
        train_dataset=mlm_samples(),
        eval_dataset=mlm_samples(7),
        data_collator=DataCollatorForLanguageModeling(mlm_tokenizer(), mlm_probability=0.3),
    )


def _assert_same_run(hf, hfl) -> None:
    assert_same_weights(hf.model, hfl.model)
    strip = ("runtime", "per_second")
    hf_logs = [{k: v for k, v in e.items() if not any(s in k for s in strip)} for e in hf.state.log_history]
    hfl_logs = [{k: v for k, v in e.items() if not any(s in k for s in strip)} for e in hfl.state.log_history]
    assert hf_logs == hfl_logs


@pytest.mark.parametrize("ga", [1, 3])
def test_random_collator_with_dropout_is_bit_identical_to_transformers(ga: int, tmp_path) -> None:
    """Evaluations (masking their batches too) come between the steps, mid-epoch."""
    job = dict(gradient_accumulation_steps=ga, eval_strategy="steps", eval_steps=1, per_device_eval_batch_size=3)
    hf = _mlm_trainer("hf", str(tmp_path / "hf"), **job)
    hf.train()
    hfl = _mlm_trainer("hfl", str(tmp_path / "hfl"), **job)
    hfl.train()
    _assert_same_run(hf, hfl)
    assert sum("eval_loss" in e for e in hfl.state.log_history) == hfl.state.global_step
    assert not torch.equal(hfl.model.cls.predictions.bias, tiny_bert_mlm().cls.predictions.bias)


@pytest.mark.parametrize(("ga", "step"), [(1, 2), (2, 1)])
def test_random_collator_resume_mid_epoch_is_bit_identical_to_transformers(ga: int, step: int, tmp_path) -> None:
    """Both resume from the same transformers checkpoint inside an epoch: the skipped batches are not collated (no
    masking drawn for them), the RNG is restored after the first window is read, as transformers does."""
    saver = _mlm_trainer("hf", str(tmp_path / "saved"), gradient_accumulation_steps=ga, save_strategy="steps")
    saver.args.save_steps = 1
    saver.train()
    checkpoint = str(tmp_path / "saved" / f"checkpoint-{step}")
    hf = _mlm_trainer("hf", str(tmp_path / "hf"), gradient_accumulation_steps=ga)
    hf.train(resume_from_checkpoint=checkpoint)
    hfl = _mlm_trainer("hfl", str(tmp_path / "hfl"), gradient_accumulation_steps=ga)
    hfl.train(resume_from_checkpoint=checkpoint)
    _assert_same_run(hf, hfl)


class _Recorder:
    """A collator that records when it is called (into a shared event list)."""

    def __init__(self, events: list) -> None:
        self.events = events

    def __call__(self, samples: list) -> list:
        self.events.append(("collate", samples[0]))
        return samples


def test_one_batch_ahead_collates_the_next_batch_before_yielding() -> None:
    events: list = []
    loader = DataLoader(list(range(3)), batch_size=1, collate_fn=_Recorder(events))
    for batch in one_batch_ahead(loader):
        events.append(("use", batch[0]))
    assert events == [("collate", 0), ("collate", 1), ("use", 0), ("collate", 2), ("use", 1), ("use", 2)]
    assert list(one_batch_ahead([])) == []


def test_skip_first_batches_skips_in_the_sampler() -> None:
    events: list = []
    loader = DataLoader(list(range(10)), batch_size=2, collate_fn=_Recorder(events), drop_last=True)
    skipping = skip_first_batches(loader, 2)
    assert [b for b in skipping] == [[4, 5], [6, 7], [8, 9]]
    assert [e[1] for e in events] == [4, 6, 8]  # the two skipped batches were never collated
    assert skip_first_batches(list(range(4)), 1) is None  # not a DataLoader: skipped by reading instead


def test_window_loader_resume_skips_whole_windows_without_reading_them() -> None:
    events: list = []
    loader = DataLoader(list(range(10)), batch_size=1, collate_fn=_Recorder(events))
    windows = AccumulationWindowLoader(loader, 3, len, 10)
    windows.load_state_dict({"epoch": 0, "batches": 4})  # one whole window trained, one batch into the next
    micro = list(windows)
    assert [m.inputs[0] for m in micro] == [4, 5, 6, 7, 8, 9]
    assert [m.num_items_in_batch for m in micro[:2]] == [3, 3]  # the partly trained window keeps its full count
    assert [e[1] for e in events][:1] == [3]  # batches 0-2 skipped in the sampler, 3 read again for its window
