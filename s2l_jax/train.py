"""Training: optax AdamW with clipping and warmup+cosine, jit-compiled train/eval steps, masked metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from s2l_jax.data import Dataset, batches
from s2l_jax.model import ClassifierConfig, SequenceClassifier


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    warmup_steps: int = 50
    seed: int = 0


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, min(cfg.warmup_steps, total_steps // 2),
                                                  max(total_steps, 1))
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), optax.adamw(schedule, weight_decay=cfg.weight_decay))


def make_steps(model: SequenceClassifier, tx: optax.GradientTransformation):
    """(train_step, eval_step), both jitted with params as arguments."""

    def loss_fn(params, x, lengths, labels, weights):
        logits = model.apply({"params": params}, x, lengths=lengths)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return jnp.sum(losses * weights) / jnp.maximum(jnp.sum(weights), 1.0), logits

    @jax.jit
    def train_step(params, opt_state, x, lengths, labels, weights):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, lengths, labels, weights)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def eval_step(params, x, lengths, labels, weights):
        loss, logits = loss_fn(params, x, lengths, labels, weights)
        return loss, jnp.argmax(logits, -1)

    return train_step, eval_step


def evaluate(eval_step, params, data: Dataset, batch_size: int) -> dict:
    """Loss, accuracy and macro-F1 over the whole dataset (padding rows excluded)."""
    total, preds = 0.0, []
    for x, lengths, labels, count in batches(data, batch_size):
        w = (np.arange(len(labels)) < count).astype(np.float32)
        loss, p = eval_step(params, x, lengths, labels, w)
        total += float(loss) * count
        preds.append(np.asarray(p)[:count])
    pred = np.concatenate(preds)
    y = data.labels
    f1s = []
    for c in range(len(data.label_names)):
        tp = np.sum((pred == c) & (y == c))
        denom = np.sum(pred == c) + np.sum(y == c)
        if np.sum(y == c) or np.sum(pred == c):
            f1s.append(2 * tp / denom)
    return {"loss": total / len(data), "accuracy": float(np.mean(pred == y)), "macro_f1": float(np.mean(f1s))}


def fit(model_cfg: ClassifierConfig, cfg: TrainConfig, train: Dataset, valid: Dataset, log=print):
    """Train from scratch; returns (params, history)."""
    model = SequenceClassifier(model_cfg)
    steps_per_epoch = -(-len(train) // cfg.batch_size)
    tx = make_optimizer(cfg, steps_per_epoch * cfg.epochs)
    params = model.init(jax.random.key(cfg.seed), train.inputs[:1], lengths=train.lengths[:1])["params"]
    opt_state = tx.init(params)
    train_step, eval_step = make_steps(model, tx)
    rng = np.random.default_rng(cfg.seed)
    history = []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        for x, lengths, labels, count in batches(train, cfg.batch_size, rng):
            w = (np.arange(len(labels)) < count).astype(np.float32)
            params, opt_state, loss = train_step(params, opt_state, x, lengths, labels, w)
            if not np.isfinite(float(loss)):
                raise ValueError(f"loss became {float(loss)} at epoch {epoch}: lower the learning rate")
        metrics = evaluate(eval_step, params, valid, cfg.batch_size)
        metrics.update(epoch=epoch, train_loss=float(loss), seconds=time.perf_counter() - t0)
        history.append(metrics)
        log(f"epoch {epoch}: train loss {metrics['train_loss']:.4f}  valid loss {metrics['loss']:.4f}  "
            f"acc {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  ({metrics['seconds']:.1f}s)")
    return params, history
