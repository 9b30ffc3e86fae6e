"""Generate jaxatom's built-in materials data set (fcc Cu, ASE's EMT) and the reference method's own lattice numbers.

Reference method: ASE's effective-medium theory (``ase.calculators.emt.EMT``) for copper. tblite 0.8 does run
periodic GFN1-xTB with stress, but a 32-atom Cu cell costs ~2.7 s per single point on one core and GFN2-xTB's SCF does
not converge for bulk Cu; the NPT runs needed for the reference lattice constant and thermal expansion (10^4 steps of
100+ atoms) are out of reach with it. EMT is fast, analytic (energy, forces, stress) and fitted to Cu.

**Data set** (default mode). 32-atom fcc Cu supercells (2×2×2 conventional cells) and 31-atom ones with a vacancy,
sampled by ASE MD with EMT, in *segments*; every segment starts from the perfect lattice (a vacancy: one random atom
removed), draws Maxwell–Boltzmann velocities, equilibrates, then records a frame every ``--stride`` steps:

* ``nvt``: Langevin MD at fixed cell, for each temperature and each isotropic linear strain in ``--strains``
  (relative to EMT's 0 K lattice constant a0), once with the cubic cell and once with an added random symmetric
  shear/deviatoric strain (off-diagonal up to ``--shear``, diagonal up to ``--shear / 3``);
* ``npt``: isotropic MTK NPT (``ase.md.nose_hoover_chain.IsotropicMTKNPT``) at zero pressure, for each temperature:
  the volumes jaxatom's own NPT will visit;
* ``vacancy``: Langevin MD at fixed cell of a 31-atom cell, for each temperature at strains 0 and +0.02.

Labels at the stored (wrapped, float64) positions, all EMT: ``energy`` (eV), ``forces`` (eV/Å), ``stress``
(eV/Å³, ``atoms.get_stress(voigt=False)``, ASE's sign: σ = (1/V) ∂E/∂ε, positive under tension; the potential part
only, no kinetic term). Written with :func:`jaxatom.data.formats.write_hdf5` to ``jaxatom/data/builtin/cu_emt.h5``
(cell and pbc per structure) with the provenance in the file's attributes (``metadata`` when loaded): method, codes
and versions, a0, temperatures, strains, shear, time step, friction, barostat, seeds, the segment table, command,
date. Deterministic for a given ASE version and seed.

**Reference numbers** (``--reference``), EMT's own, written to ``jaxatom/data/builtin/cu_emt_reference.json``:

* 0 K: energy–volume scan of the 4-atom cubic cell (lattice constant ±``--eos-range``), fitted with
  ``ase.eos.EquationOfState`` (Birch–Murnaghan): a0 (Å), B0 (GPa), E0 per atom (eV);
* finite T: isotropic MTK NPT (Martyna–Tobias–Klein with Nosé–Hoover chains, a correct isothermal–isobaric
  sampler, unlike Berendsen, whose volume fluctuations are wrong) at zero pressure on a ``--supercell``³ conventional
  cell, for each of ``--npt-temperatures``: mean lattice constant a(T) = (4 ⟨V⟩/N)^(1/3) with a block-average standard
  error; the linear thermal expansion coefficient α = (1/a) da/dT from a quadratic fit of a(T) through (0 K, a0)
  (classical MD: a → a0 as T → 0), at each temperature, plus the secant between the lowest and highest T;
* the isothermal bulk modulus at ``--fluctuation-temperature`` from the volume fluctuations of the same NPT run,
  B_T = k_B T ⟨V⟩ / ⟨δV²⟩, with a block-average error (compare B0 from the 0 K scan: B_T(300 K) is somewhat lower).

Run from the repository root::

    OMP_NUM_THREADS=1 python experiments/make_materials_dataset.py
    OMP_NUM_THREADS=1 python experiments/make_materials_dataset.py --reference --jobs 2

Both write to a temporary file that replaces the shipped one only when complete.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.eos import EquationOfState
from ase.md.langevin import Langevin
from ase.md.nose_hoover_chain import IsotropicMTKNPT
from ase.md.velocitydistribution import Stationary, thermalize_momenta

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "jaxatom" / "data" / "builtin"
DATA_FILE = OUT_DIR / "cu_emt.h5"
REFERENCE_FILE = OUT_DIR / "cu_emt_reference.json"
METHOD = "EMT (ase.calculators.emt.EMT, default parameters, asap_cutoff=False)"
ELEMENT = "Cu"


def _command() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _code() -> str:
    return f"ase {metadata.version('ase')}, numpy {np.__version__}"


# -- 0 K equation of state -----------------------------------------------------------------------------------------


def equation_of_state(a_guess: float = 3.6, rel_range: float = 0.04, points: int = 15) -> dict:
    """EMT's 0 K energy–volume curve of fcc Cu (4-atom cubic cell), Birch–Murnaghan fit."""
    lattice = a_guess * np.linspace(1 - rel_range, 1 + rel_range, points)
    volumes, energies = [], []
    for a in lattice:
        atoms = bulk(ELEMENT, "fcc", a=a, cubic=True)
        atoms.calc = EMT()
        volumes.append(atoms.get_volume())
        energies.append(atoms.get_potential_energy())
    eos = EquationOfState(volumes, energies, eos="birchmurnaghan")
    v0, e0, b0 = eos.fit()
    a0 = v0 ** (1 / 3)
    # refine around the minimum once (a symmetric window gives the best fit)
    if abs(a0 / a_guess - 1) > rel_range / 4:
        return equation_of_state(a0, rel_range, points)
    atoms = bulk(ELEMENT, "fcc", a=a0, cubic=True)
    atoms.calc = EMT()
    return {
        "a0_Ang": float(a0),
        "bulk_modulus_GPa": float(b0 / units.GPa),
        "energy_per_atom_eV": float(e0 / 4),
        "volume_per_atom_Ang3": float(v0 / 4),
        "pressure_at_a0_GPa": float(-np.trace(atoms.get_stress(voigt=False)) / 3 / units.GPa),
        "eos": "birchmurnaghan (ase.eos.EquationOfState)",
        "scan": {"lattice_Ang": lattice.tolist(), "energy_per_atom_eV": (np.array(energies) / 4).tolist()},
    }


