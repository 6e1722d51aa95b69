"""compare / assert_parity against real torch modules: equal models pass, one-ulp noise passes, planted real
differences (swapped gates, a dropped bias_hh) fail naming the right tensor; reports render; tolerance policy."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import mappings_left_per_call, memory_map_count
from torch import nn

from parity import from_torch, torch_recurrent
from parity.check import ParityError, assert_parity, compare
from parity.report import diff
from parity.tolerance import POLICY, Tolerance, parity_precision, tolerance_for


class UserLSTM(nn.Module):
    """A user's classifier with its own names: emb -> rnn -> mean -> head."""

    def __init__(self, cell=nn.LSTM):
        super().__init__()
        self.emb = nn.Embedding(11, 4)
        self.rnn = cell(4, 5, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(10, 3)

    def forward(self, x, lengths=None):
        out, _ = self.rnn(self.emb(x))
        return self.head(out.mean(dim=1))


def _tokens():
    return torch.randint(0, 11, (3, 6))


def test_converted_user_model_passes_weights_outputs_and_every_gradient():
    tm = UserLSTM()
    fm, variables = from_torch(tm, pooling="mean")
    report = assert_parity(tm, fm, variables, _tokens())
    kinds = [e.kind for e in report.entries]
    assert kinds.count("gradient") == len(list(tm.parameters())) and "output" in kinds
    assert {e.name for e in report.entries if e.kind == "gradient"} == {n for n, _ in tm.named_parameters()}
    assert report.passed and report.worst() < 1e-6


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_layer_with_lengths_checks_states_and_input_gradients(cell):
    tm = torch_recurrent(cell, 3, 4, bidirectional=True, batch_first=True,
                         proj_size=2 if cell == "lstm" else 0)
    fm, variables = from_torch(tm)
    report = assert_parity(tm, fm, variables, torch.randn(3, 5, 3), lengths=[5, 2, 4])
    names = {e.label for e in report.entries}
    assert {"output output", "output h_n", "gradient input[0]"} <= names
    assert ("output c_n" in names) == (cell == "lstm")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_layer_with_an_initial_state_checks_its_gradients_too(cell):
    tm = torch_recurrent(cell, 3, 4, num_layers=2, batch_first=False)
    fm, variables = from_torch(tm)
    h0 = torch.randn(2, 3, 4)
    state = (h0, torch.randn(2, 3, 4)) if cell == "lstm" else h0
    report = assert_parity(tm, fm, variables, torch.randn(5, 3, 3), state, lengths=[5, 2, 4])
    names = {e.label for e in report.entries}
    assert {"gradient input[0]", "gradient h_0"} <= names and ("gradient c_0" in names) == (cell == "lstm")
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 5\]"):
        compare(tm, fm, variables, torch.randn(5, 3, 3), state, lengths=[5, 6, 4])
    if cell == "lstm":
        with pytest.raises(ValueError, match=r"an LSTM's initial state is a pair \(h_0, c_0\)"):
            compare(tm, fm, variables, torch.randn(5, 3, 3), h0)


@pytest.mark.skipif(memory_map_count() == 0, reason="counts /proc/self/maps")
def test_repeated_comparisons_leave_no_compiled_executables_behind():
    """compare ran the Flax side eagerly, and JAX keeps every eager scan's executable: a suite of many comparisons
    piled up memory mappings until the process reached vm.max_map_count and segfaulted."""
    tm = UserLSTM()
    fm, variables = from_torch(tm, pooling="mean")
    assert mappings_left_per_call(lambda: compare(tm, fm, variables, _tokens())) < 20


def test_float64_models_meet_the_float64_tolerance():
    with jax.enable_x64(True):
        tm = torch_recurrent("gru", 3, 4, batch_first=True).double()
        fm, variables = from_torch(tm)
        report = assert_parity(tm, fm, variables, torch.randn(2, 4, 3, dtype=torch.float64))
    assert report.tolerance == POLICY["float64"] and report.dtype == "float64" and report.worst() < 1e-12


def _perturbed(variables, fn):
    return {"params": jax.tree.map(fn, variables["params"])}


def test_one_ulp_perturbation_of_every_weight_passes():
    tm = UserLSTM()
    fm, variables = from_torch(tm, pooling="mean")
    nudged = _perturbed(variables, lambda p: jnp.asarray(np.nextafter(np.asarray(p), np.float32(np.inf))))
    report = compare(tm, fm, nudged, _tokens())
    assert report.passed
    assert report.worst("weight") > 0  # the weights really differ


