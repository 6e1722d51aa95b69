"""The native CPU LSTM and GRU kernels (`s2l_jax.native_rnn`) against torch and the XLA scan they replace."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from oracle import close, compare_recurrent

from parity import TorchSequenceClassifier, from_torch
from s2l_jax import ClassifierConfig, ScanOptions, native_rnn
from s2l_jax.predictor import Predictor, lstm_layout
from s2l_jax.recurrent import scan_direction, uses_native

XLA = ScanOptions(native=False)


def _direction(hidden=32, size=5, seed=0, cell="lstm"):
    rng = np.random.default_rng(seed)
    f32 = lambda *shape: jnp.asarray(rng.normal(0, 0.3, shape), jnp.float32)  # noqa: E731
    g = 4 if cell == "lstm" else 3
    return {"weight_ih": f32(g * hidden, size), "weight_hh": f32(g * hidden, hidden), "bias_ih": f32(g * hidden),
            "bias_hh": f32(g * hidden)}, rng


def test_the_kernels_are_built_here():
    assert native_rnn.available(), native_rnn._registered()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_kernels_match_the_xla_scan_in_outputs_and_every_gradient(cell, reverse, masked):
    # batch 6: partial tiles of 4 (forward) and 8 (backward) rows; hidden 32: two unit blocks
    p, rng = _direction(cell=cell)
    total, batch = 7, 6
    x = jnp.asarray(rng.normal(size=(total, batch, 5)), jnp.float32)
    lengths = np.array([7, 1, 4, 7, 2, 5])
    mask = jnp.asarray(np.arange(total)[:, None, None] < lengths[None, :, None]) if masked else None
    carry = tuple(jnp.asarray(rng.normal(size=(batch, 32)), jnp.float32) for _ in range(2 if cell == "lstm" else 1))
    w = jnp.asarray(rng.normal(size=(total, batch, 32)), jnp.float32)
    assert uses_native(ScanOptions(), p, x.dtype, cell=cell) and not uses_native(XLA, p, x.dtype, cell=cell)

    def loss(p, x, carry, options):
        ys, last = scan_direction(cell, p, x, mask, carry, reverse=reverse, options=options)
        return jnp.sum(ys * w) + sum(jnp.sum(s * w[i]) for i, s in enumerate(last)), (ys, last)

    (_, native), g_native = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True), static_argnums=3)(
        p, x, carry, ScanOptions())
    (_, xla), g_xla = jax.value_and_grad(loss, (0, 1, 2), has_aux=True)(p, x, carry, XLA)
    for a, b in zip(jax.tree.leaves((native, g_native)), jax.tree.leaves((xla, g_xla)), strict=True):
        close(a, b, 1e-5, relative_to_scale=True)
    if masked:  # outputs past each length are exactly zero
        assert not np.any(np.asarray(native[0])[lengths[None, :] <= np.arange(total)[:, None]])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_native_kernels_match_torch_with_lengths_and_initial_state(cell, bidirectional):
    compare_recurrent(cell, layers=2, bidirectional=bidirectional, hidden=16, input_size=7, batch=5, total=6,
                      lengths=[6, 1, 3, 6, 2], with_state=True, options=ScanOptions())


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_native_kernels_match_torch_large_hidden_batch_first_off(cell):
    compare_recurrent(cell, hidden=48, input_size=3, batch=9, total=4, batch_first=False, options=ScanOptions())


def test_a_nan_input_gives_nan_outputs_not_clamped_numbers():
    p, rng = _direction(hidden=16, size=3)
    x = np.asarray(rng.normal(size=(4, 5, 3)), np.float32)
    x[1, 2, 0] = np.nan
    carry = (jnp.zeros((5, 16)), jnp.zeros((5, 16)))
    ys, (h, c) = scan_direction("lstm", p, jnp.asarray(x), None, carry, options=ScanOptions())
    ys = np.asarray(ys)
    assert np.isnan(ys[1:, 2]).all() and np.isnan(np.asarray(h)[2]).all()
    assert np.isfinite(np.delete(ys, 2, axis=1)).all() and np.isfinite(ys[0]).all()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_hidden_sizes_off_the_tile_width_run_the_kernels_padded_and_match_the_xla_scan(cell):
    hidden = native_rnn.units() + 5  # 13 with AVX2, 21 with AVX-512: zero units pad it to two tiles
    p, rng = _direction(hidden=hidden, size=hidden, cell=cell)  # input as wide as hidden: only W_hh's columns grow
    x = jnp.asarray(rng.normal(size=(7, 6, hidden)), jnp.float32)
    mask = jnp.asarray(np.arange(7)[:, None, None] < np.array([7, 1, 4, 7, 2, 5])[None, :, None])
    carry = tuple(jnp.asarray(rng.normal(size=(6, hidden)), jnp.float32) for _ in range(2 if cell == "lstm" else 1))
    w = jnp.asarray(rng.normal(size=(7, 6, hidden)), jnp.float32)

    def loss(p, x, carry, options):
        ys, last = scan_direction(cell, p, x, mask, carry, reverse=True, options=options)
        return jnp.sum(ys * w) + sum(jnp.sum(s * w[i]) for i, s in enumerate(last)), (ys, last)

    grad = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True), static_argnums=3)
    assert "s2l_S2l" in grad.lower(p, x, carry, ScanOptions()).as_text()  # the kernels' custom calls
    (_, native), g_native = grad(p, x, carry, ScanOptions())
    (_, xla), g_xla = grad(p, x, carry, XLA)
    for a, b in zip(jax.tree.leaves((native, g_native)), jax.tree.leaves((xla, g_xla)), strict=True):
        assert a.shape == b.shape
        close(a, b, 1e-5, relative_to_scale=True)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padded_kernels_match_torch_in_a_stacked_bidirectional_layer(cell):
    compare_recurrent(cell, layers=2, bidirectional=True, hidden=native_rnn.units() + 3, input_size=5, batch=5,
                      total=6, lengths=[6, 1, 3, 6, 2], with_state=True, options=ScanOptions())


def test_the_xla_scan_runs_where_the_kernels_do_not_apply():
    p, _ = _direction(hidden=16)
    assert not uses_native(ScanOptions(), p, jnp.float16)  # input not float32
    assert not uses_native(ScanOptions(), jax.tree.map(lambda a: a.astype(jnp.float16), p), jnp.float32)
    assert not uses_native(ScanOptions(), {**p, "weight_hr": jnp.zeros((8, 16))}, jnp.float32)
    assert not uses_native(ScanOptions(custom_vjp=False), p, jnp.float32)
    assert not uses_native(ScanOptions(input_projection="hoisted"), p, jnp.float32, chunk=7)


def test_building_without_a_compiler_names_the_compiler():
    with pytest.raises(RuntimeError, match="no C.. compiler 'no-such-c..'"):
        native_rnn.build(compiler="no-such-c++")


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_remat_on_the_kernels_matches_the_xla_scan(cell, reverse):
    p, rng = _direction(hidden=16, size=3, cell=cell)
    x = jnp.asarray(rng.normal(size=(9, 5, 3)), jnp.float32)
    mask = jnp.asarray(np.arange(9)[:, None, None] < np.array([9, 2, 5, 9, 7])[None, :, None])
    carry = (jnp.zeros((5, 16)),) * (2 if cell == "lstm" else 1)

    def loss(p, x, options):
        ys, last = scan_direction(cell, p, x, mask, carry, reverse=reverse, options=options)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(last[0] * last[-1])

    remat = ScanOptions(remat=True, chunk=4)  # 3 chunks, the last one padded
    assert uses_native(remat, p, x.dtype, cell=cell)
    got = jax.grad(loss, (0, 1))(p, x, remat)
    want = jax.grad(loss, (0, 1))(p, x, XLA)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        close(a, b, 1e-5, relative_to_scale=True)


@pytest.mark.parametrize("fuse,hidden", [(False, 16), (True, 16), (False, 10)])
def test_predictor_packs_the_weights_once_and_matches_apply_bit_for_bit_and_torch(fuse, hidden):
    config = ClassifierConfig(vocab_size=30, embedding_dim=6, hidden_size=hidden, num_classes=3, pooling="attention",
                              bidirectional=True, num_layers=2)
    tm = TorchSequenceClassifier(config)
    model, variables = from_torch(tm, pooling=config.pooling)
    model = model.clone(options=ScanOptions(fuse_directions=fuse))
    layout = lstm_layout(model, variables["params"])["encoder"]
    tiles = native_rnn.padded(hidden) // native_rnn.units()  # hidden 10: padded with zero units to a tile
    assert layout["joint_l0"].shape == (tiles, native_rnn.padded(hidden) + 6, 4 * native_rnn.units())
    tokens = jax.random.randint(jax.random.key(1), (5, 7), 1, 30)
    lengths = jnp.array([7, 1, 4, 7, 3])
    got = Predictor(model, variables)(tokens, lengths)
    np.testing.assert_array_equal(got, jax.jit(model.apply)(variables, tokens, lengths=lengths))
    expected = tm(torch.tensor(np.array(tokens)), torch.tensor(np.array(lengths))).detach().numpy()
    close(got, expected, 1e-5)


def test_the_kernels_give_the_same_bits_on_every_call():
    # each tile is summed by one thread in a fixed order, whichever thread claims it
    p, rng = _direction(hidden=32, size=5)
    x = jnp.asarray(rng.normal(size=(12, 9, 5)), jnp.float32)
    carry = (jnp.zeros((9, 32)), jnp.zeros((9, 32)))
    grad = jax.jit(jax.grad(lambda p: jnp.sum(jnp.tanh(scan_direction("lstm", p, x, None, carry)[0]))))
    first = grad(p)
    for _ in range(5):
        for a, b in zip(jax.tree.leaves(grad(p)), jax.tree.leaves(first), strict=True):
            np.testing.assert_array_equal(a, b)


FALLBACK_SCRIPT = r"""
import warnings, jax, jax.numpy as jnp, numpy as np
from s2l_jax import LSTM, ScanOptions
x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5, 4)), jnp.float32)
layer = LSTM(hidden_size=16)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    variables = layer.init(jax.random.key(0), x)
    got = layer.apply(variables, x)[0]
