"""Torch-exact LSTM, GRU and Elman RNN: pure scans over time and thin flax.linen modules.

Parameters carry torch's `state_dict` names and shapes (`weight_ih_l0`, `bias_hh_l1_reverse`, `weight_hr_l0`, ...),
so converting weights is a rename. Gates are fused into one matmul per step (torch's gate order: LSTM i, f, g, o;
GRU r, z, n). Variable lengths follow `pack_padded_sequence`: padded steps leave the state untouched and output
zeros, so `h_n` is each sequence's last valid state and the reverse direction starts at its last valid token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from s2l_jax import native_rnn
from s2l_jax.cudnn import cudnn_lstm_scan
from s2l_jax.gru_vjp import gru_direction, gru_direction_remat
from s2l_jax.layers import uniform_params
from s2l_jax.lstm_vjp import lstm_direction, lstm_direction_laid_out, lstm_direction_remat
from s2l_jax.masks import check_lengths, lengths_in_range, sequence_mask
from s2l_jax.rnn_vjp import rnn_direction, rnn_direction_remat

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
NUM_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}

PROJECTIONS = ("per_step", "hoisted", "chunked")

Params = dict[str, jax.Array]


@dataclass(frozen=True)
class ScanOptions:
    """How the scan is laid out; every choice computes the same function (tested against the reference).

    input_projection: "per_step" projects x_t inside the scan; "hoisted" projects all steps in one matmul first;
        "chunked" projects `chunk` steps in one matmul inside an outer scan over chunks.
    chunk: at most this many steps per input-projection matmul when chunked, and per recomputed chunk with
        remat (balanced to pad the least).
    fuse_directions: run both directions of a bidirectional layer in one (vmapped) scan instead of two.
    unroll: `lax.scan` unroll factor (of the per-step scan).
    tanh_sigmoid: compute sigmoid(x) as 0.5 * tanh(0.5 * x) + 0.5 (same value; ~1.0x on jaxlib 0.10.2, see benchmarks).
    fold_half: with tanh_sigmoid, fold the 0.5 into the sigmoid gates' weight rows at compute time (exact: a power
        of two), so one tanh covers every gate; stored params stay torch's.
    custom_vjp: use the hand-written backward of `s2l_jax.lstm_vjp` / `gru_vjp` / `rnn_vjp` (stores gate
        pre-activations; weight and input gradients as large matmuls after the loop); otherwise autodiff of the
        scan. Reverse mode only: forward mode (`jax.jvp`, `jax.jacfwd`) needs custom_vjp=False.
    remat: recompute instead of storing each step's intermediates, for long sequences: with custom_vjp the
        backward pass reruns each chunk of `chunk` steps from the carry that entered it (memory ~ time / chunk
        carries plus one chunk); without, `jax.checkpoint` per step (or per chunk when "chunked").
    cudnn: run LSTMs (float32, no proj_size, no inter-layer dropout) on the cuDNN kernel of
        `jax.experimental.rnn` (`s2l_jax.cudnn`; GPU only). The other options then do not apply.
    native: on the CPU, run the recurrence of LSTM and GRU directions that allow it (float32, no proj_size,
        per-step projection, tanh-form gates, custom_vjp) on the kernels of `s2l_jax.native_rnn`, built with the
        system's C++ compiler on first use (the XLA scan where they cannot be built: a warning). A hidden size
        that is not a multiple of their width (16 with AVX-512, 8 with AVX2) runs padded with zero units. A
        program that uses them needs them registered where it runs: for `jax.export`, set native=False.
    """

    input_projection: str = "per_step"
    chunk: int = 16
    fuse_directions: bool = False
    unroll: int = 1
    tanh_sigmoid: bool = True
    fold_half: bool = True
    custom_vjp: bool = True
    remat: bool = False
    cudnn: bool = False
    native: bool = True

    def __post_init__(self):
        if self.input_projection not in PROJECTIONS:
            raise ValueError(f"input_projection must be one of {PROJECTIONS}, got {self.input_projection!r}")
        if self.unroll < 1:
            raise ValueError(f"unroll must be >= 1, got {self.unroll}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")


LAYOUT_KEYS = ("joint", "joint_bias")  # an LSTM direction's weights laid out ahead (`s2l_jax.predictor`)


def param_names(layer: int, reverse: bool) -> dict[str, str]:
    """torch's names for one layer and direction, and those of its laid-out weights (`LAYOUT_KEYS`)."""
    sfx = f"_l{layer}" + ("_reverse" if reverse else "")
    return {k: k + sfx for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr") + LAYOUT_KEYS}


def direction_params(params: Params, layer: int, reverse: bool) -> Params:
    names = param_names(layer, reverse)
    return {k: params[n] for k, n in names.items() if n in params}


def _sigmoid(x: jax.Array, tanh_form: bool) -> jax.Array:
    return 0.5 * jnp.tanh(0.5 * x) + 0.5 if tanh_form else jax.nn.sigmoid(x)


def _project_input(p: Params, x: jax.Array) -> jax.Array:
    """x @ W_ih.T + b_ih: `(..., input)` -> `(..., gates * hidden)`."""
    y = x @ p["weight_ih"].T
    return y + p["bias_ih"] if "bias_ih" in p else y


def _fold_half(cell: str, p: Params) -> Params:
    """Scale the sigmoid gates' rows (LSTM i, f, o; GRU r, z) by 0.5: exact, so tanh(folded) = tanh(0.5 * x)."""
    hidden = p["weight_hh"].shape[0] // NUM_GATES[cell]
    dtype = p["weight_hh"].dtype
    half, one = jnp.full((hidden,), 0.5, dtype), jnp.ones((hidden,), dtype)
    scale = jnp.concatenate([half, half, one, half] if cell == "lstm" else [half, half, one])  # (gates * hidden,)
    out = dict(p)
    for k in ("weight_ih", "weight_hh"):
        out[k] = p[k] * scale[:, None]
    for k in ("bias_ih", "bias_hh"):
        if k in p:
            out[k] = p[k] * scale
    return out


def _folds(cell: str, options: ScanOptions) -> bool:
    return options.tanh_sigmoid and options.fold_half and cell in ("lstm", "gru")


def cell_step(cell: str, p: Params, carry: tuple, xg: jax.Array, tanh_sigmoid: bool = True,
              folded: bool = False) -> tuple:
    """One step of `cell` given the projected input `xg = W_ih x + b_ih` `(batch, gates * hidden)`.

    carry is `(h,)` for GRU/RNN and `(h, c)` for LSTM; returns the new carry. `folded`: `p` and `xg` come from
    `_fold_half` (sigmoid gates pre-scaled by 0.5), so sigmoid(a) is 0.5 * tanh(folded a) + 0.5.
    """
    h = carry[0]
    hg = h @ p["weight_hh"].T  # (batch, gates * hidden)
    if "bias_hh" in p:
        hg = hg + p["bias_hh"]
    if cell == "lstm":
        if folded:
            i, f, g, o = jnp.split(jnp.tanh(xg + hg), 4, axis=-1)
            c = (0.5 * f + 0.5) * carry[1] + (0.5 * i + 0.5) * g
            h = (0.5 * o + 0.5) * jnp.tanh(c)
        else:
            i, f, g, o = jnp.split(xg + hg, 4, axis=-1)
            c = _sigmoid(f, tanh_sigmoid) * carry[1] + _sigmoid(i, tanh_sigmoid) * jnp.tanh(g)
            h = _sigmoid(o, tanh_sigmoid) * jnp.tanh(c)
        if "weight_hr" in p:
            h = h @ p["weight_hr"].T  # (batch, proj_size)
        return (h, c)
    if cell == "gru":
        x_r, x_z, x_n = jnp.split(xg, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(hg, 3, axis=-1)
        if folded:
            r, z = 0.5 * jnp.tanh(x_r + h_r) + 0.5, 0.5 * jnp.tanh(x_z + h_z) + 0.5
        else:
            r = _sigmoid(x_r + h_r, tanh_sigmoid)
            z = _sigmoid(x_z + h_z, tanh_sigmoid)
        n = jnp.tanh(x_n + r * h_n)
        return ((h - n) * z + n,)  # torch's form of (1 - z) * n + z * h
    pre = xg + hg
    return (jnp.tanh(pre) if cell == "rnn_tanh" else jax.nn.relu(pre),)


def balanced_chunk(total: int, chunk: int) -> int:
    """The chunk length <= `chunk` that covers `total` steps in as few chunks with the least padding."""
    n_chunks = -(-total // min(chunk, total))
    return -(-total // n_chunks)


def _pad_to_chunks(x: jax.Array, mask: jax.Array | None, chunk: int) -> tuple[jax.Array, jax.Array | None]:
    """Pad time to a multiple of `chunk`; padded steps are masked out (they leave the state untouched)."""
    total = x.shape[0]
    pad = (-total) % chunk
    if not pad:
        return x, mask
    x = jnp.pad(x, ((0, pad), (0, 0), (0, 0)))
    if mask is None:
        return x, (jnp.arange(total + pad) < total)[:, None, None]  # (time, 1, 1)
    return x, jnp.pad(mask, ((0, pad), (0, 0), (0, 0)))


_DIRECTIONS = {"lstm": (lstm_direction, lstm_direction_remat), "gru": (gru_direction, gru_direction_remat),
               "rnn_tanh": (rnn_direction, rnn_direction_remat), "rnn_relu": (rnn_direction, rnn_direction_remat)}


def direction_weights(cell: str, p: Params) -> tuple:
    """The weights tuple of `lstm_vjp` / `gru_vjp` / `rnn_vjp` from one direction's torch-named params."""
    zero = jnp.zeros(p["weight_hh"].shape[:1], p["weight_hh"].dtype)
    b_ih, b_hh = p.get("bias_ih", zero), p.get("bias_hh", zero)
    weights = (p["weight_ih"], p["weight_hh"]) + ((b_ih, b_hh) if cell == "gru" else (b_ih + b_hh,))
    return weights + ((p["weight_hr"],) if "weight_hr" in p else ())


def uses_native(options: ScanOptions, p: Params, dtype, chunk: int = 1, cell: str = "lstm") -> bool:
    """Whether an LSTM or GRU direction (params `p`, input `dtype`) runs on `native_rnn`'s kernels
    (`ScanOptions.native`)."""
    return (cell in ("lstm", "gru") and options.native and options.custom_vjp and options.tanh_sigmoid and chunk == 1
            and native_rnn.applies({jnp.dtype(dtype), p["weight_hh"].dtype}, "weight_hr" in p))


def _custom(cell: str, p: Params, x: jax.Array, mask, carry0: tuple, reverse: bool, options: ScanOptions):
    """`scan_direction` through the hand-written VJPs of `lstm_vjp`, `gru_vjp` and `rnn_vjp`."""
    total = x.shape[0]
    steps = balanced_chunk(total, options.chunk)
    chunk = {"per_step": 1, "hoisted": total, "chunked": steps}[options.input_projection]
    if options.remat:  # recompute chunks of `steps`, each projected per step or in one matmul
        chunk = min(chunk, steps)
    xp, mp = _pad_to_chunks(x, mask, steps if options.remat else chunk)
    flag = cell == "rnn_relu" if cell.startswith("rnn") else options.tanh_sigmoid
    static = (reverse, chunk, options.unroll, flag)
    hidden = p["weight_hh"].shape[1]  # without proj_size, H
    if cell in ("lstm", "gru"):
        static += (uses_native(options, p, x.dtype, chunk, cell),)
        if static[4]:  # the kernels' width: zero units appended, cut off again below
            p = native_rnn.pad_direction(p)
            carry0 = [jnp.pad(c, ((0, 0), (0, p["weight_hh"].shape[1] - hidden))) for c in carry0]
    weights = direction_weights(cell, p)
    direct, remat = _DIRECTIONS[cell]
    if options.remat:
        ys, carry = remat((static, steps), weights, xp, mp, tuple(carry0))
    elif "joint" in p and chunk == 1 and (p["joint"].ndim == 3) == static[4]:
        # laid out ahead by s2l_jax.predictor (LSTM, inference), packed where it expected the kernels
        ys, carry = lstm_direction_laid_out(static, weights, (p["joint"], p["joint_bias"]), xp, mp, tuple(carry0))
    else:
        ys, carry = direct(static, weights, xp, mp, tuple(carry0))
    if p["weight_hh"].shape[1] != hidden:  # padded for the kernels
        return ys[:total, :, :hidden], tuple(c[:, :hidden] for c in carry)
    return ys[:total], tuple(carry)


def scan_direction(
    cell: str,
    p: Params,
    x: jax.Array,
    mask: jax.Array | None,
    carry0: tuple,
    *,
    reverse: bool = False,
    options: ScanOptions = ScanOptions(),
) -> tuple[jax.Array, tuple]:
    """Run one direction of one layer over time-major `x` `(time, batch, input)`.

    mask `(time, batch, 1)` bool or None; returns outputs `(time, batch, H_out)` (zero where masked) and the
    final carry (each sequence's state after its last valid step).
    """
    if options.custom_vjp:
        return _custom(cell, p, x, mask, carry0, reverse, options)
    folded = _folds(cell, options)
    if folded:
        p = _fold_half(cell, p)
    total = x.shape[0]
    mode = options.input_projection
    chunk = balanced_chunk(total, options.chunk) if mode == "chunked" else 1
    if mode == "chunked":
        x, mask = _pad_to_chunks(x, mask, chunk)
    xs = _project_input(p, x) if mode == "hoisted" else x  # (time, batch, gates * hidden) when hoisted

    def body(carry, inputs):
        xg, m_t = inputs
        new = cell_step(cell, p, carry, xg, options.tanh_sigmoid, folded)
        if m_t is None:
            return new, new[0]
        new = tuple(jnp.where(m_t, n, o) for n, o in zip(new, carry, strict=True))
        return new, jnp.where(m_t, new[0], jnp.zeros_like(new[0]))

    def per_step(carry, inputs):
        return body(carry, (_project_input(p, inputs[0]), inputs[1]))

    def chunk_body(carry, inputs):
        x_c, m_c = inputs  # (chunk, batch, input), (chunk, batch | 1, 1) or None
        return lax.scan(body, carry, (_project_input(p, x_c), m_c), reverse=reverse, unroll=options.unroll)

    if mode != "chunked":
        step = per_step if mode == "per_step" else body
        step = jax.checkpoint(step) if options.remat else step
        carry, ys = lax.scan(step, carry0, (xs, mask), reverse=reverse, unroll=options.unroll)
        return ys, carry
    n_chunks = x.shape[0] // chunk
    xs = x.reshape(n_chunks, chunk, *x.shape[1:])
    ms = None if mask is None else mask.reshape(n_chunks, chunk, *mask.shape[1:])
    run = jax.checkpoint(chunk_body) if options.remat else chunk_body
    carry, ys = lax.scan(run, carry0, (xs, ms), reverse=reverse)
    return ys.reshape(n_chunks * chunk, *ys.shape[2:])[:total], carry


def _bidirectional(cell, pf, pr, x, mask, carry_f, carry_r, options):
    """Both directions of one layer: two scans, or one vmapped scan over a stacked direction axis."""
    if not options.fuse_directions:
        yf, cf = scan_direction(cell, pf, x, mask, carry_f, options=options)
        yr, cr = scan_direction(cell, pr, x, mask, carry_r, reverse=True, options=options)
        return yf, yr, cf, cr
    stack = lambda a, b: jnp.stack([a, b])  # noqa: E731
    p = jax.tree.map(stack, pf, pr)
    xs = stack(x, jnp.flip(x, 0))
    ms = None if mask is None else stack(mask, jnp.flip(mask, 0))
    carry = jax.tree.map(stack, carry_f, carry_r)
    run = lambda p_, x_, m_, c_: scan_direction(cell, p_, x_, m_, c_, options=options)  # noqa: E731
    ys, cs = jax.vmap(run, in_axes=(0, 0, None if mask is None else 0, 0))(p, xs, ms, carry)
    return ys[0], jnp.flip(ys[1], 0), tuple(c[0] for c in cs), tuple(c[1] for c in cs)


def recurrent_scan(
    cell: str,
    params: Params,
    x: jax.Array,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    lengths: jax.Array | None = None,
    initial_state: tuple | None = None,
    dropout: float = 0.0,
    dropout_rng: jax.Array | None = None,
    options: ScanOptions = ScanOptions(),
) -> tuple[jax.Array, tuple]:
    """Multi-layer (bi)directional recurrence over batch-first `x` `(batch, time, input)`.

    params: torch-named arrays. initial_state: `(h_0,)` or `(h_0, c_0)`, each
    `(num_layers * num_directions, batch, features)`, or None for zeros. Dropout (rate `dropout`, given a
    `dropout_rng`) applies to every layer's output except the last, as in torch's training mode.
    Returns output `(batch, time, num_directions * H_out)` and the final states `(h_n,)` or `(h_n, c_n)`.
    """
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; expected one of {CELLS}")
    batch, total = x.shape[0], x.shape[1]
    num_dirs = 2 if bidirectional else 1
    mask = None
    if lengths is not None:
        mask = jnp.transpose(sequence_mask(lengths, total))[:, :, None]  # (time, batch, 1)
    hidden = params["weight_hh_l0"].shape[0] // NUM_GATES[cell]
    h_out = params["weight_hh_l0"].shape[1]
    dtype = jnp.result_type(x.dtype, params["weight_hh_l0"].dtype)
    if initial_state is None:
        initial_state = (jnp.zeros((num_layers * num_dirs, batch, h_out), dtype),)
        if cell == "lstm":
            initial_state += (jnp.zeros((num_layers * num_dirs, batch, hidden), dtype),)
    if options.cudnn:
        if cell != "lstm":
            raise ValueError(f"ScanOptions(cudnn=True) runs LSTMs only, not {cell!r}")
        if dropout > 0.0 and dropout_rng is not None:
            raise ValueError("ScanOptions(cudnn=True) has no inter-layer dropout (cuDNN's masks are not torch's)")
        return cudnn_lstm_scan(params, x, num_layers=num_layers, bidirectional=bidirectional, lengths=lengths,
                               initial_state=initial_state)
    layer_in = jnp.swapaxes(x, 0, 1)  # (time, batch, features)
    finals = []
    for layer in range(num_layers):
        pf = direction_params(params, layer, False)
        carry_f = tuple(s[layer * num_dirs] for s in initial_state)
        if bidirectional:
            pr = direction_params(params, layer, True)
            carry_r = tuple(s[layer * num_dirs + 1] for s in initial_state)
            yf, yr, cf, cr = _bidirectional(cell, pf, pr, layer_in, mask, carry_f, carry_r, options)
            layer_in = jnp.concatenate([yf, yr], axis=-1)  # (time, batch, 2 * H_out)
            finals += [cf, cr]
        else:
            layer_in, cf = scan_direction(cell, pf, layer_in, mask, carry_f, options=options)
            finals.append(cf)
        if dropout > 0.0 and dropout_rng is not None and layer < num_layers - 1:
            keep = jax.random.bernoulli(jax.random.fold_in(dropout_rng, layer), 1.0 - dropout, layer_in.shape)
            layer_in = jnp.where(keep, layer_in / (1.0 - dropout), jnp.zeros_like(layer_in))
    states = tuple(jnp.stack([f[k] for f in finals]) for k in range(len(initial_state)))
    return jnp.swapaxes(layer_in, 0, 1), states


def lstm_scan(params: Params, x: jax.Array, **kwargs) -> tuple[jax.Array, tuple]:
    """`recurrent_scan` for torch's nn.LSTM (states `(h_n, c_n)`)."""
    return recurrent_scan("lstm", params, x, **kwargs)


def gru_scan(params: Params, x: jax.Array, **kwargs) -> tuple[jax.Array, tuple]:
    """`recurrent_scan` for torch's nn.GRU (states `(h_n,)`)."""
    return recurrent_scan("gru", params, x, **kwargs)


def rnn_scan(params: Params, x: jax.Array, nonlinearity: str = "tanh", **kwargs) -> tuple[jax.Array, tuple]:
    """`recurrent_scan` for torch's nn.RNN (states `(h_n,)`)."""
    return recurrent_scan(f"rnn_{nonlinearity}", params, x, **kwargs)


class _Recurrent(nn.Module):
    """Shared body of LSTM/GRU/RNN: torch's constructor options, torch's call convention."""

    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    dropout: float = 0.0
    bidirectional: bool = False
    param_dtype: Any = jnp.float32
    options: ScanOptions = ScanOptions()

    cell: ClassVar[str]  # set by each subclass

    @property
    def output_features(self) -> int:
        return self.hidden_size

    def _check(self):
        if self.hidden_size < 1 or self.num_layers < 1:
            raise ValueError(f"hidden_size and num_layers must be >= 1, got {self.hidden_size}, {self.num_layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")

    def _make_params(self, input_size: int) -> Params:
        gates, hidden, h_out = NUM_GATES[self.cell], self.hidden_size, self.output_features
        num_dirs = 2 if self.bidirectional else 1
        shapes = {}
        for layer in range(self.num_layers):
            layer_in = input_size if layer == 0 else num_dirs * h_out
            for reverse in (False, True)[:num_dirs]:
                names = param_names(layer, reverse)
                direction = {"weight_ih": (gates * hidden, layer_in), "weight_hh": (gates * hidden, h_out)}
                if self.bias:
                    direction.update(bias_ih=(gates * hidden,), bias_hh=(gates * hidden,))
                if h_out != hidden:
                    direction["weight_hr"] = (h_out, hidden)
                shapes.update({names[k]: shape for k, shape in direction.items()})
        return uniform_params(self, shapes, 1.0 / math.sqrt(hidden), self.param_dtype)

    def _state_shapes(self, batch: int | None) -> list[tuple]:
        lead = (self.num_layers * (2 if self.bidirectional else 1),)
        b = () if batch is None else (batch,)
        shapes = [lead + b + (self.output_features,)]
        if self.cell == "lstm":
            shapes.append(lead + b + (self.hidden_size,))
        return shapes

    @nn.compact
    def __call__(self, x: jax.Array, lengths=None, initial_state=None, deterministic: bool = True):
        self._check()
        x = jnp.asarray(x)
        if x.ndim not in (2, 3):
            raise ValueError(
                f"{type(self).__name__} expects input of rank 3 ((batch, time, features) or (time, batch, "
                f"features)) or rank 2 (unbatched (time, features)), got shape {tuple(x.shape)}"
            )
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{type(self).__name__} expects floating-point input, got {x.dtype}")
        unbatched = x.ndim == 2
        if unbatched:
            if lengths is not None:
                raise ValueError("lengths cannot be given with unbatched (rank 2) input")
            x = x[:, None] if not self.batch_first else x[None]
        if not self.batch_first:
            x = jnp.swapaxes(x, 0, 1)  # (batch, time, features)
        batch, total = x.shape[0], x.shape[1]
        if total < 1 or x.shape[-1] < 1:  # torch: "input_size must be greater than zero"
            raise ValueError(f"input has no time steps or no features: shape {tuple(x.shape)}")
        params = {**self._make_params(x.shape[-1]), **self.variables.get("layout", {})}
        if lengths is not None:
            lengths = check_lengths(lengths, batch, total)
        state = self._initial_state(initial_state, None if unbatched else batch, x.dtype)
        if unbatched and state is not None:
            state = tuple(s[:, None] for s in state)
        rng = None if deterministic or self.dropout == 0.0 else self.make_rng("dropout")
        out, states = recurrent_scan(
            self.cell, params, x, num_layers=self.num_layers, bidirectional=self.bidirectional,
            lengths=lengths, initial_state=state, dropout=self.dropout, dropout_rng=rng, options=self.options,
        )
        if lengths is not None:  # under jit, lengths outside [1, T] give NaN rows, never a clamped or empty answer
            ok = lengths_in_range(lengths, total)  # (batch,)
            out = jnp.where(ok[:, None, None], out, jnp.nan)
            states = tuple(jnp.where(ok[None, :, None], s, jnp.nan) for s in states)
        if not self.batch_first:
            out = jnp.swapaxes(out, 0, 1)
        if unbatched:
            out = out[:, 0] if not self.batch_first else out[0]
            states = tuple(s[:, 0] for s in states)
        return out, (states if self.cell == "lstm" else states[0])

    def _initial_state(self, initial_state, batch: int | None, dtype) -> tuple | None:
        if initial_state is None:
            return None
        if self.cell == "lstm" and not (isinstance(initial_state, (tuple, list)) and len(initial_state) == 2):
            raise ValueError("LSTM initial_state must be a pair (h_0, c_0)")
        state = tuple(initial_state) if self.cell == "lstm" else (initial_state,)
        expected = self._state_shapes(batch)
        names = ("h_0", "c_0")
        state = tuple(jnp.asarray(s) for s in state)
        for name, s, shape in zip(names, state, expected, strict=False):
            if tuple(s.shape) != shape:
                raise ValueError(f"initial state {name} has shape {tuple(s.shape)}, expected {shape}")
            if s.dtype != dtype:
                raise TypeError(f"initial state {name} has dtype {s.dtype}, the input {dtype} (torch requires "
                                "the same)")
        return state


class LSTM(_Recurrent):
    """torch.nn.LSTM: returns `(output, (h_n, c_n))`; `proj_size > 0` projects h to that size."""

    proj_size: int = 0
    cell: ClassVar[str] = "lstm"

    @property
    def output_features(self) -> int:
        if not 0 <= self.proj_size < self.hidden_size:
            raise ValueError(f"proj_size must lie in [0, hidden_size={self.hidden_size}), got {self.proj_size}")
        return self.proj_size or self.hidden_size


class GRU(_Recurrent):
    """torch.nn.GRU: returns `(output, h_n)`."""

    cell: ClassVar[str] = "gru"


class RNN(_Recurrent):
    """torch.nn.RNN (Elman) with `nonlinearity` "tanh" or "relu": returns `(output, h_n)`."""

    nonlinearity: str = "tanh"

    @property
    def cell(self) -> str:
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {self.nonlinearity!r}")
        return f"rnn_{self.nonlinearity}"


def make_encoder(cell: str, hidden_size: int, **kwargs) -> _Recurrent:
    """The module for a cell name in `CELLS` (kwargs: torch's constructor options)."""
    if cell == "lstm":
        return LSTM(hidden_size, **kwargs)
    if kwargs.pop("proj_size", 0):
        raise ValueError(f"proj_size is only defined for LSTM, not {cell!r}")
    if cell == "gru":
        return GRU(hidden_size, **kwargs)
    if cell in ("rnn_tanh", "rnn_relu"):
        return RNN(hidden_size, nonlinearity=cell[4:], **kwargs)
    raise ValueError(f"unknown cell {cell!r}; expected one of {CELLS}")

