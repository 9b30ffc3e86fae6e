"""Spectra of a jaxatom HDF5 MD trajectory: IR from ``dipole_moment``, Raman from ``polarizability``, power spectrum
from ``velocities`` — whatever the file holds, or an error naming what to add."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from jaxatom.errors import DataError
from jaxatom.spectra.core import Spectrum, ir_spectrum, power_spectrum, raman_spectrum

__all__ = ["SERIES", "spectra_from_trajectory"]

#: Spectrum kind -> (per-frame dataset, how to get it when missing).
SERIES = {
    "ir": ("dipole_moment", "rerun simulate with observables=['dipole_moment'] using a model with a dipole head"),
    "raman": (
        "polarizability",
        "rerun simulate with observables=['polarizability'] using a model with a polarizability head",
    ),
    "power": ("velocities", "rerun simulate with velocities among the stored per-frame quantities"),
}


def _frame_spacing(time: np.ndarray, path) -> float:
    if time.shape[0] < 2:
        raise DataError(f"{path} holds {time.shape[0]} frames; a spectrum needs many (run longer)")
    spacing = np.diff(time)
    dt = float(spacing[0])
    if not dt > 0 or not np.allclose(spacing, dt, rtol=1e-6, atol=1e-9):
        raise DataError(f"{path}: frames are not evenly spaced in time (spacings {spacing.min():g}..{spacing.max():g}"
                        " fs); a spectrum needs a constant frame spacing")  # fmt: skip
    return dt


def _run_temperature(data: dict, path) -> float:
    attrs = data["attrs"]
    if attrs.get("ensemble") == "nve" and "temperature" in data and len(data["temperature"]):
        return float(np.mean(data["temperature"]))  # NVE: the run's mean kinetic temperature, not the initial one
    if attrs.get("temperature_K") is None:
        raise DataError(f"{path} records no temperature_K; pass temperature_K (K)")
    if np.ndim(attrs["temperature_K"]):
        raise DataError(f"{path} ran its replicas at different temperatures; pass temperature_K (K)")
    return float(attrs["temperature_K"])


def spectra_from_trajectory(
    path: str | Path,
    ir: bool | None = None,
    raman: bool | None = None,
    power: bool | None = None,
    *,
    max_frequency_cm1: float | None = 4000.0,
    window: str | None = "hann",
    temperature_K: float | None = None,
    quantum_correction: str | None = "harmonic",
    resolution_cm1: float | None = None,
    max_lag_fs: float | None = None,
    skip_fs: float = 0.0,
) -> dict[str, Spectrum]:
    """IR, Raman and power spectra of the trajectory at ``path`` (read with ``jaxatom.md.read_trajectory``).

    ``ir``, ``raman``, ``power``: True computes that spectrum and raises :class:`DataError` naming what to add when the
    file lacks its series (``dipole_moment [F, R, 3]`` e·Å, ``polarizability [F, R, 3, 3]`` Å³, ``velocities [F, R, N,
    3]`` Å/fs); False skips it; None (default) computes it when the file holds the series. Replicas are averaged. The
    frame spacing is ``time[1] − time[0]``; frames before the time ``skip_fs`` (fs, the file's ``time``, 0 at the start
    of the run) are dropped as equilibration. ``temperature_K`` defaults to the run's ``temperature_K`` attribute
    (thermostat target; for RPMD the physical temperature), or for NVE runs to the mean of the stored ``temperature``.
    Ring-polymer runs store centroid velocities and bead-averaged dipoles/polarizabilities, so their spectra are the
    centroid (TRPMD) estimates. The power spectrum is mass weighted, in modes per cm⁻¹. Other arguments are as in
    :func:`jaxatom.spectra.ir_spectrum`. Returns ``{"ir": Spectrum, "raman": RamanSpectrum, "power": Spectrum}`` with
    the computed ones, in that order.
    """
    from jaxatom.md.trajectory import read_trajectory, require_equal_atoms

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no trajectory at {path}")
    data = read_trajectory(path)
    require_equal_atoms(data, "spectra from a trajectory")
    wanted = {"ir": ir, "raman": raman, "power": power}
    todo = []
    for kind, flag in wanted.items():
        dataset, fix = SERIES[kind]
        if flag and dataset not in data:
            raise DataError(f"the trajectory {path} has no {dataset}; {fix}")
        if flag or (flag is None and dataset in data):
            todo.append(kind)
    if not todo:
        missing = ", ".join(SERIES[k][0] for k, flag in wanted.items() if flag is not False)
        raise DataError(f"the trajectory {path} holds none of the series asked for ({missing or 'none asked'}); "
                        "rerun simulate with observables=['dipole_moment', 'polarizability']")  # fmt: skip
    time = np.asarray(data["time"], dtype=np.float64)
    dt = _frame_spacing(time, path)
    keep = time >= skip_fs - 1e-9  # the file's own times: frame 0 is t = 0 (version 1 files start one stride in)
    temperature = _run_temperature(data, path) if temperature_K is None else temperature_K
    options = dict(window=window, max_frequency_cm1=max_frequency_cm1, resolution_cm1=resolution_cm1,
                   max_lag_fs=max_lag_fs)  # fmt: skip
    compute = {
        "ir": lambda x: ir_spectrum(x, dt, temperature, quantum_correction=quantum_correction, **options),
        "raman": lambda x: raman_spectrum(x, dt, temperature, quantum_correction=quantum_correction, **options),
        "power": lambda x: power_spectrum(x, dt, data["masses"], temperature, **options),
    }
    with warnings.catch_warnings(record=True) as caught:  # the spectra share the frames: warn once, not per spectrum
        warnings.simplefilter("always")
        spectra = {kind: compute[kind](data[SERIES[kind][0]][keep]) for kind in todo}
    for message in dict.fromkeys((str(w.message), w.category) for w in caught):
        warnings.warn(message[0], message[1], stacklevel=2)
    return spectra
