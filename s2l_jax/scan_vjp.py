"""Wrap one cell's hand-written forward and backward scans (`lstm_vjp`, `gru_vjp`, `rnn_vjp`) as `custom_vjp`s.

Each cell module gives
    forward(static, weights, x, mask, carry, keep) -> (ys, carry, residuals or ())
    backward(static, weights, x, mask, residuals, dys, dcarry) -> (dweights, dx, dcarry0)
over time-major `x` `(time, batch, input)`, mask `(time, batch, 1)` bool or None, `weights` and `carry` tuples;
`static[0]` is `reverse`. `make_direction` stores the residuals of every step; `make_remat_direction` stores only
the carry entering each chunk of steps and recomputes that chunk's residuals in the backward pass (memory ~
time / chunk carries plus one chunk's residuals, for about one extra forward pass).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax


def _cotangents(dweights, dx, dcarry, weights, x, mask, carry):
    """Cast to the primals' dtypes; the bool mask's cotangent is float0 zeros."""
    cast = lambda g, like: g.astype(like.dtype)  # noqa: E731
    mask_ct = None if mask is None else jnp.zeros(mask.shape, jax.dtypes.float0)
    return (jax.tree.map(cast, tuple(dweights), weights), cast(dx, x), mask_ct,
            jax.tree.map(cast, tuple(dcarry), carry))


def make_direction(forward: Callable, backward: Callable) -> Callable:
    """`direction(static, weights, x, mask, carry) -> (ys, carry)` with every step's residuals stored."""

    @partial(jax.custom_vjp, nondiff_argnums=(0,))
    def direction(static, weights, x, mask, carry):
        ys, carry, _ = forward(static, weights, x, mask, carry, keep=False)
        return ys, carry

    def fwd(static, weights, x, mask, carry):
        ys, last, res = forward(static, weights, x, mask, carry, keep=True)
        return (ys, last), (weights, x, mask, carry, res)

    def bwd(static, saved, cotangents):
        weights, x, mask, carry, res = saved
        dys, dlast = cotangents
        dweights, dx, dcarry = backward(static, weights, x, mask, res, dys, dlast)
        return _cotangents(dweights, dx, dcarry, weights, x, mask, carry)

    direction.defvjp(fwd, bwd)
    return direction


def _chunks(a: jax.Array | None, chunk: int) -> jax.Array | None:
    return None if a is None else a.reshape(a.shape[0] // chunk, chunk, *a.shape[1:])


def scan_projected(step: Callable, carry, x: jax.Array, mask, project: Callable, *, reverse: bool, chunk: int,
                   unroll: int):
    """`lax.scan(step, carry, (project(x), mask))` with the input projection done per step (chunk 1) or per
    chunk of `chunk` steps in one matmul (an outer scan over chunks). Returns (carry, outputs over time)."""
    if chunk == 1:
        def flat_step(c, inputs):
            return step(c, (project(inputs[0]), inputs[1]))

        return lax.scan(flat_step, carry, (x, mask), reverse=reverse, unroll=unroll)

    def chunk_body(c, inputs):
        x_c, m_c = inputs  # (chunk, batch, input), (chunk, batch, 1) or None
        return lax.scan(step, c, (project(x_c), m_c), reverse=reverse, unroll=unroll)

    carry, out = lax.scan(chunk_body, carry, (_chunks(x, chunk), _chunks(mask, chunk)), reverse=reverse)
    return carry, jax.tree.map(lambda a: a.reshape(x.shape[0], *a.shape[2:]), out)


def make_remat_direction(forward: Callable, backward: Callable) -> Callable:
    """`direction((static, chunk), weights, x, mask, carry)`, recomputing each chunk's residuals backward.

    time % chunk == 0. The weight gradients are summed chunk by chunk inside the backward loop.
    """

    def run(static, weights, x, mask, carry, keep_starts: bool):
        inner, chunk = static

        def body(c, inputs):
            x_c, m_c = inputs  # (chunk, batch, input), (chunk, batch, 1) or None
            ys, c_new, _ = forward(inner, weights, x_c, m_c, c, keep=False)
            return c_new, (ys, c if keep_starts else ())

        last, (ys, starts) = lax.scan(body, carry, (_chunks(x, chunk), _chunks(mask, chunk)), reverse=inner[0])
        return ys.reshape(x.shape[0], *ys.shape[2:]), last, starts

    @partial(jax.custom_vjp, nondiff_argnums=(0,))
    def direction(static, weights, x, mask, carry):
        ys, last, _ = run(static, weights, x, mask, carry, keep_starts=False)
        return ys, last

    def fwd(static, weights, x, mask, carry):
        ys, last, starts = run(static, weights, x, mask, carry, keep_starts=True)
        return (ys, last), (weights, x, mask, carry, starts)

    def bwd(static, saved, cotangents):
        inner, chunk = static
        weights, x, mask, carry, starts = saved
        dys, dlast = cotangents

        def body(state, inputs):
            dc, total = state
            x_c, m_c, dy_c, start = inputs
            _, _, res = forward(inner, weights, x_c, m_c, start, keep=True)
            dw, dx_c, dc = backward(inner, weights, x_c, m_c, res, dy_c, dc)
            total = jax.tree.map(lambda t, g: t + g.astype(t.dtype), total, tuple(dw))
            return (tuple(dc), total), dx_c

        zeros = jax.tree.map(lambda w: jnp.zeros(w.shape, jnp.promote_types(w.dtype, jnp.float32)), weights)
        inputs = (_chunks(x, chunk), _chunks(mask, chunk), _chunks(dys, chunk), starts)
        (dcarry, dweights), dx = lax.scan(body, (tuple(dlast), zeros), inputs, reverse=not inner[0])
        return _cotangents(dweights, dx.reshape(x.shape), dcarry, weights, x, mask, carry)

    direction.defvjp(fwd, bwd)
    return direction
