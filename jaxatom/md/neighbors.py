"""Edges for MD on the device: static all-pairs edges for molecules, all pairs over lattice images for small cells,
slabs and wires, jax-md neighbour lists for periodic or large systems, and the :class:`Graph` of one structure built
from its positions and its list.

Neighbour lists follow DESIGN.md's overflow policy: jax-md flags an overflow instead of dropping pairs silently;
the driver discards the chunk, grows the capacity (never shrinks it) and reruns the chunk from its saved state.
Periodic cells use fractional coordinates internally (jax-md ``periodic_general``); edge shifts are the lattice
vectors of the minimum image, which is exact as long as ``cutoff + skin`` is at most half the smallest
perpendicular width of the cell, and that is enforced. Cells narrower than that, and mixed periodicity (slabs,
wires), use ``"images"``: every pair ``(i, j)`` with every lattice image that can lie within the cutoff along the
periodic directions, a static edge set whose shifts follow the atoms (``N² × images`` edges, for small cells).

A changing cell ``h`` (constant-pressure MD) keeps both regimes exact down to a linear scale ``cell_margin`` of the
starting cell ``h₀`` (the smallest singular value of ``h₀⁻¹h``): lists are built on fractional coordinates in the
metric of ``h₀`` with cutoff ``cutoff / cell_margin``, which contains every pair within ``cutoff`` in ``h``, and
images are counted for that cutoff too; shifts always use the current cell.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax_md import partition, space

from jaxatom.errors import ConfigError, StructureError
from jaxatom.graph import PADDING_DISTANCE, Graph, bucket_size, dense_edges
from jaxatom.md.padding import ReplicaAtoms

__all__ = ["EdgeBuilder", "perpendicular_widths", "bead_cells", "MODES"]

#: ``auto`` picks dense blocks for molecules of up to :data:`DENSE_MAX_ATOMS` atoms where the model runs faster on them
#: (its representation's ``md_dense_blocks``: SchNet), all-pairs lists for molecules of up to
#: :data:`ALL_PAIRS_MAX_ATOMS` atoms, images for cells too small for a list and for slabs and wires, and a list
#: otherwise. ``dense`` and ``all_pairs`` give the same results (every pair; the model's cutoff masks distant ones).
MODES = ("auto", "dense", "all_pairs", "list", "images")
ALL_PAIRS_MAX_ATOMS = 256
DENSE_MAX_ATOMS = 64
#: Largest static edge set of the ``images`` mode (pairs × images) before a larger cell with a list is asked for.
MAX_IMAGE_EDGES = 2_000_000
EDGE_MULTIPLE = 64


def perpendicular_widths(cell: np.ndarray) -> np.ndarray:
    """``[3]`` distances (Å) between opposite faces of the cell spanned by the rows of ``cell``."""
    volume = abs(np.linalg.det(cell))
    return np.array([volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)])


@contextmanager
def _quiet_jax_md():
    """jax-md 0.2 scatters int64 into int32 buffers under x64, which JAX flags with a FutureWarning at trace time;
    the values are indices far below 2³¹, so the cast is exact."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="scatter inputs have incompatible types", category=FutureWarning)
        yield


