"""Forward and gradient parity between a torch module and a Flax module holding the same weights:
`compare` returns a `ParityReport` (weights, every output/state tensor, the gradient of a fixed random projection
of all outputs w.r.t. every parameter and every floating-point input); `assert_parity` raises naming the first
tensor out of tolerance."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

from parity.convert import RECURRENT_TYPES, discover, numpy_to_tensor, rename_prefixes, tensor_to_numpy
from parity.report import ParityReport, diff
from parity.tolerance import parity_precision, tolerance_for
from parity.torch_models import run_recurrent
from s2l_jax.masks import check_lengths
from s2l_jax.params import check_shapes, flatten, unflatten


class ParityError(AssertionError):
    """Raised by `assert_parity`; `.report` holds the full report."""

    def __init__(self, report: ParityReport):
        super().__init__(report.summary() + "\n" + report.table(only_failures=True, with_summary=False))
        self.report = report


def param_names(torch_module: nn.Module, flax_params: Mapping) -> dict[str, str]:
    """torch state_dict name -> flat Flax param name. Identical names pair directly; a classifier with its own
    attribute names is paired through `parity.convert.discover`."""
    torch_names = list(torch_module.state_dict())
    flax_names = set(flatten(flax_params))
    if set(torch_names) == flax_names:
        return {n: n for n in torch_names}
    if not isinstance(torch_module, RECURRENT_TYPES):
        paths = discover(torch_module, require_pooling=False).paths
        mapped = {n: next(iter(rename_prefixes({n: 0}, paths, to_user=False))) for n in torch_names}
        if set(mapped.values()) == flax_names:
            return mapped
    shapes = {n: tuple(v.shape) for n, v in flatten(flax_params).items()}
    check_shapes(shapes, torch_module.state_dict(), what=f"torch {type(torch_module).__name__} vs Flax params")
    raise ValueError("cannot pair torch and Flax parameter names")


def _leaves(out, recurrent: bool) -> list[tuple[str, object]]:
    """Named leaves of a module's output: ("output", "h_n", "c_n") for recurrent layers, else tree paths."""
    if recurrent:
        y, state = out
        states = state if isinstance(state, (tuple, list)) else (state,)
        return [("output", y)] + list(zip(("h_n", "c_n"), states, strict=False))
    if isinstance(out, (tuple, list)):
        return [(f"output[{i}]{n[6:]}", v) for i, o in enumerate(out) for n, v in _leaves(o, False)]
    if isinstance(out, Mapping):
        return [(f"output[{k!r}]{n[6:]}", v) for k, o in out.items() for n, v in _leaves(o, False)]
    return [("output", out)]


def as_numpy(t: torch.Tensor) -> np.ndarray:
    """A torch tensor's values for comparison (bfloat16, which NumPy lacks, exactly widened to float32; a sparse
    gradient, as `nn.Embedding(sparse=True)` gets, as its dense values)."""
    t = t.detach().cpu()
    t = t.to_dense() if t.is_sparse else t
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def _recurrent_inputs(module: nn.RNNBase, inputs: tuple) -> tuple[list, list[str]]:
    """`(x)` or `(x, initial_state)` as flat arrays and their names: x, h_0 and, for an LSTM, c_0."""
    if len(inputs) not in (1, 2):
        raise ValueError(f"a recurrent layer takes (x) or (x, initial_state), got {len(inputs)} inputs")
    if len(inputs) == 1 or inputs[1] is None:
        return [inputs[0]], ["input[0]"]
    if isinstance(module, nn.LSTM):
        if not (isinstance(inputs[1], (tuple, list)) and len(inputs[1]) == 2):
            raise ValueError("an LSTM's initial state is a pair (h_0, c_0)")
        return [inputs[0], *inputs[1]], ["input[0]", "h_0", "c_0"]
    return [inputs[0], inputs[1]], ["input[0]", "h_0"]


def _state(module: nn.RNNBase, parts: list):
    """The initial state from `_recurrent_inputs`' flat parts: None, h_0, or (h_0, c_0) for an LSTM."""
    if not parts:
        return None
    return tuple(parts) if isinstance(module, nn.LSTM) else parts[0]


def _dtype_of(torch_module: nn.Module) -> torch.dtype:
    return next((p.dtype for p in torch_module.parameters() if p.is_floating_point()), torch.float32)


