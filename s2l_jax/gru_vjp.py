"""One GRU direction with a hand-written VJP, as `lstm_vjp` does for the LSTM.

torch's GRU: r = sigmoid(a_r), z = sigmoid(a_z) with a = x W_ih^T + b_ih + h W_hh^T + b_hh on the r, z rows;
n = tanh(x_n + r * h_n) with x_n = (x W_ih^T + b_ih)_n, h_n = (h W_hh^T + b_hh)_n; h' = (h - n) * z + n.
The forward scan stores per step the r, z pre-activations, n's pre-activation and h_n (all already computed),
with h; the backward recomputes the activations from them (the same ops, so bit-identical) and does one
`(batch, 3H) x (3H, H)` matmul per step; the weight and input gradients are large matmuls after the loop.
Autodiff of the scan instead accumulates `dW_hh` with a matmul per step, which under data parallelism also
all-reduces it once per step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from s2l_jax import native_rnn
from s2l_jax.scan_vjp import make_direction, make_remat_direction, scan_projected

# `Static`: (reverse, chunk, unroll, tanh_sigmoid, native). x `(time, batch, input)` with time % chunk == 0.
# native: the recurrences run on `native_rnn`'s CPU kernels (chunk 1, tanh_sigmoid; float32).


def _gate_scale(hidden: int, dtype) -> jax.Array:
    """0.5 for r and z, 1 for n: sigmoid(a) = 0.5 * tanh(0.5 * a) + 0.5, the 0.5 folded in (exact)."""
    half, one = jnp.full((hidden,), 0.5, dtype), jnp.ones((hidden,), dtype)
    return jnp.concatenate([half, half, one])


def _rz(pre_rz: jax.Array, tanh_sigmoid: bool) -> tuple[jax.Array, jax.Array]:
    """r, z from their pre-activations `(batch, 2H)` (pre-scaled by 0.5 with tanh_sigmoid)."""
    rz = 0.5 * jnp.tanh(pre_rz) + 0.5 if tanh_sigmoid else jax.nn.sigmoid(pre_rz)
    return jnp.split(rz, 2, axis=-1)


def forward(static, weights, x, mask, carry, keep: bool):
    """The scan; with `keep` also returns per-step residuals (h_prev, r/z pre-activations, n's, h_n).

    weights `(W_ih (3H, input), W_hh (3H, H), b_ih (3H,), b_hh (3H,))`, carry `(h,)`.
    """
    reverse, chunk, unroll, tanh_sigmoid, native = static
    if native:
        return native_rnn.gru_forward(x, mask, native_rnn.pack_gru(weights, tanh_sigmoid), carry, reverse, keep)
    w_ih, w_hh, b_ih, b_hh = weights
    hidden = w_hh.shape[1]
    if tanh_sigmoid:
        scale = _gate_scale(hidden, w_hh.dtype)
        w_ih, w_hh, b_ih = w_ih * scale[:, None], w_hh * scale[:, None], b_ih * scale
        b_hh = b_hh * scale
    w_ih_t, w_hh_t = w_ih.T, w_hh.T  # (input, 3H), (H, 3H)

    def step(h, inputs):
        xg, m_t = inputs  # (batch, 3H)
        hg = h @ w_hh_t + b_hh  # (batch, 3H)
        pre_rz = xg[:, : 2 * hidden] + hg[:, : 2 * hidden]
        r, z = _rz(pre_rz, tanh_sigmoid)
        h_n = hg[:, 2 * hidden:]
        pre_n = xg[:, 2 * hidden:] + r * h_n
        n = jnp.tanh(pre_n)
        h_new = (h - n) * z + n
        res = (h, pre_rz, pre_n, h_n) if keep else ()
        if m_t is None:
            return h_new, (h_new, res)
        return jnp.where(m_t, h_new, h), (jnp.where(m_t, h_new, jnp.zeros_like(h_new)), res)

    h, (ys, res) = scan_projected(step, carry[0], x, mask, lambda a: a @ w_ih_t + b_ih, reverse=reverse,
                                  chunk=chunk, unroll=unroll)
    return ys, (h,), res


def backward(static, weights, x, mask, res, dys, dcarry):
    """Gradients `((dW_ih, dW_hh, db_ih, db_hh), dx, (dh0,))` from `forward`'s residuals and the cotangents."""
    reverse, _, unroll, tanh_sigmoid, native = static
    w_ih, w_hh, _, _ = weights
    h_prev, pre_rz, pre_n, h_n = res
    (dh_last,) = dcarry

    def step(dh, inputs):
        dy, m_t, h, p_rz, p_n, hn = inputs
        r, z = _rz(p_rz, tanh_sigmoid)  # as the forward computed them
        n = jnp.tanh(p_n)
        dh_new = dh + dy
        if m_t is not None:
            dh_new = jnp.where(m_t, dh_new, jnp.zeros_like(dh_new))
        da_n = dh_new * (1.0 - z) * (1.0 - n * n)  # d pre_n
        da_r = da_n * hn * r * (1.0 - r)
        da_z = dh_new * (h - n) * z * (1.0 - z)
        dxg = jnp.concatenate([da_r, da_z, da_n], axis=-1)  # (batch, 3H): d (x W_ih^T + b_ih)
        dhg = jnp.concatenate([da_r, da_z, da_n * r], axis=-1)  # (batch, 3H): d (h W_hh^T + b_hh)
        dh_old = dh_new * z + dhg @ w_hh  # (batch, H)
        if m_t is not None:
            dh_old = dh_old + jnp.where(m_t, jnp.zeros_like(dh), dh)
        return dh_old, (dxg, dhg)

    if native:
        dxg, dhg, dh0 = native_rnn.gru_backward(dys, mask, res, w_hh, dh_last, reverse)
    else:
        dh0, (dxg, dhg) = lax.scan(step, dh_last, (dys, mask, h_prev, pre_rz, pre_n, h_n), reverse=not reverse,
                                   unroll=unroll)
    # time and batch contracted as two axes (no reshape): a batch-sharded step then reduces partial sums
    contract = (((0, 1), (0, 1)), ((), ()))
    dw_ih = lax.dot_general(dxg, x, contract)  # (3H, input)
    dw_hh = lax.dot_general(dhg, h_prev, contract)  # (3H, H)
    dx = dxg @ w_ih  # (time, batch, input)
    return (dw_ih, dw_hh, jnp.sum(dxg, axis=(0, 1)), jnp.sum(dhg, axis=(0, 1))), dx, (dh0,)


# (static, (W_ih, W_hh, b_ih, b_hh), x, mask, (h0,)) -> (outputs (time, batch, H) zero where masked, (h,))
gru_direction = make_direction(forward, backward)
gru_direction_remat = make_remat_direction(forward, backward)
