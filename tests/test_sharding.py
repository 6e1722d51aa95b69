"""Data parallelism on 8 fake CPU devices (a subprocess: the device count is fixed when JAX starts)."""

import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import jax
import pytest

from s2l_jax.sharding import use_cpu_devices

SETUP = r"""
import dataclasses
import jax, jax.numpy as jnp, numpy as np
assert jax.device_count() == 8, jax.devices()
from s2l_jax.data import Dataset
from s2l_jax.sharding import data_mesh, data_parallel_grad
from s2l_jax.train import TrainConfig
from s2l_jax.trainer import fit
from test_train import tiny_cfg, tiny_text

data = tiny_text(32)
cfg = TrainConfig(epochs=4, batch_size=8, learning_rate=1e-2, warmup_steps=2)
"""

SCRIPT = SETUP + r"""
one = fit(tiny_cfg("attention"), cfg, data, data, log=lambda s: None, mesh=data_mesh(jax.devices()[:1]))
eight = fit(tiny_cfg("attention"), cfg, data, data, log=lambda s: None)  # default: all 8 devices
leaf = jax.tree.leaves(eight.params)[0]
assert len(leaf.sharding.device_set) == 8 and leaf.sharding.is_fully_replicated, leaf.sharding
worst = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(eight.params)))
assert worst < 1e-5, worst
assert [h["accuracy"] for h in one.history] == [h["accuracy"] for h in eight.history]
def draw_terms(p, rng, batch):  # one row per device: its loss is a uniform draw from that device's key
    return jnp.sum(jax.random.uniform(rng, batch[0].shape)) * p, jnp.float32(batch[0].shape[0])
loss, grad = jax.jit(data_parallel_grad(draw_terms, data_mesh()))(jnp.float32(1), jax.random.key(3), (np.ones(8),))
draws = [jax.random.uniform(jax.random.fold_in(jax.random.key(3), d), (1,))[0] for d in range(8)]
assert len(set(map(float, draws))) == 8 and np.isclose(float(loss), np.mean(draws)), (float(loss), draws)
assert np.isclose(float(grad), float(loss))  # d(loss)/dp: the same mean
try:
    fit(tiny_cfg(), TrainConfig(epochs=1, batch_size=6), data, data, log=lambda s: None)
    raise SystemExit("a batch of 6 over 8 devices was not refused")
except ValueError as e:
    assert "batch size 6 does not split over 8 devices" in str(e), e
from jax.sharding import Mesh
short = dataclasses.replace(cfg, epochs=1, batch_size=4)
try:
    fit(tiny_cfg(), short, data, data, log=lambda s: None, mesh=Mesh(np.array(jax.devices()), ("batch",)))
    raise SystemExit("a mesh without a 'data' axis was not refused")
except ValueError as e:
    assert "the mesh needs a 'data' axis to split batches over, got axes ('batch',)" in str(e), e
from s2l_jax import Predictor, SequenceClassifier
from s2l_jax.sharding import shard_batch
model = SequenceClassifier(tiny_cfg("attention"))
x, lengths = data.inputs[:8], data.lengths[:8]
split = Predictor(model, {"params": eight.params})(*shard_batch((x, lengths), data_mesh()))
assert len(split.sharding.device_set) == 8, split.sharding
whole = Predictor(model, {"params": jax.device_get(eight.params)})(x, lengths)
assert np.abs(np.asarray(split) - np.asarray(whole)).max() < 1e-5
print("max param difference", worst)
"""

