"""Pushing to the Hugging Face Hub: `push_to_hub`, `hub_strategy`, the model card, as `transformers.Trainer` does.

With `push_to_hub=True` the repo (`hub_model_id`, else the name of `output_dir`) is created when the Trainer is built
(on the main process only), so a missing network, `HF_HUB_OFFLINE=1` or a refused token stops the script there,
before any training, with a `HubRepoError` naming the cause. Then, by `hub_strategy`:

* `every_save`: each saved checkpoint's model files are copied to `output_dir` and `output_dir` is uploaded (without
  the `checkpoint-*` folders) in the background; a save while the previous upload still runs skips its push unless
  `hub_always_push`;
* `checkpoint`: the same, plus the checkpoint itself uploaded as `last-checkpoint/` (resumable from the Hub);
* `all_checkpoints`: the same, each checkpoint uploaded under its own name;
* `end`: nothing during training.

`trainer.push_to_hub()` saves the model, writes the model card (`create_model_card`: the training results table
from `log_history`, hyperparameters, framework versions; `transformers.modelcard.TrainingSummary`, so the card reads
as transformers writes it) and uploads `output_dir` (`hub_revision`, `hub_token`, `hub_private_repo`); a user's
`save_model()` pushes too. Training waits at its end for the background uploads. All uploads go through
`huggingface_hub.HfApi` and only the world's process 0 uploads.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from transformers.modelcard import TrainingSummary
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, HubStrategy, SaveStrategy
from transformers.utils import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_SAFE_WEIGHTS_NAME,
    ADAPTER_WEIGHTS_NAME,
    CONFIG_NAME,
    GENERATION_CONFIG_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    PushInProgress,
    is_peft_available,
)

from hf_lightning.log_output import hf_logger

__all__ = ["HubMixin", "HubRepoError"]

logger = hf_logger  # HF's messages, where transformers prints them

# What `upload_folder` leaves out of `output_dir`, as in transformers: private files and the checkpoint folders.
OUTPUT_DIR_IGNORE_PATTERNS = ["_*", f"{PREFIX_CHECKPOINT_DIR}-*"]
MODEL_CARD_NAME = "README.md"


class HubRepoError(RuntimeError):
    """The Hub repo for `push_to_hub=True` could not be created or reached; raised before any training."""


def hub_api() -> Any:
    """The `HfApi` client of one Trainer, tagged with hf_lightning: its single worker thread runs the background
    uploads one after the other (a fresh one per Trainer picks up `HF_ENDPOINT` / `huggingface_hub.constants`)."""
    from huggingface_hub import HfApi

    from hf_lightning import __version__

    return HfApi(library_name="hf_lightning", library_version=__version__)


def _unreachable_hint(exc: BaseException) -> str:
    from huggingface_hub.errors import OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return "offline mode is on (`HF_HUB_OFFLINE`): unset it, or set `push_to_hub=False` to train offline"
    if isinstance(exc, (ConnectionError, TimeoutError)) or "connect" in type(exc).__name__.lower():
        return "the Hub cannot be reached: check the network (or `HF_ENDPOINT`), or set `push_to_hub=False`"
    return "check `hub_model_id` and that `hub_token` (or `hf auth login`) has write access, or set `push_to_hub=False`"


class HubMixin:
    """`init_hf_repo`, `push_to_hub`, `create_model_card` and the checkpoint pushes of `hub_strategy`, for the
    Trainer (which provides `args`, `state`, `control`, `model`, `processing_class`, `callback_handler`,
    `save_model`, `is_world_process_zero`, `train_dataset` and `eval_dataset`)."""

    hub_model_id: str | None = None
    push_in_progress: PushInProgress | None = None
    _hub_api: Any = None

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Create (or reuse) the repo `hub_model_id` (default: the name of `output_dir`) on the main process.

        Raises:
            HubRepoError: the repo could not be created: offline, unreachable, or refused (naming which).
        """
        if not self.is_world_process_zero():
            return
        args = self.args
        repo_name = Path(args.output_dir).absolute().name if args.hub_model_id is None else args.hub_model_id
        token = token if token is not None else args.hub_token
        private = private if private is not None else args.hub_private_repo
        api = hub_api()
        try:
            repo_url = api.create_repo(repo_name, token=token, private=private, exist_ok=True)
        except Exception as exc:
            raise HubRepoError(
                f"`push_to_hub=True`: could not create the Hub repo {repo_name!r} (`hub_model_id`) before training: "
                f"{_unreachable_hint(exc)}. ({type(exc).__name__}: {exc})"
            ) from exc
        self._hub_api = api
        self.hub_model_id = repo_url.repo_id
        self.push_in_progress = None

    def _hub(self) -> Any:
        if self._hub_api is None:
            self._hub_api = hub_api()
        return self._hub_api

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Write `output_dir/README.md`: transformers' model card of this run (results table, hyperparameters,
        framework versions); tags of an existing card are kept, a PEFT card is updated by the PEFT model."""
        if not self.is_world_process_zero():
            return
        from huggingface_hub import ModelCard

        path = os.path.join(self.args.output_dir, MODEL_CARD_NAME)
        is_peft_library = False
        if os.path.exists(path):
            existing = ModelCard.load(path).data
            is_peft_library = existing.get("library_name") == "peft"
            if tags is not None and existing.tags is not None:
                tags = [tags] if isinstance(tags, str) else tags
                tags.extend(tag for tag in existing.tags if tag not in tags)
        summary = TrainingSummary.from_trainer(
            self,
            language=language,
            license=license,
            tags=tags,
            model_name=model_name,
            finetuned_from=finetuned_from,
            tasks=tasks,
            dataset_tags=dataset_tags,
            dataset=dataset,
            dataset_args=dataset_args,
        )
        with open(path, "w", encoding="utf-8") as f:
            f.write(summary.to_model_card())
        if is_peft_library:
            self.model.create_or_update_model_card(self.args.output_dir)

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Save the model to `output_dir`, write its model card and upload the folder to `hub_model_id`.

        Args:
            commit_message: the commit's message.
            blocking: wait for the upload (else a `Future` of it is returned).
            token: a write token instead of `hub_token`.
            revision: the branch to commit to instead of `hub_revision`.
            private: create the repo private (only when this call creates it).
            kwargs: passed to `create_model_card` (`model_name`, `language`, `license`, `tags`, `dataset` ...).

        Returns:
            The `CommitInfo` (or its `Future`) on the main process, None on the others.
        """
        args = self.args
        self.callback_handler.on_push_begin(args, self.state, self.control)
        model_name = kwargs.pop("model_name", None)
        if model_name is None and args.should_save:
            model_name = Path(args.output_dir).name if args.hub_model_id is None else args.hub_model_id.split("/")[-1]
        token = token if token is not None else args.hub_token
        if self.hub_model_id is None:  # `push_to_hub=False` in the arguments
            self.init_hf_repo(token=token, private=private)
        self.save_model(_internal_call=True)  # every process: gathering sharded weights is collective
        if not self.is_world_process_zero():
            return None
        model_tags = getattr(self.model, "model_tags", None)
        if model_tags is not None:
            tags = kwargs.get("tags") or []
            tags = [tags] if isinstance(tags, str) else tags
            kwargs["tags"] = tags + [tag for tag in model_tags if tag not in tags]
        self.create_model_card(model_name=model_name, **kwargs)
        self._finish_current_push()
        return self._hub().upload_folder(
            repo_id=self.hub_model_id,
            folder_path=args.output_dir,
            commit_message=commit_message,
            token=token,
            run_as_future=not blocking,
            ignore_patterns=list(OUTPUT_DIR_IGNORE_PATTERNS),  # upload_folder extends the list it is given
            revision=revision if revision is not None else args.hub_revision,
        )

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """After a checkpoint is published: copy its model files to `output_dir`, upload that in the background and,
        for `hub_strategy` checkpoint / all_checkpoints, the checkpoint folder too."""
        args = self.args
        if not self.is_world_process_zero() or args.hub_strategy == HubStrategy.END:
            return
        if not args.hub_always_push and self.push_in_progress is not None and not self.push_in_progress.is_done():
            return  # the previous save is still uploading
        self.callback_handler.on_push_begin(args, self.state, self.control)
        output_dir = args.output_dir
        for name in _model_files(checkpoint_folder):
            source = os.path.join(checkpoint_folder, name)
            if os.path.isfile(source):
                shutil.copy(source, os.path.join(output_dir, name))
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        from hf_lightning.checkpoints import save_training_args

        save_training_args(args, output_dir)
        if args.save_strategy == SaveStrategy.STEPS:
            commit_message = f"Training in progress, step {self.state.global_step}"
        else:
            commit_message = f"Training in progress, epoch {int(self.state.epoch)}"
        api = self._hub()
        jobs = [
            api.upload_folder(
                repo_id=self.hub_model_id,
                folder_path=output_dir,
                commit_message=commit_message,
                token=args.hub_token,
                run_as_future=True,
                ignore_patterns=list(OUTPUT_DIR_IGNORE_PATTERNS),  # upload_folder extends the list it is given
                revision=args.hub_revision,
            )
        ]
        if args.hub_strategy in (HubStrategy.CHECKPOINT, HubStrategy.ALL_CHECKPOINTS):
            in_repo = "last-checkpoint" if args.hub_strategy == HubStrategy.CHECKPOINT else Path(checkpoint_folder).name
            jobs.append(
                api.upload_folder(
                    repo_id=self.hub_model_id,
                    folder_path=checkpoint_folder,
                    path_in_repo=in_repo,
                    commit_message=commit_message + ", checkpoint",
                    token=args.hub_token,
                    run_as_future=True,
                    revision=args.hub_revision,
                )
            )
        if self.push_in_progress is None or self.push_in_progress.is_done():
            self.push_in_progress = PushInProgress(jobs)
        else:
            self.push_in_progress.jobs.extend(jobs)

    def _finish_current_push(self) -> None:
        """Wait for the background uploads (end of training, before `push_to_hub`)."""
        if self.push_in_progress is not None and not self.push_in_progress.is_done():
            logger.info("Waiting for the current checkpoint push to be finished, this might take a couple of minutes.")
            self.push_in_progress.wait_until_done()


def _model_files(checkpoint_folder: str) -> list[str]:
    """The model's files in a checkpoint (transformers' list): config, weights, shards named by an index, adapters."""
    names = [CONFIG_NAME, GENERATION_CONFIG_NAME, WEIGHTS_NAME, SAFE_WEIGHTS_NAME]
    for index_name in (WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_INDEX_NAME):
        index_path = os.path.join(checkpoint_folder, index_name)
        if os.path.isfile(index_path):
            names.append(index_name)
            with open(index_path, encoding="utf-8") as f:
                names.extend(set(json.load(f)["weight_map"].values()))
    if is_peft_available():
        names.extend([ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, ADAPTER_SAFE_WEIGHTS_NAME])
    return names
