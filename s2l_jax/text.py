"""Text classification files (CSV/TSV with a header, JSONL), a word tokenizer and a vocabulary.

The vocabulary is saved with the run, so `s2l predict` tokenizes exactly as training did.
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from s2l_jax.data import Dataset, encode_labels, limit_length

PAD, UNK = "<pad>", "<unk>"


def tokenize(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text.lower())


def build_vocab(texts: list[str], min_freq: int = 1, max_size: int = 20000) -> list[str]:
    """`[PAD, UNK, words...]`: words seen at least `min_freq` times, most frequent first, at most `max_size` in all."""
    if max_size < 3:
        raise ValueError(f"max vocabulary size must be >= 3, got {max_size}")
    counts = Counter(t for s in texts for t in tokenize(s))
    words = [w for w, c in counts.most_common() if c >= min_freq][: max_size - 2]
    return [PAD, UNK, *words]


def read_text_file(path: str | Path) -> str:
    """A file's UTF-8 text; missing, empty or non-UTF-8 files are clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    data = path.read_bytes()
    try:
        raw = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    if not raw.strip():
        raise ValueError(f"{path} is empty")
    return raw


def read_table(path: str | Path, text_col: str, label_col: str | None) -> tuple[list[str], list[str] | None]:
    """(texts, labels) from a CSV/TSV with a header or JSONL; `label_col=None` reads texts only."""
    path = Path(path)
    raw = read_text_file(path)
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(raw.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: malformed JSON line: {e}") from e
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{i}: expected a JSON object per line")
                rows.append(row)
    else:
        rows = list(csv.DictReader(raw.splitlines(), delimiter="\t" if path.suffix == ".tsv" else ","))
    if not rows:
        raise ValueError(f"{path} has a header but no rows")
    for col in (text_col, label_col):
        if col is not None and col not in rows[0]:
            raise ValueError(f"{path} has no column {col!r} (columns: {', '.join(map(str, rows[0]))})")
    for i, r in enumerate(rows, 2 if path.suffix != ".jsonl" else 1):
        if label_col is not None and (r.get(label_col) is None or str(r[label_col]) == ""):
            raise ValueError(f"{path}: row {i} has no {label_col!r} value")
    texts = [str(r.get(text_col) or "") for r in rows]
    return texts, ([str(r[label_col]) for r in rows] if label_col is not None else None)


def encode_texts(texts: list[str], labels: list[str] | None, vocab: list[str], label_names: tuple[str, ...],
                 max_len: int = 256, on_long: str = "truncate", label_sep: str | None = None,
                 what: str = "the data", warn=warnings.warn) -> Dataset:
    """Token ids padded to the longest text; texts over `max_len` tokens are truncated (with a warning) or an
    error (`on_long="error"`). Unknown words map to UNK; `labels=None` gives placeholder labels (prediction)."""
    index = {w: i for i, w in enumerate(vocab)}
    ids = [[index.get(t, 1) for t in tokenize(s)] or [1] for s in texts]
    limit_length([len(x) for x in ids], max_len, on_long, what, warn)
    ids = [x[:max_len] for x in ids]
    out = np.zeros((len(ids), max(len(x) for x in ids)), np.int32)  # (N, T), 0 = PAD
    for i, x in enumerate(ids):
        out[i, : len(x)] = x
    if labels is None:
        y = np.zeros((len(ids), len(label_names)) if label_sep else len(ids), np.float32 if label_sep else np.int32)
    else:
        y = encode_labels(labels, label_names, label_sep)
    return Dataset(out, np.array([len(x) for x in ids], np.int32), y, label_names)
