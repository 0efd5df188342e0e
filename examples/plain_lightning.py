"""The plain-Lightning door: HF's loop in a `lightning.Trainer` you build, with Lightning's callbacks, logger and
profiler, then `validate`, `test`, `predict` and a resume from Lightning's `.ckpt`. Offline (a small BERT from a
config, synthetic data).

    python examples/plain_lightning.py                              # one process, CPU
    python examples/plain_lightning.py --devices 2 --strategy ddp   # Lightning starts the second process

What it shows (docs/lightning_power_users.md):
* `EarlyStopping` and `ModelCheckpoint` monitor HF's `eval_loss`, computed by HF's evaluation at `eval_steps`;
* a `CSVLogger` gets every HF log (`loss`, `learning_rate`, `eval_loss` ...) at HF's global step;
* `HFCheckpoint` writes HF's `checkpoint-N/` folders (which `hf_lightning.Trainer` and `from_pretrained` load);
* `--profiler simple` reports Lightning's hooks and HF's steps (`[HF Trainer]training_step()` ...);
* `validate` / `test` return HF's `eval_*` / `test_*` metrics, `predict` HF's logits;
* `fit(ckpt_path=best .ckpt)` resumes the HF state (log history, schedule, RNG) with Lightning's.
"""

from __future__ import annotations

import argparse
import os

import lightning.pytorch as pl
import numpy as np
import torch
from distributed_training import SyntheticClassification  # the examples' synthetic task (a sibling script)
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from transformers import BertConfig, BertForSequenceClassification

from hf_lightning import HFCheckpoint, HFDataModule, HFLightningModule, TrainingArguments


def accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}


def build_model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3
    )
    return BertForSequenceClassification(config)


def lightning_trainer(
    options: argparse.Namespace, callbacks: list[pl.Callback], log_name: str = "csv", **kwargs: object
) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=options.devices,
        strategy=options.strategy,
        use_distributed_sampler=False,  # HFDataModule deals the batches as HF does
        logger=CSVLogger(options.output_dir, name=log_name, version=""),
        profiler=options.profiler,
        callbacks=callbacks,
        enable_progress_bar=False,
        default_root_dir=options.output_dir,
        **kwargs,
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/plain_lightning")
    parser.add_argument("--max_steps", type=int, default=60)
    parser.add_argument("--eval_steps", type=int, default=10)
    parser.add_argument("--num_samples", type=int, default=512)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--profiler", default=None, help='"simple", "advanced" or "pytorch"')
    parser.add_argument("--disable_tqdm", default="true")  # the examples' smoke tests pass it to every script
    options = parser.parse_args(argv)

    args = TrainingArguments(
        options.output_dir,
        per_device_train_batch_size=16,
        learning_rate=1e-3,
        logging_steps=options.eval_steps,
        eval_strategy="steps",
        eval_steps=options.eval_steps,
        save_strategy="steps",
        save_steps=options.eval_steps,
        save_total_limit=2,
        label_smoothing_factor=0.1,
        report_to="none",
        disable_tqdm=options.disable_tqdm.lower() == "true",
        seed=42,
    )
    module = HFLightningModule.from_args(build_model(), args, compute_metrics=accuracy)
    data = HFDataModule(
        args,
        train_dataset=SyntheticClassification(options.num_samples, 16, seed=0),
        eval_dataset=SyntheticClassification(64, 16, seed=1),
        test_dataset=SyntheticClassification(64, 16, seed=2),
        predict_dataset=SyntheticClassification(8, 16, seed=3),
    )
    best = ModelCheckpoint(dirpath=os.path.join(options.output_dir, "ckpt"), monitor="eval_loss", save_top_k=1)
    stop = EarlyStopping(monitor="eval_loss", patience=3, check_on_train_epoch_end=False)
    # limit_val_batches=0: evaluation at HF's cadence (eval_steps) only, not also Lightning's at each epoch end
    trainer = lightning_trainer(options, [HFCheckpoint(), best, stop], max_steps=options.max_steps, limit_val_batches=0)
    trainer.fit(module, datamodule=data)

    evaluator = lightning_trainer(options, [], log_name="csv_evaluate")
    validated = evaluator.validate(module, datamodule=data, verbose=False)[0]
    tested = evaluator.test(module, datamodule=data, verbose=False)[0]
    logits = torch.cat(evaluator.predict(module, datamodule=data))
    state = module.loop.state

    # A new module and trainer resume from the best `.ckpt` and train a few more steps: Lightning restores the
    # weights, optimizer and loops; the module restores the HF state (log history, schedule, RNG).
    resumed = HFLightningModule.from_args(build_model(), args, compute_metrics=accuracy)
    more = lightning_trainer(
        options, [HFCheckpoint()], log_name="csv_resumed", max_steps=state.global_step + options.eval_steps
    )
    more.fit(resumed, datamodule=data, ckpt_path=best.best_model_path)

    if trainer.is_global_zero:
        folders = sorted(n for n in os.listdir(options.output_dir) if n.startswith("checkpoint-"))
        print(f"fit: steps={state.global_step} stopped_early={stop.stopped_epoch > 0 or trainer.should_stop}")
        print(f"best .ckpt: {best.best_model_path} (eval_loss {float(best.best_model_score):.4f})")
        print(f"validate: eval_loss={validated['eval_loss']:.4f} eval_accuracy={validated['eval_accuracy']:.4f}")
        print(f"test: test_loss={tested['test_loss']:.4f} test_accuracy={tested['test_accuracy']:.4f}")
        print(f"predict: logits {tuple(logits.shape)}")
        print(f"HF checkpoint folders: {' '.join(folders)}")
        print(f"resumed from the best .ckpt to step {resumed.loop.state.global_step}")
        print(f"CSV log: {os.path.join(options.output_dir, 'csv', 'metrics.csv')}")
    return {**validated, **tested}


if __name__ == "__main__":
    main()
