"""NEFTune: noisy embeddings for instruction fine-tuning, turned on by `neftune_noise_alpha`.

    python examples/neftune.py                               # SmolLM2-135M learns to write BBC headlines, alpha 5
    python examples/neftune.py --neftune_noise_alpha 0       # the same run without noise, to compare
    python examples/neftune.py --max_steps 5                 # a smoke run

NEFTune (Jain et al., 2023) adds uniform noise of scale alpha / sqrt(seq_len * hidden_size) to the input embeddings
during training only; `TrainingArguments(neftune_noise_alpha=5.0)` is all it takes, as with the Hugging Face Trainer,
and evaluation and generation see clean embeddings. The task: given an article, write its headline; each example
is "Article: ... Headline: <title>", and the script prints a few generated headlines after training.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, DataCollatorForLanguageModeling, HfArgumentParser

from hf_lightning import PlotHistoryCallback, Trainer, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bbc_news import first_rows, load_bbc_news, split_bbc_news  # noqa: E402
from bundled_models import load_pretrained, smollm2_path  # noqa: E402

TRAINING_DEFAULTS = {
    "output_dir": "outputs/neftune",
    "neftune_noise_alpha": 5.0,
    "max_steps": 100,
    "learning_rate": 5e-5,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "warmup_steps": 0.1,
    "eval_strategy": "steps",
    "eval_steps": 25,
    "logging_steps": 10,
    "save_strategy": "no",
    "seed": 42,
    "report_to": "none",
}


@dataclass
class ScriptArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "Default: bundled SmolLM2-135M."})
    article_chars: int = field(default=600, metadata={"help": "Characters of the article body in the prompt."})
    max_length: int = field(default=192, metadata={"help": "Examples are truncated to this many tokens."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N articles only."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Validate on the first N articles only."})
    num_examples: int = field(default=3, metadata={"help": "Validation articles whose generated headline is shown."})
    max_new_tokens: int = field(default=16, metadata={"help": "Tokens generated for each of those headlines."})


def prompt(body: str, chars: int) -> str:
    return f"Article: {body[:chars]}\nHeadline:"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = HfArgumentParser((ScriptArguments, TrainingArguments))
    parser.set_defaults(**TRAINING_DEFAULTS)
    script_args, training_args = parser.parse_args_into_dataclasses(args=argv)

    model, tokenizer = load_pretrained(AutoModelForCausalLM, script_args.model_name_or_path, default=smollm2_path)
    train_ds, val_ds = split_bbc_news(load_bbc_news(), test_size=0.1)
    train_ds = first_rows(train_ds, script_args.max_train_samples)
    val_ds = first_rows(val_ds, script_args.max_eval_samples)

    def tokenize(batch):
        texts = [
            f"{prompt(body, script_args.article_chars)} {title}{tokenizer.eos_token}"
            for body, title in zip(batch["body"], batch["title"])
        ]
        return tokenizer(texts, truncation=True, max_length=script_args.max_length)

    train_tok, val_tok = (ds.map(tokenize, batched=True, remove_columns=ds.column_names) for ds in (train_ds, val_ds))
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_tok,
        eval_dataset=val_tok,
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[PlotHistoryCallback()],
    )
    trainer.train()
    metrics = trainer.evaluate()
    print(f"NEFTune alpha {training_args.neftune_noise_alpha}: validation loss {metrics['eval_loss']:.4f}")

    model.eval()
    for row in val_ds.select(range(min(script_args.num_examples, len(val_ds)))):
        inputs = tokenizer(prompt(row["body"], script_args.article_chars), return_tensors="pt").to(model.device)
        with torch.no_grad():
            out = model.generate(
                **inputs,
                max_new_tokens=script_args.max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        generated = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        print(f"  generated: {generated.strip().splitlines()[0] if generated.strip() else ''!r}")
        print(f"  headline:  {row['title']!r}")
    return metrics


if __name__ == "__main__":
    main()
