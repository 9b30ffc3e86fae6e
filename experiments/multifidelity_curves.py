"""Learning curves of multi-fidelity training on ethanol: GFN2-xTB test force error vs the number of GFN2 labels.

Three ways to use ``n`` GFN2-xTB labels (``--sizes``), each with a small SchNet, several seeds:

* ``gfn2_only``: a single-fidelity model trained on the ``n`` GFN2 structures;
* ``fidelity_input``: one model with a GFN1/GFN2 energy head (``fidelities: [gfn1, gfn2]``, offsets per fidelity)
  trained on every GFN1 structure of the pool plus the ``n`` GFN2 ones, evaluated at GFN2;
* ``delta``: a base model trained on the GFN1 pool (once per seed, frozen), plus a Δ-model trained on the ``n``
  GFN2 structures (:func:`jaxatom.potential.delta_potential`).

Data: the file of ``experiments/make_multifidelity_dataset.py``. Fixed held-out frames (``--test`` GFN2 frames,
and ``--val`` GFN2 frames for model selection, shared by every run) are removed from both pools by frame index, so no
method sees a test geometry at either level. Every run trains about ``--steps`` optimiser steps (epochs scaled to
the training set size, at most ``--max-epochs``). Rows are appended to ``<out>/curves.csv`` as runs finish (a rerun
skips rows already there); ``<out>/summary.csv`` and ``<out>/curves.png`` give the mean and standard deviation over
seeds. Run from the repository root::

    OMP_NUM_THREADS=1 python experiments/multifidelity_curves.py --sizes 25 50 100 200 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from jaxatom.data import Dataset, read_dataset  # noqa: E402
from jaxatom.potential import Potential, delta_potential  # noqa: E402
from jaxatom.train import TrainConfig, fit  # noqa: E402
from jaxatom.train.evaluation import predict_dataset  # noqa: E402
from jaxatom.train.run import ModelConfig, output_scaling  # noqa: E402

METHODS = ("gfn2_only", "fidelity_input", "delta")
FIDELITIES = ["gfn1", "gfn2"]
FIELDS = ["method", "n_gfn2", "seed", "forces_mae", "forces_rmse", "energy_mae", "train_structures", "epochs",
          "wall_s"]  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("experiments/data/ethanol_gfn1_gfn2.h5"))
    parser.add_argument("--out", type=Path, default=Path("experiments/results/multifidelity"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1500, help="optimiser steps per run (about)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-epochs", type=int, default=120)
    parser.add_argument("--test", type=int, default=500, help="held-out GFN2 test frames")
    parser.add_argument("--val", type=int, default=50, help="GFN2 validation frames shared by all runs")
    return parser.parse_args(argv)


@dataclasses.dataclass(frozen=True)
class Pools:
    """Held-out GFN2 test and validation sets, and the training pools (indices into ``data``) of both levels."""

    data: Dataset
    test: Dataset
    val: Dataset
    gfn1: np.ndarray  # every GFN1 structure whose frame is not held out
    gfn2: np.ndarray  # the GFN2 pool, in a fixed random order


def make_pools(data: Dataset, n_test: int, n_val: int) -> Pools:
    fidelity = data.properties["fidelity"].astype(int)
    frame = data.properties["frame"].astype(int)
    order = np.random.default_rng(12345).permutation(np.flatnonzero(fidelity == 1))
    test, val, rest = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    held_out = np.isin(frame, frame[np.concatenate([test, val])])
    gfn1 = np.flatnonzero((fidelity == 0) & ~held_out)
    return Pools(data, single(data, test), single(data, val), gfn1, rest)


def single(data: Dataset, indices: np.ndarray) -> Dataset:
    """A one-fidelity subset (``fidelity`` and ``frame`` dropped)."""
    subset = data.subset(indices)
    kept = {k: v for k, v in subset.properties.items() if k not in ("fidelity", "frame")}
    return dataclasses.replace(subset, properties=kept, metadata={})


def mixed(data: Dataset, indices: np.ndarray) -> Dataset:
    """A two-fidelity subset (``frame`` dropped, ``fidelity`` and the names kept)."""
    subset = data.subset(indices)
    kept = {k: v for k, v in subset.properties.items() if k != "frame"}
    return dataclasses.replace(subset, properties=kept, metadata={"fidelities": FIDELITIES})


def training(args: argparse.Namespace, n_train: int, seed: int) -> TrainConfig:
    """About ``args.steps`` optimiser steps within 20..``args.max_epochs`` epochs (every epoch writes checkpoints,
    about 1 s on CPU), batches of 8 below 100 structures; plateau patience a tenth of the epochs."""
    batch_size = args.batch_size if n_train >= 100 else 8
    epochs = min(args.max_epochs, max(20, math.ceil(args.steps / math.ceil(n_train / batch_size))))
    return TrainConfig(batch_size=batch_size, max_epochs=epochs, learning_rate=1e-3, seed=seed,
                       plateau_patience=max(5, epochs // 10), plateau_cooldown=0)  # fmt: skip


def energy_model(features: int, fidelities: list[str] | None = None) -> ModelConfig:
    """A small SchNet (``features``, 3 interactions, 20 Gaussians, 5 Å) with SchNetPack's energy head."""
    representation = {"type": "schnet", "n_atom_basis": features, "n_interactions": 3, "n_rbf": 20, "cutoff": 5.0}
    head = {"type": "atomwise", "output_key": "energy", "per_atom_output_key": "energies"}
    return ModelConfig(representation=representation, heads=[head], fidelities=fidelities)


