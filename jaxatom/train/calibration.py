"""Calibrated ensemble uncertainty (as in apax): scales ``s`` such that the error of the members' mean is distributed
as ``N(0, (s σ)²)`` with ``σ`` the members' spread, fitted on held-out data, and a threshold on the largest calibrated
per-atom force uncertainty of a structure.

The scale is the Gaussian negative-log-likelihood optimum ``s² = mean(err² / σ²)`` over points with ``σ > 0``
(points where every member agrees exactly carry no spread to scale and are left out). Energies are fitted per
structure (eV), forces per component (eV/Å); the per-atom norm ``|σ_F|`` scales with the same ``s_F``.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from jaxatom.data.dataset import Dataset
from jaxatom.data.loader import GraphLoader
from jaxatom.errors import ConfigError
from jaxatom.plotting import finish, legend, new_figure, save
from jaxatom.potential.calibration import Calibration
from jaxatom.potential.ensemble import PotentialEnsemble

__all__ = [
    "Calibration",
    "Residuals",
    "calibrate",
    "ensemble_residuals",
    "fit_calibration",
    "scale_factor",
    "per_structure_max",
    "reliability_table",
    "write_reliability_csv",
    "calibration_figure",
    "plot_calibration",
    "calibration_report",
]

#: Default quantile of the validation structures' largest calibrated force uncertainty used as the threshold.
DEFAULT_QUANTILE = 0.99


@dataclasses.dataclass(frozen=True)
class Residuals:
    """Errors of an ensemble's mean and its spread on a data set (None where the data has no such property).

    Attributes:
        energy_error: ``[S]`` members' mean − reference (eV).
        energy_std: ``[S]`` population std over members (eV).
        forces_error: ``[A, 3]`` (eV/Å).
        forces_std: ``[A, 3]`` (eV/Å).
        n_atoms: ``[S]`` atoms per structure.
    """

    energy_error: np.ndarray | None
    energy_std: np.ndarray | None
    forces_error: np.ndarray | None
    forces_std: np.ndarray | None
    n_atoms: np.ndarray


def ensemble_residuals(ensemble: PotentialEnsemble, dataset: Dataset, batch_size: int = 32) -> Residuals:
    """The members' mean errors and spreads of energy and forces on ``dataset`` (in batches of ``batch_size``)."""
    energy_model = "energy" in ensemble.outputs
    has = {name: energy_model and name in dataset.properties for name in ("energy", "forces")}
    if not any(has.values()):
        raise ConfigError("calibration needs energies or forces in the data and an energy model")
    loader = GraphLoader(dataset, ensemble.cutoff, batch_size, properties=(), shuffle=False)
    summaries = []
    for k in range(0, len(loader.graphs), batch_size):
        summaries.extend(ensemble.predict_graphs(loader.graphs[k : k + batch_size]))
    values = {}
    if has["energy"]:
        values["energy_error"] = np.array([s["energy"] for s in summaries]) - dataset.properties["energy"]
        values["energy_std"] = np.array([s["energy_std"] for s in summaries])
    if has["forces"]:
        values["forces_error"] = np.concatenate([s["forces"] for s in summaries]) - dataset.properties["forces"]
        values["forces_std"] = np.concatenate([s["forces_std"] for s in summaries])
    fields = {f.name: values.get(f.name) for f in dataclasses.fields(Residuals) if f.name != "n_atoms"}
    return Residuals(**fields, n_atoms=np.asarray(dataset.n_atoms))


def scale_factor(errors: np.ndarray, stds: np.ndarray) -> float:
    """``s = sqrt(mean(err² / σ²))`` over the points with ``σ > 0`` (the Gaussian-NLL optimum of ``err ~ N(0, s²σ²)``).

    Raises :class:`ConfigError` if every ``σ`` is zero (identical members have no spread to calibrate).
    """
    errors, stds = np.ravel(errors), np.ravel(stds)
    spread = stds > 0
    if not np.any(spread):
        raise ConfigError(
            "the ensemble members agree exactly on every calibration point, so there is no spread to calibrate; "
            "train members with different seeds (training.ensemble) or bootstrap"
        )
    return float(np.sqrt(np.mean((errors[spread] / stds[spread]) ** 2)))


