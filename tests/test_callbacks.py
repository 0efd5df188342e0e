"""Callbacks and control flow against the real `transformers.Trainer`.

Every HF event fires in HF's order with HF's kwargs; `TrainerControl` flags set by a callback have HF's effects;
`EarlyStoppingCallback` stops at HF's step and its state is saved/restored as HF does; `add/pop/remove_callback`
and the default callback list match HF; Lightning callbacks run in the `lightning.Trainer`; `report_to` feeds
Lightning loggers with what HF logs, at HF's step and under HF's TensorBoard names; `log_level*` set verbosity.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import sys
import types
import warnings
from typing import Any

import lightning.pytorch as pl
import pytest
import transformers
from helpers import ToyClassification, assert_same_weights, run_job, tiny_bert
from lightning.pytorch.callbacks import LearningRateMonitor
from transformers import EarlyStoppingCallback, PrinterCallback, ProgressCallback, TrainerCallback, TrainerState
from transformers.trainer_callback import DefaultFlowCallback
from transformers.utils import logging as hf_logging

import hf_lightning
import hf_lightning.callbacks as hfl_callbacks
import hf_lightning.reporting as hfl_reporting

SPEED = ("runtime", "per_second")
EVENTS = (
    "on_init_end on_train_begin on_epoch_begin on_step_begin on_pre_optimizer_step on_optimizer_step on_substep_end "
    "on_step_end on_log on_evaluate on_prediction_step on_predict on_save on_epoch_end on_train_end"
).split()
# 20 samples / batch 4 = 5 batches per epoch; GA 2 -> windows of 2, 2 and a short 1: 3 steps per epoch.
FLOW = dict(
    n_eval=8,
    gradient_accumulation_steps=2,
    logging_steps=2,
    eval_strategy="steps",
    eval_steps=2,
    save_strategy="steps",
    save_steps=3,
)


def _strip(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if not any(s in k for s in SPEED)}


def _logs(trainer: Any) -> list[dict]:
    return [_strip(e) for e in trainer.state.log_history]


def _checkpoints(out: Any) -> list[str]:
    return sorted(d for d in os.listdir(out) if d.startswith("checkpoint-"))


def _make_trainer(impl: str, out: Any, callbacks: list | None = None, n_eval: int | None = None, **overrides) -> Any:
    """The tiny BERT job of `helpers.run_job`, built but not trained."""
    module = transformers if impl == "hf" else hf_lightning
    kw = dict(
        output_dir=str(out),
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        num_train_epochs=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=42,
    )
    kw.update(overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = module.TrainingArguments(**kw)
    return module.Trainer(
        model=tiny_bert(),
        args=args,
        train_dataset=ToyClassification(20, seed=1),
        eval_dataset=ToyClassification(n_eval, seed=2) if n_eval else None,
        callbacks=callbacks,
    )


class EventRecorder(TrainerCallback):
    """Records (event, global_step, kwarg names, kwarg names whose value is not None) for every HF event."""

    def __init__(self) -> None:
        self.events: list[tuple] = []


def _recorder(name: str) -> Any:
    def hook(self: EventRecorder, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        given = tuple(sorted(k for k, v in kwargs.items() if v is not None))
        self.events.append((name, state.global_step, tuple(sorted(kwargs)), given))

    return hook


for _name in EVENTS:
    setattr(EventRecorder, _name, _recorder(_name))


class FlagSetter(TrainerCallback):
    """Sets `TrainerControl` flags once, at chosen (event, global_step) points."""

    def __init__(self, plan: dict[tuple[str, int], dict[str, bool]]) -> None:
        self.plan = dict(plan)


def _setter(name: str) -> Any:
    def hook(self: FlagSetter, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for flag, value in self.plan.pop((name, state.global_step), {}).items():
            setattr(control, flag, value)

    return hook


for _name in ("on_train_begin", "on_epoch_begin", "on_step_begin", "on_substep_end", "on_step_end", "on_epoch_end"):
    setattr(FlagSetter, _name, _setter(_name))


# ---- 1. every event, in HF's order, with HF's kwargs -------------------------------------------------------


ORDER_CASES = {
    "2-epochs-short-last-window": dict(num_train_epochs=2),
    "max-steps-mid-epoch": dict(max_steps=4),
    "epoch-strategies-eval-on-start": dict(
        num_train_epochs=1.5,
        eval_on_start=True,
        logging_first_step=True,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
    ),
}
LAST_STEP = {"2-epochs-short-last-window": 6, "max-steps-mid-epoch": 4, "epoch-strategies-eval-on-start": 5}


@pytest.mark.parametrize("case", list(ORDER_CASES))
def test_event_order_and_kwargs_match_transformers(case: str, tmp_path) -> None:
    events = {}
    for impl in ("hf", "hfl"):
        recorder = EventRecorder()
        trainer = run_job(impl, str(tmp_path / impl), callbacks=[recorder], **{**FLOW, **ORDER_CASES[case]})
        trainer.evaluate()
        trainer.predict(ToyClassification(6, seed=3))
        events[impl] = recorder.events
    assert events["hfl"] == events["hf"]
    assert {e[0] for e in events["hf"]} == set(EVENTS)
    assert [e[1] for e in events["hfl"] if e[0] == "on_step_end"][-1] == LAST_STEP[case]


# ---- 2. control flags and early stopping -------------------------------------------------------------------

FLAG_PLANS = {
    "save-eval-log-epoch-stop-train-stop": {
        ("on_step_end", 1): dict(should_save=True, should_evaluate=True),
        ("on_step_end", 2): dict(should_log=True),
        ("on_step_end", 3): dict(should_epoch_stop=True),
        ("on_substep_end", 4): dict(should_training_stop=True),
    },
    # HF runs one micro-batch before it looks at the flags: set at epoch begin, they stop after it.
    "stop-at-epoch-begin": {
        ("on_epoch_begin", 3): dict(should_training_stop=True),
        ("on_epoch_end", 3): dict(should_save=True),
    },
    # Stopping mid-window leaves accumulated gradients that HF carries into the next epoch's first step.
    "epoch-stop-mid-window": {("on_substep_end", 1): dict(should_epoch_stop=True)},
}


@pytest.mark.parametrize("plan", sorted(FLAG_PLANS))
def test_control_flags_have_transformers_effects(plan: str, tmp_path) -> None:
    job = dict(n_eval=8, gradient_accumulation_steps=2, logging_steps=5, num_train_epochs=3)
    runs = {}
    for impl in ("hf", "hfl"):
        setter = FlagSetter(FLAG_PLANS[plan])
        runs[impl] = run_job(impl, str(tmp_path / impl), callbacks=[setter], **job)
    hf, hfl = runs["hf"], runs["hfl"]
    assert hfl.state.global_step == hf.state.global_step
    assert _logs(hfl) == _logs(hf)
    assert _checkpoints(tmp_path / "hfl") == _checkpoints(tmp_path / "hf")
    assert_same_weights(hf.model, hfl.model)
    assert hf.state.global_step < 9  # every plan changes the run


EARLY = dict(
    n_eval=8,
    eval_strategy="steps",
    eval_steps=1,
    save_strategy="steps",
    save_steps=1,
    num_train_epochs=10,
    metric_for_best_model="eval_loss",
    load_best_model_at_end=True,
)


@pytest.fixture(scope="module")
def early_stopped(tmp_path_factory) -> dict[str, tuple[Any, Any]]:
    """The same early-stopped job (eval loss rises from step 1, patience 2) through both trainers."""
    runs = {}
    for impl in ("hf", "hfl"):
        out = tmp_path_factory.mktemp(f"early_{impl}")
        callback = EarlyStoppingCallback(early_stopping_patience=2, early_stopping_threshold=1e-4)
        runs[impl] = (run_job(impl, str(out), callbacks=[callback], **EARLY), out)
    return runs


def test_early_stopping_stops_at_the_transformers_step(early_stopped) -> None:
    (hf, hf_out), (hfl, hfl_out) = early_stopped["hf"], early_stopped["hfl"]
    assert hf.state.global_step == hfl.state.global_step == 3  # of 50 planned steps
    assert hfl.state.best_global_step == hf.state.best_global_step == 1
    assert hfl.state.best_metric == hf.state.best_metric
    assert os.path.basename(hfl.state.best_model_checkpoint) == "checkpoint-1"
    assert _checkpoints(hfl_out) == _checkpoints(hf_out)
    assert _logs(hfl) == _logs(hf)
    assert_same_weights(hf.model, hfl.model)  # the best model, loaded back at the end


def _trainer_state(checkpoint: Any) -> dict:
    with open(os.path.join(checkpoint, "trainer_state.json")) as f:
        state = json.load(f)
    state["log_history"] = [_strip(e) for e in state["log_history"]]
    state["best_model_checkpoint"] = os.path.basename(state["best_model_checkpoint"])
    return state


def test_stateful_callbacks_saved_like_transformers(early_stopped) -> None:
    (_, hf_out), (_, hfl_out) = early_stopped["hf"], early_stopped["hfl"]
    for name in ("checkpoint-2", "checkpoint-3"):
        ours, theirs = _trainer_state(hfl_out / name), _trainer_state(hf_out / name)
        assert ours == theirs
    stateful = ours["stateful_callbacks"]
    assert stateful["EarlyStoppingCallback"] == {
        "args": {"early_stopping_patience": 2, "early_stopping_threshold": 1e-4},
        "attributes": {"early_stopping_patience_counter": 2},
    }
    assert stateful["TrainerControl"]["args"]["should_training_stop"] is True


@pytest.mark.parametrize("restore", [True, False], ids=["restored", "not-restored"])
def test_stateful_callbacks_restored_on_resume_like_transformers(early_stopped, restore: bool, tmp_path) -> None:
    runs = {}
    for impl in ("hf", "hfl"):
        checkpoint = early_stopped[impl][1] / "checkpoint-2"  # patience counter 1 of 2 there
        callback = EarlyStoppingCallback(early_stopping_patience=4)
        trainer = _make_trainer(
            impl, tmp_path / impl, [callback], restore_callback_states_from_checkpoint=restore, **EARLY
        )
        trainer.train(resume_from_checkpoint=str(checkpoint))
        runs[impl] = trainer
    hf, hfl = runs["hf"], runs["hfl"]
    assert hfl.state.global_step == hf.state.global_step == (3 if restore else 6)
    assert hfl.callback_handler.callback_list == hf.callback_handler.callback_list

    def early(trainer: Any) -> dict:
        return next(vars(cb) for cb in trainer.callback_handler.callbacks if isinstance(cb, EarlyStoppingCallback))

    assert early(hfl) == early(hf)
    assert early(hfl)["early_stopping_patience"] == (2 if restore else 4)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("restore", [True, False], ids=["restored", "not-restored"])
def test_resume_without_a_checkpointed_stateful_callback_warns_like_transformers(
    early_stopped, restore: bool, tmp_path
) -> None:
    """The checkpoint holds EarlyStoppingCallback's state, the resumed run has no such callback: transformers warns
    when it restores callback states (`restore_callback_states_from_checkpoint`), and only then; so do we."""
    warned = {}
    for impl in ("hf", "hfl"):
        records = _Records()
        loggers = [logging.getLogger(name) for name in ("transformers", "hf_lightning")]
        for logger in loggers:
            logger.addHandler(records)
        try:
            trainer = _make_trainer(impl, tmp_path / impl, [], restore_callback_states_from_checkpoint=restore, **EARLY)
            trainer.train(resume_from_checkpoint=str(early_stopped[impl][1] / "checkpoint-2"))
        finally:
            for logger in loggers:
                logger.removeHandler(records)
        warned[impl] = [m for m in records.messages if "callbacks not included" in m]
    assert warned["hf"] == warned["hfl"]
    assert warned["hfl"] == (
        ["Checkpoint included callbacks not included in current configuration. Ignoring. (EarlyStoppingCallback)"]
        if restore
        else []
    )


# ---- 3. add / pop / remove and the default list ------------------------------------------------------------


class Marker(TrainerCallback):
    pass


def _callback_calls(trainer: Any) -> list:
    marker = Marker()
    seen: list = [trainer.callback_handler.callback_list]
    trainer.add_callback(PrinterCallback)
    trainer.add_callback(marker)
    trainer.add_callback(Marker)
    seen.append(trainer.callback_handler.callback_list)
    seen.append(type(trainer.pop_callback(ProgressCallback)).__name__)
    seen.append(trainer.pop_callback(marker) is marker)
    seen.append(trainer.pop_callback(marker))
    trainer.remove_callback(DefaultFlowCallback)
    trainer.remove_callback(Marker)
    trainer.remove_callback(EarlyStoppingCallback)
    seen.append(type(trainer.pop_callback(PrinterCallback)).__name__)
    seen.append(trainer.callback_handler.callback_list)
    return seen


def test_add_pop_remove_callback_like_transformers(tmp_path) -> None:
    calls = {}
    for impl in ("hf", "hfl"):
        trainer = _make_trainer(impl, tmp_path / impl, [EarlyStoppingCallback, Marker()], disable_tqdm=False)
        calls[impl] = _callback_calls(trainer)
    assert calls["hfl"] == calls["hf"]
    assert calls["hf"][0].splitlines() == ["DefaultFlowCallback", "EarlyStoppingCallback", "Marker", "ProgressCallback"]


@pytest.mark.parametrize("where", ["terminal", "no-tqdm", "notebook"])
def test_default_callbacks_match_transformers(where: str, tmp_path, monkeypatch) -> None:
    if where == "notebook":
        try:
            from transformers.utils.notebook import NotebookProgressCallback
        except ImportError:  # no IPython here: a stand-in module with the same class name
            notebook = types.ModuleType("transformers.utils.notebook")
            NotebookProgressCallback = type("NotebookProgressCallback", (ProgressCallback,), {})
            notebook.NotebookProgressCallback = NotebookProgressCallback
            monkeypatch.setitem(sys.modules, "transformers.utils.notebook", notebook)
        # HF picks its progress callback when `transformers.trainer` is imported; we pick it per Trainer.
        monkeypatch.setattr(transformers.trainer, "DEFAULT_PROGRESS_CALLBACK", NotebookProgressCallback)
        monkeypatch.setattr(hfl_callbacks, "is_in_notebook", lambda: True)
    lists = {}
    for impl in ("hf", "hfl"):
        trainer = _make_trainer(impl, tmp_path / impl, disable_tqdm=where == "no-tqdm")
        lists[impl] = trainer.callback_handler.callback_list
    assert lists["hfl"] == lists["hf"]
    expected = {"terminal": "ProgressCallback", "no-tqdm": "PrinterCallback", "notebook": "NotebookProgressCallback"}
    assert lists["hfl"].splitlines() == ["DefaultFlowCallback", expected[where]]


# ---- 4. Lightning callbacks --------------------------------------------------------------------------------


class BatchRecorder(pl.Callback):
    """A Lightning callback: records (epoch, batch index) at every `on_train_batch_end`."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
        self.batches.append((trainer.current_epoch, idx))


