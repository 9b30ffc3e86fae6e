"""The structures a generation's MD visited, with the ensemble's calibrated force uncertainty of each: every
written frame of every replica, and every candidate the gate kept between frames (the most uncertain step of a
stride interval). Frames of a stopped replica repeat its last structure and count once.
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


def _structure(numbers, positions, cell, pbc, **info) -> Atoms:
    atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=pbc)
    atoms.info.update(info)
    return atoms


def _trajectory_structures(path: Path) -> list[Atoms]:
    """Frames and gate candidates of one trajectory as structures with their uncertainty."""
    data = read_trajectory(path)
    temperature = float(data["attrs"].get("temperature_K", np.nan))
    numbers, pbc = data["species"], np.asarray(data["attrs"].get("pbc", [False] * 3), bool)
    cells = data.get("cell")
    out = []
    for kind in ("", "candidate_"):
        if f"{kind}positions" not in data:
            continue
        positions, uncertainty = data[f"{kind}positions"], data["uncertainty"]
        steps = data["step"] if kind == "" else data["candidate_step"]
        flagged = data["flagged"] if kind else np.zeros(uncertainty.shape, bool)
        for f, r in np.ndindex(*uncertainty.shape):
            if kind and not flagged[f, r]:
                continue
            cell = np.zeros((3, 3)) if cells is None else np.asarray(cells).reshape(-1, 3, 3)[-1]
            out.append(_structure(numbers, positions[f, r], cell, pbc, uncertainty=float(uncertainty[f, r]),
                                  temperature_K=temperature, replica=int(r), step=int(np.ravel(steps)[f]),
                                  flagged=bool(flagged[f, r])))  # fmt: skip
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
