"""Reference torch modules: recurrent layers with lengths via packing, the seed's three classifiers, and a
configurable classifier whose state_dict names are the ones s2l_jax's params mirror."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from s2l_jax.model import ClassifierConfig


def torch_recurrent(
    cell: str,
    input_size: int,
    hidden_size: int,
    *,
    num_layers: int = 1,
    bias: bool = True,
    batch_first: bool = False,
    dropout: float = 0.0,
    bidirectional: bool = False,
    proj_size: int = 0,
) -> nn.RNNBase:
    """The torch module for an s2l_jax cell name ("lstm", "gru", "rnn_tanh", "rnn_relu")."""
    kw = dict(num_layers=num_layers, bias=bias, batch_first=batch_first, dropout=dropout,
              bidirectional=bidirectional)
    if cell == "lstm":
        return nn.LSTM(input_size, hidden_size, proj_size=proj_size, **kw)
    if cell == "gru":
        return nn.GRU(input_size, hidden_size, **kw)
    if cell in ("rnn_tanh", "rnn_relu"):
        return nn.RNN(input_size, hidden_size, nonlinearity=cell[4:], **kw)
    raise ValueError(f"unknown cell {cell!r}; expected one of ('lstm', 'gru', 'rnn_tanh', 'rnn_relu')")


def run_recurrent(module: nn.RNNBase, x: torch.Tensor, lengths=None, initial_state=None):
    """Call `module` as torch users do: packed (`enforce_sorted=False`) when `lengths` are given, padded back to
    the input's length. Returns what the module returns: `(output, h_n)` or `(output, (h_n, c_n))`."""
    if lengths is None:
        return module(x, initial_state)
    total = x.shape[1] if module.batch_first else x.shape[0]
    lengths = torch.as_tensor(lengths, dtype=torch.int64).cpu()
    packed = pack_padded_sequence(x, lengths, batch_first=module.batch_first, enforce_sorted=False)
    out, state = module(packed, initial_state)
    out, _ = pad_packed_sequence(out, batch_first=module.batch_first, total_length=total)
    return out, state


def valid_mask(lengths, total: int, device=None) -> torch.Tensor:
    """`(batch, time)` bool, True at valid steps."""
    lengths = torch.as_tensor(lengths, device=device)
    return torch.arange(total, device=device)[None, :] < lengths[:, None]


class Attention(nn.Module):
    """The seed's additive attention, with an optional mask over padded steps."""

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.attn = nn.Linear(hidden_dim, hidden_dim)
        self.v = nn.Linear(hidden_dim, 1, bias=False)

    def forward(self, hidden_states, mask=None):
        scores = self.v(torch.tanh(self.attn(hidden_states)))  # (batch, time, 1)
        if mask is not None:
            scores = scores.masked_fill(~mask[..., None], float("-inf"))
        weights = F.softmax(scores, dim=1)
        return torch.sum(hidden_states * weights, dim=1)


class TorchSequenceClassifier(nn.Module):
    """torch twin of `s2l_jax.SequenceClassifier` for any `ClassifierConfig`; with `lengths` it packs the
    sequence and pools over valid steps only."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = c = config
        if c.vocab_size is not None:
            self.embedding = nn.Embedding(c.vocab_size, c.embedding_dim, padding_idx=c.padding_idx)
        input_size = c.embedding_dim if c.vocab_size is not None else c.input_size
        self.encoder = torch_recurrent(
            c.cell, input_size, c.hidden_size, num_layers=c.num_layers, bias=c.bias, batch_first=True,
            dropout=c.rnn_dropout, bidirectional=c.bidirectional, proj_size=c.proj_size,
        )
        if c.pooling == "attention":
            self.attention = Attention(c.features)
        self.dropout = nn.Dropout(c.dropout)
        self.fc = nn.Linear(c.features, c.num_classes)

    def pooled(self, inputs, lengths=None):
        """The features fed to dropout and `fc`, `(batch, features)`."""
        c = self.config
        x = self.embedding(inputs) if c.vocab_size is not None else inputs
        out, state = run_recurrent(self.encoder, x, lengths)
        mask = None if lengths is None else valid_mask(lengths, x.shape[1], x.device)
        if c.pooling == "last":
            h_n = state[0] if c.cell == "lstm" else state
            return h_n[-1]
        if c.pooling == "mean":
            if mask is None:
                return out.mean(dim=1)
            return out.sum(dim=1) / mask.sum(dim=1, keepdim=True).to(out.dtype)
        if c.pooling == "max":
            if mask is not None:
                out = out.masked_fill(~mask[..., None], float("-inf"))
            return out.max(dim=1).values
        return self.attention(out, mask)

    def forward(self, inputs, lengths=None):
        return self.fc(self.dropout(self.pooled(inputs, lengths)))


# The seed's three classifiers, as its author wrote them (sequence-to-label.md).
class SeedLastHidden(nn.Module):
    def __init__(self, vocab_size=1000, embedding_dim=50, hidden_dim=128, num_classes=5):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, batch_first=True)
        self.fc = nn.Linear(hidden_dim, num_classes)

    def forward(self, x):
        embedded = self.embedding(x)
        _, (hidden, _) = self.lstm(embedded)
        return self.fc(hidden[-1, :, :])


class SeedMeanPool(nn.Module):
    def __init__(self, vocab_size=1000, embedding_dim=50, hidden_dim=128, num_classes=5):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(hidden_dim * 2, num_classes)

    def forward(self, x):
        output, _ = self.lstm(self.embedding(x))
        return self.fc(torch.mean(output, dim=1))


class SeedAttention(nn.Module):
    def __init__(self, vocab_size=1000, embedding_dim=50, hidden_dim=128, num_classes=5):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.attention = Attention(hidden_dim * 2)
        self.fc = nn.Linear(hidden_dim * 2, num_classes)

    def forward(self, x):
        output, _ = self.lstm(self.embedding(x))
        return self.fc(self.attention(output))


SEED_MODELS = {"last": SeedLastHidden, "mean": SeedMeanPool, "attention": SeedAttention}
