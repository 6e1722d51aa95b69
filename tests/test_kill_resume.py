"""Crash safety end to end: `s2l train` killed with SIGKILL mid-run, then `--resume`d, ends bit-identical to an
uninterrupted run, and no checkpoint on disk is ever partial."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from s2l_jax.checkpoint import latest_checkpoint, list_checkpoints
from s2l_jax.weights import read_safetensors


def train_cmd(data, out, *extra):
    return [sys.executable, "-m", "s2l_jax", "train", "--data", str(data), "--out", str(out), "--preset", "attention",
            "--hidden-size", "8", "--epochs", "25", "--batch-size", "4", "--checkpoint-every", "2", "--no-progress",
            *extra]


def env():
    """The test session's compilation cache (conftest) shared with the subprocesses: their compiles are repeats."""
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def test_sigkill_mid_run_then_resume_equals_the_uninterrupted_run(tmp_path):
    data = tmp_path / "d.csv"
    rows = [f"{w} movie {i} {'really ' * (i % 4)}{w}" for i in range(20) for w in ("great", "awful")]
    data.write_text("text,label\n" + "".join(f"{r},{'pos' if 'great' in r else 'neg'}\n" for r in rows))
    subprocess.run(train_cmd(data, tmp_path / "full"), check=True, env=env(), capture_output=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(data, run), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        ckpt = latest_checkpoint(run / "checkpoints")
        if ckpt is not None and int(ckpt.name[5:]) >= 40:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "training finished before it could be killed"

    for ckpt in list_checkpoints(run / "checkpoints"):  # every complete-named checkpoint is whole
        json.loads((ckpt / "state.json").read_text())
        read_safetensors(ckpt / "arrays.safetensors")
    killed_at = json.loads((latest_checkpoint(run / "checkpoints") / "state.json").read_text())["step"]
    final = json.loads((latest_checkpoint(tmp_path / "full" / "checkpoints") / "state.json").read_text())["step"]
    assert 40 <= killed_at < final

    subprocess.run(train_cmd(data, run, "--resume"), check=True, env=env(), capture_output=True)
    a = read_safetensors(latest_checkpoint(tmp_path / "full" / "checkpoints") / "arrays.safetensors")[0]
    b = read_safetensors(latest_checkpoint(run / "checkpoints") / "arrays.safetensors")[0]
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert (tmp_path / "full" / "model.safetensors").read_bytes() == (run / "model.safetensors").read_bytes()
    strip = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
             for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert strip == [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                     for line in (run / "metrics.jsonl").read_text().splitlines()]
