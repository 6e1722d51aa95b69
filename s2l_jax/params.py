"""Params trees as flat torch-style state dicts ("encoder.weight_ih_l0"), and explicit shape checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a.b.c": leaf}, in the tree's order."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a.b.c": leaf} -> nested dict."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def shape_of(x) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def check_shapes(expected: Mapping[str, tuple], given: Mapping[str, Any], what: str = "state_dict") -> None:
    """Raise one ValueError naming every missing, unexpected and misshaped key (with both shapes)."""
    problems = []
    for k in expected:
        if k not in given:
            problems.append(f"missing key {k!r} (expected shape {tuple(expected[k])})")
    for k in given:
        if k not in expected:
            problems.append(f"unexpected key {k!r} (shape {shape_of(given[k])})")
        elif shape_of(given[k]) != tuple(expected[k]):
            problems.append(f"key {k!r} has shape {shape_of(given[k])}, expected {tuple(expected[k])}")
    if problems:
        raise ValueError(f"{what} does not match the model: " + "; ".join(problems))


def expected_shapes(module, *example_args, **example_kwargs) -> dict[str, tuple]:
    """Flat name -> shape of the params `module.init` would create for these example inputs (no compute)."""
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *example_args, **example_kwargs))
    return {k: tuple(v.shape) for k, v in flatten(variables["params"]).items()}


def check_finite(flat: Mapping[str, Any], what: str = "weights") -> None:
    """Raise naming every floating-point tensor holding NaN or Inf (with how many of its values)."""
    problems = []
    for k, v in flat.items():
        a = np.asarray(v)
        if jnp.issubdtype(a.dtype, jnp.floating):  # bfloat16 too, which NumPy does not count as floating
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            if bad:
                problems.append(f"tensor {k!r} contains NaN or Inf ({bad} of {a.size} values)")
    if problems:
        raise ValueError(f"{what}: " + "; ".join(problems))


WEIGHT_DTYPES = "float16, bfloat16, float32 or float64"


def check_weights(flat: Mapping[str, Any], what: str = "weights") -> dict[str, np.ndarray]:
    """`flat` as NumPy arrays a model can hold, or one ValueError naming every bad tensor.

    Refused: tensors that are not floating point (ints, bools, complex: a state_dict of something else) and NaN or
    Inf values. Floats narrower than float32 (float16, bfloat16) are upcast to float32, which is exact; float32 and
    float64 are kept (float64 needs jax_enable_x64 to reach JAX, see `to_jax`)."""
    arrays = {k: np.asarray(v) for k, v in flat.items()}
    wrong = [f"{k!r} has dtype {a.dtype}" for k, a in arrays.items() if not jnp.issubdtype(a.dtype, jnp.floating)]
    if wrong:
        raise ValueError(f"{what}: weights must be {WEIGHT_DTYPES}: " + ", ".join(wrong))
    arrays = {k: a.astype(np.float32) if a.itemsize < 4 else a for k, a in arrays.items()}
    check_finite(arrays, what)
    return arrays


def to_jax(flat: Mapping[str, Any], what: str = "weights") -> dict[str, jax.Array]:
    """Flat arrays -> JAX arrays, refusing float64 unless jax_enable_x64 is on (JAX would silently round it)."""
    wide = [k for k, v in flat.items() if np.asarray(v).dtype == np.float64]
    if wide and not jax.config.jax_enable_x64:
        raise ValueError(f"{what} holds float64 weights (e.g. {wide[0]!r}): enable jax_enable_x64 to load them "
                         "losslessly (s2l parity: --float64)")
    return {k: jnp.asarray(v) for k, v in flat.items()}
