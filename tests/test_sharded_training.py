"""FSDP and DeepSpeed training end to end: the same run with and without the sharding strategy must log the same
losses and `grad_norm`, end at the same weights, save `model.safetensors` that `from_pretrained` loads, and resume.

Each test runs on the CPU and, when a GPU is present, on CUDA (one device). Lightning refuses both strategies on a
CPU accelerator although torch's FSDP and DeepSpeed's CPU accelerator run there (with gloo), so the CPU runs use
`CPUFSDPStrategy` / `CPUDeepSpeedStrategy`: the same strategies with only those refusals lifted (see their
docstrings). Everything hf_lightning does for the strategies (`shard_hf_model`, FSDP's `clip_grad_norm_`, the full
state-dict and optimizer gathers, `HFDeepSpeedStrategy`'s accumulation hand-over) runs unchanged. One-process
sharded runs happen in a fresh interpreter (`isolated`); the two-process FSDP run (real FULL_SHARD sharding over
gloo) is forked like the DDP parity test in test_strategies.py.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import multiprocessing
import os
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from helpers import ToyClassification, free_port, tiny_bert
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from torch import nn
from transformers import BertForSequenceClassification
from transformers.trainer_utils import SaveStrategy

import hf_lightning.strategies as hf_strategies
from hf_lightning import Trainer, TrainingArguments

_HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
]
needs_deepspeed = pytest.mark.skipif(not _HAS_DEEPSPEED, reason="needs the deepspeed package (pip install deepspeed)")


class CPUFSDPStrategy(FSDPStrategy):
    """Lightning's `FSDPStrategy`, unchanged: Lightning's accelerator connector refuses exactly that class on a CPU
    accelerator ("The strategy `fsdp` requires a GPU accelerator"), a subclass passes. torch's FSDP itself runs on
    the CPU once told the device, which `shard_hf_model` does."""


class CPUDeepSpeedStrategy(hf_strategies.HFDeepSpeedStrategy):
    """`HFDeepSpeedStrategy` on DeepSpeed's CPU accelerator: Lightning refuses a non-CUDA accelerator, checks CUDA
    device indices and hands DeepSpeed `device_rank=<CUDA index>`; only those three places are changed."""

    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)

    def setup_distributed(self) -> None:
        from lightning.fabric.utilities.seed import reset_seed

        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, model: nn.Module, optimizer: Any, lr_scheduler: Any = None) -> Any:
        import deepspeed

        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=-1),
            config=self.config,
            model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad],
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            dist_init_required=False,
        )
        return engine, ds_optimizer


@contextlib.contextmanager
def cpu_capable_strategies(deepspeed: bool) -> Iterator[None]:
    """`build_strategy` builds the CPU-capable classes while the block runs. Under DeepSpeed its optional
    shared-memory collectives stay off (gloo does the reductions): they are a C++ extension compiled at first use,
    which would need a compiler and ~15 s."""
    import lightning.pytorch.strategies as lightning_strategies

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(lightning_strategies, "FSDPStrategy", CPUFSDPStrategy))
        stack.enter_context(mock.patch.object(hf_strategies, "HFDeepSpeedStrategy", CPUDeepSpeedStrategy))
        if deepspeed:
            stack.enter_context(mock.patch("deepspeed.comm.torch.build_shm_op", return_value=None))
        yield


def _isolated_child(conn: Any, body: Callable[..., dict], args: tuple) -> None:
    try:
        conn.send(("ok", json.dumps(body(*args))))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def isolated(body: Callable[..., dict], *args: Any) -> dict:
    """`body(*args)`'s JSON result, computed in a fresh interpreter. A sharded run leaves a process group (Lightning
    never destroys it), the launcher variables Lightning exports and DeepSpeed's globals in its process, and a process
    forked after one there hung in native code: the DDP parity test's ranks did, and so did a DeepSpeed run forked
    after the FSDP tests. The test process itself only runs the unsharded references."""
    ctx = multiprocessing.get_context("spawn")
    reader, writer = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_isolated_child, args=(writer, body, args))
    process.start()
    status, payload = reader.recv() if reader.poll(300) else ("error", "no result within 300 s (a hang)")
    process.join(30)
    if process.exitcode is None:
        process.kill()
    if status != "ok":
        raise AssertionError(f"the isolated run failed:\n{payload}")
    return json.loads(payload)


def sum_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """Normalised by HF's `num_items_in_batch` (summed over the ranks): 2 ranks x 2 samples and 1 rank x 4 samples
    compute the same gradient. Evaluation on several ranks passes no count: each batch's mean, as on one rank."""
    count = num_items_in_batch if num_items_in_batch is not None else labels.numel()
    return nn.functional.cross_entropy(outputs.logits, labels, reduction="sum") / count


