"""LoRA fine-tuning of SmolLM2-135M on the BBC News articles with PEFT: only the adapters train and are saved.

    python examples/peft_lora.py                             # 100 steps, rank-8 adapters on q_proj / v_proj
    python examples/peft_lora.py --max_steps 5               # a smoke run
    python examples/peft_lora.py --model_name_or_path HuggingFaceTB/SmolLM2-360M --lora_r 16   # online

The Hugging Face recipe: `peft.get_peft_model(model, LoraConfig(...))` wraps the model, the `Trainer` trains it as
any model (the frozen base weights get no gradient and no optimizer state), and `model.save_pretrained(...)` writes
the adapter alone (a few MB instead of ~540 MB). Load it back with `PeftModel.from_pretrained(base_model, path)`.
Needs `pip install peft` (the `peft` extra of hf_lightning).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, DataCollatorForLanguageModeling, HfArgumentParser

from hf_lightning import PlotHistoryCallback, Trainer, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bbc_news import language_modeling_splits  # noqa: E402
from bundled_models import load_pretrained, smollm2_path  # noqa: E402

TRAINING_DEFAULTS = {
    "output_dir": "outputs/peft_lora",
    "max_steps": 100,
    "learning_rate": 2e-4,  # LoRA takes a larger learning rate than full fine-tuning
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
    lora_r: int = field(default=8, metadata={"help": "Rank of the LoRA matrices."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch."})
    target_modules: str = field(default="q_proj,v_proj", metadata={"help": "Comma-separated module names to adapt."})
    block_size: int = field(default=128, metadata={"help": "Tokens per training block."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training blocks."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N validation blocks."})


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = HfArgumentParser((ScriptArguments, TrainingArguments))
    parser.set_defaults(**TRAINING_DEFAULTS)
    script_args, training_args = parser.parse_args_into_dataclasses(args=argv)

    base_model, tokenizer = load_pretrained(AutoModelForCausalLM, script_args.model_name_or_path, default=smollm2_path)
    lora_config = LoraConfig(
        r=script_args.lora_r,
        lora_alpha=script_args.lora_alpha,
        lora_dropout=script_args.lora_dropout,
        target_modules=script_args.target_modules.split(","),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base_model, lora_config)
    model.print_trainable_parameters()
    train_ds, eval_ds = language_modeling_splits(
        tokenizer,
        block_size=script_args.block_size,
        max_train_samples=script_args.max_train_samples,
        max_eval_samples=script_args.max_eval_samples,
    )

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
    print(f"Validation loss {metrics['eval_loss']:.4f}, perplexity {math.exp(metrics['eval_loss']):.2f}")

    adapter_dir = os.path.join(training_args.output_dir, "adapter")
    model.save_pretrained(adapter_dir)
    size_mb = sum(f.stat().st_size for f in Path(adapter_dir).iterdir()) / 2**20
    print(f"Adapter saved in {adapter_dir} ({size_mb:.1f} MB)")
    return metrics


if __name__ == "__main__":
    main()
