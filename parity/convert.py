"""torch <-> s2l_jax weights. Names are the same on both sides; this module only discovers a user's model
structure, renames prefixes and checks every key and shape."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

from parity.dropout import pooled_dropout
from parity.infer import attention_linear
from s2l_jax.model import ClassifierConfig, SequenceClassifier, example_inputs
from s2l_jax.params import WEIGHT_DTYPES, check_shapes, check_weights, expected_shapes, flatten, to_jax, unflatten
from s2l_jax.pooling import POOLINGS
from s2l_jax.recurrent import GRU, LSTM, RNN

RECURRENT_TYPES = (nn.LSTM, nn.GRU, nn.RNN)
# Parameter-free torch.nn modules a classifier may hold: containers, the attention's tanh and softmax.
PASSIVE_TYPES = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Identity, nn.Tanh, nn.Softmax)


@dataclass(frozen=True)
class Structure:
    """Where the parts of a user's torch classifier live: canonical prefix -> the user's module path."""

    config: ClassifierConfig
    paths: dict[str, str]  # e.g. {"embedding": "emb", "encoder": "rnn", "attention.attn": "att.w", "fc": "out"}


def cell_name(rnn: nn.RNNBase) -> str:
    if isinstance(rnn, nn.LSTM):
        return "lstm"
    if isinstance(rnn, nn.GRU):
        return "gru"
    if isinstance(rnn, nn.RNN):
        return "rnn_tanh" if rnn.nonlinearity == "tanh" else "rnn_relu"
    raise TypeError(f"not a torch recurrent layer: {type(rnn).__name__}")


def flax_recurrent(rnn: nn.RNNBase):
    """The s2l_jax module with the same constructor options as a torch LSTM/GRU/RNN."""
    kw = dict(num_layers=rnn.num_layers, bias=rnn.bias, batch_first=rnn.batch_first, dropout=float(rnn.dropout),
              bidirectional=rnn.bidirectional)
    if isinstance(rnn, nn.LSTM):
        return LSTM(rnn.hidden_size, proj_size=rnn.proj_size, **kw)
    if isinstance(rnn, nn.GRU):
        return GRU(rnn.hidden_size, **kw)
    return RNN(rnn.hidden_size, nonlinearity=rnn.nonlinearity, **kw)


def discover(module: nn.Module, pooling: str | None = None, *, require_pooling: bool = True) -> Structure:
    """Recognise a classifier by the types and shapes of its parts, not by attribute names.

    Accepted: an optional nn.Embedding, exactly one nn.LSTM/GRU/RNN, and either one nn.Linear (the classifier)
    or three (attention `Linear(D, D)` + `Linear(D, 1, bias=False)`, then the classifier). An nn.Dropout is
    accepted where s2l_jax has one, on the classifier's input (see `pooled_dropout`: the forward runs once to see
    it); any other module holding parameters, and torch.nn layers that would change the computation
    (LayerNorm, ReLU, ...), are refused. With `require_pooling=False` (only the paths are wanted) a missing
    `pooling` is guessed from the classifier's width and the config's dropout is left 0 (the forward is not run).
    """
    if pooling is not None and pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
    parts: dict[type, list[tuple[str, nn.Module]]] = {nn.Embedding: [], nn.RNNBase: [], nn.Linear: [], nn.Dropout: []}
    for path, sub in module.named_modules():
        kind = next((t for t in parts if isinstance(sub, t)), None)
        if kind is not None:
            parts[kind].append((path, sub))
        elif list(sub.parameters(recurse=False)):
            raise ValueError(f"unrecognised module: {path or 'the model'} ({type(sub).__name__}) holds parameters; "
                             "expected only Embedding, LSTM/GRU/RNN, Linear")
        elif type(sub).__module__.startswith("torch.nn.") and not isinstance(sub, PASSIVE_TYPES):
            raise ValueError(f"unrecognised module: {path} ({type(sub).__name__}) would change the computation; "
                             "s2l_jax classifiers are Embedding -> LSTM/GRU/RNN -> pooling -> Dropout -> Linear")
    rnns, linears, embs = parts[nn.RNNBase], parts[nn.Linear], parts[nn.Embedding]
    if len(rnns) != 1 or not isinstance(rnns[0][1], RECURRENT_TYPES):
        raise ValueError(f"unrecognised module {type(module).__name__}: expected exactly one nn.LSTM/GRU/RNN, "
                         f"found {[type(m).__name__ for _, m in rnns]}")
    if len(embs) > 1:
        raise ValueError(f"unrecognised module {type(module).__name__}: more than one nn.Embedding")
    rnn_path, rnn = rnns[0]
    if not rnn.batch_first:
        raise ValueError(f"the recurrent layer {rnn_path!r} has batch_first=False; s2l_jax classifiers read "
                         "(batch, time) inputs")
    d = (rnn.proj_size or rnn.hidden_size) * (2 if rnn.bidirectional else 1)
    paths = {"encoder": rnn_path}
    if len(linears) == 3:
        v = [p for p, m in linears if m.out_features == 1 and m.bias is None and m.in_features == d]
        attn = [p for p, m in linears if m.in_features == d == m.out_features and m.bias is not None]
        if len(v) != 1 or not attn:
            raise ValueError(f"unrecognised module {type(module).__name__}: three nn.Linear layers but not an "
                             f"attention pair Linear({d}, {d}) + Linear({d}, 1, bias=False) and a classifier")
        a = attention_linear(v[0], attn, d)
        fc = [(p, m) for p, m in linears if p not in (a, v[0])]
        paths.update({"attention.attn": a, "attention.v": v[0]})
        if pooling not in (None, "attention"):
            raise ValueError(f"the module has an attention block; pooling {pooling!r} contradicts it")
        pooling = "attention"
    elif len(linears) == 1:
        fc = linears
        if pooling is None and not require_pooling:
            pooling = "mean" if fc[0][1].in_features == d else "last"
        if pooling is None or pooling == "attention":
            raise ValueError("weights cannot tell how the model pools over time: pass pooling='last', 'mean' or "
                             "'max' (what the forward pass does)")
    else:
        raise ValueError(f"unrecognised module {type(module).__name__}: expected 1 nn.Linear (classifier) or 3 "
                         f"(attention + classifier), found {len(linears)}")
    fc_path, fc_mod = fc[0]
    d_fc = (rnn.proj_size or rnn.hidden_size) if pooling == "last" else d  # h_n[-1] is one direction's state
    if fc_mod.in_features != d_fc or fc_mod.bias is None:
        raise ValueError(f"classifier {fc_path!r} is Linear({fc_mod.in_features}, {fc_mod.out_features}, "
                         f"bias={fc_mod.bias is not None}); with pooling {pooling!r} expected "
                         f"Linear({d_fc}, classes) with bias")
    paths["fc"] = fc_path
    emb = embs[0][1] if embs else None
    if emb is not None:
        paths["embedding"] = embs[0][0]
        if emb.max_norm is not None or emb.scale_grad_by_freq:
            raise ValueError(f"the embedding {embs[0][0]!r} has max_norm={emb.max_norm}, scale_grad_by_freq="
                             f"{emb.scale_grad_by_freq}: renormalised rows and frequency-scaled gradients are not "
                             "supported (the JAX embedding is a plain lookup)")
    dropout = pooled_dropout(module, emb, rnn, fc_path) if require_pooling else 0.0
    config = ClassifierConfig(
        vocab_size=emb.num_embeddings if emb is not None else None,
        embedding_dim=emb.embedding_dim if emb is not None else rnn.input_size,
        input_size=None if emb is not None else rnn.input_size,
        hidden_size=rnn.hidden_size, num_classes=fc_mod.out_features, cell=cell_name(rnn),
        num_layers=rnn.num_layers, bidirectional=rnn.bidirectional, pooling=pooling,
        dropout=dropout, rnn_dropout=float(rnn.dropout),
        padding_idx=emb.padding_idx if emb is not None else None, proj_size=rnn.proj_size
        if isinstance(rnn, nn.LSTM) else 0, bias=rnn.bias,
    )
    return Structure(config, paths)


def numpy_to_tensor(a: np.ndarray) -> torch.Tensor:
    """The inverse of `tensor_to_numpy`: bit-identical values, bfloat16 included."""
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def tensor_to_numpy(name: str, t: torch.Tensor, what: str = "state_dict") -> np.ndarray:
    """A tensor's values as a NumPy array of the same dtype (bfloat16 as ml_dtypes' bfloat16)."""
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes  # ships with jax

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    try:
        return t.numpy()
    except TypeError as e:  # float8, quantised and other dtypes NumPy cannot hold
        raise ValueError(f"{what}: weights must be {WEIGHT_DTYPES}: {name!r} has dtype {t.dtype}") from e


def _checked_params(module: nn.Module) -> dict[str, jax.Array]:
    """The module's state_dict as JAX arrays, through `check_weights` (floating point, finite) and `to_jax`."""
    what = f"{type(module).__name__} state_dict"
    flat = {k: tensor_to_numpy(k, v, what) for k, v in module.state_dict().items()}
    return to_jax(check_weights(flat, what), what)


