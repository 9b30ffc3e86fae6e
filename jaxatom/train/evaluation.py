"""Test-set evaluation: predictions for a data set, errors in eV and kcal/mol, parity plot and error histogram."""

from __future__ import annotations

from pathlib import Path

import h5py
import jax
import numpy as np

from jaxatom.data.dataset import Dataset
from jaxatom.data.loader import GraphLoader
from jaxatom.potential import Potential
from jaxatom.units import kcal_mol

__all__ = ["predict_dataset", "error_metrics", "plot_parity", "write_predictions"]


def predict_dataset(potential: Potential, dataset: Dataset, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Energies ``[S]`` (eV, offsets added in float64) and forces ``[A, 3]`` (eV/Å) of every structure, in order."""
    loader = GraphLoader(dataset, potential.cutoff, batch_size, properties=(), shuffle=False)
    offsets = potential.atom_offsets()
    energy = np.zeros(len(dataset))
    forces = np.zeros_like(dataset.positions)
    order = loader.order(0)
    for k, (graph, _) in enumerate(loader(epoch=0)):
        indices = order[k * batch_size : (k + 1) * batch_size]
        out = jax.device_get(potential.evaluate(graph, include_offsets=False))
        node = 0
        for slot, index in enumerate(indices):
            atoms = dataset.atoms_of(index)
            n = atoms.stop - atoms.start
            energy[index] = float(out["energy"][slot]) + offsets[dataset.numbers[atoms]].sum()
            forces[atoms] = out["forces"][node : node + n]
            node += n
    return {"energy": energy, "forces": forces}


def error_metrics(predictions: dict[str, np.ndarray], dataset: Dataset) -> dict[str, float]:
    """MAE and RMSE of energy, energy per atom and force components, in eV(/Å) and kcal/mol(/Å)."""
    metrics = {}
    if "energy" in dataset.properties:
        error = predictions["energy"] - dataset.properties["energy"]
        per_atom = error / dataset.n_atoms
        for name, values in (("energy", error), ("energy_per_atom", per_atom)):
            metrics[f"{name}_mae_eV"] = float(np.mean(np.abs(values)))
            metrics[f"{name}_rmse_eV"] = float(np.sqrt(np.mean(values**2)))
    if "forces" in dataset.properties:
        error = predictions["forces"] - dataset.properties["forces"]
        metrics["forces_mae_eV_per_A"] = float(np.mean(np.abs(error)))
        metrics["forces_rmse_eV_per_A"] = float(np.sqrt(np.mean(error**2)))
    for key in list(metrics):
        metrics[key.replace("eV", "kcal_mol")] = metrics[key] / kcal_mol
    return metrics


def plot_parity(predictions: dict[str, np.ndarray], dataset: Dataset, path: str | Path) -> Path:
    """A PNG with energy and force parity plots and force-error histograms (eV, eV/Å)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    mean = dataset.properties["energy"].mean()
    panels = [
        ("energy", predictions["energy"] - mean, dataset.properties["energy"] - mean, f"energy − {mean:.2f} (eV)"),
        ("forces", predictions["forces"].ravel(), dataset.properties["forces"].ravel(), "force component (eV/Å)"),
    ]
    for axis, (_, predicted, reference, label) in zip(axes[:2], panels, strict=True):
        axis.scatter(reference, predicted, s=2, alpha=0.4)
        low, high = min(reference.min(), predicted.min()), max(reference.max(), predicted.max())
        axis.plot([low, high], [low, high], "k--", lw=0.8)
        mae = np.mean(np.abs(predicted - reference))
        axis.set(xlabel=f"reference {label}", ylabel=f"predicted {label}", title=f"MAE {mae:.4g}")
    force_error = predictions["forces"].ravel() - dataset.properties["forces"].ravel()
    axes[2].hist(force_error, bins=100)
    axes[2].set(xlabel="force error (eV/Å)", ylabel="count", title="force error histogram")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_predictions(predictions: dict[str, np.ndarray], dataset: Dataset, path: str | Path) -> Path:
    """Predictions next to the references: npz, or HDF5 for ``.h5``/``.hdf5`` (units eV, eV/Å)."""
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
            out.attrs["units"] = "energy eV, forces eV/Ang"
    else:
        np.savez_compressed(path, **arrays)
    return path
