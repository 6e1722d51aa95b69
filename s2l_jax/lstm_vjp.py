"""One LSTM direction with a hand-written VJP: the forward scan stores each step's gate pre-activations (the
dot's output, already in memory) with `(h, c)`, the backward scan recomputes the activations from them (the same
ops, so bit-identical) and does one `(batch, 4H) x (4H, H)` matmul per step; the weight gradients (one matmul
on `[h_prev, x]`) and the input gradient are large matmuls after the loop. Storing the activations instead cost
an extra pass per step: 5-9% slower.

With the input projected per step, each step is one dot, `[h, x_t] @ [W_hh; W_ih]^T`, not two dots and an add:
one op fewer per step, which kept XLA:CPU's loop body at 8 ops when it stores its outputs (large benchmark:
1.04-1.10x faster inference, training 0.98-1.04x; benchmarks/README.md, ninth look). The forward stores that
`[h, x_t]` as the residual the weight gradients need, so the backward does not concatenate it again.

Autodiff of `lax.scan` instead accumulates `dW_hh` (and `dW_ih` when the projection is inside the loop) with a
matmul per step and recomputes the gates. Same function, same gradients (up to float rounding); used by
`recurrent.scan_direction` when `ScanOptions.custom_vjp` is set. With `proj_size` each step also projects h by
`W_hr`; the backward maps the projected gradient back through it, and `dW_hr` is one more dot after the loop.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from s2l_jax import native_rnn
from s2l_jax.scan_vjp import make_direction, make_remat_direction, scan_projected

# `Static`: (reverse, chunk, unroll, tanh_sigmoid, native). x `(time, batch, input)` with time % chunk == 0.
# native: the recurrences run on `native_rnn`'s CPU kernels (chunk 1, tanh_sigmoid, no proj_size; float32).


def _gate_scale(hidden: int, dtype) -> jax.Array:
    """0.5 for the sigmoid gates i, f, o and 1 for g: sigmoid(a) = 0.5 * tanh(0.5 * a) + 0.5 (scaling is exact)."""
    half, one = jnp.full((hidden,), 0.5, dtype), jnp.ones((hidden,), dtype)
    return jnp.concatenate([half, half, one, half])


def _activations(pre: jax.Array, tanh_sigmoid: bool) -> jax.Array:
    """Gate pre-activations `(batch, 4H)` -> activations [i, f, g, o]; with tanh_sigmoid `pre` is pre-scaled."""
    if tanh_sigmoid:
        t = jnp.tanh(pre)
        i, f, g, o = jnp.split(t, 4, axis=-1)
        return jnp.concatenate([0.5 * i + 0.5, 0.5 * f + 0.5, g, 0.5 * o + 0.5], axis=-1)
    i, f, g, o = jnp.split(pre, 4, axis=-1)
    return jnp.concatenate([jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)], axis=-1)


def _scaled(weights, tanh_sigmoid: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(W_ih, W_hh, bias) with the sigmoid gates' rows scaled by 0.5 when tanh_sigmoid."""
    w_ih, w_hh, bias = weights[:3]
    if not tanh_sigmoid:
        return w_ih, w_hh, bias
    scale = _gate_scale(w_hh.shape[0] // 4, w_hh.dtype)
    return w_ih * scale[:, None], w_hh * scale[:, None], bias * scale


def joint_weights(weights, tanh_sigmoid: bool) -> tuple[jax.Array, jax.Array]:
    """`([W_hh; W_ih]^T (P + input, 4H), bias (4H,))` as the per-step dot takes them (scaled as `_scaled`)."""
    w_ih, w_hh, bias = _scaled(weights, tanh_sigmoid)
    return jnp.concatenate([w_hh.T, w_ih.T], axis=0), bias


def forward(static, weights, x, mask, carry, keep: bool, joint: tuple | None = None):
    """The scan; with `keep` also returns per-step residuals (h_prev, c_prev, gate pre-activations), where with
    chunk 1 h_prev is `[h_prev, x_t]` `(batch, P + input)`.

    weights `(W_ih (4H, input), W_hh (4H, P), summed bias (4H,))` and, with proj_size P, `W_hr (P, H)`
    (without, P = H); carry `(h (batch, P), c (batch, H))`. `joint`: `joint_weights(weights, ...)` computed
    once ahead (chunk 1 only), so that inference does not lay the weights out again on every call.
    """
    reverse, chunk, unroll, tanh_sigmoid, native = static
    if native:  # `joint` may hold the weights packed ahead for the kernel (`native_rnn.pack_forward`)
        packed = joint if joint is not None and joint[0].ndim == 3 else native_rnn.pack_forward(
            *(joint if joint is not None else joint_weights(weights, tanh_sigmoid)))
        return native_rnn.forward(x, mask, packed, tuple(carry), reverse, keep)
    w_hr_t = weights[3].T if len(weights) == 4 else None  # (H, P)
    joint_dot = chunk == 1  # per-step projection: one dot over [h, x_t] (see the module docstring)
    if joint_dot:
        w_joint, bias = joint if joint is not None else joint_weights(weights, tanh_sigmoid)  # (P + input, 4H)
    else:
        w_ih, w_hh, bias = _scaled(weights, tanh_sigmoid)
        w_ih_t, w_hh_t = w_ih.T, w_hh.T  # (input, 4H), (P, 4H)

    def step(carry, inputs):
        h, c = carry
        xg_t, m_t = inputs  # x_t (batch, input) with the joint dot, else its projection (batch, 4H)
        if joint_dot:
            hx = jnp.concatenate([h, xg_t], axis=-1)  # (batch, P + input)
            pre = hx @ w_joint + bias
        else:
            hx = h
            pre = xg_t + h @ w_hh_t  # (batch, 4H); pre-scaled with tanh_sigmoid
        i, f, g, o = jnp.split(_activations(pre, tanh_sigmoid), 4, axis=-1)
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        if w_hr_t is not None:
            h_new = h_new @ w_hr_t  # (batch, P)
        res = (hx, c, pre) if keep else ()
        if m_t is None:
            return (h_new, c_new), (h_new, res)
        carry = (jnp.where(m_t, h_new, h), jnp.where(m_t, c_new, c))
        return carry, (jnp.where(m_t, h_new, jnp.zeros_like(h_new)), res)

    project = (lambda a: a) if joint_dot else (lambda a: a @ w_ih_t + bias)
    carry, (ys, res) = scan_projected(step, tuple(carry), x, mask, project, reverse=reverse,
                                      chunk=chunk, unroll=unroll)
    return ys, carry, res


def backward(static, weights, x, mask, res, dys, dcarry):
    """Gradients `((dW_ih, dW_hh, dbias[, dW_hr]), dx, (dh0, dc0))` from `forward`'s residuals and cotangents."""
    reverse, chunk, unroll, tanh_sigmoid, native = static
    w_ih, w_hh = weights[:2]
    w_hr = weights[3] if len(weights) == 4 else None  # (P, H)
    h_prev, c_prev, pre = res  # h_prev: [h_prev, x] (time, batch, P + input) when chunk == 1
    dh_n, dc_n = dcarry

    def step(carry, inputs):
        dh, dc = carry
        dy, m_t, c, p = inputs
        i, f, g, o = jnp.split(_activations(p, tanh_sigmoid), 4, axis=-1)  # as the forward computed them
        t = jnp.tanh(f * c + i * g)
        dh_new = dh + dy  # (batch, P)
        if m_t is not None:
            dh_new = jnp.where(m_t, dh_new, jnp.zeros_like(dh_new))
            dc_in = jnp.where(m_t, dc, jnp.zeros_like(dc))
        else:
            dc_in = dc
        dh_cell = dh_new if w_hr is None else dh_new @ w_hr  # (batch, H): d (o * tanh(c))
        dc_new = dc_in + dh_cell * o * (1.0 - t * t)
        da = jnp.concatenate([dc_new * g * i * (1.0 - i), dc_new * c * f * (1.0 - f),
                              dc_new * i * (1.0 - g * g), dh_cell * t * o * (1.0 - o)], axis=-1)  # (batch, 4H)
        dh_old = da @ w_hh  # (batch, P)
        dc_old = dc_new * f
        if m_t is not None:
            dh_old = dh_old + jnp.where(m_t, jnp.zeros_like(dh), dh)
            dc_old = dc_old + jnp.where(m_t, jnp.zeros_like(dc), dc)
        return (dh_old, dc_old), (da, () if w_hr is None else (dh_new, o * t))

    if native:
        da, (dh0, dc0) = native_rnn.backward(dys, mask, c_prev, pre, w_hh, (dh_n, dc_n), reverse)
        proj = ()
    else:
        (dh0, dc0), (da, proj) = lax.scan(step, (dh_n, dc_n), (dys, mask, c_prev, pre), reverse=not reverse,
                                          unroll=unroll)
    # one (4H, P + input) weight-gradient dot: XLA CPU's dot contracting over time * batch ran as slowly at
    # N = input as at N = input + H (large benchmark: 137 ms for the two, 99 ms for one on the concatenation).
    # Contracting time and batch as two axes (no reshape) lets a batch-sharded step reduce partial sums
    # instead of gathering the batch.
    hx = h_prev if chunk == 1 else jnp.concatenate([h_prev, x], axis=-1)  # (time, batch, P + input)
    dw = lax.dot_general(da, hx, (((0, 1), (0, 1)), ((), ())))  # (4H, P + input)
    dw_hh, dw_ih = dw[:, : w_hh.shape[1]], dw[:, w_hh.shape[1]:]
    dx = da @ w_ih  # (time, batch, input)
    dweights = (dw_ih, dw_hh, jnp.sum(da, axis=(0, 1)))
    if w_hr is not None:
        dh_p, h_cell = proj  # (time, batch, P), (time, batch, H)
        dweights += (lax.dot_general(dh_p, h_cell, (((0, 1), (0, 1)), ((), ()))),)  # (P, H)
    return dweights, dx, (dh0, dc0)


# (static, (W_ih, W_hh, bias[, W_hr]), x, mask, (h0, c0)) -> (outputs (time, batch, P) zero where masked, (h, c))
lstm_direction = make_direction(forward, backward)
lstm_direction_remat = make_remat_direction(forward, backward)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def lstm_direction_laid_out(static, weights, joint, x, mask, carry):
    """`lstm_direction` (chunk 1) with `joint_weights` given: inference only, as its weights are not
    the params a gradient would be for."""
    ys, carry, _ = forward(static, weights, x, mask, carry, keep=False, joint=joint)
    return ys, carry


def _laid_out_fwd(static, weights, joint, x, mask, carry):
    return lstm_direction_laid_out(static, weights, joint, x, mask, carry), None


def _laid_out_bwd(static, residuals, cotangents):
    raise TypeError("LSTM weights laid out ahead (the 'layout' collection of s2l_jax.Predictor) are for inference "
                    "only: differentiate model.apply with the params alone")


lstm_direction_laid_out.defvjp(_laid_out_fwd, _laid_out_bwd)
