"""The benchmark grid, one framework process at a time: `python -m benchmarks.run [--quick]`.

Every (round, case, framework) runs in a fresh subprocess pinned to the same CPUs; frameworks are interleaved
case by case and their order rotates each round, so slow drifts of the machine hit all of them alike.
Writes results/<name>.json, .md and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.cases import CELLS, FRAMEWORKS, grid
from benchmarks.report import bar_chart, markdown, summarize

RESULTS = Path(__file__).parent / "results"
# glibc >= 2.35: malloc asks for transparent huge pages for the large buffers it maps (kernel THP "madvise" mode).
# XLA maps each program's temp buffer afresh per call (410 MB for large/mean/train: ~105k 4 KiB page faults).
HUGE_PAGES = "glibc.malloc.hugetlb=1"


def cpu_model() -> str:
    """The CPU's model name, family, model and AVX-512 support (/proc/cpuinfo), else the machine type: hosts
    differ between runs, and one model name ("AMD EPYC") covered CPU generations that timed 2x apart."""
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        fields = {}
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    avx512 = ", AVX-512" if "avx512f" in fields.get("flags", "").split() else ""
    return f"{fields['model name']} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')}{avx512})"


def matmul_gflops(reps: int = 9, calls: int = 200) -> float:
    """The host's speed now: median GFLOP/s of float32 numpy matmuls shaped like the large LSTM step
    (64, 256) x (256, 1024), `calls` in a row. These hosts are shared and their speed drifted up to 1.6x within
    a session; probes before and after each round give a weak sign of whether it did (benchmarks/README.md)."""
    rng = np.random.default_rng(0)
    h, w = rng.standard_normal((64, 256), dtype=np.float32), rng.standard_normal((256, 1024), dtype=np.float32)
    h @ w
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(calls):
            h @ w
        times.append(time.perf_counter() - t0)
    return 2 * 64 * 256 * 1024 * calls / sorted(times)[reps // 2] / 1e9


def run_worker(framework: str, case: str, args: argparse.Namespace) -> dict | None:
    """One worker subprocess; None (and a note on stderr) if it fails or times out."""
    cmd = [sys.executable, "-m", "benchmarks.worker", framework, case, "--threads", str(args.threads),
           "--budget", str(args.budget), "--device", args.device]
    if getattr(args, "keep_freed_memory", False):
        cmd.append("--keep-freed-memory")
    env = dict(os.environ)
    if getattr(args, "huge_pages", False):
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), HUGE_PAGES]))
    if args.xla_flags:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env,
                              cwd=Path(__file__).parent.parent)
    except subprocess.TimeoutExpired:
        print(f"  {framework} {case}: timed out after {args.timeout} s", file=sys.stderr)
        return None
    if proc.returncode != 0:
        print(f"  {framework} {case}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 seed-size cases, 1 round, short budget")
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    ap.add_argument("--cases", default="", help="comma-separated size/model/mode filters (substring match)")
    ap.add_argument("--cells", default="lstm", help="comma-separated recurrent cells: lstm (the seed's), gru")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 2, quick 1)")
    ap.add_argument("--budget", type=float, default=None, help="timed seconds per worker (default 2, quick 0.3)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    ap.add_argument("--xla-flags", default="", help="appended to XLA_FLAGS for the JAX workers")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="every worker keeps freed memory for reuse (glibc mallopt; see benchmarks/worker.py)")
    ap.add_argument("--huge-pages", action="store_true",
                    help=f"every worker runs with GLIBC_TUNABLES={HUGE_PAGES} (large buffers on huge pages)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per worker")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="start no new worker after this long; results so far are still written")
    ap.add_argument("--name", default=None, help="results file stem (default bench, bench_quick, bench_gpu)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--from-json", type=Path, metavar="RESULTS_JSON",
                    help="run nothing: summarize the runs stored in an earlier results file again and rewrite its "
                         ".json summary, .md and .png (e.g. after a change to the statistics)")
    args = ap.parse_args(argv)
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        return write_results(data["runs"], data["meta"], args.from_json.with_suffix(""))
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.budget = args.budget if args.budget is not None else (0.3 if args.quick else 2.0)
    frameworks = [f for f in args.frameworks.split(",") if f]
    if args.quick and args.frameworks == ",".join(FRAMEWORKS):
        frameworks = ["s2l_jax", "flax_linen", "torch_eager", "torch_eager_nomkldnn"]
    cells = tuple(c for c in args.cells.split(",") if c)
    if unknown := set(cells) - set(CELLS):
        ap.error(f"unknown cells {sorted(unknown)}; expected some of {CELLS}")
    cases = [c.name for c in grid(args.quick, cells)]
    if args.device == "gpu":  # large first: the cases a GPU is for come before any --max-minutes cut
        cases.sort(key=lambda c: not c.startswith("large/"))
    if args.cases:
        cases = [c for c in cases if any(f in c for f in args.cases.split(","))]
    load_start = os.getloadavg()[0]
    if load_start > 0.5:
        print(f"warning: 1-minute load average is {load_start:.1f}; timings will be noisy", file=sys.stderr)
    runs = []
    probes = [matmul_gflops()]
    started = time.perf_counter()
    for r in range(args.rounds):
        for case in cases:
            k = r % len(frameworks)
            for fw in frameworks[k:] + frameworks[:k]:
                if args.max_minutes is not None and time.perf_counter() - started > 60 * args.max_minutes:
                    print(f"  --max-minutes reached: skipping {fw} {case}", file=sys.stderr)
                    continue
                t0 = time.perf_counter()
                res = run_worker(fw, case, args)
                if res is not None:
                    res["round"] = r
                    runs.append(res)
                    med = sorted(res["samples_ms"])[len(res["samples_ms"]) // 2]
                    print(f"round {r} {case:24s} {fw:22s} {med:9.2f} ms  ({time.perf_counter() - t0:.0f} s)",
                          flush=True)
        probes.append(matmul_gflops())
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": cpu_model(),
            "threads": args.threads, "rounds": args.rounds, "budget_s": args.budget,
            "device": args.device, "xla_flags": os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags,
            "keep_freed_memory": args.keep_freed_memory, "huge_pages": args.huge_pages,
            "command": " ".join(sys.argv), "load_avg_start_end": [load_start, os.getloadavg()[0]],
            "matmul_gflops": [round(g, 1) for g in probes]}
    name = args.name or ("bench_quick" if args.quick else "bench" if args.device == "cpu" else "bench_gpu")
    args.out.mkdir(parents=True, exist_ok=True)
    return write_results(runs, meta, args.out / name)


def write_results(runs: list[dict], meta: dict, stem: Path) -> dict:
    """STEM.json (meta, summary, every worker's samples), STEM.md (the table) and STEM.png; prints the table."""
    summary = summarize(runs)
    table = markdown(summary, meta)
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1))
    stem.with_suffix(".md").write_text(table)
    bar_chart(summary, stem.with_suffix(".png"))
    print(table)
    return summary


if __name__ == "__main__":
    main()