# -- data set ------------------------------------------------------------------------------------------------------


def _cell(a0: float, strain: float, shear: np.ndarray | None) -> np.ndarray:
    cell = np.eye(3) * 2 * a0 * (1 + strain)
    if shear is not None:
        cell = cell @ (np.eye(3) + shear)
    return cell


def _random_shear(rng: np.random.Generator, amount: float) -> np.ndarray:
    off = rng.uniform(-amount, amount, 3)
    diag = rng.uniform(-amount / 3, amount / 3, 3)
    diag -= diag.mean()  # deviatoric: the volume is set by the isotropic strain
    return np.array([[diag[0], off[2], off[1]], [off[2], diag[1], off[0]], [off[1], off[0], diag[2]]])


def run_segment(spec: dict, args: argparse.Namespace, a0: float) -> dict:
    """One MD segment; returns its frames (positions, cell, energy, forces, stress)."""
    rng = np.random.default_rng(spec["seed"])
    atoms = bulk(ELEMENT, "fcc", a=a0, cubic=True).repeat(2)
    shear = np.array(spec["shear"]) if spec["shear"] is not None else None
    atoms.set_cell(_cell(a0, spec["strain"], shear), scale_atoms=True)
    if spec["kind"] == "vacancy":
        del atoms[int(rng.integers(len(atoms)))]
    atoms.calc = EMT()
    thermalize_momenta(atoms, temperature_K=spec["temperature_K"], rng=rng)
    Stationary(atoms)
    dt = args.timestep * units.fs
    if spec["kind"] == "npt":
        dynamics = IsotropicMTKNPT(
            atoms,
            timestep=dt,
            temperature_K=spec["temperature_K"],
            pressure_au=0.0,
            tdamp=args.tdamp * units.fs,
            pdamp=args.pdamp * units.fs,
        )
    else:
        dynamics = Langevin(
            atoms,
            timestep=dt,
            temperature_K=spec["temperature_K"],
            friction=args.friction / units.fs,
            fixcm=False,
            rng=rng,
        )
    dynamics.run(args.equilibration)
    frames = {"positions": [], "cell": [], "energy": [], "forces": [], "stress": [], "numbers": atoms.numbers.copy()}
    for _ in range(spec["frames"]):
        dynamics.run(args.stride)
        snapshot = atoms.copy()
        snapshot.wrap()
        snapshot.calc = EMT()
        frames["positions"].append(snapshot.positions.copy())
        frames["cell"].append(snapshot.cell[:].copy())
        frames["energy"].append(snapshot.get_potential_energy())
        frames["forces"].append(snapshot.get_forces())
        frames["stress"].append(snapshot.get_stress(voigt=False))
    return frames