def train(args, run_dir: Path, model: ModelConfig, train_set: Dataset, val: Dataset, seed: int, base=None):
    """Fit one model with its scaling fitted on ``train_set`` as ``jaxatom train`` does (a Δ-model's on the
    residual to ``base``); returns the potential and its number of epochs."""
    built = model.build()
    targets = train_set
    if base is not None:
        residual = train_set.properties["energy"] - predict_dataset(base, train_set)["energy"]
        targets = dataclasses.replace(train_set, properties={**train_set.properties, "energy": residual})
    scaling = output_scaling(model, built.outputs, targets, {"energy"})
    elements = sorted(set(train_set.elements) | set(val.elements))
    potential = Potential.create(built.representation, elements, seed=seed, heads=built.heads, scaling=scaling)
    if base is not None:
        potential = delta_potential(base, potential)
    config = training(args, len(train_set), seed)
    return fit(potential, train_set, val, config, run_dir, progress=False), config.max_epochs


def base_model(args, pools: Pools, seed: int) -> Potential:
    """The GFN1 model under the Δ-models of ``seed``: the GFN1 pool less 50 structures for validation."""
    order = np.random.default_rng(seed).permutation(pools.gfn1)
    train_set, val = single(pools.data, order[50:]), single(pools.data, order[:50])
    run_dir = args.out / "runs" / f"base_s{seed}"
    return train(args, run_dir, energy_model(args.features), train_set, val, seed)[0]


def errors(potential: Potential, test: Dataset) -> dict[str, float]:
    """Force MAE and RMSE (eV/Å) and energy MAE (eV) on the GFN2 test frames (at the target fidelity)."""
    predicted = predict_dataset(potential, test)
    force_error = predicted["forces"] - test.properties["forces"]
    return {
        "forces_mae": float(np.mean(np.abs(force_error))),
        "forces_rmse": float(np.sqrt(np.mean(force_error**2))),
        "energy_mae": float(np.mean(np.abs(predicted["energy"] - test.properties["energy"]))),
    }


def run_one(args, pools: Pools, method: str, n: int, seed: int, bases: dict) -> dict:
    """Train and test one (method, n, seed); ``bases`` caches the GFN1 base model per seed."""
    chosen = np.random.default_rng(seed).permutation(pools.gfn2)[:n]
    run_dir = args.out / "runs" / f"{method}_n{n}_s{seed}"
    started = time.perf_counter()
    if method == "fidelity_input":
        train_set = mixed(pools.data, np.concatenate([pools.gfn1, chosen]))
        val = dataclasses.replace(pools.val, properties={**pools.val.properties, "fidelity": np.ones(len(pools.val))})
        potential, epochs = train(args, run_dir, energy_model(args.features, FIDELITIES), train_set, val, seed)
    else:
        train_set = single(pools.data, chosen)
        base = None
        if method == "delta":
            base = bases[seed] = bases.get(seed) or base_model(args, pools, seed)
        potential, epochs = train(args, run_dir, energy_model(args.features), train_set, pools.val, seed, base)
    wall = time.perf_counter() - started
    return {"method": method, "n_gfn2": n, "seed": seed, **errors(potential, pools.test),
            "train_structures": len(train_set), "epochs": epochs, "wall_s": round(wall, 1)}  # fmt: skip


def done_rows(path: Path) -> set[tuple[str, int, int]]:
    if not path.exists():
        return set()
    with path.open() as file:
        return {(row["method"], int(row["n_gfn2"]), int(row["seed"])) for row in csv.DictReader(file)}


def append_row(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as file:
        writer = csv.DictWriter(file, FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def summarise(path: Path, out: Path) -> list[dict]:
    """Mean and standard deviation over seeds of the test errors per (method, n), written to ``out`` (CSV)."""
    with path.open() as file:
        rows = list(csv.DictReader(file))
    summary = []
    for method in METHODS:
        for n in sorted({int(r["n_gfn2"]) for r in rows if r["method"] == method}):
            chosen = [r for r in rows if r["method"] == method and int(r["n_gfn2"]) == n]
            forces = [float(r["forces_mae"]) for r in chosen]
            energy = [float(r["energy_mae"]) for r in chosen]
            summary.append({"method": method, "n_gfn2": n, "seeds": len(chosen), "forces_mae_mean": np.mean(forces),
                            "forces_mae_std": np.std(forces), "energy_mae_mean": np.mean(energy)})  # fmt: skip
    with out.open("w", newline="") as file:
        writer = csv.DictWriter(file, list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    return summary


def plot(summary: list[dict], out: Path) -> None:
    """Mean ± standard deviation over seeds of the test force MAE per method, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 4))
    for method in METHODS:
        rows = [row for row in summary if row["method"] == method]
        if rows:
            axis.errorbar([r["n_gfn2"] for r in rows], [r["forces_mae_mean"] for r in rows],
                          [r["forces_mae_std"] for r in rows], marker="o", capsize=3, label=method)  # fmt: skip
    axis.set(xscale="log", yscale="log", xlabel="GFN2-xTB training labels", ylabel="GFN2 test force MAE (eV/Å)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=150)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.data.exists():
        raise SystemExit(f"{args.data} not found; run experiments/make_multifidelity_dataset.py first")
    pools = make_pools(read_dataset(args.data), args.test, args.val)
    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / "curves.csv"
    done, bases = done_rows(table), {}
    for seed in args.seeds:
        for n in args.sizes:
            for method in args.methods:
                if (method, n, seed) in done:
                    continue
                row = run_one(args, pools, method, n, seed, bases)
                append_row(table, row)
                print(f"{method:15s} n={n:4d} seed={seed}: force MAE {row['forces_mae']:.4f} eV/Å "
                      f"({row['wall_s']} s)", file=sys.stderr)  # fmt: skip
    plot(summarise(table, args.out / "summary.csv"), args.out / "curves.png")


if __name__ == "__main__":
    main()
