"""Analysis of molecular-dynamics trajectories with numpy only: energy drift, temperature, mean square displacement
and diffusion, radial distribution functions, and PNG plots of them. The spectra (``Spectrum``,
``vibrational_spectrum``, ``ir_spectrum``, ``plot_spectrum``) live in :mod:`jaxatom.spectra` and are re-exported here.

Units at every boundary: energies in eV, lengths in Å, masses in amu, times in fs (rates per ps where stated),
velocities in Å/fs, dipoles in e·Å. Trajectory arrays are frames first: positions and velocities ``[T, N, 3]``,
energies ``[T]``, dipoles ``[T, 3]``; ``dt_fs`` is the time between two stored frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import units as ase_units
from numpy.typing import ArrayLike

from jaxatom.errors import DataError
from jaxatom.plotting import finish, legend, new_figure, save
from jaxatom.spectra import CM1_PER_THZ, Spectrum, ir_spectrum, plot_spectrum, vibrational_spectrum

__all__ = [
    "CM1_PER_THZ",
    "Spectrum",
    "DiffusionResult",
    "energy_drift",
    "energy_fluctuation",
    "kinetic_energy",
    "degrees_of_freedom",
    "temperature",
    "vibrational_spectrum",
    "ir_spectrum",
    "mean_square_displacement",
    "diffusion_coefficient",
    "radial_distribution_function",
    "energies_figure",
    "temperature_figure",
    "plot_energies",
    "plot_temperature",
    "plot_spectrum",
    "plot_msd",
    "plot_rdf",
]

# 1 amu·Å²/fs² in eV (ASE's time unit is Å·sqrt(amu/eV), and ase.units.fs is one fs in it).
_AMU_ANG2_PER_FS2 = 1.0 / ase_units.fs**2


def _array(
    values: ArrayLike, name: str, shape: str, ndim: int | tuple[int, ...], last: int | None = None
) -> np.ndarray:
    """``values`` as a finite float64 array with ``ndim`` dimensions (and last axis ``last``), else ValueError."""
    array = np.asarray(values, dtype=np.float64)
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in ndims or (last is not None and array.shape[-1] != last):
        raise DataError(f"{name} must have shape {shape}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise DataError(f"{name} contains NaN or inf; remove or repair those frames before the analysis")
    return array


def _frames(n_frames: int, minimum: int, name: str) -> None:
    if n_frames < minimum:
        raise DataError(f"{name} has {n_frames} frames, at least {minimum} are needed; run or store more frames")


def _positive(value: float, name: str) -> float:
    if not np.isfinite(value) or value <= 0:
        raise DataError(f"{name} must be a positive finite number, got {value}")
    return float(value)


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise DataError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def energy_drift(time_fs: ArrayLike, energy: ArrayLike, n_atoms: int) -> float | np.ndarray:
    """Least-squares slope of the energy against time, in **eV per atom per ps**.

    ``time_fs`` is ``[T]`` in fs (strictly increasing); ``energy`` is ``[T]`` or ``[T, R]`` (R replicas or energy
    terms) in eV, usually the conserved energy of an NVE run. Returns a float for ``[T]`` input, else an array ``[R]``.
    """
    time = _array(time_fs, "time_fs", "[T]", 1)
    values = _array(energy, "energy", "[T] or [T, R]", (1, 2))
    if values.shape[0] != time.shape[0]:
        raise DataError(f"time_fs has {time.shape[0]} frames, energy {values.shape[0]}; pass one time per frame")
    _frames(time.shape[0], 2, "energy")
    if np.any(np.diff(time) <= 0):
        raise DataError("time_fs must be strictly increasing (one time per frame, in fs)")
    slope = np.polyfit(time / 1000.0, values, 1)[0] / _positive_int(n_atoms, "n_atoms")
    return float(slope) if values.ndim == 1 else slope


def energy_fluctuation(energy: ArrayLike, n_atoms: int) -> float | np.ndarray:
    """Standard deviation over time of the energy ``[T]`` or ``[T, R]`` (eV), per atom, in eV (float or ``[R]``)."""
    values = _array(energy, "energy", "[T] or [T, R]", (1, 2))
    _frames(values.shape[0], 2, "energy")
    std = values.std(axis=0) / _positive_int(n_atoms, "n_atoms")
    return float(std) if values.ndim == 1 else std


def _masses(masses: ArrayLike, n_atoms: int) -> np.ndarray:
    m = _array(masses, "masses", f"[N] = [{n_atoms}]", 1)
    if m.shape[0] != n_atoms:
        raise DataError(f"masses has {m.shape[0]} entries but there are {n_atoms} atoms; pass one mass per atom")
    if np.any(m <= 0):
        raise DataError("masses must be positive (amu)")
    return m


def kinetic_energy(velocities: ArrayLike, masses: ArrayLike) -> np.ndarray:
    """Kinetic energy ``[T]`` in eV of velocities ``[T, N, 3]`` in Å/fs with masses ``[N]`` in amu."""
    v = _array(velocities, "velocities", "[T, N, 3]", 3, last=3)
    m = _masses(masses, v.shape[1])
    return 0.5 * np.einsum("n,tnc,tnc->t", m, v, v) * _AMU_ANG2_PER_FS2


def degrees_of_freedom(n_atoms: int, remove_com: bool = True, remove_rotation: bool = False) -> int:
    """Number of kinetic degrees of freedom of ``n_atoms`` atoms: 3N, minus 3 when the centre-of-mass momentum is
    removed (or conserved, as in NVE), minus 3 more when the overall rotation is removed too (3N − 6)."""
    n_dof = 3 * _positive_int(n_atoms, "n_atoms") - 3 * int(remove_com) - 3 * int(remove_rotation)
    if n_dof < 1:
        raise DataError(f"{n_atoms} atoms leave {n_dof} degrees of freedom after removing COM motion/rotation")
    return n_dof


def temperature(kinetic_energy: ArrayLike, n_dof: int) -> np.ndarray:
    """Instantaneous temperature in K from kinetic energies ``[T]`` in eV: ``T = 2 E_kin / (n_dof k_B)``.

    ``n_dof`` is 3N for free atoms, 3N − 3 when the centre-of-mass momentum is removed or conserved, and 3N − 6 when
    the overall rotation is removed too (see :func:`degrees_of_freedom`).
    """
    energy = _array(kinetic_energy, "kinetic_energy", "[T]", (0, 1))
    return 2.0 * energy / (_positive_int(n_dof, "n_dof") * ase_units.kB)


@dataclass(frozen=True)
class DiffusionResult:
    """Self-diffusion coefficient from a straight-line fit ``MSD = slope · t + intercept`` over ``fit_range_fs``
    (Einstein relation ``MSD = 2 · dim · D · t``): ``d_ang2_ps`` in Å²/ps, ``d_cm2_s`` in cm²/s
    (1 Å²/ps = 1e-4 cm²/s), ``slope`` in Å²/ps, ``intercept`` in Å², ``dim`` the number of dimensions."""

    d_ang2_ps: float
    d_cm2_s: float
    slope: float
    intercept: float
    fit_range_fs: tuple[float, float]
    dim: int


def _atom_indices(atoms: ArrayLike | None, n_atoms: int) -> np.ndarray:
    """Indices of the selected atoms: None (all), integer indices, or a boolean mask ``[N]``."""
    if atoms is None:
        return np.arange(n_atoms)
    selection = np.asarray(atoms)
    if selection.dtype == bool:
        if selection.shape != (n_atoms,):
            raise DataError(f"a boolean atom mask must have shape [N] = [{n_atoms}], got {selection.shape}")
        selection = np.flatnonzero(selection)
    elif selection.ndim != 1 or not np.issubdtype(selection.dtype, np.integer):
        raise DataError("atoms must be None, a 1D array of integer atom indices, or a boolean mask [N]")
    if selection.size == 0:
        raise DataError("the atom selection is empty; select at least one atom")
    if selection.min() < -n_atoms or selection.max() >= n_atoms:
        raise DataError(f"atom indices must lie in [0, {n_atoms}), got {selection.min()}..{selection.max()}")
    return selection


def mean_square_displacement(
    positions: ArrayLike, dt_fs: float, max_lag_fs: float | None = None, atoms: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean square displacement ``[L]`` in Å² at lags ``[L]`` in fs (0, dt_fs, ..., max_lag_fs).

    ``positions`` ``[T, N, 3]`` in Å must be **unwrapped** (continuous across periodic boundaries, not folded back
    into the cell), stored every ``dt_fs`` fs. The MSD is averaged over all time origins and over the selected
    ``atoms`` (None for all, integer indices or a boolean mask ``[N]``) with the FFT algorithm (O(T log T));
    centre-of-mass drift is not removed. ``max_lag_fs`` defaults to half the trajectory, beyond which fewer than half
    the time origins contribute.
    """
    x = _array(positions, "positions", "[T, N, 3]", 3, last=3)
    dt = _positive(dt_fs, "dt_fs")
    n_frames = x.shape[0]
    _frames(n_frames, 2, "positions")
    max_lag = max(n_frames // 2, 1) if max_lag_fs is None else int(round(_positive(max_lag_fs, "max_lag_fs") / dt))
    if not 1 <= max_lag <= n_frames - 1:
        raise DataError(
            f"max_lag_fs = {max_lag_fs} fs is {max_lag} frames; it must be between dt_fs and {(n_frames - 1) * dt} fs"
        )
    selected = x[:, _atom_indices(atoms, x.shape[1])]
    msd = _msd_fft(selected.reshape(n_frames, -1))[: max_lag + 1] / selected.shape[1]
    return np.arange(max_lag + 1) * dt, msd


def _msd_fft(x: np.ndarray) -> np.ndarray:
    """Time-origin averaged squared displacement ``[T]`` summed over the columns of ``x`` ``[T, M]``, for every lag:
    ``MSD(m) = S1(m) − 2 S2(m)`` with ``S2`` the autocorrelation by FFT (Calandrini et al., nMoldyn)."""
    n = x.shape[0]
    x = x - x.mean(axis=0)
    square = np.einsum("tm,tm->t", x, x)
    cumulative = np.concatenate([[0.0], np.cumsum(square)])  # cumulative[j] = sum of square[:j]
    lag = np.arange(n)
    s1 = cumulative[n - lag] + cumulative[n] - cumulative[lag]  # sum_k square[k] + square[k + m]
    spectrum = np.abs(np.fft.rfft(x, n=2 * n, axis=0)) ** 2
    autocorrelation = np.fft.irfft(spectrum.sum(axis=1), n=2 * n)[:n]  # sum_k x[k] · x[k + m]
    return (s1 - 2.0 * autocorrelation) / (n - lag)


def diffusion_coefficient(
    lag_fs: ArrayLike,
    msd: ArrayLike,
    fit_range_fs: tuple[float, float] | None = None,
    fit_fraction: tuple[float, float] | None = None,
    dim: int = 3,
) -> DiffusionResult:
    """Self-diffusion coefficient from the Einstein relation ``MSD = 2 · dim · D · t``.

    Fits a straight line to ``msd`` ``[L]`` (Å²) against ``lag_fs`` ``[L]`` (fs) over ``fit_range_fs = (start, end)``
    in fs, or over ``fit_fraction = (start, end)`` of the largest lag (default (0.2, 0.8): skips the ballistic start
    and the noisy end); give at most one of the two. ``dim`` is 3, or 1 or 2 for the MSD along fewer directions.
    """
    lag = _array(lag_fs, "lag_fs", "[L]", 1)
    values = _array(msd, "msd", "[L]", 1)
    if lag.shape != values.shape:
        raise DataError(f"lag_fs {lag.shape} and msd {values.shape} must have the same shape [L]")
    if dim not in (1, 2, 3):
        raise DataError(f"dim must be 1, 2 or 3, got {dim!r}")
    if fit_range_fs is not None and fit_fraction is not None:
        raise DataError("give either fit_range_fs (in fs) or fit_fraction (of the largest lag), not both")
    if fit_range_fs is None:
        low, high = (0.2, 0.8) if fit_fraction is None else fit_fraction
        if not 0.0 <= low < high <= 1.0:
            raise DataError(f"fit_fraction must satisfy 0 <= start < end <= 1, got {fit_fraction}")
        fit_range_fs = (low * lag.max(), high * lag.max())
    start, end = (float(t) for t in fit_range_fs)
    inside = (lag >= start) & (lag <= end)
    if inside.sum() < 2:
        raise DataError(
            f"the fit range {start}..{end} fs holds {inside.sum()} MSD points, at least 2 are needed; "
            f"widen it (the lags span {lag.min()}..{lag.max()} fs)"
        )
    slope_fs, intercept = np.polyfit(lag[inside], values[inside], 1)
    slope = float(slope_fs) * 1000.0  # Å²/fs -> Å²/ps
    d = slope / (2.0 * dim)
    return DiffusionResult(
        d_ang2_ps=d, d_cm2_s=d * 1e-4, slope=slope, intercept=float(intercept), fit_range_fs=(start, end), dim=dim
    )


def _pair_indices(species: ArrayLike | None, pair: tuple[int, int] | None, n_atoms: int) -> tuple[np.ndarray, ...]:
    """Atom indices ``(i, j)`` of the unordered pairs that enter g(r): all pairs, or those between species a and b."""
    if pair is None:
        return np.triu_indices(n_atoms, 1)
    if species is None:
        raise DataError("pair = (Za, Zb) needs species, the atomic number of every atom [N]")
    z = np.asarray(species)
    if z.shape != (n_atoms,):
        raise DataError(f"species must have shape [N] = [{n_atoms}], got {z.shape}")
    first, second = np.flatnonzero(z == pair[0]), np.flatnonzero(z == pair[1])
    if pair[0] == pair[1]:
        i, j = np.triu_indices(first.size, 1)
        return first[i], first[j]
    i, j = np.meshgrid(first, second, indexing="ij")
    return i.ravel(), j.ravel()


def _cells(cell: ArrayLike | None, n_frames: int) -> np.ndarray:
    """Cells ``[T, 3, 3]`` (rows = lattice vectors) from one cell ``[3, 3]`` or one per frame."""
    if cell is None:
        raise DataError(
            "cell is None: g(r) is normalised by the number density of a periodic system, so it needs the cell "
            "[3, 3] (rows = lattice vectors, Å); for a free molecule histogram the pair distances directly"
        )
    cells = _array(cell, "cell", "[3, 3] or [T, 3, 3]", (2, 3), last=3)
    cells = np.broadcast_to(cells, (n_frames, 3, 3)) if cells.shape == (3, 3) else cells
    if cells.shape != (n_frames, 3, 3):
        raise DataError(f"cell must have shape [3, 3] or [T, 3, 3] = [{n_frames}, 3, 3], got {cells.shape}")
    if np.any(np.abs(np.linalg.det(cells)) < 1e-8):
        raise DataError("the cell is singular (zero volume); pass three independent lattice vectors as rows")
    return cells


def _perpendicular_widths(cell: np.ndarray) -> np.ndarray:
    """Distances ``[3]`` between opposite faces of the cell ``[3, 3]``: volume / area of each face."""
    volume = abs(np.linalg.det(cell))
    return volume / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)


