"""Presenting a harmonic analysis: broadened stick spectra on a cm⁻¹ grid, a text table, a CSV file and a PNG plot
(matplotlib ``Figure`` objects, never pyplot)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxatom.errors import ConfigError
from jaxatom.plotting import finish, new_figure, save

__all__ = ["BroadenedSpectrum", "broaden", "mode_table", "write_csv", "sticks_figure", "plot_sticks"]

SHAPES = ("lorentzian", "gaussian")
#: Units of the two kinds of intensity.
INTENSITY_UNITS = {"ir": "km/mol", "raman": "Å⁴/amu"}


@dataclass(frozen=True, eq=False)
class BroadenedSpectrum:
    """Stick intensities broadened onto a wavenumber grid.

    Attributes:
        wavenumbers_cm1: ``[F]`` grid (cm⁻¹).
        intensity: ``[F]`` intensity per cm⁻¹ (``unit`` per cm⁻¹); it integrates over the grid to the sum of the
            sticks inside it, so IR spectra are in km/mol/cm⁻¹ and comparable with MD spectra scaled the same way.
        kind: ``"ir"`` or ``"raman"``.
        unit: the sticks' unit (km/mol or Å⁴/amu).
    """

    wavenumbers_cm1: np.ndarray
    intensity: np.ndarray
    kind: str
    unit: str


def broaden(
    frequencies_cm1, intensities, width_cm1: float = 10.0, shape: str = "lorentzian", grid_cm1=None
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of unit-area line shapes of full width at half maximum ``width_cm1`` centred at each frequency, weighted by
    its intensity, on ``grid_cm1`` (default 0 to 1.1 × the highest frequency + 200 cm⁻¹ in steps of 1 cm⁻¹).
    Imaginary (negative) frequencies are left out. Returns ``(grid, intensity per cm⁻¹)``."""
    if shape not in SHAPES:
        raise ConfigError(f"shape must be one of {SHAPES}, got {shape!r}")
    if not width_cm1 > 0:
        raise ConfigError(f"width_cm1 must be a positive full width at half maximum in cm⁻¹, got {width_cm1!r}")
    frequencies = np.asarray(frequencies_cm1, np.float64)
    weights = np.where(frequencies > 0, np.asarray(intensities, np.float64), 0.0)
    if grid_cm1 is None:
        top = 1.1 * max(float(frequencies.max(initial=0.0)), 0.0) + 200.0
        grid_cm1 = np.arange(0.0, top + 1.0, 1.0)
    grid = np.asarray(grid_cm1, np.float64)
    offset = grid[:, None] - frequencies[None, :]
    if shape == "lorentzian":
        half = 0.5 * width_cm1
        lines = half / np.pi / (offset**2 + half**2)
    else:
        sigma = width_cm1 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        lines = np.exp(-0.5 * (offset / sigma) ** 2) / (sigma * np.sqrt(2.0 * np.pi))
    return grid, lines @ weights


def mode_table(frequencies_cm1, columns: dict[str, np.ndarray | None]) -> list[list[str]]:
    """Rows of mode index, frequency and every non-None column (formatted), imaginary modes marked ``i``."""
    rows = []
    for k, frequency in enumerate(np.asarray(frequencies_cm1)):
        text = f"{abs(frequency):.2f}i" if frequency < 0 else f"{frequency:.2f}"
        rows.append([str(k), text, *(f"{values[k]:.4f}" for values in columns.values() if values is not None)])
    return rows


def write_csv(path, frequencies_cm1, columns: dict[str, np.ndarray | None]) -> Path:
    """Write ``mode, frequency_cm1`` and every non-None column to a CSV file (negative frequencies = imaginary)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    present = {name: values for name, values in columns.items() if values is not None}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mode", "frequency_cm1", *present])
        for k, frequency in enumerate(np.asarray(frequencies_cm1)):
            writer.writerow([k, f"{frequency:.6f}", *(f"{values[k]:.8g}" for values in present.values())])
    return path


def sticks_figure(frequencies_cm1, panels: list[tuple[str, np.ndarray, BroadenedSpectrum | None]],
                  title: str | None = None):  # fmt: skip
    """The figure of :func:`plot_sticks`."""
    frequencies = np.asarray(frequencies_cm1, np.float64)
    real = frequencies > 0
    figure, axes_grid = new_figure(len(panels), row_height=2.2, sharex=True)
    axes_list = axes_grid[:, 0]
    for axes, (label, sticks, spectrum) in zip(axes_list, panels, strict=True):
        axes.vlines(frequencies[real], 0.0, np.asarray(sticks)[real], color="C0", lw=1.5)
        axes.set_ylabel(f"{label}, sticks", color="C0")
        axes.set_ylim(bottom=0.0)
        if spectrum is not None:
            twin = axes.twinx()
            twin.plot(spectrum.wavenumbers_cm1, spectrum.intensity, color="C1", lw=1)
            twin.set_ylabel(f"broadened ({spectrum.unit}/cm⁻¹)", color="C1")
            twin.set_ylim(bottom=0.0)
            axes.set_xlim(spectrum.wavenumbers_cm1[0], spectrum.wavenumbers_cm1[-1])
    axes_list[0].set_title(f"harmonic modes: {int(real.sum())} real, {int((frequencies < 0).sum())} imaginary",
                           fontsize="medium", loc="left")  # fmt: skip
    axes_list[-1].set_xlabel("wavenumber (cm⁻¹)")
    return finish(figure, title)


def plot_sticks(frequencies_cm1, panels: list[tuple[str, np.ndarray, BroadenedSpectrum | None]], path,
                title: str | None = None) -> Path:  # fmt: skip
    """One panel per ``(label, stick heights [M], broadened spectrum or None)``: sticks at the real frequencies and
    the broadened curve on a second y axis; ``title`` names the model and molecule; writes a PNG to ``path``."""
    return save(sticks_figure(frequencies_cm1, panels, title), path)
