"""`skip_memory_metrics=False`: HF's `*_mem_*` metrics, measured by transformers' own `TrainerMemoryTracker`.

transformers measures each stage of a Trainer (`init`, `train`, `eval`, `test`): RSS (and accelerator memory) at its
start and end, and the peak in between from a monitoring thread. It reports `{stage}_mem_cpu_alloc_delta` and
`{stage}_mem_cpu_peaked_delta` (`_gpu_` too with an accelerator) in the stage's metrics, the `init` ones and
`before_init_mem_cpu` with the first stage reported, and ignores an evaluation nested in training. The tracker
finds the stage from the name of the method that called it (`train`, `_finalize_training`, `evaluate` ...); here the
loop's events have other names, so `MemoryMetrics` is told the stage instead and otherwise is the tracker itself.
"""

from __future__ import annotations

from typing import Any

from transformers.trainer_utils import TrainerMemoryTracker

__all__ = ["MemoryMetrics"]


class MemoryMetrics(TrainerMemoryTracker):
    """`TrainerMemoryTracker` with the stage named by the caller (one of its `stages` values)."""

    def __init__(self, skip_memory_metrics: bool = True) -> None:
        super().__init__(skip_memory_metrics)
        self._stage: str | None = None

    def derive_stage(self) -> str:
        return self._stage

    def start_stage(self, stage: str) -> None:
        """Start measuring `stage` (ignored while another stage runs: an evaluation during training)."""
        if not self.skip_memory_metrics:
            self._stage = stage
            self.start()

    def stop_stage(self, stage: str, metrics: dict[str, Any] | None = None) -> None:
        """Stop measuring `stage` and add its metrics (and, the first time, the `init` ones) to `metrics`."""
        if not self.skip_memory_metrics:
            self._stage = stage
            self.stop_and_update_metrics(metrics)

    def abandon_stage(self, stage: str) -> None:
        """End `stage` without reporting it, if it is still running (a training run that raised): the monitoring
        thread stops and later evaluations are measured again."""
        if not self.skip_memory_metrics and self.cur_stage == stage:
            self.stop(stage)
