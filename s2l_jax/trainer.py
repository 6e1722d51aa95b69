"""The training loop: epochs of length-bucketed batches, validation, best-model tracking, early stopping,
resumable checkpoints, a NaN guard, a JSONL log and a plot.

A run directory holds `model.safetensors` (the best model so far by validation loss, torch-named, with its
config), `meta.json` (labels, vocabulary, history), `checkpoints/step_*` (resumable state), `metrics.jsonl`
and `curves.png`. Everything a resumed run needs is a function of the checkpoint: batch order of (seed, epoch),
dropout keys of (seed, step), so resuming ends with parameters identical to an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from s2l_jax.checkpoint import latest_checkpoint, load_checkpoint, read_state, save_checkpoint
from s2l_jax.curves import MetricsLog, Progress, plot_curves
from s2l_jax.data import Dataset, epoch_plan, gather
from s2l_jax.model import ClassifierConfig, SequenceClassifier, example_inputs
from s2l_jax.params import check_shapes, check_weights, expected_shapes, flatten, shape_of, unflatten
from s2l_jax.predictor import inference_layout
from s2l_jax.recurrent import ScanOptions
from s2l_jax.sharding import default_mesh, replicate, shard_batch
from s2l_jax.train import TrainConfig, evaluate, make_optimizer, make_schedule, make_steps
from s2l_jax.weights import atomic_write, load_weights, save_weights


def _new_run() -> dict:
    """A run's progress, as its checkpoints hold it."""
    return {"epoch": 1, "batch": 0, "loss_sum": 0.0, "loss_count": 0, "history": [], "best_loss": None,
            "best_epoch": 0, "bad_epochs": 0, "finished": False}


RUN_KEYS = tuple(_new_run())


class TrainingDiverged(ValueError):
    """The loss, a gradient, the updated params or the validation loss became NaN/Inf; the message names the step
    and the batch's rows."""


@dataclass
class FitResult:
    params: Any  # after the last step
    best_params: Any  # lowest validation loss
    history: list[dict]  # one record per epoch
    best_epoch: int
    stopped_early: bool


def _mismatch(stored: dict, given: dict) -> list[str]:
    given = json.loads(json.dumps(given))  # as stored: tuples are lists
    return [f"{k}={stored.get(k)!r} (flags/config say {given[k]!r})" for k in given if stored.get(k) != given[k]]


def data_fingerprint(data: Dataset) -> dict:
    """Rows and a SHA-256 of a dataset's arrays and label names: a run resumes only on the data it was trained on."""
    h = hashlib.sha256(json.dumps(list(data.label_names)).encode())
    for a in (data.inputs, data.lengths, data.labels):
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a))
    return {"rows": len(data), "sha256": h.hexdigest()}


def _data_mismatch(stored: dict | None, given: dict) -> list[str]:
    problems = []
    for key, what in (("train", "training"), ("valid", "validation")):
        old, new = (stored or {}).get(key), given[key]
        if old is not None and old != new:
            now = "" if old["rows"] != new["rows"] else " with other contents"
            problems.append(f"{what} data differs from the checkpoint's ({old['rows']} rows, now {new['rows']}{now})")
    return problems


def _start(out: Path | None, resume: bool, model_cfg: ClassifierConfig, cfg: TrainConfig, log,
           data: dict | None = None):
    """The checkpoint to resume from (or None), refusing to overwrite an existing run or to resume another one
    (another config, or other data than its `data_fingerprint`s)."""
    if out is None:
        return None
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; the run needs a directory (nothing was written)")
    ckpt = latest_checkpoint(out / "checkpoints")
    if not resume:
        if ckpt is not None or (out / "model.safetensors").exists():
            raise ValueError(f"{out} already holds a training run; pass --resume to continue it or choose another "
                             "--out (nothing was overwritten)")
        return None
    if ckpt is None:
        if (out / "model.safetensors").exists():
            raise ValueError(f"{out} holds a model but no checkpoint to resume from; choose another --out "
                             "(nothing was overwritten)")
        log(f"no checkpoint in {out}; starting from scratch")
        return None
    state = read_state(ckpt, ("step", "model_config", "train_config", "meta", *RUN_KEYS))
    problems = _mismatch(state["model_config"], model_cfg.to_dict()) + _mismatch(state["train_config"],
                                                                                 dataclasses.asdict(cfg))
    if problems:
        hint = ("; to train a run further with a new schedule, start another from its model (s2l train --init-from, "
                "fit(init_params=...))" if any(p.startswith("epochs=") for p in problems) else "")
        raise ValueError(f"checkpoint {ckpt} is from an incompatible config: " + "; ".join(problems) + hint)
    problems = _data_mismatch(state.get("data"), data) if data is not None else []
    if problems:
        raise ValueError(f"checkpoint {ckpt}: " + "; ".join(problems) + "; resume with the data it was trained on "
                         "or choose another --out")
    return ckpt


