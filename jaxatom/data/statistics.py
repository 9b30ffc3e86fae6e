"""Energy statistics of a training split, in float64: mean energy per atom and per-element reference energies."""

from __future__ import annotations

import numpy as np

from jaxatom.data.dataset import Dataset

__all__ = ["composition_matrix", "mean_energy_per_atom", "fit_atomrefs"]


def composition_matrix(dataset: Dataset, indices: np.ndarray, elements: tuple[int, ...]) -> np.ndarray:
    """``[len(indices), len(elements)]`` count of each element in each selected structure."""
    offsets = dataset.atom_offsets
    counts = np.zeros((len(indices), len(elements)))
    column = {z: k for k, z in enumerate(elements)}
    for row, index in enumerate(indices):
        numbers, number_counts = np.unique(dataset.numbers[offsets[index] : offsets[index + 1]], return_counts=True)
        for z, c in zip(numbers, number_counts, strict=True):
            counts[row, column[int(z)]] = c
    return counts


def mean_energy_per_atom(dataset: Dataset, indices: np.ndarray, atomrefs: dict[int, float] | None = None) -> float:
    """Mean over the selected structures of ``(E - sum of atomrefs) / n_atoms`` (eV), in float64."""
    dataset.require("energy")
    indices = np.asarray(indices)
    if indices.size == 0:
        raise ValueError("statistics need at least one training structure")
    energy = dataset.properties["energy"][indices].astype(np.float64)
    if atomrefs:
        elements = tuple(sorted(atomrefs))
        energy = energy - composition_matrix(dataset, indices, elements) @ np.array([atomrefs[z] for z in elements])
    return float(np.mean(energy / dataset.n_atoms[indices]))


def fit_atomrefs(dataset: Dataset, indices: np.ndarray) -> dict[int, float]:
    """Per-element reference energies (eV) by least squares, ``E_s ≈ sum_Z count_sZ * ref_Z``, in float64.

    For data sets of one composition (MD17) the references are not identifiable separately; the minimum-norm solution
    is returned, which still removes the mean energy exactly.
    """
    dataset.require("energy")
    indices = np.asarray(indices)
    elements = tuple(int(z) for z in np.unique(dataset.numbers[np.concatenate(
        [np.arange(dataset.atom_offsets[i], dataset.atom_offsets[i + 1]) for i in indices]
    )]))  # fmt: skip
    counts = composition_matrix(dataset, indices, elements)
    energy = dataset.properties["energy"][indices].astype(np.float64)
    solution, *_ = np.linalg.lstsq(counts, energy, rcond=None)
    return {z: float(e) for z, e in zip(elements, solution, strict=True)}
