"""A trained run directory: `model.safetensors` (weights + config) and `meta.json` (what the data looked like:
kind, labels, vocabulary, label separator, maximum length), and reading new data exactly as training did."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from s2l_jax.checkpoint import read_state
from s2l_jax.data import Dataset
from s2l_jax.text import data_format, encode_texts, read_table
from s2l_jax.train import make_steps
from s2l_jax.ts_format import read_ts, series_dataset
from s2l_jax.weights import load_classifier


def load_run(directory: str | Path):
    """(model, params, meta) of a trained run; a missing directory or file is a clear error."""
    d = Path(directory)
    if not (d / "meta.json").is_file() or not (d / "model.safetensors").is_file():
        raise FileNotFoundError(f"{d} is not a trained run (needs meta.json and model.safetensors)")
    model, variables = load_classifier(d / "model.safetensors")
    return model, variables["params"], _read_meta(d / "meta.json", model.config)


def _read_meta(path: Path, config) -> dict:
    """A run's meta.json, checked against its model: labels per output, vocabulary per embedding row, series width
    per input feature (a meta.json copied from another run mislabelled predictions or indexed past its labels)."""
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not readable JSON (truncated or corrupt?): {e}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("labels"), list):
        raise ValueError(f"{path} is not an s2l run's meta.json: it lacks a list of 'labels'")
    kind, vocab = meta.get("kind", "text"), meta.get("vocab")
    found = [f"{len(meta['labels'])} labels for the model's {config.num_classes} outputs"
             if len(meta["labels"]) != config.num_classes else "",
             f"{kind} data for a model of token ids" if kind != "text" and config.vocab_size is not None else "",
             "text data for a model of feature vectors" if kind == "text" and config.vocab_size is None else "",
             f"a vocabulary of {len(vocab)} words for the model's {config.vocab_size} embedding rows"
             if kind == "text" and isinstance(vocab, list) and config.vocab_size not in (None, len(vocab)) else "",
             f"series of {meta['input_size']} dimensions for a model of {config.input_size} features"
             if kind == "series" and config.input_size not in (None, meta.get("input_size")) else ""]
    if any(found):
        raise ValueError(f"{path} does not describe {path.parent / 'model.safetensors'}: "
                         f"{'; '.join(f for f in found if f)} (files of different runs?)")
    return meta


def read_meta_of_checkpoint(checkpoint: Path) -> dict:
    """The data description a checkpoint was trained with (its vocabulary and labels are reused on resume)."""
    return read_state(checkpoint, ("meta",))["meta"]


def eval_step_for(model, meta: dict):
    import optax

    return make_steps(model, optax.identity(), multi_label=meta.get("label_sep") is not None)[1]


def _check_kind(path, meta: dict) -> None:
    kind = meta.get("kind", "text")
    if kind == "digits":
        raise ValueError("this run was trained on the built-in digits dataset; it has no file format to read")
    if (data_format(path) == "ts") != (kind == "series"):
        want = "a .ts file" if kind == "series" else "a text file (CSV/TSV/JSONL)"
        raise ValueError(f"this run was trained on {kind} data; {path} is not {want}")


def _read_series(path, meta: dict):
    """`read_ts`, with series of another width than the run's named here (not later, as the model's input)."""
    series, labels, declared = read_ts(path)
    width = meta.get("input_size")
    if width is not None and series[0].shape[1] != width:
        raise ValueError(f"{path} holds series of {series[0].shape[1]} dimensions; this run was trained on {width}")
    return series, labels, declared


def read_labelled(path, meta: dict, on_long: str = "truncate", warn=warnings.warn) -> Dataset:
    """A labelled file encoded as the run's training data was; labels the run never saw are an error."""
    _check_kind(path, meta)
    names = tuple(meta["labels"])
    if meta.get("kind") == "series":
        series, labels, _ = _read_series(path, meta)
        if labels is None:
            raise ValueError(f"{path} has no class labels (@classLabel false)")
        return series_dataset(series, labels, names, meta["max_len"], on_long, str(path), warn)
    texts, labels = read_table(path, meta.get("text_col", "text"), meta.get("label_col", "label"))
    return encode_texts(texts, labels, meta["vocab"], names, meta.get("max_len", 256), on_long,
                        meta.get("label_sep"), str(path), warn)


def read_unlabelled(path: str | None, texts: list[str] | None, meta: dict, warn=warnings.warn) -> Dataset:
    """Inputs to predict: a file (a `.ts` file, or a text table's text column) or a list of texts."""
    names, sep = tuple(meta["labels"]), meta.get("label_sep")
    if path is not None:
        _check_kind(path, meta)
        if meta.get("kind") == "series":
            series, _, _ = _read_series(path, meta)
            return series_dataset(series, None, names, meta["max_len"], "truncate", str(path), warn)
        texts, _ = read_table(path, meta.get("text_col", "text"), None)
    elif meta.get("kind", "text") == "digits":
        raise ValueError("this run was trained on the built-in digits dataset; it reads no text or files")
    elif meta.get("kind", "text") != "text":
        raise ValueError(f"this run was trained on {meta['kind']} data; give --data FILE")
    if not texts:
        raise ValueError("no input texts")
    return encode_texts(texts, None, meta["vocab"], names, meta.get("max_len", 256), "truncate", sep, "the input",
                        warn)
