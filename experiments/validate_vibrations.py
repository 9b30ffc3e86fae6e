"""Validate jaxatom's harmonic analysis against GFN2-xTB on ethanol: harmonic frequencies (cm⁻¹) and IR intensities
(km/mol) of a PaiNN model trained on the shipped GFN2-xTB ethanol data, mode by mode against GFN2-xTB's own (ASE
``Infrared``: finite differences of tblite's forces and dipoles at the xTB minimum).

Usage::

    OMP_NUM_THREADS=1 python experiments/validate_vibrations.py --run-dir runs/vib_ethanol --minutes 30
    OMP_NUM_THREADS=1 python experiments/validate_vibrations.py --model runs/vib_ethanol/best_model

Without ``--model`` it trains PaiNN (energy + DipoleMoment + Polarizability heads; loss energy 0.01, forces 0.99,
dipole 0.1, polarizability 0.01) for ``--minutes`` into ``--run-dir``; rerunning continues that training from its
checkpoint (and finds it finished when the budget or the epochs are spent). The xTB relaxation and finite differences
are cached in ``RUN_DIR/xtb`` (ASE's cache), so a rerun only redoes the model's side. Needs tblite (``pip install
jaxatom[xtb]``). Prints a markdown table (mode, model cm⁻¹, xTB cm⁻¹, model km/mol, xTB km/mol, mode overlap) and
writes it with the command line to ``RUN_DIR/vibrations_validation.md``.

Modes are paired by the largest overlap of their mass-weighted eigenvectors (Hungarian assignment), since model and
xTB may order close modes differently; the model is relaxed from the xTB minimum, so both share the orientation.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

#: GFN2-xTB-Infrared intensities from ASE's (D/Å)²/amu to km/mol (ASE's own factor, ``Infrared.intensity_prefactor``).
ASE_KM_MOL = 42.255


def train_model(run_dir: Path, minutes: float, n_train: int, features: int, interactions: int) -> Path:
    """Train PaiNN with energy, dipole and polarizability heads on GFN2-xTB ethanol (float32); the best model path."""
    import jaxatom
    from jaxatom.data.builtin import load_builtin
    from jaxatom.nn import ENERGY_HEAD, DipoleMoment, PaiNN, Polarizability
    from jaxatom.train import TrainConfig, fit, with_energy_offsets

    data = load_builtin("ethanol")
    train, val = data.subset(range(0, n_train)), data.subset(range(2800, 3000))
    heads = [ENERGY_HEAD, DipoleMoment(use_vector_representation=True), Polarizability()]
    representation = PaiNN(n_atom_basis=features, n_interactions=interactions, cutoff=5.0, n_rbf=20)
    potential = with_energy_offsets(jaxatom.Potential.create(representation, data.elements, heads=heads), train)
    loss = {"energy": 0.01, "forces": 0.99, "dipole_moment": 0.1, "polarizability": 0.01}
    config = TrainConfig(batch_size=32, max_epochs=100000, loss=loss, max_time_s=60.0 * minutes, plateau_patience=15,
                         plateau_cooldown=2, early_stopping_patience=60)  # fmt: skip
    fit(potential, train, val, config, run_dir=run_dir)
    return run_dir / "best_model"


def xtb_reference(atoms, cache: Path, fmax: float, delta: float):
    """GFN2-xTB minimum (BFGS) and ASE ``Infrared`` there: (atoms, frequencies cm⁻¹, km/mol, mass-weighted modes) of
    the 3N − 6 internal modes (the six of smallest |ν| dropped)."""
    from ase.io import read, write
    from ase.optimize import BFGS
    from ase.vibrations import Infrared
    from tblite.ase import TBLite

    cache.mkdir(parents=True, exist_ok=True)
    minimum = cache / "xtb_minimum.xyz"
    if minimum.exists():
        atoms = read(minimum)
    else:
        atoms = atoms.copy()
        atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
        if not BFGS(atoms, logfile=None).run(fmax=fmax, steps=1000):
            raise RuntimeError(f"the GFN2-xTB relaxation did not reach fmax {fmax} eV/Å")
        write(minimum, atoms)
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    infrared = Infrared(atoms, name=str(cache / "ir"), delta=delta, nfree=2)
    infrared.run()
    frequencies = infrared.get_frequencies()  # complex: imaginary ones as i·|ν|
    signed = np.where(np.abs(frequencies.imag) > 0, -np.abs(frequencies.imag), frequencies.real)
    keep = np.sort(np.argsort(np.abs(signed))[6:])
    atoms.calc = None
    return atoms, signed[keep], infrared.intensities[keep] * ASE_KM_MOL, infrared.modes[keep]


def pair_modes(model_vectors: np.ndarray, xtb_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each xTB mode, the model mode of largest total overlap (Hungarian assignment) and |overlap|."""
    from scipy.optimize import linear_sum_assignment

    overlap = np.abs(model_vectors @ xtb_vectors.T)
    model_index, xtb_index = linear_sum_assignment(-overlap)
    order = np.argsort(xtb_index)
    return model_index[order], overlap[model_index[order], xtb_index[order]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a trained model (directory or zip) instead of training one")
    parser.add_argument("--run-dir", default="runs/vib_ethanol", help="training run and cache directory")
    parser.add_argument("--minutes", type=float, default=30.0, help="training time budget (default 30)")
    parser.add_argument("--n-train", type=int, default=2000, help="training frames (default 2000)")
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--interactions", type=int, default=3)
    parser.add_argument("--fmax", type=float, default=1e-4, help="force threshold of both relaxations (eV/Å)")
    parser.add_argument("--delta", type=float, default=0.005, help="xTB finite-difference step (Å)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # tblite beside other work; set before tblite loads
    run_dir = Path(args.run_dir)
    command = "OMP_NUM_THREADS=1 python " + shlex.join(sys.argv)
    started = time.perf_counter()

    model_path = Path(args.model) if args.model else train_model(
        run_dir, args.minutes, args.n_train, args.features, args.interactions)  # fmt: skip
    from ase.build import molecule

    import jaxatom
    from jaxatom.vibrations import harmonic_analysis, masses_of

    xtb_atoms, xtb_frequencies, xtb_intensities, xtb_vectors = xtb_reference(
        molecule("CH3CH2OH"), run_dir / "xtb", args.fmax, args.delta
    )
    jaxatom.enable_x64(True)  # the analysis in float64 (training above ran in float32)
    potential = jaxatom.load_model(model_path)
    result = harmonic_analysis(potential, xtb_atoms, fmax=args.fmax, allow_unconverged=True)
    sqrt_m = np.repeat(np.sqrt(masses_of(result.atoms.numbers)), 3)
    model_vectors = result.modes.reshape(len(result.modes), -1) * sqrt_m  # back to mass-weighted unit vectors
    paired, overlaps = pair_modes(model_vectors, xtb_vectors)

    lines = [
        "| mode | model cm⁻¹ | xTB cm⁻¹ | model km/mol | xTB km/mol | overlap |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for k, (m, overlap) in enumerate(zip(paired, overlaps, strict=True)):
        lines.append(f"| {k} | {result.frequencies_cm1[m]:.1f} | {xtb_frequencies[k]:.1f} | "
                     f"{result.ir_intensities_km_mol[m]:.2f} | {xtb_intensities[k]:.2f} | {overlap:.2f} |")  # fmt: skip
    difference = result.frequencies_cm1[paired] - xtb_frequencies
    notes = [
        f"command: `{command}`",
        f"model: {model_path}; relaxed in {result.optimization_steps} BFGS steps, largest force "
        f"{result.max_force:.2g} eV/Å (fmax {args.fmax:g}); xTB: ASE Infrared, delta {args.delta} Å, nfree 2",
        f"frequency MAE {np.mean(np.abs(difference)):.1f} cm⁻¹, max |Δ| {np.max(np.abs(difference)):.1f} cm⁻¹; "
        f"IR intensity MAE {np.mean(np.abs(result.ir_intensities_km_mol[paired] - xtb_intensities)):.2f} km/mol; "
        f"wall time {time.perf_counter() - started:.0f} s",
    ]
    text = "\n".join(["\n".join(lines), "", *notes])
    print(text)
    (run_dir / "vibrations_validation.md").parent.mkdir(parents=True, exist_ok=True)
    (run_dir / "vibrations_validation.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
