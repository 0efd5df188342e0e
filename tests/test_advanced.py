"""`TrainingArguments` fields that change training (`hf_lightning.features`, `hf_lightning.data`): each is checked
against `transformers.Trainer` on the same job and shown to change the run (so a test fails if it is ignored)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from datasets import Dataset
from helpers import ToyClassification, assert_same_weights, needs_transformers, run_job, tiny_bert, train_logs
from torch import nn
from transformers import BertForSequenceClassification

import hf_lightning
from hf_lightning import features
from hf_lightning.compat import model_is_activation_checkpointing
from hf_lightning.translation import lightning_trainer_kwargs

VOCAB = 50


def _run(impl: str, out: str, model: nn.Module, train_dataset: Any, **overrides: Any) -> Any:
    """`helpers.run_job` on a given model and training set."""
    return run_job(impl, out, model=model, train_dataset=train_dataset, **overrides)


def _losses(trainer: Any) -> list[float]:
    return [e["loss"] for e in train_logs(trainer)]


# ---- NEFTune, label smoothing: same losses as transformers ---------------------------------------------------


def test_neftune_matches_transformers_and_is_removed_after_training(tmp_path) -> None:
    hf = run_job("hf", str(tmp_path / "hf"), neftune_noise_alpha=5.0, max_steps=4)
    hfl = run_job("hfl", str(tmp_path / "hfl"), neftune_noise_alpha=5.0, max_steps=4)
    assert train_logs(hf) == train_logs(hfl)
    assert_same_weights(hf.model, hfl.model)
    plain = run_job("hfl", str(tmp_path / "plain"), max_steps=4)
    assert _losses(plain) != _losses(hfl)
    embeddings = hfl.model.get_input_embeddings()
    assert not embeddings._forward_hooks and not hasattr(embeddings, "neftune_noise_alpha")


def test_neftune_noise_only_in_training_mode() -> None:
    model = tiny_bert()
    embeddings = model.get_input_embeddings()
    ids = ToyClassification(2).input_ids
    handle = features.activate_neftune(model, 5.0)
    with torch.no_grad():
        model.eval()
        assert torch.equal(embeddings(ids), embeddings.weight[ids])
        model.train()
        noisy = embeddings(ids)
    assert not torch.equal(noisy, embeddings.weight[ids])
    assert (noisy - embeddings.weight[ids]).abs().max() <= 5.0 / (ids.shape[1] * embeddings.embedding_dim) ** 0.5
    features.deactivate_neftune(model, handle)
    assert torch.equal(embeddings(ids), embeddings.weight[ids])


def test_label_smoothing_matches_transformers(tmp_path) -> None:
    hf = run_job("hf", str(tmp_path / "hf"), label_smoothing_factor=0.2, gradient_accumulation_steps=2, max_steps=3)
    hfl = run_job("hfl", str(tmp_path / "hfl"), label_smoothing_factor=0.2, gradient_accumulation_steps=2, max_steps=3)
    assert train_logs(hf) == train_logs(hfl)
    assert_same_weights(hf.model, hfl.model)
    plain = run_job("hfl", str(tmp_path / "plain"), gradient_accumulation_steps=2, max_steps=3)
    assert _losses(plain) != _losses(hfl)


# ---- checkpointing, compile, cache, batch-size search --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs_name"),
    [
        ("gradient_checkpointing", "gradient_checkpointing_kwargs"),
        pytest.param(
            "activation_checkpointing",
            "activation_checkpointing_kwargs",
            marks=needs_transformers("activation_checkpointing"),
        ),
    ],
)
def test_activation_checkpointing_matches_transformers(name: str, kwargs_name: str, tmp_path) -> None:
    overrides = {name: True, kwargs_name: {"use_reentrant": True}, "max_steps": 3}  # default: False
    hf = run_job("hf", str(tmp_path / "hf"), **overrides)
    hfl = run_job("hfl", str(tmp_path / "hfl"), **overrides)
    assert model_is_activation_checkpointing(hfl.model) and model_is_activation_checkpointing(hf.model)
    funcs = [m._gradient_checkpointing_func for m in hfl.model.modules() if hasattr(m, "_gradient_checkpointing_func")]
    assert funcs and all(f.keywords == {"use_reentrant": True} for f in funcs)
    assert train_logs(hf) == train_logs(hfl)
    assert_same_weights(hf.model, hfl.model)
    assert not model_is_activation_checkpointing(run_job("hfl", str(tmp_path / "plain"), max_steps=1).model)


class _CountingWrapper(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.calls = 0

    def forward(self, **inputs: Any) -> Any:
        self.calls += 1
        return self.inner(**inputs)


def test_torch_compile_wraps_the_training_model_with_backend_and_mode(tmp_path, monkeypatch) -> None:
    seen: list[dict] = []

    def fake_compile(model: nn.Module, **kwargs: Any) -> nn.Module:
        seen.append(kwargs)
        return _CountingWrapper(model)

    monkeypatch.setattr(torch, "compile", fake_compile)
    trainer = run_job(
        "hfl", str(tmp_path), max_steps=3, torch_compile_backend="aot_eager", torch_compile_mode="reduce-overhead"
    )
    assert seen == [{"backend": "aot_eager", "mode": "reduce-overhead"}]
    assert isinstance(trainer.model_wrapped, _CountingWrapper) and trainer.model_wrapped.calls == 3
    assert trainer.model_wrapped.inner is trainer.model
    seen.clear()
    run_job("hfl", str(tmp_path / "off"), max_steps=1)
    assert seen == []


class _BagOfWords(nn.Module):
    """A small plain module returning (loss, logits): quick to compile."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.EmbeddingBag(VOCAB, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask=None, labels=None):
        logits = self.head(self.embed(input_ids))
        return nn.functional.cross_entropy(logits, labels), logits


