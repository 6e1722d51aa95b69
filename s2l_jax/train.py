"""Training math: the optimizer (AdamW, clipping, warmup + decay), jit-compiled train/eval steps, metrics.

Losses are masked by per-row weights (padding rows of the last batch weigh 0). Multi-class uses softmax
cross-entropy, multi-label sigmoid binary cross-entropy. With `precision="bfloat16"` the forward and backward
run in bfloat16 while params, gradients and optimizer state stay float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from s2l_jax.data import Dataset, batches, eval_batch_size, length_order
from s2l_jax.model import SequenceClassifier, plain_scalars
from s2l_jax.sharding import data_parallel_grad, default_mesh, replicate, shard_batch

SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("float32", "bfloat16")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. `patience` epochs without a better validation loss stop the run (0: never);
    `checkpoint_every` steps write a resumable checkpoint (0: at each epoch's end only)."""

    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    warmup_steps: int = 50
    schedule: str = "cosine"
    seed: int = 0
    precision: str = "float32"
    patience: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    class_weights: tuple[float, ...] | None = None  # single-label train and valid loss: CrossEntropyLoss(weight=)
    freeze: tuple[str, ...] = ()  # top-level params left as they are, as torch's requires_grad=False: ("embedding",)

    def __post_init__(self):
        plain_scalars(self)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of {SCHEDULES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {PRECISIONS}")
        for name in ("epochs", "batch_size", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("learning_rate", "clip_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "warmup_steps", "patience", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        object.__setattr__(self, "freeze", tuple(self.freeze))
        if self.class_weights is not None:
            object.__setattr__(self, "class_weights", tuple(float(w) for w in self.class_weights))
            if not self.class_weights or not all(np.isfinite(w) and w > 0 for w in self.class_weights):
                raise ValueError(f"class_weights must be finite and > 0, got {list(self.class_weights)}")


def make_schedule(cfg: TrainConfig, total_steps: int) -> optax.Schedule:
    warmup = min(cfg.warmup_steps, total_steps // 2)
    peak = cfg.learning_rate
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, 1))
    end = 0.0 if cfg.schedule == "linear" else peak
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup),
                                 optax.linear_schedule(peak, end, max(total_steps - warmup, 1))], [warmup])


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW on the schedule; params under `cfg.freeze` get no update and stay out of
    the clipping norm (torch: `requires_grad=False`, so `clip_grad_norm_` and the optimizer never see them)."""
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm),
                     optax.adamw(make_schedule(cfg, total_steps), weight_decay=cfg.weight_decay))
    if not cfg.freeze:
        return tx

    def labels(params):  # params' top-level parts: "embedding", "encoder", "attention", "fc"
        return {k: jax.tree.map(lambda _, k=k: "frozen" if k in cfg.freeze else "trained", part)
                for k, part in params.items()}

    return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)


def _compute_dtype(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def make_steps(model: SequenceClassifier, tx: optax.GradientTransformation, precision: str = "float32",
               seed: int = 0, multi_label: bool = False, mesh: jax.sharding.Mesh | None = None,
               class_weights: tuple[float, ...] | None = None):
    """(train_step, eval_step), jitted with params as arguments.

    train_step(params, opt_state, step, x, lengths, labels, weights) -> (params, opt_state, loss, finite), where
    `finite` says loss, every gradient and the new params are finite (the caller keeps the old params otherwise);
    dropout's key is `fold_in(key(seed), step)`, so it depends on the step alone and a resumed run draws the same
    masks.
    With a `mesh` of several devices the batch is split over it and the gradients are summed with one
    all-reduce (`sharding.data_parallel_grad`; dropout masks then also depend on the device).
    `class_weights` (single-label): the training loss weighs each row by its class's weight and divides by the
    batch's sum of those weights, as torch's `CrossEntropyLoss(weight=...)`.
    eval_step(params, x, lengths, labels, weights, layout=None) -> (loss, predictions, probabilities): the loss
    is `sum(weights * nll) / sum(weights)` over the given row weights (`predict` passes the class weights in
    them), class ids, or a bool (B, C) multi-hot, and each class's softmax (sigmoid when multi-label) `(B, C)`;
    `layout`: `s2l_jax.predictor.inference_layout(model, params)` for float32 params, the LSTM weights laid out
    once for many batches (same results, bit for bit).
    """
    if class_weights is not None and multi_label:
        raise ValueError("class_weights apply to single-label data (one class per row)")
    dtype = jnp.bfloat16 if precision == "bfloat16" else jnp.float32

    def loss_terms(params, rng, batch, layout=None):
        """(sum of the rows' weighted losses, sum of weights), and the logits."""
        x, lengths, labels, weights = batch
        if dtype != jnp.float32:
            params, x = _compute_dtype(params, dtype), _compute_dtype(x, dtype)
        kwargs = {"deterministic": False, "rngs": {"dropout": rng}} if rng is not None else {}
        variables = {"params": params, "layout": layout} if layout else {"params": params}
        logits = model.apply(variables, x, lengths=lengths, **kwargs).astype(jnp.float32)  # (B, C)
        if multi_label:
            losses = optax.sigmoid_binary_cross_entropy(logits, labels).mean(-1)
        else:
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return jnp.sum(losses * weights), jnp.sum(weights), logits

    def loss_fn(params, rng, batch, layout=None):
        loss_sum, count, logits = loss_terms(params, rng, batch, layout)
        # count is a sum of row weights: with class weights it may be below 1, and torch divides by it all the same
        return loss_sum / jnp.where(count > 0, count, 1.0), logits

    if mesh is not None and mesh.size > 1:
        grad_fn = data_parallel_grad(lambda p, rng, batch: loss_terms(p, rng, batch)[:2], mesh)
    else:
        def grad_fn(params, rng, batch):
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rng, batch)
            return loss, grads

    per_class = None if class_weights is None else jnp.asarray(class_weights, jnp.float32)  # (C,)

    @jax.jit
    def train_step(params, opt_state, step, x, lengths, labels, weights):
        rng = jax.random.fold_in(jax.random.key(seed), step)
        if per_class is not None:
            weights = weights * per_class[labels]  # labels were checked against the classes before training
        loss, grads = grad_fn(params, rng, (x, lengths, labels, weights))
        updates, opt_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        # A finite gradient can still overflow the update (a huge learning rate times weight decay).
        finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(new_params)
        return new_params, opt_state, loss, finite

    @jax.jit
    def eval_step(params, x, lengths, labels, weights, layout=None):
        loss, logits = loss_fn(params, None, (x, lengths, labels, weights), layout)
        if multi_label:
            return loss, logits > 0, jax.nn.sigmoid(logits)
        return loss, jnp.argmax(logits, -1), jax.nn.softmax(logits, -1)

    return train_step, eval_step


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _indicators(pred: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, true) as (N, C) booleans, for class ids or multi-hot rows alike."""
    if y.ndim == 2:
        return pred.astype(bool), y > 0.5
    classes = np.arange(num_classes)
    return pred[:, None] == classes, y[:, None] == classes


def classification_metrics(pred: np.ndarray, y: np.ndarray, num_classes: int) -> dict:
    """Accuracy (exact match for multi-label) and macro-F1 over the classes present in labels or predictions."""
    pred_c, true_c = _indicators(pred, y, num_classes)
    accuracy = float(np.mean(np.all(pred_c == true_c, axis=1)))
    tp = np.sum(pred_c & true_c, axis=0)
    denom = np.sum(pred_c, axis=0) + np.sum(true_c, axis=0)
    present = denom > 0
    f1 = float(np.mean(2 * tp[present] / denom[present])) if present.any() else 0.0
    return {"accuracy": accuracy, "macro_f1": f1}


def per_class_metrics(pred: np.ndarray, y: np.ndarray, label_names) -> dict[str, dict]:
    """Each class's precision, recall, F1 and support (true rows); 0 where one ratio has nothing to count, as
    scikit-learn's `precision_recall_fscore_support(..., zero_division=0)`. A class in neither the labels nor the
    predictions has nothing to measure: its precision, recall and F1 are None (left out of the macro-F1, as
    scikit-learn leaves such a class out of the labels it scores), not a 0 that reads as a failure."""
    pred_c, true_c = _indicators(pred, y, len(label_names))
    tp, predicted, true = (np.sum(a, axis=0) for a in (pred_c & true_c, pred_c, true_c))

    def ratio(a, b):
        return float(a / b) if b else 0.0

    def scores(c: int) -> dict:
        if predicted[c] + true[c] == 0:
            return {"precision": None, "recall": None, "f1": None}
        return {"precision": ratio(tp[c], predicted[c]), "recall": ratio(tp[c], true[c]),
                "f1": ratio(2 * tp[c], predicted[c] + true[c])}

    return {name: {**scores(c), "support": int(true[c])} for c, name in enumerate(label_names)}


# Batches dispatched beyond the one awaited: the device never waits for the host, while the number of programs in
# flight stays bounded (split over CPU devices, 32 to 1000 programs in flight deadlocked XLA's all-reduce rendezvous).
DISPATCH_AHEAD = 2


def predict(eval_step, params, data: Dataset, batch_size: int | None = None, mesh: jax.sharding.Mesh | None = None,
            layout: dict | None = None, probabilities: bool = False,
            class_weights: tuple[float, ...] | None = None) -> tuple:
    """(mean loss, predictions in the dataset's row order) over the whole dataset, padding rows excluded; with
    `probabilities` also each row's class probabilities `(N, C)`. Rows are batched by length; `batch_size` None
    picks `eval_batch_size`. Each batch is split over `mesh` (default: all devices when there are several).
    `layout`: see `make_steps`' eval_step. `class_weights` (single-label, labelled data): the loss is the
    training loss's, torch's `CrossEntropyLoss(weight=w)` over all rows: sum of w_y * nll / sum of w_y."""
    if class_weights is not None:
        if data.multi_label or len(class_weights) != len(data.label_names):
            raise ValueError(f"class_weights: {len(class_weights)} weights for "
                             f"{'multi-label data' if data.multi_label else f'{len(data.label_names)} classes'}; "
                             "they weigh single-label data, one per class")
        per_class = np.asarray(class_weights, np.float32)  # (C,)
    if batch_size is None:
        batch_size = eval_batch_size(data, mesh.size if mesh is not None else jax.device_count())
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    mesh = default_mesh(mesh, batch_size)
    if mesh is not None:
        params, layout = replicate((params, layout), mesh)
    order = length_order(data)  # rows of similar length batched together: less padding
    results = []
    weight_sums = []  # each batch's sum of row weights: its loss is a mean over them
    for x, lengths, labels, count in batches(data, batch_size, order):
        w = (np.arange(len(labels)) < count).astype(np.float32)
        if class_weights is not None:
            w *= per_class[labels]
        weight_sums.append(float(np.sum(w, dtype=np.float64)))
        batch = (x, lengths, labels, w) if mesh is None else shard_batch((x, lengths, labels, w), mesh)
        results.append((*eval_step(params, *batch, layout), count))
        if len(results) > DISPATCH_AHEAD:
            jax.block_until_ready(results[-DISPATCH_AHEAD - 1][:3])
    total = sum(float(r[0]) * s for r, s in zip(results, weight_sums, strict=True)) / sum(weight_sums)

    def in_row_order(i: int) -> np.ndarray:
        by_length = np.concatenate([np.asarray(r[i])[: r[-1]] for r in results])
        rows = np.empty_like(by_length)
        rows[order] = by_length
        return rows

    if probabilities:
        return total, in_row_order(1), in_row_order(2)
    return total, in_row_order(1)


def evaluate(eval_step, params, data: Dataset, batch_size: int | None = None, mesh: jax.sharding.Mesh | None = None,
             layout: dict | None = None, class_weights: tuple[float, ...] | None = None) -> dict:
    """Loss (weighted by `class_weights` as in `predict`), accuracy and macro-F1 over the whole dataset (batches
    split over `mesh`, as in `predict`)."""
    loss, pred = predict(eval_step, params, data, batch_size, mesh, layout, class_weights=class_weights)
    return {"loss": loss, **classification_metrics(pred, data.labels, len(data.label_names))}
