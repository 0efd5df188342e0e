"""hf_lightning: the Hugging Face `Trainer` API, run by PyTorch Lightning.

Change `from transformers import Trainer, TrainingArguments` to `from hf_lightning import ...`; the HF
callback, state and data classes are re-exported so scripts keep a single import.
"""

import warnings

from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    EvalPrediction,
    HfArgumentParser,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    default_data_collator,
)
from transformers.trainer_callback import DefaultFlowCallback
from transformers.trainer_utils import PredictionOutput, TrainOutput, get_last_checkpoint, set_seed

from hf_lightning.module import HFLightningModule
from hf_lightning.trainer import Trainer
from hf_lightning.training_args import TrainingArguments

__version__ = "0.1.0"

# Lightning 2.6 on torch >= 2.10 warns about its own pytree use on every batch; it is not actionable by users.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

__all__ = [
    "DataCollatorWithPadding",
    "DefaultFlowCallback",
    "EarlyStoppingCallback",
    "EvalPrediction",
    "HFLightningModule",
    "HfArgumentParser",
    "PredictionOutput",
    "PrinterCallback",
    "ProgressCallback",
    "TrainOutput",
    "Trainer",
    "TrainerCallback",
    "TrainerControl",
    "TrainerState",
    "TrainingArguments",
    "default_data_collator",
    "get_last_checkpoint",
    "set_seed",
]
