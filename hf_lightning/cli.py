"""hf_lightning from `LightningCLI`: an HF model, HF training arguments and a text dataset, all from a YAML file.

`HFModelModule` and `HFTextDataModule` are `HFLightningModule.from_args(...)` and `HFDataModule` with constructors
that jsonargparse fills from a config: the model is a name or path (loaded with the `AutoModelFor...` class of
`task`) or a `class_path`/`init_args` spec, the HF `TrainingArguments` are a nested `args:` mapping, and the data are
files or a dataset name for `datasets.load_dataset`, tokenized with a tokenizer name or path. `HFLightningCLI` is a
`LightningCLI` with those defaults, `HFCheckpoint` as a configurable `checkpoint:` group and the settings the HF
pieces need::

    python -m hf_lightning.cli fit --config config.yaml
    python -m hf_lightning.cli fit --help

The loss, optimiser, schedule, samplers, collator and accumulation windows are HF's (from `model.args`); the step
budget, devices, strategy, precision, loggers and validation loop are Lightning's (`trainer:`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any, Literal

import datasets
import lightning.pytorch as pl
import transformers
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase, TrainerCallback

from hf_lightning.datamodule import HFDataModule
from hf_lightning.hf_checkpoint import HFCheckpoint
from hf_lightning.hf_loop import HFTrainingLoop
from hf_lightning.lightning_kwargs import map_into_arguments
from hf_lightning.module import HFLightningModule
from hf_lightning.training_args import DEFAULT_OUTPUT_DIR, TrainingArguments, to_hf_lightning_args
from hf_lightning.translation import lightning_trainer_kwargs

__all__ = [
    "TASKS",
    "HFLightningCLI",
    "HFModelModule",
    "HFTextDataModule",
    "load_model",
    "main",
    "trainer_settings_from_args",
]

# `task` -> the `transformers` auto class that loads a model given by name or path (the pipeline task names).
TASKS = {
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "multiple-choice": "AutoModelForMultipleChoice",
    "fill-mask": "AutoModelForMaskedLM",
    "text-generation": "AutoModelForCausalLM",
    "text2text-generation": "AutoModelForSeq2SeqLM",
}
Task = Literal[tuple(TASKS)]  # type: ignore[valid-type]  # jsonargparse checks the config value against it

# `datasets.load_dataset` builders for data file extensions (`dataset` unset).
_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".txt": "text"}


def load_model(name_or_path: str | os.PathLike, task: str = "text-classification", **model_kwargs: Any) -> nn.Module:
    """`AutoModelFor<task>.from_pretrained(name_or_path, **model_kwargs)` (`num_labels=5`, `id2label`, ...)."""
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {list(TASKS)}, got {task!r}.")
    return getattr(transformers, TASKS[task]).from_pretrained(name_or_path, **model_kwargs)


class HFModelModule(HFLightningModule):
    """An HF model trained with HF's loss, optimiser and schedule from `args`, built from a config.

    Args:
        model: a local folder or hub name, loaded by the auto class of `task` with `model_kwargs`; or a module
            (in YAML a `class_path`/`init_args` spec such as `transformers.BertForSequenceClassification` with its
            `config`), built under Lightning's `seed_everything`.
        args: HF's `TrainingArguments` (in YAML a mapping of its fields); default `TrainingArguments("tmp_trainer")`.
            As `transformers.Trainer` does, the module sets `args.seed` once the model is built.
        task: which `AutoModelFor...` class loads a model given by name: one of `TASKS`.
        model_kwargs: keyword arguments of `from_pretrained` (only with a model given by name or path).
        compute_loss_func: HF's `compute_loss_func(outputs, labels, num_items_in_batch=...)` (an import path in YAML).
        compute_metrics: HF's `compute_metrics(EvalPrediction) -> dict` for every evaluation (an import path in YAML).
        callbacks: HF `TrainerCallback`s, fired at HF's events.
    """

    def __init__(
        self,
        model: nn.Module | str | os.PathLike,
        args: TrainingArguments | None = None,
        task: Task = "text-classification",
        model_kwargs: dict[str, Any] | None = None,
        compute_loss_func: Callable | None = None,
        compute_metrics: Callable | None = None,
        callbacks: list[TrainerCallback] | None = None,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"`task` must be one of {list(TASKS)}, got {task!r}.")
        if isinstance(model, (str, os.PathLike)):
            model = load_model(model, task, **(model_kwargs or {})).train()  # `from_pretrained` returns eval mode
        elif not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be an `nn.Module` or a model name or path, got {type(model).__name__}.")
        elif model_kwargs:
            raise ValueError("`model_kwargs` apply to a model given by name or path, not to a built `model`.")
        args = to_hf_lightning_args(args if args is not None else TrainingArguments(output_dir=DEFAULT_OUTPUT_DIR))
        loop = HFTrainingLoop.for_lightning_trainer(
            model, args, compute_loss_func=compute_loss_func, compute_metrics=compute_metrics, callbacks=callbacks
        )
        super().__init__(model, loop)

    @property
    def args(self) -> TrainingArguments:
        """The HF `TrainingArguments` of the run."""
        return self.loop.args


class HFTextDataModule(pl.LightningDataModule):
    """Text (or text-pair) classification data from files or a dataset name, served by `HFDataModule`.

    The splits come from `datasets.load_dataset(dataset or <file type>, dataset_config, data_files=data_files,
    split=train_split / eval_split / test_split)` (split expressions such as `"train[:90%]"` work), are tokenized with
    `tokenizer` (truncated to `max_length`) and keep the label column as `labels`; string labels become class ids
    in sorted order (`label_names`). The loaders are `HFDataModule`'s: HF's sampler, collator (dynamic padding) and
    accumulation windows, sharded over the ranks. Override `load_splits` to bring other data.

    Args:
        tokenizer: a tokenizer, or a local folder or hub name for `AutoTokenizer.from_pretrained`; it is the
            `processing_class` that `HFCheckpoint` saves.
        data_files: a file, a list of files or a `{split: files}` mapping.
        dataset: a `load_dataset` path (hub name, folder, or builder like `json`); default: from the file type.
        test_split: the split of `trainer.test` (metrics prefixed `test_`) and `trainer.predict` (logits); its label
            column may be missing (then `test` gives no loss).
        args: HF `TrainingArguments`; default: those of the `HFModelModule` being trained.
    """

    def __init__(
        self,
        tokenizer: str | os.PathLike | PreTrainedTokenizerBase,
        data_files: str | list[str] | dict[str, str | list[str]] | None = None,
        dataset: str | None = None,
        dataset_config: str | None = None,
        train_split: str | None = "train",
        eval_split: str | None = None,
        test_split: str | None = None,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str | None = "label",
        max_length: int | None = None,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        args: TrainingArguments | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if train_split is None and eval_split is None and test_split is None:
            raise ValueError("`HFTextDataModule` needs a `train_split`, an `eval_split` or a `test_split`.")
        limits = {
            "max_length": max_length,
            "max_train_samples": max_train_samples,
            "max_eval_samples": max_eval_samples,
        }
        for name, value in limits.items():
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be >= 1, got {value}.")
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer, **(tokenizer_kwargs or {}))
            if tokenizer.pad_token is None and tokenizer.eos_token is not None:
                tokenizer.pad_token = tokenizer.eos_token  # GPT-2-like tokenizers: batches need a padding token
        self.processing_class = tokenizer
        self.data_files = data_files
        self.dataset = dataset
        self.dataset_config = dataset_config
        self.train_split = train_split
        self.eval_split = eval_split
        self.test_split = test_split
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.label_column = label_column
        self.max_length = max_length
        self.max_train_samples = max_train_samples
        self.max_eval_samples = max_eval_samples
        self.args = to_hf_lightning_args(args) if args is not None else None
        self.cache_dir = cache_dir
        self.label_names: list[str] | None = None
        self.train_dataset: datasets.Dataset | None = None
        self.eval_dataset: datasets.Dataset | None = None
        self.test_dataset: datasets.Dataset | None = None
        self._loaders: HFDataModule | None = None

    # ---- data ------------------------------------------------------------------------------------------

    def _builder(self) -> tuple[str, dict[str, Any]]:
        if self.dataset is not None:
            return self.dataset, {}
        if self.data_files is None:
            raise ValueError("`HFTextDataModule` needs `data_files` or a `dataset` name.")
        files = self.data_files
        first = next(iter(files.values())) if isinstance(files, dict) else files
        first = first[0] if isinstance(first, list) else first
        extension = os.path.splitext(first)[1].lower()
        if extension not in _BUILDERS:
            raise ValueError(
                f"`data_files`: can't tell the format of {first!r} (known: {sorted(_BUILDERS)}); set `dataset` to a "
                "`datasets.load_dataset` builder such as 'json' or 'csv'."
            )
        return _BUILDERS[extension], {"delimiter": "\t"} if extension == ".tsv" else {}

    def _load_split(self, split: str, argument: str) -> datasets.Dataset:
        path, kwargs = self._builder()
        try:
            return datasets.load_dataset(
                path, self.dataset_config, data_files=self.data_files, split=split, cache_dir=self.cache_dir, **kwargs
            )
        except ValueError as err:
            if "split" not in str(err).lower():
                raise
            raise ValueError(f"`{argument}`={split!r}: {err}") from err

    def load_splits(self) -> tuple[datasets.Dataset | None, datasets.Dataset | None]:
        """The raw (train, eval) datasets: `train_split` / `eval_split` of the data (None where not asked for)."""
        train = self._load_split(self.train_split, "train_split") if self.train_split is not None else None
        evals = self._load_split(self.eval_split, "eval_split") if self.eval_split is not None else None
        return train, evals

    def _encode_labels(self, dataset: datasets.Dataset, split: str) -> datasets.Dataset:
        feature = dataset.features[self.label_column]
        if isinstance(feature, datasets.ClassLabel):
            self.label_names = self.label_names or list(feature.names)
        elif getattr(feature, "dtype", None) in ("string", "large_string"):
            if self.label_names is None:
                self.label_names = sorted(set(dataset[self.label_column]))
            unknown = set(dataset[self.label_column]) - set(self.label_names)
            if unknown:
                raise ValueError(
                    f"`label_column`: the {split} split has labels {sorted(unknown)} absent from training."
                )
            dataset = dataset.cast_column(self.label_column, datasets.ClassLabel(names=self.label_names))
        return dataset

    def tokenize(
        self, dataset: datasets.Dataset, split: str, limit: int | None = None, labels_required: bool = True
    ) -> datasets.Dataset:
        """`dataset` tokenized (truncated to `max_length`), with the labels as `labels` and no other column (without
        labels when the split has none and `labels_required` is off)."""
        label_column = self.label_column
        if not labels_required and label_column not in dataset.column_names:
            label_column = None
        names = ("text_column", "text_pair_column", "label_column")
        for name, column in zip(names, (self.text_column, self.text_pair_column, label_column)):
            if column is not None and column not in dataset.column_names:
                raise ValueError(f"`{name}`={column!r} is not a column of the {split} split: {dataset.column_names}.")
        if label_column is not None:  # the label names of the whole split, before `limit`
            dataset = self._encode_labels(dataset, split)
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        tokenizer, pair, text = self.processing_class, self.text_pair_column, self.text_column
        truncation = {"truncation": True, "max_length": self.max_length}

        def encode(batch: dict[str, list]) -> dict[str, Any]:
            return tokenizer(batch[text], batch[pair] if pair is not None else None, **truncation)

        kept = [label_column] if label_column is not None else []
        removed = [c for c in dataset.column_names if c not in kept]
        dataset = dataset.map(encode, batched=True, remove_columns=removed, desc=f"Tokenizing the {split} split")
        if label_column is not None and label_column != "labels":
            dataset = dataset.rename_column(label_column, "labels")
        return dataset

    # ---- Lightning hooks ------------------------------------------------------------------------------

    def _training_args(self) -> TrainingArguments:
        if self.args is not None:
            return self.args
        module = getattr(self.trainer, "lightning_module", None) if self.trainer is not None else None
        args = getattr(getattr(module, "loop", None), "args", None)
        if args is None:
            raise ValueError("`HFTextDataModule` has no `args`: pass `args`, or train an hf_lightning module.")
        return args

    def setup(self, stage: str) -> None:
        """Load and tokenize the splits (once), then build the `HFDataModule` serving them."""
        if self._loaders is None:
            train, evals = self.load_splits()
            if train is not None:
                self.train_dataset = self.tokenize(train, "train", self.max_train_samples)
            if evals is not None:
                self.eval_dataset = self.tokenize(evals, "eval", self.max_eval_samples)
            if self.test_split is not None:
                test = self._load_split(self.test_split, "test_split")
                self.test_dataset = self.tokenize(test, "test", self.max_eval_samples, labels_required=False)
            self._loaders = HFDataModule(
                self._training_args(),
                self.train_dataset,
                self.eval_dataset,
                processing_class=self.processing_class,
                test_dataset=self.test_dataset,
            )
        self._loaders.trainer = self.trainer

    @property
    def data_collator(self) -> Callable | None:
        """The collator of the loaders (`DataCollatorWithPadding` on `processing_class`), once set up."""
        return self._loaders.data_collator if self._loaders is not None else None

    def train_dataloader(self) -> Any:
        """`HFDataModule.train_dataloader`: HF's train loader in accumulation windows."""
        return self._loaders.train_dataloader()

    def val_dataloader(self) -> Any:
        """`HFDataModule.val_dataloader`: HF's sequential eval loader, sharded over the ranks."""
        return self._loaders.val_dataloader()

    def test_dataloader(self) -> Any:
        """`HFDataModule.test_dataloader`: the `test_split`, as HF evaluates it."""
        return self._loaders.test_dataloader()

    def predict_dataloader(self) -> Any:
        """`HFDataModule.predict_dataloader`: the `test_split`, as HF predicts it."""
        return self._loaders.predict_dataloader()


