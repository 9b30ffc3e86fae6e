"""Host-side exact neighbour lists (vesin), all-pairs edges, and building :class:`HostGraph` from structures.

Host-built graphs (data sets, ``Potential.predict``) use the exact full list within the cutoff, with Cartesian image
shifts, for molecules and for any triclinic cell, mixed periodicity and cells smaller than twice the cutoff (several
images of one atom are then neighbours); ``ase.neighborlist`` is the test oracle. Each pair is listed once in the
first half of the edges (vesin's half list, sorted) and reversed in the second, so models compute distance-only edge
features once per pair (:attr:`HostGraph.reverse_halves`). ``edges="all_pairs"`` gives the static all-pairs regime
of DESIGN.md for small molecules (every ordered pair; the model's cutoff masks distant ones).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from vesin import NeighborList

from jaxatom.errors import StructureError
from jaxatom.graph import HostGraph, float_dtype

__all__ = [
    "MIN_DISTANCE",
    "check_structure",
    "total_charge_of",
    "all_pairs",
    "neighbor_list",
    "host_graph",
    "graph_from_atoms",
]

#: Atoms closer than this (Å) are refused as overlapping.
MIN_DISTANCE = 0.1
_OVERLAP_SEARCH = 1.0  # Å, the radius of the neighbour search that finds overlapping atoms


def all_pairs(n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs ``(i, j)``, ``i != j``, of ``n_atoms`` atoms: ``(receivers, senders)``, each ``[n(n-1)]``;
    the pairs ``i < j`` first, then the same pairs reversed."""
    i, j = np.triu_indices(n_atoms, 1)
    return np.concatenate([i, j]).astype(np.int32), np.concatenate([j, i]).astype(np.int32)