def radial_distribution_function(
    positions: ArrayLike,
    cell: ArrayLike | None,
    r_max: float,
    n_bins: int = 200,
    species: ArrayLike | None = None,
    pair: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Radial distribution function g(r) of a periodic system, averaged over frames.

    ``positions`` ``[T, N, 3]`` in Å, ``cell`` ``[3, 3]`` (rows = lattice vectors, Å) or ``[T, 3, 3]`` for a varying
    cell. Distances use the minimum image, which is exact for ``r_max`` up to half the smallest perpendicular width
    of the cell; larger ``r_max`` is refused. With ``species`` ``[N]`` (atomic numbers) and ``pair = (Za, Zb)`` it is
    the partial g_ab(r). Normalised per frame by the ideal-gas pair count ``n_pairs · shell volume / cell volume``, so
    an ideal gas gives g = 1; the number of b neighbours of an a atom within r is then
    ``(N_b − δ_ab) / V · ∫ g 4π r² dr``. Non-periodic input (``cell=None``) is refused. Returns bin centres ``r``
    ``[B]`` (Å) and ``g`` ``[B]``.
    """
    x = _array(positions, "positions", "[T, N, 3] (one frame: positions[None])", 3, last=3)
    n_frames, n_atoms = x.shape[:2]
    _frames(n_frames, 1, "positions")
    cells = _cells(cell, n_frames)
    r_max = _positive(r_max, "r_max")
    limit = min(_perpendicular_widths(c).min() for c in cells) / 2
    if r_max > limit:
        raise DataError(
            f"r_max = {r_max} Å exceeds half the smallest perpendicular cell width ({limit:.4g} Å), where the minimum "
            "image is no longer unique; lower r_max or use a larger supercell"
        )
    i, j = _pair_indices(species, pair, n_atoms)
    if i.size == 0:
        raise DataError(f"no atom pairs for pair = {pair}; check species and pair (atomic numbers)")
    edges = np.linspace(0.0, r_max, _positive_int(n_bins, "n_bins") + 1)
    shell = 4.0 / 3.0 * np.pi * np.diff(edges**3)
    g = np.zeros(edges.size - 1)
    for frame, c in zip(x, cells, strict=True):
        fractional = (frame[j] - frame[i]) @ np.linalg.inv(c)
        distances = np.linalg.norm((fractional - np.round(fractional)) @ c, axis=1)
        counts = np.histogram(distances, bins=edges)[0]
        g += counts / (i.size * shell / abs(np.linalg.det(c)))
    return 0.5 * (edges[1:] + edges[:-1]), g / n_frames


def _figure(n_rows: int = 1):
    """A new figure with ``n_rows`` stacked axes sharing the x axis (:func:`jaxatom.plotting.new_figure`)."""
    figure, axes = new_figure(n_rows, sharex=True)
    return figure, axes[:, 0]


def _save(figure, path: str | Path, title: str | None = None) -> Path:
    return save(figure, path, title)


def _time_axis(time_fs: ArrayLike, name: str = "time_fs") -> tuple[np.ndarray, str]:
    """Times for a plot's x axis with their unit: ps, or fs for runs shorter than 1 ps (readable tick labels)."""
    t = _array(time_fs, name, "[T]", 1)
    return (t, "fs") if t.size and np.abs(t).max() < 1000.0 else (t / 1000.0, "ps")


def energies_figure(time_fs: ArrayLike, potential: ArrayLike, kinetic: ArrayLike, conserved: ArrayLike,
                    title: str | None = None):  # fmt: skip
    """The figure of :func:`plot_energies`: potential, kinetic and conserved energy relative to their values at the
    first frame (the start, t = 0), and the conserved energy alone in meV with its drift (meV/ps)."""
    t, unit = _time_axis(time_fs)
    energies = {name: _array(e, name, "[T]", 1) for name, e in [("potential", potential), ("kinetic", kinetic)]}
    energies["conserved"] = _array(conserved, "conserved", "[T]", 1)
    figure, (top, bottom) = _figure(2)
    for name, e in energies.items():
        top.plot(t, e - e[0], label=name, lw=1)
    change = 1000.0 * (energies["conserved"] - energies["conserved"][0])
    bottom.plot(t, change, color="C2", lw=1)
    drift = np.polyfit(t / (1.0 if unit == "ps" else 1000.0), change, 1)[0] if len(t) > 1 else float("nan")
    t0 = t[0] * (1000.0 if unit == "ps" else 1.0)
    top.set(ylabel="E − E(t₀) (eV)", title=f"energies relative to the first frame (t₀ = {t0:g} fs)")
    legend(top, outside=True)  # time series fill their axes: any legend inside would cover data
    bottom.set(
        xlabel=f"time ({unit})", ylabel="ΔE conserved (meV)", title=f"conserved energy: drift {drift:.3g} meV/ps"
    )
    return finish(figure, title)


def plot_energies(time_fs: ArrayLike, potential: ArrayLike, kinetic: ArrayLike, conserved: ArrayLike,
                  path: str | Path, title: str | None = None) -> Path:  # fmt: skip
    """Plot potential, kinetic and conserved energy ``[T]`` (eV) relative to their first value against time (ps),
    and the conserved energy alone in meV in a second panel to show its drift; writes a PNG to ``path``. ``title``
    names what ran (e.g. ``"PaiNN on aspirin, NVE 300 K"``)."""
    return _save(energies_figure(time_fs, potential, kinetic, conserved, title), path)


def temperature_figure(time_fs: ArrayLike, temperature_k: ArrayLike, target_K: float | None = None,
                       title: str | None = None):  # fmt: skip
    """The figure of :func:`plot_temperature`."""
    t, unit = _time_axis(time_fs)
    values = _array(temperature_k, "temperature_k", "[T]", 1)
    figure, (axes,) = _figure()
    axes.plot(t, values, lw=1, label="instantaneous")
    axes.axhline(values.mean(), color="k", ls="--", lw=1, label=f"mean {values.mean():.1f} K")
    if target_K is not None:
        axes.axhline(float(target_K), color="C3", ls=":", lw=1.5, label=f"target {float(target_K):g} K")
    axes.set(xlabel=f"time ({unit})", ylabel="temperature (K)", title="kinetic temperature")
    legend(axes, outside=True)
    return finish(figure, title)


def plot_temperature(time_fs: ArrayLike, temperature_k: ArrayLike, path: str | Path, target_K: float | None = None,
                     title: str | None = None) -> Path:  # fmt: skip
    """Plot the temperature ``[T]`` (K) against time (ps) with its mean as a dashed line and, for a thermostat, its
    target ``target_K`` (K) as a dotted line; writes a PNG to ``path``."""
    return _save(temperature_figure(time_fs, temperature_k, target_K, title), path)


def plot_msd(lag_fs: ArrayLike, msd: ArrayLike, result: DiffusionResult | None, path: str | Path,
             title: str | None = None) -> Path:  # fmt: skip
    """Plot the MSD ``[L]`` (Å²) against lag (ps) and, when given, the diffusion fit over its range; writes a PNG."""
    lag = _array(lag_fs, "lag_fs", "[L]", 1) / 1000.0
    figure, (axes,) = _figure()
    axes.plot(lag, _array(msd, "msd", "[L]", 1), lw=1, label="MSD")
    if result is not None:
        fit = np.array(result.fit_range_fs) / 1000.0
        label = f"fit: D = {result.d_ang2_ps:.4g} Å²/ps = {result.d_cm2_s:.3g} cm²/s"
        axes.plot(fit, result.slope * fit + result.intercept, "k--", lw=1.5, label=label)
    axes.set(xlabel="lag (ps)", ylabel="MSD (Å²)", title="mean square displacement")
    legend(axes)
    return _save(figure, path, title)


def plot_rdf(r: ArrayLike, g: ArrayLike, path: str | Path, title: str | None = None) -> Path:
    """Plot g(r) ``[B]`` against r ``[B]`` (Å) with the ideal-gas level g = 1; writes a PNG to ``path``."""
    figure, (axes,) = _figure()
    axes.plot(_array(r, "r", "[B]", 1), _array(g, "g", "[B]", 1), lw=1)
    axes.axhline(1.0, color="k", ls=":", lw=1)
    axes.set(xlabel="r (Å)", ylabel="g(r)", title="radial distribution function")
    return _save(figure, path, title)
