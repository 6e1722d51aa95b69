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


def step_functions(model: nn.Module, case: Case, tokens, labels):
    """(jitted function, its arguments) for the case's mode. s2l_jax infers as `s2l_jax.Predictor` does: the LSTM
    weights laid out once, outside the timed call (`model.apply` on params alone re-lays them on every call)."""
    params = jax.jit(model.init)(jax.random.key(0), tokens)["params"]  # eager init keeps executables alive
    if case.mode == "infer":
        variables = {"params": params}
        if isinstance(model, SequenceClassifier) and (layout := inference_layout(model, params)):
            variables["layout"] = layout
        return jax.jit(model.apply), [variables, tokens]
    tx = optax.adam(1e-3)

    def loss_fn(p, t, y):
        logits = model.apply({"params": p}, t)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def train_step(p, opt_state, t, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, t, y)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    return jax.jit(train_step, donate_argnums=(0, 1)), [params, tx.init(params), tokens, labels]


def build(framework: str, case: Case, *, device: str = "cpu", options: dict | None = None,
          threads: int = 2) -> tuple[Callable[[], None], dict]:
    """A no-argument step to time (blocks until done) and facts: compile time, temp memory of the program."""
    backend = "gpu" if device == "gpu" else "cpu"
    split = framework.endswith("_dp")  # one CPU device per core, the batch split over them (`--cpu-devices 0`)
    if split:
        from s2l_jax.sharding import use_cpu_devices

        use_cpu_devices(threads)
    dev = jax.devices(backend)[0]
    tokens, labels = (jax.device_put(a, dev) for a in batch_arrays(case))
    model = make_model(framework, case, options or {})
    fn, args = step_functions(model, case, tokens, labels)
    if split:
        from s2l_jax.sharding import data_mesh, replicate, shard_batch

        mesh = data_mesh()
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
