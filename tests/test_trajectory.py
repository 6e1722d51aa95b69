"""Training trajectories: torch.optim and the matching optax transforms take the same steps on the same batches;
a mismatched optimizer is caught at the first step, naming the tensor."""

import dataclasses

import jax
import optax
import pytest
import torch

from parity import TorchSequenceClassifier, from_torch
from parity.torch_models import SEED_MODELS
from parity.trajectory import OptimizerSpec, compare_training, random_batches, step_drift
from s2l_jax import ClassifierConfig

SMALL = dict(vocab_size=50, embedding_dim=8, hidden_dim=6, num_classes=3)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
def test_21_adam_steps_stay_within_tolerance_for_the_seed_models(pooling, dtype):
    with jax.enable_x64(dtype == "float64"):
        tm = SEED_MODELS[pooling](**SMALL).to(getattr(torch, dtype))
        before = {k: v.clone() for k, v in tm.state_dict().items()}
        fm, variables = from_torch(tm, pooling=None if pooling == "attention" else pooling)
        report = compare_training(tm, fm, variables, random_batches(fm.config, 21, 4, 5), "adam")
    assert report.passed, report.summary()
    drift = step_drift(report)
    assert sorted(drift) == list(range(1, 22)) and report.dtype == dtype
    assert max(drift.values()) < (1e-6 if dtype == "float32" else 1e-13)
    assert drift[21] > 0 or dtype == "float64"  # the steps really ran on both sides
    assert all(torch.equal(v, tm.state_dict()[k]) for k, v in before.items())  # the caller's module is untouched


CONFIG = ClassifierConfig(vocab_size=20, embedding_dim=4, hidden_size=5, num_classes=3, cell="gru", num_layers=2,
                          bidirectional=True, pooling="max", padding_idx=0)


@pytest.mark.parametrize("spec", [OptimizerSpec("sgd", lr=0.1, momentum=0.9, weight_decay=1e-2),
                                  pytest.param(OptimizerSpec("sgd", lr=0.1, momentum=0.5, nesterov=True),
                                               marks=pytest.mark.slow),
                                  pytest.param(OptimizerSpec("adam", lr=1e-2, weight_decay=1e-2, eps=1e-6),
                                               marks=pytest.mark.slow),
                                  OptimizerSpec("adamw", lr=1e-2, weight_decay=0.1, betas=(0.8, 0.99))],
                         ids=lambda s: s.name + ("-nesterov" if s.nesterov else ""))
def test_optimizers_with_momentum_weight_decay_and_lengths_match_exactly_in_float64(spec):
    with jax.enable_x64(True):
        tm = TorchSequenceClassifier(CONFIG).double()
        fm, variables = from_torch(tm, pooling="max")
        batches = random_batches(CONFIG, 10, 3, 6, with_lengths=True)
        report = compare_training(tm, fm, variables, batches, spec)
    assert report.passed, report.summary()
    assert report.worst() < 1e-12 and report.worst() > 0


@dataclasses.dataclass(frozen=True)
class CoupledAdamW(OptimizerSpec):
    """A wrong port of AdamW: L2 weight decay added to the gradient instead of decoupled decay."""

    def optax(self):
        return optax.chain(optax.add_decayed_weights(self.weight_decay), optax.adam(self.lr))


def test_wrong_weight_decay_placement_fails_at_step_one_naming_a_parameter():
    with jax.enable_x64(True):
        tm = TorchSequenceClassifier(CONFIG).double()
        fm, variables = from_torch(tm, pooling="max")
        report = compare_training(tm, fm, variables, random_batches(CONFIG, 3, 3, 6),
                                  CoupledAdamW("adamw", lr=1e-2, weight_decay=0.1))
    first = report.first_failure
    assert first.kind == "step 1" and first.name != "loss"
    assert next(e for e in report.entries if e.label == "step 1 loss").passed  # same weights before step 1



def test_optimizer_names_are_read_as_torch_spells_them_too():
    assert OptimizerSpec("AdamW").name == "adamw" and OptimizerSpec("SGD").name == "sgd"
    assert type(OptimizerSpec("Adam").torch([torch.zeros(1, requires_grad=True)])) is torch.optim.Adam

def test_bad_optimizer_and_batch_sizes_are_refused():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        OptimizerSpec("rmsprop")
    with pytest.raises(ValueError, match="steps, batch and length must be >= 1"):
        random_batches(CONFIG, 0, 2, 3)


def test_seed_size_float32_adam_checks_ill_conditioned_elements_by_adams_step_bound_and_still_catches_bugs():
    tm = SEED_MODELS["last"]()  # the seed's sizes: B32 T20, vocab 1000, hidden 128
    fm, variables = from_torch(tm, pooling="last")
    batches = random_batches(fm.config, 21, 32, 20)
    strict = compare_training(tm, fm, variables, batches, "adam", adam_conditioning=False)
    assert not strict.passed and strict.first_failure.name == "embedding.weight"  # |grad| < eps amplified by Adam
    report = compare_training(tm, fm, variables, batches, "adam")
    assert report.passed, report.summary()
    assert max(step_drift(report).values()) < 1e-5
    assert "had a gradient 0 < |g| < 1 * eps (Adam's ill-conditioned case)" in report.notes[1]
    wrong = compare_training(tm, fm, variables, batches[:2], CoupledAdamW("adamw", lr=1e-2, weight_decay=0.1))
    assert wrong.first_failure.kind == "step 1" and wrong.first_failure.name != "loss"


def test_frozen_parameters_stay_put_on_both_sides():
    tm = TorchSequenceClassifier(CONFIG)
    tm.embedding.weight.requires_grad_(False)
    fm, variables = from_torch(tm, pooling="max")
    report = compare_training(tm, fm, variables, random_batches(CONFIG, 3, 3, 6),
                              OptimizerSpec("adamw", lr=1e-2, weight_decay=0.1))
    assert report.passed, report.summary()
    frozen = [e for e in report.entries if e.name == "embedding.weight"]
    assert len(frozen) == 3 and all(e.max_abs == 0 for e in frozen)


@pytest.mark.slow  # ~12 s; bfloat16 training: test_train
def test_bfloat16_models_train_within_the_bfloat16_tolerance():
    tm = TorchSequenceClassifier(CONFIG).to(torch.bfloat16)
    fm, variables = from_torch(tm, pooling="max")
    variables = jax.tree.map(lambda v: v.astype(jax.numpy.bfloat16), variables)
    for optimizer in ("adam", "sgd"):
        report = compare_training(tm, fm, variables, random_batches(CONFIG, 2, 3, 6), optimizer)
        assert report.passed and report.dtype == "bfloat16", report.summary()


def test_batches_may_be_any_iterable_but_not_empty():
    tm = TorchSequenceClassifier(CONFIG)
    fm, variables = from_torch(tm, pooling="max")
    report = compare_training(tm, fm, variables, iter(random_batches(CONFIG, 2, 3, 6)), "sgd")
    assert report.passed and "2 sgd steps" in report.notes[0]
    with pytest.raises(ValueError, match="at least one batch"):
        compare_training(tm, fm, variables, [], "sgd")
