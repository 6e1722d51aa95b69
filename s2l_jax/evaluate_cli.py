"""`s2l evaluate DIR --data FILE [--json OUT]`: loss, accuracy and macro-F1 of a trained run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from s2l_jax.predictor import inference_layout
from s2l_jax.run_dir import eval_step_for, load_run, read_labelled
from s2l_jax.sharding import CPU_DEVICES_HELP
from s2l_jax.train import evaluate
from s2l_jax.weights import atomic_write


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--data", required=True, help="labelled file of the kind the run was trained on")
    p.add_argument("--text-col", help="default: the column training used")
    p.add_argument("--label-col", help="default: the column training used")
    p.add_argument("--json", dest="json_out")
    p.add_argument("--cpu-devices", type=int, default=1, metavar="N", help=CPU_DEVICES_HELP)
    p.add_argument("--batch-size", type=int, help="rows per batch (default: up to 256, fewer for long sequences)")


def run(args: argparse.Namespace) -> int:
    if args.json_out and Path(args.json_out).is_dir():
        raise ValueError(f"--json {args.json_out} is a directory; give a file name")
    model, params, meta = load_run(args.run_dir)
    meta |= {k: v for k, v in (("text_col", args.text_col), ("label_col", args.label_col)) if v}
    data = read_labelled(args.data, meta, warn=lambda m: print(f"s2l evaluate: warning: {m}", file=sys.stderr))
    m = evaluate(eval_step_for(model, meta), params, data, args.batch_size, layout=inference_layout(model, params))
    print(f"loss {m['loss']:.4f}  accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}")
    if args.json_out:
        atomic_write(args.json_out, lambda tmp: open(tmp, "w").write(json.dumps(m)))
    return 0
