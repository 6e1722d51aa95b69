"""s2l_jax and the flax.linen baseline (nn.RNN + OptimizedLSTMCell or GRUCell + the same heads) as timed step
functions."""

from __future__ import annotations

import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from benchmarks.cases import CLASSES, VOCAB, Case, batch_arrays
from s2l_jax import PRESETS, ScanOptions, SequenceClassifier
from s2l_jax.predictor import inference_layout
from s2l_jax.sharding import data_mesh, data_parallel_grad, replicate, shard_batch, use_cpu_devices


class FlaxLinenClassifier(nn.Module):
    """The seed's three models in idiomatic flax.linen: Embed -> nn.RNN(OptimizedLSTMCell or GRUCell) -> head ->
    Dense."""

    pooling: str
    embed: int
    hidden: int
    cell: str = "lstm"

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = nn.Embed(VOCAB, self.embed)(tokens)  # (batch, time, embed)
        make_cell = nn.OptimizedLSTMCell if self.cell == "lstm" else nn.GRUCell
        if self.pooling == "last":
            carry, _ = nn.RNN(make_cell(self.hidden), return_carry=True)(x)
            pooled = carry[1] if self.cell == "lstm" else carry  # LSTM carry: (c, h)
        else:
            out = nn.Bidirectional(nn.RNN(make_cell(self.hidden)), nn.RNN(make_cell(self.hidden)))(x)  # (B, T, 2H)
            if self.pooling == "mean":
                pooled = jnp.mean(out, axis=1)
            else:
                scores = nn.Dense(1, use_bias=False)(jnp.tanh(nn.Dense(out.shape[-1])(out)))  # (batch, time, 1)
                pooled = jnp.sum(out * jax.nn.softmax(scores, axis=1), axis=1)
        return nn.Dense(CLASSES)(pooled)


def make_model(framework: str, case: Case, options: dict) -> nn.Module:
    d = case.dims
    if framework in ("flax_linen", "flax_linen_dp"):
        return FlaxLinenClassifier(case.model, d["embed"], d["hidden"], case.cell)
    if framework == "s2l_jax_cudnn":  # GPU only: the cuDNN LSTM kernel behind the same params
        options = {**options, "cudnn": True}
    config = PRESETS[case.model].replace(vocab_size=VOCAB, embedding_dim=d["embed"], hidden_size=d["hidden"],
                                         num_classes=CLASSES, cell=case.cell)
    return SequenceClassifier(config, options=ScanOptions(**options))


def step_functions(model: nn.Module, case: Case, tokens, labels, mesh: jax.sharding.Mesh | None = None):
    """(jitted function, its arguments) for the case's mode. s2l_jax infers as `s2l_jax.Predictor` does: the LSTM
    weights laid out once, outside the timed call (`model.apply` on params alone re-lays them on every call)."""
    params = jax.jit(model.init)(jax.random.key(0), tokens)["params"]  # eager init keeps executables alive
    if case.mode == "infer":
        variables = {"params": params}
        if isinstance(model, SequenceClassifier) and (layout := inference_layout(model, params)):
            variables["layout"] = layout
        return jax.jit(model.apply), [variables, tokens]
    tx = optax.adam(1e-3)

    def loss_terms(p, rng, batch):  # (sum of the rows' losses, rows)
        losses = optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, batch[0]), batch[1])
        return losses.sum(), jnp.float32(losses.shape[0])

    if mesh is not None and isinstance(model, SequenceClassifier):  # split: s2l_jax's one-all-reduce gradient
        split_grad = data_parallel_grad(loss_terms, mesh)

        def grad_fn(p, t, y):
            return split_grad(p, None, (t, y))
    else:
        def grad_fn(p, t, y):
            return jax.value_and_grad(lambda p: loss_terms(p, None, (t, y))[0] / t.shape[0])(p)

    def train_step(p, opt_state, t, y):
        loss, grads = grad_fn(p, t, y)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    return jax.jit(train_step, donate_argnums=(0, 1)), [params, tx.init(params), tokens, labels]


def build(framework: str, case: Case, *, device: str = "cpu", options: dict | None = None,
          threads: int = 2) -> tuple[Callable[[], None], dict]:
    """A no-argument step to time (blocks until done) and facts: compile time, temp memory of the program."""
    backend = "gpu" if device == "gpu" else "cpu"
    split = framework.endswith("_dp")  # one CPU device per core, the batch split over them (`--cpu-devices 0`)
    if split:
        use_cpu_devices(threads)
    dev = jax.devices(backend)[0]
    tokens, labels = (jax.device_put(a, dev) for a in batch_arrays(case))
    model = make_model(framework, case, options or {})
    mesh = data_mesh() if split else None
    fn, args = step_functions(model, case, tokens, labels, mesh)
    if split:
        state_args = 1 if case.mode == "infer" else 2  # params (and optimizer state) replicated, batch split
        args = [*replicate(args[:state_args], mesh), *shard_batch(tuple(args[state_args:]), mesh)]
    else:
        args = jax.device_put(args, dev)
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    memory = compiled.memory_analysis()
    temp_mb = None if memory is None else memory.temp_size_in_bytes / 2**20
    state = {"args": args}

    def step() -> None:
        if case.mode == "infer":
            compiled(*state["args"]).block_until_ready()
            return
        p, o, t, y = state["args"]
        p, o, loss = compiled(p, o, t, y)
        loss.block_until_ready()
        state["args"] = [p, o, t, y]

    info = {"compile_s": compile_s, "temp_mb": temp_mb, "jax_backend": dev.platform, "options": options or {}}
    return step, info
