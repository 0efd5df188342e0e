"""transformers' parallelism helpers on hf_lightning's Trainer: the sizes and `end()`, compared with transformers'."""

from __future__ import annotations

import pytest
import torch.distributed as dist
import transformers
from helpers import QUIET_ARGS, tiny_bert

import hf_lightning


def _trainer(impl: str, out, **args):
    trainer_cls, args_cls = (
        (transformers.Trainer, transformers.TrainingArguments)
        if impl == "hf"
        else (hf_lightning.Trainer, hf_lightning.TrainingArguments)
    )
    return trainer_cls(model=tiny_bert(), args=args_cls(output_dir=str(out / impl), **QUIET_ARGS, **args))


def test_parallel_sizes_and_total_batch_size_match_transformers(tmp_path) -> None:
    """TP/CP/SP sizes (1 without `parallelism_config`, which hf_lightning refuses) and the samples per optimiser step
    that `train()` plans with."""
    sizes = {}
    for impl in ("hf", "hfl"):
        trainer = _trainer(impl, tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=3)
        sizes[impl] = (
            trainer.get_tp_size(),
            trainer.get_cp_size(),
            trainer.get_sp_size(),
            trainer.get_total_train_batch_size(trainer.args),
        )
    assert sizes["hfl"] == sizes["hf"] == (1, 1, 1, 12)


@pytest.mark.parametrize("impl", ["hf", "hfl"])
def test_end_closes_the_process_group(tmp_path, impl: str) -> None:
    """`end()` destroys the process group the script trained in (transformers 5.18 added it; hf_lightning has it on
    every release); without one it does nothing."""
    if impl == "hf" and not hasattr(transformers.Trainer, "end"):
        pytest.skip(f"transformers {transformers.__version__} has no Trainer.end (5.18)")
    _trainer(impl, tmp_path).end()  # no process group: nothing to close
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        _trainer(impl, tmp_path).end()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
