"""Checkpoints, resume and the best model, against the real `transformers.Trainer`.

The job is the tiny BERT of `helpers` (CPU, fp32, dropout on, clipping active). Checkpoints must have HF's files
and `trainer_state.json`; resuming (ours from ours, ours from HF's, HF's from ours, after SIGKILLs at seeded
random points, after a failed or killed save) must end bit-identical to an uninterrupted run; rotation and the
best model follow HF; every `torch.load` is `weights_only=True`.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import ToyClassification, assert_same_weights, tiny_bert, train_logs
from packaging.version import Version
from transformers import AutoModelForSequenceClassification, TrainerCallback
from transformers import Trainer as HFTrainer
from transformers import trainer as hf_trainer_module
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import get_last_checkpoint

import hf_lightning.checkpoints as ckpt
import hf_lightning.loop as hf_lightning_loop
from hf_lightning import Trainer as HFLTrainer
from hf_lightning import compat
from hf_lightning.compat import safe_globals

TESTS_DIR = Path(__file__).resolve().parent
SPEED = ("runtime", "per_second")

# 20 samples / batch 4 = 5 batches per epoch; GA 2 -> windows of 2, 2 and a short 1: 3 steps per epoch.
GA2 = dict(gradient_accumulation_steps=2, num_train_epochs=3)
GA2_STEPS = 9


class Counter(TrainerCallback, ExportableState):
    """A stateful callback whose constructor argument is not an attribute name (HF rebuilds it from `args`)."""

    def __init__(self, every: int = 1) -> None:
        self.every_n = every
        self.count = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.count += 1

    def state(self) -> dict:
        return {"args": {"every": self.every_n}, "attributes": {"count": self.count}}


class RngProbe(TrainerCallback):
    """Draws from python, numpy and torch at each step: equal draws after resume = RNG states restored."""

    def __init__(self) -> None:
        self.draws: dict[int, tuple] = {}

    def on_step_begin(self, args, state, control, **kwargs):
        self.draws[state.global_step] = (random.random(), float(np.random.rand()), float(torch.rand(1)))


class KillAt(TrainerCallback):
    """SIGKILLs its own process: right after checkpoint `step` is saved, or mid-way through step `step + 1`."""

    def __init__(self, step: int, mode: str) -> None:
        self.step, self.mode = step, mode

    def on_save(self, args, state, control, **kwargs):
        if self.mode == "after-save" and state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.mode == "mid-step" and state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def _accuracy(pred) -> dict:
    return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}


def make_trainer(
    impl: str, out: Any, n_train: int = 20, n_eval: int | None = None, callbacks: list | None = None, **overrides
) -> Any:
    """The tiny BERT job with `impl` in {"hf", "hfl"}, a checkpoint every step; not trained yet."""
    from transformers import TrainingArguments as HFArgs

    from hf_lightning import TrainingArguments as HFLArgs

    kwargs = dict(
        output_dir=str(out),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=1e-3,
        num_train_epochs=2,
        logging_steps=1,
        save_strategy="steps",
        save_steps=1,
        max_grad_norm=0.5,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=42,
    )
    kwargs.update(overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = (HFArgs if impl == "hf" else HFLArgs)(**kwargs)
    return (HFTrainer if impl == "hf" else HFLTrainer)(
        model=tiny_bert(),
        args=args,
        train_dataset=ToyClassification(n_train, seed=1),
        eval_dataset=ToyClassification(n_eval, seed=2) if n_eval else None,
        compute_metrics=_accuracy if n_eval else None,
        callbacks=callbacks,
    )


def strip_speed(log_history: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if not any(s in k for s in SPEED)} for e in log_history]


def record_speed_counts(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[tuple]]:
    """The samples and steps each trainer's `train()` summary hands to `speed_metrics` (its rates divide them by the
    runtime): after a resume, the share of the run that call trained or the whole schedule, by transformers release."""
    seen: dict[str, list[tuple]] = {"hf": [], "hfl": []}
    for impl, module in (("hf", hf_trainer_module), ("hfl", hf_lightning_loop)):

        def spy(split: str, *args: Any, _impl: str = impl, _original: Any = module.speed_metrics, **kwargs: Any) -> Any:
            if split == "train":
                seen[_impl].append((kwargs.get("num_samples"), kwargs.get("num_steps")))
            return _original(split, *args, **kwargs)

        monkeypatch.setattr(module, "speed_metrics", spy)
    return seen


def step_logs(trainer: Any) -> list[dict]:
    """Training and eval entries of `log_history` (not the per-`train()`-call summary)."""
    return strip_speed([e for e in trainer.state.log_history if "loss" in e or "eval_loss" in e])


def folders(out: Any) -> list[str]:
    return sorted(p.name for p in Path(out).iterdir() if p.is_dir())


def files(folder: Any) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir())


def state_json(folder: Any) -> dict:
    return json.loads((Path(folder) / "trainer_state.json").read_text())


def assert_same_run(a: Any, b: Any) -> None:
    """Bit-identical final weights and equal per-step logs (loss, grad_norm, learning_rate, eval ...)."""
    assert_same_weights(a.model, b.model)
    assert step_logs(a) == step_logs(b)
    assert a.state.global_step == b.state.global_step


def _resume(impl: str, out: Any, checkpoint: Any, **kw) -> Any:
    trainer = make_trainer(impl, out, callbacks=[Counter(3), RngProbe()], **{**GA2, **kw})
    trainer.train(resume_from_checkpoint=str(checkpoint))
    return trainer


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory) -> Any:
    trainer = make_trainer("hf", tmp_path_factory.mktemp("hf_run"), callbacks=[Counter(3), RngProbe()], **GA2)
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def hfl_run(tmp_path_factory) -> Any:
    trainer = make_trainer("hfl", tmp_path_factory.mktemp("hfl_run"), callbacks=[Counter(3), RngProbe()], **GA2)
    trainer.train()
    return trainer


def _probe(trainer: Any) -> dict:
    return next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, RngProbe)).draws


# ---- 1. layout ------------------------------------------------------------------------------------------


def test_checkpoints_have_transformers_files_and_state(tmp_path) -> None:
    kw = dict(n_eval=4, save_steps=2, eval_strategy="steps", eval_steps=2, metric_for_best_model="loss")
    hf = make_trainer("hf", tmp_path / "hf", **kw)
    hf.train()
    hfl = make_trainer("hfl", tmp_path / "hfl", **kw)
    hfl.train()
    assert folders(tmp_path / "hfl") == folders(tmp_path / "hf") == [f"checkpoint-{i}" for i in (10, 2, 4, 6, 8)]
    assert_same_run(hf, hfl)
    for name in folders(tmp_path / "hf"):
        assert files(tmp_path / "hfl" / name) == files(tmp_path / "hf" / name)
        ours, theirs = state_json(tmp_path / "hfl" / name), state_json(tmp_path / "hf" / name)
        assert ours.keys() == theirs.keys()
        for key in ("best_model_checkpoint", "log_history"):
            del ours[key], theirs[key]
        assert ours == theirs  # global_step, epoch, best_metric, best_global_step, stateful_callbacks, flos ...
        assert strip_speed(state_json(tmp_path / "hfl" / name)["log_history"]) == strip_speed(
            state_json(tmp_path / "hf" / name)["log_history"]
        )
        best = [Path(state_json(tmp_path / d / name)["best_model_checkpoint"]).name for d in ("hf", "hfl")]
        assert best[0] == best[1]
        loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hfl" / name)
        assert_same_weights(loaded, AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf" / name))
    assert state_json(tmp_path / "hfl" / "checkpoint-10")["best_global_step"] is not None
    assert_same_weights(
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "hfl" / "checkpoint-10"), hfl.model
    )
    assert not any(name.startswith("tmp-") for name in os.listdir(tmp_path / "hfl"))


# ---- 2. resume ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [2, 3, 7], ids=["mid-epoch-then-short-window", "epoch-boundary", "mid-epoch-3"])
def test_resume_is_bit_identical(hfl_run, tmp_path, step: int) -> None:
    """GA 2 with a short last window: resume mid-epoch (skipping seen batches) and at an epoch boundary."""
    resumed = _resume("hfl", tmp_path, Path(hfl_run.args.output_dir) / f"checkpoint-{step}")
    assert_same_run(hfl_run, resumed)
    full_draws, resumed_draws = _probe(hfl_run), _probe(resumed)
    assert set(resumed_draws) == set(range(step, GA2_STEPS))
    assert resumed_draws == {s: full_draws[s] for s in resumed_draws}  # python, numpy and torch RNG restored


@pytest.mark.skipif(
    compat.TRANSFORMERS_VERSION < Version("5.6.0"),
    reason="transformers < 5.6 saves a from_pretrained BERT's LayerNorm weights under the legacy names gamma/beta, "
    "which no resume loads back (transformers' own neither)",
)
def test_large_models_save_sharded_like_transformers_and_resume(hfl_run, tmp_path, monkeypatch) -> None:
    """Over `save_pretrained`'s shard size (made 10 KB here), checkpoints hold HF's sharded safetensors and index, the
    same files as `transformers.Trainer` writes; `from_pretrained` loads them and resume from them is bit-identical."""
    from transformers import PreTrainedModel

    save = PreTrainedModel.save_pretrained
    monkeypatch.setattr(
        PreTrainedModel, "save_pretrained", lambda self, *a, **kw: save(self, *a, **kw, max_shard_size="10KB")
    )
    for impl in ("hf", "hfl"):
        make_trainer(impl, tmp_path / impl, max_steps=3, save_steps=3).train()
    assert files(tmp_path / "hfl" / "checkpoint-3") == files(tmp_path / "hf" / "checkpoint-3")
    assert "model.safetensors.index.json" in files(tmp_path / "hfl" / "checkpoint-3")
    assert_same_weights(
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "hfl" / "checkpoint-3"),
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf" / "checkpoint-3"),
    )
    resharded = tmp_path / "resharded"
    shutil.copytree(Path(hfl_run.args.output_dir) / "checkpoint-3", resharded)
    model = AutoModelForSequenceClassification.from_pretrained(resharded)
    os.remove(resharded / "model.safetensors")
    model.save_pretrained(resharded)
    assert "model.safetensors.index.json" in files(resharded)
    assert_same_run(hfl_run, _resume("hfl", tmp_path / "resumed", resharded))


def test_resume_true_picks_last_checkpoint(hfl_run, tmp_path) -> None:
    source = Path(hfl_run.args.output_dir)
    for step in (3, 4, 5):
        shutil.copytree(source / f"checkpoint-{step}", tmp_path / f"checkpoint-{step}")
    trainer = make_trainer("hfl", tmp_path, callbacks=[Counter(3), RngProbe()], **GA2)
    trainer.train(resume_from_checkpoint=True)
    assert set(_probe(trainer)) == set(range(5, GA2_STEPS))
    assert_same_run(hfl_run, trainer)


def test_training_equals_transformers(hf_run, hfl_run) -> None:
    """The reference runs of the interop tests are the same run."""
    assert_same_run(hf_run, hfl_run)
    assert _probe(hf_run) == _probe(hfl_run)
    assert folders(hf_run.args.output_dir) == folders(hfl_run.args.output_dir)


# ---- 3. interop -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer,reader,step", [("hf", "hfl", 4), ("hf", "hfl", 6), ("hfl", "hf", 4), ("hfl", "hf", 8)])
def test_resume_across_trainers(hf_run, hfl_run, tmp_path, writer: str, reader: str, step: int) -> None:
    source = hf_run if writer == "hf" else hfl_run
    resumed = _resume(reader, tmp_path, Path(source.args.output_dir) / f"checkpoint-{step}")
    assert_same_run(source, resumed)
    assert [cb.count for cb in resumed.callback_handler.callbacks if isinstance(cb, Counter)] == [GA2_STEPS - step]


@pytest.mark.parametrize(
    "step,kw",
    [
        (4, dict(ignore_data_skip=True)),
        (GA2_STEPS, {}),
        (4, dict(restore_callback_states_from_checkpoint=True)),
    ],
    ids=["ignore_data_skip", "from-final-checkpoint", "callback-states"],
)
def test_resume_variants_match_transformers(hf_run, tmp_path, monkeypatch, step: int, kw: dict) -> None:
    checkpoint = Path(hf_run.args.output_dir) / f"checkpoint-{step}"
    speed_counts = record_speed_counts(monkeypatch)
    hf = _resume("hf", tmp_path / "hf", checkpoint, **kw)
    hfl = _resume("hfl", tmp_path / "hfl", checkpoint, **kw)
    assert_same_run(hf, hfl)
    assert strip_speed(hf.state.log_history) == strip_speed(hfl.state.log_history)
    assert speed_counts["hfl"] == speed_counts["hf"] and len(speed_counts["hf"]) == 1
    assert _probe(hf) == _probe(hfl)

    def callbacks(t):
        return [(type(cb).__name__, vars(cb)) for cb in t.callback_handler.callbacks if not isinstance(cb, RngProbe)]

    assert callbacks(hf) == callbacks(hfl)
    assert vars(hf.control) == vars(hfl.control)
    if "restore_callback_states_from_checkpoint" in kw:
        assert ("Counter", {"every_n": 3, "count": GA2_STEPS}) in callbacks(hfl)


# ---- 4. rotation and the best model -------------------------------------------------------------------------

EVAL = dict(n_train=12, n_eval=4, eval_strategy="steps", eval_steps=2, save_steps=2, learning_rate=5e-3)
ROTATION = {
    "limit2-best-at-end": dict(EVAL, save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="accuracy"),
    "limit1-best-at-end": dict(EVAL, save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="loss"),
    "save-best": dict(EVAL, eval_steps=1, save_strategy="best", metric_for_best_model="accuracy"),
    "save-only-model": dict(EVAL, save_only_model=True, save_total_limit=3),
    "save-epoch": dict(n_train=12, save_strategy="epoch", num_train_epochs=3),
}


@pytest.mark.parametrize("case", sorted(ROTATION))
def test_rotation_and_best_model_match_transformers(tmp_path, case: str) -> None:
    hf = make_trainer("hf", tmp_path / "hf", **ROTATION[case])
    hf.train()
    hfl = make_trainer("hfl", tmp_path / "hfl", **ROTATION[case])
    hfl.train()
    assert folders(tmp_path / "hfl") == folders(tmp_path / "hf")
    for name in folders(tmp_path / "hf"):
        assert files(tmp_path / "hfl" / name) == files(tmp_path / "hf" / name)
    assert_same_run(hf, hfl)  # with load_best_model_at_end: the best model, loaded back
    names = [Path(t.state.best_model_checkpoint).name if t.state.best_model_checkpoint else None for t in (hf, hfl)]
    assert names[0] == names[1]
    assert (hf.state.best_metric, hf.state.best_global_step) == (hfl.state.best_metric, hfl.state.best_global_step)
    if ROTATION[case].get("load_best_model_at_end"):
        best = AutoModelForSequenceClassification.from_pretrained(hfl.state.best_model_checkpoint)
        assert_same_weights(best, hfl.model)
        assert names[1] != f"checkpoint-{hfl.state.global_step}", "the job must make the best model differ"


# ---- 5. atomicity -----------------------------------------------------------------------------------------


def test_failed_save_keeps_previous_checkpoints_and_resumes(hfl_run, tmp_path, monkeypatch) -> None:
    real = ckpt.save_model_files

    def full_disk(model, output_dir, state_dict=None):
        real(model, output_dir, state_dict)
        if os.path.basename(output_dir) == "tmp-checkpoint-4":
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_model_files", full_disk)
    trainer = make_trainer("hfl", tmp_path, callbacks=[Counter(3), RngProbe()], **GA2)
    with pytest.raises(ckpt.CheckpointSaveError, match=r"checkpoint-4 .*No space left.*previous checkpoints") as exc:
        trainer.train()
    assert exc.value.errno == errno.ENOSPC
    assert folders(tmp_path) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    assert get_last_checkpoint(str(tmp_path)).endswith("checkpoint-3")
    monkeypatch.setattr(ckpt, "save_model_files", real)
    resumed = make_trainer("hfl", tmp_path, callbacks=[Counter(3), RngProbe()], **GA2)
    resumed.train(resume_from_checkpoint=True)
    assert_same_run(hfl_run, resumed)


def test_resume_skips_checkpoint_transformers_left_incomplete(hf_run, tmp_path, monkeypatch, caplog) -> None:
    """HF writes in place: a crash mid-save leaves `checkpoint-4` without `trainer_state.json`. HF 5.23 has no
    incomplete-checkpoint sentinel and its own `resume_from_checkpoint=True` then fails; ours takes checkpoint-3."""
    real = HFTrainer._save_rng_state

    def crash(self, output_dir):
        if self.state.global_step == 4:
            raise RuntimeError("killed mid-save")
        real(self, output_dir)

    monkeypatch.setattr(HFTrainer, "_save_rng_state", crash)
    with pytest.raises(RuntimeError, match="killed mid-save"):
        make_trainer("hf", tmp_path, callbacks=[Counter(3), RngProbe()], **GA2).train()
    monkeypatch.setattr(HFTrainer, "_save_rng_state", real)
    assert "optimizer.pt" in files(tmp_path / "checkpoint-4") and "trainer_state.json" not in files(
        tmp_path / "checkpoint-4"
    )
    with pytest.raises(FileNotFoundError):
        make_trainer("hf", tmp_path, **GA2).train(resume_from_checkpoint=True)
    with pytest.raises(ValueError, match="no trainer_state.json"):
        make_trainer("hfl", tmp_path, **GA2).train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    resumed = make_trainer("hfl", tmp_path, callbacks=[Counter(3), RngProbe()], **GA2)
    with caplog.at_level("WARNING", logger="hf_lightning.checkpoints"):
        resumed.train(resume_from_checkpoint=True)
    assert "checkpoint-4: it has no trainer_state.json" in caplog.text
    assert_same_run(hf_run, resumed)
    assert "trainer_state.json" in files(tmp_path / "checkpoint-4")  # HF's partial folder replaced atomically
    assert folders(tmp_path) == folders(hf_run.args.output_dir)


# ---- 6. safe loading -----------------------------------------------------------------------------------------


def test_resume_loads_everything_weights_only(hfl_run, tmp_path, monkeypatch) -> None:
    checkpoint = Path(hfl_run.args.output_dir) / "checkpoint-8"
    with pytest.raises(Exception, match="Unsupported global"):  # numpy's RNG state needs HF's allow-list
        torch.load(checkpoint / "rng_state.pth", weights_only=True)
    with safe_globals():
        assert set(torch.load(checkpoint / "rng_state.pth", weights_only=True)) == {"python", "numpy", "cpu"}
    calls = []
    real_load = torch.load

    def recording_load(path, *args, **kwargs):
        calls.append((os.path.basename(path), kwargs.get("weights_only")))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    resumed = _resume("hfl", tmp_path, checkpoint)
    assert sorted(calls) == [("optimizer.pt", True), ("rng_state.pth", True), ("scheduler.pt", True)]
    assert_same_run(hfl_run, resumed)


# ---- 7. save_model / save_state / metrics ------------------------------------------------------------------


def test_save_model_state_and_metrics_match_transformers(tmp_path, capsys) -> None:
    outputs = {}
    for impl in ("hf", "hfl"):
        trainer = make_trainer(impl, tmp_path / impl, save_strategy="no", max_steps=2)
        result = trainer.train()
        trainer.save_model()
        trainer.save_state()
        capsys.readouterr()
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", {"train_loss": result.training_loss})
        trainer.save_metrics("eval", {"eval_loss": 0.5}, combined=True)
        outputs[impl] = (trainer, capsys.readouterr().out)
    (hf, hf_out), (hfl, hfl_out) = outputs["hf"], outputs["hfl"]
    assert files(tmp_path / "hfl") == files(tmp_path / "hf")
    assert_same_weights(AutoModelForSequenceClassification.from_pretrained(tmp_path / "hfl"), hfl.model)
    assert_same_weights(hf.model, hfl.model)
    ours, theirs = state_json(tmp_path / "hfl"), state_json(tmp_path / "hf")
    assert strip_speed(ours.pop("log_history")) == strip_speed(theirs.pop("log_history"))
    assert ours == theirs
    for name in ("train_results.json", "eval_results.json", "all_results.json"):
        assert (tmp_path / "hfl" / name).read_text() == (tmp_path / "hf" / name).read_text()
    strip = [line.split("=")[0] for line in hf_out.splitlines()], [line.split("=")[0] for line in hfl_out.splitlines()]
    assert strip[0] == strip[1] and "***** train metrics *****" in hfl_out
    assert train_logs(hf) == train_logs(hfl)


# ---- 2b. SIGKILL at seeded random points ----------------------------------------------------------------------

KILL_CONFIGS = {
    # GA 1: 5 steps per epoch, a checkpoint every step.
    "ga1": dict(num_train_epochs=2),
    # GA 3 over 5 batches (windows 3 and a short 2), eval + best model + rotation, a checkpoint every 2 steps.
    "ga3-best": dict(
        gradient_accumulation_steps=3,
        num_train_epochs=5,
        save_steps=2,
        n_eval=4,
        eval_strategy="steps",
        eval_steps=2,
        metric_for_best_model="loss",
        load_best_model_at_end=True,
        save_total_limit=2,
    ),
}
KILL_POINTS_PER_CONFIG = 5


def kill_plan(seed: int = 8) -> list[dict]:
    """Ascending kill points per config (each run resumes from what the previous kill left), a mode each."""
    rng = random.Random(seed)
    jobs = []
    for config, kw in KILL_CONFIGS.items():
        save_steps = kw.get("save_steps", 1)
        for step in sorted(rng.sample(range(1, 10), KILL_POINTS_PER_CONFIG)):
            saved = step % save_steps == 0
            mode = rng.choice(["after-save", "mid-save", "mid-step"]) if saved else "mid-step"
            jobs.append(dict(config=config, step=step, mode=mode))
    return jobs


def run_until_killed(job: dict, out: str) -> None:
    """The training script of a killed child process."""
    trainer = make_trainer("hfl", out, **KILL_CONFIGS[job["config"]])
    step = job["step"]
    if job["mode"] == "mid-save":  # model and optimizer written into tmp-checkpoint-N, then killed
        real = trainer._save_rng_state

        def dying(output_dir: str) -> None:
            if trainer.state.global_step == step:
                os.kill(os.getpid(), signal.SIGKILL)
            real(output_dir)

        trainer._save_rng_state = dying
    else:
        trainer.add_callback(KillAt(step, job["mode"]))
    trainer.train(resume_from_checkpoint=ckpt.last_complete_checkpoint(out))  # None: start from scratch


def kill_driver(root: str) -> None:
    """Subprocess entry: import once, then fork one training process per job; record how each one ended."""
    statuses = []
    for job in kill_plan():
        pid = os.fork()
        if pid == 0:
            try:
                run_until_killed(job, os.path.join(root, job["config"]))
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status)
        statuses.append((signum, sorted(os.listdir(os.path.join(root, job["config"])))))
    Path(root, "statuses.json").write_text(json.dumps(statuses))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_at_random_steps_then_resume_is_bit_identical(tmp_path) -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import test_checkpoints as t; t.kill_driver(sys.argv[1])"
    )
    log = tmp_path / "driver.log"
    with open(log, "w") as sink:
        driver = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=sink, stderr=subprocess.STDOUT)
    references = {}
    try:
        for config, kw in KILL_CONFIGS.items():  # uninterrupted transformers.Trainer runs, meanwhile
            references[config] = make_trainer("hf", tmp_path / "reference" / config, **kw)
            references[config].train()
        assert driver.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    plan = kill_plan()
    assert len(plan) == 10 and {job["mode"] for job in plan} == {"after-save", "mid-save", "mid-step"}
    statuses = json.loads((tmp_path / "statuses.json").read_text())
    assert [signum for signum, _ in statuses] == [signal.SIGKILL] * len(plan)
    for job, (_, left) in zip(plan, statuses):  # what each kill left on disk
        step = job["step"]
        if job["mode"] == "mid-save":
            assert f"tmp-checkpoint-{step}" in left and f"checkpoint-{step}" not in left
        elif job["mode"] == "after-save":
            assert f"checkpoint-{step}" in left
    for config, kw in KILL_CONFIGS.items():
        out = tmp_path / config
        checkpoints = [name for name in folders(out) if name.startswith("checkpoint-")]
        assert all((out / name / "trainer_state.json").is_file() for name in checkpoints)
        resumed = make_trainer("hfl", out, **kw)
        resumed.train(resume_from_checkpoint=True)
        assert_same_run(references[config], resumed)
        names = [Path(t.state.best_model_checkpoint or "").name for t in (references[config], resumed)]
        assert names[0] == names[1]
        assert [n for n in folders(out) if n.startswith("checkpoint-")] == folders(tmp_path / "reference" / config)


def test_strategy_object_does_not_break_training_args_bin(tmp_path):
    """A Strategy object cannot be pickled: training_args.bin stores its repr, the live args keep the object."""
    import transformers
    from lightning.pytorch.strategies import SingleDeviceStrategy

    from hf_lightning import TrainingArguments
    from hf_lightning.saved_args import hf_args_for_saving

    strategy = SingleDeviceStrategy(device="cpu")
    strategy.backend_module = torch  # after a run a strategy holds such objects ("cannot pickle 'module' object")
    args = TrainingArguments(output_dir=str(tmp_path), strategy=strategy)
    stored = hf_args_for_saving(args)
    path = tmp_path / "training_args.bin"
    torch.save(stored, path)
    loaded = torch.load(path, weights_only=False)
    assert loaded.strategy == repr(strategy)
    assert loaded.learning_rate == args.learning_rate
    assert args.strategy is strategy
    plain = hf_args_for_saving(TrainingArguments(output_dir=str(tmp_path), strategy="ddp"))
    assert type(plain) is transformers.TrainingArguments and plain.strategy == "ddp"
