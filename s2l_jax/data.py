"""Datasets as padded arrays {inputs, lengths, labels}, the default real dataset, and length-bucketed batches.

Batch order is a pure function of (seed, epoch), so a run resumed at (epoch, batch) sees exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BUCKET_BATCHES = 16  # batches per length-sorting chunk: small padding, order still random
EVAL_ROWS = 256  # rows per evaluation batch at most: 1.7x faster than 64 on a 2-core CPU (benchmarks/README.md)
EVAL_CELLS = 65536  # rows x time steps per evaluation batch at most: long sequences get fewer rows


@dataclass(frozen=True)
class Dataset:
    """inputs: int32 (N, T) token ids or float32 (N, T, F) features; lengths int32 (N,);
    labels: int32 (N,) class ids, or float32 (N, C) multi-hot for multi-label data."""

    inputs: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]

    def __post_init__(self):
        n = len(self.inputs)
        if n == 0:
            raise ValueError("the dataset is empty")
        if len(self.lengths) != n or len(self.labels) != n:
            raise ValueError(f"{n} inputs but {len(self.lengths)} lengths and {len(self.labels)} labels")
        if self.lengths.min() < 1 or self.lengths.max() > self.inputs.shape[1]:
            raise ValueError(f"lengths must lie in [1, {self.inputs.shape[1]}]")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def multi_label(self) -> bool:
        return self.labels.ndim == 2

    def take(self, idx: np.ndarray) -> Dataset:
        return Dataset(self.inputs[idx], self.lengths[idx], self.labels[idx], self.label_names)


def load_default() -> Dataset:
    """scikit-learn's real handwritten digits (1797 8x8 images, offline), read row by row: 8 steps of 8 features.

    Read from the file `sklearn.datasets.load_digits` reads, without importing scikit-learn (0.6 s of `s2l
    train`'s start-up); `load_digits` itself where that file is not found."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is not None and path.is_file():
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",")  # (N, 65): 64 pixels, then the digit
        images, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    else:
        from sklearn.datasets import load_digits

        d = load_digits()
        images, target = d.images, d.target
    x = (images / 16.0).astype(np.float32)  # (N, 8, 8)
    return Dataset(x, np.full(len(x), 8, np.int32), target.astype(np.int32), tuple(str(i) for i in range(10)))


def split_indices(n: int, valid_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) of `split`, e.g. to build a vocabulary from the training rows alone."""
    if n < 2:
        raise ValueError(f"cannot hold out validation data from {n} example(s); give --valid")
    order = np.random.default_rng(seed).permutation(n)
    n_valid = min(n - 1, max(1, int(n * valid_fraction)))
    return order[n_valid:], order[:n_valid]


def split(data: Dataset, valid_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    train, valid = split_indices(len(data), valid_fraction, seed)
    return data.take(train), data.take(valid)


def epoch_plan(data: Dataset, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Row indices of each batch of one epoch: shuffled, then sorted by length within chunks of
    BUCKET_BATCHES batches so a batch holds similar lengths, then the batches shuffled."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(data))
    chunk = batch_size * BUCKET_BATCHES
    plan = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(data.lengths[part], kind="stable")]
        plan += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [plan[i] for i in rng.permutation(len(plan))]


def gather(data: Dataset, idx: np.ndarray, batch_size: int):
    """(inputs, lengths, labels, count): rows `idx` padded to `batch_size` rows by repeating the first (`count`
    rows are real) and to a power-of-two length (a bounded set of shapes, so few recompilations)."""
    count = len(idx)
    idx = np.concatenate([idx, np.repeat(idx[:1], batch_size - count)])
    T = int(data.lengths[idx].max())
    T = min(1 << (T - 1).bit_length(), data.inputs.shape[1])
    return data.inputs[idx, :T], data.lengths[idx], data.labels[idx], count


def length_order(data: Dataset) -> np.ndarray:
    """Row indices sorted by length (stable): batches of similar lengths, so each pads little."""
    return np.argsort(data.lengths, kind="stable")


def eval_batch_size(data: Dataset, devices: int = 1) -> int:
    """Rows per evaluation/prediction batch: a power of two up to EVAL_ROWS (larger batches make the per-step
    matmuls faster), fewer when `rows x steps` would pass EVAL_CELLS (memory for long sequences) or the data has
    fewer rows, rounded up to a multiple of `devices` (the batch is split over them)."""
    cap = min(EVAL_ROWS, max(1, EVAL_CELLS // data.inputs.shape[1]))
    cap = 1 << (cap.bit_length() - 1)  # a power of two <= cap
    rows = min(cap, 1 << (len(data) - 1).bit_length())
    return -(-rows // devices) * devices


def batches(data: Dataset, batch_size: int, order: np.ndarray | None = None) -> Iterator[tuple]:
    """Every row once, in `order` (default: as stored), as `gather` batches (for evaluation and prediction)."""
    order = np.arange(len(data)) if order is None else order
    for start in range(0, len(data), batch_size):
        yield gather(data, order[start:start + batch_size], batch_size)


def label_names_of(labels: list[str], sep: str | None = None) -> tuple[str, ...]:
    """Sorted label vocabulary; with `sep` (multi-label) each label string is a `sep`-joined set."""
    if sep == "":
        raise ValueError("--label-sep must not be empty")
    if sep is None:
        return tuple(sorted(set(labels)))
    return tuple(sorted({p for lab in labels for p in lab.split(sep) if p}))


def encode_labels(labels: list[str], names: tuple[str, ...], sep: str | None = None) -> np.ndarray:
    """int32 (N,) class ids, or with `sep` float32 (N, C) multi-hot; labels outside `names` are an error."""
    index = {n: i for i, n in enumerate(names)}
    parts = [[p for p in lab.split(sep) if p] for lab in labels] if sep is not None else [[lab] for lab in labels]
    unknown = sorted({p for ps in parts for p in ps} - set(index))
    if unknown:
        raise ValueError(f"unknown labels {unknown[:5]} (not seen in training; known: {list(names)[:10]})")
    if sep is None:
        return np.array([index[ps[0]] for ps in parts], np.int32)
    out = np.zeros((len(parts), len(names)), np.float32)
    for i, ps in enumerate(parts):
        out[i, [index[p] for p in ps]] = 1.0
    return out


def limit_length(lengths: list[int], max_len: int, on_long: str, what: str, warn) -> None:
    """Sequences longer than `max_len`: an error (`on_long="error"`) or truncated with one warning."""
    if max_len < 1:
        raise ValueError(f"--max-len must be >= 1, got {max_len}")
    long = [i for i, n in enumerate(lengths) if n > max_len]
    if not long:
        return
    msg = f"{len(long)} of {len(lengths)} sequences in {what} are longer than --max-len {max_len} " \
          f"(first: row {long[0]})"
    if on_long == "error":
        raise ValueError(msg + "; raise --max-len or pass --on-long truncate")
    if on_long != "truncate":
        raise ValueError(f"on_long must be 'truncate' or 'error', got {on_long!r}")
    warn(msg + "; truncated")
