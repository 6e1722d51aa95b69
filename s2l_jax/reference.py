"""Plain NumPy reference of the recurrences: one sequence at a time, a Python loop over its valid steps.

Slow and obvious on purpose; the fast scans in `recurrent.py` are tested against it (as jax.experimental.rnn
tests its cuDNN path against a plain one).
"""

from __future__ import annotations

import numpy as np

from s2l_jax.recurrent import NUM_GATES, param_names


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _step(cell, p, h, c, x):
    g = p["weight_ih"] @ x + p.get("bias_ih", 0.0) + p["weight_hh"] @ h + p.get("bias_hh", 0.0)
    if cell == "lstm":
        i, f, gg, o = np.split(g, 4)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(gg)
        h = _sigmoid(o) * np.tanh(c)
        return (p["weight_hr"] @ h if "weight_hr" in p else h), c
    if cell == "gru":
        gx = p["weight_ih"] @ x + p.get("bias_ih", 0.0)
        gh = p["weight_hh"] @ h + p.get("bias_hh", 0.0)
        r = _sigmoid(gx[: len(gx) // 3] + gh[: len(gh) // 3])
        z = _sigmoid(gx[len(gx) // 3: 2 * len(gx) // 3] + gh[len(gh) // 3: 2 * len(gh) // 3])
        n = np.tanh(gx[2 * len(gx) // 3:] + r * gh[2 * len(gh) // 3:])
        return (1.0 - z) * n + z * h, c
    return (np.tanh(g) if cell == "rnn_tanh" else np.maximum(g, 0.0)), c


def reference_recurrent(cell, params, x, *, num_layers=1, bidirectional=False, lengths=None):
    """Batch-first `x` `(batch, time, input)` -> (output `(batch, time, D * H_out)`, h_n, c_n or None),
    zero initial state, padded outputs zero."""
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x = np.asarray(x, np.float64)
    batch, total = x.shape[:2]
    dirs = (False, True) if bidirectional else (False,)
    hidden = params["weight_hh_l0"].shape[0] // NUM_GATES[cell]
    h_out = params["weight_hh_l0"].shape[1]
    out = np.zeros((batch, total, len(dirs) * h_out))
    h_n = np.zeros((num_layers * len(dirs), batch, h_out))
    c_n = np.zeros((num_layers * len(dirs), batch, hidden))
    for b in range(batch):
        n = total if lengths is None else int(lengths[b])
        seq = x[b, :n]
        for layer in range(num_layers):
            outs = []
            for d, reverse in enumerate(dirs):
                p = {k: params[v] for k, v in param_names(layer, reverse).items() if v in params}
                h, c = np.zeros(h_out), np.zeros(hidden)
                ys = np.zeros((n, h_out))
                for t in (range(n - 1, -1, -1) if reverse else range(n)):
                    h, c = _step(cell, p, h, c, seq[t])
                    ys[t] = h
                outs.append(ys)
                h_n[layer * len(dirs) + d, b], c_n[layer * len(dirs) + d, b] = h, c
            seq = np.concatenate(outs, axis=-1)
        out[b, :n] = seq
    return out, h_n, (c_n if cell == "lstm" else None)
