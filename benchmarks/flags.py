"""XLA CPU flags A/B: `python -m benchmarks.flags`. Flags are process-wide, so each (round, flag set, case) is a
fresh s2l_jax worker; flag sets alternate within each round. Prints median-of-rounds and the ratio to no flags.
Writes results/flags.json."""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from benchmarks.run import run_worker

FLAG_SETS = {
    "default": "",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "onednn": "--xla_cpu_use_onednn=true",
    "vector512": "--xla_cpu_prefer_vector_width=512",
    "no_eigen_threads": "--xla_cpu_multi_thread_eigen=false",
    "ynn_dots_only": "--xla_cpu_experimental_ynn_fusion_type=individual_dot",
    "no_ynn": "--xla_cpu_experimental_ynn_fusion_type=",
    "legacy_emitters": "--xla_cpu_use_fusion_emitters=false",
}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", default="large/last/infer,large/last/train,seed/last/infer")
    ap.add_argument("--sets", default=",".join(FLAG_SETS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "flags.json")
    args = ap.parse_args(argv)
    args.device, args.timeout = "cpu", 600.0
    sets = args.sets.split(",")
    meds: dict[str, dict[str, list[float]]] = {c: {s: [] for s in sets} for c in args.cases.split(",")}
    compile_s = {c: {s: [] for s in sets} for c in meds}
    for r in range(args.rounds):
        for case in meds:
            for s in sets[r % len(sets):] + sets[: r % len(sets)]:
                args.xla_flags = FLAG_SETS[s]
                res = run_worker("s2l_jax", case, args)
                if res is not None:
                    meds[case][s].append(statistics.median(res["samples_ms"]))
                    compile_s[case][s].append(res["compile_s"])
    out = {}
    for case, row in meds.items():
        base = statistics.median(row[sets[0]]) if row[sets[0]] else float("nan")
        out[case] = {s: {"median_ms": statistics.median(v), "speedup_vs_default": base / statistics.median(v),
                         "compile_s": statistics.median(compile_s[case][s])}
                     for s, v in row.items() if v}
        for s, v in out[case].items():
            print(f"{case:20s} {s:18s} {v['median_ms']:9.2f} ms  x{v['speedup_vs_default']:.2f}"
                  f"  compile {v['compile_s']:.2f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"flags": FLAG_SETS, "results": out}, indent=1))
    return out


if __name__ == "__main__":
    main()
