"""LSTM and GRU recurrences as native CPU kernels (`native/*.cc`, XLA FFI custom calls), built on first use.

XLA:CPU runs a scan's body an op at a time on one thread: at small sizes its loop overhead and the lone second
core cost it against torch's oneDNN LSTM (benchmarks/README.md, looks 5-14). The kernels run each step as tiles
(a register-blocked dot and the cell update) shared with XLA's intra-op threads. They replace the two scans of
`lstm_vjp` / `gru_vjp` only: same residuals, same weight-gradient dots after the loop. The library is compiled
with the system's C++ compiler for this CPU (`-march=native`) into a cache directory; without a compiler the XLA
scan runs instead.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

NATIVE = Path(__file__).parent / "native"
SOURCES = (NATIVE / "lstm_cpu.cc", NATIVE / "gru_cpu.cc")
KERNELS = ("S2lLstmForward", "S2lLstmBackward", "S2lGruForward", "S2lGruBackward")
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno")


def _cache_dir() -> Path:
    root = os.environ.get("S2L_NATIVE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "s2l_jax", "native")
    return Path(root)


def _cpu_id() -> str:
    """What `-march=native` depends on."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor()


def build(compiler: str | None = None) -> Path:
    """Compile the kernels (or reuse a build of the same source, FFI headers, compiler and CPU); returns the
    library's path."""
    compiler = compiler or os.environ.get("CXX") or "g++"
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler {compiler!r} on PATH to build the native RNN kernels")
    include = Path(jax.ffi.include_dir())
    headers = [h.read_text() for h in sorted((include / "xla" / "ffi" / "api").glob("*.h"))]  # the FFI's ABI
    sources = [f.read_text() for f in (*SOURCES, NATIVE / "tiles.h")]
    key = hashlib.sha256("\0".join([*sources, *headers, compiler, *FLAGS, _cpu_id()]).encode())
    out = _cache_dir() / f"s2l_rnn_{key.hexdigest()[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_out = Path(tmp) / out.name
        cmd = [compiler, *FLAGS, "-I", str(include), *map(str, SOURCES), "-o", str(tmp_out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"building the native RNN kernels failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
        os.replace(tmp_out, out)  # atomic: concurrent builds of the same key write the same file
    return out


def _supported_platform() -> bool:
    return platform.system() == "Linux" and platform.machine() in ("x86_64", "aarch64")


@functools.cache
def _registered() -> tuple[int, str | None]:
    """Build, load and register the kernels once per process: (hidden units per tile, None) or (0, why not)."""
    if not _supported_platform():
        return 0, f"native RNN kernels are for Linux on x86_64/aarch64, not {platform.system()} {platform.machine()}"
    try:
        lib = ctypes.CDLL(str(build()))
    except (OSError, RuntimeError) as e:
        return 0, str(e)
    for name in KERNELS:
        jax.ffi.register_ffi_target(f"s2l_{name}", jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
    return lib.S2lTileUnits(), None


def available() -> bool:
    """Whether the kernels run in this process (built and registered); where they should but cannot (Linux
    without a compiler, say) warns once with the reason."""
    _, reason = _registered()
    if reason is not None and _supported_platform():
        _warn_once(reason)
    return reason is None


def units() -> int:
    """Hidden units per tile of this CPU's build (its vector width: 16 with AVX-512, 8 with AVX2, 4 with NEON)."""
    return _registered()[0]


@functools.cache
def _warn_once(reason: str) -> None:
    warnings.warn(f"{reason}; LSTMs and GRUs run the XLA scan instead", RuntimeWarning, stacklevel=3)


def applies(dtypes: set, projected: bool) -> bool:
    """Whether an LSTM or GRU direction runs on the kernels: input and weights float32 on the CPU, no proj_size,
    the kernels built. A hidden size that is not a multiple of `units()` runs padded (`pad_direction`)."""
    return (jax.default_backend() == "cpu" and set(dtypes) == {jnp.dtype(jnp.float32)} and not projected
            and available())


def padded(hidden: int) -> int:
    """`hidden` rounded up to a multiple of `units()`, the kernels' tile width."""
    return -(-hidden // units()) * units()


def pad_direction(p: dict) -> dict:
    """One direction's torch-named params with every gate's block grown to `padded(H)` units of zero weights
    and biases (other entries as they are). A zero unit's pre-activations are 0, so from a zero state it stays
    exactly 0 (LSTM: c = 0.5 c + 0.5 tanh(0), h = 0.5 tanh(c); GRU: h = 0.5 tanh(0) + 0.5 h) and adds exact
    zeros to the real units' dots; gradients flow back through the padding to the unpadded params."""
    rows, hidden = p["weight_hh"].shape  # (gates * H, H): 4 gates for an LSTM, 3 for a GRU
    gates, extra = rows // hidden, padded(hidden) - hidden
    if not extra:
        return p

    def grow(a: jax.Array, recurrent: bool = False) -> jax.Array:  # (gates * H, ...) -> (gates * H', ...)
        blocks = a.reshape(gates, hidden, *a.shape[1:])
        widths = [(0, 0), (0, extra)] + [(0, extra if recurrent else 0)] * (a.ndim - 1)  # W_hh: its columns too
        blocks = jnp.pad(blocks, widths)
        return blocks.reshape(gates * (hidden + extra), *blocks.shape[2:])

    grown = {k: grow(p[k]) for k in ("weight_ih", "bias_ih", "bias_hh") if k in p}
    return {**p, **grown, "weight_hh": grow(p["weight_hh"], recurrent=True)}


def pack_forward(w_joint: jax.Array, bias: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`[W_hh; W_ih]^T` `(H + input, 4H)` and bias `(4H,)` -> per-tile blocks `(H/U, H + input, 4U)`, `(H/U, 4U)`
    with U = `units()`: block u holds the gate columns [i f g o] of hidden units uU..uU+U-1."""
    k, four_h = w_joint.shape
    u = units()
    wp = w_joint.reshape(k, 4, four_h // 4 // u, u).transpose(2, 0, 1, 3).reshape(-1, k, 4 * u)
    return wp, bias.reshape(4, four_h // 4 // u, u).transpose(1, 0, 2).reshape(-1, 4 * u)


def _mask(mask: jax.Array | None, time: int, batch: int) -> jax.Array:
    if mask is None:
        return jnp.ones((time, batch), jnp.uint8)
    return jnp.broadcast_to(mask[..., 0], (time, batch)).astype(jnp.uint8)


def _batch_parallel(run: Callable, batch_dims: tuple, result_batch_dims: tuple, rule: str) -> Callable:
    """`run` (shapes from its operands) partitioned over the batch: each device runs the kernel on its rows, so
    a batch-sharded jit does not gather the batch around the custom call. `*batch_dims`: each one's batch axis."""

    def shardings(mesh, axis, dims, shapes):
        return tuple(NamedSharding(mesh, PartitionSpec(*[axis if i == d else None for i in range(len(s.shape))]))
                     for d, s in zip(dims, shapes, strict=True))

    def batch_axis(arg_shapes):
        spec = arg_shapes[0].sharding.spec
        return spec[batch_dims[0]] if len(spec) > batch_dims[0] else None

    def infer(mesh, arg_shapes, result_shape):
        return shardings(mesh, batch_axis(arg_shapes), result_batch_dims, result_shape)

    def partition(mesh, arg_shapes, result_shape):
        axis = batch_axis(arg_shapes)
        return (mesh, run, shardings(mesh, axis, result_batch_dims, result_shape),
                shardings(mesh, axis, batch_dims, arg_shapes))

    partitioned = custom_partitioning(run)
    partitioned.def_partition(partition, infer_sharding_from_operands=infer, sharding_rule=rule)

    @custom_vmap
    def call(*args):
        return partitioned(*args)

    @call.def_vmap
    def _one_at_a_time(size, batched, *args):  # custom_partitioning has no batching rule: loop over the vmap axis
        args = [a if b else jnp.broadcast_to(a, (size, *a.shape)) for a, b in zip(args, batched, strict=True)]
        outs = lax.map(lambda a: call(*a), args)  # `call`, so that an outer vmap takes this rule again
        return outs, (True,) * len(outs)

    return call


@functools.cache
def _forward_call(reverse: bool, keep: bool) -> Callable:
    def run(x, mask, wp, bp, h0, c0):
        (time, batch, size), hidden = x.shape, h0.shape[-1]
        res = lambda *shape: jax.ShapeDtypeStruct(shape if keep else (0,), jnp.float32)  # noqa: E731
        state = jax.ShapeDtypeStruct((batch, hidden), jnp.float32)
        outs = (jax.ShapeDtypeStruct((time, batch, hidden), jnp.float32), state, state,
                res(time, batch, hidden + size), res(time, batch, hidden), res(time, batch, 4 * hidden))
        kernel = jax.ffi.ffi_call("s2l_S2lLstmForward", outs)
        return kernel(x, mask, wp, bp, h0, c0, reverse=reverse, keep=keep)

    residuals = "t b k, t b h, t b f" if keep else "z1, z2, z3"
    return _batch_parallel(run, (1, 1, None, None, 0, 0), (1, 0, 0) + ((1, 1, 1) if keep else (None,) * 3),
                           f"t b e, t b, u k g, u g, b h, b h -> t b h, b h, b h, {residuals}")


@functools.cache
def _backward_call(reverse: bool) -> Callable:
    def run(dys, mask, c_prev, pre, whh, dh, dc):
        time, batch, hidden = dys.shape
        state = jax.ShapeDtypeStruct((batch, hidden), jnp.float32)
        outs = (jax.ShapeDtypeStruct((time, batch, 4 * hidden), jnp.float32), state, state)
        kernel = jax.ffi.ffi_call("s2l_S2lLstmBackward", outs)
        return kernel(dys, mask, c_prev, pre, whh, dh, dc, reverse=reverse)

    return _batch_parallel(run, (1, 1, 1, 1, None, 0, 0), (1, 0, 0),
                           "t b h, t b, t b h, t b f, u f s, b h, b h -> t b f, b h, b h")


def forward(x: jax.Array, mask: jax.Array | None, packed: tuple[jax.Array, jax.Array], carry: tuple,
            reverse: bool, keep: bool):
    """`lstm_vjp.forward`'s contract (chunk 1, tanh-form gates): `(ys, (h, c), residuals or ())`."""
    time, batch, _ = x.shape
    h0, c0 = (a.astype(jnp.float32) for a in carry)
    ys, h, c, hx, c_prev, pre = _forward_call(reverse, keep)(x, _mask(mask, time, batch), *packed, h0, c0)
    return ys, (h, c), ((hx, c_prev, pre) if keep else ())


def backward(dys: jax.Array, mask: jax.Array | None, c_prev: jax.Array, pre: jax.Array, w_hh: jax.Array,
             dcarry: tuple, reverse: bool) -> tuple[jax.Array, tuple]:
    """The backward recurrence of `lstm_vjp.backward`: `(da (time, batch, 4H), (dh0, dc0))`."""
    time, batch, hidden = dys.shape
    whh = w_hh.reshape(4 * hidden, hidden // units(), units()).transpose(1, 0, 2)  # (H/U, 4H, U)
    dh, dc = (a.astype(jnp.float32) for a in dcarry)
    da, dh0, dc0 = _backward_call(reverse)(dys.astype(jnp.float32), _mask(mask, time, batch), c_prev, pre, whh, dh, dc)
    return da, (dh0, dc0)


def pack_gru(weights: tuple, tanh_sigmoid: bool = True) -> tuple[jax.Array, jax.Array]:
    """GRU `(W_ih (3H, input), W_hh (3H, H), b_ih, b_hh)` -> per-tile blocks `(H/U, H + input, 4U)`, `(H/U, 4U)`:
    column vectors [r, z, x_n, h_n], the h rows `[W_hr, W_hz, 0, W_hn]^T`, the x rows `[W_ir, W_iz, W_in, 0]^T`,
    bias `[b_ir + b_hr, b_iz + b_hz, b_in, b_hn]`; r and z scaled by 0.5 for the tanh form (exact)."""
    w_ih, w_hh, b_ih, b_hh = weights
    hidden = w_hh.shape[1]
    if tanh_sigmoid:
        scale = jnp.concatenate([jnp.full((2 * hidden,), 0.5, w_hh.dtype), jnp.ones((hidden,), w_hh.dtype)])
        w_ih, w_hh, b_ih, b_hh = w_ih * scale[:, None], w_hh * scale[:, None], b_ih * scale, b_hh * scale
    gates = lambda w: jnp.split(w.T, 3, axis=-1)  # noqa: E731  (rows, H) each: r, z, n
    (hr, hz, hn), (xr, xz, xn) = gates(w_hh), gates(w_ih)
    w = jnp.concatenate([jnp.stack([hr, hz, jnp.zeros_like(hn), hn], 1),
                         jnp.stack([xr, xz, xn, jnp.zeros_like(xn)], 1)])  # (H + input, 4, H)
    (bir, biz, bin_), (bhr, bhz, bhn) = jnp.split(b_ih, 3), jnp.split(b_hh, 3)
    bias = jnp.stack([bir + bhr, biz + bhz, bin_, bhn])  # (4, H)
    u = units()
    wp = w.reshape(w.shape[0], 4, hidden // u, u).transpose(2, 0, 1, 3).reshape(-1, w.shape[0], 4 * u)
    return wp, bias.reshape(4, hidden // u, u).transpose(1, 0, 2).reshape(-1, 4 * u)


@functools.cache
def _gru_forward_call(reverse: bool, keep: bool) -> Callable:
    def run(x, mask, wp, bp, h0):
        (time, batch, _), hidden = x.shape, h0.shape[-1]
        res = lambda *shape: jax.ShapeDtypeStruct(shape if keep else (0,), jnp.float32)  # noqa: E731
        outs = (jax.ShapeDtypeStruct((time, batch, hidden), jnp.float32),
                jax.ShapeDtypeStruct((batch, hidden), jnp.float32), res(time, batch, hidden),
                res(time, batch, 2 * hidden), res(time, batch, hidden), res(time, batch, hidden))
        return jax.ffi.ffi_call("s2l_S2lGruForward", outs)(x, mask, wp, bp, h0, reverse=reverse, keep=keep)

    residuals = "t b h, t b f, t b h, t b h" if keep else "z1, z2, z3, z4"
    return _batch_parallel(run, (1, 1, None, None, 0), (1, 0) + ((1, 1, 1, 1) if keep else (None,) * 4),
                           f"t b e, t b, u k g, u g, b h -> t b h, b h, {residuals}")


@functools.cache
def _gru_backward_call(reverse: bool) -> Callable:
    def run(dys, mask, h_prev, pre_rz, pre_n, h_n, whh, dh):
        time, batch, hidden = dys.shape
        grads = jax.ShapeDtypeStruct((time, batch, 3 * hidden), jnp.float32)
        outs = (grads, grads, jax.ShapeDtypeStruct((batch, hidden), jnp.float32))
        kernel = jax.ffi.ffi_call("s2l_S2lGruBackward", outs)
        return kernel(dys, mask, h_prev, pre_rz, pre_n, h_n, whh, dh, reverse=reverse)

    return _batch_parallel(run, (1, 1, 1, 1, 1, 1, None, 0), (1, 1, 0),
                           "t b h, t b, t b h, t b f, t b h, t b h, u g s, b h -> t b g, t b g, b h")


def gru_forward(x: jax.Array, mask: jax.Array | None, packed: tuple[jax.Array, jax.Array], carry: tuple,
                reverse: bool, keep: bool):
    """`gru_vjp.forward`'s contract (tanh-form gates): `(ys, (h,), residuals (h_prev, pre_rz, pre_n, h_n) or ())`."""
    time, batch, _ = x.shape
    ys, h, *res = _gru_forward_call(reverse, keep)(x, _mask(mask, time, batch), *packed, carry[0].astype(jnp.float32))
    return ys, (h,), (tuple(res) if keep else ())


def gru_backward(dys: jax.Array, mask: jax.Array | None, res: tuple, w_hh: jax.Array, dh: jax.Array,
                 reverse: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The backward recurrence of `gru_vjp.backward`: `(dxg, dhg (time, batch, 3H), dh0)`."""
    time, batch, hidden = dys.shape
    whh = w_hh.reshape(3 * hidden, hidden // units(), units()).transpose(1, 0, 2)  # (H/U, 3H, U)
    return _gru_backward_call(reverse)(dys.astype(jnp.float32), _mask(mask, time, batch), *res, whh,
                                       dh.astype(jnp.float32))
