"""MD study on aspirin with a trained jaxatom model: 10 ps NVE (energy drift), Langevin at 300 K with replicas
(temperature, vibrational density of states) and RPMD with 8 beads (quantum kinetic energy), with plots.

Usage (after ``jaxatom quickstart``, which writes ``runs/quickstart/best_model``)::

    python experiments/md_aspirin.py --model runs/quickstart/best_model --out runs/md_aspirin

Rerunning continues every trajectory from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jaxatom.data.builtin import load_builtin
from jaxatom.md import analysis, read_trajectory, simulate
from jaxatom.md.run import report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/quickstart/best_model")
    parser.add_argument("--out", default="runs/md_aspirin")
    parser.add_argument("--ps", type=float, default=10.0, help="length of each run (ps)")
    parser.add_argument("--replicas", type=int, default=8)
    args = parser.parse_args()
    out = Path(args.out)
    atoms = load_builtin("aspirin").to_atoms(0)
    steps = 20 * round(args.ps * 2000 / 20)  # 0.5 fs steps
    common = dict(timestep_fs=0.5, steps=steps, temperature_K=300.0, stride=20, frames_per_chunk=100)
    summary = {}

    nve = simulate(args.model, atoms, ensemble="nve", output=out / "nve.h5", **common)
    summary["nve"] = {**report(nve.output), "timing": nve.timing}

    langevin = simulate(args.model, atoms, ensemble="langevin", friction_per_fs=0.01, n_replicas=args.replicas,
                        output=out / "langevin.h5", **{**common, "stride": 4})  # fmt: skip
    summary["langevin"] = {**report(langevin.output), "timing": langevin.timing}
    data = read_trajectory(langevin.output, replica=0)
    spectrum = analysis.vibrational_spectrum(data["velocities"][len(data["time"]) // 5 :], 2.0, data["masses"])
    analysis.plot_spectrum(spectrum, out / "vdos.png", max_frequency=4000)

    rpmd = simulate(args.model, atoms, ensemble="rpmd", n_beads=8, rpmd_thermostat="pile_l", output=out / "rpmd.h5",
                    **common)  # fmt: skip
    data = read_trajectory(rpmd.output, replica=0)
    half = len(data["time"]) // 2
    summary["rpmd"] = {
        "quantum_kinetic_energy_eV": float(data["kinetic_energy"][half:].mean()),
        "classical_kinetic_energy_eV": 1.5 * len(atoms) * 300.0 * 8.617333e-5,
        "timing": rpmd.timing,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
