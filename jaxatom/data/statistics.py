"""Statistics of a training split, in float64: mean energy per atom, per-element references, and SchNetPack's
``RemoveOffsets`` / ``ScaleProperty`` numbers for any per-structure scalar property."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jaxatom.data.dataset import Dataset
from jaxatom.errors import DataError

__all__ = ["composition_matrix", "mean_energy_per_atom", "fit_atomrefs", "fit_standardisation"]


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
    indices = _training_indices(indices)
    energy = dataset.properties["energy"][indices].astype(np.float64)
    if atomrefs:
        energy = energy - _reference_sums(dataset, indices, atomrefs)
    return float(np.mean(energy / dataset.n_atoms[indices]))


def fit_atomrefs(dataset: Dataset, indices: np.ndarray) -> dict[int, float]:
    """Per-element reference energies (eV) by least squares, ``E_s ≈ sum_Z count_sZ * ref_Z``, in float64.

    For data sets of one composition (MD17) the references are not identifiable separately; the minimum-norm solution
    is returned, which still removes the mean energy exactly.
    """
    dataset.require("energy")
    return _least_squares_atomrefs(dataset, _training_indices(indices), "energy", extensive=True)


def fit_standardisation(
    dataset: Dataset,
    indices: np.ndarray,
    name: str,
    extensive: bool,
    atomrefs: bool | Mapping[int, float] = False,
) -> dict:
    """SchNetPack's ``RemoveOffsets`` and ``ScaleProperty`` statistics of the per-structure scalar property ``name``
    (``[S]``) over the training structures ``indices``, in float64 and ``name``'s unit (``dataset.units[name]``).

    The references ``atomrefs`` are none (``False``), given (``{Z: value}``, e.g. QM9's
    ``dataset.metadata["atomrefs_all"][name]``), or fitted by least squares (``True``): ``y_s ≈ sum_Z count_sZ ref_Z``
    for an ``extensive`` property (summed over atoms), ``y_s ≈ sum_Z (count_sZ / n_s) ref_Z`` otherwise (averaged).
    The residual is ``r_s = y_s - sum_i ref_{Z_i}`` (extensive) or ``y_s - mean_i ref_{Z_i}``, as the loader's
    ``offsets``/``intensive`` remove them. ``shift`` and ``scale`` are the mean and (population) standard deviation
    of ``r_s / n_s`` (per atom) when ``extensive``, else of ``r_s``.

    Returns:
        ``{"shift": float, "scale": float, "atomrefs": {Z: float}}``.
    """
    dataset.require(name)
    indices = _training_indices(indices)
    values = dataset.properties[name]
    if dataset.is_per_atom(name) or values.ndim != 1:
        kind = "per atom" if dataset.is_per_atom(name) else f"shaped {list(values.shape)}"
        raise DataError(f"standardisation needs a per-structure scalar property [structures]; {name!r} is {kind}")
    if atomrefs is True:
        refs = _least_squares_atomrefs(dataset, indices, name, extensive)
    else:
        refs = {int(z): float(v) for z, v in (atomrefs or {}).items()}
    n_atoms = dataset.n_atoms[indices]
    residual = values[indices].astype(np.float64)
    if refs:
        sums = _reference_sums(dataset, indices, refs)
        residual = residual - (sums if extensive else sums / n_atoms)
    if extensive:
        residual = residual / n_atoms
    return {"shift": float(np.mean(residual)), "scale": float(np.std(residual)), "atomrefs": refs}


def _training_indices(indices: np.ndarray) -> np.ndarray:
    indices = np.asarray(indices, np.int64)
    if indices.size == 0:
        raise ValueError("statistics need at least one training structure")
    return indices


def _elements(dataset: Dataset, indices: np.ndarray) -> tuple[int, ...]:
    """The atomic numbers present in the selected structures."""
    offsets = dataset.atom_offsets
    numbers = np.concatenate([dataset.numbers[offsets[i] : offsets[i + 1]] for i in indices])
    return tuple(int(z) for z in np.unique(numbers))


def _reference_sums(dataset: Dataset, indices: np.ndarray, refs: Mapping[int, float]) -> np.ndarray:
    """``[len(indices)]`` sum of the references of each selected structure's atoms (elements without one: 0)."""
    elements = _elements(dataset, indices)
    return composition_matrix(dataset, indices, elements) @ np.array([refs.get(z, 0.0) for z in elements])


def _least_squares_atomrefs(dataset: Dataset, indices: np.ndarray, name: str, extensive: bool) -> dict[int, float]:
    """References by least squares over the selected structures (minimum norm where not identifiable)."""
    elements = _elements(dataset, indices)
    counts = composition_matrix(dataset, indices, elements)
    if not extensive:
        counts = counts / dataset.n_atoms[indices][:, None]
    values = dataset.properties[name][indices].astype(np.float64)
    solution, *_ = np.linalg.lstsq(counts, values, rcond=None)
    return {z: float(v) for z, v in zip(elements, solution, strict=True)}