def rename_prefixes(flat: dict, paths: dict[str, str], to_user: bool) -> dict:
    """Swap canonical prefixes and the user's module paths in flat names."""
    pairs = [(c, u) if to_user else (u, c) for c, u in paths.items()]
    out = {}
    for name, value in flat.items():
        for src, dst in pairs:
            if name.startswith(src + "."):
                name = dst + name[len(src):]
                break
        out[name] = value
    return out


def from_torch(module: nn.Module, *, pooling: str | None = None):
    """A torch model -> `(flax_module, variables)` holding the same weights.

    `module` is a bare nn.LSTM/GRU/RNN or a classifier (see `discover`); `pooling` states what the forward pass
    does where the weights cannot tell ("last", "mean", "max"; attention is recognised by its layers).
    """
    if isinstance(module, RECURRENT_TYPES):
        flax_module = flax_recurrent(module)
        given = _checked_params(module)
        x = jnp.zeros((1, 1, module.input_size), jnp.float32)
        check_shapes(expected_shapes(flax_module, x), given)
        return flax_module, {"params": given}
    if not isinstance(module, nn.Module):
        raise TypeError(f"from_torch expects a torch.nn.Module, got {type(module).__name__}")
    structure = discover(module, pooling)
    flax_module = SequenceClassifier(structure.config)
    flat = rename_prefixes(_checked_params(module), structure.paths, to_user=False)
    check_shapes(expected_shapes(flax_module, example_inputs(structure.config)), flat)
    return flax_module, {"params": unflatten(flat)}


