"""Model weight files: safetensors holding torch-named tensors plus the `ClassifierConfig` as JSON metadata.

torch loads them directly (`safetensors.torch.load_file` -> `load_state_dict(strict=True)` on the reference model);
JAX loads them without torch. Writes are atomic: a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import jax
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from s2l_jax.model import ClassifierConfig, SequenceClassifier, example_inputs
from s2l_jax.params import check_shapes, expected_shapes, flatten, unflatten

CONFIG_KEY = "s2l_config"


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call `write(tmp_path)`, fsync, then rename onto `path` (same directory, so the rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_weights(path: str | os.PathLike, params, config: ClassifierConfig | None = None) -> None:
    """Write `params` (a nested params tree or `{"params": ...}` variables) as a safetensors file."""
    params = params.get("params", params)
    flat = {k: np.ascontiguousarray(np.asarray(v)) for k, v in flatten(params).items()}
    metadata = {CONFIG_KEY: json.dumps(config.to_dict())} if config is not None else None
    atomic_write(path, lambda tmp: save_file(flat, tmp, metadata=metadata))


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors and metadata of a safetensors file; missing, truncated or corrupt files raise a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such weight file: {path}")
    try:
        tensors = load_file(path)
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            metadata = json.loads(f.read(header_len)).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError, OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e
    return tensors, metadata


def load_weights(path: str | os.PathLike) -> tuple[dict, ClassifierConfig | None]:
    """`(params tree, config or None)` from a safetensors file written by `save_weights` or by torch."""
    tensors, metadata = read_safetensors(path)
    config = ClassifierConfig.from_dict(json.loads(metadata[CONFIG_KEY])) if CONFIG_KEY in metadata else None
    return unflatten(tensors), config


def load_classifier(path: str | os.PathLike, config: ClassifierConfig | None = None):
    """`(SequenceClassifier, variables)` from a weight file; every key and shape is checked against the config."""
    params, stored = load_weights(path)
    config = config or stored
    if config is None:
        raise ValueError(f"{path} holds no s2l config: pass the ClassifierConfig")
    model = SequenceClassifier(config)
    check_shapes(expected_shapes(model, example_inputs(config)), flatten(params), what=str(path))
    return model, {"params": jax.tree.map(jax.numpy.asarray, params)}
