"""SequenceClassifier against torch: the seed's three models as users write them, every pooling with lengths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from oracle import close
from torch import nn

from parity import TorchSequenceClassifier, assert_parity, from_torch, to_torch
from s2l_jax import ClassifierConfig, SequenceClassifier


# The seed's models as a user would write them in their own code: their own attribute names.
class UserAttention(nn.Module):
    def __init__(self, hidden_dim):
        super().__init__()
        self.proj = nn.Linear(hidden_dim, hidden_dim)
        self.score = nn.Linear(hidden_dim, 1, bias=False)

    def forward(self, h):
        w = F.softmax(self.score(torch.tanh(self.proj(h))), dim=1)
        return torch.sum(h * w, dim=1)


class UserModel(nn.Module):
    def __init__(self, pooling, vocab=1000, emb=50, hidden=128, classes=5):
        super().__init__()
        bi = pooling != "last"
        self.pooling = pooling
        self.emb = nn.Embedding(vocab, emb)
        self.encoder = nn.LSTM(emb, hidden, batch_first=True, bidirectional=bi)
        if pooling == "attention":
            self.att = UserAttention(hidden * 2)
        self.head = nn.Linear(hidden * (2 if bi else 1), classes)

    def forward(self, x):
        out, (h, _) = self.encoder(self.emb(x))
        if self.pooling == "last":
            return self.head(h[-1])
        if self.pooling == "mean":
            return self.head(out.mean(dim=1))
        return self.head(self.att(out))


@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
def test_seed_models_convert_from_user_classes_and_match(pooling):
    tm = UserModel(pooling)
    fm, variables = from_torch(tm, pooling=None if pooling == "attention" else pooling)
    assert fm.config.pooling == pooling and fm.config.bidirectional == (pooling != "last")
    tokens = torch.randint(0, 1000, (32, 20))
    labels = torch.randint(0, 5, (32,))
    logits = tm(tokens)
    F.cross_entropy(logits, labels).backward()

    def loss(params):
        out = fm.apply({"params": params}, jnp.asarray(tokens.numpy()))
        logp = jax.nn.log_softmax(out)
        return -jnp.mean(logp[jnp.arange(32), jnp.asarray(labels.numpy())]), out

    (_, out), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    close(out, logits.detach().numpy(), 1e-5)
    user_grads = to_torch({"params": grads}, UserModel(pooling)).state_dict()  # renamed onto the user's names
    for name, p in tm.named_parameters():
        close(user_grads[name], p.grad.numpy(), 1e-5, relative_to_scale=True)
    back = to_torch(variables, UserModel(pooling))
    for (k, a), (k2, b) in zip(tm.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k


@pytest.mark.parametrize("cell,pooling", [("lstm", "last"), ("lstm", "mean"), ("gru", "max"),
                                          ("rnn_tanh", "attention"), ("lstm", "attention"), ("gru", "last")])
def test_classifier_with_lengths_matches_packed_torch(cell, pooling):
    config = ClassifierConfig(vocab_size=30, embedding_dim=6, hidden_size=7, num_classes=3, cell=cell,
                              num_layers=2, bidirectional=True, pooling=pooling, padding_idx=0)
    tm = TorchSequenceClassifier(config)
    fm, variables = from_torch(tm, pooling=pooling)
    assert fm.config == config
    lengths = [6, 2, 5, 1]
    tokens = torch.randint(1, 30, (4, 6))
    tokens[torch.arange(6)[None, :] >= torch.tensor(lengths)[:, None]] = 0
    labels = torch.tensor([0, 1, 2, 1])
    logits = tm(tokens, torch.tensor(lengths))
    F.cross_entropy(logits, labels).backward()

    def loss(params):
        out = fm.apply({"params": params}, jnp.asarray(tokens.numpy()), lengths=jnp.asarray(lengths))
        return -jnp.mean(jax.nn.log_softmax(out)[jnp.arange(4), jnp.asarray(labels.numpy())]), out

    (_, out), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    close(out, logits.detach().numpy(), 1e-5)
    flat = to_torch({"params": grads})
    for name, p in tm.named_parameters():
        close(flat[name], p.grad.numpy(), 1e-5, relative_to_scale=True)
    assert not np.any(np.asarray(flat["embedding.weight"][0]))  # padding row never trained, as in torch


@pytest.mark.parametrize("cell,pooling,proj_size,lengths", [
    ("rnn_relu", "max", 0, [6, 1, 3]),
    ("lstm", "last", 3, [6, 1, 3]),  # h_n[-1]: the reverse direction's projected state after its whole sequence
    ("gru", "attention", 0, [1]),  # one sequence of one step
    ("lstm", "mean", 2, [5, 5]),  # every length T
], ids=["rnn_relu_max", "lstm_proj_last", "gru_attention_T1_batch1", "lstm_proj_mean_full_lengths"])
def test_unusual_classifiers_match_torch_in_outputs_and_every_gradient(cell, pooling, proj_size, lengths):
    config = ClassifierConfig(vocab_size=20, embedding_dim=4, hidden_size=5, num_classes=3, cell=cell,
                              num_layers=2, bidirectional=True, pooling=pooling, proj_size=proj_size)
    tm = TorchSequenceClassifier(config)
    fm, variables = from_torch(tm, pooling=pooling)
    tokens = np.random.default_rng(0).integers(0, 20, (len(lengths), max(lengths)))
    assert_parity(tm, fm, variables, tokens, lengths=lengths)
    apply = jax.jit(fm.apply)
    full = jnp.full(len(lengths), max(lengths))  # lengths all T pool as no lengths, to float rounding: XLA:CPU
    # may fuse the masked scan's ops otherwise (2 ulp apart on a Zen 1 host, bit-identical on Zen 4)
    np.testing.assert_allclose(apply(variables, tokens, lengths=full), apply(variables, tokens), rtol=1e-6, atol=1e-6)


def test_classifier_float64_agrees_to_1e10():
    with jax.enable_x64(True):
        config = ClassifierConfig(vocab_size=20, embedding_dim=5, hidden_size=6, num_classes=4, num_layers=2,
                                  bidirectional=True, pooling="attention")
        tm = TorchSequenceClassifier(config).double()
        fm, variables = from_torch(tm)
        assert variables["params"]["fc"]["weight"].dtype == jnp.float64
        tokens = torch.randint(0, 20, (3, 5))
        lengths = [5, 3, 1]
        expected = tm(tokens, torch.tensor(lengths)).detach().numpy()
        got = fm.apply(variables, jnp.asarray(tokens.numpy()), lengths=jnp.asarray(lengths))
        close(got, expected, 1e-10)


def test_feature_input_classifier_matches_torch():
    config = ClassifierConfig(vocab_size=None, input_size=3, hidden_size=5, num_classes=2, cell="gru",
                              pooling="mean")
    tm = TorchSequenceClassifier(config)
    fm, variables = from_torch(tm, pooling="mean")
    x = torch.randn(4, 7, 3)
    close(fm.apply(variables, jnp.asarray(x.numpy()), lengths=jnp.array([7, 3, 1, 5])),
          tm(x, torch.tensor([7, 3, 1, 5])).detach().numpy(), 1e-5)


@pytest.mark.parametrize("fields,message", [
    (dict(vocab_size=0), "vocab_size must be >= 1, got 0"),
    (dict(embedding_dim=0), "embedding_dim must be >= 1, got 0"),
    (dict(vocab_size=None, input_size=0), "input_size must be >= 1, got 0"),
])
def test_configs_with_empty_inputs_are_refused_as_torch_refuses_them(fields, message):
    """torch refuses these layers ('input_size must be greater than zero'); s2l_jax ran a model that reads nothing."""
    with pytest.raises(ValueError, match=message):
        ClassifierConfig(**{"vocab_size": 10, "embedding_dim": 4, **fields})


@pytest.fixture
def small():
    config = ClassifierConfig(vocab_size=10, embedding_dim=4, hidden_size=5, num_classes=3)
    model = SequenceClassifier(config)
    return model, model.init(jax.random.key(0), jnp.zeros((1, 3), jnp.int32))


@pytest.mark.parametrize("bad_id", [10, -1])
def test_token_ids_outside_the_vocabulary_are_refused(small, bad_id):
    model, variables = small
    tokens = jnp.array([[1, 2, 3], [4, bad_id, 5]])
    with pytest.raises(ValueError, match=rf"token id {bad_id} at index \[1, 1\] is outside the vocabulary \[0, 10\)"):
        model.apply(variables, tokens)
    under_jit = jax.jit(model.apply)(variables, tokens)  # values unknown under jit: NaN, never a clamped row
    assert np.isnan(under_jit[1]).all() and np.isfinite(under_jit[0]).all()


def test_wrong_rank_and_dtype_are_refused(small):
    model, variables = small
    with pytest.raises(ValueError, match=r"token ids \(batch, time\), got shape \(3,\)"):
        model.apply(variables, jnp.array([1, 2, 3]))
    with pytest.raises(TypeError, match="integers"):
        model.apply(variables, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="unknown pooling 'sum'"):
        ClassifierConfig(pooling="sum")
    with pytest.raises(ValueError, match="unknown cell 'lstn'"):
        ClassifierConfig(cell="lstn")
