"""Sequence masks and checks on `lengths` (batch-first data, padding at the end)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def concrete(x) -> np.ndarray | None:
    """`x` as a NumPy array when its values are known (outside jit), else None (a tracer)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def sequence_mask(lengths: jax.Array, total_length: int) -> jax.Array:
    """`(batch, time)` bool: True at steps `t < lengths[b]`."""
    return jnp.arange(total_length)[None, :] < jnp.asarray(lengths)[:, None]


def lengths_in_range(lengths: jax.Array, total_length: int) -> jax.Array:
    """`(batch,)` bool: True where `1 <= lengths[b] <= total_length` (works under jit, on traced values)."""
    lengths = jnp.asarray(lengths)
    return (lengths >= 1) & (lengths <= total_length)


def check_length_values(lengths, total_length: int) -> None:
    """Refuse integer lengths outside `[1, total_length]` where their values are known (not under jit)."""
    values = concrete(lengths)  # before jnp.asarray, which wraps int64 values past int32 without x64
    if values is None or not values.size or not np.issubdtype(values.dtype, np.integer):
        return
    if values.min() >= 1 and values.max() <= total_length:  # the usual case
        return
    bad = np.flatnonzero((values < 1) | (values > total_length))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"lengths must lie in [1, {total_length}] (the padded length); "
                         f"lengths[{i}] = {int(values.flat[i])} ({bad.size} bad in all)")


def check_lengths(lengths, batch: int, total_length: int) -> jax.Array:
    """Validate `lengths` (one int per sequence, 1 <= length <= T) and return them as int32.

    Values are checked when they are concrete; under jit only shape and dtype can be (`SequenceClassifier` then
    turns the logits of a sequence with an out-of-range length into NaN, see `lengths_in_range`).
    """
    given = lengths
    lengths = jnp.asarray(lengths)
    if lengths.ndim != 1 or lengths.shape[0] != batch:
        raise ValueError(f"lengths must have shape ({batch},) (one per sequence), got {tuple(lengths.shape)}")
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths must be integers, got dtype {lengths.dtype}")
    check_length_values(given, total_length)
    # Values past int32 (int64 traced under x64, uint32) would wrap into valid lengths (2**32 + 2 -> 2): clipped
    # to [0, T + 1] first, they stay outside [1, T] for `lengths_in_range`.
    info, int32 = jnp.iinfo(lengths.dtype), jnp.iinfo(jnp.int32)
    if info.max > int32.max or info.min < int32.min:
        lengths = jnp.clip(lengths, 0, total_length + 1)
    return lengths.astype(jnp.int32)
