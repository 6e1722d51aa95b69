"""`s2l train`: flags -> ClassifierConfig (a preset) + TrainConfig; data from a text table, a `.ts` file, or
scikit-learn's digits by default."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

from s2l_jax.checkpoint import latest_checkpoint, read_state
from s2l_jax.embeddings import read_vectors
from s2l_jax.model import PRESETS, ClassifierConfig, SequenceClassifier
from s2l_jax.pooling import POOLINGS
from s2l_jax.recurrent import CELLS, ScanOptions
from s2l_jax.run_dir import load_run, read_labelled
from s2l_jax.sharding import CPU_DEVICES_HELP
from s2l_jax.text import build_vocab, data_format, read_table
from s2l_jax.train import PRECISIONS, SCHEDULES, TrainConfig
from s2l_jax.trainer import fit
from s2l_jax.ts_format import read_ts


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--data", help="CSV/TSV (header) or JSONL text file, or a UCR/UEA .ts file; "
                                   "default: scikit-learn's digits")
    p.add_argument("--valid", help="validation file (default: 20%% of --data)")
    p.add_argument("--text-col", default="text")
    p.add_argument("--label-col", default="label")
    p.add_argument("--multi-label", action="store_true", help="labels are sets joined by --label-sep (sigmoid BCE)")
    p.add_argument("--label-sep", default="|")
    p.add_argument("--preset", choices=sorted(PRESETS), default="mean")
    p.add_argument("--hidden-size", type=int, help="override the preset's hidden size")
    p.add_argument("--cell", choices=CELLS, help="recurrent cell (default: the preset's, lstm)")
    p.add_argument("--num-layers", type=int, help="stacked recurrent layers (default: the preset's, 1)")
    p.add_argument("--pooling", choices=POOLINGS, help="how the head condenses time (default: the preset's)")
    p.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=None,
                   help="run the recurrence both ways (default: the preset's; 'last' pools the last layer's "
                        "final backward state, as torch's h_n[-1])")
    p.add_argument("--embedding-dim", type=int, help="token embedding width (text data; default: the preset's, 50)")
    p.add_argument("--proj-size", type=int, help="LSTM projection of h to this size (torch's proj_size; 0: none)")
    p.add_argument("--dropout", type=float, help="dropout on the pooled features before the classifier (default 0)")
    p.add_argument("--rnn-dropout", type=float, help="dropout between stacked recurrent layers (default 0)")
    p.add_argument("--remat", action="store_true", help="recompute the recurrence in the backward pass: "
                   "training memory grows with time / 16 instead of time, for long sequences (one extra forward)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.learning_rate)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup", type=int, default=d.warmup_steps, help="warmup steps")
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule)
    p.add_argument("--clip", type=float, default=d.clip_norm, help="global gradient-norm clip")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--class-weights", metavar="balanced|W1,W2,...|NAME=W,...", help="weigh each class in the "
                   "training and validation loss (torch's CrossEntropyLoss(weight=)): 'balanced' = rows / (classes x "
                   "the class's rows), one number per class in label order, or NAME=W for every class")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="bfloat16: compute in bf16, params and optimizer state in float32")
    p.add_argument("--patience", type=int, default=d.patience, help="early stop after N epochs without a better "
                                                                    "validation loss (0: never)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps (0: each epoch end)")
    p.add_argument("--max-len", type=int, default=256, help="longest sequence kept (tokens or time steps)")
    p.add_argument("--on-long", choices=("truncate", "error"), default="truncate")
    p.add_argument("--min-freq", type=int, default=1, help="vocabulary: minimum word count")
    p.add_argument("--max-vocab", type=int, default=20000)
    p.add_argument("--out", default="runs/train")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--embeddings", metavar="VECTORS", help="initial word vectors for the vocabulary (GloVe / "
                   "word2vec / fastText text file); sets --embedding-dim to their width")
    p.add_argument("--freeze-embeddings", action="store_true", help="train everything but the embedding (e.g. "
                   "pretrained vectors), as torch's requires_grad=False")
    p.add_argument("--init-from", metavar="RUN", help="fine-tune: start from a trained run's model (its "
                   "architecture, vocabulary and labels) instead of random weights, with a fresh optimizer")
    p.add_argument("--cpu-devices", type=int, default=1, metavar="N", help=CPU_DEVICES_HELP)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="live progress bar (default: when stderr is a terminal)")


ARCHITECTURE = ("hidden_size", "cell", "num_layers", "pooling", "bidirectional", "embedding_dim", "proj_size")


def _warn(message: str) -> None:
    print(f"s2l train: warning: {message}", file=sys.stderr)


def load_data(args: argparse.Namespace, stored_meta: dict | None):
    """(train, valid, meta, input description for the model config)."""
    from s2l_jax.data import label_names_of, load_default, split, split_indices

    if args.data is None:
        if args.valid or args.multi_label:
            raise ValueError(f"{'--valid' if args.valid else '--multi-label'} applies to --data; the default "
                             "digits dataset holds out its own 20%")
        train, valid = split(load_default(), seed=args.seed)
        return train, valid, {"kind": "digits", "labels": list(train.label_names), "vocab": None}, {
            "vocab_size": None, "input_size": 8, "hidden_size": 64}
    sep = args.label_sep if args.multi_label else None
    if data_format(args.data) == "ts":
        if args.multi_label:
            raise ValueError(".ts files hold one class per series; --multi-label applies to text files")
        series, labels, declared = read_ts(args.data)
        if labels is None:
            raise ValueError(f"{args.data} has no class labels (@classLabel false); training needs them")
        meta = stored_meta or {"kind": "series", "labels": list(declared or label_names_of(labels)), "vocab": None,
                               "input_size": int(series[0].shape[1])}
    else:
        texts, labels = read_table(args.data, args.text_col, args.label_col)
        joined = sorted({v for v in labels if args.label_sep in v}) if not args.multi_label and args.label_sep else []
        if joined:
            _warn(f"labels such as {joined[0]!r} hold --label-sep {args.label_sep!r}; each is trained as one class "
                  "of its own (pass --multi-label if they are label sets)")
        # The vocabulary comes from the training rows only: held-out words must meet the model as <unk>.
        seen = texts if args.valid else [texts[i] for i in split_indices(len(texts), seed=args.seed)[0]]
        meta = stored_meta or {"kind": "text", "labels": list(label_names_of(labels, sep)),
                               "vocab": build_vocab(seen, args.min_freq, args.max_vocab)}
    settings = {"label_sep": sep, "max_len": args.max_len, "text_col": args.text_col, "label_col": args.label_col}
    changed = [f"{k}={meta[k]!r} (flags say {v!r})" for k, v in settings.items() if k in meta and meta[k] != v]
    if stored_meta and changed:
        raise ValueError("the run being resumed read its data with other settings: " + "; ".join(changed))
    meta |= settings
    data = read_labelled(args.data, meta, on_long=args.on_long, warn=_warn)
    train, valid = (data, read_labelled(args.valid, meta, on_long=args.on_long, warn=_warn)) if args.valid \
        else split(data, seed=args.seed)
    model_input = ({"vocab_size": len(meta["vocab"]), "padding_idx": 0} if meta["kind"] == "text"
                   else {"vocab_size": None, "input_size": meta["input_size"]})
    return train, valid, meta, model_input


def class_weights(spec: str, train, names: list[str]) -> tuple[float, ...]:
    """`--class-weights` as one weight per class: 'balanced' (scikit-learn's formula) or a comma list."""
    if train.multi_label:
        raise ValueError("--class-weights applies to single-label data (one class per row)")
    if spec == "balanced":
        counts = np.bincount(train.labels, minlength=len(names))  # (C,)
        missing = [names[c] for c in np.flatnonzero(counts == 0)]
        if missing:
            raise ValueError(f"--class-weights balanced: the training rows hold no {', '.join(missing)}; give the "
                             "weights by name instead (e.g. " + ",".join(f"{n}=1" for n in names[:3]) + ")")
        return tuple(float(w) for w in len(train.labels) / (len(names) * counts))
    items = spec.split(",")
    try:
        if all("=" in item for item in items):  # by name: pos=2,neg=1
            named = {name.strip(): float(w) for name, w in (item.rsplit("=", 1) for item in items)}
            unknown = sorted(set(named) - set(names))
            if unknown or len(named) != len(names):
                raise ValueError(f"--class-weights names {sorted(named)}; the classes are {', '.join(names)}")
            return tuple(named[n] for n in names)
        weights = tuple(float(w) for w in items)
    except ValueError as e:
        if str(e).startswith("--class-weights"):
            raise
        raise ValueError(f"--class-weights takes 'balanced', one number per class in label order or NAME=W pairs, "
                         f"got {spec!r}") from None
    if len(weights) != len(names):
        raise ValueError(f"--class-weights gives {len(weights)} numbers for {len(names)} classes ({', '.join(names)})")
    return weights


def _pretrained(args: argparse.Namespace, model_cfg, vocab: list[str], train):
    """(config at the vectors' width, initial params: the run's usual init with the found words' rows replaced)."""
    if model_cfg.vocab_size is None:
        raise ValueError("--embeddings applies to text data; these inputs are feature vectors (no embedding)")
    vectors, found, cased = read_vectors(args.embeddings, vocab)  # (V, D), (V,), {row: the file's cased word}
    if args.embedding_dim is not None and args.embedding_dim != vectors.shape[1]:
        raise ValueError(f"--embedding-dim {args.embedding_dim}, but {args.embeddings} has {vectors.shape[1]} "
                         "numbers per word")
    if not found.any():
        raise ValueError(f"{args.embeddings} holds none of the vocabulary's {len(vocab) - 2} words")
    model_cfg = model_cfg.replace(embedding_dim=vectors.shape[1])
    params = jax.jit(SequenceClassifier(model_cfg).init)(jax.random.key(args.seed), train.inputs[:1],
                                                         lengths=train.lengths[:1])["params"]  # as fit's
    table = np.array(params["embedding"]["weight"])
    table[found] = vectors[found]
    first = min(cased, default=None)  # the most frequent such word: the vocabulary is sorted by count
    via = (f", {len(cased)} of them from a cased entry ({cased[first]!r} for {vocab[first]!r}"
           f"{', ...' if len(cased) > 1 else ''})" if cased else "")
    print(f"pretrained vectors for {found[2:].sum()} of the vocabulary's {len(vocab) - 2} words{via} "
          f"({args.embeddings})")  # <pad> and <unk> are not words
    return model_cfg, {**params, "embedding": {"weight": jax.numpy.asarray(table)}}


def _refuse_architecture_flags(args: argparse.Namespace, run: str) -> None:
    given = [f"--{k.replace('_', '-')}" for k in ARCHITECTURE if getattr(args, k) is not None]
    if given:
        raise ValueError(f"{', '.join(given)}: the architecture comes from --init-from {run}")


def _init_run(args: argparse.Namespace):
    """(model, params, meta) of the --init-from run, refusing flags and data it cannot be fine-tuned with."""
    model, params, meta = load_run(args.init_from)
    _refuse_architecture_flags(args, args.init_from)
    kind = "digits" if args.data is None else "series" if data_format(args.data) == "ts" else "text"
    if meta.get("kind", "text") != kind:
        raise ValueError(f"--init-from {args.init_from} was trained on {meta.get('kind', 'text')} data; this is "
                         f"{kind} data")
    multi = meta.get("label_sep") is not None
    if multi != args.multi_label:
        raise ValueError(f"--init-from {args.init_from} is a {'multi' if multi else 'single'}-label model; "
                         f"{'pass' if multi else 'drop'} --multi-label")
    return model, params, meta


def _same_path(stored: str, given: str | None) -> bool:
    """`given` names the file or run `stored` named (as typed then, or the same one by another path)."""
    if given is None:
        return False
    try:
        return stored == given or Path(stored).samefile(given)
    except OSError:  # one of them is gone
        return False


def run(args: argparse.Namespace) -> int:
    empty = [f"--{k.replace('_', '-')}" for k in ("init_from", "embeddings", "class_weights") if getattr(args, k) == ""]
    if empty:  # e.g. an unset shell variable; read as absent, --init-from "" trained from scratch
        raise ValueError(f"{', '.join(empty)} is empty: give a value or leave the flag out")
    out = Path(args.out)
    ckpt = latest_checkpoint(out / "checkpoints") if args.resume else None
    state = read_state(ckpt, ("meta", "model_config")) if ckpt else None
    stored = state["meta"] if state else None
    for key, flag in (("init_from", "--init-from"), ("embeddings", "--embeddings")):
        had, given = (stored or {}).get(key), getattr(args, key)
        if stored and had and given and not _same_path(had, given):
            raise ValueError(f"{out} was started with {flag} {had}: resume it with {flag} {had} or without {flag}")
        if stored and given and not had:  # the checkpoint's weights would be kept, and meta.json name this flag
            raise ValueError(f"{out} was started without {flag}: resume it without {flag} {given}")
    if args.embeddings and args.init_from:
        raise ValueError("--embeddings and --init-from both give the initial weights; choose one")
    # Resuming, the checkpoint holds the weights and the config: the --init-from run and the --embeddings file are
    # not read again, so they may have been moved or deleted since.
    started_from = stored.get("init_from") if stored else None
    if started_from:
        _refuse_architecture_flags(args, started_from)
    init = _init_run(args) if args.init_from and not stored else None
    # Fine-tuning reads the data with the run's vocabulary and labels; how this file is read (columns, maximum
    # length) is up to this command's flags.
    base = {k: init[2][k] for k in ("kind", "labels", "vocab", "input_size") if k in init[2]} if init else None
    train, valid, meta, model_input = load_data(args, stored or base)
    if len(meta["labels"]) < 2 and meta.get("label_sep") is None:
        raise ValueError(f"the training data holds one class, {meta['labels']}: a classifier needs at least two")
    if args.embedding_dim is not None and model_input["vocab_size"] is None:
        raise ValueError("--embedding-dim applies to text data; these inputs are feature vectors (no embedding)")
    overrides = {k: getattr(args, k) for k in (*ARCHITECTURE, "dropout", "rnn_dropout")}
    resumed_cfg = ClassifierConfig.from_dict(state["model_config"]) if state else None
    if init:
        model_cfg = init[0].config
    elif started_from:
        model_cfg = resumed_cfg
    else:
        model_cfg = PRESETS[args.preset].replace(num_classes=len(meta["labels"]), **model_input)
        if stored and stored.get("embeddings") and args.embedding_dim is None:  # the vectors' width, as it started
            model_cfg = model_cfg.replace(embedding_dim=resumed_cfg.embedding_dim)
    model_cfg = model_cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
    init_params = init[1] if init else None
    if args.embeddings and not stored:
        model_cfg, init_params = _pretrained(args, model_cfg, meta["vocab"], train)
    if model_cfg.rnn_dropout and model_cfg.num_layers == 1:
        _warn("--rnn-dropout applies between stacked recurrent layers; with one layer it does nothing (as torch's)")
    weights = class_weights(args.class_weights, train, meta["labels"]) if args.class_weights else None
    if weights is not None:
        print("class weights: " + ", ".join(f"{n} {w:.4g}" for n, w in zip(meta["labels"], weights, strict=True)))
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                      weight_decay=args.weight_decay, warmup_steps=args.warmup, schedule=args.schedule,
                      clip_norm=args.clip, seed=args.seed, precision=args.precision, patience=args.patience,
                      checkpoint_every=args.checkpoint_every, class_weights=weights,
                      freeze=("embedding",) if args.freeze_embeddings else ())
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    t0 = time.perf_counter()
    result = fit(model_cfg, cfg, train, valid, out=out, resume=args.resume,
                 meta={**meta, "preset": init[2].get("preset") if init else meta.get("preset") if started_from
                       else args.preset,
                       **{k: str(getattr(args, k)) for k in ("init_from", "embeddings") if getattr(args, k)}},
                 progress=progress, options=ScanOptions(remat=args.remat), init_params=init_params)
    best = result.history[result.best_epoch - 1]
    print(f"done in {time.perf_counter() - t0:.1f}s: best epoch {result.best_epoch}, valid accuracy "
          f"{best['accuracy']:.4f}, macro-F1 {best['macro_f1']:.4f}; saved {out}/model.safetensors")
    return 0
