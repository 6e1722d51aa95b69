"""The bad-input matrix of issue #6, weights/model side; docs/bad-inputs.md is its table.

Every bad weight file is refused by the Python API with the exact error, and by `s2l convert` and `s2l parity` with
exit code 2 and one line on stderr (no traceback), writing nothing: the output path (and its folder) is not
created and a file already there is left byte-identical. Bad model inputs (ids, lengths, batch, rank, names) are
refused by the API; under jit, where values are unknown, they give NaN rows, never a silently clamped answer."""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as numpy_load_file
from safetensors.torch import save_file as torch_save_safetensors
from torch import nn

from parity import TorchSequenceClassifier, from_torch, to_torch, torch_recurrent
from parity.infer import infer_architecture
from parity.io import convert_file, load_classifier_file, read_state_dict
from s2l_jax import GRU, LSTM, RNN, ClassifierConfig, SequenceClassifier
from s2l_jax.cli import main
from s2l_jax.params import flatten
from s2l_jax.recurrent import make_encoder
from s2l_jax.weights import CONFIG_KEY, load_classifier

CONFIG = ClassifierConfig(vocab_size=10, embedding_dim=4, hidden_size=4, num_classes=3, pooling="mean")
POOLING = ["--pooling", "mean"]  # what the weights of CONFIG cannot tell
T = 3  # padded length of the model inputs below


def state() -> dict[str, torch.Tensor]:
    """A float32 state_dict of CONFIG's reference model: embedding.weight (10, 4), encoder.weight_ih_l0 (16, 4),
    encoder.weight_hh_l0 (16, 4), encoder.bias_ih_l0 (16,), encoder.bias_hh_l0 (16,), fc.weight (3, 4), fc.bias (3,)."""
    return TorchSequenceClassifier(CONFIG).state_dict()


def without(key: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state().items() if k != key}