def compare(
    torch_module: nn.Module,
    flax_module,
    variables: Mapping,
    *inputs,
    lengths=None,
    rtol: float | None = None,
    atol: float | None = None,
    gradients: bool = True,
    seed: int = 0,
) -> ParityReport:
    """Weights, outputs and gradients of `torch_module(*inputs)` vs `flax_module.apply(variables, *inputs)`.

    A recurrent layer takes `(x)` or `(x, initial_state)`: `h_0`, or `(h_0, c_0)` for an LSTM, as torch does.
    Both run deterministically (torch in eval mode, restored afterwards); with `lengths` torch recurrent layers
    are packed and classifiers get `lengths=`. Gradients are of `sum(output_i * c_i)` with fixed random `c_i`
    (seeded by `seed`), so every output element contributes. float32 matmuls run in float32 on every backend.
    """
    dtype = _dtype_of(torch_module)
    tol = tolerance_for(dtype, rtol=rtol, atol=atol)
    params = variables["params"]
    names = param_names(torch_module, params)
    flat = flatten(params)
    recurrent = isinstance(torch_module, RECURRENT_TYPES)
    input_names = [f"input[{i}]" for i in range(len(inputs))]
    if recurrent:
        inputs, input_names = _recurrent_inputs(torch_module, inputs)
    arrays = [tensor_to_numpy(n, x, "inputs") if isinstance(x, torch.Tensor) else np.asarray(x)
              for n, x in zip(input_names, inputs, strict=True)]  # bfloat16 as ml_dtypes' bfloat16
    floating = [i for i, a in enumerate(arrays) if jnp.issubdtype(a.dtype, jnp.floating)]  # NumPy: not bfloat16
    if lengths is not None:  # before torch, whose packing fails on a bad length with an obscure message
        time_major = recurrent and not torch_module.batch_first
        check_lengths(np.asarray(lengths), arrays[0].shape[int(time_major)], arrays[0].shape[1 - int(time_major)])
    entries = [diff("weight", t, flat[f], as_numpy(v), tol)
               for t, v in torch_module.state_dict().items() for f in (names[t],)]

    trained = [(t, p) for t, p in torch_module.named_parameters() if p.requires_grad]
    was_training = torch_module.training
    torch_module.eval()
    try:
        with parity_precision():
            t_inputs = [numpy_to_tensor(a.copy()).requires_grad_(i in floating and gradients)
                        for i, a in enumerate(arrays)]
            if recurrent:
                t_out = run_recurrent(torch_module, t_inputs[0], lengths, _state(torch_module, t_inputs[1:]))
            elif lengths is not None:
                t_out = torch_module(*t_inputs, lengths=torch.as_tensor(np.asarray(lengths)))
            else:
                t_out = torch_module(*t_inputs)
            t_leaves = _leaves(t_out, recurrent)
            rng = np.random.default_rng(seed)
            cots = [rng.standard_normal(tuple(v.shape)).astype(as_numpy(v).dtype) for _, v in t_leaves]
            kwargs = {} if lengths is None else {"lengths": jnp.asarray(np.asarray(lengths))}
            others = {k: v for k, v in variables.items() if k != "params"}
            j_inputs = [jnp.asarray(a) for a in arrays]

            def loss(p, float_inputs, xs, others, cots, kwargs):
                xs = list(xs)
                for i, x in zip(floating, float_inputs, strict=True):
                    xs[i] = x
                if recurrent:
                    kwargs = {**kwargs, "initial_state": _state(torch_module, xs[1:])}
                    xs = xs[:1]
                out = flax_module.apply({"params": p, **others}, *xs, **kwargs)
                values = [v for _, v in _leaves(out, recurrent)]
                return sum(jnp.sum(v * c.astype(v.dtype)) for v, c in zip(values, cots, strict=True)), values

            # Jitted: JAX keeps the executable of every eager scan for the life of the process, so a suite of
            # many comparisons would pile up memory mappings until the process crashes.
            args = (params, [j_inputs[i] for i in floating], j_inputs, others, cots, kwargs)
            if gradients:
                (_, j_leaves), (g_params, g_inputs) = jax.jit(
                    jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(*args)
                # autograd.grad, not backward(): gradients already on the user's module stay as they were.
                wrt = [p for _, p in trained] + [t_inputs[i] for i in floating]
                total = sum((v * torch.from_numpy(c).to(v.dtype)).sum()
                            for (_, v), c in zip(t_leaves, cots, strict=True))
                t_grads = torch.autograd.grad(total, wrt, allow_unused=True) if wrt else []
                t_grads = [np.zeros(tuple(x.shape)) if g is None else as_numpy(g)
                           for g, x in zip(t_grads, wrt, strict=True)]
            else:
                _, j_leaves = jax.jit(loss)(*args)
    finally:
        torch_module.train(was_training)
    if len(j_leaves) != len(t_leaves):
        raise ValueError(f"torch returns {len(t_leaves)} tensors, the Flax module {len(j_leaves)}")
    for (name, t), j in zip(t_leaves, j_leaves, strict=True):
        entries.append(diff("output", name, j, as_numpy(t), tol))
    notes = ()
    if gradients:
        g_flat = flatten(g_params)
        j_grads = [(t, g_flat[names[t]]) for t, _ in trained] + [
            (input_names[i], g_inputs[k]) for k, i in enumerate(floating)]
        for (name, j_grad), t_grad in zip(j_grads, t_grads, strict=True):
            entries.append(diff("gradient", name, j_grad, t_grad, tol))
        frozen = [t for t, p in torch_module.named_parameters() if not p.requires_grad]
        if frozen:
            notes = (f"gradients not compared for torch parameters with requires_grad=False: {', '.join(frozen)}",)
    return ParityReport(tuple(entries), tol, str(dtype).replace("torch.", ""), jax.default_backend(), notes)


def assert_parity(torch_module: nn.Module, flax_module, variables: Mapping, *inputs, **kwargs) -> ParityReport:
    """`compare`, raising `ParityError` (an AssertionError naming the first tensor out of tolerance) on failure."""
    report = compare(torch_module, flax_module, variables, *inputs, **kwargs)
    if not report.passed:
        raise ParityError(report)
    return report


def torch_named(flax_params: Mapping, torch_module: nn.Module) -> dict[str, np.ndarray]:
    """Flax params as arrays under the torch module's state_dict names (for reports and trajectories)."""
    names = param_names(torch_module, flax_params)
    flat = flatten(flax_params)
    return {t: np.asarray(flat[f]) for t, f in names.items()}


def flax_named(torch_values: Mapping[str, np.ndarray], torch_module: nn.Module, flax_params: Mapping) -> dict:
    """The inverse of `torch_named`: a Flax params tree from torch-named arrays."""
    names = param_names(torch_module, flax_params)
    return unflatten({names[t]: jnp.asarray(v) for t, v in torch_values.items()})
