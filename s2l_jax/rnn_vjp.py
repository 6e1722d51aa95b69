"""One Elman RNN direction (torch's nn.RNN, tanh or relu) with a hand-written VJP, as `lstm_vjp` does.

h' = act(x W_ih^T + h W_hh^T + b) with b = b_ih + b_hh. The forward scan stores each step's pre-activation
(the dot's output) with h; the backward does one `(batch, H) x (H, H)` matmul per step, and the weight
gradients (one matmul on `[x, h_prev]`) and the input gradient after the loop. Autodiff of the scan instead
accumulates `dW_hh` per step (and, under data parallelism, all-reduces it per step).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from s2l_jax.scan_vjp import make_direction, make_remat_direction, scan_projected

# `Static`: (reverse, chunk, unroll, relu). x `(time, batch, input)` with time % chunk == 0.


def _act(pre: jax.Array, relu: bool) -> jax.Array:
    return jax.nn.relu(pre) if relu else jnp.tanh(pre)


def forward(static, weights, x, mask, carry, keep: bool):
    """The scan; with `keep` also returns per-step residuals (h_prev, pre-activation).

    weights `(W_ih (H, input), W_hh (H, H), summed bias (H,))`, carry `(h,)`.
    """
    reverse, chunk, unroll, relu = static
    w_ih, w_hh, bias = weights
    w_ih_t, w_hh_t = w_ih.T, w_hh.T  # (input, H), (H, H)

    def step(h, inputs):
        xg, m_t = inputs  # (batch, H)
        pre = xg + h @ w_hh_t
        h_new = _act(pre, relu)
        res = (h, pre) if keep else ()
        if m_t is None:
            return h_new, (h_new, res)
        return jnp.where(m_t, h_new, h), (jnp.where(m_t, h_new, jnp.zeros_like(h_new)), res)

    h, (ys, res) = scan_projected(step, carry[0], x, mask, lambda a: a @ w_ih_t + bias, reverse=reverse,
                                  chunk=chunk, unroll=unroll)
    return ys, (h,), res


def backward(static, weights, x, mask, res, dys, dcarry):
    """Gradients `((dW_ih, dW_hh, dbias), dx, (dh0,))` from `forward`'s residuals and the cotangents."""
    reverse, _, unroll, relu = static
    w_ih, w_hh, _ = weights
    h_prev, pre = res
    (dh_last,) = dcarry

    def step(dh, inputs):
        dy, m_t, p = inputs
        dh_new = dh + dy
        if m_t is not None:
            dh_new = jnp.where(m_t, dh_new, jnp.zeros_like(dh_new))
        if relu:
            da = jnp.where(p > 0, dh_new, jnp.zeros_like(dh_new))
        else:
            t = jnp.tanh(p)  # as the forward computed it
            da = dh_new * (1.0 - t * t)
        dh_old = da @ w_hh  # (batch, H)
        if m_t is not None:
            dh_old = dh_old + jnp.where(m_t, jnp.zeros_like(dh), dh)
        return dh_old, da

    dh0, da = lax.scan(step, dh_last, (dys, mask, pre), reverse=not reverse, unroll=unroll)
    # one weight-gradient dot on [x, h_prev], time and batch contracted as two axes (see lstm_vjp)
    xh = jnp.concatenate([x, h_prev], axis=-1)  # (time, batch, input + H)
    dw = lax.dot_general(da, xh, (((0, 1), (0, 1)), ((), ())))  # (H, input + H)
    dw_ih, dw_hh = dw[:, : x.shape[-1]], dw[:, x.shape[-1]:]
    dx = da @ w_ih  # (time, batch, input)
    return (dw_ih, dw_hh, jnp.sum(da, axis=(0, 1))), dx, (dh0,)


# (static, (W_ih, W_hh, bias), x, mask, (h0,)) -> (outputs (time, batch, H) zero where masked, (h,))
rnn_direction = make_direction(forward, backward)
rnn_direction_remat = make_remat_direction(forward, backward)
