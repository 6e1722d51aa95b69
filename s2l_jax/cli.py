"""`s2l` command line: each sub-command lives in its own module, which provides `add_arguments(parser)` and
`run(args) -> int`. Errors a user can fix (bad files, bad flags, bad data) exit 2 with one line, no traceback."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from s2l_jax.compile_cache import enable_compile_cache

# name -> (module, one-line help). A command whose module cannot be imported (parity.* without torch) is
# still listed and says what it needs; the other commands work, so s2l_jax does not depend on torch.
COMMANDS = {
    "demo": ("parity.demo", "convert the seed's three torch classifiers to JAX and print their differences"),
    "convert": ("parity.convert_cli", "convert weight files torch <-> JAX (direction from the extensions)"),
    "train": ("s2l_jax.train_cli", "train a sequence classifier (default: a real offline dataset)"),
    "evaluate": ("s2l_jax.evaluate_cli", "loss, accuracy and macro-F1 of a trained run on a labelled file"),
    "predict": ("s2l_jax.predict_cli", "one predicted label per input text (file or stdin)"),
    "parity": ("parity.parity_cli", "check a weight file's torch and JAX models agree: forward, gradients, training"),
}


class UsageError(Exception):
    """A problem with the user's input, reported as one line with exit code 2."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `s2l` parser; with `only`, just that command's module is imported for its arguments (the others'
    imports, torch for the parity commands, cost ~1.3 s of every command's start-up)."""
    parser = argparse.ArgumentParser(prog="s2l", description="Torch-exact sequence-to-label models in JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        if only is not None and name != only:
            continue
        try:
            importlib.import_module(module).add_arguments(p)
        except ImportError as e:  # e.g. torch not installed: the other commands still work
            p.set_defaults(_missing=f"needs {e.name} ({e}); install it, e.g. pip install -e '.[torch]'")
            p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(only=argv[0] if argv and argv[0] in COMMANDS else "")
    args = parser.parse_args(argv)
    if getattr(args, "_missing", None):
        print(f"s2l {args.command}: error: {args._missing}", file=sys.stderr)
        return 2
    try:
        enable_compile_cache()
        if getattr(args, "cpu_devices", 1) != 1:
            from s2l_jax.sharding import use_cpu_devices

            use_cpu_devices(args.cpu_devices)
        code = int(importlib.import_module(args._module).run(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe is reported here, not at interpreter exit
        return code
    except BrokenPipeError:  # the reader stopped early (`s2l predict ... | head`): stop quietly, as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the status a shell shows for a writer its pipe closed on
    except (UsageError, ValueError, TypeError, OSError, KeyError) as e:
        if os.environ.get("S2L_TRACEBACK", "") not in ("", "0"):
            raise
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, KeyError):  # a bare key name says nothing on its own
            message = f"KeyError {message} (S2L_TRACEBACK=1 shows where)"
        print(f"s2l {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
