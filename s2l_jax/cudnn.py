"""The cuDNN LSTM of `jax.experimental.rnn` behind torch-named params (GPU only, `ScanOptions(cudnn=True)`).

cuDNN keeps every weight in one flat vector: each (layer, direction)'s `W_ih`, `W_hh` in turn, then each one's
`b_ih`, `b_hh`, gates in torch's order i, f, g, o. `pack_lstm_weights` builds it from the params tree (a
concatenation, so gradients flow back to the torch-named leaves). fp32 without TF32 (`Precision.HIGHEST`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import rnn

from s2l_jax.masks import sequence_mask

Params = dict[str, jax.Array]


def pack_lstm_weights(params: Params, num_layers: int, bidirectional: bool) -> jax.Array:
    """torch-named LSTM params -> cuDNN's flat weight vector (zero biases when the LSTM has none)."""
    if "weight_hr_l0" in params:
        raise ValueError("the cuDNN LSTM has no proj_size; use the default scan")
    suffixes = [f"_l{layer}{rev}" for layer in range(num_layers) for rev in ("", "_reverse")[: 1 + bidirectional]]
    four_h = params["weight_hh_l0"].shape[0]
    weights = [params[k + sfx] for sfx in suffixes for k in ("weight_ih", "weight_hh")]
    biases = [params.get(k + sfx, jnp.zeros((four_h,), weights[0].dtype))
              for sfx in suffixes for k in ("bias_ih", "bias_hh")]
    return jnp.concatenate([w.ravel() for w in weights + biases])


def cudnn_lstm_scan(params: Params, x: jax.Array, *, num_layers: int, bidirectional: bool,
                    lengths: jax.Array | None, initial_state: tuple) -> tuple[jax.Array, tuple]:
    """`recurrent_scan`'s contract on cuDNN: batch-first `x`, outputs zero past each length, `(h_n, c_n)`."""
    dtypes = {x.dtype, params["weight_hh_l0"].dtype}
    if dtypes != {jnp.dtype(jnp.float32)}:
        raise ValueError(f"the cuDNN LSTM path runs float32 only, got input and weights of {sorted(map(str, dtypes))}")
    if jax.default_backend() != "gpu":
        raise RuntimeError(f"ScanOptions(cudnn=True) needs a GPU; jax's default backend is {jax.default_backend()!r}")
    batch, total, input_size = x.shape
    hidden = params["weight_hh_l0"].shape[1]
    weights = pack_lstm_weights(params, num_layers, bidirectional)
    seq = jnp.full((batch,), total, jnp.int32) if lengths is None else jnp.asarray(lengths, jnp.int32)
    h0, c0 = initial_state
    y, h_n, c_n = rnn.lstm(x, h0, c0, weights, seq, input_size=input_size, hidden_size=hidden,
                           num_layers=num_layers, dropout=0.0, bidirectional=bidirectional,
                           precision=lax.Precision.HIGHEST)
    if lengths is not None:
        y = jnp.where(sequence_mask(lengths, total)[..., None], y, jnp.zeros_like(y))
    return y, (h_n, c_n)