def per_structure_max(values: np.ndarray, n_atoms: np.ndarray) -> np.ndarray:
    """``[S]`` largest per-atom norm of ``values [A, 3]`` in each structure of ``n_atoms [S]`` atoms."""
    norms = np.linalg.norm(values, axis=-1)
    starts = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    return np.maximum.reduceat(norms, starts)


def fit_calibration(
    residuals: Residuals, quantile: float = DEFAULT_QUANTILE, forces_threshold: float | None = None
) -> Calibration:
    """The :class:`Calibration` of ``residuals``: scales, and ``forces_threshold`` given (eV/Å) or else the
    ``quantile`` of the structures' largest calibrated per-atom force uncertainty."""
    if forces_threshold is None and not 0.0 < quantile <= 1.0:
        raise ConfigError(f"the threshold quantile must be in (0, 1], got {quantile}")
    if forces_threshold is not None and not forces_threshold > 0:
        raise ConfigError(f"forces_threshold must be a positive force uncertainty in eV/Å, got {forces_threshold}")
    energy_scale = forces_scale = max_scale = threshold = None
    if residuals.energy_error is not None:
        energy_scale = scale_factor(residuals.energy_error, residuals.energy_std)
    components = 0
    if residuals.forces_error is not None:
        forces_scale = scale_factor(residuals.forces_error, residuals.forces_std)
        components = int(residuals.forces_error.size)
        max_std = per_structure_max(residuals.forces_std, residuals.n_atoms)
        max_scale = scale_factor(per_structure_max(residuals.forces_error, residuals.n_atoms), max_std)
        quantile_value = float(np.quantile(forces_scale * max_std, quantile))
        threshold = quantile_value if forces_threshold is None else float(forces_threshold)
    return Calibration(
        energy_scale=energy_scale,
        forces_scale=forces_scale,
        forces_max_scale=max_scale,
        forces_threshold=threshold,
        threshold_quantile=float(quantile) if forces_threshold is None and threshold is not None else None,
        n_structures=len(residuals.n_atoms),
        n_force_components=components,
    )


def calibrate(
    ensemble: PotentialEnsemble,
    dataset: Dataset,
    batch_size: int = 32,
    quantile: float = DEFAULT_QUANTILE,
    forces_threshold: float | None = None,
) -> Calibration:
    """Fit the :class:`Calibration` of ``ensemble`` on ``dataset`` (a validation set the members were not trained
    on): energy and force scales, and the force-uncertainty threshold (``forces_threshold`` in eV/Å, or the
    ``quantile`` of the structures' largest calibrated per-atom force uncertainty). Attach it with
    ``ensemble.with_calibration(...)`` and keep it with ``save``."""
    return fit_calibration(ensemble_residuals(ensemble, dataset, batch_size), quantile, forces_threshold)


