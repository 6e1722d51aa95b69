"""Resumable training checkpoints: params + optimizer state (safetensors) and step, data position, RNG seed,
configs, vocabulary and history (JSON), one directory per step.

A checkpoint is written into a hidden temporary directory, fsynced, then renamed to `step_XXXXXXXX`; an old one
is renamed to a hidden name before it is deleted. A crash at any moment leaves either the previous latest
checkpoint or the new complete one, never a partial one under a `step_` name.
Loading checks every key and shape against the model and optimizer being resumed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
from safetensors.numpy import save_file

from s2l_jax.params import check_finite, check_shapes, flatten, unflatten
from s2l_jax.weights import read_safetensors

ARRAYS, STATE = "arrays.safetensors", "state.json"
_STEP_DIR = re.compile(r"^step_(\d{8})$")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _opt_leaves(opt_state) -> dict[str, Any]:
    return {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]}


def _discard(path: Path) -> None:
    """Delete a checkpoint directory without ever exposing a half-deleted one under its `step_` name."""
    trash = Path(tempfile.mkdtemp(prefix=f".old-{path.name}-", dir=path.parent))
    os.rename(path, trash / path.name)
    shutil.rmtree(trash)


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under `directory`, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if _STEP_DIR.match(p.name) and (p / STATE).is_file()), key=lambda p: p.name)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def read_state(path: str | os.PathLike, required: tuple[str, ...] = ("step",)) -> dict:
    """The JSON state of checkpoint directory `path`; a truncated or corrupt file, or one without the
    `required` keys (another program's, an older format), is an error naming it."""
    f = Path(path) / STATE
    try:
        state = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{f} is not a readable checkpoint state (truncated or corrupt?): {e}") from e
    if not isinstance(state, dict):
        raise ValueError(f"{f} is not a readable checkpoint state (truncated or corrupt?): not a JSON object")
    missing = [k for k in required if k not in state]
    if missing:
        raise ValueError(f"{f} is not an s2l_jax training checkpoint: it lacks {', '.join(missing)}")
    return state


def save_checkpoint(directory: str | os.PathLike, step: int, params, opt_state, state: dict, keep: int = 2) -> Path:
    """Atomically write checkpoint `step`; then delete all but the newest `keep` and anything a crash left."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step_{step:08d}-", dir=d))
    try:
        arrays = {f"params.{k}": np.asarray(v) for k, v in flatten(params).items()}
        arrays |= {f"opt.{k}": np.asarray(v) for k, v in _opt_leaves(opt_state).items()}
        save_file({k: np.asarray(v, order="C") for k, v in arrays.items()}, tmp / ARRAYS)  # keeps 0-d
        (tmp / STATE).write_text(json.dumps({**state, "step": step}))
        for f in (ARRAYS, STATE):
            _fsync(tmp / f)
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700
        _fsync(tmp)
        final = d / f"step_{step:08d}"
        if final.exists():  # only when a run is redone from an older checkpoint: replace the stale one
            _discard(final)
        os.rename(tmp, final)
        _fsync(d)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    for old in list_checkpoints(d)[:-keep]:
        _discard(old)
    for stale in [*d.glob(".tmp-step_*"), *d.glob(".old-step_*")]:  # left by a crash
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _check_dtypes(template: dict, loaded: dict, what: str) -> None:
    """Refuse tensors of another dtype than the run's (a float64 checkpoint would be rounded silently)."""
    dtypes = {k: np.dtype(t.dtype) if hasattr(t, "dtype") else np.asarray(t).dtype for k, t in template.items()}
    wrong = [f"{k!r} is {loaded[k].dtype}, the run's is {d}" for k, d in dtypes.items() if loaded[k].dtype != d]
    if wrong:
        raise ValueError(f"{what}: " + "; ".join(wrong) + " (float64 runs need jax_enable_x64 to resume)")


def load_checkpoint(path: str | os.PathLike, params_like, opt_state_like) -> tuple[Any, Any, dict]:
    """(params, opt_state, state) from a checkpoint directory, shaped like the given templates; a checkpoint
    from another architecture or optimizer is an error naming the differing keys and shapes."""
    path = Path(path)
    if not (path / STATE).is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint (no {STATE})")
    tensors, _ = read_safetensors(path / ARRAYS)
    state = read_state(path)
    params = {k[len("params."):]: v for k, v in tensors.items() if k.startswith("params.")}
    opt = {k[len("opt."):]: v for k, v in tensors.items() if k.startswith("opt.")}
    check_shapes({k: np.shape(v) for k, v in flatten(params_like).items()}, params, what=f"checkpoint {path}")
    template = _opt_leaves(opt_state_like)
    check_shapes({k: np.shape(v) for k, v in template.items()}, opt, what=f"optimizer state in {path}")
    _check_dtypes(flatten(params_like), params, f"checkpoint {path}")
    _check_dtypes(template, opt, f"optimizer state in {path}")
    check_finite({**params, **{f"opt.{k}": v for k, v in opt.items()}}, f"checkpoint {path}")  # a corrupt file
    treedef = jax.tree_util.tree_structure(opt_state_like)
    opt_state = jax.tree_util.tree_unflatten(
        treedef, [jax.numpy.asarray(opt[k], dtype=np.asarray(t).dtype) for k, t in template.items()]
    )
    return jax.tree.map(jax.numpy.asarray, unflatten(params)), opt_state, state