def replaced(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    return {**state(), key: value}


def poisoned(key: str, index: tuple, value: float, dtype=torch.float32) -> dict[str, torch.Tensor]:
    s = {k: v.to(dtype) for k, v in state().items()}
    s[key][index] = value
    return s


def config_json(**changes) -> str:
    return json.dumps({**CONFIG.to_dict(), **changes})


@dataclass(frozen=True)
class BadFile:
    """One bad weight file: `make(path)` writes it; every entry point must refuse it with `error` in the message."""

    row: str
    case: str
    suffix: str  # ".pt": a user's torch state_dict; ".safetensors": an s2l checkpoint (config in the metadata)
    make: Callable[[Path], None]
    error: str

    @property
    def id(self) -> str:
        return f"{self.row}/{self.case}"


def pt(s: dict) -> Callable[[Path], None]:
    return lambda path: torch.save(s, path)


def checkpoint(s: dict, config: str | None = None) -> Callable[[Path], None]:
    """An s2l checkpoint: canonical names, the config as JSON in the metadata."""
    return lambda path: torch_save_safetensors(s, path, metadata={CONFIG_KEY: config or config_json()})


def damaged(make: Callable[[Path], None], cut: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    """`make` a good file, then replace its bytes with `cut(bytes)`."""

    def write(path: Path) -> None:
        make(path)
        path.write_bytes(cut(path.read_bytes()))

    return write


BAD_FILES = [
    # missing keys
    BadFile("missing-key", "torch-bias_hh", ".pt", pt(without("encoder.bias_hh_l0")),
            "missing key 'encoder.bias_hh_l0' (expected shape (16,))"),
    BadFile("missing-key", "torch-bias_ih", ".pt", pt(without("encoder.bias_ih_l0")),
            "missing key 'encoder.bias_ih_l0' (expected shape (16,))"),
    BadFile("missing-key", "torch-weight_hh", ".pt", pt(without("encoder.weight_hh_l0")),
            "recurrent layer 'encoder' lacks key encoder.weight_hh_l0"),
    BadFile("missing-key", "torch-fc.weight", ".pt", pt(without("fc.weight")),
            "module 'fc' has a bias (3,) but no weight: missing key 'fc.weight'"),
    BadFile("missing-key", "torch-fc.bias", ".pt", pt(without("fc.bias")),
            "expected one classifier Linear (weight + bias), found none; bias-free matrices {'embedding': (10, 4), "
            "'fc': (3, 4)}: is a '<module>.bias' key missing?"),
    BadFile("missing-key", "checkpoint-embedding", ".safetensors", checkpoint(without("embedding.weight")),
            "does not match the model: missing key 'embedding.weight' (expected shape (10, 4))"),
    # extra (unexpected) keys
    BadFile("extra-key", "torch-buffer", ".pt", pt({**state(), "norm.num_batches_tracked": torch.tensor(0)}),
            "unrecognised key 'norm.num_batches_tracked' (shape ())"),
    BadFile("extra-key", "torch-linear", ".pt", pt({**state(), "aux.weight": torch.ones(3, 4),
                                                     "aux.bias": torch.ones(3)}),
            "expected one classifier Linear (weight + bias), found ['aux', 'fc']"),
    BadFile("extra-key", "checkpoint", ".safetensors", checkpoint({**state(), "fc.scale": torch.ones(3)}),
            "does not match the model: unexpected key 'fc.scale' (shape (3,))"),
    # misshaped keys: the message names the key and both shapes
    BadFile("misshaped", "torch-bias", ".pt", pt(replaced("encoder.bias_ih_l0", torch.ones(17))),
            "key 'encoder.bias_ih_l0' has shape (17,), expected (16,)"),
    BadFile("misshaped", "torch-fc.bias", ".pt", pt(replaced("fc.bias", torch.ones(4))),
            "key 'fc.bias' has shape (4,), expected (3,) to match 'fc.weight' (3, 4)"),
    BadFile("misshaped", "torch-fc.weight", ".pt", pt(replaced("fc.weight", torch.ones(3, 5))),
            "key 'fc.weight' has shape (3, 5), expected (3, 4): classifier 'fc' reads 5 features"),
    BadFile("misshaped", "torch-embedding", ".pt", pt(replaced("embedding.weight", torch.ones(10, 5))),
            "key 'embedding.weight' has shape (10, 5), expected (10, 4): the recurrent layer's "
            "'encoder.weight_ih_l0' reads 4 features"),
    BadFile("misshaped", "checkpoint", ".safetensors", checkpoint(replaced("encoder.weight_ih_l0", torch.ones(16, 5))),
            "key 'encoder.weight_ih_l0' has shape (16, 5), expected (16, 4)"),
    # wrong dtype: only float16/bfloat16 (upcast), float32 and float64 (needs x64) are weights
    BadFile("dtype", "torch-int64", ".pt", pt(replaced("fc.weight", torch.ones(3, 4, dtype=torch.int64))),
            "weights must be float16, bfloat16, float32 or float64: 'fc.weight' has dtype int64"),
    BadFile("dtype", "torch-bool", ".pt", pt(replaced("fc.bias", torch.ones(3, dtype=torch.bool))),
            "weights must be float16, bfloat16, float32 or float64: 'fc.bias' has dtype bool"),
    BadFile("dtype", "torch-float8", ".pt", pt(replaced("fc.weight", torch.ones(3, 4).to(torch.float8_e4m3fn))),
            "weights must be float16, bfloat16, float32 or float64: 'fc.weight' has dtype torch.float8_e4m3fn"),
    BadFile("dtype", "checkpoint-int32", ".safetensors",
            checkpoint(replaced("fc.bias", torch.ones(3, dtype=torch.int32))),
            "weights must be float16, bfloat16, float32 or float64: 'fc.bias' has dtype int32"),
    BadFile("dtype", "checkpoint-float8", ".safetensors",
            checkpoint(replaced("fc.weight", torch.ones(3, 4).to(torch.float8_e5m2))),
            "weights must be float16, bfloat16, float32 or float64: 'fc.weight' has dtype F8_E5M2"),
    # NaN / Inf weights
    BadFile("non-finite", "torch-nan", ".pt", pt(poisoned("encoder.weight_hh_l0", (0, 0), float("nan"))),
            "tensor 'encoder.weight_hh_l0' contains NaN or Inf (1 of 64 values)"),
    BadFile("non-finite", "torch-inf", ".pt", pt(poisoned("fc.bias", (1,), float("inf"))),
            "tensor 'fc.bias' contains NaN or Inf (1 of 3 values)"),
    BadFile("non-finite", "torch-float16-inf", ".pt",
            pt(poisoned("embedding.weight", (2, 1), 1e5, torch.float16)),  # overflows float16 to inf
            "tensor 'embedding.weight' contains NaN or Inf (1 of 40 values)"),
    BadFile("non-finite", "checkpoint-nan", ".safetensors", checkpoint(poisoned("fc.weight", (2, 3), float("-inf"))),
            "tensor 'fc.weight' contains NaN or Inf (1 of 12 values)"),
    # truncated files
    BadFile("truncated", "safetensors-half", ".safetensors", damaged(checkpoint(state()), lambda b: b[: len(b) // 2]),
            "is not a readable safetensors file (truncated or corrupt?): Error while deserializing header: "
            "incomplete metadata, file not fully covered"),
    BadFile("truncated", "safetensors-header", ".safetensors", damaged(checkpoint(state()), lambda b: b[:20]),
            "is not a readable safetensors file (truncated or corrupt?): Error while deserializing header"),
    BadFile("truncated", "torch-half", ".pt", damaged(pt(state()), lambda b: b[: len(b) // 2]),
            "is not a readable torch file (truncated or corrupt?)"),
    # corrupt files
    BadFile("corrupt", "safetensors-garbage", ".safetensors", damaged(checkpoint(state()), lambda b: b"\x07" * 64),
            "is not a readable safetensors file (truncated or corrupt?): Error while deserializing header"),
    BadFile("corrupt", "safetensors-empty", ".safetensors", damaged(checkpoint(state()), lambda b: b""),
            "is not a readable safetensors file (truncated or corrupt?): Error while deserializing header"),
    BadFile("corrupt", "safetensors-config-json", ".safetensors", checkpoint(state(), "{not json"),
            "the s2l config in its metadata is invalid: Expecting property name"),
    BadFile("corrupt", "torch-garbage", ".pt", damaged(pt(state()), lambda b: b"\x07" * 64),
            "is not a readable torch file (truncated or corrupt?)"),
    # unknown pooling / cell names in a checkpoint's config
    BadFile("names", "checkpoint-cell", ".safetensors", checkpoint(state(), config_json(cell="lstn")),
            "the s2l config in its metadata is invalid: unknown cell 'lstn'; expected one of "
            "('lstm', 'gru', 'rnn_tanh', 'rnn_relu')"),
    BadFile("names", "checkpoint-pooling", ".safetensors", checkpoint(state(), config_json(pooling="sum")),
            "the s2l config in its metadata is invalid: unknown pooling 'sum'; expected one of "
            "('last', 'mean', 'max', 'attention')"),
]


@pytest.fixture
def bad_file(request, tmp_path) -> tuple[BadFile, Path]:
    case: BadFile = request.param
    path = tmp_path / "in" / f"weights{case.suffix}"
    path.parent.mkdir()
    case.make(path)
    return case, path


def _by_id(cases):
    return pytest.mark.parametrize("bad_file", cases, ids=[c.id for c in cases], indirect=True)


def refused_by_cli(capsys, argv: list[str], error: str) -> str:
    """Run `s2l ARGV` in-process: exit 2, one stderr line holding `error`, no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"s2l {argv[0]}: error: ") and error in err, err
    return err


def convert_refused(tmp_path, capsys, src: Path, error: str, *flags: str) -> None:
    """`s2l convert SRC OUT` refused twice: OUT in a new folder (neither created) and OUT an existing file (left
    byte-identical, nothing beside it)."""
    out_suffix = ".pt" if src.suffix == ".safetensors" else ".safetensors"
    fresh = tmp_path / "new" / f"out{out_suffix}"
    refused_by_cli(capsys, ["convert", str(src), str(fresh), *flags], error)
    assert not fresh.parent.exists()
    existing = tmp_path / "old" / f"out{out_suffix}"
    existing.parent.mkdir()
    existing.write_bytes(b"the user's previous file")
    refused_by_cli(capsys, ["convert", str(src), str(existing), *flags], error)
    assert existing.read_bytes() == b"the user's previous file"
    assert os.listdir(existing.parent) == [existing.name]  # no temporary file left behind


def parity_refused(tmp_path, capsys, src: Path, error: str, *flags: str) -> None:
    """`s2l parity SRC --report R` refused: R (and its folder) not created."""
    report = tmp_path / "reports" / "parity.json"
    refused_by_cli(capsys, ["parity", str(src), "--batch", "2", "--length", str(T), "--report", str(report),
                            *flags], error)
    assert not report.parent.exists()


# ---- bad weight files: API, s2l convert, s2l parity ----------------------------------------------------------


@_by_id(BAD_FILES)
def test_bad_weight_file_is_refused_by_the_api(bad_file):
    case, path = bad_file
    with pytest.raises(ValueError, match=re.escape(case.error)):
        load_classifier_file(path, "mean")
    if case.suffix == ".safetensors":  # the JAX-only loader (no torch) says the same
        with pytest.raises(ValueError, match=re.escape(case.error)):
            load_classifier(path)


@_by_id(BAD_FILES)
def test_bad_weight_file_is_refused_by_s2l_convert(bad_file, tmp_path, capsys):
    case, path = bad_file
    convert_refused(tmp_path, capsys, path, case.error, *POOLING)


@_by_id(BAD_FILES)
def test_bad_weight_file_is_refused_by_s2l_parity(bad_file, tmp_path, capsys):
    case, path = bad_file
    parity_refused(tmp_path, capsys, path, case.error, *POOLING)


# ---- a .pt file holding code ---------------------------------------------------------------------------------


class WritesMarker:
    """Unpickling this calls open(marker, "w"): a pickle that runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("entry", ["api", "convert", "parity"])
@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_pt_file_holding_code_is_refused_and_not_run(tmp_path, capsys, how, entry):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {**state(), "evil": WritesMarker(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)  # the protocol torch.load reads
    assert not marker.exists()
    error = "refused: the file holds objects other than tensors and loading it would run code"
    if entry == "api":
        with pytest.raises(ValueError, match=re.escape(error)):
            read_state_dict(path)
        with pytest.raises(ValueError, match=re.escape(error)):
            load_classifier_file(path, "mean")
    elif entry == "convert":
        convert_refused(tmp_path, capsys, path, error, *POOLING)
    else:
        parity_refused(tmp_path, capsys, path, error, *POOLING)
    assert not marker.exists()


# ---- what is accepted, and how ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_half_precision_weights_are_upcast_to_float32_exactly(tmp_path, capsys, dtype, suffix):
    half = {k: v.to(dtype) for k, v in state().items()}
    src = tmp_path / f"half{suffix}"
    (pt(half) if suffix == ".pt" else checkpoint(half))(src)
    expected = {k: v.float().numpy() for k, v in half.items()}
    model, variables, arch = load_classifier_file(src, "mean")
    for k, v in flatten(variables["params"]).items():
        assert v.dtype == jnp.float32
        np.testing.assert_array_equal(v, expected[k])
    note = f"{str(dtype)[6:]} weights upcast to float32 (exact)"
    assert note in arch.notes
    if suffix == ".safetensors":
        _, variables = load_classifier(src)
        assert all(v.dtype == jnp.float32 for v in flatten(variables["params"]).values())
        return
    assert main(["convert", str(src), str(tmp_path / "jax.safetensors"), *POOLING]) == 0
    assert f"note: {note}" in capsys.readouterr().out
    written = numpy_load_file(tmp_path / "jax.safetensors")
    for k, v in written.items():
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v, expected[k])


def test_half_precision_weights_pass_s2l_parity(tmp_path, capsys):
    torch.save({k: v.half() for k, v in state().items()}, tmp_path / "half.pt")
    assert main(["parity", str(tmp_path / "half.pt"), *POOLING, "--batch", "2", "--length", str(T)]) == 0
    out = capsys.readouterr().out
    assert "note: float16 weights upcast to float32 (exact)" in out and out.rstrip().endswith("PASS")


def test_float64_weights_need_x64_to_load_and_convert_losslessly(tmp_path, capsys):
    src = tmp_path / "double.pt"
    torch.save({k: v.double() for k, v in state().items()}, src)
    error = "holds float64 weights (e.g. 'embedding.weight'): enable jax_enable_x64 to load them losslessly"
    with pytest.raises(ValueError, match=re.escape(error)):
        load_classifier_file(src, "mean")
    with pytest.raises(ValueError, match=re.escape("state_dict holds float64 weights")):
        from_torch(TorchSequenceClassifier(CONFIG).double(), pooling="mean")
    with jax.enable_x64(True):
        _, variables, _ = load_classifier_file(src, "mean")
        assert variables["params"]["fc"]["weight"].dtype == jnp.float64
    parity_refused(tmp_path, capsys, src, error + " (s2l parity: --float64)", *POOLING)
    assert main(["convert", str(src), str(tmp_path / "double.safetensors"), *POOLING]) == 0  # no JAX: lossless
    assert all(v.dtype == np.float64 for v in numpy_load_file(tmp_path / "double.safetensors").values())
    capsys.readouterr()
    assert main(["parity", str(src), *POOLING, "--float64"]) == 0 and "PASS" in capsys.readouterr().out
    torch.save({k: v.to(torch.bfloat16) for k, v in state().items()}, tmp_path / "bf16.pt")
    assert main(["parity", str(tmp_path / "bf16.pt"), *POOLING]) == 0 and "bfloat16" in capsys.readouterr().out


def test_torch_file_without_embedding_is_a_feature_model_with_a_note(tmp_path, capsys):
    """A state_dict without `embedding.weight` is exactly a classifier of feature vectors: loaded as one, and said."""
    torch.save(without("embedding.weight"), tmp_path / "features.pt")
    model, _, arch = load_classifier_file(tmp_path / "features.pt", "mean")
    assert model.config.vocab_size is None and model.config.input_size == 4
    note = "no Embedding in the weights: the model reads feature vectors (batch, time, 4), not token ids"
    assert note in arch.notes
    assert main(["convert", str(tmp_path / "features.pt"), str(tmp_path / "f.safetensors"), *POOLING]) == 0
    assert f"note: {note}" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"expects features \(batch, time, input_size\), got shape \(2, 3\)"):
        model.apply(load_classifier(tmp_path / "f.safetensors")[1], jnp.ones((2, T), jnp.int32))


# ---- the same checks on the module side: from_torch / to_torch ------------------------------------------------


def test_from_torch_checks_dtypes_and_values():
    tm = TorchSequenceClassifier(CONFIG)
    with torch.no_grad():
        tm.encoder.weight_hh_l0[1, 2] = float("nan")
    with pytest.raises(ValueError, match=re.escape(
            "TorchSequenceClassifier state_dict: tensor 'encoder.weight_hh_l0' contains NaN or Inf (1 of 64 values)")):
        from_torch(tm, pooling="mean")
    gru = nn.GRU(2, 3)
    with torch.no_grad():
        gru.bias_hh_l0[0] = float("inf")
    with pytest.raises(ValueError, match=re.escape("GRU state_dict: tensor 'bias_hh_l0' contains NaN or Inf")):
        from_torch(gru)
    _, variables = from_torch(TorchSequenceClassifier(CONFIG).bfloat16(), pooling="mean")  # upcast, exact
    assert all(v.dtype == jnp.float32 for v in flatten(variables["params"]).values())


def test_to_torch_names_missing_unexpected_and_misshaped_keys():
    _, variables = from_torch(TorchSequenceClassifier(CONFIG), pooling="mean")
    del variables["params"]["encoder"]["bias_hh_l0"]
    variables["params"]["fc"]["scale"] = jnp.ones(3)
    variables["params"]["fc"]["weight"] = jnp.ones((3, 5))
    with pytest.raises(ValueError) as err:
        to_torch(variables, TorchSequenceClassifier(CONFIG))
    message = str(err.value)
    assert "missing key 'encoder.bias_hh_l0' (expected shape (16,))" in message
    assert "unexpected key 'fc.scale' (shape (3,))" in message
    assert "key 'fc.weight' has shape (3, 5), expected (3, 4)" in message


def test_to_torch_refuses_to_round_weights_into_a_module_of_another_dtype():
    _, variables = from_torch(TorchSequenceClassifier(CONFIG), pooling="mean")
    with pytest.raises(ValueError, match=r"differ in dtype, so loading would round: .*float32 into bfloat16"):
        to_torch(variables, TorchSequenceClassifier(CONFIG).to(torch.bfloat16))


def test_an_initial_state_of_another_dtype_than_the_input_is_named():
    layer = make_encoder("lstm", 4, batch_first=True)
    x = jnp.ones((2, 3, 5))
    variables = layer.init(jax.random.key(0), x)
    state = (jnp.zeros((1, 2, 4), jnp.float16), jnp.zeros((1, 2, 4)))
    with pytest.raises(TypeError, match="initial state h_0 has dtype float16, the input float32"):
        layer.apply(variables, x, initial_state=state)


def test_load_classifier_with_a_given_config_names_every_bad_key(tmp_path):
    bad = {**without("fc.bias"), "encoder.weight_hh_l0": torch.ones(16, 5)}
    torch_save_safetensors(bad, tmp_path / "w.safetensors")
    with pytest.raises(ValueError) as err:
        load_classifier(tmp_path / "w.safetensors", CONFIG)
    assert "missing key 'fc.bias' (expected shape (3,))" in str(err.value)
    assert "key 'encoder.weight_hh_l0' has shape (16, 5), expected (16, 4)" in str(err.value)


# ---- bad model inputs (API; the CLI makes its own inputs, only their sizes are flags) --------------------------


@pytest.fixture(scope="module")
def small():
    model = SequenceClassifier(CONFIG)
    return model, model.init(jax.random.key(0), jnp.zeros((1, T), jnp.int32))


@pytest.mark.parametrize("bad_id", [-1, 10], ids=["negative", "vocab_size"])
def test_token_ids_outside_the_vocabulary(small, bad_id):
    model, variables = small
    tokens = jnp.array([[1, 2, 3], [4, bad_id, 5]])
    with pytest.raises(ValueError, match=re.escape(
            f"token id {bad_id} at index [1, 1] is outside the vocabulary [0, 10) (1 such ids)")):
        model.apply(variables, tokens)
    under_jit = jax.jit(model.apply)(variables, tokens)  # values unknown: NaN, never a clamped embedding row
    assert np.isnan(under_jit[1]).all() and np.isfinite(under_jit[0]).all()


def test_int64_ids_and_lengths_past_int32_are_refused_not_wrapped(small):
    model, variables = small  # without x64 JAX casts int64 to int32: 2**32 + 3 would read as 3
    tokens = np.array([[1, 2, 3], [4, 2**32 + 3, 5]], np.int64)
    with pytest.raises(ValueError, match=re.escape(f"token id {2**32 + 3} at index [1, 1] is outside")):
        model.apply(variables, tokens)
    with pytest.raises(ValueError, match=re.escape(f"lengths[1] = {2**32 + 2} (1 bad in all)")):
        model.apply(variables, np.ones((2, T), np.int64), lengths=np.array([T, 2**32 + 2], np.int64))


def test_token_ids_must_be_integers(small):
    model, variables = small
    with pytest.raises(TypeError, match="token ids must be integers, got dtype float32"):
        model.apply(variables, jnp.ones((2, T), jnp.float32))


@pytest.mark.parametrize("bad_length", [0, T + 1, -1], ids=["zero", "longer-than-T", "negative"])
def test_lengths_outside_1_to_T(small, bad_length):
    model, variables = small
    tokens, lengths = jnp.ones((2, T), jnp.int32), jnp.array([T, bad_length])
    with pytest.raises(ValueError, match=re.escape(
            f"lengths must lie in [1, {T}] (the padded length); lengths[1] = {bad_length} (1 bad in all)")):
        model.apply(variables, tokens, lengths=lengths)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_bare_recurrent_layer_under_jit_gives_nan_rows_for_lengths_outside_1_to_T(cell):
    layer = make_encoder(cell, 4, bidirectional=True, batch_first=True)
    x = jax.random.normal(jax.random.key(0), (4, T, 3))
    variables = layer.init(jax.random.key(1), x)
    out, state = jax.jit(layer.apply)(variables, x, lengths=jnp.array([T, 0, T + 1, 2]))
    h_n = state[0] if cell == "lstm" else state
    for rows in (out, jnp.swapaxes(h_n, 0, 1)):  # (batch, ...)
        assert np.isnan(rows[1:3]).all() and np.isfinite(rows[0]).all() and np.isfinite(rows[3]).all()


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
def test_lengths_outside_1_to_T_under_jit_give_nan_rows(pooling):
    """Under jit the values cannot be checked: a bad length's logits are NaN (training's NaN check stops), not
    the answer for a clamped length (> T) or for an empty sequence (0, which `last` pooling would give silently)."""
    config = CONFIG.replace(pooling=pooling, bidirectional=True)
    model = SequenceClassifier(config)
    variables = model.init(jax.random.key(0), jnp.zeros((1, T), jnp.int32))
    tokens = jnp.ones((4, T), jnp.int32)
    apply = jax.jit(model.apply)
    out = apply(variables, tokens, lengths=jnp.array([T, 0, T + 1, -1]))
    assert np.isfinite(out[0]).all() and np.isnan(out[1:]).all()
    np.testing.assert_array_equal(out[0], apply(variables, tokens, lengths=jnp.array([T] * 4))[0])


def test_int64_lengths_past_int32_under_jit_with_x64_give_nan_rows_not_a_wrapped_length():
    """With x64, int64 lengths reach the traced model as they are: narrowing them to int32 must not wrap
    2**32 + 2 into the valid length 2 (a silent answer for another length), for a classifier or a bare layer."""
    with jax.enable_x64(True):
        model = SequenceClassifier(CONFIG)
        variables = model.init(jax.random.key(0), jnp.zeros((1, T), jnp.int32))
        lengths = jnp.array([2, 2**32 + 2, -(2**32) + 2], jnp.int64)
        out = jax.jit(model.apply)(variables, jnp.ones((3, T), jnp.int32), lengths=lengths)
        assert np.isfinite(out[0]).all() and np.isnan(out[1:]).all()
        layer = make_encoder("gru", 4, batch_first=True)
        x = jnp.ones((3, T, 2), jnp.float32)
        y, h_n = jax.jit(layer.apply)(layer.init(jax.random.key(1), x), x, lengths=lengths)
        assert np.isfinite(y[0]).all() and np.isnan(y[1:]).all() and np.isnan(h_n[:, 1:]).all()


def test_lengths_must_be_one_integer_per_sequence(small):
    model, variables = small
    tokens = jnp.ones((2, T), jnp.int32)
    with pytest.raises(ValueError, match=re.escape("lengths must have shape (2,) (one per sequence), got (3,)")):
        model.apply(variables, tokens, lengths=jnp.array([1, 2, 3]))
    with pytest.raises(TypeError, match="lengths must be integers, got dtype float32"):
        model.apply(variables, tokens, lengths=jnp.array([1.0, 2.0]))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_empty_batch_and_empty_sequences(small, jit):
    model, variables = small
    apply = jax.jit(model.apply) if jit else model.apply  # shapes are static: refused under jit too
    with pytest.raises(ValueError, match="^empty batch"):
        apply(variables, jnp.ones((0, T), jnp.int32))
    with pytest.raises(ValueError, match=re.escape("input has no time steps or no features: shape (2, 0, 4)")):
        apply(variables, jnp.ones((2, 0), jnp.int32))


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
def test_recurrent_layers_refuse_inputs_without_features_as_torch_does(cls):
    with pytest.raises(ValueError, match=re.escape("input has no time steps or no features: shape (2, 3, 0)")):
        cls(4, batch_first=True).init(jax.random.key(0), jnp.ones((2, 3, 0)))


@pytest.mark.parametrize("flag,value", [("--batch", "0"), ("--length", "0")], ids=["batch-0", "length-0"])
def test_s2l_parity_refuses_empty_batches_and_sequences(tmp_path, capsys, flag, value):
    torch.save(state(), tmp_path / "w.pt")
    report = tmp_path / "reports" / "parity.json"
    refused_by_cli(capsys, ["parity", str(tmp_path / "w.pt"), *POOLING, flag, value, "--report", str(report)],
                   "--batch and --length must be >= 1 and --steps >= 0")
    assert not report.parent.exists()


@pytest.mark.parametrize("config,shape,error", [
    (CONFIG, (T,), "SequenceClassifier expects token ids (batch, time), got shape (3,)"),
    (CONFIG, (2, T, 1), "SequenceClassifier expects token ids (batch, time), got shape (2, 3, 1)"),
    (CONFIG.replace(vocab_size=None, input_size=4), (2, T),
     "SequenceClassifier expects features (batch, time, input_size), got shape (2, 3)"),
    (CONFIG.replace(vocab_size=None, input_size=4), (2, T, 5), "inputs have 5 features, config says 4"),
], ids=["tokens-rank-1", "tokens-rank-3", "features-rank-2", "features-width"])
def test_wrong_input_rank(config, shape, error):
    model = SequenceClassifier(config)
    dtype = jnp.int32 if config.vocab_size else jnp.float32
    variables = model.init(jax.random.key(0), jnp.zeros((1, 1) if config.vocab_size else (1, 1, 4), dtype))
    with pytest.raises(ValueError, match=re.escape(error)):
        model.apply(variables, jnp.zeros(shape, dtype))


# ---- unknown pooling / cell names ------------------------------------------------------------------------------

POOLING_ERROR = "unknown pooling 'sum'; expected one of ('last', 'mean', 'max', 'attention')"
CELL_ERROR = "unknown cell 'lstn'; expected one of ('lstm', 'gru', 'rnn_tanh', 'rnn_relu')"


@pytest.mark.parametrize("call,error", [
    (lambda: ClassifierConfig(pooling="sum"), POOLING_ERROR),
    (lambda: ClassifierConfig(cell="lstn"), CELL_ERROR),
    (lambda: ClassifierConfig.from_dict(json.loads(config_json(pooling="sum"))), POOLING_ERROR),
    (lambda: infer_architecture(state(), "sum"), POOLING_ERROR),
    (lambda: infer_architecture(TorchSequenceClassifier(CONFIG.replace(cell="rnn_tanh")).state_dict(), "mean",
                                nonlinearity="gelu"), "unknown nonlinearity 'gelu'; expected 'tanh' or 'relu'"),
    (lambda: from_torch(TorchSequenceClassifier(CONFIG), pooling="sum"), POOLING_ERROR),
    (lambda: make_encoder("lstn", 4), CELL_ERROR),
    (lambda: torch_recurrent("lstn", 4, 4), CELL_ERROR),
], ids=["config-pooling", "config-cell", "config-from-dict", "infer-pooling", "infer-nonlinearity",
        "from_torch-pooling", "make_encoder-cell", "torch_recurrent-cell"])
def test_unknown_pooling_and_cell_names_api(call, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        call()


def test_unknown_pooling_in_a_file_api(tmp_path):
    torch.save(state(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match=re.escape(POOLING_ERROR)):
        load_classifier_file(tmp_path / "w.pt", "sum")
    with pytest.raises(ValueError, match=re.escape(POOLING_ERROR)):
        convert_file(tmp_path / "w.pt", tmp_path / "out" / "w.safetensors", "sum")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["convert", "parity"])
@pytest.mark.parametrize("flag,value", [("--pooling", "sum"), ("--nonlinearity", "gelu")])
def test_unknown_pooling_and_nonlinearity_flags_are_usage_errors(tmp_path, capsys, command, flag, value):
    """argparse's own convention: exit 2, a usage line, then one error line naming the flag and the choices."""
    torch.save(state(), tmp_path / "w.pt")
    out = tmp_path / "new" / "w.safetensors"
    argv = [command, str(tmp_path / "w.pt"), *([str(out)] if command == "convert" else []), flag, value]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("usage: s2l ")
    assert err.strip().splitlines()[-1].startswith(f"s2l {command}: error: argument {flag}: invalid choice: '{value}'")
    assert not out.parent.exists()