def test_torch_compile_really_compiles(tmp_path) -> None:
    torch._dynamo.reset()
    eager = _run("hfl", str(tmp_path / "eager"), _BagOfWords(), ToyClassification(8), max_steps=2)
    compiled = _run(
        "hfl", str(tmp_path / "c"), _BagOfWords(), ToyClassification(8), max_steps=2, torch_compile_backend="eager"
    )
    assert isinstance(compiled.model_wrapped, torch._dynamo.eval_frame.OptimizedModule)
    assert compiled.model_wrapped._orig_mod is compiled.model
    for a, b in zip(_losses(eager), _losses(compiled), strict=True):
        assert a == pytest.approx(b, rel=1e-6)


def test_torch_empty_cache_steps_matches_transformers(tmp_path, monkeypatch) -> None:
    import transformers.trainer

    calls = {"hf": 0, "hfl": 0}
    monkeypatch.setattr(
        transformers.trainer, "clear_device_cache", lambda *a, **k: calls.__setitem__("hf", calls["hf"] + 1)
    )
    monkeypatch.setattr(features, "clear_device_cache", lambda: calls.__setitem__("hfl", calls["hfl"] + 1))
    run_job("hf", str(tmp_path / "hf"), torch_empty_cache_steps=2, gradient_accumulation_steps=2, max_steps=4)
    run_job("hfl", str(tmp_path / "hfl"), torch_empty_cache_steps=2, gradient_accumulation_steps=2, max_steps=4)
    assert calls["hf"] == calls["hfl"] > 0
    run_job("hfl", str(tmp_path / "off"), max_steps=2)
    assert calls["hfl"] == calls["hf"]


class _OomAbove(BertForSequenceClassification):
    """A model that runs out of memory on batches larger than `limit` (simulated, like a CUDA OOM)."""

    limit = 5

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs: Any) -> Any:
        if input_ids is not None and input_ids.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)


def _oom_model() -> _OomAbove:
    torch.manual_seed(0)
    return _OomAbove(tiny_bert().config)


