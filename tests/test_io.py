"""Weight files: torch-written files load in JAX and back bit-exact, architectures are inferred from state_dicts
with users' own prefixes, and malicious, truncated or corrupt files are refused with clear errors."""

import itertools

import numpy as np
import pytest
import torch
from safetensors.torch import save_file as torch_save_safetensors
from torch import nn

from parity import TorchSequenceClassifier, from_torch
from parity.convert import rename_prefixes
from parity.infer import infer_architecture
from parity.io import convert_file, load_classifier_file, read_state_dict
from s2l_jax import ClassifierConfig
from s2l_jax.params import flatten
from s2l_jax.weights import load_classifier

USER_PATHS = {"embedding": "emb", "encoder": "rnn", "attention.attn": "att.w", "attention.v": "att.u", "fc": "head"}


class UserModel(nn.Module):
    """A user's classifier with its own attribute names."""

    def __init__(self, vocab=13, emb=4, hidden=5, classes=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.rnn = nn.GRU(emb, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x):
        out, _ = self.rnn(self.emb(x))
        return self.head(out.max(dim=1).values)


@pytest.mark.parametrize("fmt", [".pt", ".pth", ".safetensors"])
def test_torch_written_files_load_in_jax_and_convert_back_bit_exact(tmp_path, fmt):
    tm = UserModel()
    src = tmp_path / f"user{fmt}"
    if fmt == ".safetensors":
        torch_save_safetensors(tm.state_dict(), src)
    else:
        torch.save(tm.state_dict(), src)
    convert_file(src, tmp_path / "jax.safetensors", pooling="max")
    model, variables = load_classifier(tmp_path / "jax.safetensors")  # the JAX checkpoint needs no torch
    assert model.config.cell == "gru" and model.config.pooling == "max" and model.config.num_layers == 2
    expected = flatten(from_torch(tm, pooling="max")[1]["params"])
    for k, v in flatten(variables["params"]).items():
        np.testing.assert_array_equal(v, expected[k])
    convert_file(tmp_path / "jax.safetensors", tmp_path / "back.pt")  # the user's names come back
    fresh = UserModel()
    fresh.load_state_dict(torch.load(tmp_path / "back.pt", weights_only=True), strict=True)
    for k, v in tm.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k


def test_jax_checkpoint_converts_to_reference_model_names_without_user_names(tmp_path):
    config = ClassifierConfig(vocab_size=9, embedding_dim=3, hidden_size=4, num_classes=2, pooling="attention",
                              bidirectional=True)
    tm = TorchSequenceClassifier(config)
    torch.save(tm.state_dict(), tmp_path / "ref.pt")
    convert_file(tmp_path / "ref.pt", tmp_path / "ref.safetensors")
    convert_file(tmp_path / "ref.safetensors", tmp_path / "back.pth")
    back = TorchSequenceClassifier(config)
    back.load_state_dict(torch.load(tmp_path / "back.pth", weights_only=True), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(tm.state_dict().values(), back.state_dict().values(), strict=True))


def test_names_from_maps_a_checkpoint_onto_another_models_names(tmp_path):
    tm = UserModel()
    torch.save(tm.state_dict(), tmp_path / "user.pt")
    model, variables, _ = load_classifier_file(tmp_path / "user.pt", pooling="max")
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in flatten(variables["params"]).items()},
               tmp_path / "canonical.pt")
    convert_file(tmp_path / "canonical.pt", tmp_path / "renamed.pt", pooling="max", names_from=tmp_path / "user.pt")
    UserModel().load_state_dict(torch.load(tmp_path / "renamed.pt", weights_only=True), strict=True)


def _grid():
    for cell, layers, bi, proj, bias, pooling, tokens in itertools.product(
            ("lstm", "gru", "rnn_tanh", "rnn_relu"), (1, 2, 3), (False, True), (0, 2), (True, False),
            ("last", "mean", "max", "attention"), (True, False)):
        if proj and cell != "lstm":
            continue
        yield ClassifierConfig(vocab_size=7 if tokens else None, input_size=None if tokens else 3, embedding_dim=3,
                               hidden_size=4, num_classes=2, cell=cell, num_layers=layers, bidirectional=bi,
                               pooling=pooling, proj_size=proj, bias=bias)


def test_architecture_inferred_from_user_prefixed_state_dicts_on_the_core_grid():
    count = 0
    for config in _grid():
        state = rename_prefixes(TorchSequenceClassifier(config).state_dict(), USER_PATHS, to_user=True)
        nonlinearity = config.cell[4:] if config.cell.startswith("rnn") else None
        pooling = None if config.pooling == "attention" else config.pooling
        arch = infer_architecture(state, pooling, nonlinearity=nonlinearity)
        assert arch.config == config, config
        assert all(arch.paths[k] == USER_PATHS[k] for k in arch.paths)
        count += 1
    assert count == 4 * 3 * 2 * 2 * 4 * 2 + 3 * 2 * 2 * 4 * 2  # every cell, plus LSTM with projection


