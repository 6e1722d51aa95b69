"""`s2l parity WEIGHTS`: build the torch reference model and the JAX model from one weight file, check forward,
gradients and (with `--steps`) a training trajectory on generated inputs, print a table, write a report.
A bare nn.LSTM/GRU/RNN state_dict is checked as that layer (forward and gradients; it has no loss to train).
Exit 0 on pass, 1 on fail, 2 on bad input (missing/corrupt file, unrecognised keys, non-float or NaN/Inf
weights)."""

from __future__ import annotations

import argparse
import contextlib
import os

import jax
import numpy as np
import torch

from parity.check import compare
from parity.convert import from_torch, numpy_to_tensor, to_torch
from parity.convert_cli import add_architecture_arguments, hints
from parity.infer import infer_recurrent, is_bare_recurrent
from parity.io import load_classifier_file, read_state_dict
from parity.report import ParityReport
from parity.torch_models import TorchSequenceClassifier, torch_recurrent
from parity.trajectory import OPTIMIZERS, OptimizerSpec, compare_training, random_batches, step_drift
from s2l_jax.params import check_shapes, check_weights


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("weights", help="a torch state_dict (.pt/.pth/.bin/.safetensors) or an s2l JAX checkpoint")
    add_architecture_arguments(p)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=16)
    p.add_argument("--lengths", action="store_true", help="also give random lengths (packed sequences in torch)")
    p.add_argument("--steps", type=int, default=0, help="training steps to compare (0: forward and gradients only)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--float64", action="store_true", help="run both sides in float64 (tolerance 1e-10)")
    p.add_argument("--rtol", type=float)
    p.add_argument("--atol", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", help="write the full report to FILE.json or FILE.md")


def run(args: argparse.Namespace) -> int:
    if args.report and not args.report.endswith((".json", ".md")):
        raise ValueError(f"--report {args.report} must end in .json or .md")
    if args.report and os.path.isdir(args.report):  # checked before the run, not after it
        raise ValueError(f"--report {args.report} is a directory; give a file name")
    if min(args.batch, args.length) < 1 or args.steps < 0:
        raise ValueError("--batch and --length must be >= 1 and --steps >= 0")
    torch.backends.mkldnn.enabled = False  # same numbers, up to 40x faster on some CPU shapes
    with jax.enable_x64(True) if args.float64 else contextlib.nullcontext():
        flat, _ = read_state_dict(args.weights)
        report = _check_recurrent(args, flat) if is_bare_recurrent(flat) else _check_classifier(args)
    if args.report:
        report.write(args.report)
        print(f"wrote {args.report}")
    print("PASS" if report.passed else "FAIL")
    return 0 if report.passed else 1


def _check_classifier(args: argparse.Namespace) -> ParityReport:
    model, variables, arch = load_classifier_file(args.weights, args.pooling, **hints(args))
    config = arch.config
    dtype = numpy_to_tensor(np.zeros(0, jax.tree.leaves(variables)[0].dtype)).dtype  # the weights' own dtype
    tm = to_torch(variables, TorchSequenceClassifier(config).to(dtype))
    if args.float64:
        tm = tm.double()
        variables = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
    for note in arch.notes:
        print(f"note: {note}")
    (inputs, _, lengths), *_ = random_batches(config, 1, args.batch, args.length, seed=args.seed, with_lengths=True)
    tol = dict(rtol=args.rtol, atol=args.atol)
    report = compare(tm, model, variables, inputs, lengths=lengths if args.lengths else None, seed=args.seed, **tol)
    print(report.table(only_failures=report.passed is False and len(report.entries) > 40))
    if args.steps:
        batches = random_batches(config, args.steps, args.batch, args.length, seed=args.seed + 1,
                                 with_lengths=args.lengths)
        spec = OptimizerSpec(args.optimizer, lr=args.lr, weight_decay=args.weight_decay)
        training = compare_training(tm, model, variables, batches, spec, **tol)
        drift = step_drift(training)
        shown = sorted({1, 10, 100, args.steps} & set(drift))
        print(f"training, {args.steps} {args.optimizer} steps: max-abs parameter difference after step "
              + ", ".join(f"{k}: {drift[k]:.3g}" for k in shown))
        print(training.summary())
        report = report + training
    return report


def _check_recurrent(args: argparse.Namespace, flat: dict) -> ParityReport:
    """A bare recurrent layer: the torch layer built from the keys (batch_first), compared on random features."""
    if args.steps:
        raise ValueError(f"{args.weights} holds a bare recurrent layer (no classifier head, so no loss): "
                         "--steps needs a classifier")
    kwargs = infer_recurrent(flat, args.nonlinearity)
    flat = check_weights(flat, str(args.weights))
    tm = torch_recurrent(**kwargs, batch_first=True)
    check_shapes({k: tuple(v.shape) for k, v in tm.state_dict().items()}, flat, what=str(args.weights))
    if args.float64:
        tm = tm.double()  # before loading, so float64 weights stay float64
    tm.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in flat.items()}, strict=True)
    model, variables = from_torch(tm)
    print(f"note: a bare {type(tm).__name__} ({kwargs['num_layers']} layer(s), hidden {kwargs['hidden_size']}, "
          f"{'bidirectional' if kwargs['bidirectional'] else 'unidirectional'}), checked on random features")
    if kwargs["cell"].startswith("rnn") and args.nonlinearity is None:
        print("note: nonlinearity assumed tanh (the weights cannot tell); pass --nonlinearity relu if it is")
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.batch, args.length, kwargs["input_size"]))
    x = x.astype(np.float64 if args.float64 else np.float32)
    lengths = rng.integers(1, args.length + 1, args.batch) if args.lengths else None
    report = compare(tm, model, variables, x, lengths=lengths, seed=args.seed, rtol=args.rtol, atol=args.atol)
    print(report.table())
    return report
