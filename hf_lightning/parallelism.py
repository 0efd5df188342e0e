"""transformers' Trainer helpers about the run's parallelism, for code written against its public API.

hf_lightning parallelises over data only (DDP, and Lightning's sharding strategies: FSDP, DeepSpeed); tensor, context
and sequence parallelism (`TrainingArguments.parallelism_config`) are refused when the arguments are built, so their
sizes are 1 here, which is also what transformers' `get_tp_size` / `get_cp_size` / `get_sp_size` answer without
them. `end()` is transformers' (5.18) end of a script: it closes the process group `train()` ran in.
"""

from __future__ import annotations

import torch.distributed as dist


class ParallelismMixin:
    """`get_tp_size` / `get_cp_size` / `get_sp_size` (all 1: see the module docstring) and `end()`."""

    def get_tp_size(self) -> int:
        """Tensor-parallel size: 1 (hf_lightning does not shard layers across processes)."""
        return 1

    def get_cp_size(self) -> int:
        """Context-parallel size: 1."""
        return 1

    def get_sp_size(self) -> int:
        """Sequence-parallel size: 1."""
        return 1

    def end(self) -> None:
        """Close the distributed process group, as transformers' `Trainer.end()`: once, at the very end of a script,
        after everything that talks to the other processes (`train`, `evaluate`, `predict`, `save_model`,
        `push_to_hub`). Nothing to do in a single process."""
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
