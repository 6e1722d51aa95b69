"""A training output directory: model.safetensors + meta.json (labels, vocabulary, history)."""

from __future__ import annotations

import json
from pathlib import Path

from s2l_jax.data import encode_texts, read_table
from s2l_jax.train import make_steps
from s2l_jax.weights import load_classifier


def load_run(directory: str | Path):
    """(model, params, meta) of a trained run; a missing directory or file is a clear error."""
    d = Path(directory)
    if not (d / "meta.json").is_file():
        raise FileNotFoundError(f"{d} is not a trained run (no meta.json)")
    model, variables = load_classifier(d / "model.safetensors")
    return model, variables["params"], json.loads((d / "meta.json").read_text())


def eval_step_for(model):
    import optax

    return make_steps(model, optax.identity())[1]


def load_texts(path, meta: dict, text_col: str = "text", label_col: str = "label"):
    """A labelled text file encoded with the run's vocabulary; labels the run never saw are an error."""
    if meta["vocab"] is None:
        raise ValueError("this run was trained on numeric sequences; --data must be a text run's file")
    texts, labels = read_table(path, text_col, label_col)
    return encode_texts(texts, labels, meta["vocab"], tuple(meta["labels"]))


def encode_unlabelled(texts: list[str], meta: dict):
    """Texts encoded with the run's vocabulary, with placeholder labels (for prediction)."""
    if meta["vocab"] is None:
        raise ValueError("this run was trained on numeric sequences; predict reads text")
    if not texts:
        raise ValueError("no input texts")
    return encode_texts(texts, [meta["labels"][0]] * len(texts), meta["vocab"], tuple(meta["labels"]))