def test_what_weights_cannot_tell_is_asked_for_or_noted():
    config = ClassifierConfig(vocab_size=7, embedding_dim=3, hidden_size=4, num_classes=2, cell="rnn_relu",
                              pooling="mean")
    state = TorchSequenceClassifier(config).state_dict()
    with pytest.raises(ValueError, match="weights cannot tell how the model pools"):
        infer_architecture(state)
    arch = infer_architecture(state, "mean")
    assert arch.config.cell == "rnn_tanh" and "assumed torch's default tanh" in arch.notes[0]
    with pytest.raises(ValueError, match="nonlinearity applies to a plain RNN only"):
        infer_architecture(TorchSequenceClassifier(config.replace(cell="gru")).state_dict(), "mean",
                           nonlinearity="relu")
    padded = TorchSequenceClassifier(config.replace(padding_idx=2)).state_dict()
    assert any("padding_idx=2" in n for n in infer_architecture(padded, "mean", nonlinearity="relu").notes)
    attention = TorchSequenceClassifier(config.replace(pooling="attention")).state_dict()
    with pytest.raises(ValueError, match="attention block; pooling 'last' contradicts it"):
        infer_architecture(attention, "last")


def test_unrecognised_keys_are_named(tmp_path):
    state = UserModel().state_dict()
    with pytest.raises(ValueError, match=r"unrecognised key 'head.scale'"):
        infer_architecture({**state, "head.scale": torch.ones(3)}, "max")
    with pytest.raises(ValueError, match="no recurrent layer found"):
        infer_architecture({"head.weight": torch.ones(3, 2), "head.bias": torch.ones(3)}, "max")
    with pytest.raises(ValueError, match="more than one recurrent layer"):
        infer_architecture({**state, **{f"rnn2.{k[4:]}": v for k, v in state.items() if k.startswith("rnn.")}})
    mean_state = rename_prefixes(TorchSequenceClassifier(ClassifierConfig(
        vocab_size=5, embedding_dim=2, hidden_size=5, num_classes=3, pooling="mean")).state_dict(), USER_PATHS,
        to_user=True)
    with pytest.raises(ValueError, match="reads 10 features; pooling 'last' of this recurrent layer gives 5"):
        infer_architecture({**mean_state, "head.weight": torch.ones(3, 10)}, "last")


def test_truncated_corrupt_and_missing_files_give_clear_errors(tmp_path):
    torch.save(UserModel().state_dict(), tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pth").write_bytes(b"\x07" * 64)
    for name in ("truncated.pt", "garbage.pth"):
        with pytest.raises(ValueError, match="not a readable torch file"):
            read_state_dict(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="no such weight file"):
        read_state_dict(tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="unknown weight file extension '.npz'"):
        read_state_dict(tmp_path / "w.npz")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="holds a list, not a state_dict"):
        read_state_dict(tmp_path / "list.pt")


def test_an_output_that_is_a_directory_is_named_not_its_temporary_file(tmp_path, capsys):
    """`s2l convert m.pt out.pt` with `out.pt` a directory said `Is a directory: '.out.pt.x1y2.tmp' -> 'out.pt'`."""
    from s2l_jax.cli import main

    torch.save(UserModel().state_dict(), tmp_path / "m.pt")
    (tmp_path / "out.pt").mkdir()
    assert main(["convert", str(tmp_path / "m.pt"), str(tmp_path / "out.pt"), "--pooling", "max"]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith("out.pt is a directory; give a file name") and ".tmp" not in err, err
    assert list((tmp_path / "out.pt").iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt",
                                                                                                      "out.pt"]
    (tmp_path / "r.md").mkdir()
    assert main(["parity", str(tmp_path / "m.pt"), "--pooling", "max", "--report", str(tmp_path / "r.md")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "--report" in captured.err and "r.md is a directory" in captured.err  # before


def test_nested_training_checkpoints_are_unwrapped(tmp_path):
    tm = UserModel()
    torch.save({"epoch": 3, "state_dict": tm.state_dict()}, tmp_path / "ckpt.pt")
    model, variables, arch = load_classifier_file(tmp_path / "ckpt.pt", pooling="max")
    assert arch.paths["fc"] == "head" and model.config.vocab_size == 13


class ClassifierFirst(nn.Module):
    """An attention classifier with as many classes as attention features, its classifier registered first."""

    def __init__(self, flat: bool = False):
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.lstm = nn.LSTM(4, 3, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(6, 6)
        if flat:
            self.attn, self.v = nn.Linear(6, 6), nn.Linear(6, 1, bias=False)
        else:
            self.attention = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 1, bias=False))

    def forward(self, x):
        out, _ = self.lstm(self.embedding(x))  # (B, T, 6)
        attention = self.attention if hasattr(self, "attention") else nn.Sequential(self.attn, nn.Tanh(), self.v)
        weights = torch.softmax(attention(out), dim=1)
        return self.fc((weights * out).sum(dim=1))


def test_attention_linear_and_a_classifier_of_the_same_shape_are_told_apart_by_their_place(tmp_path):
    tm = ClassifierFirst()
    torch.save(tm.state_dict(), tmp_path / "m.pt")
    tokens = torch.randint(0, 10, (2, 5))
    with torch.no_grad():
        expected = tm(tokens).numpy()
    from_file = load_classifier_file(tmp_path / "m.pt")
    for fm, variables in (from_file[:2], from_torch(tm)):
        assert fm.config.num_classes == 6
        np.testing.assert_allclose(fm.apply(variables, tokens.numpy()), expected, atol=1e-6)
    flat = ClassifierFirst(flat=True)
    torch.save(flat.state_dict(), tmp_path / "flat.pt")
    for load in (lambda: load_classifier_file(tmp_path / "flat.pt"), lambda: from_torch(flat)):
        with pytest.raises(ValueError, match=r"cannot tell the attention Linear\(6, 6\) from the classifier"):
            load()
