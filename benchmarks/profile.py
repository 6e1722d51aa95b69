"""Where one benchmark case's time goes, op by op: `python -m benchmarks.profile large/mean/train [--top 30]`.

Runs the s2l_jax (or flax.linen) step of a grid case under `jax.profiler.trace` and sums the trace's events by
name: XLA CPU's thunks (a dot fusion, an elementwise fusion, a while loop) with total milliseconds per call and
how often each ran per call. Also counts the page faults per call (glibc maps large buffers afresh on every call).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import resource
import tempfile

from benchmarks.worker import pin_threads


def op_times(case_name: str, framework: str = "s2l_jax", calls: int = 3, options: dict | None = None,
             threads: int = 2) -> tuple[dict[str, tuple[float, int]], float]:
    """({event name: (ms per call, count per call)}, page faults per call) over `calls` profiled calls."""
    import jax

    from benchmarks.cases import Case
    from benchmarks.jax_models import build

    step, _ = build(framework, Case.parse(case_name), options=options, threads=threads)
    for _ in range(2):
        step()
    with tempfile.TemporaryDirectory() as d:
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(calls):
                step()
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / calls
        (path,) = glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True)
        with gzip.open(path) as f:
            trace = json.load(f)
    total: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for event in trace["traceEvents"] if isinstance(trace, dict) else trace:
        if event.get("ph") == "X" and not event["name"].startswith("$"):  # XLA/runtime events (no Python frames)
            total[event["name"]] += event["dur"]
            count[event["name"]] += 1
    return {name: (us / calls / 1e3, count[name] // calls) for name, us in total.items()}, faults


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("case", help="size/model/mode[/cell], e.g. large/mean/train")
    ap.add_argument("--framework", default="s2l_jax",
                    choices=("s2l_jax", "flax_linen", "s2l_jax_dp", "flax_linen_dp"))  # *_dp: one device per core
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    times, faults = op_times(args.case, args.framework, args.calls, threads=args.threads)
    print(f"{args.case} ({args.framework}): {faults:.0f} page faults per call; ms per call, times per call, event")
    for name, (ms, n) in sorted(times.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"{ms:10.2f} {n:7d}  {name[:100]}")


if __name__ == "__main__":
    main()
