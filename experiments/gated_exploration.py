"""Uncertainty-gated vs ungated MD with an ensemble, up a temperature ladder: how often a replica ends in a broken
or badly predicted structure.

For each temperature, ``--replicas`` Langevin replicas start from shipped ethanol frames and run ``--steps`` steps
twice with the same seed: *ungated* (the gate only records the uncertainty) and *gated* (``stop_replica``: a replica
stops at the step its calibrated force uncertainty passes the ensemble's calibrated threshold). For the last
structure of every replica (where it stopped, for the gated run) it records whether the molecule is broken (its
bond graph, covalent radii × 1.3, differs from the start's) and the largest force error against GFN2-xTB (tblite).

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python experiments/gated_exploration.py \\
        experiments/results/al_curves/fps_seed0/gen_000/train/best_ensemble --out experiments/results/gated
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import covalent_radii

from jaxatom import data
from jaxatom.md import read_trajectory, simulate
from jaxatom.md.driver import SimulationFailed
from jaxatom.potential import PotentialEnsemble


def bonds(atoms: Atoms) -> set[tuple[int, int]]:
    """Pairs closer than 1.3 × the sum of their covalent radii."""
    radii = covalent_radii[atoms.numbers]
    distances = atoms.get_all_distances()
    i, j = np.nonzero(np.triu(distances < 1.3 * (radii[:, None] + radii[None, :]), 1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


def gfn2_force_error(ensemble: PotentialEnsemble, atoms: Atoms) -> float:
    """Largest per-atom force error (eV/Å) of the ensemble mean against GFN2-xTB; inf where GFN2-xTB's SCF does not
    converge (a structure far from any molecule)."""
    from ase.calculators.calculator import CalculationFailed
    from tblite.ase import TBLite

    reference = atoms.copy()
    reference.calc = TBLite(method="GFN2-xTB", verbosity=0)
    predicted = ensemble.predict(atoms)["forces"]
    try:
        return float(np.max(np.linalg.norm(predicted - reference.get_forces(), axis=-1)))
    except CalculationFailed:
        return float("inf")


def last_structures(path: Path, start: list[Atoms]) -> tuple[list[Atoms], np.ndarray]:
    """Each replica's last written structure, and the steps it moved (``[R]``; a stopped replica's frames after its
    stop have no uncertainty)."""
    frames = read_trajectory(path)
    moved = np.isfinite(frames["uncertainty"])
    steps = np.array([frames["step"][np.flatnonzero(moved[:, r])[-1]] if moved[:, r].any() else 0
                      for r in range(len(start))])  # fmt: skip
    return [Atoms(s.numbers, frames["positions"][-1, r]) for r, s in enumerate(start)], steps


def run(ensemble, start, temperature: float, action: str, args, out: Path) -> dict:
    output = out / f"T{temperature:g}_{action}.h5"
    try:
        result = simulate(ensemble, start, args.steps, 0.5, "langevin", temperature_K=temperature,
                          friction_per_fs=0.01, stride=10, output=output, seed=args.seed, progress=False,
                          uncertainty_action=action)  # fmt: skip
        stopped = int(np.sum(result.stopped)) if result.stopped is not None else 0
        failure = ""
    except SimulationFailed as err:
        stopped, failure = 0, str(err).split(";")[0]
    finals, steps = last_structures(output, start)
    broken = [bonds(a) != bonds(s) for a, s in zip(finals, start, strict=True)]
    errors = [gfn2_force_error(ensemble, a) for a in finals]
    return {"temperature_K": temperature, "run": "gated" if action == "stop_replica" else "ungated",
            "replicas": len(start), "stopped": stopped, "median_steps_moved": float(np.median(steps)),
            "broken": int(np.sum(broken)),
            "gfn2_max_force_error_median": float(np.median(errors)), "gfn2_max_force_error_max": float(np.max(errors)),
            "failure": failure}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ensemble", type=Path, help="an ensemble artifact (best_ensemble of a training run)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 600.0, 900.0, 1200.0, 1500.0])
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/gated"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ensemble = PotentialEnsemble.load(args.ensemble)
    ethanol = data.load_builtin("ethanol")
    start = [ethanol.to_atoms(int(i)) for i in np.linspace(0, len(ethanol) - 1, args.replicas).astype(int)]
    start = [Atoms(a.numbers, a.positions) for a in start]
    rows = []
    for temperature in args.temperatures:
        for action in ("flag", "stop_replica"):
            rows.append(run(ensemble, start, temperature, action, args, args.out))
            print(rows[-1])
    with (args.out / "gated.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out / 'gated.csv'}")


if __name__ == "__main__":
    main()
