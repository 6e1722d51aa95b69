"""Data parallelism on 8 fake CPU devices (a subprocess: the device count is fixed when JAX starts)."""

import os
import subprocess
import sys

import jax

SCRIPT = r"""
import jax, numpy as np
assert jax.device_count() == 8, jax.devices()
from s2l_jax.sharding import data_mesh
from s2l_jax.train import TrainConfig
from s2l_jax.trainer import fit
from test_train import tiny_cfg, tiny_text

data = tiny_text(32)
cfg = TrainConfig(epochs=4, batch_size=8, learning_rate=1e-2, warmup_steps=2)
one = fit(tiny_cfg("attention"), cfg, data, data, log=lambda s: None, mesh=data_mesh(jax.devices()[:1]))
eight = fit(tiny_cfg("attention"), cfg, data, data, log=lambda s: None)  # default: all 8 devices
leaf = jax.tree.leaves(eight.params)[0]
assert len(leaf.sharding.device_set) == 8 and leaf.sharding.is_fully_replicated, leaf.sharding
worst = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(eight.params)))
assert worst < 1e-5, worst
assert [h["accuracy"] for h in one.history] == [h["accuracy"] for h in eight.history]
try:
    fit(tiny_cfg(), TrainConfig(epochs=1, batch_size=6), data, data, log=lambda s: None)
    raise SystemExit("a batch of 6 over 8 devices was not refused")
except ValueError as e:
    assert "batch size 6 does not split over 8 devices" in str(e), e
print("max param difference", worst)
"""


def test_training_sharded_over_8_devices_equals_one_device_and_refuses_unsplittable_batches():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.path.dirname(__file__), "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "max param difference" in out.stdout
    print(out.stdout)

