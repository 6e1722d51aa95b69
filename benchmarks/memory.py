"""Training memory vs sequence length, with and without remat: `python -m benchmarks.memory`.

One Adam-free gradient of the "last" classifier (B=8, E=128, H=256) for T up to 4096; reports XLA's buffer
assignment for the compiled program (temp bytes: everything the backward pass keeps alive beyond arguments and
outputs). Compiling is enough (nothing runs), so the numbers do not depend on machine load.
Writes results/memory.json and results/memory.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from s2l_jax import PRESETS, ScanOptions, SequenceClassifier

VARIANTS = {
    "autodiff": ScanOptions(custom_vjp=False),
    "custom_vjp (default)": ScanOptions(),
    "remat, custom_vjp (recompute chunks of 16)": ScanOptions(remat=True),
    "remat, autodiff (checkpoint per chunk of 16)": ScanOptions(input_projection="chunked", remat=True,
                                                                custom_vjp=False),
    "remat, autodiff (checkpoint per step)": ScanOptions(input_projection="per_step", remat=True, custom_vjp=False),
}


def temp_mb(options: ScanOptions, batch: int, total: int, embed: int, hidden: int) -> float:
    """Temp buffer MiB of the compiled gradient step."""
    config = PRESETS["last"].replace(embedding_dim=embed, hidden_size=hidden)
    model = SequenceClassifier(config, options=options)
    tokens = jnp.zeros((batch, total), jnp.int32)
    labels = jnp.zeros((batch,), jnp.int32)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens[:, :2])["params"])

    def loss(p, t, y):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, t), y).mean()

    compiled = jax.jit(jax.grad(loss)).lower(params, tokens, labels).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**20


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lengths", default="256,512,1024,2048,4096")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--embed", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    lengths = [int(t) for t in args.lengths.split(",")]
    table = {name: {t: temp_mb(o, args.batch, t, args.embed, args.hidden) for t in lengths}
             for name, o in VARIANTS.items()}
    lines = [f"Training temp memory (MiB, XLA buffer assignment), B={args.batch} E={args.embed} H={args.hidden}",
             "", "| variant | " + " | ".join(f"T={t}" for t in lengths) + " |", "|---|" + "---|" * len(lengths)]
    lines += [f"| {n} | " + " | ".join(f"{row[t]:.1f}" for t in lengths) + " |" for n, row in table.items()]
    md = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory.json").write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                                      "temp_mb": table}, indent=1))
    (args.out / "memory.md").write_text(md)
    print(md)
    return table


if __name__ == "__main__":
    main()
