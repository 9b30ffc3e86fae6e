"""A two-fidelity ethanol data set: GFN1-xTB labels (cheap) for a subset of the shipped GFN2-xTB MD frames.

The built-in ``ethanol`` data (3000 frames of GFN2-xTB Langevin MD at 500 K, :mod:`jaxatom.data.builtin`) already has
GFN2-xTB energies and forces. This script labels ``--gfn1-frames`` of those frames (a seeded random choice) with
GFN1-xTB single points (tblite's ASE calculator, same electronic temperature, 300 K) and writes one HDF5 data set with

* every GFN2 frame (``fidelity`` 1) and the GFN1-labelled frames (``fidelity`` 0): ``energy`` (eV), ``forces`` (eV/Å),
  ``fidelity`` (index into the metadata's ``fidelities: [gfn1, gfn2]``), ``frame`` (the built-in frame index, so
  that studies can hold out frames at both levels);
* provenance in the metadata (methods, tblite version, seed, command line, date, wall time).

GFN1 and GFN2 energies differ by about 2.3 eV per atom (about -330 vs -309 eV for an ethanol frame), which is what
per-fidelity offsets absorb. Rerunnable and deterministic for a given tblite version and seed; the output is written
to ``<output>.partial`` and renamed when complete (an existing output is kept unless ``--overwrite``). Run from the
repository root (about 1 min per 1000 frames on one core)::

    OMP_NUM_THREADS=1 python experiments/make_multifidelity_dataset.py --gfn1-frames 1500
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from importlib import metadata
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from jaxatom.data import Dataset, load_builtin  # noqa: E402
from jaxatom.data.formats import write_hdf5  # noqa: E402

FIDELITIES = ["gfn1", "gfn2"]
ELECTRONIC_TEMPERATURE_K = 300.0
DEFAULT_OUTPUT = Path("experiments/data/ethanol_gfn1_gfn2.h5")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gfn1-frames", type=int, default=1500, help="frames labelled with GFN1-xTB")
    parser.add_argument("--seed", type=int, default=0, help="seed of the choice of GFN1 frames")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--overwrite", action="store_true")
    return parser.parse_args(argv)


def gfn1_labels(gfn2: Dataset, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GFN1-xTB energies ``[F]`` (eV) and forces ``[F, n, 3]`` (eV/Å) of the chosen frames."""
    from tblite.ase import TBLite

    energies, forces = [], []
    for count, frame in enumerate(frames):
        atoms = gfn2.to_atoms(int(frame))
        atoms.calc = TBLite(method="GFN1-xTB", electronic_temperature=ELECTRONIC_TEMPERATURE_K, verbosity=0)
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces())
        if (count + 1) % 250 == 0:
            print(f"  {count + 1}/{len(frames)} frames labelled", file=sys.stderr)
    return np.array(energies), np.array(forces)


def two_fidelity_dataset(gfn2: Dataset, frames: np.ndarray, energy: np.ndarray, forces: np.ndarray, provenance: dict):
    """Every GFN2 frame (fidelity 1) after the GFN1 frames (fidelity 0), with ``frame`` indices."""
    n_atoms = int(gfn2.n_atoms[0])
    positions = gfn2.positions.reshape(len(gfn2), n_atoms, 3)
    numbers = gfn2.numbers[:n_atoms]
    all_frames = np.arange(len(gfn2))
    return Dataset.from_arrays(
        numbers=numbers,
        positions=np.concatenate([positions[frames], positions]),
        properties={
            "energy": np.concatenate([energy, gfn2.properties["energy"]]),
            "forces": np.concatenate([forces, gfn2.properties["forces"].reshape(len(gfn2), n_atoms, 3)]),
            "fidelity": np.concatenate([np.zeros(len(frames)), np.ones(len(gfn2))]),
            "frame": np.concatenate([frames, all_frames]).astype(np.float64),
        },
        units={"energy": "eV", "forces": "eV/Ang", "fidelity": "1", "frame": "1"},
        metadata={"fidelities": FIDELITIES, **provenance},
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.output.exists() and not args.overwrite:
        print(f"{args.output} exists; pass --overwrite to label again", file=sys.stderr)
        return
    gfn2 = load_builtin("ethanol")
    if not 0 < args.gfn1_frames <= len(gfn2):
        raise SystemExit(f"--gfn1-frames must lie in 1..{len(gfn2)}")
    frames = np.sort(np.random.default_rng(args.seed).permutation(len(gfn2))[: args.gfn1_frames])
    started = time.perf_counter()
    energy, forces = gfn1_labels(gfn2, frames)
    provenance = {
        "methods": "gfn1: GFN1-xTB single points (tblite ASE calculator); gfn2: the built-in ethanol MD labels",
        "electronic_temperature_K": ELECTRONIC_TEMPERATURE_K,
        "code": f"tblite {metadata.version('tblite')}",
        "seed": args.seed,
        "gfn1_frames": args.gfn1_frames,
        "command": " ".join(["make_multifidelity_dataset.py", *(argv if argv is not None else sys.argv[1:])]),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "gfn1_wall_time_s": round(time.perf_counter() - started, 1),
    }
    dataset = two_fidelity_dataset(gfn2, frames, energy, forces, provenance)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    partial = args.output.with_name(args.output.name + ".partial")
    write_hdf5(dataset, partial)
    os.replace(partial, args.output)
    print(f"wrote {args.output}: {len(frames)} GFN1 + {len(gfn2)} GFN2 structures", file=sys.stderr)


if __name__ == "__main__":
    main()
