"""`s2l demo`: the seed's three torch classifiers converted to JAX, with their forward, gradient and round-trip
differences at the seed's sizes."""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from parity.convert import from_torch, to_torch
from parity.torch_models import SEED_MODELS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)


def seed_model_differences(pooling: str, batch: int = 32, length: int = 20, seed: int = 0) -> dict[str, float]:
    """Max-abs differences torch vs JAX for one seed model: logits, loss gradients, and the round trip."""
    torch.manual_seed(seed)
    tm = SEED_MODELS[pooling]()
    fm, variables = from_torch(tm, pooling=None if pooling == "attention" else pooling)
    tokens = torch.randint(0, 1000, (batch, length))
    labels = torch.randint(0, 5, (batch,))
    logits = tm(tokens)
    F.cross_entropy(logits, labels).backward()

    def loss(params):
        out = fm.apply({"params": params}, jnp.asarray(tokens.numpy()))
        return -jnp.mean(jax.nn.log_softmax(out)[jnp.arange(batch), jnp.asarray(labels.numpy())]), out

    (_, out), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    jgrads = to_torch({"params": grads}, SEED_MODELS[pooling]()).state_dict()
    back = to_torch(variables, SEED_MODELS[pooling]()).state_dict()
    return {
        "logits": float(np.max(np.abs(np.asarray(out) - logits.detach().numpy()))),
        "gradients": max(float((jgrads[k] - p.grad).abs().max()) for k, p in tm.named_parameters()),
        "round_trip": max(float((back[k] - v).abs().max()) for k, v in tm.state_dict().items()),
    }


def run(args: argparse.Namespace) -> int:
    if min(args.batch, args.length) < 1:
        raise ValueError(f"--batch and --length must be >= 1, got {args.batch} and {args.length}")
    torch.backends.mkldnn.enabled = False
    print(f"seed models, batch {args.batch}, length {args.length}: max-abs difference torch vs s2l_jax (float32)")
    print(f"{'model':<10} {'logits':>10} {'gradients':>10} {'round trip':>11}")
    worst = 0.0
    for pooling in SEED_MODELS:
        d = seed_model_differences(pooling, args.batch, args.length, args.seed)
        worst = max(worst, d["logits"], d["gradients"])
        print(f"{pooling:<10} {d['logits']:>10.2e} {d['gradients']:>10.2e} {d['round_trip']:>11.1e}")
    ok = worst <= 1e-5
    print("PASS" if ok else "FAIL", f"(tolerance 1e-5, worst {worst:.2e})")
    return 0 if ok else 1
