"""`s2l evaluate DIR --data FILE [--json OUT]`: loss, accuracy, macro-F1 and each class's precision, recall, F1
and support of a trained run. A class in neither the file's labels nor the predictions has no scores: "-" in the
table, null in the JSON, and it is left out of the macro-F1. The loss is the one the run was validated with:
weighted by its class weights, if it was trained with `--class-weights` (torch's `CrossEntropyLoss(weight=w)`:
sum of w_y * nll / sum of w_y), as the output and the JSON's `loss_class_weights` say."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from s2l_jax.predictor import inference_layout
from s2l_jax.run_dir import eval_step_for, load_run, read_labelled
from s2l_jax.sharding import CPU_DEVICES_HELP
from s2l_jax.train import classification_metrics, per_class_metrics, predict
from s2l_jax.weights import atomic_write

MAX_TABLE_CLASSES = 30  # more would flood the terminal; --json holds them all


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a trained run; a run trained with --class-weights reports its loss weighted by "
                   "them, as its validation loss was")
    p.add_argument("--data", required=True, help="labelled file of the kind the run was trained on")
    p.add_argument("--text-col", help="default: the column training used")
    p.add_argument("--label-col", help="default: the column training used")
    p.add_argument("--json", dest="json_out")
    p.add_argument("--cpu-devices", type=int, default=1, metavar="N", help=CPU_DEVICES_HELP)
    p.add_argument("--batch-size", type=int, help="rows per batch (default: up to 256, fewer for long sequences)")


def _score(value: float | None, width: int) -> str:
    """A table cell: the score, or "-" for a class absent from the labels and the predictions (undefined)."""
    return f"{'-':>{width}}" if value is None else f"{value:{width}.4f}"


def run(args: argparse.Namespace) -> int:
    if args.json_out and Path(args.json_out).is_dir():
        raise ValueError(f"--json {args.json_out} is a directory; give a file name")
    model, params, meta = load_run(args.run_dir)
    meta |= {k: v for k, v in (("text_col", args.text_col), ("label_col", args.label_col)) if v}
    data = read_labelled(args.data, meta, warn=lambda m: print(f"s2l evaluate: warning: {m}", file=sys.stderr))
    weights = (meta.get("train_config") or {}).get("class_weights")  # as training's validation loss
    loss, pred = predict(eval_step_for(model, meta), params, data, args.batch_size,
                         layout=inference_layout(model, params), class_weights=weights)
    names = data.label_names
    m = {"loss": loss, "loss_class_weights": dict(zip(names, weights, strict=True)) if weights else None,
         **classification_metrics(pred, data.labels, len(names)),
         "per_class": per_class_metrics(pred, data.labels, names)}
    weighted = (" (weighted by the run's class weights: " + ", ".join(f"{n} {w:.4g}" for n, w in
                                                                      m["loss_class_weights"].items()) + ")"
                if weights else "")
    print(f"loss {m['loss']:.4f}{weighted}  accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}")
    if len(names) <= MAX_TABLE_CLASSES:
        width = max(5, *(len(n) for n in names))
        print(f"{'class':<{width}}  precision  recall      F1  support")
        for name, c in m["per_class"].items():
            p, r, f1 = (_score(c[k], w) for k, w in (("precision", 9), ("recall", 6), ("f1", 6)))
            print(f"{name:<{width}}  {p}  {r}  {f1}  {c['support']:7d}")
    else:
        print(f"({len(names)} classes: per-class metrics in --json)")
    if args.json_out:
        atomic_write(args.json_out, lambda tmp: open(tmp, "w").write(json.dumps(m)))
    return 0
