"""Architecture inference from a state_dict alone (no torch, no module): which key is the embedding, the
recurrent layer, the attention pair and the classifier, recognised by key suffixes and shapes, so users' own
prefixes (`emb.`, `rnn.`, `head.`, `module.`) work. Weights cannot tell how the model pools over time (last / mean
/ max) nor a plain RNN's nonlinearity: the caller states them (tanh is torch's default and is assumed, with a note).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from s2l_jax.model import ClassifierConfig
from s2l_jax.params import shape_of
from s2l_jax.pooling import POOLINGS

RECURRENT_KEY = re.compile(
    r"^(?:(?P<prefix>.+)\.)?(?P<kind>weight|bias)_(?P<mat>ih|hh|hr)_l(?P<layer>\d+)(?P<rev>_reverse)?$")
CELL_BY_GATES = {4: "lstm", 3: "gru", 1: "rnn"}


@dataclass(frozen=True)
class Architecture:
    """What a state_dict holds: the config, where each canonical part lives (canonical prefix -> the file's
    prefix, the same shape as `parity.convert.Structure.paths`), and notes on what was assumed."""

    config: ClassifierConfig
    paths: dict[str, str]
    notes: tuple[str, ...] = ()


def is_bare_recurrent(state_dict: Mapping) -> bool:
    """True for the state_dict of an nn.LSTM/GRU/RNN itself (`weight_ih_l0`, ... with no module prefix)."""
    return bool(state_dict) and all((m := RECURRENT_KEY.match(k)) and not m["prefix"] for k in state_dict)


def infer_recurrent(state_dict: Mapping, nonlinearity: str | None = None) -> dict:
    """Constructor arguments of the bare nn.LSTM/GRU/RNN whose state_dict this is (`cell` is an s2l cell name)."""
    if nonlinearity not in (None, "tanh", "relu"):
        raise ValueError(f"unknown nonlinearity {nonlinearity!r}; expected 'tanh' or 'relu'")
    _, r = _recurrent({k: shape_of(v) for k, v in state_dict.items()}, allow_bare=True)
    cell = CELL_BY_GATES[r["gates"]]
    return dict(cell=f"rnn_{nonlinearity or 'tanh'}" if cell == "rnn" else cell, input_size=r["input_size"],
                hidden_size=r["hidden"], num_layers=r["layers"], bias=r["bias"], bidirectional=r["dirs"] == 2,
                proj_size=r["proj"])


def _recurrent(shapes: Mapping[str, tuple], allow_bare: bool = False) -> tuple[str, dict]:
    """The recurrent layer's prefix and its facts (cell gates, layers, directions, hidden, proj, bias, input)."""
    matches = {k: m for k in shapes if (m := RECURRENT_KEY.match(k))}
    prefixes = sorted({m["prefix"] or "" for m in matches.values()})
    if not prefixes:
        raise ValueError("no recurrent layer found: expected keys like 'rnn.weight_ih_l0' (nn.LSTM/GRU/RNN)")
    if len(prefixes) > 1:
        raise ValueError(f"more than one recurrent layer: prefixes {prefixes}; s2l models have exactly one")
    p = prefixes[0]
    if not p and not allow_bare:
        raise ValueError("the recurrent keys have no module prefix (a bare nn.LSTM/GRU/RNN state_dict), not a "
                         "classifier: load it with parity.from_torch on the module")
    pre = f"{p}." if p else ""
    layers = 1 + max(int(m["layer"]) for m in matches.values())
    dirs = 2 if any(m["rev"] for m in matches.values()) else 1
    for layer in range(layers):
        for suffix in ("", "_reverse")[:dirs]:
            for mat in ("ih", "hh"):
                if f"{pre}weight_{mat}_l{layer}{suffix}" not in shapes:
                    raise ValueError(f"recurrent layer {p!r} lacks key {pre}weight_{mat}_l{layer}{suffix}")
    w_ih, w_hh = shapes[f"{pre}weight_ih_l0"], shapes[f"{pre}weight_hh_l0"]
    if len(w_ih) != 2 or len(w_hh) != 2:
        raise ValueError(f"{pre}weight_ih_l0 / weight_hh_l0 must be matrices, got shapes {w_ih}, {w_hh}")
    proj = 0
    if f"{pre}weight_hr_l0" in shapes:
        proj, hidden = shapes[f"{pre}weight_hr_l0"]
    else:
        hidden = w_hh[1]
    if hidden < 1 or w_hh[0] % hidden or w_hh[0] // hidden not in CELL_BY_GATES:
        raise ValueError(f"{pre}weight_hh_l0 has shape {w_hh}: rows are not 4x (LSTM), 3x (GRU) or 1x (RNN) the "
                         f"hidden size {hidden}")
    gates = w_hh[0] // hidden
    if proj and gates != 4:
        raise ValueError(f"{pre}weight_hr_l0 (a projection) exists only in an LSTM, but gates say {gates}")
    return p, dict(gates=gates, layers=layers, dirs=dirs, hidden=hidden, proj=proj,
                   bias=f"{pre}bias_ih_l0" in shapes or f"{pre}bias_hh_l0" in shapes, input_size=w_ih[1])


