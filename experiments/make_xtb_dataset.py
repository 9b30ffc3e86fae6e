"""Generate jaxatom's built-in data sets: GFN2-xTB (tblite) Langevin MD of aspirin and ethanol.

For each molecule: start from a fixed geometry (aspirin: ``shared/structures/aspirin.xyz`` next to the
repository; ethanol: ``ase.build.molecule``), draw Maxwell–Boltzmann velocities at the temperature, equilibrate, then
run Langevin MD and record every ``--stride``-th step. Energies and forces of the recorded frames are the GFN2-xTB
values of the MD itself. Each recorded frame is then labelled, at its stored (float32) positions, with further GFN2-xTB
properties (:func:`label_frame`): the dipole moment and partial charges of a single point without field, and the
static dipole polarizability α_ij = ∂μ_i/∂F_j from central differences of the dipole in uniform electric fields
±h along x, y and z (6 more single points; h = ``--field-step`` atomic units, default 2e-4, chosen from a
convergence check on one frame; α is symmetrised, (α + αᵀ)/2). The field enters the energy as −μ·F.

Each data set is one HDF5 file in ``jaxatom/data/builtin/`` with

* ``numbers [N]`` (atomic numbers), ``positions [F, N, 3]`` (Å, float32), ``forces [F, N, 3]`` (eV/Å, float32),
  ``energy [F]`` (eV, float64);
* ``dipole_moment [F, 3]`` (e·Å, float32; tblite's dipole, which includes the atomic dipoles of GFN2, so it is not
  Σ qᵢrᵢ), ``charges [F, N]`` (e, float32; tblite's Mulliken charges), ``polarizability [F, 3, 3]`` (Å³, float32; a
  polarizability volume, Gaussian units: 1 Bohr³ = 0.148185 Å³);
* attributes: units of each array, and the provenance (method, code and version, temperature, time step, friction,
  equilibration steps, stride, seed, number of frames, command line, date; for the labels: field step, SCF
  accuracy, code, command line, date, largest asymmetry of α before symmetrisation).

Rerunnable and deterministic for a given tblite version and seed. Run from the repository root::

    OMP_NUM_THREADS=1 python experiments/make_xtb_dataset.py --molecule aspirin --frames 3000
    OMP_NUM_THREADS=1 python experiments/make_xtb_dataset.py --molecule ethanol --frames 3000

To add (or redo) the dipole, charge and polarizability labels of an existing file without rerunning the MD, use
``--relabel``: it reads the positions of ``jaxatom/data/builtin/<molecule>_gfn2.h5``, copies numbers, positions,
energies and forces unchanged (bit for bit) with the MD provenance, checks that a fresh single point reproduces
each stored energy (to ``--check-energy-tol`` eV) and forces, and writes the labels::

    OMP_NUM_THREADS=1 python experiments/make_xtb_dataset.py --molecule ethanol --relabel
    OMP_NUM_THREADS=1 python experiments/make_xtb_dataset.py --molecule aspirin --relabel

``--check-field-step`` prints the polarizability of frame 0 for a range of field steps (the convergence check) and
exits. Output goes to a ``.partial`` file that replaces the data set only when complete.

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

METHOD = "GFN2-xTB"
#: Electronic temperature of every single point (K): that of the MD (tblite's ASE calculator default).
ELECTRONIC_TEMPERATURE_K = 300.0
#: Field step h of the finite-field polarizability (atomic units, Hartree/(e·Bohr); 1 au = 51.42 V/Å). Chosen by
#: ``--check-field-step`` on ethanol frame 0: at SCF accuracy 1e-3, α differs by < 3e-6 Å³ (of 2.3 Å³) between
#: h = 5e-5 and 5e-4, and its diagonal agrees with −∂²E/∂F² to 1e-5 Å³.
FIELD_STEP_AU = 2e-4
#: SCF accuracy of the label single points (tblite's ``accuracy``; 1 is the default). Tight, because α is a
#: difference of dipoles of about 50 au × h.
SCF_ACCURACY = 1e-3
#: The label arrays, their units and what they are.
LABELS = {
    "dipole_moment": ("e*Ang", "dipole moment of the GFN2-xTB density incl. atomic dipoles (tblite 'dipole')"),
    "charges": ("e", "GFN2-xTB partial charges (tblite 'charges', Mulliken)"),
    "polarizability": (
        "Ang^3",
        "static dipole polarizability volume alpha_ij = d mu_i / d F_j (Gaussian units; 1 Bohr^3 = 0.148185 Ang^3), "
        "central differences in uniform fields +-h, symmetrised (alpha + alpha^T) / 2",
    ),
}
LABEL_ATTRS = (
    "labels",
    "labels_method",
    "labels_code",
    "labels_command",
    "labels_created",
    "field_step_au",
    "field_step_V_per_Ang",
    "scf_accuracy",
    "electronic_temperature_K",
    "polarizability_max_asymmetry_Ang3",
    "labels_max_energy_deviation_eV",
    "labels_max_force_deviation_eV_per_Ang",
    "labels_wall_time_s",
)


def start_geometry(name: str) -> Atoms:
    """The starting structure of a built-in molecule (Å)."""
    if name == "aspirin":
        if not ASPIRIN_FILE.is_file():
            raise SystemExit(f"aspirin start geometry not found at {ASPIRIN_FILE}")
        return read(ASPIRIN_FILE)
    if name == "ethanol":
        return molecule("CH3CH2OH")
    raise SystemExit(f"unknown molecule {name!r}; choose aspirin or ethanol")


# -- labels ----------------------------------------------------------------------------------------------------------


def singlepoint(numbers, positions, field=None, accuracy: float = SCF_ACCURACY):
    """A GFN2-xTB single point (tblite ``Result``, atomic units) at ``positions`` (Å), in a uniform electric
    ``field`` (3 numbers, Hartree/(e·Bohr); the energy gains −μ·F), from a fresh SAD guess (deterministic)."""
    from tblite.interface import Calculator
    from tblite.library import ffi

    calc = Calculator(METHOD, np.asarray(numbers), np.asarray(positions, np.float64) / units.Bohr)
    calc.set("verbosity", 0)
    calc.set("accuracy", accuracy)
    calc.set("temperature", ELECTRONIC_TEMPERATURE_K * units.kB / units.Hartree)
    if field is not None:
        # An added interaction stays with the calculator, hence a fresh calculator per field. tblite 0.8's
        # Calculator.add passes its argument to C unconverted: give it a C double[3], not a NumPy array.
        calc.add("electric-field", ffi.new("double[3]", [float(f) for f in field]))
    return calc.singlepoint()


def polarizability_au(numbers, positions, field_step: float, accuracy: float = SCF_ACCURACY) -> np.ndarray:
    """α_ij = ∂μ_i/∂F_j (Bohr³, not symmetrised) by central differences of the dipole in fields ±h along x, y, z."""
    alpha = np.zeros((3, 3))
    for j in range(3):
        field = np.zeros(3)
        field[j] = field_step
        plus = singlepoint(numbers, positions, field, accuracy).get("dipole")
        minus = singlepoint(numbers, positions, -field, accuracy).get("dipole")
        alpha[:, j] = (plus - minus) / (2 * field_step)
    return alpha


def label_frame(numbers, positions, field_step: float = FIELD_STEP_AU, accuracy: float = SCF_ACCURACY) -> dict:
    """GFN2-xTB labels of one structure (positions in Å): ``energy`` (eV), ``forces`` (eV/Å), ``dipole_moment``
    (e·Å), ``charges`` (e), ``polarizability`` (Å³, symmetrised) and ``asymmetry`` (max |α_ij − α_ji|, Å³)."""
    result = singlepoint(numbers, positions, None, accuracy)
    alpha = polarizability_au(numbers, positions, field_step, accuracy) * units.Bohr**3
    return {
        "energy": result.get("energy") * units.Hartree,
        "forces": -result.get("gradient") * units.Hartree / units.Bohr,
        "dipole_moment": result.get("dipole") * units.Bohr,
        "charges": result.get("charges"),
        "polarizability": (alpha + alpha.T) / 2,
        "asymmetry": float(np.abs(alpha - alpha.T).max()),
    }


def label_frames(args, numbers, positions, energy, forces) -> tuple[dict, dict]:
    """Labels of every frame and their provenance; checks that a fresh single point at the stored positions
    reproduces the stored energy and forces (they differ only by SCF convergence and float32 positions)."""
    n_frames, n_atoms = positions.shape[:2]
    labels = {
        "dipole_moment": np.zeros((n_frames, 3), np.float32),
        "charges": np.zeros((n_frames, n_atoms), np.float32),
        "polarizability": np.zeros((n_frames, 3, 3), np.float32),
    }
    asymmetry = energy_deviation = force_deviation = 0.0
    started = time.perf_counter()
    for frame in range(n_frames):
        values = label_frame(numbers, positions[frame].astype(np.float64), args.field_step, args.scf_accuracy)
        for key in labels:
            labels[key][frame] = values[key]
        asymmetry = max(asymmetry, values["asymmetry"])
        energy_deviation = max(energy_deviation, abs(values["energy"] - energy[frame]))
        force_deviation = max(force_deviation, float(np.abs(values["forces"] - forces[frame]).max()))
        if abs(values["charges"].sum()) > 1e-6:
            raise SystemExit(f"frame {frame}: charges sum to {values['charges'].sum():.3g}, not 0")
        if np.linalg.eigvalsh(values["polarizability"]).min() <= 0:
            raise SystemExit(f"frame {frame}: polarizability is not positive definite")
        if energy_deviation > args.check_energy_tol or force_deviation > args.check_force_tol:
            raise SystemExit(
                f"frame {frame}: a fresh single point differs from the stored energy by {energy_deviation:.3g} eV "
                f"(tolerance {args.check_energy_tol:g}) or forces by {force_deviation:.3g} eV/Å (tolerance "
                f"{args.check_force_tol:g}); the file was not made with this method/version"
            )
        if (frame + 1) % max(1, n_frames // 20) == 0:
            elapsed = time.perf_counter() - started
            print(f"{args.molecule}: labelled {frame + 1}/{n_frames} frames, {elapsed:.0f} s", flush=True)
    provenance = {
        "labels": ", ".join(labels),
        "labels_method": f"{METHOD} single points at the stored (float32) positions, 7 per frame (no field, +-h x/y/z)",
        "labels_code": f"tblite {metadata.version('tblite')} (tblite.interface.Calculator)",
        "labels_command": _command(),
        "labels_created": _now(),
        "field_step_au": args.field_step,
        "field_step_V_per_Ang": args.field_step * units.Hartree / units.Bohr,
        "scf_accuracy": args.scf_accuracy,
        "electronic_temperature_K": ELECTRONIC_TEMPERATURE_K,
        "polarizability_max_asymmetry_Ang3": asymmetry,
        "labels_max_energy_deviation_eV": energy_deviation,
        "labels_max_force_deviation_eV_per_Ang": force_deviation,
        "labels_wall_time_s": round(time.perf_counter() - started, 1),
    }
    return labels, provenance


def check_field_step(args) -> None:
    """Print α of frame 0 (of the built-in file, else the start geometry) for several field steps and accuracies,
    and the diagonal from the energy, −∂²E/∂F², as a check of the sign and of the dipole's consistency."""
    path = args.source or OUT_DIR / f"{args.molecule}_gfn2.h5"
    if path.is_file():
        with h5py.File(path, "r") as data:
            numbers, positions = data["numbers"][:], data["positions"][0].astype(np.float64)
    else:
        atoms = start_geometry(args.molecule)
        numbers, positions = atoms.numbers, atoms.positions
    print(f"{args.molecule} frame 0: polarizability (Å³) vs field step h (au) and SCF accuracy")
    reference = polarizability_au(numbers, positions, FIELD_STEP_AU, 1e-4) * units.Bohr**3
    energy0 = singlepoint(numbers, positions, None, 1e-4).get("energy")
    for accuracy in (1.0, 1e-2, 1e-3, 1e-4):
        for h in (5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3):
            alpha = polarizability_au(numbers, positions, h, accuracy) * units.Bohr**3
            symmetric = (alpha + alpha.T) / 2
            print(
                f"accuracy {accuracy:g} h {h:.0e}: iso {np.trace(symmetric) / 3:.6f}, diag "
                f"{np.round(np.diag(symmetric), 5)}, max |a - a^T| {np.abs(alpha - alpha.T).max():.2e}, "
                f"max |a - a(h={FIELD_STEP_AU:g}, acc 1e-4)| {np.abs(alpha - reference).max():.2e}"
            )
    h = 1e-3
    curvature = []
    for j in range(3):
        field = np.zeros(3)
        field[j] = h
        plus = singlepoint(numbers, positions, field, 1e-4).get("energy")
        minus = singlepoint(numbers, positions, -field, 1e-4).get("energy")
        curvature.append(-(plus + minus - 2 * energy0) / h**2 * units.Bohr**3)
    print(f"from the energy, -d2E/dF2 (h {h:g}, accuracy 1e-4): diag {np.round(curvature, 5)} Å³")


