"""Datasets as padded arrays {inputs, lengths, labels}: the default real dataset and CSV/TSV/JSONL text files."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PAD, UNK = "<pad>", "<unk>"


@dataclass(frozen=True)
class Dataset:
    """inputs: int32 (N, T) token ids or float32 (N, T, F) features; lengths int32 (N,); labels int32 (N,)."""

    inputs: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> Dataset:
        return Dataset(self.inputs[idx], self.lengths[idx], self.labels[idx], self.label_names)


def load_default() -> Dataset:
    """scikit-learn's real handwritten digits (1797 8x8 images, offline), read row by row: 8 steps of 8 features."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)  # (N, 8, 8)
    return Dataset(x, np.full(len(x), 8, np.int32), d.target.astype(np.int32), tuple(str(i) for i in range(10)))


def tokenize(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text.lower())


def build_vocab(texts: list[str], min_freq: int = 1, max_size: int = 20000) -> list[str]:
    counts = Counter(t for s in texts for t in tokenize(s))
    words = [w for w, c in counts.most_common() if c >= min_freq][: max_size - 2]
    return [PAD, UNK, *words]


def read_table(path: str | Path, text_col: str, label_col: str) -> tuple[list[str], list[str]]:
    """(texts, labels) from a CSV/TSV with a header or JSONL; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    raw = path.read_text(encoding="utf-8")
    if not raw.strip():
        raise ValueError(f"{path} is empty")
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: malformed JSON line: {e}") from e
    else:
        rows = list(csv.DictReader(raw.splitlines(), delimiter="\t" if path.suffix == ".tsv" else ","))
    if not rows:
        raise ValueError(f"{path} has a header but no rows")
    for col in (text_col, label_col):
        if col not in rows[0]:
            raise ValueError(f"{path} has no column {col!r} (columns: {', '.join(map(str, rows[0]))})")
    return [str(r[text_col] or "") for r in rows], [str(r[label_col]) for r in rows]


def encode_texts(texts: list[str], labels: list[str], vocab: list[str], label_names: tuple[str, ...],
                 max_len: int = 256) -> Dataset:
    """Token ids padded to the longest (capped at max_len; longer texts are truncated)."""
    index = {w: i for i, w in enumerate(vocab)}
    label_index = {n: i for i, n in enumerate(label_names)}
    unknown = sorted(set(labels) - set(label_index))
    if unknown:
        raise ValueError(f"unknown labels {unknown[:5]} (known: {list(label_names)[:10]})")
    ids = [[index.get(t, 1) for t in tokenize(s)][:max_len] or [1] for s in texts]
    T = max(len(x) for x in ids)
    out = np.zeros((len(ids), T), np.int32)
    for i, x in enumerate(ids):
        out[i, : len(x)] = x
    return Dataset(out, np.array([len(x) for x in ids], np.int32),
                   np.array([label_index[lab] for lab in labels], np.int32), label_names)


def split(data: Dataset, valid_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    order = np.random.default_rng(seed).permutation(len(data))
    n_valid = max(1, int(len(data) * valid_fraction))
    return data.take(order[n_valid:]), data.take(order[:n_valid])


def batches(data: Dataset, batch_size: int, rng: np.random.Generator | None = None):
    """Yield (inputs, lengths, labels, count) batches of exactly batch_size rows (the last one padded by repeats;
    `count` rows are real). Padded lengths are rounded up to powers of two (a bounded set of shapes)."""
    order = rng.permutation(len(data)) if rng is not None else np.arange(len(data))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        count = len(idx)
        idx = np.concatenate([idx, np.repeat(idx[:1], batch_size - count)])
        b = data.take(idx)
        T = int(b.lengths.max())
        T = 1 << (T - 1).bit_length()  # bounded set of padded lengths: powers of two
        T = min(T, data.inputs.shape[1])
        yield b.inputs[:, :T], b.lengths, b.labels, count
