"""Spectra to files: one CSV per spectrum (units in the header) and PNG plots against wavenumber."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from jaxatom.errors import DataError
from jaxatom.plotting import finish, legend, new_figure, save
from jaxatom.spectra.core import RamanSpectrum, Spectrum

__all__ = ["describe", "write_spectrum_csv", "spectra_figure", "plot_spectrum", "plot_spectra"]

_TITLES = {"ir": "IR absorption", "raman": "Raman activity", "power": "power spectrum (VDOS)"}
_XLABEL = "wavenumber (cm⁻¹)"


def describe(spectrum: Spectrum) -> str:
    """One line: kind, unit, resolution, Nyquist, window, correction, temperature, replicas and segments."""
    temperature = "" if spectrum.temperature_K is None else f", {spectrum.temperature_K:g} K"
    correction = "" if spectrum.quantum_correction is None else f", {spectrum.quantum_correction} correction"
    return (f"{spectrum.kind}: {spectrum.unit}, resolution {spectrum.resolution_cm1:.3g} cm⁻¹, Nyquist "
            f"{spectrum.nyquist_cm1:.0f} cm⁻¹, window {spectrum.window}{correction}{temperature}, "
            f"{spectrum.n_replicas} replicas × {spectrum.n_segments} segments")  # fmt: skip


def write_spectrum_csv(spectrum: Spectrum, path: str | Path) -> Path:
    """Write ``spectrum`` as CSV: ``#`` comment lines with the settings, then a header naming every column with its
    unit (``wavenumber (cm-1)``, ``intensity (km/mol/cm⁻¹)``; for Raman also isotropic, anisotropic, parallel (VV)
    and perpendicular (VH)). Read back with ``numpy.loadtxt(path, delimiter=",", skiprows=...)`` or
    ``pandas.read_csv(path, comment="#")``."""
    columns = {"wavenumber (cm-1)": spectrum.frequency_cm1}
    if isinstance(spectrum, RamanSpectrum):
        columns.update({
            f"total 45 iso + 7 aniso ({spectrum.unit})": spectrum.intensity,
            f"isotropic a^2 ({spectrum.unit})": spectrum.isotropic,
            f"anisotropic gamma^2 ({spectrum.unit})": spectrum.anisotropic,
            f"parallel VV 45 iso + 4 aniso ({spectrum.unit})": spectrum.parallel,
            f"perpendicular VH 3 aniso ({spectrum.unit})": spectrum.perpendicular,
        })  # fmt: skip
    else:
        columns[f"intensity ({spectrum.unit})"] = spectrum.intensity
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# {describe(spectrum)}\n{','.join(columns)}\n"
    with path.open("w", encoding="utf-8") as file:
        file.write(header)
        np.savetxt(file, np.column_stack(list(columns.values())), delimiter=",", fmt="%.8g")
    return path


def _draw(axes, spectrum: Spectrum, x: np.ndarray) -> None:
    if isinstance(spectrum, RamanSpectrum):
        axes.plot(x, spectrum.intensity, lw=2.5, color="0.7", label="total (45 a² + 7 γ²)")
        axes.plot(x, 45.0 * spectrum.isotropic, lw=1, label="isotropic (45 a²)")
        axes.plot(x, 7.0 * spectrum.anisotropic, lw=1, label="anisotropic (7 γ²)")
        legend(axes, outside=True)
    else:
        axes.plot(x, spectrum.intensity, lw=1)
    axes.set_title(_TITLES.get(spectrum.kind, spectrum.kind), fontsize="medium", loc="left")
    axes.set_ylabel(spectrum.unit)
    axes.set_xlim(0.0, x[-1])
    axes.set_ylim(bottom=min(0.0, float(np.min(spectrum.intensity))))


def spectra_figure(spectra: Sequence[Spectrum] | Mapping[str, Spectrum], title: str | None = None):
    """The figure of :func:`plot_spectra`."""
    items = list(spectra.values() if isinstance(spectra, Mapping) else spectra)
    if not items:
        raise DataError("no spectra to plot")
    figure, axes = new_figure(len(items), sharex=True)
    for panel, spectrum in zip(axes[:, 0], items, strict=True):
        _draw(panel, spectrum, spectrum.frequency_cm1)
    axes[-1, 0].set_xlabel(_XLABEL)
    return finish(figure, title)


def plot_spectra(spectra: Sequence[Spectrum] | Mapping[str, Spectrum], path: str | Path,
                 title: str | None = None) -> Path:  # fmt: skip
    """Plot one panel per spectrum (IR, Raman with its isotropic, anisotropic and total parts, power), stacked with a
    shared wavenumber axis in cm⁻¹ and each y axis in its absolute unit; legends sit outside the axes. ``title``
    names the model and system (e.g. ``"PaiNN, ethanol, 300 K TRPMD"``). Writes a PNG."""
    return save(spectra_figure(spectra, title), path)


def plot_spectrum(spectrum: Spectrum, path: str | Path, unit: str = "cm-1", max_frequency: float | None = None,
                  title: str | None = None) -> Path:  # fmt: skip
    """Plot one spectrum against wavenumber (``unit="cm-1"``) or frequency (``unit="THz"``), up to ``max_frequency``
    in that unit (default: the whole grid), with the intensity in its unit; writes a PNG to ``path``."""
    axes_by_unit = {"cm-1": (spectrum.frequency_cm1, _XLABEL), "THz": (spectrum.frequency_thz, "frequency (THz)")}
    if unit not in axes_by_unit:
        raise DataError(f"unit must be 'cm-1' or 'THz', got {unit!r}")
    frequency, label = axes_by_unit[unit]
    figure, axes = new_figure()
    _draw(axes[0, 0], spectrum, frequency)
    axes[0, 0].set(xlabel=label, xlim=(0, max_frequency or frequency[-1]))
    return save(figure, path, title)
