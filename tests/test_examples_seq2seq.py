"""Smoke tests of the seq2seq examples: each script trains a few steps in a subprocess and reports its metric."""

import json
import re
from pathlib import Path

import pytest
from helpers import cli_flags, import_example, needs_demo_assets, run_example


@needs_demo_assets
def test_summarization_smoke(tmp_path: Path) -> None:
    quick = dict(max_steps=2, max_train_samples=8, max_eval_samples=4, per_device_train_batch_size=4)
    short = dict(max_source_length=32, max_target_length=8, num_beams=2, eval_strategy="no")
    stdout = run_example("summarization.py", *cli_flags(**quick, **short, output_dir=tmp_path / "out", save_model=True))
    assert re.search(r"ROUGE-1 \d+\.\d\d, ROUGE-2 \d+\.\d\d, ROUGE-L \d+\.\d\d", stdout), stdout[-3000:]
    assert "generated:" in stdout
    saved = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert saved["decoder_start_token_id"] == 101 and saved["eos_token_id"] == 102  # [CLS] / [SEP] of MiniLM


def test_translation_smoke_on_the_bundled_sample(tmp_path: Path) -> None:
    quick = dict(max_steps=3, d_model=32, max_target_length=12, num_beams=2, eval_strategy="steps", eval_steps=2)
    stdout = run_example("translation.py", *cli_flags(**quick, output_dir=tmp_path / "out"))
    assert "Translation pairs: 32 train / 8 validation" in stdout
    assert re.search(r"BLEU \d+\.\d\d, mean generated length \d+\.\d", stdout), stdout[-3000:]
    assert re.search(r"'eval_bleu': '\d", stdout), "evaluation during training reports BLEU"


def test_translation_reads_tsv_and_jsonl_and_names_missing_columns(tmp_path: Path) -> None:
    translation = import_example("translation")
    read_pairs = translation.read_pairs
    sample = read_pairs(str(translation.SAMPLE_FILE), "source", "target")
    assert len(sample) == 40 and sample[0] == {"source": "the cat is black", "target": "le chat est noir"}
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({"en": f"word {i}", "de": f"wort {i}"}) for i in range(3)), encoding="utf-8")
    assert read_pairs(str(data), "en", "de")["target"] == ["wort 0", "wort 1", "wort 2"]
    with pytest.raises(SystemExit, match=r"columns \['source', 'target'\] are missing"):
        read_pairs(str(data), "source", "target")
    with pytest.raises(SystemExit, match="is not a file"):
        read_pairs(str(tmp_path / "nope.tsv"), "source", "target")
