"""The padded graph pytree shared by training, MD and the ASE calculator, and the padding contract.

A :class:`Graph` holds ``G`` graphs (structures) with ``N`` nodes (atoms) and ``E`` directed edges in static shapes:

* edge ``e`` carries a message from ``senders[e]`` (neighbour *j*) to ``receivers[e]`` (centre *i*), and its vector is
  ``r_ij = positions[senders] - positions[receivers] + shifts`` (SchNetPack's convention); lists are full (both
  directions);
* padding nodes have ``species == 0`` and belong to the last graph, which is a dummy that every reduction ignores;
* padding edges join a padding node to itself with a shift of length :data:`PADDING_DISTANCE`, beyond any cutoff, so
  every cutoff function is exactly zero on them;
* shapes are rounded up into a few buckets (:func:`bucket_size`) so that a pass over a data set compiles a bounded
  number of times;
* molecules may instead be laid out densely (:attr:`Graph.blocks`): structure ``b`` owns block ``b`` of ``M`` atom
  slots and every ordered pair of slots is an edge, ``e = (b M + i) M + j`` from slot ``j`` to slot ``i``; pairs
  with a padding slot and the diagonal ``i = j`` are padding edges. Models then replace gathers and scatter-adds over
  edges by reductions over ``[B, M, M, F]`` blocks (MD picks this layout for molecules, see ``jaxatom.md.neighbors``).

Host-side, one structure is a :class:`HostGraph` of unpadded numpy arrays (edges computed once, see
:mod:`jaxatom.neighbors`); :func:`batch_graphs` pads a list of them into one :class:`Graph`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from flax import struct

__all__ = [
    "Graph",
    "HostGraph",
    "PADDING_DISTANCE",
    "batch_graphs",
    "bucket_size",
    "dense_edges",
    "float_dtype",
    "enable_x64",
]

#: Length (Å) of the displacement given to padding edges; larger than any supported cutoff.
PADDING_DISTANCE = 1000.0


def enable_x64(enabled: bool = True) -> None:
    """Switch JAX (and so jaxatom) to float64 positions, energies and integrator state, or back to float32.

    jaxatom never flips this flag itself; call it before building graphs or models.
    """
    jax.config.update("jax_enable_x64", bool(enabled))


def float_dtype() -> np.dtype:
    """The working float dtype: float64 when JAX's x64 mode is on, float32 otherwise."""
    return np.dtype(np.float64 if jax.config.jax_enable_x64 else np.float32)


