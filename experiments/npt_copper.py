"""Copper (issue 12): train a small PaiNN on the shipped EMT Cu data with stress, then zero-pressure NPT (stochastic
cell rescaling) and compare the lattice constant with EMT's own reference (``builtin_reference("cu")``).

Steps: (1) train PaiNN (float32) for a fixed wall-clock budget on energy, forces and stress; test-split errors;
(2) the model's 0 K lattice constant from an energy–volume scan of the 4-atom cubic cell (Birch–Murnaghan,
``ase.eos.EquationOfState``) vs EMT's a0; (3) NPT at each temperature on an n×n×n conventional cell with replicas,
a = (4 V/N)^(1/3) averaged after discarding the first 20 %, standard error from block averages over replicas; the
thermal expansion from the secant between the lowest and highest temperature when more than one ran.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python experiments/npt_copper.py --minutes 8 --temperatures 300 900 --ps 10 \\
        --run-dir runs/npt_copper
    # MD only, with a trained model:
    python experiments/npt_copper.py --model runs/npt_copper/model --temperatures 300 --ps 20

Rerunnable: a finished model in ``<run-dir>/model`` is reused (training is skipped), and each MD run continues from
its checkpoint ``<run-dir>/npt_<T>K.h5.ckpt.npz``. Results go to ``<run-dir>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.eos import EquationOfState

import jaxatom
from jaxatom.data import load_builtin
from jaxatom.data.builtin import builtin_reference
from jaxatom.data.splits import random_split
from jaxatom.md import StochasticCellRescaling, read_trajectory, simulate
from jaxatom.nn import PaiNN
from jaxatom.train import TrainConfig, fit, with_energy_offsets
from jaxatom.train.evaluation import error_metrics, predict_dataset
from jaxatom.units import GPa


def train(args, run_dir: Path):
    """The trained potential and what training took (reused from ``run_dir/model`` when there)."""
    model_path = run_dir / "model"
    if model_path.exists():
        return jaxatom.load_model(model_path), json.loads((run_dir / "training.json").read_text())
    copper = load_builtin("cu")
    split = random_split(len(copper), 0.8, 0.1, seed=0)
    train_set, val_set, test_set = (copper.subset(split[f"{k}_idx"]) for k in ("train", "val", "test"))
    representation = PaiNN(n_atom_basis=args.features, n_interactions=args.interactions, cutoff=args.cutoff, n_rbf=20)
    potential = with_energy_offsets(jaxatom.Potential.create(representation, elements=[29], seed=0), train_set)
    config = TrainConfig(
        batch_size=8,
        learning_rate=2e-3,
        max_epochs=10000,
        max_time_s=60.0 * args.minutes,
        plateau_patience=10,
        plateau_cooldown=2,
        early_stopping_patience=None,
        loss={"energy": 0.01, "forces": 0.99, "stress": 100.0},
    )
    start = time.perf_counter()
    potential = fit(potential, train_set, val_set, config, run_dir / "train", progress=False)
    seconds = time.perf_counter() - start
    metrics = error_metrics(predict_dataset(potential, test_set), test_set)
    n_atoms = np.asarray(test_set.n_atoms)
    info = {
        "train_s": seconds,
        "n_train": len(train_set),
        "n_val": len(val_set),
        "n_test": len(test_set),
        "epochs": sum(1 for _ in open(run_dir / "train" / "metrics.csv")) - 1,
        "test_energy_mae_meV_per_atom": 1000 * float(metrics["energy_mae"]) / float(np.mean(n_atoms)),
        "test_forces_mae_meV_per_A": 1000 * float(metrics["forces_mae"]),
        "test_stress_mae_GPa": float(metrics["stress_mae"]) / GPa,
        "model": {
            "type": "painn",
            "features": args.features,
            "interactions": args.interactions,
            "cutoff": args.cutoff,
        },  # fmt: skip
    }
    potential.save(model_path)
    (run_dir / "training.json").write_text(json.dumps(info, indent=2))
    return potential, info


def zero_kelvin(potential) -> dict:
    """Birch–Murnaghan fit of the model's energy of the 4-atom cubic cell over ±4 % of 3.59 Å."""
    lattice = 3.59 * np.linspace(0.96, 1.04, 15)
    cells = [bulk("Cu", "fcc", a=a, cubic=True) for a in lattice]
    energies = np.array([p["energy"] for p in potential.predict(cells)])
    eos = EquationOfState(lattice**3, energies, eos="birchmurnaghan")
    v0, e0, b0 = eos.fit()
    return {"a0_Ang": float(v0 ** (1 / 3)), "B0_GPa": float(b0 / GPa), "E0_per_atom_eV": float(e0 / 4)}