class Unused(pl.Callback):
    pass


def test_lightning_callbacks_run_in_the_lightning_trainer(tmp_path) -> None:
    hf_events, batches, lr_monitor = EventRecorder(), BatchRecorder(), LearningRateMonitor(logging_interval="step")
    trainer = _make_trainer(
        "hfl", tmp_path, [hf_events, batches, Unused], report_to="csv", gradient_accumulation_steps=2, warmup_steps=2
    )
    trainer.add_callback(lr_monitor)
    assert isinstance(trainer.pop_callback(Unused), Unused)
    assert trainer.callback_handler.callback_list.splitlines() == [
        "DefaultFlowCallback",
        "LightningLoggersCallback",
        "EventRecorder",
        "PrinterCallback",
    ]
    trainer.train()
    lightning_callbacks = trainer.lightning_trainer.callbacks
    assert batches in lightning_callbacks and lr_monitor in lightning_callbacks
    assert not any(isinstance(cb, Unused) for cb in lightning_callbacks)
    # one Lightning batch per micro-batch (5 per epoch), one HF step per accumulation window (3 per epoch)
    assert batches.batches == [(epoch, i) for epoch in range(2) for i in range(5)]
    assert sum(e[0] == "on_step_end" for e in hf_events.events) == 6
    with open(tmp_path / "csv_logs" / "metrics.csv") as f:
        rates = [float(r["lr-AdamW/pg1"]) for r in csv.DictReader(f) if r.get("lr-AdamW/pg1")]
    assert len(rates) == 10 and rates[0] == 0.0 and max(rates) == pytest.approx(1e-3)


