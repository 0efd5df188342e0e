"""HF distributed arguments -> Lightning strategies, and DDP training parity with one process.

The DDP run uses 2 gloo ranks on loopback, forked from the test process (a fresh interpreter would spend ~10 s
importing Lightning) with the launcher's environment set, so Lightning does not relaunch the test script.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import multiprocessing
import os
import socket
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import ToyClassification, needs_transformers, tiny_bert
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, SingleDeviceStrategy
from torch import nn
from transformers.models.bert.modeling_bert import BertEmbeddings, BertLayer

from hf_lightning import Trainer, TrainingArguments, compat
from hf_lightning.strategies import (
    HFDeepSpeedStrategy,
    build_strategy,
    ddp_strategy_kwargs,
    deepspeed_batch_config,
    deepspeed_config,
    deepspeed_strategy_config,
    fsdp_strategy_kwargs,
    shard_hf_model,
)
from hf_lightning.translation import lightning_trainer_kwargs


def make_args(out: Any, **kw: Any) -> TrainingArguments:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TrainingArguments(str(out), report_to="none", use_cpu=True, disable_tqdm=True, **kw)


# ---- DDP arguments -------------------------------------------------------------------------------------


@needs_transformers("ddp_static_graph")
def test_ddp_arguments_become_ddp_strategy_kwargs(tmp_path: Path) -> None:
    args = make_args(
        tmp_path,
        strategy="ddp",
        ddp_backend="gloo",
        ddp_timeout=60,
        ddp_find_unused_parameters=False,
        ddp_bucket_cap_mb=5,
        ddp_broadcast_buffers=False,
        ddp_static_graph=True,
    )
    strategy = build_strategy(args, tiny_bert())
    assert isinstance(strategy, DDPStrategy)
    assert strategy.process_group_backend == "gloo" and strategy._timeout == timedelta(seconds=60)
    assert strategy._ddp_kwargs == {
        "find_unused_parameters": False,
        "bucket_cap_mb": 5,
        "broadcast_buffers": False,
        "static_graph": True,
    }
    assert strategy._start_method == "popen"


def test_ddp_find_unused_parameters_default_is_hfs(tmp_path: Path) -> None:
    """HF: True for a PreTrainedModel unless activation checkpointing, True for other modules."""
    assert ddp_strategy_kwargs(make_args(tmp_path), tiny_bert())["find_unused_parameters"] is True
    name = "activation_checkpointing" if compat.available("activation_checkpointing") else "gradient_checkpointing"
    checkpointed = make_args(tmp_path, **{name: True})
    assert ddp_strategy_kwargs(checkpointed, tiny_bert())["find_unused_parameters"] is False
    assert ddp_strategy_kwargs(make_args(tmp_path), nn.Linear(2, 2))["find_unused_parameters"] is True


def test_registered_ddp_names_keep_their_own_choices(tmp_path: Path) -> None:
    strategy = build_strategy(make_args(tmp_path, strategy="ddp_spawn_find_unused_parameters_false"), tiny_bert())
    assert strategy._start_method == "spawn" and strategy._ddp_kwargs["find_unused_parameters"] is False


@needs_transformers("ddp_static_graph")
def test_auto_stays_auto_on_one_process_and_objects_pass_through(tmp_path: Path) -> None:
    assert build_strategy(make_args(tmp_path), tiny_bert()) == "auto"
    assert isinstance(build_strategy(make_args(tmp_path, devices=2), tiny_bert()), DDPStrategy)
    given = DDPStrategy(find_unused_parameters=False)
    assert build_strategy(make_args(tmp_path, strategy=given, ddp_static_graph=True)) is given


def test_ddp_in_a_notebook_forks_the_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.fabric.utilities import imports

    monkeypatch.setattr(imports, "_IS_INTERACTIVE", True)
    for name in ("ddp", "ddp_spawn", "auto"):
        strategy = build_strategy(make_args(tmp_path, strategy=name, devices=2), tiny_bert())
        assert strategy._start_method == "fork", name


def test_passthrough_fields_reach_the_lightning_trainer(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger

    logger, monitor = CSVLogger(str(tmp_path)), LearningRateMonitor()
    args = make_args(
        tmp_path,
        profiler="simple",
        lightning_trainer_kwargs={"benchmark": True, "logger": logger, "callbacks": [monitor]},
    )
    kwargs = lightning_trainer_kwargs(args, tiny_bert(), callbacks=["own"], loggers=["report_to"])
    assert kwargs["profiler"] == "simple" and kwargs["benchmark"] is True
    assert kwargs["callbacks"] == ["own", monitor] and kwargs["logger"] == ["report_to", logger]
    cli = make_args(tmp_path, lightning_trainer_kwargs='{"benchmark": true}')
    assert cli.lightning_trainer_kwargs == {"benchmark": True}
    with pytest.raises(ValueError, match="lightning_trainer_kwargs"):
        make_args(tmp_path, lightning_trainer_kwargs="{not json")


def test_contradicting_strategy_arguments_fail_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`fsdp` was given but `strategy`='ddp'"):
        build_strategy(make_args(tmp_path, strategy="ddp", fsdp=True))
    with pytest.raises(ValueError, match="`fsdp` and `deepspeed`"):
        build_strategy(make_args(tmp_path, fsdp=True, deepspeed={"zero_optimization": {"stage": 2}}))


# ---- FSDP ----------------------------------------------------------------------------------------------


def test_fsdp_config_becomes_fsdp_strategy_kwargs(tmp_path: Path) -> None:
    config = {
        "transformer_layer_cls_to_wrap": "BertLayer",
        "cpu_offload": True,
        "activation_checkpointing": True,
        "state_dict_type": "SHARDED_STATE_DICT",
        "reshard_after_forward": False,
        "backward_prefetch": "backward_pre",
        "forward_prefetch": "true",
    }
    kwargs = fsdp_strategy_kwargs(make_args(tmp_path, fsdp=True, fsdp_config=config), tiny_bert())
    assert kwargs["auto_wrap_policy"] == {BertLayer} and kwargs["activation_checkpointing_policy"] == {BertLayer}
    assert kwargs["sharding_strategy"] == "SHARD_GRAD_OP" and kwargs["cpu_offload"] is True
    assert kwargs["state_dict_type"] == "sharded" and kwargs["forward_prefetch"] is True
    assert kwargs["backward_prefetch"].name == "BACKWARD_PRE" and kwargs["use_orig_params"] is True
    legacy = make_args(tmp_path, fsdp="full_shard offload", fsdp_config={"version": 1})
    model = tiny_bert()
    kwargs = fsdp_strategy_kwargs(legacy, model)
    assert kwargs["sharding_strategy"] == "FULL_SHARD" and kwargs["cpu_offload"] is True
    # the model's `_no_split_modules` (none for BERT in transformers 5.0: then no wrap policy, as in transformers)
    no_split = {type(m) for m in model.modules() if type(m).__name__ in (model._no_split_modules or [])}
    assert no_split in ({BertEmbeddings, BertLayer}, set())
    assert kwargs.get("auto_wrap_policy") == (no_split or None)
    assert isinstance(build_strategy(make_args(tmp_path, fsdp=True), tiny_bert()), FSDPStrategy)


def test_fsdp_bad_layer_name_is_named(tmp_path: Path) -> None:
    args = make_args(tmp_path, fsdp=True, fsdp_config={"transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]})
    with pytest.raises(ValueError, match="transformer_layer_cls_to_wrap.*LlamaDecoderLayer"):
        build_strategy(args, tiny_bert())


def test_fsdp_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    """The HF optimizer is built over the model's own parameters, which FSDP only keeps with `use_orig_params`;
    other strategies leave the model unwrapped. (FSDP training itself: tests/test_sharded_training.py.)"""
    args = make_args(tmp_path, fsdp=True, fsdp_config={"use_orig_params": False})
    with pytest.raises(ValueError, match=r"`fsdp_config\['use_orig_params'\]`=False is not supported"):
        build_strategy(args, tiny_bert())
    model = tiny_bert()
    assert shard_hf_model(DDPStrategy(), model) is model and shard_hf_model("auto", model) is model


# ---- DeepSpeed -----------------------------------------------------------------------------------------

DS_AUTO = {
    "train_micro_batch_size_per_gpu": "auto",
    "train_batch_size": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "bf16": {"enabled": "auto"},
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
    "scheduler": {
        "type": "WarmupDecayLR",
        "params": {
            "warmup_min_lr": "auto",
            "warmup_max_lr": "auto",
            "total_num_steps": "auto",
            "warmup_num_steps": "auto",
        },
    },
    "zero_optimization": {"stage": 2, "reduce_bucket_size": "auto"},
}
DS_KW = dict(per_device_train_batch_size=4, learning_rate=3e-4, max_grad_norm=0.5, weight_decay=0.01, bf16=True)
needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="needs the deepspeed package (pip install deepspeed)"
)


def test_deepspeed_auto_values_resolve_like_hf(tmp_path: Path) -> None:
    """HF's `trainer_config_process` / `trainer_config_finalize` rules (transformers/integrations/deepspeed.py)."""
    args = make_args(tmp_path, deepspeed=DS_AUTO, gradient_accumulation_steps=2, warmup_steps=10, **DS_KW)
    ours = deepspeed_config(args, tiny_bert(), num_training_steps=100)
    assert ours["train_micro_batch_size_per_gpu"] == 4 and ours["gradient_accumulation_steps"] == 2
    assert ours["train_batch_size"] == 4 * 2 * 1  # world size x micro batch x accumulation
    assert ours["gradient_clipping"] == 0.5 and ours["bf16"] == {"enabled": True}
    assert ours["optimizer"]["params"] == {"lr": 3e-4, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}
    assert ours["scheduler"]["params"] == {
        "warmup_min_lr": 0,
        "warmup_max_lr": 3e-4,
        "total_num_steps": 100,
        "warmup_num_steps": 10,
    }
    assert ours["zero_optimization"]["reduce_bucket_size"] == 16 * 16  # hidden_size ** 2
    assert DS_AUTO["train_batch_size"] == "auto", "the user's config is not modified"
    without_model = deepspeed_config(args)
    assert without_model["scheduler"]["params"]["total_num_steps"] == "auto"


