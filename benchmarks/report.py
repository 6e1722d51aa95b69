"""Summaries of worker results: medians, min-max, ratios vs each peer; markdown table and PNG bar chart."""

from __future__ import annotations

import statistics
from pathlib import Path

PEERS = ("flax_linen", "torch_best", "torch_eager", "torch_eager_nomkldnn", "torch_compile", "s2l_jax_cudnn")
# s2l_jax_dp: s2l_jax with one CPU device per core and the batch split over them (`s2l train --cpu-devices 0`)
OURS = ("s2l_jax", "s2l_jax_dp")
DP_PEERS = ("s2l_jax", "flax_linen_dp", "flax_linen", "torch_best")  # its ratio columns (not all: table width)


SPREAD = 1.1  # rounds whose medians differ by more than this factor are marked in the table
CONTENDED = 0.1  # workers timed while other processes used more than this share of the host's CPUs are marked


def summarize(runs: list[dict]) -> dict:
    """{case: {framework: stats}} from every worker run; adds "torch_best", the faster eager. The median is the
    median of the rounds' medians, each round weighted alike (pooling the samples would weight a round by how
    many calls fitted its time budget, so a fast round outvoted a slow one); min-max span every sample."""
    table: dict[str, dict[str, dict]] = {}
    for r in runs:
        table.setdefault(r["case"], {}).setdefault(r["framework"], []).append(r)
    out: dict[str, dict[str, dict]] = {}
    for case, fws in table.items():
        out[case] = {}
        for fw, rs in fws.items():
            samples = [s for r in rs for s in r["samples_ms"]]
            round_medians = [statistics.median(r["samples_ms"]) for r in rs]
            compile_s = [r["compile_s"] for r in rs if r.get("compile_s") is not None]
            out[case][fw] = {
                "median_ms": statistics.median(round_medians), "round_medians_ms": round_medians,
                "min_ms": min(samples), "max_ms": max(samples),
                "n": len(samples), "rounds": len(rs), "compile_s": min(compile_s) if compile_s else None,
                "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                "other_cpu_share": max((r.get("other_cpu_share") or 0.0 for r in rs), default=0.0),
                "rss_growth_mb": max(r["rss_growth_mb"] for r in rs),
                "temp_mb": rs[0].get("temp_mb"),
                "page_faults_per_call": statistics.median(f) if (f := [r["page_faults_per_call"] for r in rs
                                                                       if "page_faults_per_call" in r]) else None,
            }
        eager = [out[case][k] for k in ("torch_eager", "torch_eager_nomkldnn") if k in out[case]]
        if eager:
            out[case]["torch_best"] = min(eager, key=lambda s: s["median_ms"])
        for ours in OURS:
            if ours in out[case]:
                mine = out[case][ours]["median_ms"]
                out[case][ours]["speedup_vs"] = {p: st["median_ms"] / mine for p, st in out[case].items() if p != ours}
    return out


def _spread(stats: dict) -> bool:
    medians = stats.get("round_medians_ms") or [stats["median_ms"]]
    return max(medians) > SPREAD * min(medians)


def _fmt(stats: dict | None) -> str:
    if stats is None:
        return "-"
    mark = (" †" if _spread(stats) else "") + (" ‡" if stats.get("other_cpu_share", 0.0) > CONTENDED else "")
    return f"{stats['median_ms']:.3g} ({stats['min_ms']:.3g}-{stats['max_ms']:.3g}){mark}"


def markdown(summary: dict, meta: dict) -> str:
    """The table: medians (min-max) in ms per framework, and s2l_jax's speed-up over each peer (>1: faster)."""
    present = lambda names: [f for f in names if any(f in row for row in summary.values())]  # noqa: E731
    fws = present(["s2l_jax", "s2l_jax_dp", "flax_linen", "flax_linen_dp", "torch_eager", "torch_eager_nomkldnn",
                   "torch_compile", "s2l_jax_cudnn"])
    ratio_cols = [("s2l_jax", p) for p in present(PEERS)] + [("s2l_jax_dp", p) for p in present(DP_PEERS)
                                                              if "s2l_jax_dp" in fws]
    label = lambda ours, p: f"x vs {p}" if ours == "s2l_jax" else f"dp x vs {p}"  # noqa: E731
    head = ["case", *[f"{f} ms" for f in fws], *[label(o, p) for o, p in ratio_cols], "jit s", "temp MB"]
    probe = (f", host matmul probe GFLOP/s (start, after each round) {meta['matmul_gflops']}"
             if meta.get("matmul_gflops") else "")
    lines = [
        f"Run {meta.get('date', '')} on {meta.get('machine', '')}: {meta.get('threads')} threads, "
        f"{meta.get('rounds')} interleaved rounds, load avg (start, end) {meta.get('load_avg_start_end')}"
        f"{', huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1)' if meta.get('huge_pages') else ''}"
        f"{probe}. "
        "Medians of the rounds' medians (min-max over all calls) in ms, † where rounds differ by more than "
        f"{SPREAD - 1:.0%}, ‡ where other processes used over {CONTENDED:.0%} of the CPUs while a round was timed; "
        "`x vs P` = P's median / s2l_jax's "
        "(> 1: s2l_jax faster); `dp x vs P` the same for s2l_jax_dp (one CPU device per core, batch split). "
        "torch_best = the faster torch eager setting (oneDNN on/off).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    speed = lambda row, ours, p: row.get(ours, {}).get("speedup_vs", {}).get(p)  # noqa: E731
    for case, row in summary.items():
        mine = row.get("s2l_jax", {})
        ratios = [speed(row, o, p) for o, p in ratio_cols]
        cells = [case, *[_fmt(row.get(f)) for f in fws], *[f"{r:.2f}" if r is not None else "-" for r in ratios],
                 f"{mine['compile_s']:.2f}" if mine.get("compile_s") is not None else "-",
                 f"{mine['temp_mb']:.1f}" if mine.get("temp_mb") is not None else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for ours in present(OURS):
        peers = [p for o, p in ratio_cols if o == ours]
        wins = {p: sum(1 for r in summary.values() if (speed(r, ours, p) or 0) > 1) for p in peers}
        if wins:
            lines.append(f"{ours} faster on: " + ", ".join(f"{p} {n}/{len(summary)}" for p, n in wins.items()))
    return "\n".join(lines) + "\n"


def bar_chart(summary: dict, path: Path) -> None:
    """Median ms per case and framework, log scale, one group of bars per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fws = [f for f in ("s2l_jax", "s2l_jax_dp", "s2l_jax_cudnn", "flax_linen", "flax_linen_dp", "torch_eager",
                       "torch_eager_nomkldnn", "torch_compile")
           if any(f in r for r in summary.values())]
    cases = list(summary)
    width = 0.8 / max(1, len(fws))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(cases)), 4))
    for k, fw in enumerate(fws):
        xs = [i + k * width for i in range(len(cases))]
        ys = [summary[c][fw]["median_ms"] if fw in summary[c] else 0 for c in cases]
        ax.bar(xs, ys, width, label=fw)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))], cases, rotation=45, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("median ms per call")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