def test_auto_find_batch_size_matches_transformers(tmp_path) -> None:
    overrides = dict(per_device_train_batch_size=8, auto_find_batch_size=True, max_steps=2)
    hf = _run("hf", str(tmp_path / "hf"), _oom_model(), ToyClassification(24, seed=1), **overrides)
    hfl = _run("hfl", str(tmp_path / "hfl"), _oom_model(), ToyClassification(24, seed=1), **overrides)
    assert hfl.state.train_batch_size == hf.state.train_batch_size == 5  # 8 -> 7 -> 6 -> 5 (x0.9, accelerate)
    assert train_logs(hf) == train_logs(hfl)
    assert_same_weights(hf.model, hfl.model)
    with pytest.raises(torch.OutOfMemoryError):
        _run(
            "hfl",
            str(tmp_path / "off"),
            _oom_model(),
            ToyClassification(24, seed=1),
            per_device_train_batch_size=8,
            max_steps=2,
        )


# ---- data: tokens seen, samplers, drop_last, iterable datasets ---------------------------------------------------


class _Padded(torch.utils.data.Dataset):
    """Variable-length examples padded to 10 (attention mask marks the padding), lengths 2..10."""

    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(5)
        self.items = []
        for i in range(n):
            length = 2 + (i * 7) % 9
            ids = torch.zeros(10, dtype=torch.long)
            ids[:length] = torch.randint(1, VOCAB, (length,), generator=g)
            self.items.append({"input_ids": ids, "attention_mask": (ids > 0).long(), "labels": int(ids.sum()) % 3})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


@pytest.mark.parametrize("mode", ["all", "non_padding"])
def test_include_num_input_tokens_seen_matches_transformers(mode: str, tmp_path) -> None:
    kw = dict(include_num_input_tokens_seen=mode, num_train_epochs=1)
    hf = _run("hf", str(tmp_path / "hf"), tiny_bert(), _Padded(), **kw)
    hfl = _run("hfl", str(tmp_path / "hfl"), tiny_bert(), _Padded(), **kw)
    seen = [e.get("num_input_tokens_seen") for e in hfl.state.log_history]
    assert seen == [e.get("num_input_tokens_seen") for e in hf.state.log_history]
    per_epoch = sum(int(item["attention_mask"].sum()) if mode == "non_padding" else 10 for item in _Padded().items)
    assert hfl.state.num_input_tokens_seen == hf.state.num_input_tokens_seen == per_epoch
    off = _run("hfl", str(tmp_path / "off"), tiny_bert(), _Padded(), max_steps=1)
    assert off.state.num_input_tokens_seen == 0 and "num_input_tokens_seen" not in off.state.log_history[0]


def _variable_length_dataset(with_length_column: bool) -> Dataset:
    g = torch.Generator().manual_seed(3)
    rows = {"input_ids": [], "labels": []}
    for i in range(24):
        length = 2 + (i * 5) % 11
        ids = torch.randint(1, VOCAB, (length,), generator=g).tolist()
        rows["input_ids"].append(ids)
        rows["labels"].append(sum(ids) % 3)
    if with_length_column:
        rows["length"] = [100 - len(ids) for ids in rows["input_ids"]]  # reversed order: the column must be used
    return Dataset.from_dict(rows)


def _pad_collator(features_: list[dict]) -> dict:
    width = max(len(f["input_ids"]) for f in features_)
    ids = torch.tensor([f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in features_])
    return {
        "input_ids": ids,
        "attention_mask": (ids > 0).long(),
        "labels": torch.tensor([f["labels"] for f in features_]),
    }


SAMPLER_KW = dict(trainer_kwargs={"data_collator": _pad_collator}, remove_unused_columns=False, max_steps=4)


@pytest.fixture(scope="module")
def random_order_losses(tmp_path_factory) -> list[float]:
    out = str(tmp_path_factory.mktemp("random"))
    return _losses(_run("hfl", out, tiny_bert(), _variable_length_dataset(True), **SAMPLER_KW))


