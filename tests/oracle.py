"""Run a torch recurrent layer and its s2l_jax twin on the same inputs; return outputs and gradients of both."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

from parity import from_torch, run_recurrent, torch_recurrent


def close(a, b, tol: float, relative_to_scale: bool = False) -> float:
    """Max-abs difference, asserted <= tol (times max(1, |b|max) when relative_to_scale)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = max(1.0, float(np.max(np.abs(b)))) if relative_to_scale and b.size else 1.0
    assert diff <= tol * scale, f"max-abs difference {diff:.3g} > {tol * scale:.3g}"
    return diff


def compare_recurrent(cell, *, layers=1, bidirectional=False, proj_size=0, bias=True, batch_first=True,
                      lengths=None, with_state=False, dtype=torch.float32, tol=1e-5, batch=3, total=5,
                      input_size=4, hidden=6, options=None):
    """Forward outputs, final states and gradients (every parameter, the input, the initial state) vs torch."""
    tm = torch_recurrent(cell, input_size, hidden, num_layers=layers, bias=bias, batch_first=batch_first,
                         bidirectional=bidirectional, proj_size=proj_size).to(dtype)
    fm, variables = from_torch(tm)
    if options is not None:
        fm = fm.clone(options=options)
    dirs = 2 if bidirectional else 1
    h_out = proj_size or hidden
    shape = (batch, total, input_size) if batch_first else (total, batch, input_size)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    state = None
    if with_state:
        h0 = torch.randn(layers * dirs, batch, h_out, dtype=dtype, requires_grad=True)
        state = (h0, torch.randn(layers * dirs, batch, hidden, dtype=dtype, requires_grad=True)) \
            if cell == "lstm" else h0
    out, st = run_recurrent(tm, x, lengths, state)
    st = st if cell == "lstm" else (st,)
    cot = [torch.randn_like(t) for t in (out, *st)]
    loss = sum((t * c).sum() for t, c in zip((out, *st), cot, strict=True))
    loss.backward()

    to_j = lambda t: jnp.asarray(t.detach().numpy())  # noqa: E731
    jstate = None if state is None else jax.tree.map(to_j, state if cell == "lstm" else state)
    jlen = None if lengths is None else jnp.asarray(lengths)

    def jloss(params, x_, st0):
        o, s = fm.apply({"params": params}, x_, lengths=jlen, initial_state=st0)
        s = s if cell == "lstm" else (s,)
        return sum(jnp.sum(t * to_j(c)) for t, c in zip((o, *s), cot, strict=True)), (o, s)

    # Jitted: JAX would keep an eager scan's executable for the rest of the session (see conftest).
    (_, (jo, js)), grads = jax.jit(jax.value_and_grad(jloss, argnums=(0, 1, 2), has_aux=True))(
        variables["params"], to_j(x), jstate)
    diffs = {"output": close(jo, out.detach().numpy(), tol)}
    for name, a, b in zip(("h_n", "c_n"), js, st, strict=False):
        diffs[name] = close(a, b.detach().numpy(), tol)
    for name, p in tm.named_parameters():
        diffs[f"grad {name}"] = close(grads[0][name], p.grad.numpy(), tol, relative_to_scale=True)
    diffs["grad input"] = close(grads[1], x.grad.numpy(), tol, relative_to_scale=True)
    if with_state:
        for a, b in zip(jax.tree.leaves(grads[2]), state if cell == "lstm" else (state,), strict=True):
            close(a, b.grad.numpy(), tol, relative_to_scale=True)
    return diffs
