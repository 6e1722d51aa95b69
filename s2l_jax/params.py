"""Params trees as flat torch-style state dicts ("encoder.weight_ih_l0"), and explicit shape checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
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
    """Raise naming the first tensor holding NaN or Inf."""
    for k, v in flat.items():
        a = np.asarray(v)
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise ValueError(f"{what}: tensor {k!r} contains NaN or Inf")
