"""The training log: a JSONL file of step and epoch records, a live progress line, and a PNG of the curves."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from s2l_jax.weights import atomic_write


class MetricsLog:
    """Appends one JSON object per line. On resume, records after the checkpoint's step are dropped first, so the
    log of a resumed run reads as if it had never stopped."""

    def __init__(self, path: str | os.PathLike, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resume_step]
            atomic_write(self.path, lambda tmp: Path(tmp).write_text("".join(k + "\n" for k in kept)))

    def write(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


class Progress:
    """One self-overwriting stderr line per epoch: `epoch 3/30 [#####.....] 45/90 loss 0.4123`."""

    def __init__(self, epochs: int, steps_per_epoch: int, enabled: bool, stream=None):
        self.epochs, self.total, self.enabled = epochs, steps_per_epoch, enabled
        self.stream = stream or sys.stderr

    def update(self, epoch: int, done: int, loss: float) -> None:
        if self.enabled:
            filled = int(20 * done / max(self.total, 1))
            self.stream.write(f"\repoch {epoch}/{self.epochs} [{'#' * filled}{'.' * (20 - filled)}] "
                              f"{done}/{self.total} loss {loss:.4f}")
            self.stream.flush()

    def end(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


def plot_curves(records: list[dict], path: str | os.PathLike) -> bool:
    """Train loss per logged step, validation loss and accuracy per epoch, as a PNG. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="train (step)", alpha=0.6)
    ax_loss.plot([r["step"] for r in epochs], [r["valid_loss"] for r in epochs], "o-", label="valid (epoch)")
    ax_loss.set(xlabel="step", ylabel="loss", yscale="log", title="loss")
    ax_loss.legend()
    ax_acc.plot([r["epoch"] for r in epochs], [r["accuracy"] for r in epochs], "o-", label="accuracy")
    ax_acc.plot([r["epoch"] for r in epochs], [r["macro_f1"] for r in epochs], "s-", label="macro-F1")
    ax_acc.set(xlabel="epoch", title="validation")
    ax_acc.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return True
