"""One framework, one case, in its own process: `python -m benchmarks.worker FRAMEWORK CASE --threads N`.

Pins the process to N CPUs before any framework is imported (XLA and torch then size their thread pools to
them), builds the model, times the step, and prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import resource
import sys
import time
from collections.abc import Callable


def pin_threads(threads: int) -> None:
    """Restrict this process to `threads` CPUs (call before importing jax or torch)."""
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cpus)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def keep_freed_memory() -> None:
    """glibc: serve every size from the heap and never trim it. By default glibc `mmap`s each allocation of
    32 MiB or more and unmaps it on free, so a program that allocates large buffers every step page-faults them
    afresh each time (~13 ms per 32 MiB here). It reaches only the main thread's arena: XLA allocates from worker
    threads, whose arenas map large buffers regardless (huge pages help there: `run --huge-pages`). The benchmark
    README records what each does to each framework."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    m_trim_threshold, m_mmap_max = -1, -4  # malloc.h
    if not (libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**31 - 1)):
        raise RuntimeError("mallopt refused the settings (not glibc?)")


def rss_mb() -> float:
    """Current resident set size, MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def busy_cpu_s() -> float | None:
    """Seconds all CPUs of the host spent busy so far (/proc/stat), for `other_cpu_share`."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def time_calls(call: Callable[[], None], budget_s: float, min_reps: int = 3, max_reps: int = 200,
               warmup: int = 2) -> list[float]:
    """Milliseconds per call: `warmup` untimed calls, then calls until `budget_s` is spent (>= min_reps)."""
    for _ in range(warmup):
        call()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < max_reps and (len(samples) < min_reps or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("framework")
    ap.add_argument("case", help="size/model/mode, e.g. seed/last/train")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of timed calls")
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    ap.add_argument("--options", default="{}", help="s2l_jax ScanOptions fields as JSON")
    ap.add_argument("--keep-freed-memory", action="store_true", help="see keep_freed_memory (off: glibc's default)")
    args = ap.parse_args(argv)
    if args.keep_freed_memory:
        keep_freed_memory()
    if args.device == "cpu":
        pin_threads(args.threads)
    from benchmarks.cases import Case

    case = Case.parse(args.case)
    if args.framework in ("s2l_jax", "s2l_jax_cudnn", "s2l_jax_dp", "flax_linen", "flax_linen_dp"):
        from benchmarks.jax_models import build
    else:
        from benchmarks.torch_models import build
    t0 = time.perf_counter()
    step, info = build(args.framework, case, device=args.device, options=json.loads(args.options),
                       threads=args.threads)
    rss0 = rss_mb()
    compile_start = time.perf_counter()
    step()  # first call: jit / torch.compile compilation (plus one step)
    first_call_s = time.perf_counter() - compile_start
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    busy0, own0, wall0 = busy_cpu_s(), sum(os.times()[:2]), time.perf_counter()
    samples = time_calls(step, args.budget)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / (len(samples) + 2)  # + warm-up
    busy1, own1, wall1 = busy_cpu_s(), sum(os.times()[:2]), time.perf_counter()
    # Other processes' share of the host's CPU time while this worker was timed: contention the medians hide.
    other = None if busy0 is None else max(0.0, (busy1 - busy0 - (own1 - own0)) / ((wall1 - wall0) * os.cpu_count()))
    result = {
        "framework": args.framework, "case": case.name, "threads": args.threads, "device": args.device,
        "samples_ms": samples, "first_call_s": first_call_s, "setup_s": compile_start - t0,
        "peak_rss_mb": peak_rss_mb(), "rss_growth_mb": peak_rss_mb() - rss0, "page_faults_per_call": faults,
        "other_cpu_share": other,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), **info,
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
