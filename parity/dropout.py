"""Where a user's torch classifier applies its nn.Dropout: s2l_jax's classifier has one dropout, on the pooled
features right before the classifier Linear, so a dropout anywhere else would convert into another model in
training mode (inference is unaffected). The weights cannot tell where a dropout sits; running the forward once can.
"""

from __future__ import annotations

import torch
from torch import nn

# Modules whose calls are recorded: the parts s2l_jax knows (attention's Linears included).
TRACED = (nn.Embedding, nn.RNNBase, nn.Dropout, nn.Linear)
SHAPE = (2, 3)  # batch, time of the probe input: two rows, since forwards that squeeze() break on one


def _probe_input(emb: nn.Embedding | None, rnn: nn.RNNBase) -> tuple[torch.Tensor, str]:
    """A tiny valid input: token ids that are not padding (a forward may derive lengths from them), or zeros."""
    if emb is None:
        return torch.zeros(*SHAPE, rnn.input_size, dtype=rnn.all_weights[0][0].dtype), "feature vectors"
    token = 0 if emb.padding_idx is None else (emb.padding_idx + 1) % emb.num_embeddings
    return torch.full(SHAPE, token, dtype=torch.long), "token ids"


def _trace(module: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, object, object]]:
    """(path, module, first input, output) of each traced module's calls, in call order, from one forward pass:
    no gradients, every module in eval mode but the dropouts, in training mode so that their output is a new
    tensor (in eval mode it is their input), drawing from a forked generator; each module's mode is restored."""
    calls: list[tuple[str, nn.Module, object, object]] = []
    modes = [(m, m.training) for m in module.modules()]

    def record(path: str):
        return lambda m, args, out: calls.append((path, m, args[0] if args else None, out))

    hooks = [sub.register_forward_hook(record(path)) for path, sub in module.named_modules() if isinstance(sub, TRACED)]
    try:
        module.eval()
        for m in module.modules():
            if isinstance(m, nn.Dropout):
                m.train()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            module(x)
    finally:
        for h in hooks:
            h.remove()
        for m, training in modes:
            m.training = training
    return calls


def _name(call) -> str:
    return f"{call[0]!r} ({type(call[1]).__name__})"


def pooled_dropout(module: nn.Module, emb: nn.Embedding | None, rnn: nn.RNNBase, fc_path: str) -> float:
    """The rate of the dropout `module` applies to the classifier `fc_path`'s input after the recurrent layer
    (0 without one). A dropout applied anywhere else, or more than one, is a ValueError naming it and where it is
    applied; dropouts with p=0 and ones the forward never calls change nothing and are ignored."""
    drops = {id(m): (p, m) for p, m in module.named_modules() if isinstance(m, nn.Dropout) and m.p > 0}
    if not drops:
        return 0.0
    x, kind = _probe_input(emb, rnn)
    first = next(iter(drops.values()))
    try:
        calls = _trace(module, x)
    except Exception as e:  # any failure of the user's forward: the probe input did not suit it
        raise ValueError(f"cannot tell where dropout {first[0]!r} (p={first[1].p}) is applied: the module's forward "
                         f"failed on a {SHAPE} batch of {kind} ({type(e).__name__}: {e}); s2l_jax converts "
                         "classifiers whose forward(inputs) runs, dropout only on the pooled features before the "
                         "classifier Linear") from None
    rnn_at = next((i for i, c in enumerate(calls) if c[1] is rnn), None)
    applied = set()
    for i, (path, m, _, out) in enumerate(calls):
        if id(m) not in drops:
            continue
        before = _name(calls[i - 1]) if i else "the start"
        after = calls[i + 1] if i + 1 < len(calls) else None
        is_fc_input = after is not None and after[0] == fc_path and after[2] is out
        if rnn_at is not None and rnn_at < i and is_fc_input:
            applied.add(path)
            continue
        where = f"after {before}, " + (f"before {_name(after)}" if after is not None else "at the end")
        if after is not None and after[0] == fc_path and rnn_at is not None and rnn_at < i:
            where += f", but {after[0]!r} is not given its output"
        raise ValueError(f"dropout {path!r} (p={m.p}) is applied {where}; s2l_jax applies dropout only to the "
                         f"pooled features, as the classifier {fc_path!r}'s input (Embedding -> LSTM/GRU/RNN -> "
                         "pooling -> Dropout -> Linear): move it there or set its p to 0")
    if len(applied) > 1:
        raise ValueError(f"dropouts {sorted(applied)} are each applied to the classifier's input; s2l_jax has one")
    return float(next(m for p, m in drops.values() if p in applied).p) if applied else 0.0