def job(
    out: str,
    device: str,
    world: int = 1,
    resume: str | None = None,
    samples: int = 24,
    eval_samples: int = 0,
    **kw: Any,
) -> Trainer:
    """2 epochs of `samples` / 4 micro-batches of 4 samples (over the ranks) in windows of 2, clipped at 0.5, a
    checkpoint every 2 steps; with `eval_samples`, an evaluation every 2 steps."""
    params: dict[str, Any] = dict(
        per_device_train_batch_size=4 // world,
        gradient_accumulation_steps=2,
        learning_rate=1e-3,
        num_train_epochs=2,
        max_grad_norm=0.5,
        logging_steps=1,
        save_strategy="steps",
        save_steps=2,
        seed=42,
        optim="adamw_torch",
        report_to="none",
        disable_tqdm=True,
        ddp_backend="gloo" if device == "cpu" else None,
        devices=world,
        use_cpu=device == "cpu",
    )
    if eval_samples:
        params.update(eval_strategy="steps", eval_steps=2)
    params.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = TrainingArguments(out, **params)
    trainer = Trainer(
        model=tiny_bert(dropout=0.0),
        args=args,
        train_dataset=ToyClassification(samples, seed=1),
        eval_dataset=ToyClassification(eval_samples, seed=2) if eval_samples else None,
        compute_loss_func=sum_loss,
    )
    train(trainer, device, resume, deepspeed="deepspeed" in kw)
    return trainer


def train(trainer: Trainer, device: str, resume: str | None = None, deepspeed: bool = False) -> None:
    shims = cpu_capable_strategies(deepspeed) if device == "cpu" else contextlib.nullcontext()
    with warnings.catch_warnings(), shims:
        warnings.simplefilter("ignore")
        trainer.train(resume_from_checkpoint=resume)


def train_again(trainer: Trainer, device: str) -> None:
    """A second `train()` of the same trainer (HF keeps the trained model and the optimizer), saving nothing."""
    trainer.args.save_strategy = SaveStrategy.NO
    train(trainer, device)


def step_logs(trainer: Trainer) -> list[dict]:
    return [e for e in trainer.state.log_history if "loss" in e]


def eval_losses(trainer: Trainer) -> list[tuple[int, float]]:
    return [(e["step"], e["eval_loss"]) for e in trainer.state.log_history if "eval_loss" in e]


def hf_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """What `from_pretrained` loads from `folder`."""
    model = BertForSequenceClassification.from_pretrained(str(folder))
    return {k: v.float().cpu() for k, v in model.state_dict().items()}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float().cpu() - b[k].float().cpu()).abs().max().item() for k in a)


def assert_same_logs(ours: list[dict], ref: list[dict], rel: float) -> None:
    assert [e["step"] for e in ours] == [e["step"] for e in ref]
    for o, r in zip(ours, ref):
        assert math.isfinite(o["grad_norm"]) and o["grad_norm"] == pytest.approx(r["grad_norm"], rel=rel), (o, r)
        assert o["loss"] == pytest.approx(r["loss"], rel=rel) and o["learning_rate"] == r["learning_rate"]


# ---- FSDP ------------------------------------------------------------------------------------------------------


