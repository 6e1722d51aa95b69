"""Training-trajectory parity: N optimizer steps on the same batches with torch.optim (SGD with momentum, Adam,
AdamW) and the matching optax transforms, parameters compared after every step; the report's first failure is the
first step and tensor that left tolerance.

Matching hyperparameters: torch's SGD/Adam `weight_decay` is L2 added to the gradient (optax
`add_decayed_weights` before the transform); AdamW's is decoupled (`optax.adamw(weight_decay=...)`, applied as
`p - lr * (update + wd * p)`, torch's `p * (1 - lr * wd) - lr * update`); epsilon is added to `sqrt(v_hat)` on
both sides (optax `eps`, not `eps_root`). SGD's dampening is not supported (optax has none).

Adam's conditioning: an element whose gradient is tiny but non-zero (`|g| < eps`) gets the update
`lr * g / (|g| + eps)`, which turns float32 rounding of `g` (large, relative to a gradient that small) into an
absolute difference of order `lr`, then carried by the parameter forever. Measured on the seed's last-hidden model:
2.3e-5 from step 4 on, while float64 agrees to 1e-14. In float32 and below such elements are therefore checked
only against what Adam can move them (`2 * lr * step * max(1, (1 - b1) / sqrt(1 - b2))`), the rest at the strict
tolerance; the report says how many there were and their largest difference. Exact zeros stay strict (a padding
row's gradient must be zero on both sides). `adam_conditioning=False` checks every element strictly.

Dropout is excluded, on purpose: torch's nn.LSTM/GRU/RNN draw their inter-layer dropout masks inside the fused
kernel from torch's generator, with no hook to feed a mask in, so the two random streams cannot be made equal.
Both sides therefore train with dropout off (torch in `eval()` mode, which changes nothing else for these models;
JAX `deterministic=True`). A masked step is the same computation with different masks, which forward and gradient
parity already cover.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F
from torch import nn

from parity.check import as_numpy, param_names
from parity.report import ParityReport, diff
from parity.tolerance import parity_precision, tolerance_for
from s2l_jax.model import ClassifierConfig
from s2l_jax.params import flatten, unflatten

OPTIMIZERS = ("sgd", "adam", "adamw")
ILL_CONDITIONED = 1.0  # |grad| below this many eps: Adam amplifies its float32 rounding (see above)


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer's hyperparameters, built as torch.optim and as optax with the same meaning."""

    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9  # sgd
    nesterov: bool = False  # sgd
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self):
        if isinstance(self.name, str):  # torch's class names ("Adam", "SGD") mean the same optimizers
            object.__setattr__(self, "name", self.name.lower())
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; expected one of {OPTIMIZERS}")

    def torch(self, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov,
                                   weight_decay=self.weight_decay)
        cls = torch.optim.Adam if self.name == "adam" else torch.optim.AdamW
        return cls(params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay)

    def optax(self) -> optax.GradientTransformation:
        b1, b2 = self.betas
        if self.name == "adamw":
            return optax.adamw(self.lr, b1=b1, b2=b2, eps=self.eps, weight_decay=self.weight_decay)
        if self.name == "adam":
            inner = optax.adam(self.lr, b1=b1, b2=b2, eps=self.eps)
        else:
            inner = optax.sgd(self.lr, momentum=self.momentum or None, nesterov=self.nesterov)
        return optax.chain(optax.add_decayed_weights(self.weight_decay), inner) if self.weight_decay else inner


