"""Replicas that are different structures (heterogeneous batches): each replica's atoms padded to the largest atom
count ``N`` of the batch so that all replicas run in one compiled function.

Padding atoms have species 0, mass 1 amu, zero momenta and zero forces (they are padding nodes of their replica's
graph, so no edge touches them); ``mask`` tells them apart, and thermostats leave them alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from ase import Atoms
from flax import struct

from jaxatom.md.state import masses_of
from jaxatom.neighbors import total_charge_of

__all__ = ["ReplicaAtoms", "is_heterogeneous", "pad_atoms"]


@struct.dataclass
class ReplicaAtoms:
    """The atoms of ``R`` replicas padded to ``N`` (numpy on the host, traced per replica on the device).

    Attributes:
        species: ``[R, N]`` atomic numbers, 0 for padding atoms.
        mask: ``[R, N]`` True for real atoms.
        cell: ``[R, 3, 3]`` cell rows (Å), zeros for molecules.
        total_charge: ``[R]`` total charge (e).
    """

    species: jax.Array
    mask: jax.Array
    cell: jax.Array
    total_charge: jax.Array

    @classmethod
    def from_structures(cls, structures: Sequence[Atoms]) -> ReplicaAtoms:
        """Pad ``structures`` (one per replica) to the largest atom count."""
        return cls(
            species=pad_atoms([s.numbers for s in structures]).astype(np.int32),
            mask=pad_atoms([np.ones(len(s), bool) for s in structures]),
            cell=np.stack([np.asarray(s.cell[:], np.float64) for s in structures]),
            total_charge=np.asarray([total_charge_of(s) for s in structures], np.float64),
        )

    @property
    def n_atoms(self) -> np.ndarray:
        """``[R]`` real atoms per replica."""
        return np.sum(np.asarray(self.mask), axis=1)

    def masses(self) -> np.ndarray:
        """``[R, N]`` atomic masses (amu), 1 for padding atoms."""
        return np.where(self.mask, masses_of(self.species), 1.0)


def pad_atoms(arrays: Sequence[np.ndarray], size: int | None = None) -> np.ndarray:
    """Per-atom arrays ``[N_r, ...]`` of the replicas stacked into ``[R, size, ...]`` with zeros after each replica's
    atoms (``size`` defaults to the largest ``N_r``)."""
    size = max(len(a) for a in arrays) if size is None else size
    first = np.asarray(arrays[0])
    out = np.zeros((len(arrays), size, *first.shape[1:]), first.dtype)
    for r, values in enumerate(arrays):
        out[r, : len(values)] = values
    return out


def is_heterogeneous(structures: Sequence[Atoms]) -> bool:
    """Whether the replicas' starting structures differ in their atoms, periodicity or (for periodic structures)
    cells, not only in positions."""
    first = structures[0]
    return any(
        not np.array_equal(s.numbers, first.numbers)
        or not np.array_equal(s.pbc, first.pbc)
        or (np.any(s.pbc) and not np.array_equal(s.cell[:], first.cell[:]))
        for s in structures
    )
