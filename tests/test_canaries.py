"""Canaries: every value or rule hf_lightning restates from transformers, compared with the installed transformers.

transformers keeps part of what its Trainer writes or decides in `transformers.trainer` (too costly to import at run
time) or as literals inside its methods, so hf_lightning restates it. Each restated value is compared here with the
installed transformers, by name or by running transformers' own code on the same input, so that when a release
renames a file or changes a rule, this file fails naming the difference and the version, instead of hf_lightning
writing checkpoints nobody reads. What hf_lightning reads from transformers at run time needs no canary: the checkpoint
folder prefix, the weight file names, the optimiser table, the scheduler factory, `TrainingArguments` defaults such as
`ddp_timeout`, `speed_metrics`, `rewrite_logs`, the model-class tables. The default `ignore_keys` of `prediction_step`
and the field accounting have tests of their own; log keys and metric names are pinned by the differential tests
(`test_trainer_parity.py`, `test_evaluation.py`, `test_checkpoints.py`), which compare whole `log_history`s.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from types import SimpleNamespace

import pytest
import torch
import transformers
from helpers import QUIET_ARGS, bare_lightning_trainer, tiny_bert, tiny_llama
from packaging.version import Version
from transformers import (
    DataCollatorForSeq2Seq,
    GPT2Config,
    GPT2LMHeadModel,
    T5Config,
    T5ForConditionalGeneration,
    get_scheduler,
)
from transformers import Trainer as HFTrainer
from transformers import TrainingArguments as HFTrainingArguments
from transformers import trainer as hf_trainer_module
from transformers.trainer_pt_utils import LabelSmoother, nested_concat
from transformers.trainer_utils import SchedulerType

import hf_lightning
from hf_lightning import HFDataModule, HFLightningModule, checkpoints, compat, data, metrics, optimization, strategies
from hf_lightning import Seq2SeqTrainingArguments as HFLSeq2SeqTrainingArguments
from hf_lightning import Trainer as HFLTrainer
from hf_lightning import TrainingArguments as HFLTrainingArguments
from hf_lightning.training_args import DEFAULT_OUTPUT_DIR

VERSION = f"transformers {transformers.__version__}"


def _pair(model: torch.nn.Module, tmp_path, **args) -> tuple[HFTrainer, HFLTrainer]:
    """transformers' and hf_lightning's Trainer on the same model, with the same quiet CPU arguments."""
    kwargs = {**QUIET_ARGS, **args}
    hf = HFTrainer(model=model, args=HFTrainingArguments(output_dir=str(tmp_path / "hf"), **kwargs))
    hfl = HFLTrainer(model=model, args=HFLTrainingArguments(output_dir=str(tmp_path / "hfl"), **kwargs))
    return hf, hfl


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=32))


def tiny_t5() -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, decoder_start_token_id=0,
    )  # fmt: skip
    return T5ForConditionalGeneration(config)


# ---- names of the files in a checkpoint ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["TRAINER_STATE_NAME", "TRAINING_ARGS_NAME", "OPTIMIZER_NAME", "SCHEDULER_NAME", "SCALER_NAME"]
)
def test_checkpoint_file_names(name):
    ours, theirs = getattr(checkpoints, name), getattr(hf_trainer_module, name)
    assert ours == theirs, f"{VERSION} names {name} {theirs!r}; hf_lightning writes {ours!r}"


@pytest.mark.parametrize(("world_size", "rank"), [(1, 0), (2, 1)])
def test_rng_state_file(tmp_path, world_size, rank):
    """transformers' own `_save_rng_state` (on a stand-in of the rank) writes the file hf_lightning writes and reads."""
    stand_in = SimpleNamespace(
        args=SimpleNamespace(world_size=world_size, process_index=rank, parallel_mode=None, n_gpu=0)
    )
    HFTrainer._save_rng_state(stand_in, str(tmp_path))
    (written,) = os.listdir(tmp_path)
    assert checkpoints.rng_state_name(world_size, rank) == written, f"{VERSION} writes {written!r}"
    theirs = torch.load(tmp_path / written, weights_only=False)
    ours = HFLTrainer(model=tiny_bert(), args=HFLTrainingArguments(str(tmp_path / "o"), **QUIET_ARGS))
    ours._save_rng_state(str(tmp_path / "ours"))
    assert set(torch.load(ours._rng_file(str(tmp_path / "ours")), weights_only=False)) == set(theirs)