def segment_specs(args: argparse.Namespace) -> list[dict]:
    """The segments of the data set, each with its own seed (from one SeedSequence)."""
    specs = []
    shear_rng = np.random.default_rng(np.random.SeedSequence([args.seed, 1]))
    for temperature in args.temperatures:
        for strain in args.strains:
            specs.append({"kind": "nvt", "temperature_K": temperature, "strain": strain, "shear": None})
            shear = _random_shear(shear_rng, args.shear).round(6).tolist()
            specs.append({"kind": "nvt", "temperature_K": temperature, "strain": strain, "shear": shear})
        specs.append({"kind": "npt", "temperature_K": temperature, "strain": 0.0, "shear": None})
        for strain in (0.0, 0.02):
            specs.append({"kind": "vacancy", "temperature_K": temperature, "strain": strain, "shear": None})
    seeds = np.random.SeedSequence(args.seed).generate_state(len(specs))
    for spec, seed in zip(specs, seeds, strict=True):
        spec["seed"] = int(seed)
        spec["frames"] = args.frames // 2 if spec["kind"] == "vacancy" else args.frames
    return specs


def make_dataset(args: argparse.Namespace) -> Path:
    from jaxatom.data.dataset import Dataset
    from jaxatom.data.formats import write_hdf5

    started = time.perf_counter()
    a0 = equation_of_state()["a0_Ang"]
    specs = segment_specs(args)
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_segment, spec, args, a0) for spec in specs]
        results = []
        for index, future in enumerate(futures):
            results.append(future.result())
            spec = specs[index]
            elapsed = time.perf_counter() - started
            print(f"segment {index + 1}/{len(specs)} {spec['kind']} {spec['temperature_K']} K", end=" ")
            print(f"strain {spec['strain']}: {elapsed:.0f} s", flush=True)
    numbers, positions, cells, energy, forces, stress = [], [], [], [], [], []
    first = 0
    for spec, frames in zip(specs, results, strict=True):
        count = len(frames["energy"])
        numbers += [frames["numbers"]] * count
        positions += frames["positions"]
        forces += frames["forces"]
        cells += frames["cell"]
        energy += frames["energy"]
        stress += frames["stress"]
        spec["first"], spec["count"], spec["n_atoms"] = first, count, len(frames["numbers"])
        first += count
    dataset = Dataset.from_arrays(
        numbers=numbers,
        positions=positions,
        properties={"energy": np.array(energy), "forces": forces, "stress": np.array(stress)},
        units={"energy": "eV", "forces": "eV/Ang", "stress": "eV/Ang^3"},
        cell=np.array(cells),
        pbc=np.ones((len(energy), 3), bool),
        metadata={
            "name": "cu_emt",
            "method": METHOD,
            "element": ELEMENT,
            "code": _code(),
            "script": "experiments/make_materials_dataset.py",
            "command": _command(),
            "created": _now(),
            "seed": args.seed,
            "a0_Ang": a0,
            "supercell": "2x2x2 conventional fcc (32 atoms; vacancy segments 31)",
            "temperatures_K": list(args.temperatures),
            "strains": list(args.strains),
            "strain_definition": "isotropic linear strain of the lattice constant relative to EMT's 0 K a0",
            "shear": args.shear,
            "timestep_fs": args.timestep,
            "friction_per_fs": args.friction,
            "npt": f"ase IsotropicMTKNPT, 0 pressure, tdamp {args.tdamp} fs, pdamp {args.pdamp} fs",
            "equilibration_steps": args.equilibration,
            "stride_steps": args.stride,
            "stress_convention": "ASE: atoms.get_stress(voigt=False) = (1/V) dE/d(strain), potential part only",
            "segments": json.dumps(specs),
            "wall_time_s": round(time.perf_counter() - started, 1),
        },
    )
    path = args.output or DATA_FILE
    write_hdf5(dataset, path)
    print(f"{len(dataset)} structures, {path.stat().st_size / 1e6:.2f} MB")
    return path


# -- NPT reference -------------------------------------------------------------------------------------------------