# -- files -----------------------------------------------------------------------------------------------------------


def _command() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _write(path: Path, fill) -> Path:
    """Call ``fill(h5py.File)`` on a ``.partial`` file next to ``path`` and move it into place only when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".h5.partial")
    try:
        with h5py.File(partial, "w") as out:
            fill(out)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _write_labels(out: h5py.File, labels: dict, provenance: dict) -> None:
    for key, values in labels.items():
        out.create_dataset(key, data=values, compression="gzip", compression_opts=9, shuffle=True)
        out[key].attrs["unit"], out[key].attrs["description"] = LABELS[key]
    for key, value in provenance.items():
        out.attrs[key] = value


def relabel(args: argparse.Namespace) -> Path:
    """Label the frames of an existing file; numbers, positions, energies, forces and the MD provenance are copied
    unchanged."""
    source = args.source or OUT_DIR / f"{args.molecule}_gfn2.h5"
    with h5py.File(source, "r") as data:
        if data.attrs.get("molecule") != args.molecule:
            raise SystemExit(f"{source} holds {data.attrs.get('molecule')!r}, not {args.molecule!r}")
        numbers, positions = data["numbers"][:], data["positions"][:]
        energy, forces = data["energy"][:], data["forces"][:]
    labels, provenance = label_frames(args, numbers, positions, energy, forces)

    def fill(out: h5py.File) -> None:
        with h5py.File(source, "r") as data:
            for key in ("numbers", "positions", "forces", "energy"):
                data.copy(data[key], out, name=key)  # data, dtype, filters, chunks and attributes as they are
            for key, value in data.attrs.items():
                if key not in LABEL_ATTRS:
                    out.attrs[key] = value
        _write_labels(out, labels, provenance)

    return _write(args.output or OUT_DIR / f"{args.molecule}_gfn2.h5", fill)


def run(args: argparse.Namespace) -> Path:
    from tblite.ase import TBLite

    atoms = start_geometry(args.molecule)
    atoms.calc = TBLite(method=METHOD, verbosity=0)
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
    labels, label_provenance = label_frames(args, atoms.numbers, positions, energy, forces)

    def fill(out: h5py.File) -> None:
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
            "method": METHOD,
            "code": f"tblite {metadata.version('tblite')} (ASE calculator), ase {metadata.version('ase')}",
            "dynamics": "Langevin (ase.md.langevin)",
            "temperature_K": args.temperature,
            "timestep_fs": args.timestep,
            "friction_per_fs": args.friction,
            "equilibration_steps": args.equilibration,
            "stride_steps": args.stride,
            "frames": args.frames,
            "seed": args.seed,
            "command": _command(),
            "created": _now(),
        }
        for key, value in provenance.items():
            out.attrs[key] = value
        _write_labels(out, labels, label_provenance)

    return _write(args.output or OUT_DIR / f"{args.molecule}_gfn2.h5", fill)


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
    parser.add_argument("--relabel", action="store_true", help="label the frames of an existing file, no MD")
    parser.add_argument("--source", type=Path, help="file to relabel (default: the built-in one)")
    parser.add_argument("--output", type=Path, help="file to write (default: the built-in one)")
    parser.add_argument("--field-step", type=float, default=FIELD_STEP_AU, help="finite-field step h (au)")
    parser.add_argument("--scf-accuracy", type=float, default=SCF_ACCURACY, help="tblite accuracy of the labels")
    parser.add_argument("--check-energy-tol", type=float, default=1e-5, help="stored vs fresh energy (eV)")
    parser.add_argument("--check-force-tol", type=float, default=1e-3, help="stored vs fresh forces (eV/Å)")
    parser.add_argument("--check-field-step", action="store_true", help="print α of frame 0 vs h, then exit")
    args = parser.parse_args()
    if args.check_field_step:
        check_field_step(args)
        return
    print(f"wrote {relabel(args) if args.relabel else run(args)}")


if __name__ == "__main__":
    main()