def npt(potential, temperature: float, args, run_dir: Path) -> dict:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(args.supercell)
    steps = 100 * max(1, round(args.ps * 1000 / args.timestep / 100))
    ensemble = StochasticCellRescaling(
        temperature_K=temperature,
        pressure=0.0,
        pressure_unit="GPa",
        friction_per_fs=0.01,
        barostat_tau_fs=500.0,
        compressibility_per_GPa=0.0075,
    )
    output = run_dir / f"npt_{temperature:g}K_{args.supercell}x.h5"
    run = simulate(potential, atoms, steps, timestep_fs=args.timestep, ensemble=ensemble, n_replicas=args.replicas,
                   stride=10, output=output, seed=int(temperature), progress=False)  # fmt: skip
    data = read_trajectory(output)
    volume = np.asarray(data["volume"])  # [F, R]
    keep = slice(volume.shape[0] // 5, None)
    lattice = (4.0 * volume[keep] / len(atoms)) ** (1 / 3)  # [F', R]
    blocks = np.array([b.mean(axis=0) for b in np.array_split(lattice, args.blocks)]).ravel()  # blocks x replicas
    return {
        "T_K": temperature,
        "a_Ang": float(lattice.mean()),
        "a_sem_Ang": float(blocks.std(ddof=1) / np.sqrt(blocks.size)),
        "a_per_replica_Ang": lattice.mean(axis=0).tolist(),
        "mean_temperature_K": float(np.mean(np.asarray(data["temperature"])[keep])),
        "mean_pressure_GPa": float(np.mean(np.asarray(data["pressure"])[keep])),
        "atoms": len(atoms),
        "replicas": args.replicas,
        "steps": steps,
        "ps": steps * args.timestep / 1000,
        "timing": {k: v for k, v in run.timing.items() if isinstance(v, (int, float))},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="training wall-clock budget")
    parser.add_argument("--run-dir", default="runs/npt_copper")
    parser.add_argument("--model", help="a trained model: skip training")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0])
    parser.add_argument("--ps", type=float, default=10.0, help="length of each NPT run (ps)")
    parser.add_argument("--timestep", type=float, default=2.0, help="fs")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--supercell", type=int, default=2, help="n for the n×n×n conventional cell (4 n³ atoms)")
    parser.add_argument("--blocks", type=int, default=4, help="blocks per replica for the standard error")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--interactions", type=int, default=2)
    parser.add_argument("--cutoff", type=float, default=5.0)
    args = parser.parse_args()
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.model:
        potential, training = jaxatom.load_model(args.model), {"model": args.model}
    else:
        potential, training = train(args, run_dir)
    reference = builtin_reference("cu")
    summary = {"training": training, "zero_kelvin": zero_kelvin(potential)}
    summary["zero_kelvin"]["emt_a0_Ang"] = reference["zero_kelvin"]["a0_Ang"]
    print(json.dumps(summary, indent=2), flush=True)
    summary["npt"] = []
    emt_runs = {run["temperature_K"]: run for run in reference["npt"]["runs"]}
    for temperature in args.temperatures:
        result = npt(potential, temperature, args, run_dir)
        emt = emt_runs.get(temperature)
        result["emt_a_Ang"] = None if emt is None else emt["a_Ang"]
        result["emt_a_stderr_Ang"] = None if emt is None else emt["a_stderr_Ang"]
        summary["npt"].append(result)
        print(json.dumps(result, indent=2), flush=True)
    runs = sorted(summary["npt"], key=lambda r: r["T_K"])
    if len(runs) > 1:
        low, high = runs[0], runs[-1]
        mean_a = 0.5 * (low["a_Ang"] + high["a_Ang"])
        alpha = (high["a_Ang"] - low["a_Ang"]) / (high["T_K"] - low["T_K"]) / mean_a
        error = np.hypot(low["a_sem_Ang"], high["a_sem_Ang"]) / (high["T_K"] - low["T_K"]) / mean_a
        summary["alpha_secant_per_K"] = {"T_K": [low["T_K"], high["T_K"]], "value": alpha, "sem": error}
        emt = [emt_runs.get(r["T_K"]) for r in (low, high)]
        if all(emt):
            emt_mean = 0.5 * (emt[0]["a_Ang"] + emt[1]["a_Ang"])
            emt_slope = (emt[1]["a_Ang"] - emt[0]["a_Ang"]) / (high["T_K"] - low["T_K"])
            summary["alpha_secant_per_K"]["emt"] = emt_slope / emt_mean
    summary["emt_reference"] = reference
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "emt_reference"}, indent=2))


if __name__ == "__main__":
    main()
