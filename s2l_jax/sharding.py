"""Data parallelism with `jax.sharding`: a 1-D mesh over all devices, the batch split along it, params and
optimizer state replicated. jit inserts the gradient all-reduce, so the same train step runs on one CPU, 8 GPUs
or a TPU slice. Multi-host: call `jax.distributed.initialize()` first in every process; `jax.devices()` then
lists every host's devices and each process feeds the same global batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with one axis, "data", over `devices` (default: all devices)."""
    return Mesh(np.array(devices if devices is not None else jax.devices()), ("data",))


def check_batch_size(mesh: Mesh, batch_size: int) -> None:
    if batch_size % mesh.size:
        raise ValueError(f"batch size {batch_size} does not split over {mesh.size} devices; use a multiple of "
                         f"{mesh.size}")


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(arrays: tuple, mesh: Mesh) -> tuple:
    """Each array split along its first (batch) axis over the mesh's "data" axis."""
    return tuple(jax.device_put(a, NamedSharding(mesh, PartitionSpec("data"))) for a in arrays)