def _fsdp_run(out: Path, device: str) -> dict:
    sharded = job(str(out), device, fsdp=True)
    assert isinstance(sharded.lightning_trainer.strategy, FSDPStrategy)
    in_memory = hf_strategies.full_state_dict(sharded.lightning_trainer.strategy)
    if device == "cpu":  # a model with its own FSDP units but no root is refused, not wrapped a second time
        from torch.distributed.fsdp import FullyShardedDataParallel

        half_wrapped = tiny_bert()
        layers = half_wrapped.bert.encoder.layer
        layers[0] = FullyShardedDataParallel(layers[0], device_id=torch.device("cpu"))
        with pytest.raises(ValueError, match="FSDP-wrapped submodules but no FSDP root"):
            hf_strategies.shard_hf_model(sharded.lightning_trainer.strategy, half_wrapped)
    sharded.save_model(str(out / "saved"))
    saved = hf_weights(out / "saved")
    result = {
        "logs": step_logs(sharded),
        "saved_vs_in_memory": max_diff(saved, {k: in_memory[k] for k in saved}),
        "checkpoint_vs_saved": max_diff(hf_weights(out / "checkpoint-6"), saved),
    }
    resumed = job(str(out), device, fsdp=True, resume=str(out / "checkpoint-4"))
    result["resumed_logs"] = step_logs(resumed)
    result["resumed_vs_saved"] = max_diff(hf_weights(out / "checkpoint-6"), saved)
    return result


@pytest.mark.parametrize("device", DEVICES)
def test_fsdp_clips_logs_saves_and_resumes_like_an_unsharded_run(tmp_path: Path, device: str) -> None:
    """One process: FSDP's `clip_grad_norm_` gives the unsharded run's `grad_norm`; `save_model` and every checkpoint
    write `model.safetensors` that `from_pretrained` loads, equal to the gathered in-memory weights; a run resumed
    from a mid-epoch checkpoint ends at the uninterrupted run's weights."""
    rel, atol = (1e-5, 1e-5) if device == "cpu" else (1e-4, 1e-4)
    out = tmp_path / "fsdp"
    result = isolated(_fsdp_run, out, device)
    plain = job(str(tmp_path / "plain"), device)
    assert_same_logs(result["logs"], step_logs(plain), rel=rel)
    assert result["saved_vs_in_memory"] == 0.0 and result["checkpoint_vs_saved"] == 0.0
    saved = hf_weights(out / "saved")
    assert max_diff(saved, {k: v for k, v in plain.model.state_dict().items() if k in saved}) < atol
    assert (out / "checkpoint-4" / "optimizer.pt").is_file()
    assert_same_logs(result["resumed_logs"], result["logs"], rel=rel)  # steps 1-4 restored, 5-6 trained again
    assert result["resumed_vs_saved"] < atol


def _fsdp_worker(port: int, out: str, env: dict[str, str], resume: str | None) -> None:
    from accelerate.state import AcceleratorState, PartialState

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **env)
    AcceleratorState._reset_state(True)  # the forked copy of the parent's single-process state
    PartialState._reset_state()
    from torch.distributed.fsdp import FullyShardedDataParallel

    no_sync_calls = []
    no_sync = FullyShardedDataParallel.no_sync
    FullyShardedDataParallel.no_sync = lambda self: no_sync_calls.append(1) or no_sync(self)  # this process only
    trainer = job(out, "cpu", world=2, resume=resume, eval_samples=10, fsdp=True, fsdp_config=NESTED)
    info = {
        "no_sync": len(no_sync_calls),
        "logs": step_logs(trainer),
        "evals": eval_losses(trainer),
        "evaluate": trainer.evaluate()["eval_loss"],
        "world": trainer.args.world_size,
    }
    if resume is None:  # the FSDP wrapper of the first fit is reused (its layers' parameters are already flat)
        train_again(trainer, "cpu")
        info["again_logs"] = step_logs(trainer)
        trainer.save_model(os.path.join(out, "again"))
    with open(os.path.join(out, f"rank{trainer.args.process_index}.json"), "w") as f:
        json.dump(info, f)


# FSDP units per BERT layer inside the root, with activation checkpointing: the layout a large model trains with.
NESTED = {"transformer_layer_cls_to_wrap": "BertLayer", "activation_checkpointing": True}