@struct.dataclass
class Graph:
    """A padded batch of structures (a JAX pytree). Units: Å.

    Attributes:
        positions: ``[N, 3]`` Cartesian positions (Å).
        species: ``[N]`` atomic numbers, 0 for padding nodes.
        node_graph: ``[N]`` index of the graph each node belongs to (padding nodes: ``G - 1``).
        senders: ``[E]`` neighbour index *j* of each edge.
        receivers: ``[E]`` centre index *i* of each edge.
        shifts: ``[E, 3]`` Cartesian periodic image offset of each edge (Å).
        cell: ``[G, 3, 3]`` cell vectors as rows (Å); zeros for molecules.
        pbc: ``[G, 3]`` periodic directions.
        n_node: ``[G]`` number of real atoms per graph (0 for padding graphs).
        total_charge: ``[G]`` total charge of each structure (e), or None for neutral structures; heads that predict
            partial charges (``DipoleMoment``) make them sum to it.
        fidelity: ``[G]`` int, the level of theory (index into a multi-fidelity model's ``fidelities``) each
            structure is evaluated at, or None for every model's target (highest) fidelity; single-fidelity models
            ignore it.
        blocks: ``[B, M]`` int, the dense layout of molecules (module docstring): the node index of slot ``m`` of
            block ``b`` (a padding node for empty slots), or None for a sparse edge list. With blocks, ``E = B M²``
            and the edges are every pair of slots of a block in row-major order, so the sparse code path gives the
            same results on the same graph.
        reverse_halves: static; when True, ``E`` is even and edge ``e + E/2`` has the same length as edge ``e`` (its
            reverse, for real edges), so models may compute distance-only edge features (radial basis, cutoff,
            SchNet's filter network) for the first half and reuse them for the second.
    """

    positions: jax.Array
    species: jax.Array
    node_graph: jax.Array
    senders: jax.Array
    receivers: jax.Array
    shifts: jax.Array
    cell: jax.Array
    pbc: jax.Array
    n_node: jax.Array
    total_charge: jax.Array | None = None
    fidelity: jax.Array | None = None
    blocks: jax.Array | None = None
    reverse_halves: bool = struct.field(pytree_node=False, default=False)

    @property
    def n_graph(self) -> int:
        """Number of graph slots ``G`` including the dummy padding graph."""
        return self.cell.shape[0]

    @property
    def node_mask(self) -> jax.Array:
        """``[N]`` True for real atoms."""
        return self.species > 0

    @property
    def edge_mask(self) -> jax.Array:
        """``[E]`` True for edges of real atoms (the diagonal of a dense block included: it is beyond the cutoff)."""
        return self.species[self.receivers] > 0

    @property
    def dense(self) -> bool:
        """Whether the edges are laid out in dense blocks (:attr:`blocks`)."""
        return self.blocks is not None

    def to_blocks(self, x: jax.Array) -> jax.Array:
        """Per-atom ``x [N, ...]`` gathered into the dense blocks: ``[B, M, ...]``."""
        return x[self.blocks]

    def pairs(self, x: jax.Array) -> jax.Array:
        """Per-edge ``x [E, ...]`` of a dense graph viewed as ``[B, M(i), M(j), ...]``."""
        b, m = self.blocks.shape
        return x.reshape((b, m, m) + x.shape[1:])

    def from_blocks(self, x: jax.Array) -> jax.Array:
        """Per-slot ``x [B, M, ...]`` summed back onto the atoms: ``[N, ...]`` (empty slots add to padding nodes)."""
        b, m = self.blocks.shape
        flat = x.reshape((b * m,) + x.shape[2:])
        return jax.ops.segment_sum(flat, self.blocks.reshape(-1), num_segments=self.positions.shape[0])

    @property
    def graph_mask(self) -> jax.Array:
        """``[G]`` True for real structures."""
        return self.n_node > 0

    def unpad(self, outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Host copies of ``outputs`` computed on this graph (e.g. :meth:`Potential.evaluate`'s) without the padding:
        per-structure arrays ``[G, ...]`` cut to the real structures, per-atom ``[N, ...]`` to the real atoms (real
        ones come first in both). For use outside ``jit``."""
        n_node = np.asarray(self.n_node)
        n_real = {self.n_graph: int(np.count_nonzero(n_node)), self.positions.shape[0]: int(n_node.sum())}
        values = {name: np.asarray(value) for name, value in outputs.items()}
        return {name: v[: n_real[len(v)]] if v.ndim and len(v) in n_real else v for name, v in values.items()}

    def edge_vectors(self, positions: jax.Array | None = None, first_half: bool = False) -> jax.Array:
        """``[E, 3]`` edge vectors ``r_ij = R[j] - R[i] + shift_ij`` (Å), optionally for other ``positions``;
        with ``first_half`` only those of the first ``E/2`` edges (for graphs with ``reverse_halves``)."""
        positions = self.positions if positions is None else positions
        if self.dense:  # R[j] - R[i] within each block: no per-edge gather (its gradient would be a scatter-add)
            slots = self.to_blocks(positions)
            vectors = slots[:, None, :, :] - slots[:, :, None, :] + self.pairs(self.shifts)
            return vectors.reshape(self.shifts.shape)
        senders, receivers, shifts = self.senders, self.receivers, self.shifts
        if first_half:
            half = senders.shape[0] // 2
            senders, receivers, shifts = senders[:half], receivers[:half], shifts[:half]
        return positions[senders] - positions[receivers] + shifts


@dataclass(frozen=True)
class HostGraph:
    """One unpadded structure with its edges, as numpy arrays on the host. Units: Å.

    ``positions [n, 3]``, ``species [n]``, ``cell [3, 3]``, ``pbc [3]``, ``senders``/``receivers [e]``,
    ``shifts [e, 3]``, ``total_charge`` (e), ``fidelity`` (index of the level of theory, None: the model's target).
    With ``reverse_halves`` the second half of the edges reverses the first, edge for edge (``e`` is even), and
    :func:`batch_graphs` keeps that layout for the batch.
    """

    positions: np.ndarray
    species: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    shifts: np.ndarray
    reverse_halves: bool = False
    total_charge: float = 0.0
    fidelity: int | None = None

    @property
    def n_node(self) -> int:
        return len(self.species)

    @property
    def n_edge(self) -> int:
        return len(self.senders)

    @property
    def periodic(self) -> bool:
        return bool(np.any(self.pbc))


def bucket_size(n: int, multiple: int, growth: float = 1.25) -> int:
    """Smallest bucket ``>= n``; buckets are ``multiple * ceil(growth**k)``, so a range of sizes maps to few shapes."""
    if n <= multiple:
        return multiple
    k = math.ceil(math.log(n / multiple) / math.log(growth) - 1e-9)
    while True:
        size = multiple * math.ceil(growth**k)
        if size >= n:
            return size
        k += 1


def _fidelities(graphs: Sequence[HostGraph], n_graph: int) -> np.ndarray | None:
    """``[n_graph]`` fidelity index of each structure (padding graphs 0), or None when no structure has one."""
    given = [g.fidelity is not None for g in graphs]
    if not any(given):
        return None
    if not all(given):
        raise ValueError("some structures have a fidelity and others not; give every structure of a batch one")
    return np.array([g.fidelity for g in graphs] + [0] * (n_graph - len(graphs)), np.int32)


def dense_edges(blocks: np.ndarray, filled: np.ndarray, dtype=np.float64) -> tuple[np.ndarray, ...]:
    """``senders [E]``, ``receivers [E]`` and ``shifts [E, 3]`` of the dense layout of ``blocks [B, M]`` (node
    indices) with real slots ``filled [B, M]``: every ordered pair of slots, ``e = (b M + i) M + j``; pairs with an
    empty slot and the diagonal get a shift of :data:`PADDING_DISTANCE`."""
    n_block, size = blocks.shape
    receivers = np.repeat(blocks, size, axis=1).reshape(-1).astype(np.int32)
    senders = np.tile(blocks, (1, size)).reshape(-1).astype(np.int32)
    real = filled[:, :, None] & filled[:, None, :] & ~np.eye(size, dtype=bool)
    shifts = np.zeros((n_block * size * size, 3), dtype)
    shifts[~real.reshape(-1), 0] = PADDING_DISTANCE
    return senders, receivers, shifts


def batch_graphs(
    graphs: Sequence[HostGraph],
    n_node: int | None = None,
    n_edge: int | None = None,
    n_graph: int | None = None,
    node_multiple: int = 8,
    edge_multiple: int = 64,
    block_size: int | None = None,
) -> Graph:
    """Pad a list of structures into one :class:`Graph` of numpy arrays.

    Args:
        graphs: the structures, each with its edges.
        n_node, n_edge, n_graph: padded sizes; by default the bucket sizes (:func:`bucket_size`) above the totals, with
            at least one padding node and a dummy graph.
        node_multiple, edge_multiple: granularity of the node and edge buckets.
        block_size: lay molecules out densely in blocks of this many atom slots (:attr:`Graph.blocks`, one block per
            graph slot but the dummy: ``n_edge = (n_graph - 1) block_size²``) instead of copying their edges. The
            results are the same, the speed differs (``docs/performance.md``).

    When every structure lists its edges as reverse halves (as :mod:`jaxatom.neighbors` does) and ``n_edge`` is
    even, the sparse batch keeps that layout and sets :attr:`Graph.reverse_halves`. ``Graph.fidelity`` is set when
    the structures have one (padding graphs get 0), None when none has.
    """
    if len(graphs) == 0:
        raise ValueError("batch_graphs needs at least one structure")
    real_nodes = sum(g.n_node for g in graphs)
    n_node = bucket_size(real_nodes + 1, node_multiple) if n_node is None else n_node
    n_graph = len(graphs) + 1 if n_graph is None else n_graph
    if block_size is None:
        n_edge = bucket_size(max(sum(g.n_edge for g in graphs), 1), edge_multiple) if n_edge is None else n_edge
    else:
        _check_dense(graphs, block_size, n_edge, n_graph)
        n_edge = (n_graph - 1) * block_size**2
    real_edges = sum(g.n_edge for g in graphs) if block_size is None else 0
    if n_node < real_nodes + 1 or n_edge < real_edges or n_graph < len(graphs) + 1:
        raise ValueError(
            f"padded sizes too small: need n_node >= {real_nodes + 1}, n_edge >= {real_edges}, "
            f"n_graph >= {len(graphs) + 1} (one padding node and one dummy graph are always required), "
            f"got {n_node}, {n_edge}, {n_graph}"
        )
    dtype = float_dtype()
    positions = np.zeros((n_node, 3), dtype)
    species = np.zeros(n_node, np.int32)
    node_graph = np.full(n_node, n_graph - 1, np.int32)
    cell = np.zeros((n_graph, 3, 3), dtype)
    pbc = np.zeros((n_graph, 3), bool)
    counts = np.zeros(n_graph, np.int32)
    charges = np.zeros(n_graph, dtype)
    starts = np.cumsum([0] + [g.n_node for g in graphs])
    for index, g in enumerate(graphs):
        positions[starts[index] : starts[index + 1]] = g.positions
        species[starts[index] : starts[index + 1]] = g.species
        node_graph[starts[index] : starts[index + 1]] = index
        cell[index], pbc[index] = g.cell, g.pbc
        counts[index], charges[index] = g.n_node, g.total_charge
    if block_size is None:
        senders, receivers, shifts, halves = _sparse_edges(graphs, starts, n_edge, real_nodes, dtype)
        blocks = None
    else:
        first = np.zeros(n_graph - 1, np.int64)
        first[: len(graphs)] = starts[:-1]
        blocks, filled = _blocks(first, counts[:-1], block_size, real_nodes)
        (senders, receivers, shifts), halves = dense_edges(blocks, filled, dtype), False
    return Graph(
        positions=positions,
        species=species,
        node_graph=node_graph,
        senders=senders,
        receivers=receivers,
        shifts=shifts,
        cell=cell,
        pbc=pbc,
        n_node=counts,
        total_charge=charges,
        fidelity=_fidelities(graphs, n_graph),
        blocks=blocks,
        reverse_halves=halves,
    )


def _check_dense(graphs: Sequence[HostGraph], block_size: int, n_edge: int | None, n_graph: int) -> None:
    """Refuse structures the dense layout cannot hold."""
    if any(g.periodic for g in graphs):
        raise ValueError("the dense layout is for molecules; periodic structures need their neighbour list")
    largest = max(g.n_node for g in graphs)
    if largest > block_size:
        raise ValueError(f"block_size {block_size} is smaller than the largest structure ({largest} atoms)")
    if n_edge is not None and n_edge != (n_graph - 1) * block_size**2:
        raise ValueError(f"a dense batch has n_edge = (n_graph - 1) block_size² = {(n_graph - 1) * block_size**2}")


def _blocks(first: np.ndarray, counts: np.ndarray, size: int, pad_node: int) -> tuple[np.ndarray, np.ndarray]:
    """``[B, M]`` node index of each slot of blocks holding ``counts [B]`` atoms from node ``first [B]`` on
    (``pad_node`` for empty slots) and ``[B, M]`` whether the slot holds an atom."""
    slot = np.arange(size)
    filled = slot[None, :] < counts[:, None]
    return np.where(filled, first[:, None] + slot[None, :], pad_node).astype(np.int32), filled


def _sparse_edges(graphs: Sequence[HostGraph], starts: np.ndarray, n_edge: int, pad_node: int, dtype):
    """The structures' own edges copied into ``n_edge`` slots: ``(senders, receivers, shifts, reverse_halves)``.

    Reverse halves: every structure's first half of edges goes to the batch's first half, its second half (the
    reverses) to the same offsets in the batch's second half; second-half padding edges point the other way."""
    senders = np.full(n_edge, pad_node, np.int32)
    receivers = np.full(n_edge, pad_node, np.int32)
    shifts = np.zeros((n_edge, 3), dtype)
    shifts[:, 0] = PADDING_DISTANCE
    halves = n_edge % 2 == 0 and all(g.reverse_halves for g in graphs)
    half = n_edge // 2
    if halves:
        shifts[half:, 0] = -PADDING_DISTANCE
    edge0 = 0
    for node0, g in zip(starts, graphs, strict=False):
        parts = [(slice(edge0, edge0 + g.n_edge), slice(None))]
        if halves:
            m = g.n_edge // 2
            parts = [(slice(edge0, edge0 + m), slice(0, m)), (slice(half + edge0, half + edge0 + m), slice(m, None))]
        for target, source in parts:
            senders[target] = g.senders[source] + node0
            receivers[target] = g.receivers[source] + node0
            shifts[target] = g.shifts[source]
        edge0 += g.n_edge // 2 if halves else g.n_edge
    return senders, receivers, shifts, halves