def neighbor_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact full neighbour list within ``cutoff`` (Å).

    Returns ``(receivers i, senders j, shifts [e, 3] in Å, distances [e])`` with
    ``positions[j] - positions[i] + shift`` the edge vector. Each pair is listed once in the first half and reversed
    (``j, i, -shift``) at the same place in the second half (:attr:`HostGraph.reverse_halves`).
    """
    pbc = np.asarray(pbc, bool)
    cell = np.asarray(cell, np.float64)
    calculator = NeighborList(cutoff=float(cutoff), full_list=False, sorted=True)
    i, j, s, d = calculator.compute(points=np.asarray(positions, np.float64), box=cell, periodic=pbc, quantities="ijSd")
    shifts = np.asarray(s, np.float64) @ cell
    receivers = np.concatenate([i, j]).astype(np.int32)
    senders = np.concatenate([j, i]).astype(np.int32)
    return receivers, senders, np.concatenate([shifts, -shifts]), np.concatenate([d, d])


def check_structure(
    positions: np.ndarray,
    species: np.ndarray,
    cell: np.ndarray | None = None,
    pbc: np.ndarray | bool = False,
    overlaps: bool = True,
) -> None:
    """Refuse a structure no model can evaluate: wrong shapes, no atoms, NaN or infinite positions, atomic numbers
    outside 1..99, a periodic structure without a cell, or (with ``overlaps``) two atoms closer than
    :data:`MIN_DISTANCE` (also across periodic boundaries). Every entry point (data sets, ``predict``, the ASE
    calculator, MD) uses this check; :func:`host_graph` finds overlaps in the list it builds anyway.

    Raises:
        StructureError: naming the problem, the atoms involved and the fix.
    """
    positions = np.asarray(positions, np.float64)
    species = np.asarray(species)
    if positions.ndim != 2 or positions.shape[1] != 3 or len(positions) != len(species):
        raise StructureError(
            f"positions must have shape [n_atoms, 3] matching {len(species)} atomic numbers, got {positions.shape}"
        )
    if len(species) == 0:
        raise StructureError("a structure needs at least one atom")
    if not np.all(np.isfinite(positions)):
        bad = np.nonzero(~np.all(np.isfinite(positions), axis=1))[0]
        raise StructureError(f"positions of atoms {bad.tolist()} are NaN or infinite; fix the input structure")
    if np.any(species < 1) or np.any(species > 99):
        raise StructureError(f"atomic numbers must be in 1..99, got {sorted(set(species.tolist()))}")
    pbc = np.broadcast_to(np.asarray(pbc, bool), (3,))
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, np.float64)
    if pbc.any() and abs(np.linalg.det(cell)) < 1e-12:
        raise StructureError("a periodic structure needs a cell with non-zero volume; set atoms.cell or pbc=False")
    if overlaps:
        # vesin's cell grid has cells of the cutoff's size: a 0.1 Å cutoff would make 10⁶ cells per (10 Å)³
        receivers, senders, _, distances = neighbor_list(positions, cell, pbc, _OVERLAP_SEARCH)
        _refuse_overlaps(receivers, senders, distances)


def _refuse_overlaps(receivers: np.ndarray, senders: np.ndarray, distances: np.ndarray) -> None:
    """Raise :class:`StructureError` if an edge of the list is shorter than :data:`MIN_DISTANCE`."""
    if len(distances) and distances.min() < MIN_DISTANCE:
        k = int(np.argmin(distances))
        raise StructureError(
            f"atoms {int(min(receivers[k], senders[k]))} and {int(max(receivers[k], senders[k]))} overlap (distance "
            f"{distances[k]:.3g} Å < {MIN_DISTANCE} Å); check the structure, its units (Å) and its cell"
        )


def host_graph(
    positions: np.ndarray,
    species: np.ndarray,
    cutoff: float,
    cell: np.ndarray | None = None,
    pbc: np.ndarray | bool = False,
    edges: str = "cutoff",
    total_charge: float = 0.0,
) -> HostGraph:
    """Build the :class:`HostGraph` of one structure given as arrays (positions in Å, atomic numbers, total charge
    in e).

    ``edges="cutoff"`` lists the pairs within ``cutoff``; ``"all_pairs"`` lists every ordered pair of a non-periodic
    structure. Raises :class:`~jaxatom.errors.StructureError` for what :func:`check_structure` refuses.
    """
    positions = np.asarray(positions, np.float64)
    species = np.asarray(species, np.int32)
    listed = edges == "all_pairs" or cutoff >= MIN_DISTANCE  # the edges below include every overlapping pair
    check_structure(positions, species, cell, pbc, overlaps=not listed)
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, bool), (3,)).copy()
    if edges == "all_pairs":
        if pbc.any():
            raise ValueError("all-pairs edges are for non-periodic molecules; use edges='cutoff' for periodic input")
        receivers, senders = all_pairs(len(species))
        shifts = np.zeros((len(senders), 3))
        distances = np.linalg.norm(positions[senders] - positions[receivers], axis=1)
    elif edges == "cutoff":
        receivers, senders, shifts, distances = neighbor_list(positions, cell, pbc, cutoff)
    else:
        raise ValueError(f"edges must be 'cutoff' or 'all_pairs', got {edges!r}")
    _refuse_overlaps(receivers, senders, distances)
    dtype = float_dtype()
    return HostGraph(
        positions=positions.astype(dtype),
        species=species,
        cell=cell.astype(dtype),
        pbc=pbc,
        senders=senders,
        receivers=receivers,
        shifts=shifts.astype(dtype),
        reverse_halves=True,
        total_charge=float(total_charge),
    )


def graph_from_atoms(atoms: Atoms, cutoff: float, edges: str = "cutoff") -> HostGraph:
    """Build the :class:`HostGraph` of an ``ase.Atoms`` (Å) for a model with the given ``cutoff`` (Å); see
    :func:`host_graph` for ``edges``. The total charge is :func:`total_charge_of` the atoms."""
    if not isinstance(atoms, Atoms):
        raise TypeError(f"expected an ase.Atoms, got {type(atoms).__name__}")
    cell = np.asarray(atoms.cell[:])
    return host_graph(atoms.positions, atoms.numbers, cutoff, cell, atoms.pbc, edges, total_charge_of(atoms))


def total_charge_of(atoms: Atoms) -> float:
    """The total charge (e) of ``atoms``: ``atoms.info["charge"]`` (ASE's and tblite's convention) when set, else the
    sum of the initial charges (0 unless set)."""
    if "charge" in atoms.info:
        return float(atoms.info["charge"])
    return float(np.sum(atoms.get_initial_charges()))
