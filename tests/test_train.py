import numpy as np

from s2l_jax.data import Dataset
from s2l_jax.model import ClassifierConfig
from s2l_jax.train import TrainConfig, fit


def test_tiny_text_dataset_is_overfit_to_full_accuracy():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 7, 16).astype(np.int32)
    x = np.zeros((16, 6), np.int32)
    labels = np.arange(16, dtype=np.int32) % 2
    for i, n in enumerate(lengths):
        x[i, :n] = rng.integers(2, 10, n)
        x[i, 0] = 10 + labels[i]  # label-bearing first token: only reachable through valid steps
    data = Dataset(x, lengths, labels, ("a", "b"))
    for pooling in ("last", "mean", "attention"):
        cfg = ClassifierConfig(vocab_size=12, embedding_dim=8, hidden_size=16, num_classes=2, pooling=pooling,
                               padding_idx=0)
        _, history = fit(cfg, TrainConfig(epochs=40, batch_size=8, learning_rate=1e-2, warmup_steps=2), data, data,
                         log=lambda s: None)
        assert history[-1]["accuracy"] == 1.0, pooling
