"""Smoke test of the benchmark harness: it runs a worker subprocess and writes JSON / markdown / PNG (no speed)."""

import json
from pathlib import Path

import pytest

from benchmarks.cases import Case, grid
from benchmarks.report import markdown, summarize
from benchmarks.run import main


def test_grid_has_the_twelve_cases():
    names = {c.name for c in grid()}
    assert len(names) == 12 and "large/attention/train" in names and "seed/last/infer" in names


def test_summary_ratios_and_torch_best_for_both_s2l_jax_settings():
    runs = [{"framework": f, "case": "seed/last/infer", "samples_ms": [ms], "peak_rss_mb": 1.0,
             "rss_growth_mb": 0.0} for f, ms in [("s2l_jax", 1.0), ("s2l_jax_dp", 0.5), ("torch_eager", 4.0),
                                                 ("torch_eager_nomkldnn", 2.0), ("flax_linen", 3.0)]]
    summary = summarize(runs)
    s = summary["seed/last/infer"]
    assert s["torch_best"]["median_ms"] == 2.0
    assert s["s2l_jax"]["speedup_vs"] == {"s2l_jax_dp": 0.5, "flax_linen": 3.0, "torch_best": 2.0,
                                          "torch_eager": 4.0, "torch_eager_nomkldnn": 2.0}
    assert s["s2l_jax_dp"]["speedup_vs"] == {"s2l_jax": 2.0, "flax_linen": 6.0, "torch_best": 4.0,
                                             "torch_eager": 8.0, "torch_eager_nomkldnn": 4.0}
    table = markdown(summary, {})
    assert "| dp x vs torch_best |" in table and "| 0.5 (0.5-0.5) |" in table and "| 4.00 |" in table
    assert "s2l_jax_dp faster on: s2l_jax 1/1, flax_linen 1/1, torch_best 1/1" in table


def test_run_writes_results_and_hands_workers_the_huge_pages_setting(tmp_path):
    main(["--quick", "--frameworks", "s2l_jax", "--cases", "seed/last/infer", "--budget", "0.05",
          "--out", str(tmp_path), "--name", "smoke", "--huge-pages"])
    data = json.loads((tmp_path / "smoke.json").read_text())
    assert list(data["summary"]) == ["seed/last/infer"]
    run = data["runs"][0]
    assert run["samples_ms"] and run["compile_s"] > 0 and run["page_faults_per_call"] >= 0
    assert run["other_cpu_share"] is None or 0 <= run["other_cpu_share"] <= 1
    assert "glibc.malloc.hugetlb=1" in run["glibc_tunables"] and data["meta"]["huge_pages"]
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "model name" in cpuinfo.read_text():  # Linux x86: name, family, model, AVX-512
        assert " (family " in data["meta"]["machine"]
    assert len(data["meta"]["matmul_gflops"]) == 2 and min(data["meta"]["matmul_gflops"]) > 0  # start, round 1
    assert (tmp_path / "smoke.md").read_text().count("seed/last/infer") == 1
    assert "host matmul probe GFLOP/s" in (tmp_path / "smoke.md").read_text()
    assert (tmp_path / "smoke.png").stat().st_size > 0


@pytest.mark.slow  # ~26 s: three frameworks' processes; the LSTM grid's run is checked above
def test_gru_grid_runs_for_every_framework_kind_and_unknown_cells_are_refused(tmp_path):
    assert Case.parse("large/mean/train/gru") == Case("mean", "large", "train", "gru")
    assert len(grid(cells=("lstm", "gru"))) == 24 and Case.parse("seed/last/infer").cell == "lstm"
    main(["--quick", "--cells", "gru", "--frameworks", "s2l_jax,flax_linen,torch_eager", "--cases", "seed/last/train",
          "--budget", "0.05", "--out", str(tmp_path), "--name", "gru"])
    summary = json.loads((tmp_path / "gru.json").read_text())["summary"]
    assert list(summary) == ["seed/last/train/gru"]
    assert set(summary["seed/last/train/gru"]["s2l_jax"]["speedup_vs"]) >= {"flax_linen", "torch_eager"}
    with pytest.raises(SystemExit):
        main(["--quick", "--cells", "gru,lstn", "--out", str(tmp_path)])


def test_profile_attributes_time_to_the_per_step_ops_of_the_loop():
    from benchmarks.profile import op_times

    times, faults = op_times("seed/last/infer", calls=2, options={"native": False})  # the XLA scan
    per_step = {name: ms for name, (ms, n) in times.items() if n == 20}  # the seed size runs 20 time steps
    assert per_step and all(ms > 0 for ms in per_step.values()) and faults >= 0
    assert any(name.startswith("while") for name in times)  # the loop itself, run once per call
    times, _ = op_times("seed/last/infer", calls=2)  # the native kernel: one custom call per call, no loop
    assert [n for name, (_, n) in times.items() if name.startswith("ffi_call")] == [1]
    assert not any(name.startswith("while") for name in times)


def test_median_weights_rounds_alike_and_marks_rounds_that_disagree():
    # 28 fast calls in round 0, 21 slow ones in round 1: pooling the samples would report the fast round.
    runs = [{"framework": "torch_eager", "case": "large/last/infer", "samples_ms": [ms] * n, "peak_rss_mb": 1.0,
             "rss_growth_mb": 0.0} for ms, n in ((36.7, 28), (48.3, 21), (40.0, 3))]
    runs += [{"framework": "s2l_jax", "case": "large/last/infer", "samples_ms": [39.6] * 20, "peak_rss_mb": 1.0,
              "rss_growth_mb": 0.0}]
    stats = summarize(runs)["large/last/infer"]
    assert stats["torch_eager"]["median_ms"] == 40.0 and stats["torch_eager"]["round_medians_ms"] == [36.7, 48.3, 40.0]
    assert "| 40 (36.7-48.3) † |" in markdown(summarize(runs), {})
    runs[0]["other_cpu_share"] = 0.5  # another process used half the CPUs while round 0 was timed
    assert "| 40 (36.7-48.3) † ‡ |" in markdown(summarize(runs), {})
    assert "| 39.6 (39.6-39.6) |" in markdown(summarize(runs), {})


def test_a_stored_run_is_summarized_again_without_running_anything(tmp_path):
    runs = [{"framework": f, "case": "seed/last/infer", "samples_ms": [ms, ms], "peak_rss_mb": 1.0,
             "rss_growth_mb": 0.0} for f, ms in (("s2l_jax", 1.0), ("torch_eager", 2.0))]
    (tmp_path / "old.json").write_text(json.dumps({"meta": {"rounds": 1}, "summary": {}, "runs": runs}))
    main(["--from-json", str(tmp_path / "old.json")])
    data = json.loads((tmp_path / "old.json").read_text())
    assert data["summary"]["seed/last/infer"]["s2l_jax"]["speedup_vs"]["torch_eager"] == 2.0
    assert "s2l_jax faster on: torch_best 1/1" in (tmp_path / "old.md").read_text()
    assert (tmp_path / "old.png").stat().st_size > 0
