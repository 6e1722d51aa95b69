"""UCR/UEA `.ts` time-series classification files: variable-length, uni- or multivariate numeric sequences.

The encoder reads the feature vectors directly (no embedding): series i becomes a (T_i, dims) array.
Format: `@` header lines (`@classLabel true a b c`, ...), then after `@data` one series per line, dimensions
separated by `:`, values by `,`, the class label last.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from s2l_jax.data import Dataset, encode_labels, limit_length
from s2l_jax.text import read_text_file


def read_ts(path: str | Path) -> tuple[list[np.ndarray], list[str] | None, tuple[str, ...] | None]:
    """(series (T_i, dims) float32, labels or None, class labels declared in the header or None)."""
    path = Path(path)
    header: dict[str, list[str]] = {}
    series, labels = [], []
    in_data = False
    for number, line in enumerate(read_text_file(path).split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise ValueError(f"{path}:{number}: expected an @ header line or @data, got {line[:40]!r}")
            key, *values = line.split()
            flag = values[0].lower() if values else None
            if key.lower() in ("@classlabel", "@timestamps") and flag not in ("true", "false"):
                raise ValueError(f"{path}:{number}: {key} must be followed by true or false")
            if key.lower() == "@dimensions" and not (len(values) == 1 and values[0].isdigit() and int(values[0])):
                raise ValueError(f"{path}:{number}: @dimensions must be followed by a positive whole number")
            if key.lower() == "@univariate" and flag not in ("true", "false"):
                raise ValueError(f"{path}:{number}: {key} must be followed by true or false")
            header[key.lower()] = values
            in_data = key.lower() == "@data"
            continue
        if header.get("@timestamps", ["false"])[0].lower() == "true":
            raise ValueError(f"{path}: time-stamped .ts files are not supported")
        has_label = header.get("@classlabel", ["false"])[0].lower() == "true"
        fields = line.split(":")
        if has_label:
            *fields, label = fields
            declared = header["@classlabel"][1:]
            if not fields or ("," in label and label.strip() not in declared):  # values where the label should be
                raise ValueError(f"{path}:{number}: no class label after the values (@classLabel true: each series "
                                 "ends in ':label')")
            if declared and label.strip() not in declared:
                raise ValueError(f"{path}:{number}: class label {label.strip()!r} is not among the classes declared "
                                 f"by @classLabel ({' '.join(declared)})")
            labels.append(label.strip())
        dims = []
        for d, field in enumerate(fields):
            if "?" in field:
                raise ValueError(f"{path}:{number}: missing values ('?') in dimension {d}; impute them first")
            try:
                dims.append(np.array([float(v) for v in field.split(",")], np.float32))
            except ValueError:
                raise ValueError(f"{path}:{number}: dimension {d} is not a list of numbers") from None
        if len({len(v) for v in dims}) != 1:
            raise ValueError(f"{path}:{number}: dimensions have different lengths {[len(v) for v in dims]}")
        declared_dims = int(header["@dimensions"][0]) if "@dimensions" in header else \
            1 if header.get("@univariate", [""])[0].lower() == "true" else None
        if declared_dims is not None and len(dims) != declared_dims:
            raise ValueError(f"{path}:{number}: {len(dims)} dimensions, the header declares {declared_dims} "
                             "(@univariate / @dimensions)")
        if series and len(dims) != series[0].shape[1]:
            raise ValueError(f"{path}:{number}: {len(dims)} dimensions, earlier series have {series[0].shape[1]}")
        x = np.stack(dims, axis=1)  # (T_i, dims)
        if not np.isfinite(x).all():
            raise ValueError(f"{path}:{number}: values must be finite")
        series.append(x)
    if not in_data:
        raise ValueError(f"{path}: no @data line")
    if not series:
        raise ValueError(f"{path} has no series after @data")
    declared = header.get("@classlabel", [])[1:] or None
    return series, (labels if labels else None), (tuple(declared) if declared else None)


def series_dataset(series: list[np.ndarray], labels: list[str] | None, label_names: tuple[str, ...],
                   max_len: int = 4096, on_long: str = "truncate", what: str = "the data",
                   warn=warnings.warn) -> Dataset:
    """Series zero-padded to the longest into (N, T, dims); `labels=None` gives placeholder labels."""
    limit_length([len(s) for s in series], max_len, on_long, what, warn)
    series = [s[:max_len] for s in series]
    out = np.zeros((len(series), max(len(s) for s in series), series[0].shape[1]), np.float32)  # (N, T, dims)
    for i, s in enumerate(series):
        out[i, : len(s)] = s
    y = encode_labels(labels, label_names) if labels is not None else np.zeros(len(series), np.int32)
    return Dataset(out, np.array([len(s) for s in series], np.int32), y, label_names)