class HFLightningCLI(LightningCLI):
    """`LightningCLI` for HF models: `HFModelModule` + `HFTextDataModule` by default (any other classes may be
    given), plus a `checkpoint:` group configuring the `HFCheckpoint` callback that writes `checkpoint-N/` folders.

    Defaults that differ from `LightningCLI` (each can be set in the config):

    - `trainer.use_distributed_sampler=False`: the data module shards the batches like HF.
    - `trainer.enable_checkpointing=False`: no default `ModelCheckpoint` besides the `HFCheckpoint` folders; on
      when a `ModelCheckpoint` is configured (its `.ckpt` carries the HF state: `fit --ckpt_path` resumes it).
    - `trainer.num_sanity_val_steps=0`: HF evaluates nothing before training, and a sanity pass would draw from the
      RNG and change the dropout masks.
    - `seed_everything=42`: HF's default seed.
    - `trainer.default_root_dir`: `model.args.output_dir`.
    - the step budget: `model.args.max_steps`, else `model.args.num_train_epochs`, unless `trainer.max_steps` or
      `trainer.max_epochs` is given.
    - no `--optimizer`/`--lr_scheduler` groups: the optimiser and schedule are HF's (`args.optim`,
      `args.lr_scheduler_type`).
    - the Lightning fields of `model.args` (`accelerator`, `devices`, `strategy`, `precision` ..., `fp16`/`bf16`,
      HF's `ddp_*`), its `eval_strategy` and `--trainer.gradient_clip_val` / `--trainer.accumulate_grad_batches`: see
      `trainer_settings_from_args`.

    Subcommands: `fit`, `validate` (HF's evaluation of `eval_split`), `test` (of `test_split`, metrics prefixed
    `test_`) and `predict` (HF's `prediction_step` logits of `test_split`).
    """

    def __init__(
        self,
        model_class: type[pl.LightningModule] | Callable[..., pl.LightningModule] | None = HFModelModule,
        datamodule_class: type[pl.LightningDataModule] | Callable[..., pl.LightningDataModule] | None = (
            HFTextDataModule
        ),
        *,
        trainer_defaults: dict[str, Any] | None = None,
        seed_everything_default: bool | int = 42,
        auto_configure_optimizers: bool = False,
        **kwargs: Any,
    ) -> None:
        if importlib.util.find_spec("jsonargparse") is None:
            raise ModuleNotFoundError("`HFLightningCLI` needs jsonargparse: pip install 'hf_lightning[cli]'.")
        defaults = {
            "use_distributed_sampler": False,
            "enable_checkpointing": False,
            "num_sanity_val_steps": 0,
            **(trainer_defaults or {}),
        }
        super().__init__(
            model_class,
            datamodule_class,
            trainer_defaults=defaults,
            seed_everything_default=seed_everything_default,
            auto_configure_optimizers=auto_configure_optimizers,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_lightning_class_args(HFCheckpoint, "checkpoint")

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        """The `lightning.Trainer`, completed from the module's HF arguments (`trainer_settings_from_args`): what the
        config leaves unset comes from them, `--trainer.gradient_clip_val` / `--trainer.accumulate_grad_batches` become
        `max_grad_norm` / `gradient_accumulation_steps`."""
        extra_callbacks = [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        loop = getattr(self.model, "loop", None)
        if loop is not None:
            config.update(trainer_settings_from_args(loop.args, config, loop.model))
        callbacks = list(config.get("callbacks") or []) + extra_callbacks
        if any(isinstance(cb, ModelCheckpoint) for cb in callbacks):
            config["enable_checkpointing"] = True  # the user's ModelCheckpoint (its `.ckpt` carries the HF state)
        return self._instantiate_trainer(config, extra_callbacks)


# `TrainingArguments` fields that are Lightning `Trainer` arguments, with the value Lightning's config has when unset.
_LIGHTNING_FIELDS = {
    "accelerator": "auto",
    "devices": "auto",
    "num_nodes": 1,
    "strategy": "auto",
    "precision": None,
    "plugins": None,
}


def trainer_settings_from_args(
    args: TrainingArguments, trainer_config: dict[str, Any], model: nn.Module | None = None
) -> dict[str, Any]:
    """`lightning.Trainer` settings from HF's arguments, for what `trainer_config` leaves unset (a value set on both
    sides that disagrees raises):

    - `default_root_dir` = `output_dir`; the budget: `max_steps` if set, else `num_train_epochs` (whole epochs:
      Lightning has no fractional epochs);
    - the Lightning fields of the arguments (`accelerator`, `devices`, `num_nodes`, `strategy`, `precision`,
      `plugins`), translated as `hf_lightning.Trainer` translates them (`use_cpu`, `fp16`/`bf16`, HF's `ddp_*` /
      `fsdp` / `deepspeed` ...);
    - `eval_strategy` other than "no": HF evaluates on its schedule (on the validation data), so Lightning's own
      validation loop is off during `fit` (`limit_val_batches=0`) and its callbacks are told the cadence;
    - `gradient_clip_val` / `accumulate_grad_batches` / `gradient_clip_algorithm` in the config are HF's
      `max_grad_norm` / `gradient_accumulation_steps` (set on `args`) and left unset for Lightning, which cannot
      apply them under manual optimisation.

    `report_to` needs no setting: the module's loop sends every log to its loggers and to the trainer's."""
    settings: dict[str, Any] = {}
    if trainer_config.get("default_root_dir") is None:
        settings["default_root_dir"] = args.output_dir
    if trainer_config.get("max_steps", -1) == -1 and trainer_config.get("max_epochs") is None:
        if args.max_steps > 0:
            settings["max_steps"] = args.max_steps
        elif float(args.num_train_epochs).is_integer():
            settings["max_epochs"] = int(args.num_train_epochs)
        else:
            raise ValueError(
                f"`args.num_train_epochs`={args.num_train_epochs}: Lightning runs whole epochs; set "
                "`trainer.max_steps` or `trainer.max_epochs`."
            )
    hf_owned = ("gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches")
    map_into_arguments(args, {k: trainer_config[k] for k in hf_owned if k in trainer_config}, hf_owned)
    settings.update(gradient_clip_val=None, gradient_clip_algorithm=None, accumulate_grad_batches=1)
    translated = lightning_trainer_kwargs(args, model)
    for name, unset in _LIGHTNING_FIELDS.items():
        ours, theirs = translated[name], trainer_config.get(name, unset)
        if ours == unset or (name == "precision" and ours == "32-true"):
            continue
        if theirs not in (unset, ours):
            raise ValueError(
                f"`model.args` asks for {name}={ours!r} and `trainer.{name}`={theirs!r}: set only one of them."
            )
        settings[name] = ours
    if str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "no":
        if trainer_config.get("limit_val_batches") is None:
            settings["limit_val_batches"] = 0
        if trainer_config.get("val_check_interval") is None and trainer_config.get("check_val_every_n_epoch", 1) == 1:
            settings["check_val_every_n_epoch"] = translated["check_val_every_n_epoch"]
            settings["val_check_interval"] = translated["val_check_interval"]
    return settings


def main(args: Any = None) -> HFLightningCLI:
    """`python -m hf_lightning.cli {fit,validate,test,predict} --config config.yaml ...`; `args` replace
    `sys.argv[1:]`."""
    return HFLightningCLI(args=args)


if __name__ == "__main__":
    main()
