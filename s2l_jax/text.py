"""Text classification files (CSV/TSV with a header, JSONL), a word tokenizer and a vocabulary.

The vocabulary is saved with the run, so `s2l predict` tokenizes exactly as training did.
"""

from __future__ import annotations

import csv
import io
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
    """A file's UTF-8 text without a leading byte-order mark; missing, empty or non-UTF-8 files are clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    data = path.read_bytes()
    try:
        raw = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    if not raw.strip():
        raise ValueError(f"{path} is empty")
    return raw


def data_format(path: str | Path) -> str:
    """A data file's format from its suffix in any case: 'ts', 'jsonl' (also `.ndjson`), 'tsv', else 'csv'."""
    return {".ts": "ts", ".jsonl": "jsonl", ".ndjson": "jsonl", ".tsv": "tsv"}.get(Path(path).suffix.lower(), "csv")


def _jsonl_rows(path: Path, raw: str) -> list[tuple[int, dict]]:
    """(line number, object) per non-blank line; lines end at "\n" only (JSON text may hold U+2028 raw)."""
    rows = []
    for number, line in enumerate(raw.split("\n"), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: malformed JSON line: {e}") from e
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object per line")
            rows.append((number, row))
    return rows


def _table_rows(path: Path, raw: str, tsv: bool) -> tuple[list[str], list[tuple[int, dict]]]:
    """(header, [(first line of the record, {column: field})]) of a CSV (RFC 4180 quoting) or a TSV (no quoting)."""
    kind = "TSV" if tsv else "CSV"
    reader = csv.reader(io.StringIO(raw, newline=""), delimiter="\t" if tsv else ",", strict=True,
                        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    limit = csv.field_size_limit(max(csv.field_size_limit(), len(raw)))  # process-wide: restored below
    header, rows, first = None, [], 1
    try:
        for fields in reader:
            if not fields:
                pass  # a blank line
            elif header is None:
                header = fields
                twice = sorted({c for c in header if header.count(c) > 1})
                if twice:
                    raise ValueError(f"{path}:{first}: the header names columns {twice} more than once")
            elif len(fields) > len(header):
                hint = "a text holds a tab?" if tsv else "quote a text that holds a comma"
                raise ValueError(f"{path}:{first}: {len(fields)} fields, the header has {len(header)} ({hint})")
            else:
                rows.append((first, dict(zip(header, fields, strict=False))))
            first = reader.line_num + 1
    except csv.Error as e:
        raise ValueError(f"{path}:{first}: malformed {kind} record: {e}") from None
    finally:
        csv.field_size_limit(limit)
    return header or [], rows


def _label(path: Path, number: int, col: str, value) -> str:
    """A JSONL label as a string: a JSON string or integer, so `1` and `"1"` are one class."""
    if isinstance(value, list):
        raise ValueError(f"{path}:{number}: {col!r} is a list {json.dumps(value)}; give a label set as one string "
                         f"joined by --label-sep (e.g. \"a|b\")")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{path}:{number}: {col!r} must be a JSON string or integer, got {json.dumps(value)}")
    return str(value)


def read_table(path: str | Path, text_col: str, label_col: str | None) -> tuple[list[str], list[str] | None]:
    """(texts, labels) from a CSV/TSV with a header or JSONL; `label_col=None` reads texts only.

    Errors name the file line: a record with more fields than the header, a missing text or label, and in JSONL a
    text that is not a string or a label that is not a string or an integer."""
    path = Path(path)
    fmt = data_format(path)
    if fmt == "ts":
        raise ValueError(f"{path} is a .ts time-series file, not a text table (CSV/TSV/JSONL)")
    raw = read_text_file(path)
    if fmt == "jsonl":
        rows = _jsonl_rows(path, raw)
        columns = list(rows[0][1]) if rows else []
    else:
        columns, rows = _table_rows(path, raw, fmt == "tsv")
    if not rows:
        raise ValueError(f"{path} has a header but no rows")
    for col in (text_col, label_col):
        if col is not None and col not in columns:
            raise ValueError(f"{path} has no column {col!r} (columns: {', '.join(map(str, columns))})")
    texts, labels = [], []
    for number, r in rows:
        text = r.get(text_col)
        if text is None:
            raise ValueError(f"{path}:{number}: no {text_col!r} value")
        if not isinstance(text, str):
            raise ValueError(f"{path}:{number}: {text_col!r} must be a JSON string, got {json.dumps(text)}")
        texts.append(text)
        if label_col is not None:
            if r.get(label_col) is None or r[label_col] == "":
                raise ValueError(f"{path}:{number}: no {label_col!r} value")
            labels.append(_label(path, number, label_col, r[label_col]))
    return texts, (labels if label_col is not None else None)


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
