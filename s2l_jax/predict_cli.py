"""`s2l predict DIR [--data FILE]`: one predicted label per input (a file's text column, or stdin lines)."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from s2l_jax.data import batches, read_table
from s2l_jax.run_dir import encode_unlabelled, eval_step_for, load_run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--data", help="CSV/TSV/JSONL with a text column (default: one text per stdin line)")
    p.add_argument("--text-col", default="text")
    p.add_argument("--batch-size", type=int, default=64)


def run(args: argparse.Namespace) -> int:
    model, params, meta = load_run(args.run_dir)
    if args.data:
        texts, _ = read_table(args.data, args.text_col, args.text_col)
    else:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    data = encode_unlabelled(texts, meta)
    step = eval_step_for(model)
    for x, lengths, labels, count in batches(data, args.batch_size):
        _, pred = step(params, x, lengths, labels, np.ones(len(labels), np.float32))
        for p in np.asarray(pred)[:count]:
            print(meta["labels"][int(p)])
    return 0