def _modules(shapes: Mapping[str, tuple], skip: str) -> dict[str, dict[str, tuple]]:
    """The non-recurrent keys grouped by module prefix: {"head": {"weight": (5, 128), "bias": (5,)}}."""
    modules: dict[str, dict[str, tuple]] = {}
    for k, shape in shapes.items():
        if k.startswith(skip + "."):
            continue
        prefix, _, leaf = k.rpartition(".")
        if k.startswith("opt."):
            raise ValueError(f"key {k!r} is optimizer state: this is a training checkpoint's arrays; convert or check "
                             "the run's model.safetensors instead")
        if leaf not in ("weight", "bias") or not prefix:
            raise ValueError(f"unrecognised key {k!r} (shape {shape}): expected <module>.weight / <module>.bias of "
                             "an Embedding, Linear or the recurrent layer")
        modules.setdefault(prefix, {})[leaf] = shape
    return modules


def attention_linear(v: str, candidates: list[str], d: int) -> str:
    """Of the `Linear(d, d)` layers with a bias (module paths), the attention one: the only candidate, or the
    one beside the scoring `Linear(d, 1, bias=False)` at `v` when the classifier is `Linear(d, d)` too (as many
    classes as attention features), where shapes cannot tell them apart."""
    if len(candidates) == 1:
        return candidates[0]
    parent = v.rpartition(".")[0]
    beside = [p for p in candidates if p.rpartition(".")[0] == parent]
    if len(beside) == 1:
        return beside[0]
    raise ValueError(f"cannot tell the attention Linear({d}, {d}) from the classifier among {candidates}: the "
                     f"classifier has {d} classes, as many as the attention's features, and both sit beside the "
                     f"scoring layer {v!r}; put the attention pair in its own submodule")


