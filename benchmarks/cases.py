"""The benchmark grid: 3 seed models x 2 sizes x {infer, train} (LSTM, as the seed wrote them; `--cells gru`
adds the same grid with GRUs), and the inputs every framework gets."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MODELS = ("last", "mean", "attention")
SIZES = {
    "seed": dict(batch=32, time=20, embed=50, hidden=128),
    "large": dict(batch=64, time=256, embed=128, hidden=256),
}
MODES = ("infer", "train")
CELLS = ("lstm", "gru")
VOCAB, CLASSES = 1000, 5
# *_dp: one CPU device per core, the batch split over them (s2l_jax.sharding.use_cpu_devices)
FRAMEWORKS = ("s2l_jax", "s2l_jax_dp", "flax_linen", "flax_linen_dp", "torch_eager", "torch_eager_nomkldnn",
              "torch_compile")


@dataclass(frozen=True)
class Case:
    model: str  # "last" | "mean" | "attention" (parity.torch_models.SEED_MODELS / s2l_jax.PRESETS)
    size: str  # key of SIZES
    mode: str  # "infer" | "train" (one Adam step on cross-entropy)
    cell: str = "lstm"  # | "gru"

    @property
    def name(self) -> str:
        return f"{self.size}/{self.model}/{self.mode}" + ("" if self.cell == "lstm" else f"/{self.cell}")

    @property
    def dims(self) -> dict:
        return SIZES[self.size]

    def to_dict(self) -> dict:
        return {**asdict(self), **self.dims, "name": self.name}

    @classmethod
    def parse(cls, name: str) -> Case:
        size, model, mode, *cell = name.split("/")
        return cls(model, size, mode, *cell)


def grid(quick: bool = False, cells: tuple[str, ...] = ("lstm",)) -> list[Case]:
    """The 12 cases per cell; quick: the seed size's last/attention models only (a smoke run)."""
    if quick:
        return [Case(m, "seed", mode, c) for c in cells for m in ("last", "attention") for mode in MODES]
    return [Case(m, s, mode, c) for c in cells for s in SIZES for m in MODELS for mode in MODES]


def batch_arrays(case: Case, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token ids `(batch, time)` int32 and labels `(batch,)` int32, the same for every framework."""
    rng = np.random.default_rng(seed)
    d = case.dims
    tokens = rng.integers(0, VOCAB, (d["batch"], d["time"]), dtype=np.int32)
    labels = rng.integers(0, CLASSES, (d["batch"],), dtype=np.int32)
    return tokens, labels


def lstm_flops(case: Case) -> float:
    """Matmul FLOPs of the recurrent layer's forward (input + recurrent projections, every direction)."""
    d = case.dims
    dirs = 1 if case.model == "last" else 2
    per_step = 2 * d["batch"] * 4 * d["hidden"] * (d["embed"] + d["hidden"])
    return float(dirs * d["time"] * per_step)
