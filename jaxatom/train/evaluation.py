"""Test-set evaluation: predictions of every model output for a data set, errors in their units (energy and forces
also in kcal/mol, stress also in GPa), parity plot and error histogram."""

from __future__ import annotations

from pathlib import Path

import h5py
import jax
import numpy as np

from jaxatom.data.dataset import Dataset
from jaxatom.data.loader import GraphLoader
from jaxatom.plotting import finish, new_figure, save, scaled, with_unit
from jaxatom.potential import Potential, PotentialEnsemble
from jaxatom.potential.outputs import split_outputs
from jaxatom.units import GPa, kcal_mol

__all__ = [
    "predict_dataset",
    "predict_dataset_ensemble",
    "error_metrics",
    "parity_figure",
    "plot_parity",
    "write_predictions",
]


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


def parity_figure(predictions: dict[str, np.ndarray], dataset: Dataset, title: str | None = None):
    """The figure of :func:`plot_parity` (a matplotlib ``Figure``)."""
    names = sorted(set(predictions) & set(dataset.properties), key=lambda n: (n not in ("energy", "forces"), n))
    histogram = "forces" in names
    n_panels = len(names) + histogram
    figure, axes = new_figure(1, n_panels, width=4.3 * n_panels, row_height=3.6)
    for axis, name in zip(axes[0], names, strict=False):
        _parity_panel(axis, name, *_parity_values(name, predictions, dataset))
    if histogram:
        errors = np.ravel(predictions["forces"] - dataset.properties["forces"])
        _error_histogram(axes[0, -1], errors, _display_unit(dataset.units.get("forces", "eV/Ang")))
    return finish(figure, title)


def plot_parity(
    predictions: dict[str, np.ndarray], dataset: Dataset, path: str | Path, title: str | None = None
) -> Path:
    """A PNG with a parity plot (every component) of each predicted property the data set has, in its unit (stress
    in GPa; energies relative to the lowest reference, per atom when the structures differ in size), each titled
    with its RMSE and MAE, and a log-scale histogram of the force errors when forces are among them. ``title`` names
    the model and the data, e.g. ``"PaiNN on aspirin (GFN2-xTB), test set"``."""
    return save(parity_figure(predictions, dataset, title), path)


def _display_unit(unit: str) -> str:
    return unit.replace("Ang", "Å")


def _parity_values(name: str, predictions: dict, dataset: Dataset) -> tuple:
    """``(reference, predicted, label, unit, note)`` of a parity panel: energies relative to the lowest reference
    (stated in ``note``), per atom when the structures differ in size; stress in GPa."""
    predicted, reference = np.ravel(predictions[name]), np.ravel(dataset.properties[name])
    unit = _display_unit(dataset.units.get(name, ""))
    if name == "energy":
        label = "E"
        if len(np.unique(dataset.n_atoms)) > 1:
            predicted, reference = predicted / dataset.n_atoms, reference / dataset.n_atoms
            label, unit = "E/N", f"{unit}/atom"
        zero = reference.min()
        return reference - zero, predicted - zero, f"{label} − E₀", unit, f"E₀ = {zero:.6g} {unit} (lowest reference)"
    if name == "stress" and dataset.units.get(name) == "eV/Ang^3":
        return reference / GPa, predicted / GPa, name, "GPa", None
    return reference, predicted, name, unit, None


def _parity_panel(axis, name: str, reference, predicted, label: str, unit: str, note: str | None) -> None:
    """Predicted against reference with the diagonal, titled with RMSE and MAE in the unit (meV for small eV)."""
    error = predicted - reference
    rmse, mae = float(np.sqrt(np.mean(error**2))), float(np.mean(np.abs(error)))
    axis.scatter(reference, predicted, s=3, alpha=0.4, linewidths=0)
    low, high = min(reference.min(), predicted.min()), max(reference.max(), predicted.max())
    axis.plot([low, high], [low, high], "k--", lw=0.8)
    axis.set(xlabel=f"reference {label} ({unit})", ylabel=f"predicted {label} ({unit})", aspect="equal",
             title=f"{name}: RMSE {with_unit(rmse, unit)}, MAE {with_unit(mae, unit)}")  # fmt: skip
    axis.set_title(axis.get_title(), fontsize="medium")
    lines = [f"{reference.size} values"] + ([note] if note else [])
    axis.text(0.03, 0.97, "\n".join(lines), transform=axis.transAxes, va="top", fontsize="small")


def _error_histogram(axis, errors: np.ndarray, unit: str) -> None:
    """Histogram of the errors on a log count scale, so the tails (the worst predictions) show."""
    rmse = float(np.sqrt(np.mean(errors**2)))
    shown, values = scaled(unit, errors)
    axis.hist(values, bins=100, color="C0")
    axis.set(yscale="log", xlabel=f"force component error ({shown})", ylabel="count (log scale)")
    axis.set_title(f"force errors: RMSE {with_unit(rmse, unit)}, max {with_unit(float(np.abs(errors).max()), unit)}",
                   fontsize="medium")  # fmt: skip


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