# ---- 6. report_to -> Lightning loggers ---------------------------------------------------------------------


def _scalars(event_dir: str, text: bool = False) -> Any:
    """The (step, value) series of each scalar tag in a TensorBoard folder (or, with `text`, the text tags)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(event_dir)
    acc.Reload()
    if text:
        return {t for t in acc.Tags()["tensors"] if t.endswith("text_summary")}
    tags = [t for t in acc.Tags()["scalars"] if not any(s in t for s in SPEED)]
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags}


def test_report_to_tensorboard_and_csv_get_what_transformers_logs(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    job = dict(n_eval=8, eval_strategy="steps", eval_steps=2, gradient_accumulation_steps=2, logging_steps=2)
    hf = run_job("hf", str(tmp_path / "hf"), report_to="tensorboard", **job)
    hfl = run_job("hfl", str(tmp_path / "hfl"), report_to=["tensorboard", "csv"], **job)
    for trainer in (hf, hfl):  # after training too (HF reopens its writer; Lightning has finalized its loggers)
        trainer.evaluate()
    (hf_dir,) = glob.glob(str(tmp_path / "hf" / "runs" / "*"))
    (hfl_dir,) = glob.glob(str(tmp_path / "hfl" / "runs" / "*"))
    ours, theirs = _scalars(hfl_dir), _scalars(hf_dir)
    assert ours == theirs
    assert {"train/loss", "train/grad_norm", "train/learning_rate", "eval/loss", "train/train_loss"} <= set(ours)
    assert [step for step, _ in ours["eval/loss"]] == [2, 4, 6, 6]
    text_tags = {"args/text_summary", "model_config/text_summary"}
    assert _scalars(hfl_dir, text=True) == _scalars(hf_dir, text=True) == text_tags

    with open(tmp_path / "hfl" / "csv_logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    rows = [{k: float(v) for k, v in r.items() if v != "" and not any(s in k for s in SPEED)} for r in rows]
    expected = [{k: float(v) for k, v in e.items()} for e in _logs(hf)]
    assert rows == expected
    assert len(rows) == 3 + 3 + 1 + 1  # train logs, evaluations, summary, evaluate()


def test_tensorboard_dir_from_env_or_v4_logging_dir(tmp_path, monkeypatch) -> None:
    pytest.importorskip("tensorboard")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = _make_trainer("hfl", tmp_path / "out", report_to="tensorboard", logging_dir=str(tmp_path / "v4"))
    trainer.log({"loss": 1.5})
    # `state.epoch` is 0 before training (None before transformers 5.3: then no epoch is logged)
    epoch = {"train/epoch": [(0, 0.0)]} if TrainerState().epoch is not None else {}
    assert _scalars(str(tmp_path / "v4")) == {"train/loss": [(0, 1.5)], **epoch}
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "env"))
    trainer = _make_trainer("hfl", tmp_path / "out", report_to="tensorboard")
    trainer.log({"eval_loss": 0.5})
    assert _scalars(str(tmp_path / "env")) == {"eval/loss": [(0, 0.5)], **epoch}


class _Recording(pl.loggers.Logger):
    """A Lightning logger recording what it is given (named after a real one: the name picks the key style)."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[tuple[int, dict]] = []
        self.hparams: list[dict] = []

    name = "recording"
    version = 0

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.metrics.append((step, metrics))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        self.hparams.append(params)


