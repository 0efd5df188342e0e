"""hf_lightning: the Hugging Face `Trainer` API, run by PyTorch Lightning.

Change `from transformers import Trainer, TrainingArguments` to `from hf_lightning import ...`; the HF
callback, state and data classes are re-exported so scripts keep a single import.
"""

import importlib
import warnings
from typing import Any

__version__ = "0.1.0"

# Lightning 2.6 on torch >= 2.10 warns about its own pytree use on every batch; it is not actionable by users.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

# Public name -> the module it comes from. Imported on first access (PEP 562) so that `import hf_lightning` stays
# cheap: Lightning, transformers' trainer utilities, matplotlib (plotting) load only when a name is used.
_EXPORTS = {
    "DataCollatorWithPadding": "transformers",
    "EarlyStoppingCallback": "transformers",
    "EvalPrediction": "transformers",
    "HfArgumentParser": "transformers",
    "PrinterCallback": "transformers",
    "ProgressCallback": "transformers",
    "TrainerCallback": "transformers",
    "TrainerControl": "transformers",
    "TrainerState": "transformers",
    "default_data_collator": "transformers",
    "DefaultFlowCallback": "transformers.trainer_callback",
    "PredictionOutput": "transformers.trainer_utils",
    "TrainOutput": "transformers.trainer_utils",
    "get_last_checkpoint": "transformers.trainer_utils",
    "set_seed": "transformers.trainer_utils",
    "HFCheckpoint": "hf_lightning.hf_checkpoint",
    "HFDataModule": "hf_lightning.datamodule",
    "HFLightningCLI": "hf_lightning.cli",
    "HFLightningModule": "hf_lightning.module",
    "HFModelModule": "hf_lightning.cli",
    "HFTextDataModule": "hf_lightning.cli",
    "PlotHistoryCallback": "hf_lightning.plotting",
    "plot_history": "hf_lightning.plotting",
    "Seq2SeqTrainer": "hf_lightning.seq2seq",
    "Seq2SeqTrainingArguments": "hf_lightning.seq2seq_args",
    "Trainer": "hf_lightning.trainer",
    "TrainingArguments": "hf_lightning.training_args",
    "BatchSizeResult": "hf_lightning.batch_size_finder",
    "LRFinderResult": "hf_lightning.lr_finder",
    "TrainingPreempted": "hf_lightning.preemption",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        try:  # submodules, e.g. `hf_lightning.metrics` after a bare `import hf_lightning`
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "BatchSizeResult",
    "DataCollatorWithPadding",
    "DefaultFlowCallback",
    "EarlyStoppingCallback",
    "EvalPrediction",
    "HFCheckpoint",
    "HFDataModule",
    "HFLightningCLI",
    "HFLightningModule",
    "HFModelModule",
    "HFTextDataModule",
    "HfArgumentParser",
    "LRFinderResult",
    "PlotHistoryCallback",
    "PredictionOutput",
    "PrinterCallback",
    "ProgressCallback",
    "Seq2SeqTrainer",
    "Seq2SeqTrainingArguments",
    "TrainOutput",
    "Trainer",
    "TrainerCallback",
    "TrainerControl",
    "TrainerState",
    "TrainingArguments",
    "TrainingPreempted",
    "default_data_collator",
    "get_last_checkpoint",
    "plot_history",
    "set_seed",
]
