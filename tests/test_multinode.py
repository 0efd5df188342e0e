"""Two "nodes" of one process each on loopback: what `torchrun --nnodes 2` (or a cluster) sets up, one per node.

Each process gets the launcher's environment (MASTER_ADDR/PORT, NODE_RANK, WORLD_SIZE, LOCAL_RANK=0) and trains
with `num_nodes=2, devices=1, strategy="ddp"` over gloo; together they write one checkpoint set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from helpers import ToyClassification, tiny_bert
from test_strategies import free_port, launch, make_args, sum_loss

from hf_lightning import Trainer


def _node(port: int, out: str, env: dict[str, str]) -> None:
    from accelerate.state import AcceleratorState, PartialState

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **env)
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    args = make_args(
        out,
        per_device_train_batch_size=2,
        num_train_epochs=1,
        logging_steps=1,
        save_strategy="steps",
        save_steps=2,
        seed=7,
        strategy="ddp",
        num_nodes=2,
        devices=1,
        ddp_backend="gloo",
    )
    trainer = Trainer(
        model=tiny_bert(), args=args, train_dataset=ToyClassification(16, seed=3), compute_loss_func=sum_loss
    )
    trainer.train()
    lt = trainer.lightning_trainer
    info = {"ranks": [lt.world_size, lt.global_rank, lt.node_rank, lt.local_rank], "steps": trainer.state.global_step}
    with open(os.path.join(out, f"node{env['NODE_RANK']}.json"), "w") as f:
        json.dump(info, f)


def test_two_nodes_on_loopback_train_and_write_one_checkpoint_set(tmp_path: Path) -> None:
    env = [{"WORLD_SIZE": "2", "NODE_RANK": str(n), "LOCAL_RANK": "0", "RANK": str(n)} for n in range(2)]
    assert launch(_node, free_port(), str(tmp_path), env, method="spawn") == [0, 0]
    nodes = [json.loads((tmp_path / f"node{n}.json").read_text()) for n in range(2)]
    assert [n["ranks"] for n in nodes] == [[2, 0, 0, 0], [2, 1, 1, 0]]
    assert [n["steps"] for n in nodes] == [4, 4]  # 16 samples / (2 per device x 2 nodes)
    checkpoints = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]
    files = set(os.listdir(tmp_path / "checkpoint-4"))
    assert {"model.safetensors", "trainer_state.json", "rng_state_0.pth", "rng_state_1.pth"} <= files