assert any("no C++ compiler '/nonexistent/c++'" in str(w.message) for w in caught), [str(w.message) for w in caught]
want = LSTM(hidden_size=16, options=ScanOptions(native=False)).apply(variables, x)[0]
np.testing.assert_array_equal(got, want)
print("fell back")
"""


def test_without_a_compiler_lstms_run_the_xla_scan_with_a_warning(tmp_path):
    env = {**os.environ, "CXX": "/nonexistent/c++", "S2L_NATIVE_CACHE": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "fell back" in out.stdout, out.stderr[-2000:]


def test_nested_vmaps_and_jacrev_over_fused_directions_match_the_xla_scan():
    # fuse_directions is one vmap inside the library; a user's vmap or jacrev adds another level
    from s2l_jax.recurrent import recurrent_scan

    rng = np.random.default_rng(0)
    p = {f"{k}_l0{sfx}": jnp.asarray(rng.normal(0, 0.3, shape), jnp.float32) for sfx in ("", "_reverse")
         for k, shape in [("weight_ih", (64, 3)), ("weight_hh", (64, 16)), ("bias_ih", (64,)), ("bias_hh", (64,))]}
    x = jnp.asarray(rng.normal(size=(2, 4, 5, 3)), jnp.float32)  # (ensemble, batch, time, input)

    def outputs(options):
        return lambda x: recurrent_scan("lstm", p, x, bidirectional=True, options=options)[0]

    fused, xla = ScanOptions(fuse_directions=True), ScanOptions(fuse_directions=True, native=False)
    close(jax.vmap(outputs(fused))(x), jax.vmap(outputs(xla))(x), 1e-5)
    close(jax.jit(jax.jacrev(outputs(fused)))(x[0]), jax.jacrev(outputs(xla))(x[0]), 1e-5)
