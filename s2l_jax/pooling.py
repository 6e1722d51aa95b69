"""Heads that condense time: last hidden state, mean, max and additive attention, masked by lengths.

Without a mask each is exactly the seed's formula; with one they pool over valid steps only.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2l_jax.layers import Linear
from s2l_jax.recurrent import balanced_chunk

POOLINGS = ("last", "mean", "max", "attention")
SCORE_ROWS = 1024  # (time step, batch) rows per chunk of attention scores


def last_pool(h_n: jax.Array) -> jax.Array:
    """torch's `h_n[-1]`: the last layer's final state (the reverse direction's when bidirectional)."""
    return h_n[-1]


def mean_pool(outputs: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean over time of `(batch, time, features)`; over valid steps when `mask` `(batch, time)` is given.

    Written as a contraction over time (accumulated in at least float32), not `jnp.mean`: XLA CPU's reduction
    over the time axis of the recurrence's time-major output ran 30x slower than the same sum as a dot
    (large benchmark: 35 ms -> 1.1 ms; masked 15 -> 13 ms, gradient 27 -> 17 ms).
    """
    acc = jnp.promote_types(outputs.dtype, jnp.float32)
    if mask is None:
        total = jnp.einsum("t,btf->bf", jnp.ones(outputs.shape[1], outputs.dtype), outputs,
                           preferred_element_type=acc)
        return (total / outputs.shape[1]).astype(outputs.dtype)
    w = mask.astype(outputs.dtype)  # (batch, time)
    total = jnp.einsum("bt,btf->bf", w, outputs, preferred_element_type=acc)
    return (total / jnp.sum(w, axis=1, keepdims=True, dtype=acc)).astype(outputs.dtype)


def max_pool(outputs: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Max over time (over valid steps when masked). Its gradient goes to the first step holding the maximum, as
    torch's `max(dim)` sends it; `jnp.max` would split it among tied steps."""
    if mask is not None:
        outputs = jnp.where(mask[..., None], outputs, -jnp.inf)
    first = jnp.argmax(outputs, axis=1)  # (batch, features)
    return jnp.take_along_axis(outputs, first[:, None, :], axis=1)[:, 0]


def attention_weights(scores: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Softmax over time of `(batch, time, 1)` scores; masked steps get weight 0. Max-subtracted, so large
    scores do not overflow."""
    if mask is not None:
        scores = jnp.where(mask[..., None], scores, -jnp.inf)
    return jax.nn.softmax(scores, axis=1)


def attention_scores_reference(outputs: jax.Array, weight: jax.Array, bias: jax.Array, v: jax.Array) -> jax.Array:
    """The seed's scores `tanh(outputs @ weight.T + bias) @ v.T`, `(batch, time, 1)`, in one pass."""
    return jnp.tanh(outputs @ weight.T + bias) @ v.T


@jax.custom_jvp
def attention_scores(outputs: jax.Array, weight: jax.Array, bias: jax.Array, v: jax.Array) -> jax.Array:
    """`attention_scores_reference` computed over chunks of ~SCORE_ROWS (time step, batch) rows, so the tanh
    intermediate stays in cache instead of a `(batch * time, features)` buffer (large benchmark: ~12% of the
    attention model's inference). Derivatives are the reference's: only the primal is chunked."""
    batch, total, features = outputs.shape
    steps = balanced_chunk(total, max(1, SCORE_ROWS // batch))
    if steps >= total:
        return attention_scores_reference(outputs, weight, bias, v)
    pad = (-total) % steps
    x = jnp.pad(jnp.swapaxes(outputs, 0, 1), ((0, pad), (0, 0), (0, 0)))  # (time + pad, batch, features)
    # the batch stays an axis of its own (not merged into rows), so a batch-sharded call computes locally
    chunks = x.reshape(-1, steps, batch, features)  # (chunks, steps, batch, features)
    scores = jax.lax.map(lambda c: attention_scores_reference(c, weight, bias, v), chunks)  # (chunks, steps, batch, 1)
    return jnp.swapaxes(scores.reshape(total + pad, batch, 1)[:total], 0, 1)  # (batch, time, 1)


@attention_scores.defjvp
def _attention_scores_jvp(primals, tangents):
    return jax.jvp(attention_scores_reference, primals, tangents)


class AttentionPool(nn.Module):
    """The seed's additive attention: `attn` Linear(D, D), tanh, `v` Linear(D, 1, bias=False), softmax over
    time, weighted sum of the outputs."""

    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, outputs: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        d = outputs.shape[-1]
        weight, bias = Linear(d, name="attn", param_dtype=self.param_dtype).weights(d)
        v, _ = Linear(1, use_bias=False, name="v", param_dtype=self.param_dtype).weights(d)
        scores = attention_scores(outputs, weight, bias, v)  # (batch, time, 1)
        return jnp.sum(outputs * attention_weights(scores, mask), axis=1)  # (batch, features)
