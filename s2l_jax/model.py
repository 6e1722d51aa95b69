"""SequenceClassifier: token ids (or feature vectors) -> embedding -> recurrent encoder -> head -> linear."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from s2l_jax.layers import Embedding, Linear
from s2l_jax.masks import check_lengths, lengths_in_range, sequence_mask
from s2l_jax.pooling import POOLINGS, AttentionPool, last_pool, max_pool, mean_pool
from s2l_jax.recurrent import CELLS, ScanOptions, make_encoder


def plain_scalars(config) -> None:
    """Replace NumPy scalars in a frozen dataclass's fields (`num_classes=labels.max() + 1`) by Python ones, so
    the config is JSON-serialisable and hashes like the same config written with Python numbers."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, np.generic):
            object.__setattr__(config, f.name, value.item())


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of a sequence classifier; defaults are the seed's sizes.

    vocab_size None means the inputs are feature vectors of `input_size` (no embedding).
    `dropout` applies to the pooled features before `fc`; `rnn_dropout` between recurrent layers.
    """

    vocab_size: int | None = 1000
    embedding_dim: int = 50
    hidden_size: int = 128
    num_classes: int = 5
    cell: str = "lstm"
    num_layers: int = 1
    bidirectional: bool = False
    pooling: str = "last"
    dropout: float = 0.0
    rnn_dropout: float = 0.0
    padding_idx: int | None = None
    proj_size: int = 0
    bias: bool = True
    input_size: int | None = None

    def __post_init__(self):
        plain_scalars(self)
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; expected one of {CELLS}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; expected one of {POOLINGS}")
        if self.vocab_size is None and self.input_size is None:
            raise ValueError("give vocab_size (token ids) or input_size (feature vectors)")
        if self.padding_idx is not None and not (self.vocab_size and 0 <= self.padding_idx < self.vocab_size):
            raise ValueError(f"padding_idx {self.padding_idx} is outside the vocabulary [0, {self.vocab_size})")
        used = ("vocab_size", "embedding_dim") if self.vocab_size is not None else ("input_size",)
        for name in ("hidden_size", "num_classes", "num_layers", *used):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.proj_size and self.cell != "lstm":
            raise ValueError(f"proj_size is only defined for the lstm cell, not {self.cell!r}")
        if not 0 <= self.proj_size < self.hidden_size:
            raise ValueError(f"proj_size must lie in [0, hidden_size={self.hidden_size}), got {self.proj_size}")
        for name in ("dropout", "rnn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")

    @property
    def features(self) -> int:
        """Width of the pooled representation fed to `fc` (`h_n[-1]` is one direction's state)."""
        directions = 1 if self.pooling == "last" or not self.bidirectional else 2
        return (self.proj_size or self.hidden_size) * directions

    def replace(self, **changes) -> ClassifierConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ClassifierConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        return cls(**d)


def example_inputs(config: ClassifierConfig) -> jax.Array:
    """Smallest input the classifier's init accepts (for shape discovery)."""
    if config.vocab_size is not None:
        return jnp.zeros((1, 1), jnp.int32)
    return jnp.zeros((1, 1, config.input_size), jnp.float32)


PRESETS = {
    "last": ClassifierConfig(pooling="last"),
    "mean": ClassifierConfig(pooling="mean", bidirectional=True),
    "attention": ClassifierConfig(pooling="attention", bidirectional=True),
}


class SequenceClassifier(nn.Module):
    """Params mirror the reference torch model's state_dict: `embedding.weight`, `encoder.weight_ih_l0`, ...,
    `attention.attn.weight`, `attention.v.weight`, `fc.weight`, `fc.bias`."""

    config: ClassifierConfig
    options: ScanOptions = ScanOptions()
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: jax.Array, lengths=None, deterministic: bool = True) -> jax.Array:
        cfg = self.config
        shape = np.shape(inputs)  # token ids stay as given: the embedding checks them before any int32 cast
        expected_rank = 2 if cfg.vocab_size is not None else 3
        if len(shape) != expected_rank:
            what = "token ids (batch, time)" if expected_rank == 2 else "features (batch, time, input_size)"
            raise ValueError(f"SequenceClassifier expects {what}, got shape {shape}")
        if shape[0] < 1:
            raise ValueError("empty batch")
        if cfg.vocab_size is not None:
            x = Embedding(cfg.vocab_size, cfg.embedding_dim, cfg.padding_idx, self.param_dtype, name="embedding")(
                inputs
            )  # (batch, time, embedding_dim)
        else:
            if shape[-1] != cfg.input_size:
                raise ValueError(f"inputs have {shape[-1]} features, config says {cfg.input_size}")
            x = jnp.asarray(inputs)
        mask = None
        if lengths is not None:
            lengths = check_lengths(lengths, x.shape[0], x.shape[1])
            mask = sequence_mask(lengths, x.shape[1])  # (batch, time)
        encoder = make_encoder(
            cfg.cell, cfg.hidden_size, num_layers=cfg.num_layers, bias=cfg.bias, batch_first=True,
            dropout=cfg.rnn_dropout, bidirectional=cfg.bidirectional, proj_size=cfg.proj_size,
            param_dtype=self.param_dtype, options=self.options, name="encoder",
        )
        outputs, state = encoder(x, lengths=lengths, deterministic=deterministic)  # (batch, time, features)
        h_n = state[0] if cfg.cell == "lstm" else state
        if cfg.pooling == "last":
            pooled = last_pool(h_n)
        elif cfg.pooling == "mean":
            pooled = mean_pool(outputs, mask)
        elif cfg.pooling == "max":
            pooled = max_pool(outputs, mask)
        else:
            pooled = AttentionPool(self.param_dtype, name="attention")(outputs, mask)
        pooled = nn.Dropout(cfg.dropout, deterministic=deterministic)(pooled)
        logits = Linear(cfg.num_classes, param_dtype=self.param_dtype, name="fc")(pooled)  # (batch, classes)
        if lengths is not None:  # under jit, lengths outside [1, T] give NaN rows, never a clamped or empty answer
            logits = jnp.where(lengths_in_range(lengths, x.shape[1])[:, None], logits, jnp.nan)
        return logits
