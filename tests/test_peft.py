"""PEFT (LoRA on `q_proj`/`v_proj` of a tiny Llama, as in seed 004): training, adapter-only checkpoints and
`save_model`, reload with identical predictions, resume and `load_best_model_at_end` -- against transformers."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from helpers import make_args, train_logs, trainer_classes
from transformers import LlamaConfig, LlamaForCausalLM

peft = pytest.importorskip("peft")

ADAPTER_FILES = {"adapter_model.safetensors", "adapter_config.json"}


def _lora_llama() -> Any:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    base = LlamaForCausalLM(config)
    lora = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.1, task_type="CAUSAL_LM"
    )
    model = peft.get_peft_model(base, lora)
    torch.manual_seed(1)
    for name, param in model.named_parameters():  # LoRA B starts at zero: move it so reloads are visible
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    return model


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int = 0) -> None:
        self.ids = torch.randint(1, 64, (n, 12), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(12, dtype=torch.long), "labels": self.ids[i]}


def _train(impl: str, out: str, resume: Any = None, **overrides: Any) -> Any:
    Trainer, _ = trainer_classes(impl)
    defaults = dict(per_device_train_batch_size=4, learning_rate=5e-3, max_steps=4, save_steps=2, logging_steps=1)
    args = make_args(impl, out, **{**defaults, **overrides})
    trainer = Trainer(
        model=_lora_llama(),
        args=args,
        train_dataset=_Tokens(16),
        eval_dataset=_Tokens(8, seed=1) if args.eval_strategy != "no" else None,
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def _lora_state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def test_lora_trains_like_transformers_and_saves_adapters_only(tmp_path) -> None:
    hf = _train("hf", str(tmp_path / "hf"))
    hfl = _train("hfl", str(tmp_path / "hfl"))
    assert train_logs(hf) == train_logs(hfl)
    hf_lora, hfl_lora = _lora_state(hf.model), _lora_state(hfl.model)
    assert hf_lora.keys() == hfl_lora.keys() and all(torch.equal(hf_lora[k], hfl_lora[k]) for k in hf_lora)
    assert not any(torch.equal(hfl_lora[k], v) for k, v in _lora_state(_lora_llama()).items() if "lora_A" in k)
    for step in (2, 4):
        files = set(os.listdir(tmp_path / "hfl" / f"checkpoint-{step}"))
        assert ADAPTER_FILES <= files and "model.safetensors" not in files
        assert ADAPTER_FILES <= set(os.listdir(tmp_path / "hf" / f"checkpoint-{step}"))
    hfl.save_model(str(tmp_path / "saved"))
    saved = set(os.listdir(tmp_path / "saved"))
    assert ADAPTER_FILES <= saved and "model.safetensors" not in saved


def test_saved_adapter_reloads_with_identical_predictions(tmp_path) -> None:
    trainer = _train("hfl", str(tmp_path / "run"), max_steps=2, save_strategy="no")
    trainer.save_model(str(tmp_path / "adapter"))
    torch.manual_seed(0)
    base = LlamaForCausalLM(trainer.model.get_base_model().config)
    reloaded = peft.PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    batch = _Tokens(4, seed=3)[0]
    inputs = {"input_ids": batch["input_ids"][None], "attention_mask": batch["attention_mask"][None]}
    trainer.model.eval()
    reloaded.eval()
    with torch.no_grad():
        assert torch.equal(trainer.model(**inputs).logits, reloaded(**inputs).logits)
    assert trainer.predict(_Tokens(4, seed=3)).predictions.shape == (4, 12, 64)


def test_resume_from_adapter_checkpoint_is_exact(tmp_path) -> None:
    full = _train("hfl", str(tmp_path / "full"))
    resumed = _train("hfl", str(tmp_path / "full"), resume=str(tmp_path / "full" / "checkpoint-2"))
    a, b = _lora_state(full.model), _lora_state(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert train_logs(full)[2:] == train_logs(resumed)[2:]


def test_load_best_model_at_end_reloads_the_best_adapter(tmp_path) -> None:
    overrides = dict(eval_strategy="steps", eval_steps=1, save_steps=1, load_best_model_at_end=True, learning_rate=0.2)
    overrides["metric_for_best_model"] = "loss"
    hf = _train("hf", str(tmp_path / "hf"), **overrides)
    hfl = _train("hfl", str(tmp_path / "hfl"), **overrides)
    assert hfl.state.best_model_checkpoint.endswith(os.path.basename(hf.state.best_model_checkpoint))
    assert hfl.state.best_global_step != hfl.state.global_step  # otherwise nothing would be reloaded
    best = peft.PeftModel.from_pretrained(
        LlamaForCausalLM(hfl.model.get_base_model().config), hfl.state.best_model_checkpoint
    )
    expected = {k: v for k, v in _lora_state(best).items()}
    got = _lora_state(hfl.model)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in got)
    hf_lora = _lora_state(hf.model)
    assert all(torch.equal(hf_lora[k], got[k]) for k in got)
