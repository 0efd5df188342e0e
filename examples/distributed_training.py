"""Distributed training with HF's arguments, run by Lightning strategies (DDP, FSDP, DeepSpeed), offline.

    # one machine, 2 CPU processes over gloo (Lightning starts the second process itself)
    python examples/distributed_training.py --strategy ddp --devices 2 --use_cpu --ddp_backend gloo
    # the same, launched by torchrun or accelerate with HF's arguments only: the world comes from the launcher
    torchrun --nproc_per_node 2 examples/distributed_training.py --use_cpu
    accelerate launch --multi_gpu --num_processes 2 examples/distributed_training.py --use_cpu
    # Lightning's launcher that starts the workers from inside fit; the results come back to this process
    python examples/distributed_training.py --strategy ddp_spawn --devices 2 --use_cpu
    # two nodes: run on each node, with its --node_rank (torchrun sets NODE_RANK, MASTER_ADDR/PORT)
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST0 --master_port 29500 --nproc_per_node 4 \
        examples/distributed_training.py --strategy ddp --num_nodes 2 --devices 4
    # GPUs: FSDP from HF's fsdp_config, or DeepSpeed from a config with "auto" values
    python examples/distributed_training.py --devices 4 --fsdp --fsdp_config examples/configs/fsdp.json
    python examples/distributed_training.py --devices 4 --deepspeed examples/configs/ds_zero2.json --bf16

The model is a small BERT initialised from scratch and the data a synthetic classification task (the label is a
function of the tokens), so nothing is downloaded; `--model_name_or_path` picks a real checkpoint instead. Every
`TrainingArguments` option (and the Lightning ones: --accelerator, --devices, --num_nodes, --strategy, --precision,
--profiler, --lightning_trainer_kwargs) works on the command line. The final model is saved in HF format
(`model.safetensors`, gathered from every rank under FSDP/DeepSpeed, written by rank 0) to `output_dir`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from hf_lightning import HfArgumentParser, Trainer, TrainingArguments

TRAINING_DEFAULTS = {
    "output_dir": "outputs/distributed_training",
    "per_device_train_batch_size": 8,
    "learning_rate": 1e-3,
    "num_train_epochs": 1,
    "logging_steps": 5,
    "save_strategy": "no",
    "report_to": "none",
    "seed": 42,
}


@dataclass
class ScriptArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "A checkpoint; default: a tiny BERT."})
    num_samples: int = field(default=256, metadata={"help": "Synthetic training samples."})
    seq_len: int = field(default=16, metadata={"help": "Tokens per sample."})


class SyntheticClassification(Dataset):
    """Random token sequences labelled by the sum of their tokens modulo 3 (deterministic, learnable)."""

    def __init__(self, n: int, seq_len: int, vocab: int = 100, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(1, vocab, (n, seq_len), generator=g)
        self.labels = self.input_ids.sum(-1) % 3

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}


def build_model(script: ScriptArguments) -> torch.nn.Module:
    if script.model_name_or_path:
        return AutoModelForSequenceClassification.from_pretrained(script.model_name_or_path, num_labels=3)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3
    )
    return BertForSequenceClassification(config)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = HfArgumentParser((ScriptArguments, TrainingArguments))
    parser.set_defaults(**TRAINING_DEFAULTS)
    script, args = parser.parse_args_into_dataclasses(args=argv)
    trainer = Trainer(
        model=build_model(script), args=args, train_dataset=SyntheticClassification(script.num_samples, script.seq_len)
    )
    result = trainer.train()
    trainer.save_model()
    if trainer.is_world_process_zero():
        lightning = trainer.lightning_trainer  # None where ddp_spawn / ddp_fork trained in processes started here
        run = f"strategy={type(lightning.strategy).__name__} world_size={lightning.world_size}" if lightning else ""
        print(
            f"{run or f'strategy={args.strategy} (trained in started processes)'} "
            f"steps={result.global_step} train_loss={result.training_loss:.4f} saved={args.output_dir}"
        )
    trainer.end()  # the end of the script: close the process group, if any (transformers' `Trainer.end()`)
    return result.metrics


if __name__ == "__main__":
    main()
