"""LSTM / GRU / RNN against real torch modules: outputs, states and gradients, float32 and float64."""

import itertools

import jax
import pytest
import torch
from grids import banded
from oracle import compare_recurrent

from s2l_jax import CELLS, ScanOptions

LENGTHS = [5, 2, 4]  # unsorted, one full, one short: exercises pack_padded_sequence(enforce_sorted=False)


@pytest.mark.parametrize("cell,layers,bidirectional",
                         banded(CELLS, list(itertools.product([1, 2, 3], [False, True])), every=2))
def test_matches_torch_with_lengths_and_initial_state(cell, layers, bidirectional):
    compare_recurrent(cell, layers=layers, bidirectional=bidirectional, lengths=LENGTHS, with_state=True)


@pytest.mark.parametrize(
    "cell,bias,batch_first,lengths,with_state",
    banded(["lstm", "gru"], list(itertools.product([True, False], [True, False], [None, LENGTHS], [False, True])),
           every=2),
)
def test_matches_torch_over_options(cell, bias, batch_first, lengths, with_state):
    compare_recurrent(cell, layers=2, bidirectional=True, bias=bias, batch_first=batch_first, lengths=lengths,
                      with_state=with_state)


@pytest.mark.parametrize("rnn_cell", ["rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("lengths", [None, LENGTHS])
def test_elman_matches_torch_without_bias_time_major(rnn_cell, lengths):
    compare_recurrent(rnn_cell, layers=2, bidirectional=True, bias=False, batch_first=False, lengths=lengths)


@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True), (3, False)])
@pytest.mark.parametrize("lengths,with_state", [(None, False), (LENGTHS, True)])
def test_lstm_projection_matches_torch(layers, bidirectional, lengths, with_state):
    compare_recurrent("lstm", layers=layers, bidirectional=bidirectional, proj_size=3, lengths=lengths,
                      with_state=with_state)


@pytest.mark.parametrize("cell", CELLS)
def test_float64_agrees_to_1e10(cell):
    with jax.enable_x64(True):
        compare_recurrent(cell, layers=2, bidirectional=True, lengths=LENGTHS, with_state=True,
                          proj_size=2 if cell == "lstm" else 0, dtype=torch.float64, tol=1e-10)


@pytest.mark.parametrize(
    "cell,options",
    banded(["lstm", "gru"], [ScanOptions(input_projection="hoisted"), ScanOptions(fuse_directions=True, unroll=3),
     ScanOptions(tanh_sigmoid=False, input_projection="hoisted", fuse_directions=True),
     ScanOptions(input_projection="per_step", fold_half=False, custom_vjp=False),
     ScanOptions(input_projection="chunked", chunk=2, custom_vjp=False),
     ScanOptions(input_projection="chunked", chunk=2, custom_vjp=True, fuse_directions=True),
     ScanOptions(input_projection="per_step", custom_vjp=True),
     ScanOptions(input_projection="hoisted", custom_vjp=True, tanh_sigmoid=False),
     ScanOptions(input_projection="chunked", chunk=2, remat=True),
     ScanOptions(input_projection="per_step", remat=True, custom_vjp=False)], every=2),
)
def test_scan_layouts_match_torch(cell, options):
    compare_recurrent(cell, layers=2, bidirectional=True, lengths=LENGTHS, with_state=True, options=options)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_xla_scan_matches_torch_where_the_cpu_kernels_would_run(cell):
    # GPUs, and CPUs where the kernels cannot be built, run the XLA scan; on this CPU the default takes the kernels
    compare_recurrent(cell, layers=2, bidirectional=True, lengths=LENGTHS, with_state=True,
                      options=ScanOptions(native=False))


def test_single_step_and_single_sequence_match_torch():
    compare_recurrent("lstm", layers=2, bidirectional=True, batch=1, total=1, lengths=[1], with_state=True)
    compare_recurrent("gru", bidirectional=True, batch=2, total=3, hidden=1, lengths=[1, 3])


@pytest.mark.parametrize("options", [ScanOptions(custom_vjp=True, input_projection="chunked", chunk=2),
                                     ScanOptions(custom_vjp=False, input_projection="chunked", chunk=2)])
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_float64_agree_to_1e10_in_both_backward_paths(cell, options):
    with jax.enable_x64(True):
        compare_recurrent(cell, layers=2, bidirectional=True, lengths=LENGTHS, with_state=True,
                          dtype=torch.float64, tol=1e-10, options=options)