def run_two_fsdp_ranks(out: str, resume: str | None = None) -> list[dict]:
    """Fork two ranks with the launcher's environment (Lightning does not relaunch); both must exit cleanly."""
    ctx, port = multiprocessing.get_context("fork"), free_port()
    envs = [{"WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r), "NODE_RANK": "0"} for r in range(2)]
    procs = [ctx.Process(target=_fsdp_worker, args=(port, out, env, resume)) for env in envs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        if p.exitcode is None:
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(2)]


def test_fsdp_two_ranks_shard_clip_gather_and_resume(tmp_path: Path) -> None:
    """FULL_SHARD over 2 gloo ranks, one FSDP unit per layer, gradients accumulated under `no_sync`: the clipped
    `grad_norm` is the global one (each rank holds half the gradients), evaluation runs the sharded model (during
    training and `evaluate()` after it), rank 0 writes the gathered weights and one full `optimizer.pt`, both ranks
    resume from them, and a second `train()` continues on the same sharded model."""
    out = str(tmp_path / "fsdp")
    os.makedirs(out)
    ranks = run_two_fsdp_ranks(out)
    plain = job(str(tmp_path / "plain"), "cpu", eval_samples=10)
    plain_evals = eval_losses(plain)
    plain_evaluate = plain.evaluate()["eval_loss"]
    for info in ranks:
        assert info["world"] == 2
        assert info["no_sync"] == 6  # 2 epochs x 3 windows of 2 micro-batches: the first of each under no_sync
        assert_same_logs(info["logs"], step_logs(plain), rel=1e-5)
        assert [s for s, _ in info["evals"]] == [s for s, _ in plain_evals] == [2, 4, 6]
        assert [v for _, v in info["evals"]] == pytest.approx([v for _, v in plain_evals], rel=1e-5)
        assert info["evaluate"] == pytest.approx(plain_evaluate, rel=1e-5)
    reference = {k: v.clone() for k, v in plain.model.state_dict().items()}
    final = hf_weights(Path(out, "checkpoint-6"))
    assert max_diff(final, {k: reference[k] for k in final}) < 1e-5

    train_again(plain, "cpu")
    for info in ranks:
        assert_same_logs(info["again_logs"], step_logs(plain), rel=1e-5)
    again = hf_weights(Path(out, "again"))
    assert max_diff(again, {k: v for k, v in plain.model.state_dict().items() if k in again}) < 1e-5
    assert max_diff(again, final) > 1e-4  # the second fit trained on
    optimizer = torch.load(Path(out, "checkpoint-6", "optimizer.pt"), weights_only=True)
    shapes = {name: tuple(s["exp_avg"].shape) for name, s in optimizer["state"].items()}
    assert shapes["bert.embeddings.word_embeddings.weight"] == (50, 16)  # full shapes, not a rank's flat shard
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(os.listdir(Path(out, "checkpoint-6")))

    resumed = run_two_fsdp_ranks(out, resume=str(Path(out, "checkpoint-4")))
    for info in resumed:  # the resumed log history: steps 1-4 from the checkpoint, 5-6 trained again
        assert_same_logs(info["logs"], ranks[0]["logs"], rel=1e-5)
    assert max_diff(hf_weights(Path(out, "checkpoint-6")), final) < 1e-5


# ---- DeepSpeed -------------------------------------------------------------------------------------------------

ZERO2 = {
    "zero_optimization": {"stage": 2, "reduce_bucket_size": "auto"},
    "train_micro_batch_size_per_gpu": "auto",
    "train_batch_size": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
}


def _deepspeed_run(out: Path, device: str, kw: dict) -> dict:
    ds = job(str(out), device, deepspeed=ZERO2, **kw)
    strategy = ds.lightning_trainer.strategy
    assert isinstance(strategy, hf_strategies.HFDeepSpeedStrategy)
    ds.save_model(str(out / "saved"))
    resumed = job(str(out), device, deepspeed=ZERO2, resume=str(out / "checkpoint-4"), **kw)
    return {
        "config": strategy.config,
        "logs": step_logs(ds),
        "checkpoint_4": sorted(os.listdir(out / "checkpoint-4")),
        "resumed_logs": step_logs(resumed),
        "resumed_vs_saved": max_diff(hf_weights(out / "checkpoint-6"), hf_weights(out / "saved")),
    }


@needs_deepspeed
@pytest.mark.parametrize("device", DEVICES)
def test_deepspeed_zero2_accumulates_saves_and_resumes_like_an_unsharded_run(tmp_path: Path, device: str) -> None:
    """ZeRO-2 with HF's accumulation (3 micro-batches a window, the last window of each epoch shorter): the engine
    owns the window, HF's loss scaling is kept (`scale_wrt_gas=False`), it clips at `max_grad_norm`, and the losses,
    `grad_norm` and weights are the unsharded run's. Checkpoints hold the engine's own partitions (HF's layout under
    DeepSpeed), from which a resumed run ends where the uninterrupted one did."""
    tol = 1e-5 if device == "cpu" else 1e-3
    kw = dict(gradient_accumulation_steps=3, samples=28)
    out = tmp_path / "ds"
    result = isolated(_deepspeed_run, out, device, kw)
    plain = job(str(tmp_path / "plain"), device, **kw)
    config = result["config"]
    assert config["gradient_accumulation_steps"] == 3 and config["train_batch_size"] == 12
    assert config["gradient_clipping"] == 0.5 and config["zero_optimization"]["stage"] == 2
    assert [e["step"] for e in result["logs"]] == [1, 2, 3, 4, 5, 6]  # 7 micro-batches an epoch: windows of 3, 3, 1
    assert_same_logs(result["logs"], step_logs(plain), rel=tol)
    saved = hf_weights(out / "saved")
    assert max_diff(saved, {k: v for k, v in plain.model.state_dict().items() if k in saved}) < tol
    assert {"latest", "global_step4", "model.safetensors", "scheduler.pt"} <= set(result["checkpoint_4"])
    assert_same_logs(result["resumed_logs"], result["logs"], rel=tol)
    assert result["resumed_vs_saved"] < tol


def _deepspeed_hf_checkpoint_run(out: Path) -> dict:
    """A plain `lightning.Trainer` on `HFLightningModule.from_args` under the DeepSpeed strategy the facade builds,
    with the `HFCheckpoint` callback."""
    import lightning.pytorch as pl

    from hf_lightning import HFCheckpoint, HFDataModule, HFLightningModule

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = TrainingArguments(
            str(out), per_device_train_batch_size=4, learning_rate=1e-3, deepspeed=ZERO2, report_to="none"
        )
    model = tiny_bert(dropout=0.0)
    module = HFLightningModule.from_args(model, args)
    with cpu_capable_strategies(deepspeed=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            strategy=hf_strategies.build_strategy(args, model),
            max_epochs=1,
            logger=False,
            enable_progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            use_distributed_sampler=False,
            callbacks=[HFCheckpoint(every_n_steps=2)],
        )
        trainer.fit(module, datamodule=HFDataModule(args, ToyClassification(16, seed=1)))
    final = {k: v.float() for k, v in module.model.state_dict().items()}
    return {
        "folders": sorted(os.listdir(out)),
        "files": sorted(os.listdir(out / "checkpoint-4")),
        "saved_vs_trained": max_diff(hf_weights(out / "checkpoint-4"), final),
    }


@needs_deepspeed
def test_hf_checkpoint_callback_saves_the_deepspeed_engine_checkpoint(tmp_path: Path) -> None:
    """`HFCheckpoint` under DeepSpeed writes what the facade writes there: the engine's own checkpoint (each rank's
    ZeRO partition, `latest`) instead of `optimizer.pt`, beside `model.safetensors` that `from_pretrained` loads."""
    result = isolated(_deepspeed_hf_checkpoint_run, tmp_path)
    assert result["folders"] == ["checkpoint-2", "checkpoint-4"]
    assert {"latest", "global_step4", "model.safetensors", "scheduler.pt", "trainer_state.json"} <= set(result["files"])
    assert "optimizer.pt" not in result["files"]
    assert result["saved_vs_trained"] == 0.0
