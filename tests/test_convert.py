"""Conversion: lossless round trips, every key and shape checked, unrecognisable models refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn

from parity import TorchSequenceClassifier, from_torch, to_torch, torch_recurrent
from parity.torch_models import SEED_MODELS
from s2l_jax import ClassifierConfig


@pytest.mark.parametrize("cell,proj", [("lstm", 0), ("lstm", 2), ("gru", 0), ("rnn_relu", 0)])
def test_bare_recurrent_round_trip_is_bit_exact(cell, proj):
    tm = torch_recurrent(cell, 3, 4, num_layers=2, bidirectional=True, proj_size=proj, bias=cell != "gru")
    fm, variables = from_torch(tm)
    assert list(variables["params"]) == list(tm.state_dict())  # same names, same order
    back = to_torch(variables, torch_recurrent(cell, 3, 4, num_layers=2, bidirectional=True, proj_size=proj,
                                               bias=cell != "gru"))
    for k, v in tm.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    assert fm.num_layers == 2 and fm.bidirectional and fm.bias == (cell != "gru")


def test_state_dict_without_module_loads_strictly_into_the_reference_model():
    config = ClassifierConfig(vocab_size=12, embedding_dim=3, hidden_size=4, num_classes=2,
                              bidirectional=True, pooling="attention")
    tm = TorchSequenceClassifier(config)
    _, variables = from_torch(tm)
    state = to_torch(variables)
    fresh = TorchSequenceClassifier(config)
    fresh.load_state_dict(state, strict=True)
    for k, v in tm.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k])


@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
def test_seed_reference_models_round_trip(pooling):
    tm = SEED_MODELS[pooling]()
    _, variables = from_torch(tm, pooling=None if pooling == "attention" else pooling)
    back = to_torch(variables, SEED_MODELS[pooling]())
    assert all(torch.equal(a, b) for a, b in zip(tm.state_dict().values(), back.state_dict().values(), strict=True))


def _variables():
    _, variables = from_torch(SEED_MODELS["last"](vocab_size=10, embedding_dim=3, hidden_dim=4, num_classes=2),
                              pooling="last")
    return variables


def test_missing_key_is_named():
    variables = _variables()
    del variables["params"]["encoder"]["bias_hh_l0"]
    with pytest.raises(ValueError, match=r"missing key 'lstm.bias_hh_l0' \(expected shape \(16,\)\)"):
        to_torch(variables, SEED_MODELS["last"](vocab_size=10, embedding_dim=3, hidden_dim=4, num_classes=2))


def test_unexpected_and_misshaped_keys_are_named_with_both_shapes():
    variables = _variables()
    variables["params"]["encoder"]["weight_hr_l0"] = jnp.zeros((2, 4))
    variables["params"]["fc"]["weight"] = jnp.zeros((3, 4))
    with pytest.raises(ValueError) as err:
        to_torch(variables, SEED_MODELS["last"](vocab_size=10, embedding_dim=3, hidden_dim=4, num_classes=2))
    assert "unexpected key 'lstm.weight_hr_l0' (shape (2, 4))" in str(err.value)
    assert "key 'fc.weight' has shape (3, 4), expected (2, 4)" in str(err.value)


class TwoEncoders(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.LSTM(3, 4, batch_first=True)
        self.b = nn.GRU(4, 4, batch_first=True)
        self.fc = nn.Linear(4, 2)


class WithNorm(nn.Module):
    def __init__(self, affine: bool = True):
        super().__init__()
        self.rnn = nn.GRU(3, 4, batch_first=True)
        self.norm = nn.LayerNorm(4, elementwise_affine=affine)
        self.fc = nn.Linear(4, 2)


class WithEmbedding(nn.Module):
    def __init__(self, **options):
        super().__init__()
        self.emb = nn.Embedding(5, 3, **options)
        self.rnn = nn.GRU(3, 4, batch_first=True)
        self.fc = nn.Linear(4, 2)


@pytest.mark.parametrize("module,message", [
    (TwoEncoders(), "exactly one nn.LSTM/GRU/RNN"),
    (WithNorm(), r"norm \(LayerNorm\) holds parameters"),
    (WithNorm(affine=False), r"norm \(LayerNorm\) would change the computation"),
    (WithEmbedding(max_norm=1.0), r"'emb' has max_norm=1.0, scale_grad_by_freq=False: .* not supported"),
    (WithEmbedding(scale_grad_by_freq=True), r"'emb' has max_norm=None, scale_grad_by_freq=True"),
    (nn.Linear(3, 2), "exactly one nn.LSTM/GRU/RNN"),
    (nn.Sequential(nn.Embedding(5, 3), nn.LSTM(3, 4, batch_first=True)), r"found 0"),
])
def test_unrecognisable_modules_are_refused(module, message):
    with pytest.raises(ValueError, match=message):
        from_torch(module, pooling="last")


def test_pooling_must_be_stated_when_weights_cannot_tell():
    with pytest.raises(ValueError, match="pass pooling='last', 'mean' or 'max'"):
        from_torch(SEED_MODELS["mean"]())
    with pytest.raises(ValueError, match="contradicts"):
        from_torch(SEED_MODELS["attention"](), pooling="mean")
    with pytest.raises(ValueError, match=r"expected Linear\(128, classes\)"):
        from_torch(SEED_MODELS["mean"](), pooling="last")


def test_float64_weights_need_x64():
    with pytest.raises(ValueError, match="jax_enable_x64"):
        from_torch(nn.GRU(2, 3).double())


def test_converted_values_are_identical_bits():
    tm = nn.LSTM(3, 5, proj_size=2)
    _, variables = from_torch(tm)
    for k, v in tm.state_dict().items():
        np.testing.assert_array_equal(np.asarray(variables["params"][k]).view(np.int32), v.numpy().view(np.int32))


def test_bfloat16_params_convert_to_torch_bit_for_bit():
    tm = nn.GRU(3, 4).to(torch.bfloat16)
    _, variables = from_torch(tm)
    variables = jax.tree.map(lambda v: v.astype(jnp.bfloat16), variables)
    state = to_torch(variables)
    for k, v in tm.state_dict().items():
        assert state[k].dtype == torch.bfloat16 and torch.equal(state[k], v), k


class DropoutAt(nn.Module):
    """Embedding -> GRU -> mean over time -> Linear, with its one dropout applied where `at` says."""

    def __init__(self, at: str, p: float = 0.3, second: str | None = None):
        super().__init__()
        self.at, self.second = at, second
        self.emb = nn.Embedding(5, 3, padding_idx=0)
        self.rnn = nn.GRU(3, 4, batch_first=True)
        self.drop = nn.Dropout(p)
        self.drop2 = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 2)

    def maybe(self, x, where: str):
        x = self.drop(x) if self.at == where else x
        return self.drop2(x) if self.second == where else x

    def forward(self, tokens):
        out, _ = self.rnn(self.maybe(self.emb(tokens), "embedding"))
        pooled = self.maybe(out, "sequence").mean(dim=1)  # "sequence": dropped before pooling, not after
        return self.maybe(self.fc(self.maybe(pooled, "pooled")), "logits")


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
def test_the_reference_models_pooled_dropout_is_carried(pooling):
    config = ClassifierConfig(vocab_size=7, embedding_dim=3, hidden_size=4, num_classes=2, pooling=pooling,
                              bidirectional=pooling != "last", dropout=0.25, padding_idx=0)
    model, _ = from_torch(TorchSequenceClassifier(config), pooling=None if pooling == "attention" else pooling)
    assert model.config == config


def test_a_dropout_on_the_pooled_features_is_carried_and_the_module_is_left_as_it_was():
    tm = DropoutAt("pooled").train()
    tm.rnn.eval()  # a mixed state, restored as it was
    rng = torch.get_rng_state()
    model, _ = from_torch(tm, pooling="mean")
    assert model.config.dropout == 0.3
    assert torch.equal(torch.get_rng_state(), rng)  # the probe's dropout masks come from a forked generator
    assert [m.training for m in tm.modules()] == [True, True, False, True, True, True]


@pytest.mark.parametrize("at, where", [
    ("embedding", r"after 'emb' \(Embedding\), before 'rnn' \(GRU\)"),
    ("sequence", r"after 'rnn' \(GRU\), before 'fc' \(Linear\), but 'fc' is not given its output"),
    ("logits", r"after 'fc' \(Linear\), at the end"),
])
def test_a_dropout_applied_elsewhere_than_before_the_classifier_is_refused_naming_where(at, where):
    with pytest.raises(ValueError, match=rf"dropout 'drop' \(p=0.3\) is applied {where}; s2l_jax applies dropout "
                       r"only to the pooled features, as the classifier 'fc''s input"):
        from_torch(DropoutAt(at), pooling="mean")


def test_a_second_dropout_elsewhere_is_refused_and_unused_or_zero_rate_ones_change_nothing():
    with pytest.raises(ValueError, match=r"dropout 'drop2' \(p=0.5\) is applied after 'emb'"):
        from_torch(DropoutAt("pooled", second="embedding"), pooling="mean")
    assert from_torch(DropoutAt("nowhere"), pooling="mean")[0].config.dropout == 0.0  # never called
    assert from_torch(DropoutAt("embedding", p=0.0), pooling="mean")[0].config.dropout == 0.0  # the identity


def test_a_dropout_whose_place_cannot_be_seen_is_refused():
    class NoForward(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.rnn = nn.Embedding(5, 3), nn.GRU(3, 4, batch_first=True)
            self.drop, self.fc = nn.Dropout(0.3), nn.Linear(4, 2)

    with pytest.raises(ValueError, match=r"cannot tell where dropout 'drop' \(p=0.3\) is applied: the module's "
                       r"forward failed on a \(2, 3\) batch of token ids"):
        from_torch(NoForward(), pooling="last")