@pytest.mark.parametrize(("backend", "rewritten"), [("MLFlowLogger", False), ("WandbLogger", True)])
def test_lightning_loggers_get_transformers_names(backend: str, rewritten: bool, tmp_path) -> None:
    """HF's WandbCallback renames keys like its TensorBoard callback (`rewrite_logs`); its MLflow one keeps them."""
    from transformers.integrations.integration_utils import rewrite_logs

    lg = type(backend, (_Recording,), {})()
    # before the printer callback (which pops `total_flos`), where `report_to` puts it
    reporter = hfl_reporting.LightningLoggersCallback([lg])
    trainer = _make_trainer("hfl", tmp_path, [reporter], gradient_accumulation_steps=2, max_steps=2)
    trainer.train()
    trainer.log({"eval_loss": 0.5, "note": "text"})
    assert lg.hparams[0]["learning_rate"] == 1e-3 and lg.hparams[0]["output_dir"] == str(tmp_path)
    history = trainer.state.log_history
    logged = [{k: float(v) for k, v in e.items() if k not in ("step", "note")} for e in history]
    assert lg.metrics == [(e["step"], rewrite_logs(d) if rewritten else d) for e, d in zip(history, logged)]
    last = {"eval_loss": 0.5, "epoch": 0.8}  # 4 of 5 batches
    assert lg.metrics[-1] == (2, rewrite_logs(last) if rewritten else last)


