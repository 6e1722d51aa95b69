"""Predictor: the LSTM weights laid out once give the same logits as `model.apply`, bit for bit, and torch's."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from oracle import close

from parity import TorchSequenceClassifier, from_torch
from s2l_jax import LSTM, ClassifierConfig, Predictor, ScanOptions, SequenceClassifier
from s2l_jax.predictor import lstm_layout

LENGTHS = jnp.array([6, 2, 5, 1])


def _tokens(vocab: int = 30) -> jax.Array:
    return jax.random.randint(jax.random.key(1), (4, 6), 1, vocab)


@pytest.mark.parametrize("config", [
    ClassifierConfig(vocab_size=30, embedding_dim=6, hidden_size=7, num_classes=3, pooling="last"),
    ClassifierConfig(vocab_size=30, embedding_dim=6, hidden_size=7, num_classes=3, pooling="mean",
                     bidirectional=True),
    ClassifierConfig(vocab_size=30, embedding_dim=6, hidden_size=7, num_classes=3, pooling="attention",
                     bidirectional=True, num_layers=2, proj_size=4, bias=False),
], ids=["last", "mean", "attention_2_layers_proj_no_bias"])
def test_predictor_matches_jitted_apply_bit_for_bit_and_torch_to_1e5(config):
    tm = TorchSequenceClassifier(config)
    model, variables = from_torch(tm, pooling=config.pooling)
    predictor = Predictor(model, variables)
    assert set(lstm_layout(model, variables["params"])["encoder"]) == {
        f"{k}_l{layer}{sfx}" for k in ("joint", "joint_bias") for layer in range(config.num_layers)
        for sfx in ("", "_reverse")[: 2 if config.bidirectional else 1]}
    tokens = _tokens()
    for lengths in (None, LENGTHS):
        got = np.asarray(predictor(tokens, lengths))
        np.testing.assert_array_equal(got, jax.jit(model.apply)(variables, tokens, lengths=lengths))
    expected = tm(torch.tensor(np.array(tokens)), torch.tensor(np.array(LENGTHS)))
    close(predictor(tokens, LENGTHS), expected.detach().numpy(), 1e-5)


def test_fused_directions_take_the_laid_out_weights_stacked_and_match_apply():
    config = ClassifierConfig(vocab_size=30, embedding_dim=6, hidden_size=7, num_classes=3, pooling="mean",
                              bidirectional=True, num_layers=2)
    model = SequenceClassifier(config, options=ScanOptions(fuse_directions=True))  # one vmapped scan per layer
    variables = model.init(jax.random.key(0), _tokens())
    layout = lstm_layout(model, variables["params"])
    assert len(layout["encoder"]) == 8
    same = Predictor(model, variables)(_tokens(), LENGTHS)
    np.testing.assert_array_equal(same, jax.jit(model.apply)(variables, _tokens(), lengths=LENGTHS))
    moved = jax.tree.map(lambda a: a * 1.5, layout)
    assert np.abs(model.apply({**variables, "layout": moved}, _tokens(), lengths=LENGTHS) - same).max() > 1e-3


def test_the_laid_out_weights_are_the_ones_used():
    """The layout replaces the params' recurrent weights in the scan: a changed layout changes the logits."""
    config = ClassifierConfig(vocab_size=30, embedding_dim=6, hidden_size=7, num_classes=3, pooling="mean")
    model = SequenceClassifier(config)
    variables = model.init(jax.random.key(0), _tokens())
    layout = lstm_layout(model, variables["params"])
    tokens = _tokens()
    same = model.apply({**variables, "layout": layout}, tokens)
    np.testing.assert_array_equal(same, model.apply(variables, tokens))
    moved = jax.tree.map(lambda a: a * 1.5, layout)
    assert np.abs(model.apply({**variables, "layout": moved}, tokens) - same).max() > 1e-3


def test_laid_out_weights_refuse_gradients():
    """Gradients with the layout in place would miss the params (they are not used): an error, not zeros."""
    config = ClassifierConfig(vocab_size=30, embedding_dim=6, hidden_size=7, num_classes=3)
    model = SequenceClassifier(config)
    variables = model.init(jax.random.key(0), _tokens())
    layout = lstm_layout(model, variables["params"])

    def loss(params):
        return model.apply({"params": params, "layout": layout}, _tokens()).sum()

    with pytest.raises(TypeError, match=re.escape("are for inference only")):
        jax.grad(loss)(variables["params"])


@pytest.mark.parametrize("cell,options", [
    ("gru", ScanOptions()), ("rnn_tanh", ScanOptions()), ("lstm", ScanOptions(input_projection="chunked", chunk=4)),
    ("lstm", ScanOptions(remat=True, chunk=4)), ("lstm", ScanOptions(custom_vjp=False)),
], ids=["gru", "rnn", "lstm_chunked", "lstm_remat", "lstm_autodiff"])
def test_models_without_a_per_step_lstm_dot_predict_unchanged(cell, options):
    config = ClassifierConfig(vocab_size=30, embedding_dim=6, hidden_size=7, num_classes=3, cell=cell,
                              pooling="mean", bidirectional=True)
    model = SequenceClassifier(config, options=options)
    variables = model.init(jax.random.key(0), _tokens())
    assert lstm_layout(model, variables["params"]) == {}
    np.testing.assert_array_equal(Predictor(model, variables)(_tokens(), LENGTHS),
                                  jax.jit(model.apply)(variables, _tokens(), lengths=LENGTHS))


def test_predictor_checks_its_inputs_as_apply_does():
    config = ClassifierConfig(vocab_size=30, embedding_dim=6, hidden_size=7, num_classes=3)
    model = SequenceClassifier(config)
    predictor = Predictor(model, model.init(jax.random.key(0), _tokens()))
    with pytest.raises(ValueError, match=re.escape("lengths must have shape (4,)")):
        predictor(_tokens(), jnp.array([1, 2]))
    with pytest.raises(ValueError, match="expects token ids"):
        predictor(jnp.ones((2, 3, 4), jnp.int32))
    with pytest.raises(TypeError, match="Predictor takes a SequenceClassifier, got LSTM"):
        Predictor(LSTM(4), {"params": {}})
    with pytest.raises(ValueError, match=r"variables must be \{'params': ...\}"):
        Predictor(model, model.init(jax.random.key(0), _tokens())["params"])


def test_predictor_refuses_bad_token_ids_and_lengths_as_apply_does_even_past_int32():
    """Known values are checked before jit's boundary, where int64 values past int32 wrap (2**32 + 3 -> 3) into
    valid-looking ones: an error as `model.apply` gives, never the logits of another input."""
    config = ClassifierConfig(vocab_size=30, embedding_dim=6, hidden_size=7, num_classes=3)
    model = SequenceClassifier(config)
    predictor = Predictor(model, model.init(jax.random.key(0), _tokens()))
    tokens = np.asarray(_tokens(), np.int64)
    lengths = np.asarray(LENGTHS, np.int64)
    lengths[1] = 2**32 + 3
    with pytest.raises(ValueError, match=re.escape(f"lengths[1] = {2**32 + 3} (1 bad in all)")):
        predictor(tokens, lengths)
    with pytest.raises(ValueError, match=re.escape("lengths[3] = 0")):
        predictor(tokens, jnp.array([6, 2, 5, 0]))
    for bad in (2**32 + 5, 30):
        tokens[1, 1] = bad
        with pytest.raises(ValueError, match=re.escape(f"token id {bad} at index [1, 1] is outside the vocabulary")):
            predictor(tokens)