# ---- labels --------------------------------------------------------------------------------------------------------


def test_ignore_index():
    """The label value hf_lightning ignores (counting items, padding predictions across batches and ranks, metrics) is
    the one transformers' losses, collators and padding ignore."""
    theirs = {
        "LabelSmoother.ignore_index": LabelSmoother.ignore_index,
        "DataCollatorForSeq2Seq.label_pad_token_id": DataCollatorForSeq2Seq.label_pad_token_id,
        "nested_concat(padding_index=)": inspect.signature(nested_concat).parameters["padding_index"].default,
    }
    for name, value in theirs.items():
        assert data.IGNORE_INDEX == value, f"{VERSION}: {name} is {value}, hf_lightning uses {data.IGNORE_INDEX}"
    assert metrics.IGNORE_INDEX == data.IGNORE_INDEX


def _label_batches(vocab: int = 50) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    batches = []
    for rows in (3, 2):
        ids = torch.randint(1, vocab, (rows, 7), generator=g)
        labels = ids.clone()
        labels[:, :2] = -100  # a prompt
        labels[0, -1] = -100  # padding
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return batches


@pytest.mark.parametrize("model_fn", [tiny_gpt2, tiny_llama, tiny_t5], ids=["gpt2", "llama", "t5"])
@pytest.mark.parametrize("shift_labels_key", [False, True], ids=["labels", "shift_labels"])
def test_num_items_in_batch(tmp_path, model_fn, shift_labels_key):
    """The label tokens a gradient-accumulation window counts (shifted for causal LMs, depending on the release)."""
    hf, hfl = _pair(model_fn(), tmp_path)
    batches = _label_batches()
    if shift_labels_key:
        for b in batches:
            b["shift_labels"] = b["labels"][..., 1:].clone()
    theirs = hf._get_num_items_in_batch(batches, torch.device("cpu"))
    ours = hfl._count_items(batches)
    assert int(ours) == int(theirs), f"{VERSION} counts {int(theirs)} items, hf_lightning {int(ours)}"


def test_num_items_in_batch_reaches_the_loss_as_transformers_hands_it(tmp_path):
    """What `compute_loss_func` receives as `num_items_in_batch`, in training (windows of 2 micro-batches) and in
    evaluation: the same values with the same dtype (an integer count before 5.19, a float from 5.19, when the
    Trainer started dividing it by the parallel sizes)."""
    rows = [{k: v[i] for k, v in b.items()} for b in _label_batches() for i in range(len(b["labels"]))]
    seen: dict[str, list[tuple[str, float]]] = {"hf": [], "hfl": []}

    def make_loss(impl: str):
        def loss_func(outputs, labels, num_items_in_batch=None):
            seen[impl].append((str(num_items_in_batch.dtype), float(num_items_in_batch)))
            logits = outputs.logits[..., :-1, :].flatten(0, 1)
            return torch.nn.functional.cross_entropy(logits, labels[..., 1:].flatten(), reduction="sum") / (
                num_items_in_batch
            )

        return loss_func

    kwargs = dict(
        QUIET_ARGS, per_device_train_batch_size=1, per_device_eval_batch_size=2, gradient_accumulation_steps=2
    )
    kwargs.update(max_steps=2, save_strategy="no", logging_steps=1)
    for impl, (trainer_cls, args_cls) in {
        "hf": (HFTrainer, HFTrainingArguments),
        "hfl": (HFLTrainer, HFLTrainingArguments),
    }.items():
        args = args_cls(output_dir=str(tmp_path / impl), **kwargs)
        trainer = trainer_cls(
            model=tiny_gpt2(), args=args, train_dataset=rows, eval_dataset=rows, compute_loss_func=make_loss(impl)
        )
        trainer.train()
        trainer.evaluate()
    # The plain-Lightning door: the same module and loop in a lightning.Trainer the user owns.
    seen["plain"] = []
    args = HFLTrainingArguments(output_dir=str(tmp_path / "plain"), **kwargs)
    module = HFLightningModule.from_args(tiny_gpt2(), args, compute_loss_func=make_loss("plain"))
    lightning_trainer = bare_lightning_trainer(tmp_path / "plain")
    lightning_trainer.fit(module, datamodule=HFDataModule(args, rows))  # no eval set: no Lightning validation in fit
    lightning_trainer.validate(module, datamodule=HFDataModule(args, rows, rows))
    assert len(seen["hf"]) == 4 + 3, seen["hf"]  # 2 windows of 2 micro-batches, then 3 eval batches
    assert seen["hfl"] == seen["hf"], f"{VERSION}: {seen['hf']} (transformers) vs {seen['hfl']} (hf_lightning)"
    assert seen["plain"] == seen["hf"], f"{VERSION}: {seen['hf']} (transformers) vs {seen['plain']} (plain door)"


