"""Data parallelism over every device: a 1-D ``data`` mesh, parameters replicated, batches sharded on axis 0.

One ``jax.jit`` program runs the whole batch; XLA partitions it from the input shardings (no ``pmap``). Results
equal a single-device run because every sample's randomness comes from ``fold_in(key, sample_id)``, never from
its position in the batch or its device. Batches that do not divide by the device count are padded with copies
of the last sample, whose outputs are dropped.

Multi-host: call :func:`initialize_distributed` in every process before any other JAX call (it wraps
``jax.distributed.initialize``, which reads the coordinator address, process count and id from its arguments or
from the cluster environment: SLURM, Open MPI, Cloud TPU); :func:`data_mesh` then spans the devices of all
processes, and each process passes the full batch (arrays are made global with ``jax.make_array_from_callback``)
and gets the full result back (:func:`gather`). Tested with two local CPU processes of two devices each.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """``jax.distributed.initialize`` (arguments may come from the environment); a no-op for one process. CPU
    processes exchange data through gloo (``jax_cpu_collectives_implementation``)."""
    if num_processes == 1:
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)


def data_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,))


def replicate(tree, mesh: jax.sharding.Mesh):
    """Every array of ``tree`` copied to every device of ``mesh``."""
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda a: jax.device_put(a, sharding), tree)


def padded_size(n: int, mesh: jax.sharding.Mesh) -> int:
    """``n`` rounded up to a multiple of the mesh size."""
    size = mesh.devices.size
    return -(-n // size) * size


def pad_batch(x, n: int):
    """``x`` with its last row repeated up to ``n`` rows."""
    x = jnp.asarray(x)
    extra = n - x.shape[0]
    return x if extra == 0 else jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)])


def gather(x):
    """``x`` as a host-complete array: itself when this process holds all of it, else every process's shards
    gathered (``multihost_utils.process_allgather``)."""
    if getattr(x, "is_fully_addressable", True):
        return x
    from jax.experimental import multihost_utils

    return jnp.asarray(multihost_utils.process_allgather(x, tiled=True))


def shard_batch(x, mesh: jax.sharding.Mesh):
    """``x`` split along axis 0 over the ``data`` axis (global arrays across processes)."""
    x = np.asarray(x)
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def shard_samples(x, sample_ids: np.ndarray, mesh: jax.sharding.Mesh):
    """``(x, sample_ids)`` padded to a multiple of the mesh size (the last sample repeated, so padding rows draw
    that sample's noise and are dropped afterwards) with ``x`` sharded over the ``data`` axis."""
    size = padded_size(x.shape[0], mesh)
    ids = np.asarray(sample_ids)
    return shard_batch(pad_batch(x, size), mesh), np.concatenate([ids, np.repeat(ids[-1:], size - len(ids))])