def _block_error(values: np.ndarray, statistic, blocks: int = 8) -> float:
    """Standard error of ``statistic`` from ``blocks`` contiguous blocks."""
    parts = np.array_split(values, blocks)
    estimates = np.array([statistic(p) for p in parts])
    return float(estimates.std(ddof=1) / np.sqrt(blocks))


def npt_run(temperature: float, steps: int, args: argparse.Namespace, a0: float, seed: int) -> dict:
    """Isotropic MTK NPT at zero pressure: volumes and temperatures every ``--sample-every`` steps."""
    atoms = bulk(ELEMENT, "fcc", a=a0, cubic=True).repeat(args.supercell)
    atoms.calc = EMT()
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=2 * temperature, rng=rng)  # equipartition halves it at once
    Stationary(atoms)
    dynamics = IsotropicMTKNPT(
        atoms,
        timestep=args.timestep * units.fs,
        temperature_K=temperature,
        pressure_au=0.0,
        tdamp=args.tdamp * units.fs,
        pdamp=args.pdamp * units.fs,
    )
    started = time.perf_counter()
    dynamics.run(args.npt_equilibration)
    volumes, temperatures, pressures = [], [], []
    for _ in range(steps // args.sample_every):
        dynamics.run(args.sample_every)
        volumes.append(atoms.get_volume())
        temperatures.append(atoms.get_temperature())
        pressures.append(-np.trace(atoms.get_stress(voigt=False, include_ideal_gas=True)) / 3 / units.GPa)
    volumes = np.array(volumes)
    n = len(atoms)
    lattice = (4 * volumes / n) ** (1 / 3)
    result = {
        "temperature_K": temperature,
        "atoms": n,
        "production_steps": steps,
        "samples": len(volumes),
        "a_Ang": float(lattice.mean()),
        "a_stderr_Ang": _block_error(lattice, np.mean),
        "volume_per_atom_Ang3": float(volumes.mean() / n),
        "mean_temperature_K": float(np.mean(temperatures)),
        "mean_pressure_GPa": float(np.mean(pressures)),
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    kt = units.kB * temperature

    def bulk_modulus(v):
        return kt * v.mean() / v.var() / units.GPa

    result["bulk_modulus_from_fluctuations_GPa"] = float(bulk_modulus(volumes))
    result["bulk_modulus_from_fluctuations_stderr_GPa"] = _block_error(volumes, bulk_modulus)
    summary = f"a = {result['a_Ang']:.5f} Å, T = {result['mean_temperature_K']:.1f} K"
    print(f"NPT {temperature} K: {summary}, P = {result['mean_pressure_GPa']:.3f} GPa, {result['wall_time_s']} s")
    return result


def make_reference(args: argparse.Namespace) -> Path:
    started = time.perf_counter()
    eos = equation_of_state(rel_range=args.eos_range)
    a0 = eos["a0_Ang"]
    print(f"0 K: a0 = {a0:.5f} Å, B0 = {eos['bulk_modulus_GPa']:.2f} GPa", flush=True)
    temperatures = sorted(args.npt_temperatures)
    seeds = np.random.SeedSequence([args.seed, 2]).generate_state(len(temperatures))
    steps = [args.fluctuation_steps if t == args.fluctuation_temperature else args.npt_steps for t in temperatures]
    # longest first, so that the pool finishes early
    order = sorted(range(len(temperatures)), key=lambda i: -steps[i])
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {i: pool.submit(npt_run, temperatures[i], steps[i], args, a0, int(seeds[i])) for i in order}
        runs = [futures[i].result() for i in range(len(temperatures))]
    t = np.array([0.0, *temperatures])
    a = np.array([a0, *(r["a_Ang"] for r in runs)])
    weights = 1 / np.array([1e-5, *(max(r["a_stderr_Ang"], 1e-5) for r in runs)])
    c2, c1, c0 = np.polyfit(t, a, 2, w=weights)
    for run in runs:
        temperature = run["temperature_K"]
        run["alpha_per_K"] = float((2 * c2 * temperature + c1) / run["a_Ang"])
    low, high = runs[0], runs[-1]
    secant = (high["a_Ang"] - low["a_Ang"]) / (high["temperature_K"] - low["temperature_K"]) / low["a_Ang"]
    fluct = next((r for r in runs if r["temperature_K"] == args.fluctuation_temperature), None)
    reference = {
        "name": "cu_emt",
        "method": METHOD,
        "element": ELEMENT,
        "structure": "fcc",
        "code": _code(),
        "script": "experiments/make_materials_dataset.py --reference",
        "command": _command(),
        "created": _now(),
        "seed": args.seed,
        "units": {"length": "Ang", "pressure": "GPa", "temperature": "K", "energy": "eV", "alpha": "1/K"},
        "zero_kelvin": eos,
        "npt": {
            "sampler": (
                "ase.md.nose_hoover_chain.IsotropicMTKNPT (Martyna-Tobias-Klein, Nose-Hoover chains of 3 on "
                "particles and barostat): a correct isothermal-isobaric ensemble, so volume fluctuations are usable"
            ),
            "pressure_GPa": 0.0,
            "supercell": f"{args.supercell}x{args.supercell}x{args.supercell} conventional fcc",
            "timestep_fs": args.timestep,
            "tdamp_fs": args.tdamp,
            "pdamp_fs": args.pdamp,
            "equilibration_steps": args.npt_equilibration,
            "sample_every_steps": args.sample_every,
            "lattice_constant": "a = (4 <V> / N)^(1/3); stderr from 8 blocks",
            "runs": runs,
        },
        "thermal_expansion": {
            "fit": "a(T) = c0 + c1 T + c2 T^2 through (0 K, a0) and the NPT points (weighted by 1/stderr)",
            "coefficients_Ang": [float(c0), float(c1), float(c2)],
            "alpha_per_K": {str(int(r["temperature_K"])): r["alpha_per_K"] for r in runs},
            "alpha_secant_per_K": float(secant),
            "secant_between_K": [low["temperature_K"], high["temperature_K"]],
        },
        "bulk_modulus_at_T": None
        if fluct is None
        else {
            "temperature_K": fluct["temperature_K"],
            "from_volume_fluctuations_GPa": fluct["bulk_modulus_from_fluctuations_GPa"],
            "stderr_GPa": fluct["bulk_modulus_from_fluctuations_stderr_GPa"],
            "formula": "B_T = k_B T <V> / <dV^2> (isothermal-isobaric ensemble)",
        },
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    path = args.output or REFERENCE_FILE
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(reference, indent=1) + "\n")
    os.replace(partial, path)
    print(json.dumps({k: reference[k] for k in ("thermal_expansion", "bulk_modulus_at_T")}, indent=1))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--reference", action="store_true", help="compute EMT's a0, B0, a(T), alpha, B_T instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--output", type=Path, help="file to write (default: the shipped one)")
    parser.add_argument("--timestep", type=float, default=4.0, help="MD time step (fs)")
    parser.add_argument("--tdamp", type=float, default=100.0, help="MTK thermostat time constant (fs)")
    parser.add_argument("--pdamp", type=float, default=500.0, help="MTK barostat time constant (fs)")
    data = parser.add_argument_group("data set")
    data.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 600.0, 900.0, 1200.0])
    data.add_argument("--strains", type=float, nargs="+", default=[-0.04, -0.02, 0.0, 0.02, 0.04])
    data.add_argument("--shear", type=float, default=0.03, help="largest off-diagonal shear strain")
    data.add_argument("--frames", type=int, default=30, help="frames per segment (vacancy segments: half)")
    data.add_argument("--stride", type=int, default=10, help="MD steps between frames")
    data.add_argument("--equilibration", type=int, default=150, help="MD steps before recording")
    data.add_argument("--friction", type=float, default=0.02, help="Langevin friction (1/fs)")
    ref = parser.add_argument_group("reference")
    ref.add_argument("--eos-range", type=float, default=0.04, help="relative lattice range of the E-V scan")
    ref.add_argument("--supercell", type=int, default=3, help="conventional cells per edge of the NPT cell")
    ref.add_argument("--npt-temperatures", type=float, nargs="+", default=[100.0, 300.0, 600.0, 900.0])
    ref.add_argument("--npt-steps", type=int, default=3000, help="NPT production steps")
    ref.add_argument("--npt-equilibration", type=int, default=750, help="NPT steps before sampling")
    ref.add_argument("--sample-every", type=int, default=5, help="NPT steps between volume samples")
    ref.add_argument("--fluctuation-temperature", type=float, default=300.0, help="T of the long run for B_T")
    ref.add_argument("--fluctuation-steps", type=int, default=12000, help="NPT production steps at that T")
    args = parser.parse_args()
    print(f"wrote {make_reference(args) if args.reference else make_dataset(args)}")


if __name__ == "__main__":
    main()
