"""Batching a data set into padded ``Graph`` buckets with labels, shuffled per epoch, prefetched to the device."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np

from jaxatom.data.dataset import PER_ATOM_PROPERTIES, Dataset
from jaxatom.errors import ConfigError, StructureError
from jaxatom.graph import Graph, HostGraph, batch_graphs, bucket_size, float_dtype
from jaxatom.neighbors import host_graph

__all__ = ["GraphLoader"]

Batch = tuple[Graph, dict[str, np.ndarray]]


class GraphLoader:
    """Padded batches of a :class:`Dataset`: ``(graph, labels)`` with ``labels[name]`` shaped like the graph
    (per structure ``[G, ...]``, per atom ``[N, ...]``, zero in padding).

    Neighbour lists are computed once, here; every batch has ``n_graph = batch_size + 1`` and bucketed node and edge
    counts, so an epoch compiles once per bucket. With ``n_shards > 1`` (data-parallel training) each batch is that
    many equal shards stacked along a leading axis, padded to common shapes. Shuffling is seeded per epoch
    (``np.random.default_rng([seed, epoch])``), so a resumed run sees the same order.

    ``atom_offsets`` (``[100]`` eV per atomic number, e.g. ``Potential.atom_offsets()``: mean energy per atom plus
    reference energies) are subtracted from the energies in float64 before the labels are cast to the working dtype,
    so large total energies keep their precision in float32.
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
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        if batch_size % n_shards:
            raise ConfigError(f"batch_size {batch_size} must be a multiple of the number of devices ({n_shards})")
        self.n_shards = n_shards
        dataset.require(*properties)
        self.dataset, self.batch_size, self.properties = dataset, batch_size, tuple(properties)
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.energy = None
        if "energy" in self.properties:
            self.energy = dataset.properties["energy"].astype(np.float64)
            if atom_offsets is not None:
                per_atom = np.asarray(atom_offsets, np.float64)[dataset.numbers]
                self.energy = self.energy - np.add.reduceat(per_atom, dataset.atom_offsets[:-1])
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
        shards stacked along a leading axis (same padded shapes, for data-parallel training)."""
        if self.n_shards == 1:
            return self._padded(indices, self.batch_size + 1)
        chunks = np.array_split(np.asarray(indices), self.n_shards)
        n_node = max(bucket_size(sum(self.graphs[i].n_node for i in c) + 1, 8) for c in chunks)
        n_edge = max(bucket_size(max(sum(self.graphs[i].n_edge for i in c), 1), 64) for c in chunks)
        n_graph = self.batch_size // self.n_shards + 1
        shards = [self._padded(c, n_graph, n_node, n_edge) for c in chunks]
        return jax.tree.map(lambda *xs: np.stack(xs), *shards)

    def _padded(self, indices: Sequence[int], n_graph: int, n_node: int | None = None, n_edge: int | None = None):
        graph = batch_graphs([self.graphs[i] for i in indices], n_node=n_node, n_edge=n_edge, n_graph=n_graph)
        dtype = float_dtype()
        labels = {}
        for name in self.properties:
            values = self.energy if name == "energy" else self.dataset.properties[name]
            if name in PER_ATOM_PROPERTIES:
                padded = np.zeros((graph.positions.shape[0],) + values.shape[1:], dtype)
                atoms = np.concatenate([np.arange(*self.dataset.atom_offsets[i : i + 2]) for i in indices] or [[]])
                atoms = atoms.astype(np.int64)
                padded[: len(atoms)] = values[atoms]
            else:
                padded = np.zeros((n_graph,) + values.shape[1:], dtype)
                padded[: len(indices)] = values[np.asarray(indices, np.int64)]
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
        with ThreadPoolExecutor(max_workers=1) as pool:
            batches = self.host_batches(epoch)
            pending = [pool.submit(_next_on_device, batches, sharding) for _ in range(max(1, prefetch))]
            while True:
                batch = pending.pop(0).result()
                if batch is None:
                    return
                pending.append(pool.submit(_next_on_device, batches, sharding))
                yield batch


def _host_graph(dataset: Dataset, index: int, cutoff: float) -> HostGraph:
    """The neighbour graph of structure ``index``; a structure the graph cannot be built for is named."""
    atoms = dataset.atoms_of(index)
    try:
        positions, numbers = dataset.positions[atoms], dataset.numbers[atoms]
        return host_graph(positions, numbers, cutoff, dataset.cell[index], dataset.pbc[index])
    except StructureError as err:
        raise StructureError(f"structure {index} of the data set: {err}") from err


def _next_on_device(batches: Iterator[Batch], sharding) -> Batch | None:
    batch = next(batches, None)
    return None if batch is None else jax.device_put(batch, sharding)
