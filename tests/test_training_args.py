"""Tests for hf_lightning.training_args: HF parity, Lightning fields, v4 names, validation, helpers."""

import dataclasses
import json
import math
import warnings

import pytest
import torch
import transformers
from helpers import needs_transformers, v4_alias
from transformers import HfArgumentParser
from transformers.trainer_utils import IntervalStrategy

from hf_lightning.training_args import (
    V4_ALIASES,
    TrainingArguments,
    lightning_accelerator,
    lightning_precision,
    to_hf_lightning_args,
)

HF_FIELDS = [f.name for f in dataclasses.fields(transformers.TrainingArguments) if f.init]


@pytest.fixture
def out(tmp_path):
    return str(tmp_path / "out")


def make(out: str, **kwargs) -> TrainingArguments:
    """Build args, failing on any warning (v5 names must be silent)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return TrainingArguments(output_dir=out, **kwargs)


# --- parity with transformers ---


def test_defaults_match_transformers(out):
    ours, theirs = make(out), transformers.TrainingArguments(output_dir=out)
    assert isinstance(ours, transformers.TrainingArguments)
    diff = {n: (getattr(ours, n), getattr(theirs, n)) for n in HF_FIELDS if getattr(ours, n) != getattr(theirs, n)}
    assert diff == {}
    assert ours.train_batch_size == theirs.train_batch_size
    assert ours.eval_batch_size == theirs.eval_batch_size
    assert (ours.world_size, ours.process_index, ours.should_log, ours.should_save) == (1, 0, True, True)
    assert ours.get_warmup_steps(100) == theirs.get_warmup_steps(100) == 0


def test_lightning_defaults(out):
    args = make(out)
    assert (args.accelerator, args.devices, args.num_nodes, args.strategy) == ("auto", "auto", 1, "auto")
    assert args.precision is None and args.plugins is None


def test_to_dict_has_hf_keys_plus_lightning_and_no_unset_legacy(out):
    ours, theirs = make(out), transformers.TrainingArguments(output_dir=out)
    d = ours.to_dict()
    lightning = {"accelerator", "devices", "num_nodes", "strategy", "precision", "plugins", "profiler"}
    extras = {"lightning_trainer_kwargs", "keep_freed_host_memory", "auto_lr_find", "lr_find_kwargs"}
    extras |= {"auto_scale_batch_size", "log_throughput", "checkpoint_on_preemption"}
    assert set(d) == set(theirs.to_dict()) | lightning | extras
    assert not set(d) & set(V4_ALIASES)
    assert json.loads(ours.to_json_string()) == json.loads(json.dumps(d))
    assert "TrainingArguments(" in repr(ours)


def test_strategy_and_plugin_objects_serialise_as_class_name(out):
    from lightning.pytorch.plugins.environments import LightningEnvironment
    from lightning.pytorch.strategies import DDPStrategy

    args = make(out, strategy=DDPStrategy(), plugins=[LightningEnvironment()], devices="0,1")
    d = json.loads(args.to_json_string())
    assert d["strategy"] == "DDPStrategy"
    assert d["plugins"] == ["LightningEnvironment"]
    assert d["devices"] == [0, 1]
    assert "strategy=" in str(args)


def test_hf_argument_parser(out):
    parser = HfArgumentParser(TrainingArguments)
    cli = [
        "--output_dir", out, "--evaluation_strategy", "epoch", "--warmup_ratio", "0.1", "--devices", "2",
        "--strategy", "ddp", "--precision", "bf16-mixed", "--use_cpu", "--bf16", "--no_cuda", "--num_nodes", "1",
        "--keep_freed_host_memory", "false",
    ]  # fmt: skip
    with pytest.warns(FutureWarning):
        (args,) = parser.parse_args_into_dataclasses(cli)
    assert isinstance(args, TrainingArguments)
    assert args.eval_strategy == IntervalStrategy.EPOCH
    assert args.warmup_ratio == 0.1 and args.get_warmup_steps(95) == 10
    assert args.devices == 2 and args.strategy == "ddp" and args.precision == "bf16-mixed"
    assert args.use_cpu is True and args.keep_freed_host_memory is False


def test_hf_argument_parser_plain_v5_is_silent(out):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(["--output_dir", out])
    assert args.to_dict() == make(out).to_dict()


@pytest.mark.parametrize(
    ("value", "expected"), [("auto", "auto"), ("2", 2), ("-1", -1), ("0,1", [0, 1]), ("1,", [1]), (3, 3), ([2], [2])]
)
def test_devices_conversion(out, value, expected):
    assert make(out, devices=value).devices == expected


# --- v4 names ---


@pytest.mark.parametrize(
    ("kwargs", "check"),
    [
        ({"evaluation_strategy": "epoch"}, lambda a: a.eval_strategy == IntervalStrategy.EPOCH and a.do_eval),
        ({"overwrite_output_dir": True}, lambda a: a.overwrite_output_dir is True),
        pytest.param({"logging_dir": "runs/x"}, lambda a: a.logging_dir == "runs/x", marks=v4_alias("logging_dir")),
        ({"save_safetensors": True}, lambda a: a.save_safetensors is True),
        ({"save_safetensors": False}, lambda a: a.save_safetensors is False),
        ({"jit_mode_eval": True}, lambda a: a.torch_compile is False),
        ({"use_ipex": True}, lambda a: True),
        ({"fp16_opt_level": "O1"}, lambda a: not a.fp16),
        ({"fp16_backend": "amp"}, lambda a: not a.fp16),
        ({"half_precision_backend": "apex"}, lambda a: not a.fp16),
        ({"no_cuda": True}, lambda a: a.use_cpu is True and lightning_accelerator(a) == "cpu"),
        ({"per_gpu_train_batch_size": 4}, lambda a: a.per_device_train_batch_size == 4),
        ({"per_gpu_eval_batch_size": 3}, lambda a: a.per_device_eval_batch_size == 3),
        pytest.param(
            {"group_by_length": True},
            lambda a: a.train_sampling_strategy == "group_by_length",
            marks=v4_alias("group_by_length"),
        ),
        pytest.param(
            {"group_by_length": False},
            lambda a: a.train_sampling_strategy == "random",
            marks=v4_alias("group_by_length"),
        ),
        ({"include_inputs_for_metrics": True}, lambda a: a.include_for_metrics == ["inputs"]),
        pytest.param(
            {"warmup_ratio": 0.1},
            lambda a: a.warmup_steps == 0 and a.get_warmup_steps(95) == 10,
            marks=v4_alias("warmup_ratio"),
        ),
    ],
)
def test_v4_name_warns_and_maps(out, kwargs, check):
    (name,) = kwargs
    with pytest.warns(FutureWarning, match=name):
        args = TrainingArguments(output_dir=out, **kwargs)
    assert check(args)
    assert name in args.to_dict()  # set legacy values are kept (and serialised)


def test_v4_warning_names_the_new_argument(out):
    with pytest.warns(FutureWarning, match="evaluation_strategy.*eval_strategy"):
        TrainingArguments(output_dir=out, evaluation_strategy="steps")
    with pytest.warns(FutureWarning, match="no_cuda.*use_cpu"):
        TrainingArguments(output_dir=out, no_cuda=True)
    with pytest.warns(FutureWarning, match="per_gpu_train_batch_size.*per_device_train_batch_size"):
        TrainingArguments(output_dir=out, per_gpu_train_batch_size=2)


@v4_alias("warmup_ratio")
def test_warmup_ratio_keeps_v4_meaning(out):
    with pytest.warns(FutureWarning):
        full = TrainingArguments(output_dir=out, warmup_ratio=1.0)
    assert full.get_warmup_steps(100) == 100
    assert make(out, warmup_steps=1.0).get_warmup_steps(100) == 1  # v5: 1.0 is one step, not a ratio
    with pytest.warns(FutureWarning):
        tenth = TrainingArguments(output_dir=out, warmup_ratio=0.1)
    assert tenth.get_warmup_steps(95) == math.ceil(9.5) == 10
    with pytest.warns(FutureWarning):
        assert TrainingArguments(output_dir=out, warmup_ratio=0.0).get_warmup_steps(100) == 0


def test_include_inputs_for_metrics_extends_existing_list(out):
    with pytest.warns(FutureWarning):
        args = TrainingArguments(output_dir=out, include_inputs_for_metrics=True, include_for_metrics=["loss"])
    assert args.include_for_metrics == ["loss", "inputs"]


@needs_transformers("train_sampling_strategy")
def test_agreeing_pairs_are_not_conflicts(out):
    with pytest.warns(FutureWarning):
        args = TrainingArguments(
            output_dir=out,
            evaluation_strategy="epoch",
            eval_strategy="epoch",
            no_cuda=True,
            use_cpu=True,
            per_gpu_train_batch_size=4,
            per_device_train_batch_size=4,
            group_by_length=True,
            train_sampling_strategy="group_by_length",
        )
    assert args.eval_strategy == IntervalStrategy.EPOCH and args.use_cpu
    # A dict written by to_dict() (v4 names included) builds the same arguments again.
    with pytest.warns(FutureWarning):
        again = TrainingArguments(**{**args.to_dict(), "output_dir": out})
    assert again.to_dict() == args.to_dict()


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"evaluation_strategy": "epoch", "eval_strategy": "steps"}, ("evaluation_strategy", "eval_strategy")),
        ({"no_cuda": False, "use_cpu": True}, ("no_cuda", "use_cpu")),
        (
            {"per_gpu_train_batch_size": 4, "per_device_train_batch_size": 16},
            ("per_gpu_train_batch_size", "per_device_train_batch_size"),
        ),
        (
            {"per_gpu_eval_batch_size": 4, "per_device_eval_batch_size": 16},
            ("per_gpu_eval_batch_size", "per_device_eval_batch_size"),
        ),
        pytest.param(
            {"group_by_length": True, "train_sampling_strategy": "sequential"},
            ("group_by_length", "train_sampling_strategy"),
            marks=needs_transformers("train_sampling_strategy"),
        ),
        ({"precision": "32-true", "fp16": True}, ("fp16", "precision")),
        ({"use_cpu": True, "accelerator": "cuda"}, ("use_cpu", "accelerator")),
    ],
)
def test_conflicts_raise(out, kwargs, names):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(ValueError) as err:
            TrainingArguments(output_dir=out, **kwargs)
    for name in names:
        assert f"`{name}`" in str(err.value)


# --- validation ---


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
        ({"per_device_eval_batch_size": -1}, "per_device_eval_batch_size"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"num_train_epochs": -1}, "num_train_epochs"),
        ({"max_grad_norm": -1.0}, "max_grad_norm"),
        ({"optim": "not_an_optimizer"}, "optim"),
        ({"lr_scheduler_type": "not_a_scheduler"}, "lr_scheduler_type"),
        ({"eval_strategy": "sometimes"}, "eval_strategy"),
        ({"save_strategy": "sometimes"}, "save_strategy"),
        ({"logging_steps": -5}, "logging_steps"),
        ({"logging_steps": 0}, "logging_steps"),  # HF's own error
        ({"eval_strategy": "steps", "eval_steps": -1}, "eval_steps"),
        ({"save_steps": 0}, "save_steps"),
        ({"save_total_limit": -1}, "save_total_limit"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"adam_beta1": 1.5}, "adam_beta1"),
        ({"adam_epsilon": -1.0}, "adam_epsilon"),
        ({"label_smoothing_factor": 1.5}, "label_smoothing_factor"),
        ({"dataloader_num_workers": -1}, "dataloader_num_workers"),
        ({"eval_accumulation_steps": 0}, "eval_accumulation_steps"),
        ({"train_sampling_strategy": "shuffled"}, "train_sampling_strategy"),
        ({"warmup_steps": -1}, "warmup_steps"),  # HF's own error
        ({"accelerator": "abacus"}, "accelerator"),
        ({"devices": "two"}, "devices"),
        ({"devices": 0}, "devices"),
        ({"num_nodes": 0}, "num_nodes"),
        ({"strategy": "not_a_strategy"}, "strategy"),
        ({"strategy": object()}, "strategy"),
        ({"precision": "8-mixed"}, "precision"),
        ({"fp16": True, "bf16": True, "use_cpu": True}, "fp16"),  # HF's own error
    ],
)
def test_bad_values_raise(out, kwargs, name):
    with pytest.raises(ValueError, match=name):
        TrainingArguments(output_dir=out, **kwargs)


@v4_alias("warmup_ratio")
@pytest.mark.parametrize("value", [-0.5, 1.5])
def test_warmup_ratio_range(out, value):
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="warmup_ratio"):
        TrainingArguments(output_dir=out, warmup_ratio=value)


def test_hf_fallbacks_are_kept(out):
    # eval_steps unset or 0 with eval_strategy="steps" falls back to logging_steps, as in transformers.
    assert make(out, eval_strategy="steps", logging_steps=7).eval_steps == 7
    assert make(out, eval_strategy="steps", eval_steps=0, logging_steps=7).eval_steps == 7
    # save_total_limit=0, max_grad_norm=0 and steps outside their strategy are accepted.
    make(out, save_total_limit=0, max_grad_norm=0.0, save_strategy="no", save_steps=0)


def test_fp16_on_cpu_is_not_an_argument_error(out):
    assert make(out, fp16=True, use_cpu=True).fp16 is True
    assert make(out, fp16=True).fp16 is True


# --- conversion from transformers ---


def test_to_hf_lightning_args_round_trip(out):
    hf = transformers.TrainingArguments(
        output_dir=out,
        eval_strategy="steps",
        eval_steps=5,
        learning_rate=1e-4,
        per_device_train_batch_size=4,
        warmup_steps=0.1,
        report_to="none",
        include_for_metrics=["loss"],
        lr_scheduler_type="cosine",
        optim="adamw_torch",
        seed=7,
        use_cpu=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = to_hf_lightning_args(hf)
    assert type(ours) is TrainingArguments
    diff = {n: (getattr(ours, n), getattr(hf, n)) for n in HF_FIELDS if getattr(ours, n) != getattr(hf, n)}
    assert diff == {}
    assert ours.accelerator_config is not hf.accelerator_config
    assert ours.include_for_metrics is not hf.include_for_metrics
    assert to_hf_lightning_args(ours) is ours
    with pytest.raises(TypeError):
        to_hf_lightning_args({"output_dir": out})


def test_to_hf_lightning_args_defaults(out):
    hf = transformers.TrainingArguments(output_dir=out)
    ours = to_hf_lightning_args(hf)
    assert ours.to_dict() == make(out).to_dict()


# --- Lightning helpers ---


def test_lightning_accelerator(out):
    assert lightning_accelerator(make(out)) == "auto"
    assert lightning_accelerator(make(out, accelerator="CPU")) == "cpu"
    assert lightning_accelerator(make(out, use_cpu=True)) == "cpu"
    assert lightning_accelerator(transformers.TrainingArguments(output_dir=out, use_cpu=True)) == "cpu"
    assert lightning_accelerator(transformers.TrainingArguments(output_dir=out)) == "auto"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "32-true"),
        ({"bf16": True, "use_cpu": True}, "bf16-mixed"),
        ({"precision": "bf16-true", "use_cpu": True}, "bf16-true"),
        ({"precision": "bf16"}, "bf16-mixed"),  # Lightning alias, normalised
        ({"precision": "64"}, "64-true"),
        ({"precision": "16-true", "fp16": True, "use_cpu": True}, "16-true"),
    ],
)
def test_lightning_precision(out, kwargs, expected):
    args = make(out, **kwargs)
    assert lightning_precision(args) == expected


def test_lightning_precision_on_plain_transformers_args(out):
    assert lightning_precision(transformers.TrainingArguments(output_dir=out)) == "32-true"


def test_fp16_on_cpu_trains_in_fp32_with_a_warning(out):
    """transformers (accelerate) enables fp16 only off the CPU; tests/test_trainer_parity.py compares the runs."""
    for args in (make(out, fp16=True, use_cpu=True), transformers.TrainingArguments(out, fp16=True, use_cpu=True)):
        with pytest.warns(UserWarning, match="fp16.*CPU.*fp32"):
            assert lightning_precision(args) == "32-true"


def test_explicit_16_mixed_precision_on_cpu_is_refused(out):
    """The Lightning field asks for fp16 itself, which Lightning would silently turn into bf16 on CPU."""
    with pytest.raises(ValueError, match="precision.*16-mixed"):
        lightning_precision(make(out, precision="16-mixed", accelerator="cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_fp16_without_cuda_trains_in_fp32(out, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="fp16"):
        assert lightning_precision(make(out, fp16=True)) == "32-true"


@v4_alias("warmup_ratio")
def test_warmup_steps_override_warmup_ratio_with_a_warning(out):
    with pytest.warns(UserWarning, match="`warmup_steps` overrides `warmup_ratio`"):
        args = TrainingArguments(output_dir=out, warmup_ratio=0.5, warmup_steps=5)
    assert args.get_warmup_steps(100) == 5
    with pytest.warns(UserWarning, match="overrides"):
        assert TrainingArguments(output_dir=out, warmup_ratio=0.5, warmup_steps=0.1).get_warmup_steps(100) == 10


def test_fp16_with_cuda_is_accepted(out, monkeypatch):
    args = make(out, fp16=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert lightning_precision(args) == "16-mixed"


def test_command_line_flags_of_the_lightning_features() -> None:
    """HfArgumentParser sees every hf_lightning field; dict fields take JSON."""
    parser = HfArgumentParser(TrainingArguments)
    (args,) = parser.parse_args_into_dataclasses(
        [
            "--output_dir",
            "out",
            "--auto_lr_find",
            "--lr_find_kwargs",
            '{"num_training": 20, "max_lr": 0.01}',
            "--auto_scale_batch_size",
            "binsearch",
            "--log_throughput",
            "--checkpoint_on_preemption",
            "--lightning_trainer_kwargs",
            '{"benchmark": true}',
        ]
    )
    assert args.lightning_trainer_kwargs == {"benchmark": True}  # JSON, as its help says (it was parsed as a dict)
    assert args.auto_lr_find and args.lr_find_kwargs == {"num_training": 20, "max_lr": 0.01}
    assert args.auto_scale_batch_size == "binsearch" and args.log_throughput and args.checkpoint_on_preemption
