"""Weight files both ways: read `.safetensors` / `.pt` / `.pth` / `.bin` state_dicts (torch files only through
`torch.load(weights_only=True)`, so a pickle that would run code is refused), write safetensors and `.pt` that
torch loads with `strict=True`, and convert between a user's torch file and the JAX checkpoint (canonical names +
config + the user's prefixes in the safetensors metadata, so the round trip restores the user's key names)."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from parity.convert import rename_prefixes, tensor_to_numpy
from parity.infer import Architecture, infer_architecture
from s2l_jax.model import SequenceClassifier, example_inputs
from s2l_jax.params import check_shapes, check_weights, expected_shapes, to_jax, unflatten
from s2l_jax.weights import CONFIG_KEY, atomic_write, config_from_metadata, read_safetensors

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
PATHS_KEY = "s2l_torch_paths"  # safetensors metadata: canonical prefix -> the user's module path
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")  # checkpoints that nest the state_dict


def kind_of(path: str | os.PathLike) -> str:
    """"safetensors" or "torch", from the file name's extension."""
    suffix = Path(path).suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    raise ValueError(f"{path}: unknown weight file extension {suffix!r}; expected .safetensors, .pt, .pth or .bin")


def _tensor_to_numpy(name: str, t, what: str) -> np.ndarray:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"entry {name!r} is a {type(t).__name__}, not a tensor: not a state_dict")
    return tensor_to_numpy(name, t, what)


def _unpickler_reason(message: str) -> str:
    """The one line of torch's weights_only error that says what was refused."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error", 1)[1].lstrip(": ").strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else line)
    return lines[0] if lines else "unpickling failed"


def read_torch_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A `.pt`/`.pth` state_dict via `torch.load(weights_only=True)`: never runs code from the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such weight file: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _unpickler_reason(str(e))
        if "global" in reason.lower():
            raise ValueError(f"{path}: refused: the file holds objects other than tensors and loading it would run "
                             f"code (torch.load weights_only=True: {reason})") from e
        raise ValueError(f"{path} is not a readable torch file (truncated or corrupt?): {reason}") from e
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} is not a readable torch file (truncated or corrupt?): {first}") from e
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state_dict (a mapping of names to tensors)")
    return {str(k): _tensor_to_numpy(str(k), v, str(path)) for k, v in obj.items()}


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """`(flat name -> array, metadata)` of any supported weight file (torch files have no metadata)."""
    if kind_of(path) == "safetensors":
        return read_safetensors(path)
    return read_torch_file(path), {}


def write_state_dict(path: str | os.PathLike, flat: Mapping, metadata: Mapping[str, str] | None = None) -> None:
    """Atomically write a flat state_dict: `.safetensors` (with `metadata`) or a torch `.pt`/`.pth`."""
    arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in flat.items()}
    if kind_of(path) == "safetensors":
        atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata=dict(metadata) if metadata else None))
    else:
        tensors = {k: torch.from_numpy(a.copy()) for k, a in arrays.items()}
        atomic_write(path, lambda tmp: torch.save(tensors, tmp))


def architecture_of(flat: Mapping, metadata: Mapping[str, str], pooling: str | None = None, what: str = "weights",
                    **hints) -> Architecture:
    """The file's architecture: from the s2l config in its metadata when present, else inferred from the keys."""
    if CONFIG_KEY in metadata:
        config = config_from_metadata(dict(metadata), what)
        if pooling is not None and pooling != config.pooling:
            raise ValueError(f"the file's config says pooling {config.pooling!r}, not {pooling!r}")
        nonlinearity, padding_idx = hints.get("nonlinearity"), hints.get("padding_idx")
        if nonlinearity is not None and config.cell != f"rnn_{nonlinearity}":
            raise ValueError(f"the file's config says cell {config.cell!r}, not a {nonlinearity} RNN")
        if padding_idx is not None and padding_idx != config.padding_idx:
            raise ValueError(f"the file's config says padding_idx {config.padding_idx}, not {padding_idx}")
        paths = json.loads(metadata.get(PATHS_KEY, "{}"))
        return Architecture(config, {k: k for k in paths}, ())  # names in the file are canonical
    return infer_architecture(flat, pooling, **hints)


def _checked(path, flat: Mapping, metadata: Mapping[str, str], pooling: str | None, **hints):
    """`(Architecture, canonical flat arrays)` of a file's state_dict: every key and shape checked against the
    architecture, every value by `check_weights` (half precision upcast to float32, noted on the architecture)."""
    arch = architecture_of(flat, metadata, pooling, str(path), **hints)
    canonical = rename_prefixes(flat, arch.paths, to_user=False)
    check_shapes(expected_shapes(SequenceClassifier(arch.config), example_inputs(arch.config)), canonical,
                 what=str(path))
    checked = check_weights(canonical, str(path))
    upcast = sorted({str(a.dtype) for k, a in canonical.items() if checked[k].dtype != a.dtype})
    if upcast:
        note = f"{'/'.join(upcast)} weights upcast to float32 (exact)"
        arch = dataclasses.replace(arch, notes=arch.notes + (note,))
    return arch, checked


def load_classifier_file(path: str | os.PathLike, pooling: str | None = None, **hints):
    """`(SequenceClassifier, variables, Architecture)` from any weight file: a user's torch state_dict (any
    prefixes) or an s2l checkpoint. Every key, shape, dtype and value is checked (`_checked`); hints:
    nonlinearity, padding_idx."""
    arch, canonical = _checked(path, *read_state_dict(path), pooling, **hints)
    return SequenceClassifier(arch.config), {"params": unflatten(to_jax(canonical, str(path)))}, arch


def convert_file(src: str | os.PathLike, dst: str | os.PathLike, pooling: str | None = None,
                 names_from: str | os.PathLike | None = None, **hints) -> Architecture:
    """Convert one weight file; the direction comes from the extensions. A torch file (`.pt`/`.pth`/`.bin`, or a
    `.safetensors` without s2l config) to `.safetensors` gives the JAX checkpoint (canonical names + config + the
    user's prefixes in its metadata); anything to `.pt`/`.pth` (or a JAX checkpoint to `.safetensors`) gives a
    torch state_dict under the user's original names (kept in the checkpoint, or those of `names_from`, another
    weight file of the user's model), else the reference model's (`TorchSequenceClassifier`) names."""
    if Path(dst).exists() and Path(src).exists() and Path(dst).samefile(src):
        raise ValueError(f"{dst} is the input file; choose another output (converting in place would replace the "
                         "file it reads)")
    flat, metadata = read_state_dict(src)
    arch, canonical = _checked(src, flat, metadata, pooling, **hints)
    user_paths = json.loads(metadata[PATHS_KEY]) if PATHS_KEY in metadata else dict(arch.paths)
    if names_from is not None:
        ref_flat, ref_meta = read_state_dict(names_from)
        user_paths = architecture_of(ref_flat, ref_meta, arch.config.pooling, str(names_from)).paths
    jax_checkpoint = kind_of(dst) == "safetensors" and CONFIG_KEY not in metadata
    if jax_checkpoint:
        write_state_dict(dst, canonical, {CONFIG_KEY: json.dumps(arch.config.to_dict()),
                                          PATHS_KEY: json.dumps(user_paths)})
    else:
        write_state_dict(dst, rename_prefixes(canonical, user_paths, to_user=True))
    return arch
