"""Interleaved A/B of ScanOptions in one process: `python -m benchmarks.levers [--cases ...] [--rounds R]`.

Each variant (or "flax_linen", the baseline) is compiled once; every round times each variant (order rotating)
for a few calls, so machine noise hits all variants alike. Reports per variant the median of round medians and its
ratio to the first variant (> 1 = faster than it), and writes results/levers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from benchmarks.cases import Case, batch_arrays
from benchmarks.worker import pin_threads, time_calls

VARIANTS: dict[str, dict] = {
    "base": dict(input_projection="per_step", fold_half=False, custom_vjp=False),
    "sigmoid_form": dict(input_projection="per_step", fold_half=False, custom_vjp=False, tanh_sigmoid=False),
    "fold": dict(input_projection="per_step", custom_vjp=False),
    "hoisted": dict(input_projection="hoisted", custom_vjp=False),
    "chunk8": dict(input_projection="chunked", chunk=8, custom_vjp=False),
    "chunk16": dict(input_projection="chunked", chunk=16, custom_vjp=False),
    "chunk32": dict(input_projection="chunked", chunk=32, custom_vjp=False),
    "chunk16_unroll2": dict(input_projection="chunked", chunk=16, unroll=2, custom_vjp=False),
    "unroll4": dict(input_projection="per_step", unroll=4, custom_vjp=False),
    "hoisted_unroll4": dict(input_projection="hoisted", unroll=4, custom_vjp=False),
    "vjp_hoisted_unroll4": dict(input_projection="hoisted", unroll=4, custom_vjp=True),
    "chunk16_fused": dict(input_projection="chunked", chunk=16, fuse_directions=True, custom_vjp=False),
    "vjp_step": dict(input_projection="per_step", native=False, custom_vjp=True),
    "vjp_step_fused": dict(input_projection="per_step", native=False, custom_vjp=True, fuse_directions=True),
    "vjp_chunk8": dict(input_projection="chunked", chunk=8, custom_vjp=True),
    "vjp_chunk16": dict(input_projection="chunked", chunk=16, custom_vjp=True),
    "vjp_chunk16_fused": dict(input_projection="chunked", chunk=16, custom_vjp=True, fuse_directions=True),
    "vjp_hoisted": dict(input_projection="hoisted", custom_vjp=True),
    "vjp_chunk16_unroll2": dict(input_projection="chunked", chunk=16, unroll=2, custom_vjp=True),
    "remat_chunk16": dict(input_projection="chunked", chunk=16, remat=True, custom_vjp=False),
    "vjp_remat": dict(input_projection="per_step", native=False, remat=True),
    "vjp_remat_chunk16": dict(input_projection="chunked", chunk=16, remat=True),
    "native": dict(),  # the defaults: LSTMs, GRUs on native_rnn's kernels (vjp_step: the same on the XLA scan)
    "native_remat": dict(remat=True),
}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", default="seed/last/infer,seed/attention/train,large/last/infer,large/last/train")
    ap.add_argument("--variants", default="base,sigmoid_form,fold,hoisted,chunk16,unroll4,vjp_step,vjp_chunk16")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3, help="timed calls per variant per round")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "levers.json")
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    from benchmarks.jax_models import build

    results: dict[str, dict] = {}
    for name in args.cases.split(","):
        case = Case.parse(name)
        names = [v for v in args.variants.split(",") if v]
        steps = {}
        for v in names:  # "flax_linen" times the flax.linen baseline in the same rotation
            step, info = build(v, case) if v == "flax_linen" else build("s2l_jax", case, options=VARIANTS[v])
            steps[v] = (step, info)
        batch_arrays(case)
        rounds: dict[str, list[float]] = {v: [] for v in names}
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for v in order:
                samples = time_calls(steps[v][0], 0.0, min_reps=args.reps, max_reps=args.reps, warmup=1)
                rounds[v].append(statistics.median(samples))
        base = statistics.median(rounds[names[0]])
        results[name] = {}
        for v in names:
            med = statistics.median(rounds[v])
            results[name][v] = {"median_ms": med, "min_ms": min(rounds[v]), "speedup_vs_base": base / med,
                                "compile_s": steps[v][1]["compile_s"], "temp_mb": steps[v][1]["temp_mb"]}
            print(f"{name:22s} {v:22s} {med:9.2f} ms  min {min(rounds[v]):9.2f}  x{base / med:5.2f} vs "
                  f"{names[0]}  compile {steps[v][1]['compile_s']:.2f} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "threads": args.threads,
                                    "xla_flags": os.environ.get("XLA_FLAGS", ""), "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