def test_signature_columns(tmp_path):
    """The columns kept by `remove_unused_columns`: the model's forward arguments plus the label names."""
    hf, hfl = _pair(tiny_bert(), tmp_path)
    hf._set_signature_columns_if_needed()
    assert sorted(hfl._set_signature_columns_if_needed()) == sorted(hf._signature_columns)


# ---- optimisation --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_fn", [tiny_bert, tiny_llama, tiny_t5], ids=["bert", "llama", "t5"])
def test_no_decay_parameters(tmp_path, model_fn):
    """No weight decay on biases and normalisation weights (`optimization.NO_DECAY_NAME_PATTERNS`)."""
    model = model_fn()
    hf, hfl = _pair(model, tmp_path)
    theirs, ours = set(hf.get_decay_parameter_names(model)), set(hfl.get_decay_parameter_names(model))
    assert ours == theirs, f"{VERSION} decays {sorted(theirs - ours)} too / not {sorted(ours - theirs)}"


def _build_scheduler(kind: str) -> object:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    extra = {"cosine_with_min_lr": {"min_lr": 1e-6}, "cosine_warmup_with_min_lr": {"min_lr": 1e-6}}
    extra["warmup_stable_decay"] = {"num_decay_steps": 2}
    try:
        return get_scheduler(
            kind, optimizer, num_warmup_steps=1, num_training_steps=10, scheduler_specific_kwargs=extra.get(kind)
        )
    except (TypeError, ValueError) as err:
        pytest.fail(f"{VERSION} has a scheduler kind {kind!r} this canary does not know how to build: {err}")


@pytest.mark.parametrize("kind", [kind.value for kind in SchedulerType])
def test_metric_schedulers(kind):
    """transformers steps a scheduler with the eval metric (after evaluation, not per step) exactly when its `step`
    takes the metric; `optimization.is_metric_scheduler` must say the same for every scheduler kind."""
    scheduler = _build_scheduler(kind)
    step = inspect.signature(scheduler.step).parameters
    takes_metric = "metrics" in step and step["metrics"].default is inspect.Parameter.empty
    assert optimization.is_metric_scheduler(scheduler) == takes_metric, f"{VERSION}: {kind!r} ({type(scheduler)})"


def test_floating_point_ops(tmp_path):
    """`total_flos`: transformers' `floating_point_ops` (6 x tokens x non-embedding parameters)."""
    model = tiny_bert()
    hf, hfl = _pair(model, tmp_path)
    inputs = {"input_ids": torch.ones(4, 8, dtype=torch.long), "labels": torch.zeros(4, dtype=torch.long)}
    assert hfl.floating_point_ops(inputs) == hf.floating_point_ops(inputs)


# ---- arguments -----------------------------------------------------------------------------------------------------


def test_default_output_dir(tmp_path, monkeypatch):
    """A Trainer given no arguments writes to the same folder."""
    monkeypatch.chdir(tmp_path)
    assert HFTrainer(model=tiny_bert()).args.output_dir == DEFAULT_OUTPUT_DIR
    assert hf_lightning.Trainer(model=tiny_bert()).args.output_dir == DEFAULT_OUTPUT_DIR


