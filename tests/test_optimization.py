"""optimization: the optimiser table is transformers' own, reached without importing `transformers.trainer`."""

import subprocess
import sys
from pathlib import Path

import pytest
from packaging.version import Version
from transformers import TrainingArguments as HFTrainingArguments
from transformers.trainer import Trainer as HFTrainer

from hf_lightning import TrainingArguments, compat
from hf_lightning.optimization import optimizer_cls_and_kwargs
from tests.helpers import tiny_bert

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "optim, optim_args",
    [
        ("adamw_torch_fused", None),
        ("adamw_torch", None),
        ("adafactor", None),
        ("sgd", "momentum=0.9"),
        ("adagrad", None),
        ("rmsprop", None),
    ],
)
def test_optimizer_table_equals_hf_static_method(tmp_path, optim, optim_args):
    kwargs = dict(output_dir=str(tmp_path), optim=optim, optim_args=optim_args, learning_rate=3e-3, adam_beta2=0.98)
    model = tiny_bert()
    ours = optimizer_cls_and_kwargs(TrainingArguments(**kwargs), model)
    theirs = HFTrainer.get_optimizer_cls_and_kwargs(HFTrainingArguments(**kwargs), model)
    assert ours == theirs


def test_unknown_optimizer_names_the_argument(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path))
    args.optim = "no-such-optimizer"
    with pytest.raises(ValueError, match="unsupported optimizer: no-such-optimizer"):
        optimizer_cls_and_kwargs(args)


@pytest.mark.skipif(
    compat.TRANSFORMERS_VERSION < Version("5.2.0"),
    reason="transformers < 5.2 keeps its optimiser table in transformers.trainer (a Trainer method)",
)
def test_training_on_a_torch_dataset_imports_neither_datasets_nor_transformers_trainer(tmp_path):
    """The peak-RSS benchmark relies on it: `transformers.trainer` pulls in `datasets` and pandas (~80 MB)."""
    code = (
        "import sys\n"
        "from hf_lightning import Trainer, TrainingArguments\n"
        "from tests.helpers import ToyClassification, tiny_bert\n"
        f"args = TrainingArguments(output_dir={str(tmp_path)!r}, max_steps=2, report_to='none', disable_tqdm=True,"
        " save_strategy='no', use_cpu=True)\n"
        "Trainer(model=tiny_bert(), args=args, train_dataset=ToyClassification(16)).train()\n"
        "loaded = [m for m in ('datasets', 'pandas', 'transformers.trainer') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
