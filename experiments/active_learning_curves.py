"""Learning curves of the active-learning loop against random selection, at equal GFN2-xTB label budgets.

For each seed and each selection method (``fps``: uncertain and diverse; ``random``: uniformly from every structure
the generation's MD visited), ``jaxatom learn`` runs the same loop on ethanol: the first labels are drawn from the
shipped GFN2-xTB frames (500 K MD), every generation trains an ensemble, explores with gated Langevin MD at a
temperature ladder from labelled structures, picks ``--budget`` structures and labels them with GFN2-xTB (tblite).
Every generation is scored on the same held-out shipped frames. Writes ``<out>/curves.csv`` (method, seed,
generation, labels, test errors) and ``<out>/curves.png`` (force MAE vs labels, mean and spread over seeds).

Usage (from the repository root; rerunnable: finished loops are reused)::

    OMP_NUM_THREADS=1 python experiments/active_learning_curves.py --seeds 0 1 2 --out experiments/results/al_curves
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from jaxatom.learn import learn


def loop_config(method: str, seed: int, out: Path, args: argparse.Namespace) -> dict:
    """The ``jaxatom learn`` configuration of one curve."""
    n_val = max(2, args.initial // 5)
    return {
        "run_dir": str(out / f"{method}_seed{seed}"),
        "data": {"builtin": "ethanol", "train": args.initial - n_val, "val": n_val, "test": args.test, "seed": seed},
        "model": {
            "representation": {
                "type": "schnet",
                "n_atom_basis": args.features,
                "n_interactions": 2,
                "n_rbf": 20,
                "cutoff": 5.0,
            }
        },  # fmt: skip
        "training": {
            "batch_size": 8,
            "max_epochs": args.epochs,
            "learning_rate": 2e-3,
            "plateau_patience": 20,
            "early_stopping_patience": 60,
            "seed": seed,
            "ensemble": {"size": args.members},
            "loss": {"energy": 0.01, "forces": 0.99},
        },  # fmt: skip
        "explore": {
            "temperatures_K": args.temperatures,
            "replicas": args.replicas,
            "steps": args.steps,
            "stride": 10,
            "timestep_fs": 0.5,
            "action": "stop_replica",
        },  # fmt: skip
        "select": {"budget": args.budget, "method": method},
        "oracle": {"method": "GFN2-xTB", "workers": args.workers},
        "generations": args.generations,
        "val_fraction": 0.2,
        "seed": seed,
    }


def curve_rows(method: str, seed: int, report: Path) -> list[dict]:
    with report.open() as handle:
        return [{"method": method, "seed": seed, **row} for row in csv.DictReader(handle)]


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        labels = sorted({int(r["labels"]) for r in mine})
        errors = [[float(r["test_forces_mae_eV_per_A"]) for r in mine if int(r["labels"]) == n] for n in labels]
        mean, spread = np.array([np.mean(e) for e in errors]), np.array([np.std(e) for e in errors])
        ax.errorbar(labels, mean, spread, marker="o", capsize=3, label=f"{method} ({len(errors[0])} seeds)")
    ax.set(xlabel="GFN2-xTB labels", ylabel="held-out force MAE (eV/Å)", yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["fps", "random"])
    parser.add_argument("--initial", type=int, default=25, help="first labels (train + val)")
    parser.add_argument("--test", type=int, default=500, help="held-out structures")
    parser.add_argument("--budget", type=int, default=15, help="labels per generation")
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 500.0, 800.0])
    parser.add_argument("--replicas", type=int, default=8, help="replicas per temperature")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/al_curves"))
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        for method in args.methods:
            report = learn(loop_config(method, seed, args.out, args), progress=False)
            rows += curve_rows(method, seed, report)
            latest = rows[-args.generations - 1 :]
            points = [f"{r['labels']}: {float(r['test_forces_mae_eV_per_A']):.4f}" for r in latest]
            print(f"{method} seed {seed} (labels: force MAE eV/Å) " + ", ".join(points))
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "curves.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.out / "curves.png")
    print(f"wrote {args.out / 'curves.csv'} and {args.out / 'curves.png'}")


if __name__ == "__main__":
    main()
