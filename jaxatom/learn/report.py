"""The report of an active-learning run: one row per generation (``report.csv``) and its plots (``report.png``):
labels used, errors on the held-out set, calibration, uncertainty of what MD visited and what was chosen, labels
and failures of the oracle.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from jaxatom.learn.layout import Layout, write_atomically
from jaxatom.plotting import finish, legend, new_figure, save

__all__ = ["COLUMNS", "report_rows", "write_report", "report_figure", "plot_report"]

#: The report's columns: (column, path into a generation's summary.json).
COLUMNS = (
    ("generation", ("generation",)),
    ("labels", ("labels",)),
    ("test_energy_mae_eV", ("test", "energy_mae")),
    ("test_energy_rmse_eV", ("test", "energy_rmse")),
    ("test_forces_mae_eV_per_A", ("test", "forces_mae")),
    ("test_forces_rmse_eV_per_A", ("test", "forces_rmse")),
    ("forces_calibration_scale", ("calibration", "forces_scale")),
    ("forces_threshold_eV_per_A", ("calibration", "forces_threshold")),
    ("visited", ("select", "visited")),
    ("flagged", ("select", "flagged")),
    ("visited_uncertainty_mean", ("select", "uncertainty_mean")),
    ("visited_uncertainty_max", ("select", "uncertainty_max")),
    ("selected", ("select", "selected")),
    ("selected_uncertainty_mean", ("select", "selected_uncertainty_mean")),
    ("labeled", ("label", "labeled")),
    ("failed", ("label", "failed")),
    ("added", ("added",)),
)


def _lookup(summary: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(summary, dict) or key not in summary:
            return ""
        summary = summary[key]
    return summary


def report_rows(layout: Layout, generations: int) -> list[dict]:
    """One row per generation that has a summary."""
    rows = []
    for g in range(generations + 1):
        if layout.summary(g).exists():
            summary = layout.read_summary(g)
            rows.append({column: _lookup(summary, path) for column, path in COLUMNS})
    return rows


def write_report(layout: Layout, generations: int, title: str | None = None) -> None:
    """Rewrite ``report.csv`` and ``report.png`` (titled ``title``, e.g. the system and oracle) from the generations'
    summaries."""
    rows = report_rows(layout, generations)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=[column for column, _ in COLUMNS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(layout.report, text.getvalue())
    if rows:
        plot_report(rows, layout.run_dir / "report.png", title)


def _series(rows: list[dict], column: str) -> tuple[np.ndarray, np.ndarray]:
    kept = [(row["labels"], row[column]) for row in rows if row[column] != "" and row["labels"] != ""]
    return (np.array([k[0] for k in kept], float), np.array([k[1] for k in kept], float)) if kept else (
        np.array([]), np.array([]))  # fmt: skip


def report_figure(rows: list[dict], title: str | None = None):
    """The figure of :func:`plot_report`."""
    figure, axes = new_figure(1, 2, width=9.6, row_height=3.2)
    errors, uncertainty = axes[0]
    for column, label in (("test_forces_mae_eV_per_A", "force MAE"), ("test_forces_rmse_eV_per_A", "force RMSE")):
        errors.plot(*_series(rows, column), "o-", label=label)
    errors.set(xlabel="labelled structures", ylabel="held-out force error (eV/Å)")
    errors.set_title("test error against labels", fontsize="medium")
    for column, label in (("visited_uncertainty_mean", "visited (mean)"), ("visited_uncertainty_max", "visited (max)"),
                          ("selected_uncertainty_mean", "selected (mean)")):  # fmt: skip
        uncertainty.plot(*_series(rows, column), "o-", label=label)
    uncertainty.set(xlabel="labelled structures", ylabel="calibrated force uncertainty (eV/Å)")
    uncertainty.set_title("uncertainty of the explored structures", fontsize="medium")
    for axis in (errors, uncertainty):
        _log_if_positive(axis)
        legend(axis)
    return finish(figure, title)


def _log_if_positive(axis) -> None:
    """A log y scale when every plotted value is positive (errors and uncertainties span decades)."""
    values = np.concatenate([line.get_ydata() for line in axis.get_lines()] or [np.array([])])
    if values.size and np.all(values > 0):
        axis.set_yscale("log")


def plot_report(rows: list[dict], path, title: str | None = None) -> None:
    """Test force error vs labels, and the uncertainty of visited and chosen structures per generation; ``title``
    names the run (system, oracle)."""
    save(report_figure(rows, title), path)
