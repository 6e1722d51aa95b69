"""`s2l evaluate DIR --data FILE [--json OUT]`: loss, accuracy and macro-F1 of a trained run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from s2l_jax.run_dir import eval_step_for, load_run, load_texts
from s2l_jax.train import evaluate


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--data", required=True)
    p.add_argument("--text-col", default="text")
    p.add_argument("--label-col", default="label")
    p.add_argument("--json", dest="json_out")
    p.add_argument("--batch-size", type=int, default=64)


def run(args: argparse.Namespace) -> int:
    model, params, meta = load_run(args.run_dir)
    data = load_texts(args.data, meta, args.text_col, args.label_col)
    m = evaluate(eval_step_for(model), params, data, args.batch_size)
    print(f"loss {m['loss']:.4f}  accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(m))
    return 0