@needs_transformers("train_sampling_strategy")
@pytest.mark.parametrize(
    "strategy",
    [
        "group_by_length",
        "sequential",
        pytest.param("batch_rebalance", marks=needs_transformers("train_sampling_strategy='batch_rebalance'")),
    ],
)
def test_sampling_strategies_match_transformers(strategy: str, random_order_losses: list, tmp_path) -> None:
    data = _variable_length_dataset(strategy == "group_by_length")
    hf = _run("hf", str(tmp_path / "hf"), tiny_bert(), data, train_sampling_strategy=strategy, **SAMPLER_KW)
    hfl = _run("hfl", str(tmp_path / "hfl"), tiny_bert(), data, train_sampling_strategy=strategy, **SAMPLER_KW)
    assert train_logs(hf) == train_logs(hfl)
    assert _losses(hfl) != random_order_losses


@needs_transformers("train_sampling_strategy")
def test_group_by_length_v4_name_and_length_column(tmp_path) -> None:
    data = _variable_length_dataset(True)
    v4 = _run("hfl", str(tmp_path / "v4"), tiny_bert(), data, group_by_length=True, **SAMPLER_KW)
    v5 = _run("hfl", str(tmp_path / "v5"), tiny_bert(), data, train_sampling_strategy="group_by_length", **SAMPLER_KW)
    assert train_logs(v4) == train_logs(v5)
    inferred = _run(  # no such column: lengths are measured on `input_ids`, giving another order
        "hfl", str(tmp_path / "inferred"), tiny_bert(), data, group_by_length=True, length_column_name="x", **SAMPLER_KW
    )
    assert _losses(inferred) != _losses(v4)


def test_dataloader_drop_last_matches_transformers(tmp_path) -> None:
    hf = run_job("hf", str(tmp_path / "hf"), n_train=10, dataloader_drop_last=True)
    hfl = run_job("hfl", str(tmp_path / "hfl"), n_train=10, dataloader_drop_last=True)
    assert hfl.state.global_step == hf.state.global_step == 4
    assert train_logs(hf) == train_logs(hfl)
    assert run_job("hfl", str(tmp_path / "keep"), n_train=10).state.global_step == 6


class _Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        data = ToyClassification(40, seed=3)
        yield from (data[i] for i in range(len(data)))


def test_iterable_dataset_with_max_steps_matches_transformers(tmp_path) -> None:
    hf = _run("hf", str(tmp_path / "hf"), tiny_bert(), _Stream(), max_steps=6, gradient_accumulation_steps=2)
    hfl = _run("hfl", str(tmp_path / "hfl"), tiny_bert(), _Stream(), max_steps=6, gradient_accumulation_steps=2)
    assert hfl.state.global_step == 6
    assert train_logs(hf) == train_logs(hfl)  # 40 samples = 10 batches: the stream restarts, as in HF
    assert_same_weights(hf.model, hfl.model)


# ---- determinism, cache flag, token averaging ---------------------------------------------------------------------


def test_full_determinism_enables_deterministic_algorithms(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_LAUNCH_BLOCKING", "0")
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
    monkeypatch.setenv("FLASH_ATTENTION_DETERMINISTIC", "0")
    try:
        trainer = run_job("hfl", str(tmp_path), max_steps=1, full_determinism=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert lightning_trainer_kwargs(trainer.args)["deterministic"] is True
    finally:
        torch.use_deterministic_algorithms(False)
    run_job("hfl", str(tmp_path / "off"), max_steps=1)
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("use_cache", [False, True])
def test_use_cache_is_set_on_the_model_config(use_cache: bool, tmp_path) -> None:
    model = tiny_bert()
    model.config.use_cache = not use_cache
    args = hf_lightning.TrainingArguments(str(tmp_path), use_cache=use_cache, report_to="none", use_cpu=True)
    hf_lightning.Trainer(model=model, args=args, train_dataset=ToyClassification(4))
    assert model.config.use_cache is use_cache


@pytest.mark.parametrize("average", [True, False])
def test_average_tokens_across_devices_scales_the_loss_by_world_size(average: bool, tmp_path) -> None:
    """With the token count summed over ranks, each rank's loss is multiplied by the world size (HF's rule)."""
    seen = []

    def loss_func(outputs, labels, num_items_in_batch=None):
        seen.append(num_items_in_batch)
        return nn.functional.cross_entropy(outputs.logits, labels, reduction="sum") / num_items_in_batch

    args = hf_lightning.TrainingArguments(
        str(tmp_path), average_tokens_across_devices=average, report_to="none", use_cpu=True
    )
    trainer = hf_lightning.Trainer(model=tiny_bert(dropout=0.0), args=args, compute_loss_func=loss_func)
    batch = {k: v for k, v in next(iter(torch.utils.data.DataLoader(ToyClassification(4), batch_size=4))).items()}
    single = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=torch.tensor(4))
    args._lightning_processes = (2, 0, 0)
    double = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=torch.tensor(4))
    assert double.item() == pytest.approx(single.item() * (2 if average else 1))


