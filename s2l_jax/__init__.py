"""s2l_jax: torch-exact sequence-to-label models in JAX/Flax."""

from s2l_jax.layers import Embedding, Linear
from s2l_jax.masks import sequence_mask
from s2l_jax.model import PRESETS, ClassifierConfig, SequenceClassifier
from s2l_jax.pooling import POOLINGS, AttentionPool, attention_weights, last_pool, max_pool, mean_pool
from s2l_jax.predictor import Predictor
from s2l_jax.recurrent import CELLS, GRU, LSTM, RNN, ScanOptions, gru_scan, lstm_scan, recurrent_scan, rnn_scan

__all__ = [
    "CELLS", "GRU", "LSTM", "POOLINGS", "PRESETS", "RNN", "AttentionPool", "ClassifierConfig", "Embedding",
    "Linear", "Predictor", "ScanOptions", "SequenceClassifier", "attention_weights", "gru_scan", "last_pool",
    "lstm_scan", "max_pool", "mean_pool", "recurrent_scan", "rnn_scan", "sequence_mask",
]
