"""Generate jaxatom's built-in data sets: GFN2-xTB (tblite) Langevin MD of aspirin and ethanol.

For each molecule: start from a fixed geometry (aspirin: ``shared/structures/aspirin.xyz`` or the copy embedded
below; ethanol: ``ase.build.molecule``), draw Maxwell–Boltzmann velocities at the temperature, equilibrate, then run
Langevin MD and record every ``--stride``-th step. Energies and forces of the recorded frames are the GFN2-xTB values of
the MD itself. Each data set is one HDF5 file in ``jaxatom/data/builtin/`` with

* ``numbers [N]`` (atomic numbers), ``positions [F, N, 3]`` (Å, float32), ``forces [F, N, 3]`` (eV/Å, float32),
  ``energy [F]`` (eV, float64);
* attributes: units of each array, and the provenance (method, code and version, temperature, time step, friction,
  equilibration steps, stride, seed, number of frames, command line, date).

Rerunnable and deterministic for a given tblite version and seed. Run from the repository root::

    OMP_NUM_THREADS=1 python experiments/make_xtb_dataset.py --molecule aspirin --frames 3000
    OMP_NUM_THREADS=1 python experiments/make_xtb_dataset.py --molecule ethanol --frames 3000

Needs the ``xtb`` extra (``pip install -e ".[xtb]"``).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np
from ase import Atoms, units
from ase.build import molecule
from ase.io import read
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "jaxatom" / "data" / "builtin"
ASPIRIN_FILE = REPO.parent / "shared" / "structures" / "aspirin.xyz"


def start_geometry(name: str) -> Atoms:
    """The starting structure of a built-in molecule (Å)."""
    if name == "aspirin":
        if not ASPIRIN_FILE.is_file():
            raise SystemExit(f"aspirin start geometry not found at {ASPIRIN_FILE}")
        return read(ASPIRIN_FILE)
    if name == "ethanol":
        return molecule("CH3CH2OH")
    raise SystemExit(f"unknown molecule {name!r}; choose aspirin or ethanol")


def run(args: argparse.Namespace) -> Path:
    from tblite.ase import TBLite

    atoms = start_geometry(args.molecule)
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    rng = np.random.default_rng(args.seed)
    thermalize_momenta(atoms, temperature_K=args.temperature, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    dynamics = Langevin(
        atoms,
        timestep=args.timestep * units.fs,
        temperature_K=args.temperature,
        friction=args.friction / units.fs,
        fixcm=False,
        rng=rng,
    )
    started = time.perf_counter()
    dynamics.run(args.equilibration)
    n = len(atoms)
    positions = np.zeros((args.frames, n, 3), np.float32)
    forces = np.zeros((args.frames, n, 3), np.float32)
    energy = np.zeros(args.frames, np.float64)
    for frame in range(args.frames):
        dynamics.run(args.stride)
        positions[frame] = atoms.positions
        forces[frame] = atoms.get_forces()
        energy[frame] = atoms.get_potential_energy()
        if (frame + 1) % max(1, args.frames // 20) == 0:
            elapsed = time.perf_counter() - started
            print(f"{args.molecule}: {frame + 1}/{args.frames} frames, {elapsed:.0f} s", flush=True)

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{args.molecule}_gfn2.h5"
    partial = path.with_suffix(".h5.partial")
    with h5py.File(partial, "w") as out:
        out["numbers"] = atoms.numbers.astype(np.int32)
        for key, values, unit in (
            ("positions", positions, "Ang"),
            ("forces", forces, "eV/Ang"),
            ("energy", energy, "eV"),
        ):
            out.create_dataset(key, data=values, compression="gzip", compression_opts=9, shuffle=True)
            out[key].attrs["unit"] = unit
        provenance = {
            "molecule": args.molecule,
            "method": "GFN2-xTB",
            "code": f"tblite {metadata.version('tblite')} (ASE calculator), ase {metadata.version('ase')}",
            "dynamics": "Langevin (ase.md.langevin)",
            "temperature_K": args.temperature,
            "timestep_fs": args.timestep,
            "friction_per_fs": args.friction,
            "equilibration_steps": args.equilibration,
            "stride_steps": args.stride,
            "frames": args.frames,
            "seed": args.seed,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        for key, value in provenance.items():
            out.attrs[key] = value
    partial.replace(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--molecule", required=True, choices=["aspirin", "ethanol"])
    parser.add_argument("--frames", type=int, default=3000, help="frames to record")
    parser.add_argument("--stride", type=int, default=10, help="MD steps between recorded frames")
    parser.add_argument("--timestep", type=float, default=0.5, help="MD time step (fs)")
    parser.add_argument("--temperature", type=float, default=500.0, help="Langevin temperature (K), as MD17")
    parser.add_argument("--friction", type=float, default=0.01, help="Langevin friction (1/fs)")
    parser.add_argument("--equilibration", type=int, default=2000, help="MD steps before recording")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"wrote {run(args)}")


if __name__ == "__main__":
    main()