def _calibrated_pairs(residuals: Residuals, calibration: Calibration) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{output: (calibrated uncertainty, |error|)}`` per point: energy per structure, force components, and the
    per-structure largest per-atom force ("forces_max")."""
    pairs = {}
    if residuals.energy_error is not None and calibration.energy_scale is not None:
        pairs["energy"] = (calibration.energy_scale * residuals.energy_std, np.abs(residuals.energy_error))
    if residuals.forces_error is not None and calibration.forces_scale is not None:
        scale = calibration.forces_scale
        pairs["forces"] = (scale * np.ravel(residuals.forces_std), np.abs(np.ravel(residuals.forces_error)))
        pairs["forces_max"] = (
            scale * per_structure_max(residuals.forces_std, residuals.n_atoms),
            per_structure_max(residuals.forces_error, residuals.n_atoms),
        )
    return pairs


def reliability_table(residuals: Residuals, calibration: Calibration, n_bins: int = 10) -> list[dict]:
    """Reliability-diagram rows: points sorted by calibrated uncertainty into ``n_bins`` bins of equal count, each
    with ``output``, ``bin``, ``count``, ``predicted_rms`` (RMS calibrated uncertainty) and ``observed_rms`` (RMS
    error); a calibrated ensemble has ``observed_rms ≈ predicted_rms`` (eV for energy, eV/Å for forces)."""
    rows = []
    for output, (predicted, observed) in _calibrated_pairs(residuals, calibration).items():
        order = np.argsort(predicted, kind="stable")
        for index, chunk in enumerate(np.array_split(order, min(n_bins, len(order)))):
            rows.append({
                "output": output,
                "bin": index,
                "count": len(chunk),
                "predicted_rms": float(np.sqrt(np.mean(predicted[chunk] ** 2))),
                "observed_rms": float(np.sqrt(np.mean(observed[chunk] ** 2))),
            })  # fmt: skip
    return rows


def write_reliability_csv(rows: list[dict], path: str | Path) -> Path:
    """Write :func:`reliability_table` rows as CSV."""
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["output", "bin", "count", "predicted_rms", "observed_rms"])
        writer.writeheader()
        writer.writerows(rows)
    return path


_UNITS = {"energy": "eV", "forces": "eV/Å", "forces_max": "eV/Å"}


def calibration_figure(rows: list[dict], calibration: Calibration | None = None, title: str | None = None):
    """The figure of :func:`plot_calibration`."""
    outputs = list(dict.fromkeys(row["output"] for row in rows))
    figure, axes = new_figure(1, len(outputs), width=4.3 * len(outputs), row_height=3.4)
    for axis, output in zip(axes[0], outputs, strict=True):
        _reliability_panel(axis, output, [r for r in rows if r["output"] == output], calibration)
    return finish(figure, title)


def plot_calibration(rows: list[dict], path: str | Path, calibration: Calibration | None = None,
                     title: str | None = None) -> Path:  # fmt: skip
    """A PNG reliability diagram per output of :func:`reliability_table` rows: observed RMS error against the
    predicted (calibrated) RMS uncertainty per bin, log-log, with the ideal line ``y = x`` (and the force threshold
    on the per-structure panel when ``calibration`` has one); ``title`` names the ensemble and the data."""
    return save(calibration_figure(rows, calibration, title), path)


_TITLES = {"energy": "energy per structure", "forces": "force components", "forces_max": "largest force per structure"}


def _reliability_panel(axis, output: str, rows: list[dict], calibration: Calibration | None) -> None:
    predicted = np.array([r["predicted_rms"] for r in rows])
    observed = np.array([r["observed_rms"] for r in rows])
    positive = np.concatenate([predicted, observed])
    positive = positive[positive > 0]
    low, high = (positive.min(), positive.max()) if positive.size else (1e-3, 1.0)
    axis.plot([low, high], [low, high], "k--", lw=0.8, label="ideal (y = x)")
    axis.plot(predicted, observed, "o-", label=f"{len(rows)} bins of {sum(r['count'] for r in rows)} points")
    if output == "forces_max" and calibration is not None and calibration.forces_threshold is not None:
        axis.axvline(calibration.forces_threshold, color="C3", lw=0.8,
                     label=f"threshold {calibration.forces_threshold:.3g} eV/Å")  # fmt: skip
    unit = _UNITS.get(output, "")
    axis.set(xscale="log", yscale="log", xlabel=f"predicted uncertainty ({unit})",
             ylabel=f"observed RMS error ({unit})")  # fmt: skip
    axis.set_title(_TITLES.get(output, output), fontsize="medium")
    legend(axis)


def calibration_report(residuals: Residuals, calibration: Calibration) -> dict:
    """How ``calibration`` holds on other data (a test set): the scales fitted there (``*_scale_optimal``; 1.0
    times the stored scale is ideal), the stored ones, and the fraction of structures whose largest calibrated force
    uncertainty exceeds the threshold."""
    fitted = fit_calibration(residuals, forces_threshold=calibration.forces_threshold)
    report = {"structures": len(residuals.n_atoms), "stored": calibration.to_dict()}
    for name in ("energy", "forces"):
        stored = getattr(calibration, f"{name}_scale")
        optimal = getattr(fitted, f"{name}_scale")
        if stored is not None and optimal is not None:
            report[f"{name}_scale_optimal"] = optimal
            report[f"{name}_scale_ratio"] = optimal / stored
    if calibration.forces_threshold is not None and residuals.forces_std is not None:
        largest = calibration.forces_scale * per_structure_max(residuals.forces_std, residuals.n_atoms)
        report["fraction_above_threshold"] = float(np.mean(largest > calibration.forces_threshold))
    return report
