"""Model weight files: safetensors holding torch-named tensors plus the `ClassifierConfig` as JSON metadata.

torch loads them directly (`safetensors.torch.load_file` -> `load_state_dict(strict=True)` on the reference model);
JAX loads them without torch. Writes are atomic: a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from s2l_jax.model import ClassifierConfig, SequenceClassifier, example_inputs
from s2l_jax.params import WEIGHT_DTYPES, check_shapes, check_weights, expected_shapes, flatten, to_jax, unflatten

CONFIG_KEY = "s2l_config"
# safetensors dtypes NumPy can hold (F8_* cannot); non-float ones are read, then refused by `check_weights`.
NUMPY_SAFETENSORS_DTYPES = ("F16", "BF16", "F32", "F64", "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "BOOL",
                            "C64")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call `write(tmp_path)`, fsync, then rename onto `path` (same directory, so the rename is atomic)."""
    path = Path(path)
    if path.is_dir():  # else os.replace fails naming its temporary file
        raise IsADirectoryError(f"{path} is a directory; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
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
        with safe_open(path, framework="np") as f:  # checks the header and that the data covers the file
            metadata = f.metadata() or {}
            dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
            unreadable = [f"{k!r} has dtype {d}" for k, d in dtypes.items() if d not in NUMPY_SAFETENSORS_DTYPES]
            tensors = {} if unreadable else {k: f.get_tensor(k) for k in dtypes}
    except (SafetensorError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {first}") from e
    if unreadable:
        raise ValueError(f"{path}: weights must be {WEIGHT_DTYPES}: " + ", ".join(unreadable))
    return tensors, metadata


def config_from_metadata(metadata: dict[str, str], what: str = "weights") -> ClassifierConfig | None:
    """The `ClassifierConfig` stored in a weight file's metadata (None without one); an unreadable or invalid
    one is a ValueError naming the file."""
    if CONFIG_KEY not in metadata:
        return None
    try:
        return ClassifierConfig.from_dict(json.loads(metadata[CONFIG_KEY]))
    except (ValueError, TypeError, AttributeError) as e:  # bad JSON, unknown fields or values, not an object
        raise ValueError(f"{what}: the s2l config in its metadata is invalid: {e}") from e


def load_weights(path: str | os.PathLike) -> tuple[dict, ClassifierConfig | None]:
    """`(params tree, config or None)` from a safetensors file written by `save_weights` or by torch."""
    tensors, metadata = read_safetensors(path)
    return unflatten(tensors), config_from_metadata(metadata, str(path))


def load_classifier(path: str | os.PathLike, config: ClassifierConfig | None = None):
    """`(SequenceClassifier, variables)` from a weight file; every key and shape is checked against the config,
    and every value by `check_weights` (floating point, finite; float16/bfloat16 upcast to float32 exactly)."""
    params, stored = load_weights(path)
    config = config or stored
    if config is None:
        raise ValueError(f"{path} holds no s2l config: pass the ClassifierConfig")
    model = SequenceClassifier(config)
    flat = flatten(params)
    check_shapes(expected_shapes(model, example_inputs(config)), flat, what=str(path))
    return model, {"params": unflatten(to_jax(check_weights(flat, str(path)), str(path)))}
