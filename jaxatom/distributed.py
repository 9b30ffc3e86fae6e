"""JAX's multi-process runtime for jaxatom: start it, ask who is the main process, place host data on a mesh over the
devices of every process, and gather results back to every host.

A run across several processes (one per host, or one per accelerator) calls :func:`initialize` first, before anything
touches JAX's devices; then ``jaxatom.train.fit`` averages gradients over every device of every process (each process
builds only its own shard of every batch) and ``jaxatom.md.simulate`` spreads its replicas over all of them. Files
are written once: by process 0 (training logs, model, MD trajectory and checkpoint) or, for orbax training
checkpoints, by orbax's own multi-process protocol. In one process every function here is a cheap no-op, so the same
script runs on a laptop and on a cluster. See ``docs/distributed.md``.

Imports only JAX and :mod:`jaxatom.errors` (layer 0).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxatom.errors import ConfigError

__all__ = [
    "initialize",
    "is_initialized",
    "process_count",
    "process_index",
    "is_main_process",
    "global_mesh",
    "local_shard_indices",
    "replicated",
    "host_local_to_global",
    "gather",
    "sync",
    "main_process_only",
    "broadcast",
    "leading_sharding",
    "shard_leading",
    "ENV_COORDINATOR",
    "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID",
]

#: Environment variables the CLI reads when its options are not given (``HOST:PORT``, an int, an int).
ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = (
    "JAXATOM_COORDINATOR",
    "JAXATOM_NUM_PROCESSES",
    "JAXATOM_PROCESS_ID",
)

_started = False


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: int | Sequence[int] | None = None,
    *,
    cpu_collectives: str | None = "gloo",
    initialization_timeout: int = 300,
) -> None:
    """Start JAX's distributed runtime (:func:`jax.distributed.initialize`) and make this process one of
    ``num_processes``. Must run before anything uses JAX's devices (the CLI does it first).

    With every argument omitted JAX detects SLURM (``srun``), Open MPI (``mpirun``) and TPU pods itself; elsewhere
    give ``coordinator_address`` (``"HOST:PORT"`` of process 0, reachable from every process), ``num_processes``
    and ``process_id`` (0 … num_processes-1). ``num_processes=1`` (and no coordinator) is a no-op, so single-process
    runs take the same path. On CPU, cross-process collectives need an implementation: ``cpu_collectives``
    (``"gloo"``, JAX's default, or ``"mpi"``; None leaves JAX's setting alone). Calling it again in the same
    process with the same settings does nothing.
    """
    global _started
    if _started or (num_processes == 1 and coordinator_address is None):
        return
    if jax.distributed.is_initialized():
        _started = True
        return
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"num_processes must be at least 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ConfigError(
            f"process_id must be in 0..{num_processes - 1} for {num_processes} processes, got {process_id}"
        )
    explicit = [coordinator_address is None, num_processes is None, process_id is None]
    if any(explicit) and not all(explicit) and not _cluster_detected():
        missing = [n for n, m in zip(("coordinator", "num_processes", "process_id"), explicit, strict=True) if m]
        raise ConfigError(
            f"the distributed run lacks {', '.join(missing)}: give coordinator HOST:PORT, the number of processes and "
            "this process's id (0 = the coordinator), or launch under SLURM (srun) or Open MPI (mpirun), which "
            "JAX detects"
        )
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            local_device_ids=local_device_ids,
            initialization_timeout=initialization_timeout,
        )
    except RuntimeError as err:
        if "must be called before" in str(err):
            raise ConfigError(
                "jaxatom.distributed.initialize must run before anything uses JAX's devices (jax.devices(), a "
                "computation, a model load); call it first in the script"
            ) from err
        raise
    _started = True


def _cluster_detected() -> bool:
    """Whether a launcher JAX detects by itself set this process up (SLURM, Open MPI)."""
    return any(name in os.environ for name in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "OMPI_MCA_orte_hnp_uri"))


def is_initialized() -> bool:
    """Whether JAX's distributed runtime runs in this process."""
    return jax.distributed.is_initialized()


def process_count() -> int:
    """The number of processes (1 without the distributed runtime)."""
    return jax.process_count()


def process_index() -> int:
    """This process's index (0 without the distributed runtime)."""
    return jax.process_index()


def is_main_process() -> bool:
    """Whether this is process 0, the one that writes logs, model files, trajectories and run records."""
    return jax.process_index() == 0


def main_process_only(context: contextlib.AbstractContextManager) -> contextlib.AbstractContextManager:
    """``context`` on process 0, a context that does nothing elsewhere (e.g. a file lock only the writer holds)."""
    return context if is_main_process() else contextlib.nullcontext()


def global_mesh(axis: str) -> Mesh:
    """A one-axis mesh over every device of every process, ordered by process (each process's devices are one
    contiguous block: shards ``[p·L, (p+1)·L)`` belong to process ``p`` with ``L`` local devices)."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (axis,))


def local_shard_indices(mesh: Mesh) -> list[int]:
    """The positions along ``mesh``'s axis of this process's devices (a contiguous range for :func:`global_mesh`)."""
    devices = list(mesh.devices.flat)
    return [i for i, device in enumerate(devices) if device.process_index == jax.process_index()]


def replicated(tree: Any, mesh: Mesh) -> Any:
    """``tree``'s arrays (the same on every process) as global arrays replicated on every device of ``mesh``."""
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(lambda x: _global_from_host(np.asarray(x), sharding), tree)


def _global_from_host(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from the whole ``host`` value, which every process holds alike."""
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def host_local_to_global(tree: Any, sharding: NamedSharding) -> Any:
    """Global arrays from each process's block of a batch sharded along its leading axis (``sharding``): in one
    process a plain ``device_put``, across processes :func:`jax.make_array_from_process_local_data`."""
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def gather(tree: Any) -> Any:
    """Numpy copies of ``tree``'s arrays on every process: global arrays sharded over several processes are
    all-gathered (every process must call it, in the same order); others are fetched as by :func:`jax.device_get`."""

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            from jax.experimental import multihost_utils  # noqa: PLC0415 - needed only across processes

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(fetch, tree)


def sync(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (nothing in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # noqa: PLC0415

        multihost_utils.sync_global_devices(name)


def broadcast(tree: Any) -> Any:
    """Process 0's value of ``tree`` (numpy arrays, numbers) on every process (itself in one process)."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils  # noqa: PLC0415

    return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))


def leading_sharding(shape: Sequence[int], mesh: Mesh, size: int, position: int = 0) -> NamedSharding:
    """The sharding of an array of ``shape`` whose axis ``position`` of length ``size`` (replicas, batch) is split
    over ``mesh``'s one axis; arrays without such an axis are replicated. A heuristic for speed only: any sharding
    gives the same values under ``jit``."""
    (axis,) = mesh.axis_names
    if len(shape) > position and shape[position] == size:
        return NamedSharding(mesh, P(*([None] * position), axis))
    return NamedSharding(mesh, P())


def shard_leading(tree: Any, mesh: Mesh, size: int) -> Any:
    """``tree`` (the same on every process) as global arrays on ``mesh``: arrays whose leading axis has length
    ``size`` split along it (each process keeps its devices' blocks), all others replicated."""
    host = gather(tree)
    return jax.tree.map(lambda x: _global_from_host(x, leading_sharding(x.shape, mesh, size)), host)