def infer_architecture(
    state_dict: Mapping,
    pooling: str | None = None,
    *,
    nonlinearity: str | None = None,
    padding_idx: int | None = None,
) -> Architecture:
    """Recognise a classifier's state_dict (tensors or arrays; only shapes and, for hints, values are read).

    `pooling` ("last", "mean", "max") is required unless an attention pair is present; `nonlinearity`
    ("tanh"/"relu") only matters for a plain RNN; `padding_idx` is the embedding's, when the model has one.
    """
    if pooling is not None and pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
    if nonlinearity not in (None, "tanh", "relu"):
        raise ValueError(f"unknown nonlinearity {nonlinearity!r}; expected 'tanh' or 'relu'")
    shapes = {k: shape_of(v) for k, v in state_dict.items()}
    notes: list[str] = []
    rnn_path, r = _recurrent(shapes)
    width = r["proj"] or r["hidden"]
    d = width * r["dirs"]
    linears, bare = {}, {}
    for prefix, leaves in _modules(shapes, rnn_path).items():
        w, b = leaves.get("weight"), leaves.get("bias")
        if w is None:
            raise ValueError(f"module {prefix!r} has a bias {b} but no weight: missing key '{prefix}.weight'")
        if len(w) != 2:
            raise ValueError(f"unrecognised module {prefix!r} with keys "
                             f"{ {f'{prefix}.{k}': s for k, s in leaves.items()} }: not an Embedding or Linear")
        if b is not None and b != (w[0],):
            raise ValueError(f"key '{prefix}.bias' has shape {b}, expected ({w[0]},) to match '{prefix}.weight' {w}")
        (linears if b is not None else bare)[prefix] = w
    paths = {"encoder": rnn_path}
    v = [p for p, w in bare.items() if w == (1, d)]
    attn = [p for p, w in linears.items() if w == (d, d)]
    if len(v) == 1 and attn and len(linears) == 2:
        a = attention_linear(v[0], attn, d)
        paths.update({"attention.attn": a, "attention.v": v[0]})
        del bare[v[0]], linears[a]
        if pooling not in (None, "attention"):
            raise ValueError(f"the weights hold an attention block; pooling {pooling!r} contradicts it")
        pooling = "attention"
    if not linears:
        hint = f"; bias-free matrices {bare}: is a '<module>.bias' key missing?" if bare else ""
        raise ValueError(f"expected one classifier Linear (weight + bias), found none{hint}")
    if len(bare) > 1:
        raise ValueError(f"unrecognised bias-free matrices {bare}: expected one Embedding (vocab, {r['input_size']}) "
                         f"and, for attention, one Linear({d}, 1, bias=False); is a '<module>.bias' key missing?")
    embedding = None
    if bare:
        embedding, (vocab, dim) = next(iter(bare.items()))
        if dim != r["input_size"]:
            raise ValueError(f"key '{embedding}.weight' has shape {(vocab, dim)}, expected ({vocab}, "
                             f"{r['input_size']}): the recurrent layer's '{rnn_path}.weight_ih_l0' reads "
                             f"{r['input_size']} features")
        paths["embedding"] = embedding
    else:
        notes.append(f"no Embedding in the weights: the model reads feature vectors (batch, time, "
                     f"{r['input_size']}), not token ids")
    if len(linears) != 1:
        raise ValueError(f"expected one classifier Linear (weight + bias), found {sorted(linears)}")
    fc, (classes, fc_in) = next(iter(linears.items()))
    paths["fc"] = fc
    if pooling is None:
        if r["dirs"] == 2 and fc_in == width:
            pooling = "last"  # only h_n[-1] is one direction wide
        else:
            raise ValueError("weights cannot tell how the model pools over time: pass pooling (--pooling) 'last', "
                             "'mean' or 'max' (what the forward pass does)")
    expected_in = width if pooling == "last" else d
    if fc_in != expected_in:
        raise ValueError(f"key '{fc}.weight' has shape {(classes, fc_in)}, expected ({classes}, {expected_in}): "
                         f"classifier {fc!r} reads {fc_in} features; pooling {pooling!r} of this recurrent layer "
                         f"gives {expected_in}")
    cell = CELL_BY_GATES[r["gates"]]
    if cell == "rnn":
        if nonlinearity is None:
            notes.append("plain RNN: weights cannot tell tanh from relu; assumed torch's default tanh")
        cell = f"rnn_{nonlinearity or 'tanh'}"
    elif nonlinearity is not None:
        raise ValueError(f"nonlinearity applies to a plain RNN only; the weights hold a {cell.upper()}")
    if embedding is not None and padding_idx is None:
        zero = np.flatnonzero(~np.asarray(state_dict[f"{embedding}.weight"]).any(axis=1))
        if zero.size:
            notes.append(f"embedding row {int(zero[0])} is all zeros: if the model uses padding_idx={int(zero[0])} "
                         "pass it (it changes the gradients)")
    config = ClassifierConfig(
        vocab_size=vocab if embedding is not None else None,
        embedding_dim=r["input_size"], input_size=None if embedding is not None else r["input_size"],
        hidden_size=r["hidden"], num_classes=classes, cell=cell, num_layers=r["layers"],
        bidirectional=r["dirs"] == 2, pooling=pooling, padding_idx=padding_idx, proj_size=r["proj"], bias=r["bias"],
    )
    return Architecture(config, paths, tuple(notes))