def random_batches(config: ClassifierConfig, steps: int, batch: int, length: int, *, seed: int = 0,
                   with_lengths: bool = False) -> list[tuple]:
    """`steps` batches `(inputs, labels)` or `(inputs, labels, lengths)` of NumPy arrays for `config`."""
    if steps < 1 or batch < 1 or length < 1:
        raise ValueError(f"steps, batch and length must be >= 1, got {steps}, {batch}, {length}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        if config.vocab_size is not None:
            inputs = rng.integers(0, config.vocab_size, (batch, length)).astype(np.int64)
        else:
            inputs = rng.standard_normal((batch, length, config.input_size)).astype(np.float32)
        labels = rng.integers(0, config.num_classes, (batch,)).astype(np.int64)
        lengths = rng.integers(1, length + 1, (batch,)).astype(np.int64)
        out.append((inputs, labels, lengths) if with_lengths else (inputs, labels))
    return out


def compare_training(
    torch_module: nn.Module,
    flax_module,
    variables,
    batches: Sequence[tuple],
    optimizer: OptimizerSpec | str = "adam",
    *,
    rtol: float | None = None,
    atol: float | None = None,
    adam_conditioning: bool = True,
) -> ParityReport:
    """Train a copy of `torch_module` and `variables` side by side on `batches` (`(inputs, labels[, lengths])`)
    with mean cross-entropy; compare the loss before and every parameter after each step ("step k"). Adam's
    ill-conditioned elements are handled as the module docstring says."""
    spec = OptimizerSpec(optimizer) if isinstance(optimizer, str) else optimizer
    batches = list(batches)
    if not batches:
        raise ValueError("compare_training needs at least one batch: with none there is nothing to compare")
    tm = copy.deepcopy(torch_module).eval()  # the caller's module keeps its weights; dropout off (see above)
    names = param_names(tm, variables["params"])
    dtype = next(p.dtype for p in tm.parameters())
    tol = tolerance_for(dtype, rtol=rtol, atol=atol)
    t_opt = spec.torch(tm.parameters())
    # torch.optim leaves a parameter with requires_grad=False as it is (no gradient, no weight decay).
    frozen = {names[t] for t, p in tm.named_parameters() if not p.requires_grad}
    labels = unflatten({n: "frozen" if n in frozen else "trained" for n in flatten(variables["params"])})
    tx = optax.multi_transform({"trained": spec.optax(), "frozen": optax.set_to_zero()}, labels)
    params = variables["params"]
    others = {k: v for k, v in variables.items() if k != "params"}
    opt_state = tx.init(params)

    @jax.jit
    def jax_step(params, opt_state, inputs, labels, lengths):
        def loss_fn(p):
            kw = {} if lengths is None else {"lengths": lengths}
            logits = flax_module.apply({"params": p, **others}, inputs, **kw)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    entries = []
    conditioned = adam_conditioning and spec.name != "sgd" and torch.finfo(dtype).bits < 64
    ill: dict[str, np.ndarray] = {}  # per torch name: elements whose gradient was ever 0 < |g| < eps
    worst_ill = (0.0, "", 0)  # (difference, tensor, step)
    step_bound = 2 * spec.lr * max(1.0, (1 - spec.betas[0]) / np.sqrt(1 - spec.betas[1]))
    with parity_precision():
        for k, batch in enumerate(batches, 1):
            inputs, labels, *rest = (np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b)
                                     for b in batch)
            lengths = rest[0] if rest else None
            t_opt.zero_grad()
            t_kw = {} if lengths is None else {"lengths": torch.from_numpy(lengths)}
            t_loss = F.cross_entropy(tm(torch.from_numpy(inputs), **t_kw), torch.from_numpy(labels))
            t_loss.backward()
            if conditioned:
                for t_name, p in tm.named_parameters():
                    g = np.abs(as_numpy(p.grad)) if p.grad is not None else np.zeros(tuple(p.shape))
                    ill[t_name] = ill.get(t_name, False) | ((g > 0) & (g < ILL_CONDITIONED * spec.eps))
            t_opt.step()
            params, opt_state, j_loss = jax_step(params, opt_state, jnp.asarray(inputs), jnp.asarray(labels),
                                                 None if lengths is None else jnp.asarray(lengths))
            entries.append(diff(f"step {k}", "loss", j_loss, as_numpy(t_loss), tol))
            flat = flatten(params)
            for t_name, p in tm.named_parameters():
                actual, expected = np.asarray(flat[names[t_name]], np.float64), as_numpy(p)
                mask = ill.get(t_name)
                if mask is not None and mask.any():
                    gap = np.abs(actual - expected)[mask]
                    if gap.max() > worst_ill[0]:
                        worst_ill = (float(gap.max()), t_name, k)
                    if not gap.max() <= step_bound * k:
                        entries.append(diff(f"step {k}", f"{t_name} (ill-conditioned elements)", actual[mask],
                                            expected[mask], type(tol)(0.0, step_bound * k)))
                    actual = np.where(mask, expected, actual)
                entries.append(diff(f"step {k}", t_name, actual, expected, tol))
    notes = [f"{len(batches)} {spec.name} steps (lr {spec.lr:g}, weight decay {spec.weight_decay:g}); dropout "
             "off on both sides (torch's recurrent dropout cannot be fed shared masks)"]
    n_ill = sum(int(m.sum()) for m in ill.values())
    if n_ill:
        total = sum(p.numel() for p in tm.parameters())
        gap, where, step = worst_ill
        notes.append(f"{n_ill} of {total} parameter elements had a gradient 0 < |g| < {ILL_CONDITIONED:g} * eps "
                     f"(Adam's ill-conditioned case): checked against Adam's step bound, not {tol.atol:g}; largest "
                     f"difference there {gap:.2e} ({where}, step {step})")
    return ParityReport(tuple(entries), tol, str(dtype).replace("torch.", ""), jax.default_backend(), tuple(notes))


def step_drift(report: ParityReport) -> dict[int, float]:
    """Max-abs parameter difference after each step (losses excluded)."""
    drift: dict[int, float] = {}
    for e in report.entries:
        m = re.fullmatch(r"step (\d+)", e.kind)
        if m and e.name != "loss":
            drift[int(m[1])] = max(drift.get(int(m[1]), 0.0), e.max_abs)
    return drift
