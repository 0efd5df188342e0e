"""Translation with `Seq2SeqTrainer` on your own parallel file (tsv or jsonl), offline, reporting BLEU.

    python examples/translation.py                                   # the bundled English->French sample
    python examples/translation.py --train_file pairs.jsonl --validation_file dev.jsonl --num_train_epochs 10
    python examples/translation.py --help                            # every option (script + Seq2SeqTrainingArguments)

Input: a `.tsv` file whose header row names the columns (default `source` and `target`), or a `.jsonl` file with one
`{"source": ..., "target": ...}` object per line. Without `--validation_file`, `validation_size` of the pairs are
held out. The model is a small T5 built from a config with a BPE tokenizer trained on the training pairs (so any
language pair works without a download), or any local seq2seq model given with `--model_name_or_path`. The script
prints SacreBLEU on the validation pairs. It is the Hugging Face `Seq2SeqTrainer` recipe; only the import comes
from `hf_lightning`.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    HfArgumentParser,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from hf_lightning import Seq2SeqTrainer, Seq2SeqTrainingArguments
from hf_lightning.metrics import bleu_metrics

SAMPLE_FILE = Path(__file__).resolve().parent / "data" / "translation_sample.tsv"

# Defaults for `Seq2SeqTrainingArguments` fields; any of them can be overridden on the command line.
TRAINING_DEFAULTS = {
    "output_dir": "outputs/translation",
    "num_train_epochs": 30,
    "learning_rate": 3e-3,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 32,
    "warmup_steps": 0.05,
    "eval_strategy": "no",
    "save_strategy": "no",
    "logging_steps": 10,
    "seed": 42,
    "report_to": "none",
    "predict_with_generate": True,
}


@dataclass
class ScriptArguments:
    train_file: str = field(default=str(SAMPLE_FILE), metadata={"help": "Parallel training pairs (.tsv or .jsonl)."})
    validation_file: str | None = field(
        default=None, metadata={"help": "Parallel validation pairs; default: hold out `validation_size` of the train."}
    )
    source_column: str = field(default="source", metadata={"help": "Column (tsv header / jsonl key) of the source."})
    target_column: str = field(default="target", metadata={"help": "Column (tsv header / jsonl key) of the target."})
    source_prefix: str = field(default="", metadata={"help": "Text put before every source (T5-style task prefix)."})
    validation_size: float = field(default=0.2, metadata={"help": "Fraction held out when no validation_file."})
    split_seed: int = field(default=42, metadata={"help": "Seed of the train/validation split."})
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Local folder of a seq2seq model; default: a small T5 from a config (trained from scratch)."},
    )
    vocab_size: int = field(default=500, metadata={"help": "BPE vocabulary size of the tokenizer trained here."})
    d_model: int = field(default=128, metadata={"help": "Width of the T5 built from a config."})
    num_layers: int = field(default=2, metadata={"help": "Encoder (and decoder) layers of the T5 built from a config."})
    max_source_length: int = field(default=128, metadata={"help": "Sources are truncated to this many tokens."})
    max_target_length: int = field(
        default=128, metadata={"help": "Targets are truncated to this many tokens; also the generation max_length."}
    )
    num_beams: int = field(default=4, metadata={"help": "Beams for the final evaluation."})
    save_model: bool = field(default=False, metadata={"help": "Save the model and tokenizer in output_dir."})


def read_pairs(path: str, source_column: str, target_column: str) -> datasets.Dataset:
    """`source`/`target` pairs from a tsv file with a header row or a jsonl file; clear errors on bad input."""
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"--train_file/--validation_file: {path} is not a file")
    if file.suffix.lower() in (".jsonl", ".json"):
        rows = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif file.suffix.lower() in (".tsv", ".txt"):
        with file.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    else:
        raise SystemExit(f"{path}: expected a .tsv (with a header row) or .jsonl file")
    missing = {source_column, target_column} - set(rows[0] if rows else {})
    if not rows or missing:
        raise SystemExit(f"{path}: no pairs, or the columns {sorted(missing)} are missing (see --source_column)")
    return datasets.Dataset.from_dict(
        {
            "source": [str(r[source_column]).strip() for r in rows],
            "target": [str(r[target_column]).strip() for r in rows],
        }
    )


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A BPE tokenizer learnt on both sides of the pairs: pad 0, eos 1 (appended), unk 2, as T5 expects."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], min_frequency=1)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def build_model_and_tokenizer(script_args: ScriptArguments, train_ds: datasets.Dataset) -> tuple:
    if script_args.model_name_or_path is not None:
        tokenizer = AutoTokenizer.from_pretrained(script_args.model_name_or_path)
        return AutoModelForSeq2SeqLM.from_pretrained(script_args.model_name_or_path), tokenizer
    tokenizer = train_tokenizer(list(train_ds["source"]) + list(train_ds["target"]), script_args.vocab_size)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=script_args.d_model,
        d_kv=script_args.d_model // 4,
        d_ff=script_args.d_model * 4,
        num_layers=script_args.num_layers,
        num_heads=4,
        dropout_rate=0.1,
        decoder_start_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return T5ForConditionalGeneration(config), tokenizer


def parse_args(argv: list[str] | None = None) -> tuple[ScriptArguments, Seq2SeqTrainingArguments]:
    parser = HfArgumentParser((ScriptArguments, Seq2SeqTrainingArguments))
    parser.set_defaults(**TRAINING_DEFAULTS)
    script_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if training_args.generation_max_length is None:
        training_args.generation_max_length = script_args.max_target_length
    return script_args, training_args


def main(argv: list[str] | None = None) -> dict[str, float]:
    script_args, training_args = parse_args(argv)
    start = time.perf_counter()
    train_ds = read_pairs(script_args.train_file, script_args.source_column, script_args.target_column)
    if script_args.validation_file is not None:
        val_ds = read_pairs(script_args.validation_file, script_args.source_column, script_args.target_column)
    else:
        parts = train_ds.train_test_split(test_size=script_args.validation_size, seed=script_args.split_seed)
        train_ds, val_ds = parts["train"], parts["test"]
    print(f"Translation pairs: {len(train_ds)} train / {len(val_ds)} validation")

    model, tokenizer = build_model_and_tokenizer(script_args, train_ds)

    def tokenize(batch: dict) -> dict:
        sources = [script_args.source_prefix + s for s in batch["source"]]
        features = tokenizer(sources, max_length=script_args.max_source_length, truncation=True)
        targets = tokenizer(text_target=batch["target"], max_length=script_args.max_target_length, truncation=True)
        features["labels"] = targets["input_ids"]
        return features

    train_tok, val_tok = (
        ds.map(tokenize, batched=True, remove_columns=["source", "target"]) for ds in (train_ds, val_ds)
    )
    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=train_tok,
        eval_dataset=val_tok,
        processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        compute_metrics=bleu_metrics(tokenizer),
    )
    trainer.train()
    output = trainer.predict(val_tok, metric_key_prefix="eval", num_beams=script_args.num_beams)
    metrics = output.metrics
    minutes = (time.perf_counter() - start) / 60
    print(
        f"Validation ({len(val_ds)} pairs, {script_args.num_beams} beams): BLEU {metrics['eval_bleu']:.2f}, "
        f"mean generated length {metrics['eval_gen_len']:.1f} ({minutes:.1f} min in all)"
    )
    predictions = np.where(output.predictions != -100, output.predictions, tokenizer.pad_token_id)
    for text, generated, reference in zip(
        val_ds[:3]["source"], tokenizer.batch_decode(predictions[:3], skip_special_tokens=True), val_ds[:3]["target"]
    ):
        print(f"  {text!r} -> {generated!r} (reference {reference!r})")
    if script_args.save_model:
        trainer.save_model()
        print(f"Model saved in {training_args.output_dir}")
    return metrics


if __name__ == "__main__":
    main()