def initial_params(template, given, what: str = "init_params"):
    """`given` as the model's params: every key and shape as in `template` (named otherwise), finite floats of
    the template's dtype or narrower (float16/bfloat16 are upcast exactly; wider ones would be rounded)."""
    expected, flat = flatten(template), flatten(given)
    check_shapes({k: shape_of(v) for k, v in expected.items()}, flat, what)
    arrays = check_weights(flat, what)
    wide = [k for k, a in arrays.items() if a.dtype.itemsize > expected[k].dtype.itemsize]
    if wide:
        raise ValueError(f"{what}: " + ", ".join(f"{k!r} is {arrays[k].dtype}, the model {expected[k].dtype}"
                                                 for k in wide) + " (rounding would lose bits)")
    return unflatten({k: jax.numpy.asarray(arrays[k], expected[k].dtype) for k in expected})


def check_data(model_cfg: ClassifierConfig, data: Dataset, what: str) -> None:
    """Refuse data the model cannot read: wrong input kind or width, token ids outside the vocabulary, labels
    outside the classes (under jit these would train on NaN or clamped values instead of failing)."""
    x, n_classes = data.inputs, model_cfg.num_classes
    if model_cfg.vocab_size is None:
        if x.ndim != 3 or x.shape[-1] != model_cfg.input_size:
            raise ValueError(f"{what}: inputs of shape {x.shape}, but the model reads feature vectors "
                             f"(rows, time, {model_cfg.input_size})")
    else:
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"{what}: inputs of shape {x.shape} and dtype {x.dtype}, but the model reads token "
                             "ids (rows, time) of an integer dtype")
        bad = np.argwhere((x < 0) | (x >= model_cfg.vocab_size))
        if len(bad):
            r, t = bad[0]
            raise ValueError(f"{what}: token id {x[r, t]} at row {r}, step {t} is outside the vocabulary "
                             f"[0, {model_cfg.vocab_size}) ({len(bad)} such ids)")
    y = data.labels
    if data.multi_label and y.shape[1] != n_classes:
        raise ValueError(f"{what}: {y.shape[1]} label columns, but the model has num_classes={n_classes}")
    if not data.multi_label and (y.min() < 0 or y.max() >= n_classes):
        bad = y[(y < 0) | (y >= n_classes)]
        raise ValueError(f"{what}: class ids {sorted(set(bad.tolist()))[:8]} are outside [0, {n_classes}) "
                         f"(num_classes={n_classes})")


