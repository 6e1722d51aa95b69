"""The fast scans against the plain reference, padding invariance, dropout, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from grids import banded

from s2l_jax import GRU, LSTM, RNN, ScanOptions
from s2l_jax.recurrent import make_encoder
from s2l_jax.reference import reference_recurrent

LAYOUTS = [ScanOptions(), ScanOptions(input_projection="hoisted"), ScanOptions(fuse_directions=True),
           ScanOptions(input_projection="hoisted", fuse_directions=True, unroll=4, tanh_sigmoid=False),
           ScanOptions(input_projection="per_step", fold_half=False, custom_vjp=False),
           ScanOptions(input_projection="chunked", chunk=4, unroll=2, custom_vjp=False),
           ScanOptions(input_projection="chunked", chunk=4, custom_vjp=True, fuse_directions=True),
           ScanOptions(input_projection="per_step", custom_vjp=True, tanh_sigmoid=False),
           ScanOptions(input_projection="hoisted", custom_vjp=True),
           ScanOptions(input_projection="chunked", chunk=4, remat=True),
           ScanOptions(input_projection="per_step", remat=True, custom_vjp=False)]


CELLS_AND_PROJ = [("lstm", 0), ("lstm", 3), ("gru", 0), ("rnn_tanh", 0), ("rnn_relu", 0)]


@pytest.mark.parametrize("cell,proj,options", banded(CELLS_AND_PROJ, LAYOUTS, every=5))
def test_every_scan_layout_equals_the_plain_reference(cell, proj, options):
    with jax.enable_x64(True):
        module = make_encoder(cell, 5, num_layers=2, bidirectional=True, batch_first=True, proj_size=proj,
                              param_dtype=jnp.float64, options=options)
        x = jax.random.normal(jax.random.key(1), (3, 6, 4), jnp.float64)
        lengths = np.array([6, 1, 3])
        variables = jax.jit(module.init)(jax.random.key(0), x)
        out, state = jax.jit(lambda v: module.apply(v, x, lengths=lengths))(variables)
        h_n = state[0] if cell == "lstm" else state
        ref_out, ref_h, ref_c = reference_recurrent(cell, variables["params"], x, num_layers=2,
                                                    bidirectional=True, lengths=lengths)
        np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-12)
        np.testing.assert_allclose(h_n, ref_h, rtol=0, atol=1e-12)
        if cell == "lstm":
            np.testing.assert_allclose(state[1], ref_c, rtol=0, atol=1e-12)


BACKWARD_LAYOUTS = [dict(input_projection="per_step"), dict(input_projection="hoisted"),
                    dict(input_projection="chunked", chunk=4, fuse_directions=True),
                    dict(input_projection="per_step", chunk=4, remat=True),
                    dict(input_projection="chunked", chunk=2, remat=True, fuse_directions=True)]


@pytest.mark.parametrize("cell,proj,layout", banded(CELLS_AND_PROJ, BACKWARD_LAYOUTS, every=5))
def test_hand_written_backward_equals_autodiff_of_the_scan(cell, proj, layout):
    with jax.enable_x64(True):
        fast = ScanOptions(custom_vjp=True, **layout)
        module = make_encoder(cell, 5, num_layers=2, bidirectional=True, batch_first=True, proj_size=proj,
                              param_dtype=jnp.float64, options=fast)
        x = jax.random.normal(jax.random.key(1), (3, 6, 4), jnp.float64)
        lengths = jnp.array([6, 1, 3])
        params = jax.jit(module.init)(jax.random.key(0), x)["params"]
        h_out = proj or 5
        h0 = jax.random.normal(jax.random.key(2), (4, 3, 5), jnp.float64)
        state = (h0[..., :h_out], 0.5 * h0) if cell == "lstm" else h0
        cot = jax.random.normal(jax.random.key(3), (3, 6, 2 * h_out), jnp.float64)

        def loss(m, p, x_, s):
            out, final = m.apply({"params": p}, x_, lengths=lengths, initial_state=s)
            return jnp.sum(out * cot) + sum(jnp.sum(jnp.sin(f)) for f in jax.tree.leaves(final))

        slow = module.clone(options=ScanOptions(custom_vjp=False, **layout))
        got, want = (jax.jit(jax.grad(lambda *a, m=m: loss(m, *a), argnums=(0, 1, 2)))(params, x, state)
                     for m in (module, slow))
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12, err_msg=jax.tree_util.keystr(path))
            assert np.abs(b).max() > 1e-3  # every gradient is exercised


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_forward_mode_without_the_hand_written_backward_agrees_with_it(cell):
    with jax.enable_x64(True):
        module = make_encoder(cell, 4, bidirectional=True, batch_first=True, param_dtype=jnp.float64)
        x = jax.random.normal(jax.random.key(1), (2, 5, 3), jnp.float64)
        lengths = jnp.array([5, 2])
        params = module.init(jax.random.key(0), x)["params"]
        tangent = jax.tree.map(lambda a: jnp.cos(a * 7.0), params)
        u = jax.random.normal(jax.random.key(2), (2, 5, 8), jnp.float64)
        forward = module.clone(options=ScanOptions(custom_vjp=False))
        _, jvp = jax.jit(lambda p, t: jax.jvp(lambda q: forward.apply({"params": q}, x, lengths=lengths)[0], (p,),
                                              (t,)))(params, tangent)
        with pytest.raises(TypeError, match="custom_vjp"):
            jax.jvp(lambda p: module.apply({"params": p}, x, lengths=lengths)[0], (params,), (tangent,))
        grads = jax.jit(lambda p: jax.vjp(lambda q: module.apply({"params": q}, x, lengths=lengths)[0], p)[1](u)[0])(
            params)
        dot = sum(jnp.vdot(g, t) for g, t in zip(jax.tree.leaves(grads), jax.tree.leaves(tangent), strict=True))
        np.testing.assert_allclose(dot, jnp.vdot(u, jvp), rtol=1e-12)


@pytest.mark.parametrize("module", [LSTM(6, num_layers=2, bidirectional=True, batch_first=True, proj_size=2),
                                    GRU(6, bidirectional=True, batch_first=True)])
def test_extra_padding_changes_nothing(module):
    x = jax.random.normal(jax.random.key(0), (2, 4, 3))
    lengths = jnp.array([4, 2])
    variables = module.init(jax.random.key(1), x)
    apply = jax.jit(module.apply)  # eager, each op would compile on its own
    out, state = apply(variables, x, lengths=lengths)
    garbage = jax.random.normal(jax.random.key(2), (2, 5, 3)) * 100
    padded = jnp.concatenate([x, garbage], axis=1)
    padded = padded.at[1, 2:4].set(garbage[1, :2])  # overwrite the short sequence's padding too
    out_p, state_p = apply(variables, padded, lengths=lengths)
    np.testing.assert_array_equal(out_p[:, :4], out)
    np.testing.assert_array_equal(out_p[:, 4:], 0.0)
    np.testing.assert_array_equal(out[1, 2:], 0.0)
    for a, b in zip(jax.tree.leaves(state_p), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_dropout_acts_between_layers_only_when_not_deterministic():
    module = LSTM(8, num_layers=2, dropout=0.5, batch_first=True)
    x = jax.random.normal(jax.random.key(0), (4, 5, 3))
    variables = module.init(jax.random.key(1), x)
    eval_a, _ = module.apply(variables, x)
    eval_b, _ = module.apply(variables, x, deterministic=True)
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a, _ = module.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(2)})
    train_b, _ = module.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(train_a, eval_a) and not np.allclose(train_a, train_b)
    one_layer = LSTM(8, dropout=0.5, batch_first=True)  # dropout never touches the last layer's output
    v1 = one_layer.init(jax.random.key(1), x)
    np.testing.assert_array_equal(one_layer.apply(v1, x, deterministic=False, rngs={"dropout": jax.random.key(2)})[0],
                                  one_layer.apply(v1, x)[0])


def test_unbatched_input_equals_a_batch_of_one():
    module = GRU(4, num_layers=2, bidirectional=True)
    x = jax.random.normal(jax.random.key(0), (5, 3))  # (time, features)
    variables = module.init(jax.random.key(1), x)
    out, h_n = module.apply(variables, x)
    out_b, h_b = module.apply(variables, x[:, None])
    np.testing.assert_array_equal(out, out_b[:, 0])
    np.testing.assert_array_equal(h_n, h_b[:, 0])


def test_jit_compiles_with_weights_as_arguments():
    module = LSTM(6, bidirectional=True, batch_first=True)
    x = jax.random.normal(jax.random.key(0), (2, 4, 3))
    variables = module.init(jax.random.key(1), x)
    lengths = jnp.array([4, 1])
    fast = jax.jit(lambda v, x_, n: module.apply(v, x_, lengths=n))(variables, x, lengths)
    slow = module.apply(variables, x, lengths=lengths)
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(slow), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.fixture
def lstm_and_vars():
    module = LSTM(4, num_layers=2, batch_first=True)
    x = jnp.zeros((2, 3, 5))
    return module, module.init(jax.random.key(0), x), x


@pytest.mark.parametrize("lengths,message", [
    ([0, 3], r"lengths\[0\] = 0"), ([3, 4], r"lengths\[1\] = 4"), ([3], r"shape \(2,\)"),
    ([1.0, 2.0], "integers"),
])
def test_bad_lengths_are_refused(lstm_and_vars, lengths, message):
    module, variables, x = lstm_and_vars
    with pytest.raises((ValueError, TypeError), match=message):
        module.apply(variables, x, lengths=jnp.asarray(lengths))


def test_wrong_rank_and_state_shapes_are_refused(lstm_and_vars):
    module, variables, x = lstm_and_vars
    with pytest.raises(ValueError, match=r"rank 3.*got shape \(2, 3, 5, 1\)"):
        module.apply(variables, x[..., None])
    with pytest.raises(ValueError, match=r"h_0 has shape \(1, 2, 4\), expected \(2, 2, 4\)"):
        module.apply(variables, x, initial_state=(jnp.zeros((1, 2, 4)), jnp.zeros((2, 2, 4))))
    with pytest.raises(ValueError, match="pair"):
        module.apply(variables, x, initial_state=jnp.zeros((2, 2, 4)))
    with pytest.raises(ValueError, match="nonlinearity"):
        RNN(3, nonlinearity="sigmoid").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="proj_size"):
        LSTM(3, proj_size=3).init(jax.random.key(0), x)


def test_init_draws_every_weight_within_torchs_bound_from_one_random_call():
    """torch's U(-1/sqrt(hidden), 1/sqrt(hidden)) for every weight, cut from one draw per module: each threefry
    call costs XLA:CPU ~0.4 s of compile, so per-weight draws made a stacked LSTM's init compile seconds long."""
    module = LSTM(6, num_layers=2, bidirectional=True, batch_first=True, proj_size=2)
    x = jnp.ones((2, 3, 4))
    jaxpr = str(jax.make_jaxpr(module.init)(jax.random.key(0), x))
    assert jaxpr.count("random_bits[") == 1, jaxpr.count("random_bits[")
    params = jax.jit(module.init)(jax.random.key(0), x)["params"]
    bound = 1 / np.sqrt(6)
    assert len(params) == 20
    for name, w in params.items():
        assert np.abs(w).max() <= bound and np.ptp(w) > bound, name  # within the bound, and spread over it
    values = np.concatenate([np.ravel(w) for w in params.values()])
    assert len(np.unique(values)) == values.size  # no two weights share a slice of the draw
    again = jax.jit(module.init)(jax.random.key(0), x)["params"]
    assert all(np.array_equal(params[k], again[k]) for k in params)
