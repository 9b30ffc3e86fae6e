"""Test-set evaluation: predictions of every model output for a data set, errors in their units (energy and forces
also in kcal/mol, stress also in GPa), parity plot and error histogram."""

from __future__ import annotations

from pathlib import Path

import h5py
import jax
import numpy as np

from jaxatom.data.dataset import Dataset
from jaxatom.data.loader import GraphLoader
from jaxatom.potential import Potential, PotentialEnsemble
from jaxatom.potential.outputs import split_outputs
from jaxatom.units import GPa, kcal_mol

__all__ = ["predict_dataset", "predict_dataset_ensemble", "error_metrics", "plot_parity", "write_predictions"]


def predict_dataset(potential: Potential, dataset: Dataset, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Every output of ``potential`` (:attr:`Potential.outputs`) for every structure, in order: per structure
    ``[S, ...]``, per atom ``[A, ...]`` (e.g. ``energy`` eV, offsets added in float64; ``forces`` eV/Å)."""
    loader = GraphLoader(dataset, potential.cutoff, batch_size, properties=(), shuffle=False)
    results: list[dict] = []
    for k, (graph, _) in enumerate(loader(epoch=0)):
        graphs = loader.graphs[k * batch_size : (k + 1) * batch_size]
        out = jax.device_get(potential.evaluate(graph, stress=any(g.periodic for g in graphs), include_offsets=False))
        out = {name: np.asarray(out[name]) for name in potential.outputs if name in out}
        results.extend(split_outputs(out, graphs, potential.model.outputs, potential.scaling))
    return _joined(results, potential.model)


def predict_dataset_ensemble(ensemble: PotentialEnsemble, dataset: Dataset, batch_size: int = 32) -> dict:
    """:func:`predict_dataset` of the members' mean (:meth:`PotentialEnsemble.predict`)."""
    loader = GraphLoader(dataset, ensemble.cutoff, batch_size, properties=(), shuffle=False)
    results: list[dict] = []
    for k in range(0, len(loader.graphs), batch_size):
        summaries = ensemble.predict_graphs(loader.graphs[k : k + batch_size])
        results.extend({name: s[name] for name in ensemble.outputs if name in s} for s in summaries)
    return _joined(results, ensemble.model)


def _joined(results: list[dict], model) -> dict[str, np.ndarray]:
    """Per-structure results joined: per structure ``[S, ...]`` (float64), per atom ``[A, ...]``."""
    per_atom = {"forces", *(spec.name for spec in model.outputs if spec.per_atom)}
    return {
        name: np.concatenate([np.atleast_1d(r[name]) for r in results])
        if name in per_atom
        else np.stack([np.asarray(r[name], np.float64) for r in results])
        for name in results[0]
    }


def error_metrics(predictions: dict[str, np.ndarray], dataset: Dataset) -> dict[str, float]:
    """MAE and RMSE of every predicted property the data set has, in its unit (``X_mae``, ``X_rmse``); energy also
    per atom and energy and forces also in kcal/mol(/Å) (``energy_mae_eV``, ``energy_mae_kcal_mol``,
    ``forces_mae_eV_per_A`` ...), stress (eV/Å³) also in GPa (``stress_mae_GPa``, ``stress_rmse_GPa``)."""
    metrics = {}
    for name in sorted(set(predictions) & set(dataset.properties)):
        error = predictions[name] - dataset.properties[name]
        metrics[f"{name}_mae"] = float(np.mean(np.abs(error)))
        metrics[f"{name}_rmse"] = float(np.sqrt(np.mean(error**2)))
    named = {}
    if "energy_mae" in metrics:
        per_atom = (predictions["energy"] - dataset.properties["energy"]) / dataset.n_atoms
        named = {"energy_mae_eV": metrics["energy_mae"], "energy_rmse_eV": metrics["energy_rmse"],
                 "energy_per_atom_mae_eV": float(np.mean(np.abs(per_atom))),
                 "energy_per_atom_rmse_eV": float(np.sqrt(np.mean(per_atom**2)))}  # fmt: skip
    if "forces_mae" in metrics:
        named |= {"forces_mae_eV_per_A": metrics["forces_mae"], "forces_rmse_eV_per_A": metrics["forces_rmse"]}
    for key in list(named):
        named[key.replace("eV", "kcal_mol")] = named[key] / kcal_mol
    if "stress_mae" in metrics and dataset.units.get("stress") == "eV/Ang^3":
        named |= {"stress_mae_GPa": metrics["stress_mae"] / GPa, "stress_rmse_GPa": metrics["stress_rmse"] / GPa}
    return {**metrics, **named}


def plot_parity(predictions: dict[str, np.ndarray], dataset: Dataset, path: str | Path) -> Path:
    """A PNG with a parity plot (every component) of each predicted property the data set has, in its unit (stress
    in GPa), and a histogram of the force errors when forces are among them."""
    from matplotlib.figure import Figure  # not pyplot: the caller's backend (a notebook's inline one) stays

    names = sorted(set(predictions) & set(dataset.properties), key=lambda n: (n not in ("energy", "forces"), n))
    histogram = "forces" in names
    figure = Figure(figsize=(5 * (len(names) + histogram), 4.5))
    axes = figure.subplots(1, len(names) + histogram, squeeze=False)
    for axis, name in zip(axes[0], names, strict=False):
        predicted, reference = np.ravel(predictions[name]), np.ravel(dataset.properties[name])
        label = f"{name} ({dataset.units.get(name, '')})"
        if name == "energy":
            mean = reference.mean()
            predicted, reference, label = predicted - mean, reference - mean, f"energy − {mean:.2f} (eV)"
        elif name == "stress" and dataset.units.get(name) == "eV/Ang^3":
            predicted, reference, label = predicted / GPa, reference / GPa, "stress (GPa)"
        axis.scatter(reference, predicted, s=2, alpha=0.4)
        low, high = min(reference.min(), predicted.min()), max(reference.max(), predicted.max())
        axis.plot([low, high], [low, high], "k--", lw=0.8)
        mae = np.mean(np.abs(predicted - reference))
        axis.set(xlabel=f"reference {label}", ylabel=f"predicted {label}", title=f"MAE {mae:.4g}")
    if histogram:
        axes[0][-1].hist(np.ravel(predictions["forces"] - dataset.properties["forces"]), bins=100)
        axes[0][-1].set(xlabel="force error (eV/Å)", ylabel="count", title="force error histogram")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    return path


def write_predictions(predictions: dict[str, np.ndarray], dataset: Dataset, path: str | Path) -> Path:
    """Predictions next to the references: npz, or HDF5 for ``.h5``/``.hdf5`` (jaxatom units: eV, eV/Å, e·Å, e ...)."""
    path = Path(path)
    arrays = {
        "numbers": dataset.numbers,
        "n_atoms": dataset.n_atoms,
        **{f"predicted_{k}": v for k, v in predictions.items()},
        **{f"reference_{k}": dataset.properties[k] for k in predictions if k in dataset.properties},
    }
    if path.suffix in (".h5", ".hdf5"):
        with h5py.File(path, "w") as out:
            for key, value in arrays.items():
                out[key] = value
            out.attrs["units"] = (
                "jaxatom units: energy eV, forces eV/Ang, dipole_moment e*Ang, charges e, polarizability Ang^3"
            )
    else:
        np.savez_compressed(path, **arrays)
    return path
