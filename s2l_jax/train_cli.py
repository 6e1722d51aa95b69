"""`s2l train`: flags -> ClassifierConfig (preset) + TrainConfig; default data is scikit-learn's digits."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from s2l_jax.data import build_vocab, encode_texts, load_default, read_table, split
from s2l_jax.model import PRESETS
from s2l_jax.train import TrainConfig, fit
from s2l_jax.weights import atomic_write, save_weights


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="CSV/TSV (header) or JSONL training file; default: scikit-learn digits")
    p.add_argument("--valid", help="validation file (default: 20%% of --data)")
    p.add_argument("--text-col", default="text")
    p.add_argument("--label-col", default="label")
    p.add_argument("--preset", choices=sorted(PRESETS), default="mean")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.learning_rate)
    p.add_argument("--out", default="runs/train")


def run(args: argparse.Namespace) -> int:
    if args.data is None:
        train, valid = split(load_default())
        model_cfg = PRESETS[args.preset].replace(vocab_size=None, input_size=8, hidden_size=64,
                                                 num_classes=10)
        vocab = None
    else:
        texts, labels = read_table(args.data, args.text_col, args.label_col)
        names = tuple(sorted(set(labels)))
        if args.valid:
            vtexts, vlabels = read_table(args.valid, args.text_col, args.label_col)
        vocab = build_vocab(texts)
        data = encode_texts(texts, labels, vocab, names)
        train, valid = (data, encode_texts(vtexts, vlabels, vocab, names)) if args.valid else split(data)
        model_cfg = PRESETS[args.preset].replace(vocab_size=len(vocab), num_classes=len(names), padding_idx=0)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr)
    t0 = time.perf_counter()
    params, history = fit(model_cfg, cfg, train, valid)
    out = Path(args.out)
    save_weights(out / "model.safetensors", params, model_cfg)
    meta = {"labels": list(train.label_names), "vocab": vocab, "history": history}
    atomic_write(out / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta)))
    print(f"done in {time.perf_counter() - t0:.1f}s: valid accuracy {history[-1]['accuracy']:.4f}; saved {out}")
    return 0