def fit(model_cfg: ClassifierConfig, cfg: TrainConfig, train: Dataset, valid: Dataset, out: str | Path | None = None,
        resume: bool = False, meta: dict | None = None, log=print, progress: bool = False,
        mesh: jax.sharding.Mesh | None = None, options: ScanOptions | None = None,
        init_params: dict | None = None) -> FitResult:
    """Train `model_cfg` on `train`, validating on `valid` after each epoch. With `out`, checkpoint, log and save
    there; `resume` continues from its latest checkpoint. `meta` (labels, vocabulary, ...) is saved with the run.
    `mesh`: the data-parallel mesh (default: all devices when there are several). `options`: how the recurrence
    runs (e.g. `ScanOptions(remat=True)` for long sequences); the same function, so not part of the run.
    `init_params`: start from these params (fine-tuning, e.g. converted torch weights) instead of random ones;
    a resumed run continues from its checkpoint instead."""
    for data, what in ((train, "training data"), (valid, "validation data")):
        check_data(model_cfg, data, what)
    if valid.multi_label != train.multi_label:
        raise ValueError("training and validation data must both be multi-label or both single-label")
    if cfg.class_weights is not None and len(cfg.class_weights) != model_cfg.num_classes:
        raise ValueError(f"class_weights has {len(cfg.class_weights)} weights for {model_cfg.num_classes} classes")
    out = Path(out) if out is not None else None
    fingerprints = {"train": data_fingerprint(train), "valid": data_fingerprint(valid)} if out else None
    ckpt = _start(out, resume, model_cfg, cfg, log, fingerprints)
    mesh = default_mesh(mesh, cfg.batch_size)
    if mesh is not None and mesh.size > 1:
        log(f"data parallel: each batch of {cfg.batch_size} split over {mesh.shape['data']} "
            f"{mesh.devices.flat[0].platform} devices")
    model = SequenceClassifier(model_cfg, options=options or ScanOptions())
    parts = sorted({k.split(".")[0] for k in expected_shapes(model, example_inputs(model_cfg))})
    if set(cfg.freeze) - set(parts):
        raise ValueError(f"freeze names {sorted(set(cfg.freeze) - set(parts))}: this model's parts are {parts}")
    steps_per_epoch = -(-len(train) // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    tx = make_optimizer(cfg, total_steps)
    schedule = make_schedule(cfg, total_steps)
    # Jitted: an eager init runs its scans op by op, and JAX keeps each such scan's executable (and its memory
    # mappings) for the life of the process, so many fits in one process crashed at vm.max_map_count.
    params = jax.jit(model.init)(jax.random.key(cfg.seed), train.inputs[:1], lengths=train.lengths[:1])["params"]
    if init_params is not None:
        params = initial_params(params, init_params)
    opt_state = tx.init(params)
    train_step, eval_step = make_steps(model, tx, cfg.precision, cfg.seed, train.multi_label, mesh,
                                       cfg.class_weights)
    run = _new_run()
    best_params, step, devices = params, 0, mesh.size if mesh is not None else 1
    if ckpt is not None:
        params, opt_state, state = load_checkpoint(ckpt, params, opt_state)
        run, step = {k: state[k] for k in run}, state["step"]
        if (out / "model.safetensors").exists():
            best_params = jax.tree.map(jax.numpy.asarray, load_weights(out / "model.safetensors")[0])
        elif run["best_loss"] is not None:  # else the initial params would pass for the best model
            log(f"{out / 'model.safetensors'} (the best model of epochs before {run['epoch']}) is missing: the "
                "best of the epochs still to run is kept instead")
            run.update(best_loss=None, bad_epochs=0)
        if state.get("devices", devices) != devices:
            log(f"the checkpoint was written on {state['devices']} device(s), this run has {devices}: it continues, "
                "but not bit-identical to an uninterrupted run (gradient sums and dropout masks follow the split)")
        log(f"resumed from {ckpt} (epoch {run['epoch']}, batch {run['batch']})")
    writes = out is not None and jax.process_index() == 0  # multi-host: one process writes the shared run
    metrics_log = MetricsLog(out / "metrics.jsonl", step if ckpt is not None else None) if writes else None
    if mesh is not None:
        params, opt_state = replicate(params, mesh), replicate(opt_state, mesh)
    meta = dict(meta or {})

    def checkpoint() -> None:
        if writes:
            state = {**run, "model_config": model_cfg.to_dict(), "train_config": dataclasses.asdict(cfg),
                     "rng": {"seed": cfg.seed, "data_order": "default_rng([seed, epoch])",
                             "dropout": "fold_in(key(seed), step)"}, "meta": meta, "data": fingerprints,
                     "devices": devices}
            save_checkpoint(out / "checkpoints", step, params, opt_state, state, cfg.keep_checkpoints)

    def finish_step(epoch: int, plan: list, b: int, count: int, outputs) -> None:
        """Read back a dispatched step: stop on a non-finite loss or gradient, else take its params and log."""
        nonlocal params, opt_state, step
        new_params, new_opt_state, loss, finite = outputs
        loss = float(loss)
        if not bool(finite):
            bar.end()
            last = latest_checkpoint(out / "checkpoints") if out else None
            rows = plan[b][:count].tolist()
            raise TrainingDiverged(
                f"loss {loss}, a gradient or the updated params are not finite at step {step + 1} (epoch {epoch}, "
                f"batch {b + 1}/{len(plan)}, dataset rows {rows[:8]}{' ...' if len(rows) > 8 else ''}); stopped, "
                f"params before this step kept; last good checkpoint: {last or 'none'}. Check those rows or lower "
                "the learning rate")
        params, opt_state, step = new_params, new_opt_state, step + 1
        run["batch"], run["loss_sum"], run["loss_count"] = b + 1, run["loss_sum"] + loss, run["loss_count"] + 1
        bar.update(epoch, b + 1, loss)
        if metrics_log and step % cfg.log_every == 0:
            metrics_log.write({"kind": "step", "step": step, "epoch": epoch, "loss": loss,
                               "lr": float(schedule(step))})
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and b + 1 < len(plan):
            checkpoint()

    bar = Progress(cfg.epochs, steps_per_epoch, progress)
    while run["epoch"] <= cfg.epochs and not run["finished"]:
        epoch, t0 = run["epoch"], time.perf_counter()
        plan = epoch_plan(train, cfg.batch_size, cfg.seed, epoch)
        pending = None  # (batch index, rows, outputs) of the step dispatched last, not yet read back
        for b in range(run["batch"], len(plan)):
            x, lengths, labels, count = gather(train, plan[b], cfg.batch_size)
            weights = (np.arange(cfg.batch_size) < count).astype(np.float32)
            batch = (x, lengths, labels, weights)
            if mesh is not None:
                batch = shard_batch(batch, mesh)
            # Dispatched on the previous step's outputs before that step is read back, so the host gathers the
            # next batch while the device computes; a non-finite step is caught one dispatch later, unapplied.
            head = (params, opt_state) if pending is None else pending[2][:2]
            outputs = train_step(*head, np.int32(step + (pending is not None)), *batch)
            if pending is not None:
                finish_step(epoch, plan, *pending)
            pending = (b, count, outputs)
        if pending is not None:
            finish_step(epoch, plan, *pending)
        bar.end()
        layout = inference_layout(model, params) if cfg.precision == "float32" else None
        metrics = evaluate(eval_step, params, valid, cfg.batch_size, mesh, layout, cfg.class_weights)
        record = {"kind": "epoch", "epoch": epoch, "step": step, "train_loss": run["loss_sum"] / run["loss_count"],
                  "valid_loss": metrics["loss"], "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                  "seconds": time.perf_counter() - t0}
        run["history"].append(record)
        if not np.isfinite(metrics["loss"]):
            bar.end()
            raise TrainingDiverged(f"validation loss {metrics['loss']} after epoch {epoch} (step {step}); stopped, "
                                   "the best model so far kept")
        improved = run["best_loss"] is None or metrics["loss"] < run["best_loss"]
        if improved:
            run["best_loss"], run["best_epoch"], run["bad_epochs"] = metrics["loss"], epoch, 0
            best_params = params
            if writes:
                save_weights(out / "model.safetensors", params, model_cfg)
        else:
            run["bad_epochs"] += 1
        log(f"epoch {epoch}: train loss {record['train_loss']:.4f}  valid loss {record['valid_loss']:.4f}  "
            f"acc {record['accuracy']:.4f}  macro-F1 {record['macro_f1']:.4f}  ({record['seconds']:.1f}s)"
            + ("  *" if improved else ""))
        stop = bool(cfg.patience) and run["bad_epochs"] >= cfg.patience and epoch < cfg.epochs
        if stop:
            log(f"early stop: no better validation loss for {cfg.patience} epochs (best: epoch {run['best_epoch']})")
        run.update(epoch=epoch + 1, batch=0, loss_sum=0.0, loss_count=0, finished=stop)
        if metrics_log:
            metrics_log.write(record)
        if writes:  # before the checkpoint: a run killed in between redoes this epoch and rewrites it
            info = {**meta, "history": run["history"], "best_epoch": run["best_epoch"],
                    "train_config": dataclasses.asdict(cfg)}
            atomic_write(out / "meta.json", lambda tmp, info=info: Path(tmp).write_text(json.dumps(info)))
        checkpoint()
    if metrics_log:
        plot_curves(metrics_log.records(), out / "curves.png")
    return FitResult(params, best_params, run["history"], run["best_epoch"],
                     stopped_early=run["finished"] and run["epoch"] <= cfg.epochs)
