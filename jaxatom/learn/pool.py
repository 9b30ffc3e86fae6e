"""The structures a generation's MD visited, with the ensemble's calibrated force uncertainty of each: for every
replica and stride interval, the most uncertain structure of the interval (the gate's candidate, flagged or not;
see :mod:`jaxatom.md.gate`). A structure recorded twice counts once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

from jaxatom.learn.oracle import structure_id
from jaxatom.md.trajectory import read_trajectory

__all__ = ["Pool", "explored_pool"]


@dataclasses.dataclass(frozen=True)
class Pool:
    """Visited structures ``[C]`` (``info``: ``uncertainty`` eV/Å, ``temperature_K``, ``replica``, ``step``), their
    uncertainty ``[C]`` (eV/Å) and whether the gate flagged each ``[C]``."""

    structures: list[Atoms]
    uncertainty: np.ndarray
    flagged: np.ndarray

    def most_uncertain(self, count: int, method: str) -> np.ndarray:
        """The indices a selection chooses among: every structure for ``random``, else the ``count`` most
        uncertain (most uncertain first)."""
        order = np.argsort(-self.uncertainty, kind="stable")
        return order if method == "random" else order[:count]

    def statistics(self) -> dict[str, float]:
        """Size and uncertainty of the pool, for the generation's report."""
        u = self.uncertainty
        return {"visited": len(u), "flagged": int(self.flagged.sum()),
                "uncertainty_mean": float(np.mean(u)) if len(u) else float("nan"),
                "uncertainty_max": float(np.max(u)) if len(u) else float("nan")}  # fmt: skip


def _trajectory_structures(path: Path) -> list[Atoms]:
    """The candidate of every stride interval and replica of a gated trajectory (the interval's most uncertain
    structure), with its uncertainty; intervals a frozen replica did not move in are left out."""
    data = read_trajectory(path)
    temperatures = np.broadcast_to(np.asarray(data["attrs"].get("temperature_K", np.nan), float),
                                   data["uncertainty"].shape[1:])  # fmt: skip
    out = []
    for f, r in zip(*np.nonzero(data["candidate_step"] >= 0), strict=True):
        cell = data["candidate_cell"][f, r] if "candidate_cell" in data else np.reshape(data["cell"], (-1, 3, 3))[-1]
        atoms = Atoms(numbers=data["species"], positions=data["candidate_positions"][f, r], cell=cell,
                      pbc=data["pbc"])  # fmt: skip
        atoms.info.update(uncertainty=float(data["uncertainty"][f, r]), temperature_K=float(temperatures[r]),
                          replica=int(r), step=int(data["candidate_step"][f, r]),
                          flagged=bool(data["flagged"][f, r]))  # fmt: skip
        out.append(atoms)
    return out


def explored_pool(paths: Sequence[Path]) -> Pool:
    """The pool of the trajectories at ``paths``, each distinct structure once (the most uncertain record kept)."""
    unique: dict[str, Atoms] = {}
    for path in paths:
        for atoms in _trajectory_structures(path):
            key = structure_id(atoms)
            if key not in unique or atoms.info["uncertainty"] > unique[key].info["uncertainty"]:
                unique[key] = atoms
    structures = list(unique.values())
    return Pool(structures, np.array([a.info["uncertainty"] for a in structures], float),
                np.array([a.info["flagged"] for a in structures], bool))  # fmt: skip
