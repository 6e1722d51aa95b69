"""Structured parity reports: per tensor (weight, output, state, gradient, parameter after a training step) its
shape, max-abs and max-rel difference, the worst element, and pass/fail; rendered as a text table, JSON or
Markdown."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from parity.tolerance import Tolerance


@dataclass(frozen=True)
class TensorDiff:
    """One tensor compared: `actual` is the JAX side, `expected` torch's."""

    kind: str  # "weight", "output", "gradient", "step 3", ...
    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    worst_index: tuple[int, ...]
    actual: float  # the values at worst_index
    expected: float
    passed: bool
    problem: str = ""  # set when the tensors cannot be compared element-wise (shape, NaN)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


def diff(kind: str, name: str, actual, expected, tol: Tolerance) -> TensorDiff:
    """Compare two arrays element-wise under `tol`; NaN matches only NaN at the same place."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return TensorDiff(kind, name, tuple(e.shape), float("inf"), float("inf"), (), float("nan"), float("nan"),
                          False, f"shape {tuple(a.shape)} (JAX) vs {tuple(e.shape)} (torch)")
    if a.size == 0:
        return TensorDiff(kind, name, tuple(e.shape), 0.0, 0.0, (), 0.0, 0.0, True)
    both_nan = np.isnan(a) & np.isnan(e)
    abs_diff = np.where(both_nan, 0.0, np.abs(a - e))
    abs_diff = np.where(np.isnan(abs_diff), np.inf, abs_diff)  # NaN on one side only
    with np.errstate(divide="ignore", invalid="ignore"):  # a difference where torch has 0 is infinitely relative
        rel = np.where(abs_diff == 0, 0.0, abs_diff / np.abs(e))
    bound = tol.bound(np.where(np.isfinite(e), e, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = np.where(abs_diff == 0, 0.0, abs_diff / bound)  # a zero tolerance demands equality
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(excess)), e.shape))
    passed = bool(np.all(excess <= 1.0))
    problem = "" if passed or np.isfinite(abs_diff).all() else "NaN or Inf on one side only"
    return TensorDiff(kind, name, tuple(e.shape), float(abs_diff.max()), float(rel.max()), worst,
                      float(a[worst]), float(e[worst]), passed, problem)


@dataclass(frozen=True)
class ParityReport:
    """Every tensor compared, in order (weights, outputs, gradients, then training steps)."""

    entries: tuple[TensorDiff, ...]
    tolerance: Tolerance
    dtype: str
    backend: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.entries)

    @property
    def failures(self) -> tuple[TensorDiff, ...]:
        return tuple(e for e in self.entries if not e.passed)

    @property
    def first_failure(self) -> TensorDiff | None:
        return next(iter(self.failures), None)

    def worst(self, kind_prefix: str = "") -> float:
        """Largest max-abs difference over entries whose kind starts with `kind_prefix`."""
        return max((e.max_abs for e in self.entries if e.kind.startswith(kind_prefix)), default=0.0)

    def summary(self) -> str:
        head = (f"parity {'PASS' if self.passed else 'FAIL'}: {len(self.entries)} tensors, {self.dtype} on "
                f"{self.backend}, rtol {self.tolerance.rtol:g} atol {self.tolerance.atol:g}, worst max-abs "
                f"{self.worst():.3g}")
        f = self.first_failure
        if f is None:
            return head
        where = f.problem or (f"max-abs {f.max_abs:.3g}, max-rel {f.max_rel:.3g} at {list(f.worst_index)}: JAX "
                              f"{f.actual:.9g} vs torch {f.expected:.9g}")
        return f"{head}; first failure: {f.label} ({where}); {len(self.failures)} failing"

    def table(self, only_failures: bool = False, with_summary: bool = True) -> str:
        rows = [e for e in self.entries if e.passed is False or not only_failures]
        width = max([len(e.label) for e in rows] + [6])
        lines = [f"{'tensor':<{width}}  {'shape':<16} {'max-abs':>10} {'max-rel':>10}  {'worst at':<14} result"]
        for e in rows:
            lines.append(f"{e.label:<{width}}  {str(e.shape):<16} {e.max_abs:>10.3g} {e.max_rel:>10.3g}  "
                         f"{str(list(e.worst_index)):<14} {'ok' if e.passed else 'FAIL ' + e.problem}")
        return "\n".join(lines + [self.summary()] * with_summary + [f"note: {n}" for n in self.notes])

    def to_dict(self) -> dict:
        return {"passed": self.passed, "summary": self.summary(), "dtype": self.dtype, "backend": self.backend,
                "tolerance": asdict(self.tolerance), "notes": list(self.notes),
                "entries": [asdict(e) for e in self.entries]}

    def to_markdown(self) -> str:
        lines = [f"**{self.summary()}**", "", "| tensor | shape | max-abs | max-rel | worst at | result |",
                 "|---|---|---:|---:|---|---|"]
        for e in self.entries:
            lines.append(f"| `{e.label}` | {e.shape} | {e.max_abs:.3g} | {e.max_rel:.3g} | {list(e.worst_index)} | "
                         f"{'ok' if e.passed else '**FAIL** ' + e.problem} |")
        return "\n".join(lines + [f"\n{n}" for n in self.notes]) + "\n"

    def write(self, path: str | os.PathLike) -> None:
        """`.json` or `.md`, from the extension."""
        path = Path(path)
        if path.suffix == ".json":
            text = json.dumps(_finite_or_text(self.to_dict()), indent=1, allow_nan=False)
        elif path.suffix == ".md":
            text = self.to_markdown()
        else:
            raise ValueError(f"report file {path} must end in .json or .md")
        path.write_text(text)

    def __add__(self, other: ParityReport) -> ParityReport:
        return ParityReport(self.entries + other.entries, self.tolerance, self.dtype, self.backend,
                            self.notes + other.notes)


def _finite_or_text(obj):
    """Strict JSON: NaN and infinities (a failed tensor's differences) become the strings "nan", "inf", "-inf"."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite_or_text(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_text(v) for v in obj]
    return obj