def test_swapped_gates_fail_naming_the_weight_tensor():
    tm = UserLSTM()
    fm, variables = from_torch(tm, pooling="mean")
    w = np.array(variables["params"]["encoder"]["weight_ih_l1"])
    w[:5], w[5:10] = w[5:10].copy(), w[:5].copy()  # i and f gates swapped
    variables["params"]["encoder"]["weight_ih_l1"] = jnp.asarray(w)
    with pytest.raises(ParityError, match=r"first failure: weight rnn.weight_ih_l1") as err:
        assert_parity(tm, fm, variables, _tokens())
    failed = {e.label for e in err.value.report.failures}
    assert "output output" in failed and {e for e in failed if e.startswith("weight")} == {"weight rnn.weight_ih_l1"}


class DropsBiasHH:
    """A Flax model that ignores the recurrent bias of layer 0 (like flax's LSTMCell summing biases, flax#3746)."""

    def __init__(self, inner):
        self.inner = inner

    def apply(self, variables, *inputs, **kwargs):
        enc = dict(variables["params"]["encoder"])
        enc["bias_hh_l0"] = jnp.zeros_like(enc["bias_hh_l0"])
        return self.inner.apply({"params": {**variables["params"], "encoder": enc}}, *inputs, **kwargs)


def test_dropped_bias_hh_fails_and_its_gradient_is_named():
    tm = UserLSTM()
    fm, variables = from_torch(tm, pooling="mean")
    report = compare(tm, DropsBiasHH(fm), variables, _tokens())
    assert not report.passed and report.first_failure.label == "output output"
    grad = next(e for e in report.entries if e.label == "gradient rnn.bias_hh_l0")
    assert not grad.passed and grad.actual == 0.0 and grad.max_rel == pytest.approx(1.0)  # JAX's is zero
    assert all(e.passed for e in report.entries if e.kind == "weight")


def test_report_renders_table_json_and_markdown(tmp_path):
    tm = UserLSTM()
    fm, variables = from_torch(tm, pooling="mean")
    report = compare(tm, DropsBiasHH(fm), variables, _tokens())
    report.write(tmp_path / "r.json")
    report.write(tmp_path / "r.md")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["passed"] is False and len(data["entries"]) == len(report.entries)
    assert data["entries"][0]["name"] == "emb.weight" and "first failure: output output" in data["summary"]
    assert "| `gradient rnn.bias_hh_l0` |" in (tmp_path / "r.md").read_text()
    assert "FAIL" in report.table(only_failures=True).splitlines()[1]
    with pytest.raises(ValueError, match="must end in .json or .md"):
        report.write(tmp_path / "r.txt")


def test_diff_names_shape_mismatch_nan_and_worst_element():
    tol = Tolerance(1e-5, 1e-5)
    assert diff("output", "y", np.zeros(3), np.zeros(4), tol).problem == "shape (3,) (JAX) vs (4,) (torch)"
    d = diff("output", "y", [1.0, np.nan, 3.0], [1.0, 2.0, 3.0], tol)
    assert not d.passed and d.worst_index == (1,) and "NaN" in d.problem
    assert diff("output", "y", [np.nan], [np.nan], tol).passed
    d = diff("output", "y", [[1.0, 2.0], [3.0, 4.1]], [[1.0, 2.0], [3.0, 4.0]], tol)
    assert d.worst_index == (1, 1) and d.actual == 4.1 and d.max_abs == pytest.approx(0.1)



def test_max_rel_is_relative_to_torch_values_and_infinite_where_torch_is_zero():
    tol = Tolerance(1e-5, 1e-5)
    assert diff("gradient", "w", [0.0, 2.2, 1e-9], [0.0, 2.0, 1e-9], tol).max_rel == pytest.approx(0.1)
    d = diff("gradient", "w", [1e-9, 2.0], [0.0, 2.0], tol)
    assert d.passed and d.max_rel == float("inf")  # not 1e-9 / tiny = 4.5e298

def test_tolerance_policy_by_dtype_and_forced_float32_matmuls():
    assert tolerance_for(np.float32) == Tolerance(1e-5, 1e-5) == tolerance_for(torch.float32, "gpu")
    assert tolerance_for("float64").atol == 1e-10 and tolerance_for(torch.bfloat16).rtol == 2e-2
    assert tolerance_for("float32", atol=1e-4) == Tolerance(1e-5, 1e-4)
    with pytest.raises(ValueError, match="no parity tolerance for dtype 'int32'"):
        tolerance_for(np.int32)
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with parity_precision():
            assert jax.config.jax_default_matmul_precision == "float32"
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


def test_unpairable_parameters_are_named():
    tm = UserLSTM()
    fm, variables = from_torch(tm, pooling="mean")
    del variables["params"]["fc"]["bias"]
    with pytest.raises(ValueError, match="missing key 'fc.bias'|unexpected key 'head.bias'"):
        compare(tm, fm, variables, _tokens())


