"""The cuDNN LSTM option: weight packing checked on any backend (through jax.experimental.rnn's reference LSTM,
against torch), the kernel itself against torch on a GPU only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.experimental import rnn
from oracle import close, compare_recurrent

from parity import from_torch
from s2l_jax import GRU, LSTM, ScanOptions, lstm_scan
from s2l_jax.cudnn import pack_lstm_weights

on_gpu = pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN runs on a GPU only")


def _reference_lstm(params, x, lengths, layers, bidirectional):
    """jax.experimental.rnn's own reference LSTM fed with our packed weights, unpacked by its unpacker."""
    batch, _, input_size = x.shape
    hidden = params["weight_hh_l0"].shape[1]
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(pack_lstm_weights(params, layers, bidirectional),
                                                     input_size, hidden, layers, bidirectional)
    zeros = jnp.zeros((layers * (1 + bidirectional), batch, hidden))
    return rnn.lstm_ref(x, zeros, zeros, w_ih, w_hh, b_ih, b_hh, jnp.asarray(lengths, jnp.int32), input_size,
                        hidden, layers, 0.0, bidirectional)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_weights_run_jax_reference_lstm_like_torch(bidirectional):
    layers = 2
    tm = torch.nn.LSTM(4, 6, num_layers=layers, bidirectional=bidirectional, batch_first=True)
    _, variables = from_torch(tm)
    params = variables["params"]
    x = torch.randn(3, 5, 4)
    out, (h_n, c_n) = tm(x)
    # jitted: run eagerly, each of the reference's ops would compile on its own (~10 s a case)
    y, h, c = jax.jit(lambda p, x_: _reference_lstm(p, x_, [5, 5, 5], layers, bidirectional))(params, x.numpy())
    close(y, out.detach().numpy(), 1e-5)
    close(h, h_n.detach().numpy(), 1e-5)
    close(c, c_n.detach().numpy(), 1e-5)

    lengths = [5, 2, 3]  # ragged: outputs and gradients through the packing match the torch-verified scan
    xj = jnp.asarray(x.numpy())

    def loss(fn):
        return lambda p: jnp.sum(jnp.sin(fn(p)))

    ours = lambda p: lstm_scan(p, xj, num_layers=layers, bidirectional=bidirectional,  # noqa: E731
                               lengths=jnp.asarray(lengths))[0]
    ref = lambda p: _reference_lstm(p, xj, lengths, layers, bidirectional)[0]  # noqa: E731
    close(jax.jit(ref)(params), jax.jit(ours)(params), 1e-5)
    g_ref, g_ours = jax.jit(jax.grad(loss(ref)))(params), jax.jit(jax.grad(loss(ours)))(params)
    assert g_ref.keys() == g_ours.keys()
    for k in g_ours:
        close(g_ref[k], g_ours[k], 1e-5, relative_to_scale=True)


def test_packing_fills_missing_biases_with_zeros_and_refuses_projections():
    no_bias = from_torch(torch.nn.LSTM(4, 6, bias=False))[1]["params"]
    packed = pack_lstm_weights(no_bias, 1, False)
    assert packed.shape == (rnn.get_num_params_in_lstm(4, 6, 1, False),)
    assert not np.asarray(packed[-2 * 24:]).any()
    with pytest.raises(ValueError, match="proj_size"):
        pack_lstm_weights(from_torch(torch.nn.LSTM(4, 6, proj_size=3))[1]["params"], 1, False)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the error on a backend without cuDNN")
def test_cudnn_option_without_a_gpu_is_a_clear_error():
    x = jnp.zeros((2, 3, 4))
    module = LSTM(6, batch_first=True, options=ScanOptions(cudnn=True))
    with pytest.raises(RuntimeError, match="needs a GPU"):
        module.init(jax.random.key(0), x)


def test_cudnn_option_refuses_other_cells_and_float64():
    with pytest.raises(ValueError, match="LSTMs only"):
        GRU(6, batch_first=True, options=ScanOptions(cudnn=True)).init(jax.random.key(0), jnp.zeros((2, 3, 4)))
    with jax.enable_x64(True):
        lstm = LSTM(6, batch_first=True, param_dtype=jnp.float64, options=ScanOptions(cudnn=True))
        with pytest.raises(ValueError, match="float32 only"):
            lstm.init(jax.random.key(0), jnp.zeros((2, 3, 4), jnp.float64))


@on_gpu
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("lengths", [None, [5, 2, 3]])
def test_cudnn_lstm_matches_torch_with_gradients(bidirectional, lengths):
    compare_recurrent("lstm", layers=2, bidirectional=bidirectional, lengths=lengths, with_state=True,
                      options=ScanOptions(cudnn=True))
