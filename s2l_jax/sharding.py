"""Data parallelism with `jax.sharding`: a 1-D mesh over all devices, the batch split along it, params and
optimizer state replicated; the gradients are summed in one all-reduce (`data_parallel_grad`), so the same train
step runs on one CPU, 8 GPUs or a TPU slice. Multi-host: call `jax.distributed.initialize()` first in every
process; `jax.devices()` then lists every host's devices and each process feeds the same global batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec

CPU_DEVICES_HELP = ("run the CPU as N XLA devices, each batch split over them (0: one per core; default 1). "
                    "Faster for small models on several cores; the batch size must split evenly")


def use_cpu_devices(count: int = 0) -> int:
    """Run the host CPU as `count` XLA devices (0: one per core this process may use); returns the count.

    XLA runs a small step's ops one after another on one thread; split into devices, each core runs its own
    shard of the batch (`default_mesh` picks them all up): seed-size steps ran 1.2-1.7x faster on 2 cores
    (benchmarks/README.md). Float results differ from one device only by summation order. Must be called
    before JAX runs any computation; a no-op for GPU/TPU backends.
    """
    if count < 0:
        raise ValueError(f"CPU device count must be >= 0 (0: one per core), got {count}")
    if not count:  # sched_getaffinity: the cores this process may use (Linux only)
        count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as e:
        raise RuntimeError(f"use_cpu_devices({count}) must run before JAX computes anything ({e})") from e
    return count


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with one axis, "data", over `devices` (default: all devices)."""
    return Mesh(np.array(devices if devices is not None else jax.devices()), ("data",))


def check_batch_size(mesh: Mesh, batch_size: int) -> None:
    """The batch splits over the mesh's "data" axis (other axes, e.g. a user's "model" axis, replicate it)."""
    if "data" not in mesh.axis_names:
        raise ValueError(f"the mesh needs a 'data' axis to split batches over, got axes {mesh.axis_names}")
    n = mesh.shape["data"]
    if batch_size % n:
        raise ValueError(f"batch size {batch_size} does not split over {n} devices; use a multiple of {n}")


def default_mesh(mesh: Mesh | None, batch_size: int) -> Mesh | None:
    """`mesh`, or all devices when there are several (None for one); checks the batch splits over it."""
    if mesh is None and jax.device_count() > 1:
        mesh = data_mesh()
    if mesh is not None:
        check_batch_size(mesh, batch_size)
    return mesh


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(arrays: tuple, mesh: Mesh) -> tuple:
    """Each array split along its first (batch) axis over the mesh's "data" axis (one transfer call for all:
    110 us against 159 for four calls, a seed-size batch on 2 devices; benchmarks/README.md)."""
    return tuple(jax.device_put(tuple(arrays), NamedSharding(mesh, PartitionSpec("data"))))


def data_parallel_grad(loss_terms: Callable, mesh: Mesh) -> Callable:
    """`(params, rng, batch) -> (loss, grads)` of `sum(losses) / count` (1 for an all-padding batch) over a batch
    split along `mesh`'s "data" axis, with one all-reduce.

    `loss_terms(params, rng, batch) -> (loss_sum, count)` runs on each device's shard of `batch` (a tuple of
    arrays; params replicated; `rng`, when given, folded with the device's index, so dropout masks differ per
    shard). Under plain `jit` XLA all-reduces each weight gradient where its batch contraction ends: one
    rendezvous per tensor (~35 us each on CPU), and one per time step where a gradient accumulates inside a loop
    (`custom_vjp=False`, remat). Here each device's `(loss_sum, count, grads)` is one flat vector, summed once.
    """

    def local(params, rng, batch):
        if rng is not None:
            rng = jax.random.fold_in(rng, jax.lax.axis_index("data"))
        (loss_sum, count), grads = jax.value_and_grad(loss_terms, has_aux=True)(params, rng, batch)
        flat, unravel = ravel_pytree((loss_sum, count, grads))
        loss_sum, count, grads = unravel(jax.lax.psum(flat, "data"))
        scale = 1.0 / jnp.where(count > 0, count, 1.0)  # count: a sum of weights, may be < 1 (class weights)
        return loss_sum * scale, jax.tree.map(lambda g: g * scale, grads)

    spec = PartitionSpec("data")
    return jax.shard_map(local, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(), spec),
                         out_specs=PartitionSpec(), check_vma=False)