def test_seq2seq_arguments():
    """`Seq2SeqTrainingArguments` adds transformers' generation fields, with transformers' defaults."""

    def added(cls, base):
        base_names = {f.name for f in dataclasses.fields(base)}
        return {f.name: f.default for f in dataclasses.fields(cls) if f.name not in base_names}

    theirs = added(transformers.Seq2SeqTrainingArguments, HFTrainingArguments)
    ours = added(HFLSeq2SeqTrainingArguments, HFLTrainingArguments)
    assert ours == theirs, f"{VERSION} adds {theirs}"


# Before 5.10 transformers read only the `fsdp` options and FSDP1's keys of `fsdp_config`; hf_lightning honours
# these keys as 5.10+ does instead of ignoring them.
_FSDP_CONFIG_KEYS = pytest.mark.xfail(
    compat.TRANSFORMERS_VERSION < Version("5.10.0"),
    reason="transformers < 5.10 ignores this fsdp_config key (hf_lightning honours it, as 5.10+ does)",
    strict=True,
)


@pytest.mark.parametrize(
    ("fsdp", "config"),
    [
        (True, {}),
        pytest.param(True, {"reshard_after_forward": False}, marks=_FSDP_CONFIG_KEYS),
        pytest.param(True, {"cpu_offload": True}, marks=_FSDP_CONFIG_KEYS),
        pytest.param(True, {"state_dict_type": "SHARDED_STATE_DICT"}, marks=_FSDP_CONFIG_KEYS),
        ("full_shard offload", {}),
        ("shard_grad_op", {}),
    ],
)
def test_fsdp_config_defaults(tmp_path, fsdp, config):
    """hf_lightning's `FSDPStrategy` arguments shard, offload and save as transformers' own resolution of `fsdp` /
    `fsdp_config` (the accelerate plugin arguments it builds) says."""
    kwargs = dict(output_dir=str(tmp_path), fsdp=fsdp, fsdp_config=dict(config), **QUIET_ARGS)
    plugin = HFTrainingArguments(**kwargs).fsdp_plugin_args
    ours = strategies.fsdp_strategy_kwargs(HFLTrainingArguments(**kwargs), tiny_bert())
    if "sharding_strategy" in plugin:
        sharding = str(getattr(plugin["sharding_strategy"], "value", plugin["sharding_strategy"])).upper()
    else:
        reshard = plugin.get("reshard_after_forward", True)
        sharding = ("FULL_SHARD" if reshard else "SHARD_GRAD_OP") if isinstance(reshard, bool) else reshard.upper()
    theirs = {
        "sharding_strategy": sharding,
        "cpu_offload": bool(plugin.get("cpu_offload", False)),
        "state_dict_type": "sharded" if str(plugin.get("state_dict_type", "")).startswith("SHARDED") else "full",
    }
    assert {k: ours[k] for k in theirs} == theirs, f"{VERSION} resolves fsdp={fsdp!r}, {config} to {plugin}"


def test_deepspeed_auto_value_resolver():
    """The "auto" values of a `deepspeed` config are resolved by transformers' own `HfTrainerDeepSpeedConfig` methods,
    taken by name."""
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from hf_lightning.deepspeed_integration import HF_CONFIG_METHODS

    missing = [name for name in HF_CONFIG_METHODS if name not in vars(HfTrainerDeepSpeedConfig)]
    assert not missing, f"{VERSION}'s HfTrainerDeepSpeedConfig has no {missing}"


# Steps of transformers' own loop that hf_lightning's Trainer does not have (README, "Where hf_lightning differs").
NOT_PROVIDED = {"get_batch_samples", "set_initial_training_values", "create_accelerator_and_postprocess"}
# Methods of 5.0 / 5.1 that 5.2 turned into functions or dropped (internal steps of transformers' own loop).
NOT_PROVIDED |= {"compare_trainer_and_checkpoint_args", "num_tokens", "propagate_args_to_deepspeed"}


def test_every_public_trainer_method_of_the_installed_transformers_exists() -> None:
    """A public method a transformers release adds to `Trainer` fails here until hf_lightning has it (or it is
    listed, with its reason, as not provided)."""
    theirs = {name for name, value in vars(HFTrainer).items() if not name.startswith("_") and callable(value)}
    missing = sorted(theirs - NOT_PROVIDED - set(dir(HFLTrainer)))
    assert not missing, f"{VERSION}: transformers.Trainer has public methods hf_lightning's Trainer lacks: {missing}"