# ---- subclass hooks (seed 004) ---------------------------------------------------------------------------------------


class Seed004Trainer(hf_lightning.Trainer):
    """Seed 004's `training_step`, written for transformers v4 (two arguments, `loss.backward()`)."""

    def training_step(self, model, inputs):
        model.train()
        inputs = self._prepare_inputs(inputs)
        with self.autocast_smart_context_manager():
            loss = self.compute_loss(model, inputs)
        if self.args.gradient_accumulation_steps > 1:
            loss = loss / self.args.gradient_accumulation_steps
        loss.backward()
        return loss.detach()


class AcceleratorBackwardTrainer(hf_lightning.Trainer):
    """A v5-style override that back-propagates with `self.accelerator.backward`."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        model.train()
        with self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        loss = loss / self.current_gradient_accumulation_steps
        self.accelerator.backward(loss)
        return loss.detach()


@pytest.mark.parametrize("cls", [Seed004Trainer, AcceleratorBackwardTrainer])
@pytest.mark.parametrize("ga", [1, 2])
def test_training_step_override_trains_like_the_default(cls: type, ga: int, tmp_path) -> None:
    class Reference(hf_lightning.Trainer):
        # BERT ignores `num_items_in_batch`: divide its mean loss by the accumulation steps, as seed 004 does.
        loss_is_scaled_for_ga = False

    def train(trainer_cls: type, out: str) -> hf_lightning.Trainer:
        args = hf_lightning.TrainingArguments(
            out,
            per_device_train_batch_size=4,
            learning_rate=1e-3,
            num_train_epochs=1,
            logging_steps=1,
            report_to="none",
            use_cpu=True,
            gradient_accumulation_steps=ga,
        )
        trainer = trainer_cls(model=tiny_bert(), args=args, train_dataset=ToyClassification(16, seed=1))
        trainer.train()
        return trainer

    default = train(Reference, str(tmp_path / "default"))
    trainer = train(cls, str(tmp_path / "custom"))
    assert trainer.state.global_step == default.state.global_step == 4 // ga
    for a, b in zip(default.model.parameters(), trainer.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(_losses(default), _losses(trainer), strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    assert not torch.equal(tiny_bert().classifier.weight, trainer.model.classifier.weight)


def _hook_trainer(hook: str, calls: list) -> type:
    """A Trainer subclass whose `hook` records its call and defers to the default."""

    def override(self, *args: Any, **kwargs: Any) -> Any:
        calls.append(hook)
        return getattr(hf_lightning.Trainer, hook)(self, *args, **kwargs)

    return type(f"Custom_{hook}", (hf_lightning.Trainer,), {hook: override})


HOOKS = [
    "compute_loss",
    "training_step",
    "prediction_step",
    "get_train_dataloader",
    "get_eval_dataloader",
    "get_test_dataloader",
    "create_optimizer",
    "create_scheduler",
    "evaluate",
    "log",
]


@pytest.mark.parametrize("hook", HOOKS)
def test_overridden_hook_is_called(hook: str, tmp_path) -> None:
    calls: list = []
    cls = _hook_trainer(hook, calls)
    args = hf_lightning.TrainingArguments(
        str(tmp_path), max_steps=2, eval_strategy="steps", eval_steps=2, report_to="none", use_cpu=True, logging_steps=1
    )
    trainer = cls(model=tiny_bert(), args=args, train_dataset=ToyClassification(8), eval_dataset=ToyClassification(4))
    trainer.train()
    trainer.predict(ToyClassification(4))
    assert calls, f"the overridden {hook} was never called"
