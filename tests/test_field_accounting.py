"""`hf_lightning.field_accounting`: every `TrainingArguments` field of the installed transformers is honoured, mapped
or refused, and each row's claim is checked (its test exists, transformers still reads the field, a refusal names it).

Also here: the differential tests that are the evidence for honoured fields no other test exercises.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import math
from pathlib import Path
from typing import Any

import datasets
import pytest
import torch
import transformers
from helpers import (
    ToyClassification,
    assert_same_weights,
    make_args,
    run_job,
    tiny_bert,
    train_logs,
    trainer_classes,
)

import hf_lightning
from hf_lightning import compat, field_accounting
from hf_lightning.field_accounting import FIELDS, Treatment
from hf_lightning.training_args import LEGACY_FIELDS

TESTS = Path(__file__).resolve().parent


def _installed_fields() -> list[str]:
    """The fields of the installed `transformers.Seq2SeqTrainingArguments` (a superset of `TrainingArguments`'),
    minus the v4 names hf_lightning translates itself (real fields in older transformers)."""
    return [f.name for f in dataclasses.fields(transformers.Seq2SeqTrainingArguments) if f.name not in LEGACY_FIELDS]


def _rows(*treatments: Treatment) -> list[str]:
    return [name for name, row in FIELDS.items() if row.treatment in treatments]


def test_every_field_of_the_installed_transformers_is_accounted_for() -> None:
    unclassified = [name for name in _installed_fields() if name not in FIELDS]
    assert not unclassified, (
        f"transformers {transformers.__version__} has TrainingArguments fields hf_lightning does not account for: "
        f"{unclassified}. Honour, map or refuse each one in hf_lightning/field_accounting.py."
    )


def _test_sources(file: str) -> tuple[str, dict[str, str]]:
    source = (TESTS / file).read_text()
    lines = source.splitlines()
    functions = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            functions[node.name] = "\n".join(lines[start - 1 : node.end_lineno])
    return source, functions


@pytest.mark.parametrize("name", _rows(Treatment.HONOURED, Treatment.MAPPED))
def test_evidence_test_exists_and_exercises_the_field(name: str) -> None:
    file, _, function = FIELDS[name].evidence.partition("::")
    module_source, functions = _test_sources(file)
    assert function in functions, f"`{name}`: evidence {FIELDS[name].evidence} does not exist"
    assert name in functions[function] or name in module_source, f"{FIELDS[name].evidence} never mentions `{name}`"


# Where releases before the move kept the code a row names (`hf_lightning.compat` runs that code there).
_EVIDENCE_BEFORE_MOVE = {"transformers.trainer_optimizer": "transformers.trainer:Trainer.get_optimizer_cls_and_kwargs"}


@pytest.mark.parametrize("name", _rows(Treatment.TRANSFORMERS))
def test_transformers_code_still_reads_the_field(name: str) -> None:
    """Canary: the transformers code the row relies on still mentions the field (a move or rename fails here)."""
    if not compat.has_training_argument(name) and name not in _installed_fields():
        pytest.skip(f"`{name}` is not a field of transformers {transformers.__version__}")
    evidence = FIELDS[name].evidence
    if importlib.util.find_spec(evidence.partition(":")[0]) is None and evidence in _EVIDENCE_BEFORE_MOVE:
        evidence = _EVIDENCE_BEFORE_MOVE[evidence]
    module_name, _, qualname = evidence.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in filter(None, qualname.split(".")):
        target = getattr(target, part)
    target = target.fget if isinstance(target, property) else target
    assert name in inspect.getsource(target), f"{evidence} no longer reads `{name}`"


@pytest.mark.parametrize("name", _rows(Treatment.REQUIRES))
def test_dependent_fields_name_an_accounted_switch(name: str) -> None:
    switch = FIELDS[name].evidence
    assert switch in FIELDS and FIELDS[switch].treatment is not Treatment.REQUIRES


@pytest.mark.parametrize("name", _rows(Treatment.REFUSED))
def test_refused_field_fails_naming_it(name: str, tmp_path: Path) -> None:
    cls = hf_lightning.Seq2SeqTrainingArguments if name == "predict_with_generate" else hf_lightning.TrainingArguments
    with pytest.raises(ValueError, match=f"`{name}`"):
        cls(str(tmp_path), report_to="none", **{name: FIELDS[name].probe})
    cls(str(tmp_path), report_to="none")  # the default is accepted


def test_a_field_newer_than_hf_lightning_is_refused_when_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transformers release adding an argument this table lacks: setting it fails with a message naming it; the
    default is accepted (`eval_delay` stands in for the unknown field)."""
    monkeypatch.delitem(field_accounting.FIELDS, "eval_delay")
    hf_lightning.TrainingArguments(str(tmp_path), report_to="none")
    with pytest.raises(ValueError, match="`eval_delay`=3.*does not know"):
        hf_lightning.TrainingArguments(str(tmp_path), report_to="none", eval_delay=3)


def test_defaults_normalised_by_transformers_are_not_refused(tmp_path: Path) -> None:
    """`transformers.TrainingArguments` turns `debug=""` into `[]` and `accelerator_config=None` into an
    `AcceleratorConfig`; converting its arguments must not read those as set."""
    hf_args = transformers.TrainingArguments(str(tmp_path), report_to="none", accelerator_config={"even_batches": True})
    hf_lightning.Trainer(model=tiny_bert(), args=hf_args)


# ---- evidence for honoured fields ----------------------------------------------------------------------------------

HONOURED_JOBS = {
    "per_device_train_batch_size": dict(per_device_train_batch_size=3),
    "learning_rate": dict(learning_rate=3e-4),
    "lr_scheduler_kwargs": dict(lr_scheduler_type="cosine_with_restarts", lr_scheduler_kwargs={"num_cycles": 3}),
    "adam_beta1": dict(adam_beta1=0.5),
    "adam_beta2": dict(adam_beta2=0.9),
    "adam_epsilon": dict(adam_epsilon=1e-2),
    "data_seed": dict(data_seed=7),
    "seed": dict(seed=7),
}


@pytest.mark.parametrize("field", sorted(HONOURED_JOBS))
def test_honoured_field_trains_like_transformers(field: str, tmp_path: Path) -> None:
    """The field changes the job (against the defaults) and both trainers change it the same way."""
    overrides = dict(max_steps=4, **HONOURED_JOBS[field])
    hf = run_job("hf", str(tmp_path / "hf"), **overrides)
    hfl = run_job("hfl", str(tmp_path / "hfl"), **overrides)
    assert_same_weights(hf.model, hfl.model)
    assert train_logs(hf) == train_logs(hfl)
    baseline = run_job("hf", str(tmp_path / "default"), max_steps=4)
    assert train_logs(baseline) != train_logs(hf), f"`{field}` had no effect on the job"


DATALOADER_FIELDS = dict(
    dataloader_num_workers=2,
    dataloader_pin_memory=False,
    dataloader_persistent_workers=True,
    dataloader_prefetch_factor=3,
    dataloader_multiprocessing_context="spawn",
    dataloader_in_order=False,
)


def test_dataloader_fields_build_the_loader_transformers_builds(tmp_path: Path) -> None:
    """Every `dataloader_*` option ends up on the train and eval loaders as transformers puts it there."""
    loaders = {}
    fields = {k: v for k, v in DATALOADER_FIELDS.items() if compat.has_training_argument(k)}  # two came in 5.15
    for impl in ("hf", "hfl"):
        trainer_cls = transformers.Trainer if impl == "hf" else hf_lightning.Trainer
        args = make_args(impl, str(tmp_path / impl), **fields)
        trainer = trainer_cls(
            model=tiny_bert(), args=args, train_dataset=ToyClassification(8), eval_dataset=ToyClassification(4)
        )
        loaders[impl] = (trainer.get_train_dataloader(), trainer.get_eval_dataloader())
    attributes = ("num_workers", "pin_memory", "persistent_workers", "prefetch_factor", "in_order")
    for hf_loader, loader in zip(loaders["hf"], loaders["hfl"]):
        for attribute in attributes:
            assert getattr(loader, attribute) == getattr(hf_loader, attribute), attribute
        if "dataloader_multiprocessing_context" in fields:
            assert loader.multiprocessing_context.get_start_method() == "spawn"
            assert hf_loader.multiprocessing_context.get_start_method() == "spawn"
        assert (loader.num_workers, loader.prefetch_factor) == (2, 3)
        assert loader.in_order == fields.get("dataloader_in_order", True)


class _InfLossAt:
    """A `compute_loss_func` whose loss reads +inf on the given calls; the gradients stay the model loss's."""

    def __init__(self, calls: set[int]) -> None:
        self.calls, self.count = calls, 0

    def __call__(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        self.count += 1
        loss = torch.nn.functional.cross_entropy(outputs["logits"], labels)
        return loss + torch.tensor(float("inf")) if self.count in self.calls else loss


@pytest.mark.parametrize("nan_inf_filter", [True, False])
def test_logging_nan_inf_filter_matches_transformers(nan_inf_filter: bool, tmp_path: Path) -> None:
    logs = {}
    for impl in ("hf", "hfl"):
        trainer = run_job(
            impl,
            str(tmp_path / impl),
            max_steps=5,
            logging_steps=2,
            logging_nan_inf_filter=nan_inf_filter,
            trainer_kwargs={"compute_loss_func": _InfLossAt({2, 4})},
        )
        logs[impl] = train_logs(trainer)
    assert repr(logs["hfl"]) == repr(logs["hf"])  # NaN-aware: an unfiltered inf turns the next window's mean into NaN
    assert all(math.isfinite(e["loss"]) for e in logs["hf"]) is nan_inf_filter


@pytest.mark.parametrize("nan_inf_filter", [True, False])
def test_eval_loss_nan_inf_filter_matches_transformers(nan_inf_filter: bool, tmp_path: Path) -> None:
    """`eval_loss` when one evaluation batch's loss is infinite: the installed transformers leaves that batch out
    under `logging_nan_inf_filter` (from 5.23) or averages it in (before, and without the filter); hf_lightning too."""
    eval_loss = {}
    for impl in ("hf", "hfl"):
        Trainer, _ = trainer_classes(impl)
        args = make_args(
            impl, str(tmp_path / impl), per_device_eval_batch_size=4, logging_nan_inf_filter=nan_inf_filter
        )
        trainer = Trainer(
            model=tiny_bert(), args=args, eval_dataset=ToyClassification(12, seed=2), compute_loss_func=_InfLossAt({2})
        )
        eval_loss[impl] = trainer.evaluate()["eval_loss"]
    assert repr(eval_loss["hfl"]) == repr(eval_loss["hf"])
    if not nan_inf_filter:
        assert eval_loss["hf"] == float("inf")


def test_remove_unused_columns_like_transformers(tmp_path: Path) -> None:
    """A `datasets.Dataset` column the model's forward does not name is dropped before collation (the job equals
    transformers'); with `remove_unused_columns=False` the batches keep it, in both trainers."""
    toy = ToyClassification(12, seed=1)
    rows = [toy[i] for i in range(len(toy))]
    columns = {k: [r[k].tolist() for r in rows] for k in rows[0]}
    with_idx = datasets.Dataset.from_dict({**columns, "idx": list(range(len(rows)))})
    trained = {impl: run_job(impl, str(tmp_path / impl), max_steps=3, train_dataset=with_idx) for impl in ("hf", "hfl")}
    assert_same_weights(trained["hf"].model, trained["hfl"].model)
    for remove in (True, False):
        keys = {}
        for impl in ("hf", "hfl"):
            trainer_cls = transformers.Trainer if impl == "hf" else hf_lightning.Trainer
            args = make_args(impl, str(tmp_path / f"{impl}-{remove}"), remove_unused_columns=remove)
            trainer = trainer_cls(model=tiny_bert(), args=args, train_dataset=with_idx)
            keys[impl] = set(next(iter(trainer.get_train_dataloader())))
        assert keys["hfl"] == keys["hf"]
        assert ("idx" in keys["hf"]) is not remove


def test_greater_is_better_picks_the_checkpoint_transformers_picks(tmp_path: Path) -> None:
    """`greater_is_better=True` on `eval_loss` keeps the worst-loss checkpoint as the best, in both trainers."""
    overrides = dict(
        num_train_epochs=3,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="loss",
        greater_is_better=True,
        learning_rate=1e-2,
    )
    hf = run_job("hf", str(tmp_path / "hf"), n_eval=6, **overrides)
    hfl = run_job("hfl", str(tmp_path / "hfl"), n_eval=6, **overrides)
    assert Path(hf.state.best_model_checkpoint).name == Path(hfl.state.best_model_checkpoint).name
    assert hf.state.best_metric == hfl.state.best_metric
    eval_losses = [e["eval_loss"] for e in hf.state.log_history if "eval_loss" in e]
    assert hf.state.best_metric == max(eval_losses) != min(eval_losses)
    assert_same_weights(hf.model, hfl.model)


def test_run_name_reaches_the_integration_callbacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run_name` is read by transformers' integration callbacks (the W&B and MLflow run name); both trainers hand
    them the same `args` (W&B stood in for by a recording callback, so the test needs no wandb)."""
    from transformers import TrainerCallback
    from transformers.integrations import integration_utils

    from hf_lightning import reporting

    seen: list[tuple[str, str]] = []

    class WandbStandIn(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            seen.append((type(args).__module__.split(".")[0], args.run_name))

    monkeypatch.setattr(reporting, "_installed", lambda module: True)
    monkeypatch.setitem(integration_utils.INTEGRATION_TO_CALLBACK, "wandb", WandbStandIn)
    for impl in ("hf", "hfl"):
        run_job(impl, str(tmp_path / impl), report_to="wandb", run_name="exp-1", max_steps=1)
    assert seen == [("transformers", "exp-1"), ("hf_lightning", "exp-1")]
