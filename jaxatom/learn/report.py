"""The report of an active-learning run: one row per generation (``report.csv``) and its plots (``report.png``):
labels used, errors on the held-out set, calibration, uncertainty of what MD visited and what was chosen, labels
and failures of the oracle.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from jaxatom.learn.layout import Layout, write_atomically

__all__ = ["COLUMNS", "report_rows", "write_report", "plot_report"]

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


def write_report(layout: Layout, generations: int) -> None:
    """Rewrite ``report.csv`` and ``report.png`` from the generations' summaries."""
    rows = report_rows(layout, generations)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=[column for column, _ in COLUMNS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(layout.report, text.getvalue())
    if rows:
        plot_report(rows, layout.run_dir / "report.png")


def _series(rows: list[dict], column: str) -> tuple[np.ndarray, np.ndarray]:
    kept = [(row["labels"], row[column]) for row in rows if row[column] != "" and row["labels"] != ""]
    return (np.array([k[0] for k in kept], float), np.array([k[1] for k in kept], float)) if kept else (
        np.array([]), np.array([]))  # fmt: skip


def plot_report(rows: list[dict], path) -> None:
    """Test force error vs labels, and the uncertainty of visited and chosen structures per generation."""
    from matplotlib.figure import Figure  # not pyplot: the caller's backend (a notebook's inline one) stays

    fig = Figure(figsize=(9, 3.6))
    errors, uncertainty = fig.subplots(1, 2)
    for column, label in (("test_forces_mae_eV_per_A", "force MAE"), ("test_forces_rmse_eV_per_A", "force RMSE")):
        x, y = _series(rows, column)
        errors.plot(x, y, "o-", label=label)
    errors.set(xlabel="labels", ylabel="held-out error (eV/Å)", title="test error")
    errors.legend()
    for column, label in (("visited_uncertainty_mean", "visited (mean)"), ("visited_uncertainty_max", "visited (max)"),
                          ("selected_uncertainty_mean", "selected (mean)")):  # fmt: skip
        x, y = _series(rows, column)
        uncertainty.plot(x, y, "o-", label=label)
    uncertainty.set(xlabel="labels", ylabel="force uncertainty (eV/Å)", title="calibrated uncertainty")
    uncertainty.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