@dataclass(frozen=True, eq=False)
class EdgeBuilder:
    """How the edges of one structure of ``N`` atoms are made on the device (static configuration).

    Attributes:
        species: ``[N]`` atomic numbers.
        cell: ``[3, 3]`` cell rows (Å), zeros for molecules.
        periodic: fully periodic (slabs and wires use ``"images"``).
        cutoff: model cutoff (Å).
        skin: neighbour-list skin (Å); the list holds pairs within ``cutoff + skin`` and is rebuilt when an atom has
            moved more than ``skin / 2``.
        mode: ``"dense"``, ``"all_pairs"``, ``"list"`` or ``"images"``.
        capacity_margin: allocated edge capacity relative to the pairs present (rounded up to a multiple of 64).
        total_charge: the structure's total charge (e), for models whose charges sum to it.
        pbc: periodicity along each cell vector.
        cell_margin: the smallest linear scale of the cell (relative to ``cell``) the edges stay exact for, below 1
            for runs whose cell changes (see the module docstring).
        replicas: the padded atoms of a heterogeneous batch (:meth:`create_batch`), else ``None``; ``species`` and
            ``cell`` are then those of the first replica and only give the padded size.
    """

    species: np.ndarray
    cell: np.ndarray
    periodic: bool
    cutoff: float
    skin: float
    mode: str
    capacity_margin: float = 1.25
    total_charge: float = 0.0
    pbc: tuple[bool, bool, bool] = (False, False, False)
    cell_margin: float = 1.0
    replicas: ReplicaAtoms | None = None

    @classmethod
    def create(
        cls,
        species,
        cell,
        pbc,
        cutoff: float,
        skin: float = 1.0,
        mode: str = "auto",
        capacity_margin: float = 1.25,
        total_charge: float = 0.0,
        cell_margin: float = 1.0,
        dense: bool = True,
    ) -> EdgeBuilder:
        """Choose and validate the neighbour regime for a structure; see the class attributes. ``dense``: whether
        ``auto`` may pick dense blocks for a molecule (the model's ``md_dense_blocks``)."""
        pbc = np.broadcast_to(np.asarray(pbc, bool), (3,))
        cell = np.asarray(cell, np.float64).reshape(3, 3)
        if mode not in MODES:
            raise ConfigError(f"neighbors must be one of {', '.join(MODES)}, got {mode!r}")
        if skin < 0 or capacity_margin < 1:
            raise ConfigError(f"skin must be >= 0 and capacity_margin >= 1, got {skin} and {capacity_margin}")
        if not 0 < cell_margin <= 1:
            raise ConfigError(f"cell_margin must be in (0, 1], got {cell_margin}")
        mode = _choose_mode(mode, pbc, cell, len(species), cutoff / cell_margin, skin, dense)
        species = np.asarray(species, np.int32)
        periodic = bool(pbc.all())
        return cls(species, cell, periodic, float(cutoff), float(skin), mode, capacity_margin, float(total_charge),
                   tuple(bool(p) for p in pbc), float(cell_margin))  # fmt: skip

    @classmethod
    def create_batch(
        cls, replicas: ReplicaAtoms, pbc, cutoff: float, skin: float, mode: str, cell_margin: float = 1.0,
        dense: bool = True,
    ) -> EdgeBuilder:  # fmt: skip
        """Static edges for replicas that are different structures, padded to the largest (``replicas``, numpy):
        all pairs for molecules, all pairs over the lattice images any replica's cell needs (down to ``cell_margin``
        of it) for periodic cells, slabs and wires (``pbc`` is shared by all replicas). Lists are refused."""
        pbc = np.broadcast_to(np.asarray(pbc, bool), (3,))
        if mode == "list" or mode not in MODES:
            raise ConfigError(
                "replicas of different structures need static edges: neighbors='auto', 'dense', 'all_pairs' or "
                f"'images', got {mode!r} (run neighbour-list systems one structure per run)"
            )
        n_atoms = replicas.species.shape[1]
        if not pbc.any() and n_atoms > ALL_PAIRS_MAX_ATOMS:
            raise ConfigError(
                f"replicas of different molecules are run with all-pairs edges, for up to {ALL_PAIRS_MAX_ATOMS} "
                f"atoms; the largest has {n_atoms}"
            )
        modes = {_choose_mode("images" if pbc.any() else mode, pbc, cell, n_atoms, cutoff / cell_margin, skin, dense)
                 for cell in replicas.cell}  # fmt: skip
        builder = cls(replicas.species[0], replicas.cell[0], bool(pbc.all()), float(cutoff), float(skin),
                      modes.pop(), pbc=tuple(bool(p) for p in pbc), cell_margin=float(cell_margin),
                      replicas=replicas)  # fmt: skip
        if builder.mode == "images" and n_atoms**2 * len(builder.image_offsets()) > MAX_IMAGE_EDGES:
            raise StructureError(
                f"the replicas' cells need {n_atoms**2 * len(builder.image_offsets())} edges over their lattice "
                f"images (more than {MAX_IMAGE_EDGES}); run the largest cells separately"
            )
        return builder

    def image_offsets(self) -> np.ndarray:
        """``[M, 3]`` lattice image offsets of the ``images`` regime: those of :attr:`cell`, or for a heterogeneous
        batch every offset some replica's cell needs."""
        if self.replicas is None:
            return lattice_images(self.cell, self.pbc, self.list_cutoff)
        images = [lattice_images(cell, self.pbc, self.list_cutoff) for cell in self.replicas.cell]
        return np.unique(np.concatenate(images), axis=0)

    @property
    def n_atoms(self) -> int:
        return len(self.species)

    @property
    def list_cutoff(self) -> float:
        """Cutoff (Å, in the metric of :attr:`cell`) the edges are built for: ``cutoff / cell_margin``."""
        return self.cutoff / self.cell_margin

    @property
    def n_node(self) -> int:
        """Padded node count (real atoms + at least one padding node, rounded to 8)."""
        return bucket_size(self.n_atoms + 1, 8)

    # ---- neighbour lists (mode "list") -------------------------------------------------------------------------
    def _neighbor_fn(self):
        if self.periodic:
            box = jnp.asarray(self.cell.T)
            displacement, _ = space.periodic_general(box, fractional_coordinates=True)
            lower = np.allclose(self.cell, np.tril(self.cell))  # jax-md cell lists need an upper-triangular box
            return partition.neighbor_list(
                displacement,
                box,
                self.list_cutoff,
                dr_threshold=self.skin,
                capacity_multiplier=1.0,
                fractional_coordinates=True,
                format=partition.Sparse,
                disable_cell_list=not lower,
            )
        displacement, _ = space.free()
        return partition.neighbor_list(
            displacement,
            1.0,
            self.cutoff,
            dr_threshold=self.skin,
            capacity_multiplier=1.0,
            format=partition.Sparse,
            disable_cell_list=True,
        )

    def list_positions(self, positions: jax.Array, cell: jax.Array | None = None) -> jax.Array:
        """Positions ``[N, 3]`` as the neighbour list sees them: wrapped fractional coordinates of ``cell [3, 3]``
        (default :attr:`cell`) for periodic structures, else unchanged."""
        if not self.periodic:
            return positions
        inverse = jnp.linalg.inv(cell) if cell is not None else jnp.asarray(np.linalg.inv(self.cell))
        fractional = positions @ inverse.astype(positions.dtype)
        return fractional - jnp.floor(fractional)

    def allocate(self, positions: np.ndarray, capacity: int = 0, cell_capacity: int = 0, cells=None):
        """Build the lists of replicas ``positions [R, N, 3]`` (in their ``cells [R, 3, 3]`` when the cell changes)
        on the host, stacked into one batched pytree.

        The edge capacity is the largest occupancy times ``capacity_margin`` (at least ``capacity``), rounded up to a
        multiple of 64; the cell-list capacity is at least ``cell_capacity``. Returns ``None`` for all-pairs edges.
        """
        if self.mode != "list":
            return None
        neighbor_fn = self._neighbor_fn()
        cells = [None] * len(positions) if cells is None else [jnp.asarray(c) for c in cells]
        wrapped = [self.list_positions(jnp.asarray(r), c) for r, c in zip(positions, cells, strict=True)]
        with _quiet_jax_md():
            lists = [neighbor_fn.allocate(r) for r in wrapped]
        occupancy = max(int(np.sum(np.asarray(n.idx[1]) < self.n_atoms)) for n in lists)
        capacity = max(capacity, math.ceil(self.capacity_margin * occupancy))
        capacity = EDGE_MULTIPLE * math.ceil(max(capacity, 1) / EDGE_MULTIPLE)
        cells = [n.cell_list_capacity for n in lists if n.cell_list_capacity is not None]
        cell_capacity = max([cell_capacity, *cells]) if cells else None
        # a rebuild produces at most N x candidates pairs: the capacity may not exceed that
        candidates = self.n_atoms if cell_capacity is None else 27 * cell_capacity
        capacity = min(capacity, self.n_atoms * candidates)
        template = dataclasses.replace(lists[0], max_occupancy=capacity, cell_list_capacity=cell_capacity)
        padded = [self._pad(n.idx, capacity) for n in lists]
        return dataclasses.replace(
            template,
            idx=jnp.stack(padded),
            reference_position=jnp.stack([n.reference_position for n in lists]),
            error=jax.tree.map(lambda *e: jnp.stack(e), *[n.error for n in lists]),
        )

    def _pad(self, idx: jax.Array, capacity: int) -> jax.Array:
        idx = np.asarray(idx)
        real = idx[:, idx[1] < self.n_atoms]
        if real.shape[1] > capacity:
            raise ValueError(f"capacity {capacity} below the {real.shape[1]} pairs present")
        out = np.full((2, capacity), self.n_atoms, np.int32)
        out[:, : real.shape[1]] = real
        return jnp.asarray(out)

    def grow(self, neighbors, positions: np.ndarray, cells=None):
        """A copy of batched ``neighbors`` with 1.5× the edge capacity (and cell-list capacity when that overflowed),
        keeping their pairs and reference positions, so a rerun matches a run that had the capacity all along.
        """
        overflow_cells = np.any(np.asarray(neighbors.error.code) & int(partition.PEC.CELL_LIST_OVERFLOW))
        capacity = EDGE_MULTIPLE * math.ceil(1.5 * neighbors.max_occupancy / EDGE_MULTIPLE)
        cell_capacity = neighbors.cell_list_capacity
        if overflow_cells and cell_capacity is not None:
            cell_capacity = math.ceil(1.5 * cell_capacity)
        fresh = self.allocate(positions, capacity, cell_capacity or 0, cells)
        return self.restore(
            fresh,
            np.asarray(neighbors.idx),
            np.asarray(neighbors.reference_position),
            np.zeros_like(np.asarray(neighbors.error.code)),
        )

    def restore(self, template, idx: np.ndarray, reference_position: np.ndarray, error_code: np.ndarray):
        """Batched lists with the static layout of ``template`` and the given pairs ``idx [R, 2, C]`` (padded to the
        template's capacity), reference positions and error codes (from a checkpoint or a chunk start)."""
        capacity = template.max_occupancy
        padded = jnp.stack([self._pad(i, capacity) for i in idx])
        error = dataclasses.replace(template.error, code=jnp.asarray(error_code, template.error.code.dtype))
        return dataclasses.replace(
            template, idx=padded, reference_position=jnp.asarray(reference_position), error=error
        )

    def update(self, positions: jax.Array, neighbors, cells: jax.Array | None = None):
        """Update batched lists for ``positions [B, N, 3]`` (in ``cells [B, 3, 3]`` when the cell changes): rebuilt
        (each replica by its own rule) only when some atom of some replica moved more than ``skin / 2`` in the
        metric of :attr:`cell` — one unbatched condition, not a rebuild per step."""
        if neighbors is None:
            return None
        wrapped = jax.vmap(self.list_positions)(positions, cells)
        moved = jnp.max(jnp.sum(self._displacement(wrapped, neighbors.reference_position) ** 2, -1))
        with _quiet_jax_md():
            return jax.lax.cond(
                moved > (0.5 * self.skin) ** 2,
                lambda: jax.vmap(lambda r, n: n.update(r))(wrapped, neighbors),
                lambda: neighbors,
            )

    def _displacement(self, a: jax.Array, b: jax.Array) -> jax.Array:
        d = a - b
        if self.periodic:
            d = (d - jnp.round(d)) @ jnp.asarray(self.cell, d.dtype)
        return d

    # ---- graphs ------------------------------------------------------------------------------------------------
    def graph(
        self, positions: jax.Array, neighbors=None, cell: jax.Array | None = None, atoms: ReplicaAtoms | None = None
    ) -> Graph:
        """The padded :class:`Graph` of one structure with ``positions [N, 3]`` and its (unbatched) list, in its
        current ``cell [3, 3]`` when the cell changes (``images`` regime), else in :attr:`cell`; for a replica of a
        heterogeneous batch, ``atoms`` holds its own (unbatched) species, mask, starting cell and charge."""
        if atoms is not None:
            return self._replica_graph(positions, atoms, atoms.cell if cell is None else cell)
        n, n_node = self.n_atoms, self.n_node
        dtype = positions.dtype
        padded = jnp.concatenate([positions, jnp.zeros((n_node - n, 3), dtype)])
        if self.mode == "all_pairs":
            return self._all_pairs_graph(padded)
        if self.mode == "dense":
            senders, receivers, shifts = self._dense_edges()
            graph = self._graph(padded, jnp.asarray(senders), jnp.asarray(receivers), jnp.asarray(shifts, dtype))
            return graph.replace(blocks=jnp.arange(n, dtype=jnp.int32)[None])
        current = jnp.asarray(self.cell, dtype) if cell is None else cell.astype(dtype)
        if self.mode == "images":
            return self._images_graph(padded, current)
        senders, receivers = neighbors.idx[0], neighbors.idx[1]  # jax-md: (neighbour j, centre i)
        shifts = jnp.zeros((receivers.shape[0], 3), dtype)
        if self.periodic:
            fractional = (padded[senders] - padded[receivers]) @ jnp.linalg.inv(current)
            shifts = -jax.lax.stop_gradient(jnp.round(fractional)) @ current
        padding = (receivers == n)[:, None]
        shifts = jnp.where(padding, jnp.asarray([PADDING_DISTANCE, 0.0, 0.0], dtype), shifts)
        return self._graph(padded, senders, receivers, shifts, None if cell is None else current)

    def _all_pairs_graph(self, padded: jax.Array) -> Graph:
        """All pairs ``i < j`` in the first half of the edges and their reverses in the second (``reverse_halves``),
        each half padded to a multiple of 32 with padding edges of length :data:`PADDING_DISTANCE`."""
        senders, receivers, shifts = self._all_pairs_edges()
        dtype = padded.dtype
        graph = self._graph(padded, jnp.asarray(senders), jnp.asarray(receivers), jnp.asarray(shifts, dtype))
        return graph.replace(reverse_halves=True)

    def _all_pairs_edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Static ``senders [E]``, ``receivers [E]`` and ``shifts [E, 3]`` of :meth:`_all_pairs_graph`."""
        n = self.n_atoms
        i, j = np.triu_indices(n, 1)
        half = EDGE_MULTIPLE // 2 * math.ceil(max(len(i), 1) / (EDGE_MULTIPLE // 2))
        receivers = np.full(2 * half, n, np.int32)
        senders = np.full(2 * half, n, np.int32)
        receivers[: len(i)], senders[: len(i)] = i, j
        receivers[half : half + len(i)], senders[half : half + len(i)] = j, i
        shifts = np.zeros((2 * half, 3))
        shifts[len(i) : half, 0] = PADDING_DISTANCE
        shifts[half + len(i) :, 0] = -PADDING_DISTANCE  # the reverse of a padding edge
        return senders, receivers, shifts

    def _dense_edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Static ``senders``, ``receivers`` and ``shifts`` of the structure as one dense block of ``N`` slots."""
        n = self.n_atoms
        return dense_edges(np.arange(n)[None], np.ones((1, n), bool))

    def _images_graph(self, padded: jax.Array, cell: jax.Array) -> Graph:
        """Every pair with every lattice image within reach of the cutoff (:func:`lattice_images`): the shift of edge
        ``(i, j, n)`` is ``(n − round(s_j − s_i)) · cell`` along periodic directions, so it follows atoms that cross
        the cell; padding edges to a multiple of 64 have length :data:`PADDING_DISTANCE`."""
        senders, receivers, offsets, n_real = self._image_edges()
        shifts = self._image_shifts(padded, cell, senders, receivers, offsets, n_real)
        return self._graph(padded, jnp.asarray(senders), jnp.asarray(receivers), shifts, cell)

    def _image_edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Static ``senders [E]``, ``receivers [E]``, image ``offsets [E, 3]`` and the number of real edges of
        :meth:`_images_graph`."""
        n = self.n_atoms
        images = self.image_offsets()
        i, j, k = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n), np.arange(len(images)), indexing="ij"))
        keep = (i != j) | np.any(images[k] != 0, axis=1)
        i, j, k = i[keep], j[keep], k[keep]
        size = EDGE_MULTIPLE * math.ceil(max(len(i), 1) / EDGE_MULTIPLE)
        receivers, senders = np.full(size, n, np.int32), np.full(size, n, np.int32)
        receivers[: len(i)], senders[: len(i)] = i, j
        offsets = np.zeros((size, 3))
        offsets[: len(i)] = images[k]
        return senders, receivers, offsets, len(i)

    def _image_shifts(self, padded, cell, senders, receivers, offsets, n_real: int) -> jax.Array:
        """``[E, 3]`` Cartesian shifts (Å) of the image edges in ``cell [3, 3]``, padding edges at
        :data:`PADDING_DISTANCE`."""
        dtype = padded.dtype
        fractional = (padded[senders] - padded[receivers]) @ jnp.linalg.inv(cell)
        wrap = jax.lax.stop_gradient(jnp.where(jnp.asarray(self.pbc), jnp.round(fractional), 0.0))
        shifts = (jnp.asarray(offsets, dtype) - wrap) @ cell
        padding = jnp.asarray(np.arange(len(senders)) >= n_real)[:, None]
        return jnp.where(padding, jnp.asarray([PADDING_DISTANCE, 0.0, 0.0], dtype), shifts)

    def _replica_graph(self, positions: jax.Array, atoms: ReplicaAtoms, cell: jax.Array) -> Graph:
        """The :class:`Graph` of one replica of a heterogeneous batch in its current ``cell [3, 3]``: the batch's
        static edges, of which every edge touching a padding atom becomes a padding edge (the padding node joined to
        itself), padding atoms padding nodes of the dummy graph."""
        n, n_node, dtype = self.n_atoms, self.n_node, positions.dtype
        padded = jnp.concatenate([positions, jnp.zeros((n_node - n, 3), dtype)])
        real_node = jnp.concatenate([atoms.mask, jnp.zeros(n_node - n, bool)])
        cell = cell.astype(dtype)
        if self.mode == "all_pairs":
            senders, receivers, shifts = self._all_pairs_edges()
            padding_shift = np.where(np.arange(len(senders)) < len(senders) // 2, 1.0, -1.0)[:, None] * np.asarray(
                [PADDING_DISTANCE, 0.0, 0.0]
            )
            shifts = jnp.asarray(shifts, dtype)
        elif self.mode == "dense":
            senders, receivers, shifts = self._dense_edges()
            padding_shift = np.broadcast_to([PADDING_DISTANCE, 0.0, 0.0], shifts.shape)
            shifts = jnp.asarray(shifts, dtype)  # with the diagonal already a padding edge
        else:
            senders, receivers, offsets, n_real = self._image_edges()
            shifts = self._image_shifts(padded, cell, senders, receivers, offsets, n_real)
            padding_shift = np.broadcast_to([PADDING_DISTANCE, 0.0, 0.0], shifts.shape)
        real = real_node[senders] & real_node[receivers]
        graph = Graph(
            positions=padded,
            species=jnp.concatenate([atoms.species, jnp.zeros(n_node - n, atoms.species.dtype)]),
            node_graph=jnp.where(real_node, 0, 1).astype(jnp.int32),
            senders=jnp.where(real, senders, n),
            receivers=jnp.where(real, receivers, n),
            shifts=jnp.where(real[:, None], shifts, jnp.asarray(padding_shift, dtype)),
            cell=jnp.zeros((2, 3, 3), dtype).at[0].set(cell),
            pbc=jnp.asarray(np.stack([self.pbc, np.zeros(3, bool)])),
            n_node=jnp.stack([jnp.sum(atoms.mask), 0]).astype(jnp.int32),
            total_charge=jnp.stack([atoms.total_charge, 0.0]).astype(dtype),
        )
        if self.mode == "dense":
            return graph.replace(blocks=jnp.arange(n, dtype=jnp.int32)[None])
        return graph.replace(reverse_halves=self.mode == "all_pairs")

    def _graph(self, padded, senders, receivers, shifts, cell: jax.Array | None = None) -> Graph:
        n, n_node, dtype = self.n_atoms, self.n_node, padded.dtype
        cells = jnp.zeros((2, 3, 3), dtype).at[0].set(jnp.asarray(self.cell, dtype) if cell is None else cell)
        pbc = np.zeros((2, 3), bool)
        pbc[0] = self.pbc
        return Graph(
            positions=padded,
            species=jnp.asarray(np.pad(self.species, (0, n_node - n))),
            node_graph=jnp.asarray(np.r_[np.zeros(n, np.int32), np.ones(n_node - n, np.int32)]),
            senders=senders,
            receivers=receivers,
            shifts=shifts,
            cell=cells,
            pbc=jnp.asarray(pbc),
            n_node=jnp.asarray([n, 0], np.int32),
            total_charge=jnp.asarray([self.total_charge, 0.0], dtype),
        )


def bead_cells(cell, count: int):
    """The cells ``[count, 3, 3]`` of ``count`` flattened structures from the replicas' cells ``[R, 3, 3]``: the
    beads of a ring polymer share their replica's cell (``count = R·P``)."""
    return cell if len(cell) == count else jnp.repeat(cell, count // len(cell), axis=0)


def lattice_images(cell: np.ndarray, pbc, cutoff: float) -> np.ndarray:
    """``[M, 3]`` integer image offsets ``n`` (zero along non-periodic directions) such that every pair closer than
    ``cutoff`` appears as ``s_j − s_i − round(s_j − s_i) + n`` for one of them: along a periodic direction of
    perpendicular width ``w`` the wrapped difference lies in [−½, ½], so ``|n| ≤ floor(cutoff / w + ½)``."""
    widths = perpendicular_widths(cell)
    reach = [int(math.floor(cutoff / w + 0.5)) if p else 0 for w, p in zip(widths, pbc, strict=True)]
    ranges = [np.arange(-r, r + 1) for r in reach]
    return np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.float64)