def test_deepspeed_strategy_config_is_handed_over_as_hf_resolves_it(tmp_path: Path) -> None:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(DS_AUTO))
    config = deepspeed_strategy_config(make_args(tmp_path, deepspeed=str(path), **DS_KW), tiny_bert())
    assert "optimizer" not in config and "scheduler" not in config  # HF's optim / lr_scheduler_type are used
    assert config["zero_allow_untested_optimizer"] is True  # as HF sets it for its own optimizer
    assert config["gradient_clipping"] == 0.5 and config["bf16"] == {"enabled": True}
    assert config["train_micro_batch_size_per_gpu"] == 4 and config["zero_optimization"]["reduce_bucket_size"] == 256
    # set by the strategy once the processes exist (`deepspeed_batch_config`)
    assert "gradient_accumulation_steps" not in config and "train_batch_size" not in config


def test_deepspeed_accumulation_is_handed_to_the_engine_as_hf_computes_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Accumulation > 1: the engine gets HF's `gradient_accumulation_steps`, the micro-batch, `gradient_clipping` =
    `max_grad_norm` and `train_batch_size` = micro x accumulation x world size: HF's own resolver's numbers."""
    args = make_args(tmp_path, deepspeed=DS_AUTO, gradient_accumulation_steps=3, **DS_KW)
    hf = deepspeed_config(args)  # HF's trainer_config_process, on one process
    config = deepspeed_strategy_config(args, tiny_bert())
    batch = deepspeed_batch_config(config, gradient_accumulation_steps=3, micro_batch_size=4, world_size=1)
    assert (
        batch
        == {key: hf[key] for key in batch}
        == {
            "gradient_accumulation_steps": 3,
            "train_micro_batch_size_per_gpu": 4,
            "train_batch_size": 12,
        }
    )
    assert config["gradient_clipping"] == hf["gradient_clipping"] == 0.5
    on_four = deepspeed_batch_config(config, gradient_accumulation_steps=3, micro_batch_size=4, world_size=4)
    assert on_four["train_batch_size"] == 4 * 3 * 4 and on_four["gradient_accumulation_steps"] == 3
    fixed = {"train_batch_size": 12, "train_micro_batch_size_per_gpu": 4}  # a number kept as given
    assert deepspeed_batch_config(fixed, gradient_accumulation_steps=1, micro_batch_size=4, world_size=3) == {
        "gradient_accumulation_steps": 1,
        "train_micro_batch_size_per_gpu": 4,
        "train_batch_size": 12,
    }
    with pytest.raises(ValueError, match=r"`train_batch_size`=12 is not .* x world size \(2\) = 8"):
        deepspeed_batch_config(fixed, gradient_accumulation_steps=1, micro_batch_size=4, world_size=2)
    no_clip = {k: v for k, v in DS_AUTO.items() if k != "gradient_clipping"}
    with caplog.at_level(logging.WARNING, logger="hf_lightning.deepspeed_integration"):
        assert deepspeed_strategy_config(make_args(tmp_path, deepspeed=no_clip, **DS_KW))["gradient_clipping"] == 0
    assert "DeepSpeed does not clip, as under transformers.Trainer" in caplog.text


@needs_deepspeed
def test_deepspeed_strategy_formats_its_config_with_hfs_accumulation(tmp_path: Path) -> None:
    """The real strategy: Lightning would set `accumulate_grad_batches` (1 under manual optimisation)."""
    from lightning.fabric.plugins.environments import LightningEnvironment

    args = make_args(tmp_path, deepspeed=DS_AUTO, gradient_accumulation_steps=3, **DS_KW)
    registry = make_args(tmp_path, strategy="deepspeed_stage_2", gradient_accumulation_steps=2, **DS_KW)
    for given, accumulation in ((args, 3), (registry, 2)):
        strategy = build_strategy(given, tiny_bert())
        assert isinstance(strategy, HFDeepSpeedStrategy)
        strategy.cluster_environment = LightningEnvironment()
        strategy.cluster_environment.set_world_size(2)
        strategy._format_batch_size_and_grad_accum_config()
        config = strategy.config
        assert config["gradient_accumulation_steps"] == accumulation and config["train_micro_batch_size_per_gpu"] == 4
        assert config["train_batch_size"] == 4 * accumulation * 2 and config["gradient_clipping"] == 0.5
        assert config["zero_optimization"]["stage"] == 2


def test_deepspeed_errors_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="mismatch"):
        make_args(tmp_path, deepspeed={"train_micro_batch_size_per_gpu": 16}, per_device_train_batch_size=4)
    with pytest.raises(ValueError, match="ds gradient_accumulation_steps=4 vs hf gradient_accumulation_steps=2"):
        make_args(tmp_path, deepspeed={"gradient_accumulation_steps": 4}, gradient_accumulation_steps=2)
    import lightning.pytorch.strategies.deepspeed as lightning_deepspeed

    monkeypatch.setattr(lightning_deepspeed, "_DEEPSPEED_AVAILABLE", False)
    with pytest.raises(ImportError, match="needs the `deepspeed` package"):
        build_strategy(make_args(tmp_path, deepspeed=DS_AUTO, **DS_KW))


class FakeEngine(nn.Module):
    """The `DeepSpeedEngine` methods Lightning's DeepSpeed precision plugin and the module call, with DeepSpeed's
    semantics (`backward` divides by the engine's accumulation unless `scale_wrt_gas=False`; `step` clips, steps and
    zeroes at a boundary), recording each call with the boundary state it saw."""

    def __init__(self, module: nn.Module, calls: list, accumulation: int, clipping: float) -> None:
        super().__init__()
        self.module, self.calls, self.accumulation, self.clipping = module, calls, accumulation, clipping
        self.boundary: bool | None = None
        self.norm: torch.Tensor | None = None
        self.optimizer: Any = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def set_gradient_accumulation_boundary(self, is_boundary: bool) -> None:
        self.boundary = is_boundary

    def is_gradient_accumulation_boundary(self) -> bool:
        return bool(self.boundary)

    def backward(self, loss: torch.Tensor, scale_wrt_gas: bool = True) -> None:
        self.calls.append(("backward", self.boundary, scale_wrt_gas))
        (loss / self.accumulation if scale_wrt_gas else loss).backward()

    def step(self) -> None:
        self.calls.append(("step", self.boundary))
        if self.is_gradient_accumulation_boundary():
            params = [p for p in self.module.parameters() if p.grad is not None]
            self.norm = torch.nn.utils.clip_grad_norm_(params, self.clipping)
            self.optimizer.step()
            self.optimizer.zero_grad()

    def get_global_grad_norm(self) -> torch.Tensor | None:
        self.calls.append(("grad_norm",))
        return self.norm


class FakeDeepSpeedStrategy(SingleDeviceStrategy):
    """A CPU strategy whose model is a `FakeEngine`, with Lightning's real `DeepSpeedPrecision` (its `backward` and
    `optimizer_step` call the engine as with DeepSpeed)."""

    def __init__(self, calls: list, accumulation: int, clipping: float) -> None:
        from lightning.pytorch.plugins.precision import DeepSpeedPrecision

        super().__init__(device=torch.device("cpu"), precision_plugin=DeepSpeedPrecision("32-true"))
        self.calls, self.accumulation, self.clipping = calls, accumulation, clipping

    def _setup_model(self, model: nn.Module) -> nn.Module:
        return FakeEngine(model, self.calls, self.accumulation, self.clipping)

    def setup_optimizers(self, trainer: Any) -> None:
        super().setup_optimizers(trainer)
        self.model.optimizer = self.optimizers[0]


def test_deepspeed_step_marks_hfs_windows_and_keeps_hfs_loss_scaling(tmp_path: Path) -> None:
    """Accumulation 3 over 7 micro-batches (windows of 3, 3 and 1): each backward sees the boundary of HF's window
    and `scale_wrt_gas=False`, the engine steps once per window and its norm is logged: the same losses, `grad_norm`
    and weights as the run without the engine."""
    calls: list = []

    def run(out: str, **kw: Any) -> Trainer:
        args = make_args(
            out,
            gradient_accumulation_steps=3,
            per_device_train_batch_size=4,
            max_grad_norm=0.5,
            num_train_epochs=1,
            logging_steps=1,
            save_strategy="no",
            seed=42,
            **kw,
        )
        trainer = Trainer(model=tiny_bert(dropout=0.0), args=args, train_dataset=ToyClassification(28, seed=1))
        trainer.train()
        return trainer

    engine_run = run(str(tmp_path / "engine"), strategy=FakeDeepSpeedStrategy(calls, accumulation=3, clipping=0.5))
    window = [("backward", False, False), ("backward", False, False), ("backward", True, False)]
    boundary = [("step", True), ("grad_norm",)]
    assert calls == window + boundary + window + boundary + [("backward", True, False)] + boundary
    plain = run(str(tmp_path / "plain"))
    logs = [(e["loss"], e["grad_norm"]) for e in engine_run.state.log_history if "loss" in e]
    assert logs == [(e["loss"], e["grad_norm"]) for e in plain.state.log_history if "loss" in e] and len(logs) == 3
    reference = plain.model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in engine_run.model.state_dict().items())


# ---- DDP training parity -------------------------------------------------------------------------------


def sum_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """A loss normalised by HF's `num_items_in_batch` (summed over the ranks), so 2 ranks x 2 samples and 1 rank x
    4 samples compute the same gradient (a model's own mean loss would be multiplied by the world size, as in HF)."""
    return nn.functional.cross_entropy(outputs.logits, labels, reduction="sum") / num_items_in_batch


def parity_job(out: str, world: int) -> Trainer:
    args = make_args(
        out,
        per_device_train_batch_size=4 // world,
        gradient_accumulation_steps=2,
        learning_rate=1e-3,
        num_train_epochs=2,
        logging_steps=1,
        save_strategy="steps",
        save_steps=2,
        seed=42,
        strategy="ddp" if world > 1 else "auto",
        devices=world,
        ddp_backend="gloo",
    )
    trainer = Trainer(
        model=tiny_bert(dropout=0.0), args=args, train_dataset=ToyClassification(24, seed=1), compute_loss_func=sum_loss
    )
    trainer.train()
    return trainer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(worker: Any, port: int, out: str, env: list[dict[str, str]], method: str = "fork") -> list[int | None]:
    """Start one process per environment (what torchrun or a cluster sets) and wait for them. Forking is fast but
    only safe before the test process has trained (its thread pools would deadlock the children); "spawn" is not."""
    ctx = multiprocessing.get_context(method)
    procs = [ctx.Process(target=worker, args=(port, out, e)) for e in env]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        if p.exitcode is None:
            p.kill()
    return [p.exitcode for p in procs]


def _ddp_worker(port: int, out: str, env: dict[str, str]) -> None:
    from accelerate.state import AcceleratorState, PartialState

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **env)
    AcceleratorState._reset_state(True)  # the forked copy of the parent's single-process state
    PartialState._reset_state()
    trainer = parity_job(out, 2)
    rank = trainer.args.process_index
    torch.save(trainer.model.state_dict(), os.path.join(out, f"weights{rank}.pt"))
    info = {"log_history": trainer.state.log_history, "world": trainer.args.world_size}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(info, f)


