"""`s2l convert IN OUT`: torch weight file <-> JAX checkpoint; the direction is OUT's extension."""

from __future__ import annotations

import argparse

from parity.io import convert_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="weight file to read (.pt/.pth/.bin/.safetensors)")
    p.add_argument("dst", help=".safetensors: the JAX checkpoint (config in its metadata); .pt/.pth: torch")
    add_architecture_arguments(p)
    p.add_argument("--names-from", help="a weight file of the user's torch model whose key names OUT should take")


def add_architecture_arguments(p: argparse.ArgumentParser) -> None:
    """What weights cannot tell; shared with `s2l parity`."""
    p.add_argument("--pooling", choices=["last", "mean", "max", "attention"],
                   help="how the model pools over time (weights cannot tell last/mean/max apart)")
    p.add_argument("--nonlinearity", choices=["tanh", "relu"], help="plain RNN only (default: torch's tanh)")
    p.add_argument("--padding-idx", type=int, help="the embedding's padding_idx, if the model has one")


def hints(args: argparse.Namespace) -> dict:
    return {"nonlinearity": args.nonlinearity, "padding_idx": args.padding_idx}


def run(args: argparse.Namespace) -> int:
    arch = convert_file(args.src, args.dst, args.pooling, args.names_from, **hints(args))
    for note in arch.notes:
        print(f"note: {note}")
    c = arch.config
    print(f"wrote {args.dst}: {c.cell} x{c.num_layers}{' bidirectional' if c.bidirectional else ''} hidden "
          f"{c.hidden_size}{f' proj {c.proj_size}' if c.proj_size else ''}, pooling {c.pooling}, "
          f"{c.num_classes} classes")
    return 0
