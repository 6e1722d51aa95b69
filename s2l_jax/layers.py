"""Linear and Embedding with torch's parameter names, layouts and default initialisation."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from s2l_jax.masks import concrete


def uniform_params(module: nn.Module, shapes: dict[str, tuple[int, ...]], bound: float, dtype: Any
                   ) -> dict[str, jax.Array]:
    """`module.param(name, ...)` for each of `shapes`, all U(-bound, bound) as torch initialises them, cut from
    one random draw: XLA:CPU takes ~0.4 s to compile each threefry call, so a 2-layer bidirectional LSTM's 16
    per-weight draws made its init compile ~3 s. The per-weight keys flax derives go unused and are dropped."""
    sizes = [math.prod(shape) for shape in shapes.values()]
    draw = None
    if module.is_initializing():
        draw = jax.random.uniform(module.make_rng("params"), (sum(sizes),), dtype, -bound, bound)  # (all weights,)

    def init(_key, start: int, shape: tuple[int, ...]) -> jax.Array:
        if draw is None:  # applying: flax shape-checks existing weights against their initialiser, abstractly
            return jnp.zeros(shape, dtype)
        return draw[start:start + math.prod(shape)].reshape(shape)

    starts = np.cumsum([0, *sizes[:-1]])
    return {name: module.param(name, init, int(start), shape)
            for (name, shape), start in zip(shapes.items(), starts, strict=True)}


class Linear(nn.Module):
    """torch.nn.Linear: `weight` `(out, in)`, `bias` `(out,)`, both U(-1/sqrt(in), 1/sqrt(in))."""

    features: int
    use_bias: bool = True
    param_dtype: Any = jnp.float32

    def __call__(self, x: jax.Array) -> jax.Array:
        weight, bias = self.weights(x.shape[-1])
        y = x @ weight.T
        return y if bias is None else y + bias

    @nn.compact
    def weights(self, in_features: int) -> tuple[jax.Array, jax.Array | None]:
        """`(weight, bias or None)` for inputs of `in_features`, created on init: for callers that apply them
        in their own layout (the attention head's chunked scores)."""
        shapes = {"weight": (self.features, in_features)} | ({"bias": (self.features,)} if self.use_bias else {})
        params = uniform_params(self, shapes, 1.0 / math.sqrt(in_features), self.param_dtype)
        return params["weight"], params.get("bias")


def check_token_ids(ids, num_embeddings: int) -> None:
    """Refuse integer ids outside `[0, num_embeddings)` where their values are known (not under jit)."""
    values = concrete(ids)  # before jnp.asarray, which wraps int64 ids past int32 without x64
    if values is None or not values.size or not np.issubdtype(values.dtype, np.integer):
        return
    if values.min() >= 0 and values.max() < num_embeddings:  # the usual case, in ~2 us (Predictor calls it)
        return
    bad = np.argwhere((values < 0) | (values >= num_embeddings))
    if bad.size:
        where = tuple(int(i) for i in bad[0])
        raise ValueError(f"token id {int(values[where])} at index {list(where)} is outside the vocabulary "
                         f"[0, {num_embeddings}) ({len(bad)} such ids)")


class Embedding(nn.Module):
    """torch.nn.Embedding: `weight` `(num_embeddings, dim)` ~ N(0, 1), the padding row zero and never trained.

    Ids are checked when concrete (a clear error for any id outside [0, num_embeddings)). Under jit, where
    values are unknown, an out-of-range id looks up NaN instead of clamping silently, so the logits and the loss
    turn NaN and training's NaN check stops.
    """

    num_embeddings: int
    features: int
    padding_idx: int | None = None
    param_dtype: Any = jnp.float32

    def _init(self, key, shape, dtype=jnp.float32):
        weight = jax.random.normal(key, shape, dtype)
        if self.padding_idx is not None:
            weight = weight.at[self.padding_idx].set(0)
        return weight

    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        given = ids
        ids = jnp.asarray(ids)
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise TypeError(f"token ids must be integers, got dtype {ids.dtype}")
        check_token_ids(given, self.num_embeddings)
        weight = self.param("weight", self._init, (self.num_embeddings, self.features), self.param_dtype)
        in_range = ((ids >= 0) & (ids < self.num_embeddings))[..., None]
        out = jnp.where(in_range, jnp.take(weight, jnp.where(in_range[..., 0], ids, 0), axis=0), jnp.nan)
        if self.padding_idx is not None:
            out = jnp.where((ids == self.padding_idx)[..., None], jax.lax.stop_gradient(out), out)
        return out
