"""A custom `TrainerCallback`: report each evaluation on one line and stop once a target accuracy is reached.

    python examples/custom_callback.py                       # MiniLM on BBC News, stops at 95% validation accuracy
    python examples/custom_callback.py --target_accuracy 0.9 --max_steps 60

Callbacks see HF's events (`on_train_begin`, `on_log`, `on_evaluate`, `on_step_end`, ...) with the `args`, `state`
and `control` objects of `transformers.Trainer`; setting `control.should_training_stop` ends training after the
current step, exactly as with the Hugging Face Trainer. `PlotHistoryCallback` writes the training curves to
`output_dir/training_history.png` at the end.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoModelForSequenceClassification, HfArgumentParser

from hf_lightning import PlotHistoryCallback, Trainer, TrainerCallback, TrainingArguments
from hf_lightning.metrics import classification_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bbc_news import LABEL_NAMES, classification_splits  # noqa: E402
from bundled_models import load_pretrained  # noqa: E402

TRAINING_DEFAULTS = {
    "output_dir": "outputs/custom_callback",
    "max_steps": 200,
    "learning_rate": 1e-4,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 64,
    "warmup_steps": 0.1,
    "eval_strategy": "steps",
    "eval_steps": 25,
    "logging_steps": 25,
    "save_strategy": "no",
    "disable_tqdm": True,
    "seed": 42,
    "report_to": "none",
}


class TargetAccuracyCallback(TrainerCallback):
    """Prints one line per evaluation and stops training once `eval_accuracy` reaches `target`."""

    def __init__(self, target: float) -> None:
        self.target = target
        self.reached_at: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()
        print(f"Training for at most {state.max_steps} steps, until validation accuracy >= {self.target}")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        accuracy = metrics["eval_accuracy"]
        elapsed = time.perf_counter() - self.start
        print(f"step {state.global_step:4d} ({elapsed:5.0f} s): validation accuracy {accuracy:.4f}")
        if accuracy >= self.target and self.reached_at is None:
            self.reached_at = state.global_step
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if self.reached_at is None:
            print(f"Target accuracy {self.target} not reached in {state.global_step} steps")
        else:
            print(f"Target accuracy {self.target} reached at step {self.reached_at}: training stopped")


@dataclass
class ScriptArguments:
    target_accuracy: float = field(default=0.95, metadata={"help": "Stop once validation accuracy reaches this."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Default: bundled all-MiniLM-L6-v2."})
    max_length: int = field(default=128, metadata={"help": "Articles are truncated to this many tokens."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N articles only."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Validate on the first N articles only."})


def main(argv: list[str] | None = None) -> TargetAccuracyCallback:
    parser = HfArgumentParser((ScriptArguments, TrainingArguments))
    parser.set_defaults(**TRAINING_DEFAULTS)
    script_args, training_args = parser.parse_args_into_dataclasses(args=argv)

    model, tokenizer = load_pretrained(
        AutoModelForSequenceClassification, script_args.model_name_or_path, num_labels=len(LABEL_NAMES)
    )
    train_ds, val_ds, _ = classification_splits(
        tokenizer,
        max_length=script_args.max_length,
        max_train_samples=script_args.max_train_samples,
        max_eval_samples=script_args.max_eval_samples,
    )
    target = TargetAccuracyCallback(script_args.target_accuracy)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        compute_metrics=classification_metrics(len(LABEL_NAMES)),
        callbacks=[target, PlotHistoryCallback()],
    )
    trainer.train()
    return target


if __name__ == "__main__":
    main()
