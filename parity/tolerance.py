"""The tolerance policy, in one place: per dtype (and backend) the `rtol`/`atol` a parity check allows, and the
context that makes a parity run compute float32 matmuls in float32 on every backend (GPU/TPU default to TF32 or
bf16 passes, which alone break 1e-5)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import jax
import numpy as np

ACCELERATORS = ("gpu", "cuda", "rocm", "tpu")


@dataclass(frozen=True)
class Tolerance:
    """An element passes when `|actual - expected| <= atol + rtol * |expected|` (numpy's allclose rule)."""

    rtol: float
    atol: float

    def __post_init__(self):
        # a negative bound would pass every difference (and NaN fails every one): neither is a tolerance
        for name in ("rtol", "atol"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def bound(self, expected: np.ndarray) -> np.ndarray:
        return self.atol + self.rtol * np.abs(expected)


# Measured headroom: the seed models differ by ~5e-8 in float32 and ~1e-15 in float64 on CPU.
POLICY = {
    "float64": Tolerance(rtol=1e-10, atol=1e-10),
    "float32": Tolerance(rtol=1e-5, atol=1e-5),
    "float16": Tolerance(rtol=1e-3, atol=1e-3),
    "bfloat16": Tolerance(rtol=2e-2, atol=2e-2),  # 8 significant bits
}


def tolerance_for(dtype, backend: str | None = None, *, rtol: float | None = None,
                  atol: float | None = None) -> Tolerance:
    """The policy's tolerance for `dtype` on `backend` (default: JAX's), with explicit overrides.

    float32 keeps 1e-5 on GPU/TPU too, because parity runs force float32 matmul precision (`parity_precision`).
    """
    try:
        name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    except TypeError:  # a torch dtype
        name = str(dtype)
    name = name.replace("torch.", "")
    if name not in POLICY:
        raise ValueError(f"no parity tolerance for dtype {name!r}; expected one of {sorted(POLICY)}")
    backend = (backend or jax.default_backend()).lower()
    base = POLICY[name]
    if backend not in ("cpu", *ACCELERATORS):
        raise ValueError(f"unknown backend {backend!r}")
    return Tolerance(base.rtol if rtol is None else rtol, base.atol if atol is None else atol)


@contextlib.contextmanager
def parity_precision() -> Iterator[None]:
    """float32 matmuls in float32 on both sides for the duration (TF32 off in torch; JAX's default matmul
    precision "float32"). A no-op for results on CPU; restores torch's flags afterwards."""
    import torch  # parity runs always have torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        with jax.default_matmul_precision("float32"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
