"""The LSTM recurrence as native CPU kernels (`native/lstm_cpu.cc`, XLA FFI custom calls), built on first use.

XLA:CPU runs a scan's body an op at a time on one thread: at small sizes its loop overhead and the lone second
core cost it against torch's oneDNN LSTM (benchmarks/README.md, looks 5-13). The kernels run each step as tiles
(a register-blocked dot and the cell update) shared with XLA's intra-op threads. They replace `lstm_vjp`'s two
scans only: same residuals, same weight-gradient dots after the loop. The library is compiled with the system's
C++ compiler for this CPU (`-march=native`) into a cache directory; without a compiler the XLA scan runs instead.
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

SOURCE = Path(__file__).parent / "native" / "lstm_cpu.cc"
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
        raise RuntimeError(f"no C++ compiler {compiler!r} on PATH to build the native LSTM kernels")
    include = Path(jax.ffi.include_dir())
    headers = [h.read_text() for h in sorted((include / "xla" / "ffi" / "api").glob("*.h"))]  # the FFI's ABI
    key = hashlib.sha256("\0".join([SOURCE.read_text(), *headers, compiler, *FLAGS, _cpu_id()]).encode())
    out = _cache_dir() / f"lstm_cpu_{key.hexdigest()[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_out = Path(tmp) / out.name
        cmd = [compiler, *FLAGS, "-I", str(include), str(SOURCE), "-o", str(tmp_out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"building the native LSTM kernels failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
        os.replace(tmp_out, out)  # atomic: concurrent builds of the same key write the same file
    return out


def _supported_platform() -> bool:
    return platform.system() == "Linux" and platform.machine() in ("x86_64", "aarch64")


@functools.cache
def _registered() -> tuple[int, str | None]:
    """Build, load and register the kernels once per process: (hidden units per tile, None) or (0, why not)."""
    if not _supported_platform():
        return 0, f"native LSTM kernels are for Linux on x86_64/aarch64, not {platform.system()} {platform.machine()}"
    try:
        lib = ctypes.CDLL(str(build()))
    except (OSError, RuntimeError) as e:
        return 0, str(e)
    for name in ("S2lLstmForward", "S2lLstmBackward"):
        jax.ffi.register_ffi_target(f"s2l_{name}", jax.ffi.pycapsule(getattr(lib, name)), platform="cpu")
    return lib.S2lLstmUnits(), None


def available(warn: bool = True) -> bool:
    """Whether the kernels run in this process (built and registered); where they should but cannot (Linux
    without a compiler, say) warns once with the reason."""
    _, reason = _registered()
    if reason is not None and warn and _supported_platform():
        _warn_once(reason)
    return reason is None


def units() -> int:
    """Hidden units per tile of this CPU's build (its vector width: 16 with AVX-512, 8 with AVX2, 4 with NEON)."""
    return _registered()[0]


@functools.cache
def _warn_once(reason: str) -> None:
    warnings.warn(f"{reason}; LSTMs run the XLA scan instead", RuntimeWarning, stacklevel=3)


def applies(hidden: int, dtypes: set, projected: bool) -> bool:
    """Whether an LSTM direction runs on the kernels: input and weights float32 on the CPU, no proj_size, the
    kernels built, and hidden a multiple of `units()`."""
    return (jax.default_backend() == "cpu" and set(dtypes) == {jnp.dtype(jnp.float32)} and not projected
            and available() and hidden % units() == 0)


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
        outs = lax.map(lambda a: partitioned(*a), args)
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