def ddp_env(rank: int) -> dict[str, str]:
    return {"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "NODE_RANK": "0"}


def test_ddp_two_processes_match_one_process(tmp_path: Path) -> None:
    out = str(tmp_path / "ddp")
    os.makedirs(out)
    assert launch(_ddp_worker, free_port(), out, [ddp_env(0), ddp_env(1)]) == [0, 0]
    single = parity_job(str(tmp_path / "single"), 1)
    reference = single.model.state_dict()
    for rank in range(2):
        weights = torch.load(os.path.join(out, f"weights{rank}.pt"))
        diff = max((weights[k] - reference[k]).abs().max().item() for k in reference)
        assert diff < 1e-6, f"rank {rank}: max weight difference {diff}"
        info = json.loads(Path(out, f"rank{rank}.json").read_text())
        assert info["world"] == 2
        steps = [e["step"] for e in info["log_history"]]
        assert steps == [e["step"] for e in single.state.log_history]
        for ours, ref in zip(info["log_history"], single.state.log_history):
            assert ours.keys() == ref.keys()
            if "loss" in ref:
                assert ours["loss"] == pytest.approx(ref["loss"], rel=1e-5)
                assert ours["learning_rate"] == ref["learning_rate"] and ours["epoch"] == ref["epoch"]
    # one folder per save, written once (rank 0), with every rank's RNG state
    expected = sorted(os.listdir(tmp_path / "single"))
    assert (
        sorted(n for n in os.listdir(out) if n.startswith("checkpoint"))
        == expected
        == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    )
    assert not [n for n in os.listdir(out) if n.startswith("tmp-")]
    files = sorted(os.listdir(Path(out, "checkpoint-6")))
    assert {"model.safetensors", "optimizer.pt", "trainer_state.json", "rng_state_0.pth", "rng_state_1.pth"} <= set(
        files
    )


# ---- the example ---------------------------------------------------------------------------------------


def test_distributed_training_example_runs_ddp_on_two_cpu_processes(tmp_path: Path) -> None:
    """Lightning's own launcher starts the second process (the script re-executed with its arguments)."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "examples" / "distributed_training.py"
    command = [sys.executable, str(script), "--strategy", "ddp", "--devices", "2", "--use_cpu", "--ddp_backend", "gloo"]
    command += ["--output_dir", str(tmp_path), "--num_samples", "64"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "strategy=DDPStrategy world_size=2 steps=4" in result.stdout
    assert (tmp_path / "model.safetensors").is_file()


def test_example_configs_translate(tmp_path: Path) -> None:
    configs = Path(__file__).resolve().parents[1] / "examples" / "configs"
    ds = deepspeed_strategy_config(make_args(tmp_path, deepspeed=str(configs / "ds_zero2.json"), bf16=True))
    assert ds["zero_optimization"]["stage"] == 2 and ds["bf16"] == {"enabled": True} and ds["gradient_clipping"] == 1.0
    kwargs = fsdp_strategy_kwargs(make_args(tmp_path, fsdp=True, fsdp_config=str(configs / "fsdp.json")), tiny_bert())
    assert kwargs["auto_wrap_policy"] == {BertLayer} and kwargs["sharding_strategy"] == "FULL_SHARD"