@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
def test_bfloat16_models_agree_within_the_bfloat16_tolerance_and_a_real_difference_still_fails(pooling):
    from parity.torch_models import SEED_MODELS

    tm = SEED_MODELS[pooling](vocab_size=50, embedding_dim=8, hidden_dim=6, num_classes=3)
    fm, variables = from_torch(tm, pooling=None if pooling == "attention" else pooling)
    tm = tm.to(torch.bfloat16)
    variables = jax.tree.map(lambda a: a.astype(jnp.bfloat16), variables)
    tokens = np.random.default_rng(0).integers(0, 50, (4, 7))
    report = compare(tm, fm, variables, tokens)
    assert report.passed and report.dtype == "bfloat16", report.summary()
    assert 0 < max(e.max_abs for e in report.entries) <= 2e-2  # bf16 rounding really differs, within policy
    variables["params"]["fc"]["bias"] = variables["params"]["fc"]["bias"] + 0.1
    assert compare(tm, fm, variables, tokens).first_failure.name == "fc.bias"


def test_bfloat16_inputs_compare_with_their_gradients():
    """A bfloat16 recurrent layer or feature classifier takes bfloat16 inputs (torch refuses float32 ones):
    they reach both sides and their gradients are compared too."""
    gru = nn.GRU(3, 4, batch_first=True)
    fm, variables = from_torch(gru)
    gru = gru.to(torch.bfloat16)
    variables = jax.tree.map(lambda a: a.astype(jnp.bfloat16), variables)
    x = torch.randn(2, 5, 3, dtype=torch.bfloat16)
    for given in (x, x.view(torch.int16).numpy().view(jnp.bfloat16)):  # a torch tensor or ml_dtypes' NumPy array
        report = compare(gru, fm, variables, given, lengths=[5, 2])
        assert report.passed and report.dtype == "bfloat16", report.summary()
        assert {e.name for e in report.entries if e.kind == "gradient"} >= {"input[0]", "weight_hh_l0"}


def test_a_sparse_embedding_gradient_is_compared_densely():
    """`nn.Embedding(sparse=True)` gets a sparse gradient in torch: compared as the dense one JAX computes."""
    tm = UserLSTM()
    tm.emb.sparse = True
    fm, variables = from_torch(tm, pooling="mean")
    report = assert_parity(tm, fm, variables, _tokens())
    assert "emb.weight" in {e.name for e in report.entries if e.kind == "gradient"}


def test_frozen_parameters_are_not_compared_and_existing_gradients_are_left_alone():
    tm = UserLSTM()
    tm.emb.weight.requires_grad_(False)  # a frozen pretrained embedding: torch computes no gradient for it
    tm(_tokens()).sum().backward()
    before = {n: p.grad.clone() for n, p in tm.named_parameters() if p.grad is not None}
    fm, variables = from_torch(tm, pooling="mean")
    report = assert_parity(tm, fm, variables, _tokens())
    graded = {e.name for e in report.entries if e.kind == "gradient"}
    assert graded == {n for n, p in tm.named_parameters() if p.requires_grad}
    assert "requires_grad=False: emb.weight" in report.notes[0]
    after = {n: p.grad for n, p in tm.named_parameters() if p.grad is not None}
    assert before.keys() == after.keys() and all(torch.equal(before[n], after[n]) for n in before)


def test_report_json_is_strict_when_a_tensor_is_nan(tmp_path):
    tm = UserLSTM()
    fm, variables = from_torch(tm, pooling="mean")
    variables["params"]["fc"]["bias"] = variables["params"]["fc"]["bias"].at[0].set(jnp.nan)
    report = compare(tm, fm, variables, _tokens(), gradients=False)
    assert not report.passed and report.first_failure.problem == "NaN or Inf on one side only"
    report.write(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert data["entries"][-1]["max_abs"] == "inf"


@pytest.mark.parametrize("override", [{"atol": -1.0}, {"rtol": -1e-3}, {"atol": float("nan")}])
def test_a_negative_or_nan_tolerance_is_refused_instead_of_passing_every_difference(override):
    """`|d| <= atol + rtol |e|` with a negative bound made every difference pass (excess = d / bound < 0):
    swapped gates reported PASS under `s2l parity --atol -1`."""
    with pytest.raises(ValueError, match="must be >= 0"):
        tolerance_for(np.float32, **override)
    tm = UserLSTM()
    fm, variables = from_torch(tm, pooling="mean")
    w = np.array(variables["params"]["encoder"]["weight_ih_l1"])
    w[:5], w[5:10] = w[5:10].copy(), w[:5].copy()
    variables["params"]["encoder"]["weight_ih_l1"] = jnp.asarray(w)
    with pytest.raises(ValueError, match="must be >= 0"):
        compare(tm, fm, variables, _tokens(), **override)