@pytest.mark.parametrize(
    ("report_to", "expected"),
    [("none", []), ([], []), ("csv", ["csv"]), (["csv", "tensorboard"], ["csv", "tensorboard"])],
)
def test_report_to_names(report_to: Any, expected: list[str]) -> None:
    assert hfl_reporting.report_to_names(report_to) == expected


def test_report_to_all_is_transformers_list(tmp_path) -> None:
    from transformers.integrations.integration_utils import get_available_reporting_integrations

    available = get_available_reporting_integrations()
    assert hfl_reporting.report_to_names("all") == available
    trainer = _make_trainer("hfl", tmp_path, report_to="all")
    hf = _make_trainer("hf", tmp_path / "hf", report_to="all")
    assert trainer.callback_handler.callback_list == hf.callback_handler.callback_list  # transformers' reporters
    assert [lg.name for lg in trainer.report_loggers] == available  # and a Lightning logger over each
    assert hfl_reporting.hf_integration_callbacks(["comet_ml"])[0].__name__ == "CometCallback"


@pytest.mark.parametrize("name", ["mlflow", "wandb", "tensorboard"])
def test_report_to_missing_package_names_the_extra(name: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(hfl_reporting, "_installed", lambda module: False)
    with pytest.raises(ImportError, match=rf"pip install 'hf_lightning\[{name}\]'"):
        _make_trainer("hfl", tmp_path, report_to=["csv", name])


def test_report_to_unknown_name(tmp_path) -> None:
    with pytest.raises(ValueError, match="report_to.*carrier_pigeon"):
        _make_trainer("hfl", tmp_path, report_to="carrier_pigeon")


# ---- 7. log levels -----------------------------------------------------------------------------------------


@pytest.fixture
def restore_log_levels():
    levels = hf_logging.get_verbosity(), logging.getLogger("lightning.pytorch").level
    yield
    hf_logging.set_verbosity(levels[0])
    logging.getLogger("lightning.pytorch").setLevel(levels[1])


@pytest.mark.parametrize("log_level", ["info", "error", "passive"])
def test_log_level_like_transformers(log_level: str, tmp_path, restore_log_levels) -> None:
    levels = {}
    for impl in ("hf", "hfl"):
        hf_logging.set_verbosity(logging.CRITICAL)
        _make_trainer(impl, tmp_path / impl, log_level=log_level)
        levels[impl] = hf_logging.get_verbosity()
    expected = {"info": logging.INFO, "error": logging.ERROR, "passive": logging.CRITICAL}[log_level]
    assert levels["hfl"] == levels["hf"] == expected
    assert logging.getLogger("lightning.pytorch").level == expected


@pytest.mark.parametrize(
    ("rank", "local_rank", "log_on_each_node", "expected"),
    [
        (0, 0, True, logging.INFO),
        (1, 0, True, logging.INFO),  # main process of node 1 logs when log_on_each_node
        (1, 0, False, logging.ERROR),
        (3, 1, True, logging.ERROR),
    ],
)
def test_log_level_replica_and_log_on_each_node(
    rank: int, local_rank: int, log_on_each_node: bool, expected: int, monkeypatch, restore_log_levels
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    args = hf_lightning.TrainingArguments(
        "unused", log_level="info", log_level_replica="error", log_on_each_node=log_on_each_node, use_cpu=True
    )
    assert hfl_callbacks.set_log_levels(args) == expected
    assert hf_logging.get_verbosity() == expected
    assert logging.getLogger("lightning.pytorch").level == expected