def _choose_mode(
    mode: str, pbc: np.ndarray, cell: np.ndarray, n_atoms: int, cutoff: float, skin: float, dense: bool = True
) -> str:
    """The neighbour regime for a structure (see :data:`MODES`), refusing combinations that cannot be exact; ``auto``
    picks dense blocks for molecules only with ``dense``."""
    if not pbc.any():
        if mode == "images":
            raise ConfigError("neighbors='images' is for periodic cells, slabs and wires; a molecule has no images")
        if mode != "auto":
            return mode
        if dense and n_atoms <= DENSE_MAX_ATOMS:
            return "dense"
        return "all_pairs" if n_atoms <= ALL_PAIRS_MAX_ATOMS else "list"
    if abs(np.linalg.det(cell)) < 1e-9:
        raise StructureError(
            "a periodic structure (or slab or wire) needs a cell with non-zero volume; set atoms.cell (for a slab, "
            "give the non-periodic direction a vacuum length, e.g. atoms.center(vacuum=10, axis=2))"
        )
    if mode in ("all_pairs", "dense"):
        raise ConfigError(f"{mode} edges are for molecules; periodic cells need neighbors='list' or 'images'")
    narrow = cutoff + skin > 0.5 * perpendicular_widths(cell)[pbc].min()
    if mode == "list" and (narrow or not pbc.all()):
        why = "a slab or wire (mixed periodicity)" if not pbc.all() else "a cell narrower than 2 (cutoff + skin)"
        raise StructureError(f"neighbour lists cannot handle {why}; use neighbors='images' or 'auto'")
    if mode == "auto":
        mode = "images" if narrow or not pbc.all() else "list"
    if mode == "images":
        edges = n_atoms**2 * len(lattice_images(cell, pbc, cutoff))
        if edges > MAX_IMAGE_EDGES:
            raise StructureError(
                f"the cell needs {edges} edges over its lattice images (more than {MAX_IMAGE_EDGES}); repeat it "
                "(atoms.repeat) until it is wider than 2 (cutoff + skin), so that a neighbour list applies"
            )
    return mode
