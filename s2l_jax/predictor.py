"""Inference with each LSTM direction's weights laid out once, not on every call.

The per-step dot wants `[W_hh; W_ih]^T` with the sigmoid gates' rows scaled by 0.5 (`lstm_vjp.joint_weights`);
`model.apply` derives it from the torch-shaped params on every call, a transpose of every recurrent weight that
took 8-16% of a seed-size forward pass (benchmarks/README.md, ninth look); for the native CPU kernels
(`s2l_jax.native_rnn`) it is packed in tiles as well. `Predictor` derives it once, keeps it
in a "layout" collection beside the params it came from, and cannot be differentiated (its weights are not the
params). Same numbers as `jax.jit(model.apply)`, bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np

from s2l_jax import native_rnn
from s2l_jax.layers import check_token_ids
from s2l_jax.lstm_vjp import joint_weights
from s2l_jax.masks import check_length_values
from s2l_jax.model import SequenceClassifier
from s2l_jax.recurrent import direction_params, direction_weights, param_names, uses_native


def lstm_layout(model: SequenceClassifier, params: Mapping) -> dict:
    """The "layout" collection for `model`'s params: `{"encoder": {"joint_l0": ..., "joint_bias_l0": ...}}`,
    or `{}` where the model takes no laid-out weights (not an LSTM, or options whose scan does not run one dot
    per step)."""
    cfg, opt = model.config, model.options
    if cfg.cell != "lstm" or not opt.custom_vjp or opt.remat or opt.cudnn or opt.input_projection != "per_step":
        return {}
    layout = {}
    for layer in range(cfg.num_layers):
        for reverse in (False, True)[: 2 if cfg.bidirectional else 1]:
            names = param_names(layer, reverse)
            p = direction_params(params["encoder"], layer, reverse)
            native = uses_native(opt, p, p["weight_hh"].dtype)
            if native:  # laid out as `recurrent._custom` runs them: padded to the kernels' width, in tiles
                p = native_rnn.pad_direction(p)
            joint = joint_weights(direction_weights("lstm", p), opt.tanh_sigmoid)
            if native:
                joint = native_rnn.pack_forward(*joint)
            layout[names["joint"]], layout[names["joint_bias"]] = joint
    return {"encoder": layout}


inference_layout = jax.jit(lstm_layout, static_argnums=0)  # (model, params) -> the "layout" collection


class Predictor:
    """`predictor(inputs, lengths=None)` -> logits `(batch, classes)`: `model.apply` for inference, jitted, with
    the LSTM weights laid out once here. Holds its own reference to `variables`, so the layout cannot go stale;
    build a new one after the params change."""

    def __init__(self, model: SequenceClassifier, variables: Mapping):
        if not isinstance(model, SequenceClassifier):
            raise TypeError(f"Predictor takes a SequenceClassifier, got {type(model).__name__}; for a bare "
                            "recurrent layer use jax.jit(layer.apply)")
        if "params" not in variables:
            raise ValueError(f"variables must be {{'params': ...}} as model.init returns, got keys {list(variables)}")
        layout = inference_layout(model, variables["params"])
        self._variables = {**variables, "layout": layout} if layout else dict(variables)
        self._config = model.config
        self._apply = jax.jit(model.apply)

    def __call__(self, inputs: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
        # Known values are checked here, as model.apply checks them: at jit's boundary int64 token ids and
        # lengths past int32 would wrap silently into valid-looking ones.
        shape = np.shape(inputs)
        if self._config.vocab_size is not None:
            check_token_ids(inputs, self._config.vocab_size)
        if lengths is not None and len(shape) >= 2:
            check_length_values(lengths, shape[1])
        return self._apply(self._variables, inputs, lengths=lengths)