EXTENDED_SCRIPT = SETUP + r"""
y = np.stack([data.labels, data.lengths >= 4], 1).astype(np.float32)
multi = Dataset(data.inputs, data.lengths, y, ("first", "long"))
worst_multi = {}
for precision in ("float32", "bfloat16"):
    ml = dataclasses.replace(cfg, epochs=2, precision=precision)
    a, b = (fit(tiny_cfg().replace(num_classes=2), ml, multi, multi, log=lambda s: None, mesh=m).params
            for m in (data_mesh(jax.devices()[:1]), None))
    worst_multi[precision] = max(float(np.max(np.abs(np.asarray(p) - np.asarray(q))))
                                 for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
# bfloat16 matmuls round differently for 8 rows than for 1 per device (plain jit: 5.5e-4 here as well)
assert worst_multi["float32"] < 1e-5 and worst_multi["bfloat16"] < 1e-2, worst_multi
drop = dataclasses.replace(tiny_cfg("attention"), dropout=0.5, num_layers=2, rnn_dropout=0.5)
runs = [fit(drop, dataclasses.replace(cfg, epochs=1), data, data, log=lambda s: None).params for _ in range(2)]
assert all(np.array_equal(a, b) for a, b in zip(*map(jax.tree.leaves, runs))), "dropout per device not repeatable"
assert all(np.isfinite(a).all() for a in jax.tree.leaves(runs[0]))
from jax.sharding import Mesh
grid = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))  # a user's 2-D mesh: 4-way data split
short = dataclasses.replace(cfg, epochs=1, batch_size=4)
a, b = (fit(tiny_cfg(), short, data, data, log=lambda s: None, mesh=m).params
        for m in (data_mesh(jax.devices()[:1]), grid))
worst_grid = max(float(np.max(np.abs(np.asarray(p) - np.asarray(q)))) for p, q in zip(*map(jax.tree.leaves, (a, b))))
assert worst_grid < 1e-5, worst_grid
print("multi-label", worst_multi, "2-D mesh", worst_grid)
"""


# The batch must stay split through the whole step: a reshape that merges time with the sharded batch axis
# (as the LSTM backward's weight-gradient dot once did) makes XLA gather every activation onto every device and
# compute the gradients there twice over. Only the gradient all-reduce may cross devices, once per step. Under
# plain jit (no mesh given to make_steps) XLA all-reduces each gradient tensor, and autodiff of a scan
# accumulates dW_hh inside the time loop, so XLA all-reduces it there, once per time step; with the mesh, the
# step sums every gradient in one all-reduce whatever the scan (`sharding.data_parallel_grad`).
NO_GATHER_SCRIPT = r"""
import dataclasses, re, sys
import jax, numpy as np, optax
assert jax.device_count() == 2, jax.devices()
from s2l_jax import ScanOptions
from s2l_jax.model import SequenceClassifier
from s2l_jax.sharding import data_mesh, replicate, shard_batch
from s2l_jax.train import make_steps
from test_train import tiny_cfg, tiny_text
import s2l_jax.pooling


def loop_bodies(hlo):
    names = set(re.findall(r"body=%([^ ,]+)", hlo))
    blocks = re.findall(r"^%(\S+) .*?\{\n(.*?)^\}", hlo, re.M | re.S)  # (name, instructions) per computation
    return [text for name, text in blocks if name in names]


s2l_jax.pooling.SCORE_ROWS = 16  # attention scores in chunks of 2 time steps, as at large sizes
data = tiny_text(8)
mesh = data_mesh()
remat = sys.argv[1] == "remat"  # 3 recomputed chunks of 2 steps
options = ScanOptions(custom_vjp=sys.argv[1] != "autodiff", remat=remat, chunk=2 if remat else 16)
cases = [("last", "lstm", 0), ("mean", "lstm", 0), ("attention", "lstm", 0), ("mean", "lstm", 4), ("mean", "gru", 0),
         ("last", "rnn_tanh", 0)]
for pooling, cell, proj in cases:
    model = SequenceClassifier(dataclasses.replace(tiny_cfg(pooling), cell=cell, proj_size=proj), options=options)
    params = model.init(jax.random.key(0), data.inputs[:1], lengths=data.lengths[:1])["params"]
    tx = optax.adam(1e-3)
    batch = shard_batch((data.inputs, data.lengths, data.labels, np.ones(8, np.float32)), mesh)
    state = replicate((params, tx.init(params)), mesh)
    for step_mesh in (None, mesh):
        train_step, eval_step = make_steps(model, tx, mesh=step_mesh)
        hlo = train_step.lower(*state, np.int32(0), *batch).compile().as_text()
        ops = {op: hlo.count(op + "(") for op in ("all-gather", "all-to-all", "collective-permute", "all-reduce")}
        assert ops["all-gather"] == ops["all-to-all"] == ops["collective-permute"] == 0, (pooling, cell, proj, ops)
        assert ops["all-reduce"] == 1 if step_mesh else ops["all-reduce"] >= 1, (pooling, cell, proj, ops)
        bodies = loop_bodies(hlo)
        assert bodies or "s2l_S2l" in hlo, "no time loop (while loop or native RNN kernel) found"
        if any("all-reduce(" in b for b in bodies):
            print("all-reduce in the time loop:", "mesh" if step_mesh else "jit", pooling, cell, proj)
    hlo = eval_step.lower(state[0], *batch).compile().as_text()
    assert "all-gather(" not in hlo and "all-to-all(" not in hlo, pooling
print("no gathers")
"""


