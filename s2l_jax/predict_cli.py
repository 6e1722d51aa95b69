"""`s2l predict DIR [--data FILE]`: one predicted label per input (a file, or one text per stdin line);
multi-label runs print the predicted labels joined by the run's separator; `--jsonl` adds every class's
probability."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from s2l_jax.predictor import inference_layout
from s2l_jax.run_dir import eval_step_for, load_run, read_unlabelled
from s2l_jax.sharding import CPU_DEVICES_HELP
from s2l_jax.train import predict


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--data", help="CSV/TSV/JSONL with a text column, or a .ts file (default: stdin lines)")
    p.add_argument("--text-col", help="default: the column training used")
    p.add_argument("--cpu-devices", type=int, default=1, metavar="N", help=CPU_DEVICES_HELP)
    p.add_argument("--batch-size", type=int, help="rows per batch (default: up to 256, fewer for long sequences)")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per input instead: the predicted label "
                   "(multi-label: labels) and every class's probability (softmax; multi-label: sigmoid)")


def stdin_lines() -> list[str]:
    """One text per line of stdin, blank lines included (one output line per input line), read as UTF-8."""
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"stdin:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    lines = text.removeprefix("\ufeff").split("\n")
    return [line.removesuffix("\r") for line in (lines[:-1] if lines[-1] == "" else lines)]


def run(args: argparse.Namespace) -> int:
    model, params, meta = load_run(args.run_dir)
    if args.text_col:
        meta["text_col"] = args.text_col
    texts = None if args.data else stdin_lines()
    data = read_unlabelled(args.data, texts, meta, warn=lambda m: print(f"s2l predict: warning: {m}",
                                                                        file=sys.stderr))
    _, pred, probs = predict(eval_step_for(model, meta), params, data, args.batch_size,
                             layout=inference_layout(model, params), probabilities=True)
    names, sep = meta["labels"], meta.get("label_sep")
    for p, q in zip(pred, probs, strict=True):
        chosen = [names[i] for i in np.flatnonzero(p)] if sep is not None else names[int(p)]
        if args.jsonl:  # float32's 7 significant digits
            row = {"labels" if sep is not None else "label": chosen,
                   "probabilities": {n: float(f"{v:.7g}") for n, v in zip(names, q, strict=True)}}
            print(json.dumps(row, ensure_ascii=False))
        else:
            print(sep.join(chosen) if sep is not None else chosen)
    return 0
