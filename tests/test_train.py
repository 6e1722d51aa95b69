import numpy as np
import pytest

from s2l_jax.data import Dataset, load_default, split
from s2l_jax.model import PRESETS, ClassifierConfig, SequenceClassifier
from s2l_jax.train import TrainConfig, evaluate, fit, make_steps


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


def test_trained_model_exported_to_torch_predicts_the_same_validation_labels():
    torch = pytest.importorskip("torch")
    import optax

    import parity

    train, valid = split(load_default())
    train = train.take(np.arange(256))
    cfg = PRESETS["attention"].replace(vocab_size=None, input_size=8, hidden_size=16, num_classes=10)
    tc = TrainConfig(epochs=6, batch_size=32, learning_rate=1e-2, warmup_steps=2)
    params, _ = fit(cfg, tc, train, valid, log=lambda s: None)
    model = parity.to_torch({"params": params}, parity.TorchSequenceClassifier(cfg)).eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(valid.inputs), torch.from_numpy(valid.lengths.astype(np.int64)))
    eval_step = make_steps(SequenceClassifier(cfg), optax.identity())[1]
    _, jax_pred = eval_step(params, valid.inputs, valid.lengths, valid.labels, np.ones(len(valid), np.float32))
    np.testing.assert_array_equal(logits.argmax(-1).numpy(), np.asarray(jax_pred))
    assert evaluate(eval_step, params, valid, 64)["accuracy"] > 0.3  # learned, so the agreement is not trivial