def to_torch_state_dict(variables) -> dict[str, torch.Tensor]:
    """Flax variables -> a torch state_dict with the reference model's names (bit-identical values)."""
    params = variables["params"] if "params" in variables else variables
    return {k: numpy_to_tensor(np.array(v)) for k, v in flatten(params).items()}


def to_torch(variables, module: nn.Module | None = None):
    """Without `module`: a torch state_dict. With one: load the weights into it (`strict=True`, every key and
    shape checked first) and return it."""
    state = to_torch_state_dict(variables)
    if module is None:
        return state
    if not isinstance(module, RECURRENT_TYPES):
        state = rename_prefixes(state, discover(module, require_pooling=False).paths, to_user=True)
    target = module.state_dict()
    check_shapes({k: tuple(v.shape) for k, v in target.items()}, state, what=f"weights for {type(module).__name__}")
    cast = [f"{k} ({str(v.dtype)[6:]} into {str(target[k].dtype)[6:]})" for k, v in state.items()
            if v.dtype != target[k].dtype]
    if cast:
        raise ValueError(f"weights and {type(module).__name__} differ in dtype, so loading would round: "
                         f"{', '.join(cast[:3])}{' ...' if len(cast) > 3 else ''}; cast one of them first")
    module.load_state_dict(state, strict=True)
    return module