# Not the session's cache: executables compiled for several fake devices are of no use to the one-device process.
_FAKE_DEVICES_CACHE = tempfile.mkdtemp(prefix="s2l-test-xla-cache-fake-devices-")


def _run_on_fake_devices(script: str, count: int, *args: str) -> str:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.path.dirname(__file__), "JAX_COMPILATION_CACHE_DIR": _FAKE_DEVICES_CACHE,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    out = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_training_sharded_over_8_devices_equals_one_device_and_refuses_unsplittable_batches():
    out = _run_on_fake_devices(SCRIPT, 8)
    assert "max param difference" in out
    print(out)


@pytest.mark.slow  # ~60 s on 2 cores: each fit compiles for 8 devices
def test_multi_label_dropout_and_a_2d_mesh_train_over_8_devices_as_on_one():
    assert "2-D mesh" in _run_on_fake_devices(EXTENDED_SCRIPT, 8)


@pytest.mark.slow  # ~60 s: the compiled steps' collectives; the 8-device fits above check the numbers
def test_data_parallel_steps_keep_the_batch_split_and_all_reduce_gradients_once_per_step():
    out = _run_on_fake_devices(NO_GATHER_SCRIPT, 2, "custom")
    assert "no gathers" in out and "all-reduce in the time loop" not in out, out


@pytest.mark.slow  # ~70 s: proves the check above can fail, not the product
def test_the_all_reduce_check_sees_per_step_all_reduces_of_autodiff_and_remat_under_plain_jit():
    with ThreadPoolExecutor(2) as pool:  # two processes, one per core
        autodiff, remat = pool.map(lambda mode: _run_on_fake_devices(NO_GATHER_SCRIPT, 2, mode), ("autodiff", "remat"))
    # The check can see a per-step all-reduce: under plain jit autodiff of the scan has one in every case.
    assert "no gathers" in autodiff and autodiff.count("all-reduce in the time loop: jit") == 6, autodiff
    assert "all-reduce in the time loop: mesh" not in autodiff, autodiff
    # remat recomputes chunk by chunk in a loop; plain jit all-reduces each chunk's weight gradients there
    assert "no gathers" in remat and "all-reduce in the time loop: jit" in remat, remat
    assert "all-reduce in the time loop: mesh" not in remat, remat



