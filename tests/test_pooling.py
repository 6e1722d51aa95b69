"""Heads against torch: unmasked they are the seed's formulas; masked they ignore padding; no overflow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from oracle import close

from parity import TorchSequenceClassifier, compare, from_torch
from parity.torch_models import Attention, valid_mask
from s2l_jax import AttentionPool, ClassifierConfig, max_pool, mean_pool
from s2l_jax.pooling import SCORE_ROWS, attention_scores, attention_scores_reference


def _attention_pair(d=6, scale=1.0):
    ta = Attention(d)
    with torch.no_grad():
        ta.v.weight.mul_(scale)
    params = {"attn": {"weight": jnp.asarray(ta.attn.weight.detach().numpy()),
                       "bias": jnp.asarray(ta.attn.bias.detach().numpy())},
              "v": {"weight": jnp.asarray(ta.v.weight.detach().numpy())}}
    return ta, {"params": params}


@pytest.mark.parametrize("lengths", [None, [7, 1, 4]])
def test_attention_matches_torch(lengths):
    ta, variables = _attention_pair()
    h = torch.randn(3, 7, 6)
    mask = None if lengths is None else valid_mask(lengths, 7)
    got = AttentionPool().apply(variables, jnp.asarray(h.numpy()), None if mask is None else jnp.asarray(mask))
    close(got, ta(h, mask).detach().numpy(), 1e-6)


def test_attention_is_stable_for_huge_scores_on_long_sequences():
    ta, variables = _attention_pair(scale=1e4)  # scores ~ 1e4: exp overflows without max-subtraction
    h = torch.randn(2, 4096, 6)
    mask = valid_mask([4096, 1000], 4096)
    got = np.asarray(AttentionPool().apply(variables, jnp.asarray(h.numpy()), jnp.asarray(mask)))
    assert np.isfinite(got).all()
    close(got, ta(h, mask).detach().numpy(), 1e-5)


def test_chunked_attention_matches_torch_and_the_reference_in_values_and_gradients():
    batch, total = 300, 10  # SCORE_ROWS // 300 = 3 steps per chunk: 4 chunks, the last padded by 2 steps
    assert SCORE_ROWS // batch == 3
    ta, variables = _attention_pair()
    h = torch.randn(batch, total, 6, requires_grad=True)
    torch.sin(ta(h)).sum().backward()

    def loss(variables, h):
        return jnp.sum(jnp.sin(AttentionPool().apply(variables, h)))

    close(AttentionPool().apply(variables, jnp.asarray(h.detach().numpy())), ta(h).detach().numpy(), 1e-6)  # chunked
    value, (g_vars, g_h) = jax.value_and_grad(loss, argnums=(0, 1))(variables, jnp.asarray(h.detach().numpy()))
    close(value, torch.sin(ta(h)).sum().item(), 1e-4)
    close(g_h, h.grad.numpy(), 1e-6)
    close(g_vars["params"]["attn"]["weight"], ta.attn.weight.grad.numpy(), 1e-5, relative_to_scale=True)
    close(g_vars["params"]["v"]["weight"], ta.v.weight.grad.numpy(), 1e-5, relative_to_scale=True)

    p = variables["params"]
    args = (jnp.asarray(h.detach().numpy()), p["attn"]["weight"], p["attn"]["bias"], p["v"]["weight"])
    np.testing.assert_allclose(attention_scores(*args), attention_scores_reference(*args), atol=1e-6)
    tangents = tuple(jnp.ones_like(a) for a in args)
    _, jvp = jax.jvp(attention_scores, args, tangents)  # forward mode works too
    np.testing.assert_allclose(jvp, jax.jvp(attention_scores_reference, args, tangents)[1], atol=1e-5)


def test_chunked_attention_of_one_long_masked_sequence_matches_torch_with_gradients():
    total = SCORE_ROWS + 1  # batch 1: two chunks of 513 steps, the last padded by one
    ta, variables = _attention_pair()
    h = torch.randn(1, total, 6, requires_grad=True)
    mask = valid_mask([total - 30], total)
    torch.sin(ta(h, mask)).sum().backward()

    def loss(variables, h):
        return jnp.sum(jnp.sin(AttentionPool().apply(variables, h, jnp.asarray(mask))))

    g_vars, g_h = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, jnp.asarray(h.detach().numpy()))
    close(g_h, h.grad.numpy(), 1e-6)
    close(g_vars["params"]["attn"]["weight"], ta.attn.weight.grad.numpy(), 1e-5, relative_to_scale=True)
    close(g_vars["params"]["attn"]["bias"], ta.attn.bias.grad.numpy(), 1e-5, relative_to_scale=True)
    close(g_vars["params"]["v"]["weight"], ta.v.weight.grad.numpy(), 1e-5, relative_to_scale=True)


def test_mean_and_max_pool_over_valid_steps_only():
    out = jax.random.normal(jax.random.key(0), (2, 5, 3))
    mask = jnp.asarray(valid_mask([5, 2], 5).numpy())
    np.testing.assert_allclose(mean_pool(out, mask)[1], out[1, :2].mean(0), atol=1e-6)
    np.testing.assert_array_equal(max_pool(out, mask)[1], out[1, :2].max(0))
    np.testing.assert_allclose(mean_pool(out), torch.tensor(np.asarray(out)).mean(1).numpy(), atol=1e-6)
    np.testing.assert_array_equal(max_pool(out), out.max(1))


@pytest.mark.parametrize("lengths", [None, [4, 3]])
def test_max_pool_sends_the_gradient_of_tied_steps_to_the_first_as_torch_does(lengths):
    """Outputs tie over time where a state stops changing (an all-zero series through a bias-free RNN stays 0):
    torch's `max(dim)` sends the gradient to the first maximal step, not split among the tied ones."""
    out = torch.tensor([[[-0.5, 0.0], [-0.5, 0.3], [-0.9, 0.3], [-0.5, -0.1]],
                        [[0.0, -2.0], [0.0, -2.0], [0.0, -2.0], [0.7, 5.0]]], requires_grad=True)
    mask = None if lengths is None else valid_mask(lengths, 4)
    cot = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    pooled = (out if mask is None else out.masked_fill(~mask[..., None], float("-inf"))).max(dim=1).values
    (pooled * cot).sum().backward()
    jmask = None if mask is None else jnp.asarray(mask.numpy())
    got, grad = jax.value_and_grad(lambda o: jnp.sum(max_pool(o, jmask) * jnp.asarray(cot.numpy())))(
        jnp.asarray(out.detach().numpy()))
    close(got, (pooled * cot).sum().item(), 1e-6)
    np.testing.assert_array_equal(grad, out.grad.numpy())


def test_max_pooled_classifier_matches_torch_gradients_on_an_all_zero_series():
    config = ClassifierConfig(vocab_size=None, input_size=3, hidden_size=4, num_classes=2, cell="rnn_tanh",
                              pooling="max", bias=False, bidirectional=True)
    tm = TorchSequenceClassifier(config)
    fm, variables = from_torch(tm, pooling="max")
    x = torch.randn(2, 6, 3)
    x[1] = 0  # every output of that row is 0: the max over time ties at every step
    for lengths in (None, [6, 4]):
        report = compare(tm, fm, variables, x, lengths=lengths)
        assert report.passed, report.summary()
