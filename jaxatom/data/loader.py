"""Batching a data set into padded ``Graph`` buckets with labels, shuffled per epoch, prefetched to the device."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np

from jaxatom.data.dataset import Dataset, describe_structures
from jaxatom.distributed import host_local_to_global
from jaxatom.errors import ConfigError, DataError, StructureError
from jaxatom.graph import Graph, HostGraph, batch_graphs, bucket_size, float_dtype
from jaxatom.neighbors import host_graph

__all__ = ["GraphLoader", "prefetched", "fidelity_of"]

Batch = tuple[Graph, dict[str, np.ndarray]]


class GraphLoader:
    """Padded batches of a :class:`Dataset`: ``(graph, labels)`` with ``labels[name]`` for every property in
    ``properties``, shaped by the data set's declaration (per structure ``[G, ...]``, per atom ``[N, ...]``, zero in
    padding). When the data set has ``total_charge``, each graph carries it (``Graph.total_charge [G]``, e); when it
    has ``fidelity`` (the level of theory of each structure's labels, an index), so does each graph
    (``Graph.fidelity [G]``).

    Neighbour lists are computed once, here; every batch has ``n_graph = batch_size + 1`` and bucketed node and edge
    counts, so an epoch compiles once per bucket. With ``n_shards > 1`` (data-parallel training) each batch is that
    many equal shards stacked along a leading axis, padded to common shapes; with ``local_shards`` (the shards of this
    process in a multi-process run, :func:`jaxatom.distributed.local_shard_indices`) only those are built, padded to
    the shapes of the whole batch, so every process agrees on them. Shuffling is seeded per epoch
    (``np.random.default_rng([seed, epoch])``), so a resumed run sees the same order.

    ``offsets`` (name -> ``[100]`` table per atomic number, in the property's unit) are subtracted in float64 before
    the labels are cast to the working dtype, so large totals keep their precision in float32: per atom
    ``y_i - table[Z_i]``; per structure ``y - sum_i table[Z_i]``, or ``y - mean_i table[Z_i]`` for the names in
    ``intensive`` (targets the model averages over atoms). ``atom_offsets`` (``[100]`` eV, e.g.
    ``Potential.atom_offsets()``: mean energy per atom plus reference energies) is short for
    ``offsets={"energy": atom_offsets}`` and ignored when ``energy`` is not loaded. A table ``[fidelities, 100]``
    (a multi-fidelity output's, :meth:`~jaxatom.potential.OutputScaling.tables`) is taken at each structure's
    ``fidelity``.
    """

    def __init__(
        self,
        dataset: Dataset,
        cutoff: float,
        batch_size: int,
        properties: Sequence[str] = ("energy", "forces"),
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        atom_offsets: np.ndarray | None = None,
        n_shards: int = 1,
        offsets: Mapping[str, np.ndarray] | None = None,
        intensive: Collection[str] = (),
        local_shards: Sequence[int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        if batch_size % n_shards:
            raise ConfigError(f"batch_size {batch_size} must be a multiple of the number of devices ({n_shards})")
        self.n_shards = n_shards
        self.local_shards = None if local_shards is None else tuple(int(i) for i in local_shards)
        if self.local_shards is not None and not all(0 <= i < n_shards for i in self.local_shards):
            raise ConfigError(f"local_shards {list(self.local_shards)} must lie in 0..{n_shards - 1}")
        dataset.require(*properties)
        self.dataset, self.batch_size, self.properties = dataset, batch_size, tuple(properties)
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        fidelity_of(dataset)  # checks the data set's fidelity indices
        tables = _offset_tables(dataset, self.properties, offsets, atom_offsets)
        _check_intensive(dataset, self.properties, intensive)
        self.labels = {name: dataset.properties[name] for name in self.properties}
        self.labels.update({n: _without_offsets(dataset, n, t, n in intensive) for n, t in tables.items()})
        self.graphs: list[HostGraph] = [_host_graph(dataset, i, cutoff) for i in range(len(dataset))]

    def __len__(self) -> int:
        full, rest = divmod(len(self.dataset), self.batch_size)
        # a last batch too small to give every device a structure is dropped in data-parallel mode
        keep_rest = rest > 0 and not self.drop_last and rest >= self.n_shards
        return full + int(keep_rest)

    def order(self, epoch: int) -> np.ndarray:
        """The structure order of ``epoch``."""
        if not self.shuffle:
            return np.arange(len(self.dataset))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))

    def batch(self, indices: Sequence[int]) -> Batch:
        """The padded graph and labels of the structures at ``indices``; with ``n_shards > 1``, that many equal
        shards stacked along a leading axis (same padded shapes, for data-parallel training; only ``local_shards`` of
        them if set)."""
        if self.n_shards == 1:
            return self._padded(indices, self.batch_size + 1)
        chunks = np.array_split(np.asarray(indices), self.n_shards)
        return self.stacked(chunks, self.batch_size // self.n_shards + 1, self.local_shards)

    def stacked(self, chunks: Sequence[Sequence[int]], n_graph: int, only: Sequence[int] | None = None) -> Batch:
        """The padded batches of the structures of each of ``chunks``, stacked along a leading axis ``[len(chunks),
        ...]`` with common shapes (``n_graph`` graphs each, bucketed node and edge counts): data-parallel shards, or
        the batches of ensemble members. With ``only``, just those chunks are built (``[len(only), ...]``), with the
        shapes all chunks need."""
        n_node = max(bucket_size(sum(self.graphs[i].n_node for i in c) + 1, 8) for c in chunks)
        n_edge = max(bucket_size(max(sum(self.graphs[i].n_edge for i in c), 1), 64) for c in chunks)
        chosen = chunks if only is None else [chunks[i] for i in only]
        shards = [self._padded(c, n_graph, n_node, n_edge) for c in chosen]
        return jax.tree.map(lambda *xs: np.stack(xs), *shards)

    def _padded(self, indices: Sequence[int], n_graph: int, n_node: int | None = None, n_edge: int | None = None):
        graph = batch_graphs([self.graphs[i] for i in indices], n_node=n_node, n_edge=n_edge, n_graph=n_graph)
        dtype = float_dtype()
        offsets = self.dataset.atom_offsets
        atoms = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in indices] or [[]]).astype(np.int64)
        structures = np.asarray(indices, np.int64)
        labels = {}
        for name, values in self.labels.items():
            rows, size = (atoms, graph.positions.shape[0]) if self.dataset.is_per_atom(name) else (structures, n_graph)
            padded = np.zeros((size,) + values.shape[1:], dtype)
            padded[: len(rows)] = values[rows]
            labels[name] = padded
        return graph, labels

    def host_batches(self, epoch: int = 0) -> Iterator[Batch]:
        """The batches of ``epoch`` as numpy arrays."""
        order = self.order(epoch)
        for k in range(len(self)):
            yield self.batch(order[k * self.batch_size : (k + 1) * self.batch_size])

    def __call__(self, epoch: int = 0, prefetch: int = 2, sharding=None) -> Iterator[Batch]:
        """The batches of ``epoch`` on the device (or placed with ``sharding``); the next ``prefetch`` are built on a
        host thread and transferred while the current one is in use."""
        return prefetched(self.host_batches(epoch), prefetch, sharding)


def prefetched(batches: Iterator[Batch], prefetch: int = 2, sharding=None) -> Iterator[Batch]:
    """The host ``batches`` on the device (or placed with ``sharding``); the next ``prefetch`` are built on a host
    thread and transferred while the current one is in use."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(_next_on_device, batches, sharding) for _ in range(max(1, prefetch))]
        while True:
            batch = pending.pop(0).result()
            if batch is None:
                return
            pending.append(pool.submit(_next_on_device, batches, sharding))
            yield batch


def _offset_tables(
    dataset: Dataset, properties: Sequence[str], offsets: Mapping[str, np.ndarray] | None, atom_offsets
) -> dict[str, np.ndarray]:
    """The ``[100]`` float64 offset tables by property name, checked against the properties and elements."""
    tables = dict(offsets or {})
    if atom_offsets is not None:
        if "energy" in tables:
            raise ConfigError("energy offsets are given twice (atom_offsets and offsets['energy']); give them once")
        if "energy" in properties:
            tables["energy"] = atom_offsets
    unknown = sorted(set(tables) - set(properties))
    if unknown:
        raise ConfigError(f"offsets for {', '.join(unknown)}, which the loader does not load; load them or drop them")
    checked = {}
    fidelity = fidelity_of(dataset)
    for name, table in tables.items():
        table = np.asarray(table, np.float64)
        if table.ndim not in (1, 2) or table.shape[-1] <= dataset.numbers.max():
            raise ConfigError(
                f"offsets[{name!r}] must be a table [100] indexed by atomic number covering Z up to "
                f"{dataset.numbers.max()} (or [fidelities, 100]), got shape {list(table.shape)}"
            )
        if table.ndim == 2 and (fidelity is None or fidelity.max() >= len(table)):
            found = "has no 'fidelity' property" if fidelity is None else f"has fidelity {fidelity.max()}"
            raise DataError(
                f"offsets[{name!r}] are given for {len(table)} fidelities, but the data set {found}; label every "
                f"structure with its fidelity index 0..{len(table) - 1}"
            )
        checked[name] = table
    return checked


def fidelity_of(dataset: Dataset) -> np.ndarray | None:
    """``[S]`` int fidelity index of each structure (the data set's ``fidelity`` property), or None without one; a
    :class:`DataError` for values that are not non-negative integers."""
    if "fidelity" not in dataset.properties:
        return None
    values = np.asarray(dataset.properties["fidelity"])
    indices = np.rint(values).astype(np.int64)
    bad = np.flatnonzero((values != indices) | (indices < 0))
    if bad.size:
        raise DataError(
            f"'fidelity' must be a level-of-theory index 0, 1, ... per structure; {describe_structures(bad)} "
            f"{'has' if bad.size == 1 else 'have'} {values[bad[0]]!r}"
        )
    return indices


def _check_intensive(dataset: Dataset, properties: Sequence[str], intensive: Collection[str]) -> None:
    wrong = sorted(n for n in intensive if n not in properties or dataset.is_per_atom(n))
    if wrong:
        raise ConfigError(
            f"intensive names {', '.join(wrong)}, which are not per-structure properties the loader loads; "
            "list only those"
        )


def _without_offsets(dataset: Dataset, name: str, table: np.ndarray, intensive: bool) -> np.ndarray:
    """``dataset.properties[name]`` in float64 minus its offsets: per atom ``table[Z_i]``, per structure
    ``sum_i table[Z_i]`` (the mean over the atoms when ``intensive``)."""
    values = dataset.properties[name].astype(np.float64)
    if table.ndim == 2:
        per_atom = table[np.repeat(fidelity_of(dataset), dataset.n_atoms), dataset.numbers]
    else:
        per_atom = table[dataset.numbers]
    if not dataset.is_per_atom(name):
        per_atom = np.add.reduceat(per_atom, dataset.atom_offsets[:-1])
        if intensive:
            per_atom = per_atom / dataset.n_atoms
    return values - per_atom.reshape((-1,) + (1,) * (values.ndim - 1))


def _host_graph(dataset: Dataset, index: int, cutoff: float) -> HostGraph:
    """The neighbour graph of structure ``index`` (with its ``total_charge``, if the data set has one); a structure
    the graph cannot be built for is named."""
    atoms = dataset.atoms_of(index)
    charge = float(dataset.properties["total_charge"][index]) if "total_charge" in dataset.properties else 0.0
    fidelity = None if "fidelity" not in dataset.properties else int(round(dataset.properties["fidelity"][index]))
    try:
        positions, numbers = dataset.positions[atoms], dataset.numbers[atoms]
        graph = host_graph(positions, numbers, cutoff, dataset.cell[index], dataset.pbc[index], total_charge=charge)
        return graph if fidelity is None else dataclasses.replace(graph, fidelity=fidelity)
    except StructureError as err:
        raise StructureError(f"structure {index} of the data set: {err}") from err


def _next_on_device(batches: Iterator[Batch], sharding) -> Batch | None:
    """The next batch on the device; with a sharding over several processes, this process's block of it becomes
    its part of the global batch (:func:`jaxatom.distributed.host_local_to_global`)."""
    batch = next(batches, None)
    if batch is None:
        return None
    if sharding is not None and not sharding.is_fully_addressable:
        return host_local_to_global(batch, sharding)
    return jax.device_put(batch, sharding)