CLASS_WEIGHTS_SCRIPT = r"""
import jax, numpy as np, optax, torch
import parity
from s2l_jax.data import Dataset
from s2l_jax.model import SequenceClassifier
from s2l_jax.sharding import data_mesh
from s2l_jax.train import make_steps
from test_train import tiny_cfg, tiny_text

assert jax.device_count() == 2, jax.devices()
d = tiny_text(8, seed=3)
o = np.argsort(d.labels, kind="stable")  # device 0 holds class a's rows, device 1 class b's
data = Dataset(d.inputs[o], d.lengths[o], d.labels[o], d.label_names)
cfg = tiny_cfg("attention")
model = SequenceClassifier(cfg)
params = model.init(jax.random.key(0), data.inputs[:1], lengths=data.lengths[:1])["params"]
for weights in ((0.3, 2.5), (0.01, 0.02)):
    step = make_steps(model, optax.sgd(1.0), mesh=data_mesh(), class_weights=weights)[0]
    new, _, loss, _ = step(params, optax.sgd(1.0).init(params), 0, data.inputs, data.lengths, data.labels,
                           np.ones(len(data), np.float32))
    tm = parity.to_torch({"params": params}, parity.TorchSequenceClassifier(cfg))
    logits = tm(torch.from_numpy(data.inputs).long(), torch.from_numpy(data.lengths).long())
    ref = torch.nn.functional.cross_entropy(logits, torch.from_numpy(data.labels).long(), weight=torch.tensor(weights))
    ref.backward()
    assert abs(float(loss) - ref.item()) < 1e-6, (weights, float(loss), ref.item())
    grads = parity.to_torch({"params": jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), params, new)})
    for name, p in tm.named_parameters():
        np.testing.assert_allclose(grads[name].numpy(), p.grad.numpy(), rtol=0, atol=1e-5, err_msg=name)
print("weighted as torch")
"""


def test_class_weights_over_devices_give_torch_weighted_mean_of_the_whole_batch():
    assert "weighted as torch" in _run_on_fake_devices(CLASS_WEIGHTS_SCRIPT, 2)


def _s2l(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, "-m", "s2l_jax", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_cpu_devices_flag_splits_training_and_prediction_over_cores(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(10)))
    out = tmp_path / "o"
    train = _s2l("train", "--data", str(f), "--epochs", "2", "--batch-size", "8", "--out", str(out),
                 "--cpu-devices", "2")
    assert train.returncode == 0, train.stderr[-2000:]
    assert "each batch of 8 split over 2 cpu devices" in train.stdout
    # 1000 batches: with all of them in flight at once, XLA:CPU's all-reduce rendezvous deadlocked (aborted at 40 s)
    g = tmp_path / "many.csv"
    g.write_text("text\n" + "".join(" ".join(["good fine" if i % 3 else "bad awful"] * (1 + i % 16)) + "\n"
                                     for i in range(2000)))
    split, single = (_s2l("predict", str(out), "--data", str(g), "--batch-size", "2", *extra)
                     for extra in (["--cpu-devices", "2"], []))
    assert split.returncode == 0 and single.returncode == 0, split.stderr[-2000:] + single.stderr[-2000:]
    assert split.stdout == single.stdout and len(split.stdout.split()) == 2000
    bad = _s2l("train", "--data", str(f), "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "b"),
               "--cpu-devices", "3")
    assert bad.returncode == 2 and "batch size 8 does not split over 3 devices" in bad.stderr, bad.stderr[-2000:]


def test_use_cpu_devices_refuses_a_negative_count_and_a_running_backend():
    with pytest.raises(ValueError, match="must be >= 0"):
        use_cpu_devices(-1)
    jax.numpy.zeros(1).block_until_ready()
    with pytest.raises(RuntimeError, match=r"use_cpu_devices\(2\) must run before JAX computes anything"):
        use_cpu_devices(2)


def test_use_cpu_devices_counts_cores_where_the_os_has_no_affinity_call(monkeypatch):
    """macOS and Windows have no `os.sched_getaffinity`: `--cpu-devices 0` must still count the cores."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    jax.numpy.zeros(1).block_until_ready()
    with pytest.raises(RuntimeError, match=rf"use_cpu_devices\({os.cpu_count()}\) must run before"):
        use_cpu_devices(0)
