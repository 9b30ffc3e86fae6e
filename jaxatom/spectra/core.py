"""Power, IR and Raman spectra in absolute units from MD time series (numpy only).

Every spectrum is an estimate of the classical correlation spectrum of a series x(t) stored every ``dt_fs`` fs,

    C(ω) = ∫ dt e^{−iωt} ⟨x(0) x(t)⟩  ≈  dt · ⟨|Σ_k w_k (x_k − x̄) e^{−iω k dt}|²⟩ / Σ_k w_k²,

averaged over replicas and (with ``resolution_cm1`` or ``max_lag_fs``) over 50 %-overlapping segments (Welch),
and kept for ω ≥ 0 only (one-sided: ``∫_0^∞ C dω/2π = ⟨x²⟩/2``). Every prefactor is derived in ``docs/spectra.md``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from ase import units as ase_units
from numpy.typing import ArrayLike

from jaxatom.errors import DataError

__all__ = [
    "CM1_PER_THZ",
    "C_CM_PER_FS",
    "HBAR_EV_FS",
    "IR_KM_MOL_FACTOR",
    "HARMONIC_IR_KM_MOL",
    "QUANTUM_CORRECTIONS",
    "WINDOWS",
    "SpectrumWarning",
    "Spectrum",
    "RamanSpectrum",
    "quantum_correction_factor",
    "power_spectrum",
    "ir_spectrum",
    "raman_spectrum",
    "vibrational_spectrum",
]

#: Speed of light in cm/fs: a wavenumber ν̃ (cm⁻¹) is the frequency ν = c ν̃ (1/fs), ω = 2π c ν̃ (rad/fs).
C_CM_PER_FS = ase_units._c * 100.0 * 1e-15
#: Wavenumber in cm⁻¹ of a frequency of 1 THz (33.356 cm⁻¹).
CM1_PER_THZ = 1e-3 / C_CM_PER_FS
#: ħ in eV·fs (0.6582 eV·fs).
HBAR_EV_FS = ase_units._hbar / ase_units._e * 1e15
#: 1 amu·Å²/fs² in eV (103.64 eV); ASE's time unit is Å·sqrt(amu/eV) and ``ase.units.fs`` is one fs in it.
_EV_PER_AMU_ANG2_FS2 = 1.0 / ase_units.fs**2
#: IR: km/mol per cm⁻¹ for β ω² C_μ(ω) in e²·Å²/(eV·fs) (β in 1/eV, ω in rad/fs, C_μ in e²·Å²·fs):
#: 2π N_A / (3 c · 4πε₀) in SI, times e·Å²/(eV·fs) = e · 1e-5 C²m²/(J·s), divided by 10 (km/mol/cm⁻¹ = 10 m²/mol).
IR_KM_MOL_FACTOR = (
    2.0
    * math.pi
    * ase_units._Nav
    / (3.0 * ase_units._c * 4.0 * math.pi * ase_units._eps0)
    * (ase_units._e * 1e-5)
    / 10.0
)
#: Harmonic IR intensity in km/mol of a mode with |∂μ/∂Q|² = 1 e²/amu: N_A π / (3 c² · 4πε₀) · e²/amu (974.9 km/mol);
#: for |∂μ/∂Q|² in D²/(Å²·amu) it is 42.256 km/mol.
HARMONIC_IR_KM_MOL = (
    (ase_units._Nav * math.pi / (3.0 * ase_units._c**2 * 4.0 * math.pi * ase_units._eps0))
    * ase_units._e**2
    / ase_units._amu
    / 1000.0
)
#: Raman and power spectra: 2c (cm/fs) times 1 amu·Å²/fs² in eV, turns β ω² C_α (β in 1/eV, C_α in Å⁶·fs) into
#: Å⁴/amu per cm⁻¹ and β m C_v (m in amu, C_v in Å²/fs) into degrees of freedom per cm⁻¹.
_DENSITY_FACTOR = 2.0 * C_CM_PER_FS * _EV_PER_AMU_ANG2_FS2

WINDOWS: dict[str, Callable[[int], np.ndarray]] = {"hann": np.hanning, "hamming": np.hamming, "blackman": np.blackman}
#: Quantum correction factors Q(x), x = βħω, multiplying the classical correlation spectrum; see ``quantum_correction``.
QUANTUM_CORRECTIONS = ("harmonic", "standard", "schofield", "classical")
_MIN_FRAMES = 4
_MAX_FREQUENCY_CM1 = 4000.0


class SpectrumWarning(UserWarning):
    """A spectrum that can be computed but not trusted as asked: the frame spacing cannot reach the requested highest
    wavenumber (Nyquist below it: those bands are lost or aliased), or the run is too short for the requested
    resolution."""


@dataclass(frozen=True, eq=False)
class Spectrum:
    """A spectrum on a wavenumber grid ``frequency_cm1 [F]`` (cm⁻¹, from 0 up to ``max_frequency_cm1`` or Nyquist).

    ``intensity [F]`` is in ``unit`` (a density per cm⁻¹: its integral over a band in cm⁻¹ is the band's intensity);
    ``kind`` is "power", "ir" or "raman". ``resolution_cm1`` is the grid spacing of independent estimates,
    1/(L·dt·c) for a correlation length of L frames (the whole run, or one Welch segment); a window broadens a line to
    about 1.5 (hann) to 1.7 (blackman) times that. ``nyquist_cm1`` = 1/(2·dt·c) is the highest wavenumber the frame
    spacing ``dt_fs`` can represent. ``window`` is the taper on each series (or segment), ``quantum_correction`` the
    factor applied (None for the power spectrum), ``temperature_K`` the temperature used (None when not needed),
    ``n_replicas`` the number of independent replicas averaged and ``n_segments`` the Welch segments per replica.
    """

    frequency_cm1: np.ndarray
    intensity: np.ndarray
    unit: str
    kind: str
    dt_fs: float
    resolution_cm1: float
    nyquist_cm1: float
    window: str | None
    quantum_correction: str | None
    temperature_K: float | None
    n_replicas: int
    n_segments: int

    @property
    def frequency_thz(self) -> np.ndarray:
        """The grid as frequencies in THz (1 THz = 33.356 cm⁻¹)."""
        return self.frequency_cm1 / CM1_PER_THZ

    def integral(self, low_cm1: float = 0.0, high_cm1: float = np.inf, part: str = "intensity") -> float:
        """Integral of ``part`` over ``low_cm1 ≤ ν̃ ≤ high_cm1`` (rectangle rule on the grid), in ``unit`` × cm⁻¹:
        km/mol for IR, Å⁴/amu for Raman, degrees of freedom for a mass-weighted power spectrum with a temperature."""
        inside = (self.frequency_cm1 >= low_cm1) & (self.frequency_cm1 <= high_cm1)
        return float(np.sum(getattr(self, part)[inside]) * (self.frequency_cm1[1] - self.frequency_cm1[0]))

    def _parts(self) -> tuple[str, ...]:
        return ("intensity",)

    def normalized(self) -> Spectrum:
        """The same spectrum scaled to unit area over cm⁻¹ (every part by the same factor): a line shape."""
        area = self.integral()
        if not area > 0:
            raise DataError(f"the {self.kind} series do not change in time (after removing the mean), so the spectrum "
                            "is zero")  # fmt: skip
        scaled = {part: getattr(self, part) / area for part in self._parts()}
        return dataclasses.replace(self, unit="1/cm⁻¹ (unit area)", **scaled)


@dataclass(frozen=True, eq=False)
class RamanSpectrum(Spectrum):
    """Raman spectrum: ``isotropic`` (from ᾱ = tr α / 3) and ``anisotropic`` (from β = α − ᾱ I, as γ² = (3/2) β:β)
    ``[F]``, both in ``unit``, scaled so that a harmonic mode integrates to a'² and γ'² (Å⁴/amu) with
    a' = ∂ᾱ/∂Q and γ'² the anisotropy invariant of ∂α/∂Q. ``intensity`` is the activity density
    ``45 isotropic + 7 anisotropic``, whose band integral is the harmonic Raman activity S = 45 a'² + 7 γ'².
    For 90° scattering of linearly polarised light, :attr:`parallel` (VV, ``45 iso + 4 aniso``) and
    :attr:`perpendicular` (VH, ``3 aniso``) add up to ``intensity``; their ratio is the depolarisation ratio
    ρ = 3γ²/(45a² + 4γ²) (0 for totally symmetric modes, 3/4 for the others)."""

    isotropic: np.ndarray = None  # type: ignore[assignment]
    anisotropic: np.ndarray = None  # type: ignore[assignment]

    @property
    def parallel(self) -> np.ndarray:
        """VV (polarised) activity density 45 a² + 4 γ² ``[F]`` in ``unit``."""
        return 45.0 * self.isotropic + 4.0 * self.anisotropic

    @property
    def perpendicular(self) -> np.ndarray:
        """VH (depolarised) activity density 3 γ² ``[F]`` in ``unit``."""
        return 3.0 * self.anisotropic

    def _parts(self) -> tuple[str, ...]:
        return ("intensity", "isotropic", "anisotropic")


def quantum_correction_factor(name: str | None, wavenumber_cm1: ArrayLike, temperature_K: float) -> np.ndarray:
    """The factor Q(x), x = βħω, by which a quantum correlation spectrum exceeds the classical one.

    ``"harmonic"``: x / (1 − e^{−x}) (exact for a harmonic oscillator with a linear observable);
    ``"standard"``: 1 (the classical spectrum taken as the quantum one); ``"schofield"``: e^{x/2};
    ``"classical"`` or None: the classical limit, which in the absorption formula equals ``"harmonic"``
    (see :func:`ir_spectrum`), so this returns the harmonic factor too.
    """
    x = HBAR_EV_FS * 2.0 * np.pi * C_CM_PER_FS * np.asarray(wavenumber_cm1, float) / (ase_units.kB * temperature_K)
    name = _correction(name)
    if name == "standard":
        return np.ones_like(x)
    if name == "schofield":
        return np.exp(x / 2.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(x > 1e-12, x / -np.expm1(-np.maximum(x, 1e-300)), 1.0)


def _correction(name: str | None) -> str:
    name = "classical" if name is None else name
    if name not in QUANTUM_CORRECTIONS:
        raise DataError(f"unknown quantum_correction {name!r}; use one of {list(QUANTUM_CORRECTIONS)} or None")
    return "harmonic" if name == "classical" else name


def _series(values: ArrayLike, name: str, shape: str, tail: tuple[int, ...] | None, ndim: int) -> np.ndarray:
    """``values`` as a finite float64 array ``[T, R, ...]`` (a replica axis of 1 added to ``[T, ...]`` input)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim not in (ndim, ndim + 1) or (tail is not None and array.shape[array.ndim - len(tail) :] != tail):
        raise DataError(f"{name} must have shape {shape}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = np.flatnonzero(~np.all(np.isfinite(array.reshape(array.shape[0], -1)), axis=1))
        raise DataError(f"{name} contains NaN or inf in {bad.size} frames (first: frame {bad[0]}); "
                        "cut the trajectory before them or repair those frames")  # fmt: skip
    if array.shape[0] < _MIN_FRAMES:
        raise DataError(f"{name} has {array.shape[0]} frames, at least {_MIN_FRAMES} are needed; run or store more")
    return array if array.ndim == ndim + 1 else array[:, None]


def _positive(value: float | None, name: str) -> float:
    if value is None or isinstance(value, bool) or not np.isfinite(value) or value <= 0:
        raise DataError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class _Plan:
    """How a series of ``n_frames`` frames is cut and tapered: ``length`` frames per segment, ``starts``."""

    dt_fs: float
    length: int
    starts: tuple[int, ...]
    n_fft: int
    window: str | None
    max_frequency_cm1: float | None

    @property
    def resolution_cm1(self) -> float:
        return 1.0 / (self.length * self.dt_fs * C_CM_PER_FS)

    @property
    def nyquist_cm1(self) -> float:
        return 1.0 / (2.0 * self.dt_fs * C_CM_PER_FS)


def _plan(n_frames, dt_fs, window, max_frequency_cm1, resolution_cm1, max_lag_fs, pad_factor) -> _Plan:
    """Check the settings (before any FFT) and warn where the frame spacing or the run length falls short."""
    dt = _positive(dt_fs, "dt_fs")
    if window is not None and window not in WINDOWS:
        raise DataError(f"unknown window {window!r}; use one of {sorted(WINDOWS)} or None (no window)")
    if isinstance(pad_factor, bool) or int(pad_factor) != pad_factor or pad_factor < 1:
        raise DataError(f"pad_factor must be a positive integer, got {pad_factor!r}")
    if resolution_cm1 is not None and max_lag_fs is not None:
        raise DataError("give either resolution_cm1 or max_lag_fs (the Welch segment length), not both")
    nyquist = 1.0 / (2.0 * dt * C_CM_PER_FS)
    if max_frequency_cm1 is not None and _positive(max_frequency_cm1, "max_frequency_cm1") > nyquist:
        largest = 1.0 / (2.0 * max_frequency_cm1 * C_CM_PER_FS)
        warnings.warn(
            f"frames {dt:g} fs apart resolve wavenumbers up to the Nyquist limit {nyquist:.0f} cm⁻¹, below the "
            f"requested {max_frequency_cm1:g} cm⁻¹: bands above it (O–H/N–H/C–H stretches near 2800–3700 cm⁻¹) are "
            f"lost or aliased to lower wavenumbers; store frames at most {largest:.2g} fs apart (stride × timestep)",
            SpectrumWarning,
            stacklevel=3,
        )
    length = n_frames
    if resolution_cm1 is not None or max_lag_fs is not None:
        lag_fs = max_lag_fs if resolution_cm1 is None else 1.0 / (_positive(resolution_cm1, "resolution_cm1")
                                                                  * C_CM_PER_FS)  # fmt: skip
        wanted = max(int(math.ceil(_positive(lag_fs, "max_lag_fs") / dt - 1e-9)), _MIN_FRAMES)
        if wanted > n_frames:
            warnings.warn(
                f"the run is too short for the requested resolution: {n_frames} frames × {dt:g} fs give "
                f"{1 / (n_frames * dt * C_CM_PER_FS):.3g} cm⁻¹, {1 / (wanted * dt * C_CM_PER_FS):.3g} cm⁻¹ needs "
                f"{wanted * dt:g} fs; the whole run is used as one segment (run longer for finer resolution)",
                SpectrumWarning,
                stacklevel=3,
            )
        length = min(wanted, n_frames)
    n_segments = 1 + math.ceil((n_frames - length) / max(length // 2, 1))  # overlap ≥ 50 %, the last frame used
    starts = tuple(int(s) for s in np.round(np.linspace(0, n_frames - length, n_segments)))
    return _Plan(dt, length, starts, length * int(pad_factor), window, max_frequency_cm1)


def _correlation_spectrum(series: np.ndarray, weights: np.ndarray, plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
    """Wavenumbers ``[F]`` (cm⁻¹) and ``Σ_m weights[m] C_m(ω)`` ``[F]`` for ``series [T, R, M]``: the one-sided
    classical correlation spectra (units of x² · fs) averaged over replicas and segments, cropped to the maximum."""
    taper = np.ones(plan.length) if plan.window is None else WINDOWS[plan.window](plan.length)
    norm = plan.dt_fs / np.sum(taper**2)
    total = np.zeros(plan.n_fft // 2 + 1)
    for replica in np.moveaxis(series, 1, 0):  # [T, M], one replica at a time to bound memory
        centred = replica - replica.mean(axis=0)
        for start in plan.starts:
            segment = centred[start : start + plan.length] * taper[:, None]
            total += (np.abs(np.fft.rfft(segment, n=plan.n_fft, axis=0)) ** 2) @ weights
    wavenumber = np.fft.rfftfreq(plan.n_fft, d=plan.dt_fs) / C_CM_PER_FS
    spectrum = norm * total / (series.shape[1] * len(plan.starts))
    keep = slice(None) if plan.max_frequency_cm1 is None else wavenumber <= plan.max_frequency_cm1 + 1e-9
    return wavenumber[keep], spectrum[keep]


def _absorption_factor(wavenumber_cm1, temperature_K, quantum_correction) -> np.ndarray:
    """β-free absorption prefactor F(ω) in 1/(eV·fs²) with the quantum correction Q: ``(ω/ħ)(1 − e^{−x}) Q(x)``,
    which is β ω² for the harmonic (and classical) correction."""
    omega = 2.0 * np.pi * C_CM_PER_FS * wavenumber_cm1
    beta = 1.0 / (ase_units.kB * temperature_K)
    name = _correction(quantum_correction)
    if name == "harmonic":
        return beta * omega**2
    x = HBAR_EV_FS * omega * beta
    return omega * -np.expm1(-x) * quantum_correction_factor(name, wavenumber_cm1, temperature_K) / HBAR_EV_FS


def _temperature(temperature_K, quantum_correction) -> float | None:
    name = _correction(quantum_correction)
    if temperature_K is None:
        if name != "harmonic":
            raise DataError(f"quantum_correction={quantum_correction!r} needs temperature_K (K): its line shape "
                            "depends on the temperature")  # fmt: skip
        return None
    return _positive(temperature_K, "temperature_K")


def _build(cls, plan, kind, unit, wavenumber, parts, n_replicas, correction, temperature) -> Spectrum:
    spectrum = cls(frequency_cm1=wavenumber, unit=unit, kind=kind, dt_fs=plan.dt_fs,
                   resolution_cm1=plan.resolution_cm1, nyquist_cm1=plan.nyquist_cm1, window=plan.window,
                   quantum_correction=correction, temperature_K=temperature, n_replicas=n_replicas,
                   n_segments=len(plan.starts), **parts)  # fmt: skip
    return spectrum.normalized() if temperature is None and kind != "power" else spectrum


def power_spectrum(
    velocities: ArrayLike,
    dt_fs: float,
    masses: ArrayLike | None = None,
    temperature_K: float | None = None,
    *,
    window: str | None = "hann",
    max_frequency_cm1: float | None = _MAX_FREQUENCY_CM1,
    resolution_cm1: float | None = None,
    max_lag_fs: float | None = None,
    pad_factor: int = 1,
) -> Spectrum:
    """Power spectrum (vibrational density of states) from velocities ``[T, N, 3]`` or ``[T, R, N, 3]`` (Å/fs).

    With the one-sided velocity correlation spectra C_i(ω) (Å²/fs) of every atom i (summed over x, y, z; averaged
    over the R replicas), the intensity per cm⁻¹ is

    - with ``masses`` ``[N]`` (amu) and ``temperature_K``: ``g(ν̃) = 2c β Σ_i m_i C_i(ω)``, dimensionless per cm⁻¹
      ("degrees of freedom per cm⁻¹"): every classical harmonic mode integrates to 1, so the whole spectrum
      integrates to the number of kinetic degrees of freedom at equipartition;
    - with ``masses`` only: ``2c Σ_i m_i C_i(ω)`` in eV per cm⁻¹, integrating to Σ_i m_i ⟨|v_i|²⟩ = 2 ⟨E_kin⟩;
    - without masses: ``2c Σ_i C_i(ω)`` in (Å/fs)² per cm⁻¹, integrating to Σ_i ⟨|v_i|²⟩.

    c is in cm/fs and ω = 2π c ν̃. No quantum correction is applied: this counts modes (a density of states), it is
    not an absorption. For ring-polymer MD pass centroid velocities. ``window``, ``max_frequency_cm1``,
    ``resolution_cm1``/``max_lag_fs`` and ``pad_factor`` are as in :func:`ir_spectrum`.
    """
    v = _series(velocities, "velocities", "[T, N, 3] or [T, R, N, 3]", (3,), 3)
    n_frames, n_replicas, n_atoms = v.shape[:3]
    unit = "(Å/fs)²/cm⁻¹"
    weights = np.ones(3 * n_atoms)
    factor = 2.0 * C_CM_PER_FS
    if masses is not None:
        m = np.asarray(masses, dtype=np.float64)
        if m.shape != (n_atoms,) or not np.all(np.isfinite(m)) or np.any(m <= 0):
            raise DataError(f"masses must be {n_atoms} positive numbers (amu), one per atom, got shape {m.shape}")
        weights, factor, unit = np.repeat(m, 3), factor * _EV_PER_AMU_ANG2_FS2, "eV/cm⁻¹"
        if temperature_K is not None:
            factor, unit = factor / (ase_units.kB * _positive(temperature_K, "temperature_K")), "1/cm⁻¹ (modes)"
    elif temperature_K is not None:
        raise DataError("temperature_K needs masses: the power spectrum in modes per cm⁻¹ is β Σ m C_v")
    plan = _plan(n_frames, dt_fs, window, max_frequency_cm1, resolution_cm1, max_lag_fs, pad_factor)
    wavenumber, c = _correlation_spectrum(v.reshape(n_frames, n_replicas, 3 * n_atoms), weights, plan)
    return _build(Spectrum, plan, "power", unit, wavenumber, {"intensity": factor * c}, n_replicas, None,
                  None if temperature_K is None else float(temperature_K))  # fmt: skip


def ir_spectrum(
    dipoles: ArrayLike,
    dt_fs: float,
    temperature_K: float | None = None,
    *,
    quantum_correction: str | None = "harmonic",
    window: str | None = "hann",
    max_frequency_cm1: float | None = _MAX_FREQUENCY_CM1,
    resolution_cm1: float | None = None,
    max_lag_fs: float | None = None,
    pad_factor: int = 1,
) -> Spectrum:
    """IR absorption in km/mol per cm⁻¹ from the total dipole moment ``[T, 3]`` or ``[T, R, 3]`` (e·Å).

    With C_μ(ω) the one-sided classical spectrum of ⟨μ(0)·μ(t)⟩ (e²·Å²·fs; mean removed, replicas averaged), the
    molar napierian absorption coefficient density is

        A(ν̃) = 2π N_A / (3 c · 4πε₀) · F(ω) · C_μ(ω),   F(ω) = (ω/ħ) (1 − e^{−βħω}) Q(βħω),   ω = 2π c ν̃,

    the quantum absorption (1/6cε₀)·ω(1 − e^{−βħω})/ħ times the quantum correlation spectrum, which is estimated as
    Q × the classical one. For the default ``quantum_correction="harmonic"`` (Q = x/(1 − e^{−x})) F = β ω², so
    A = 2π N_A β ω² C_μ / (3c·4πε₀) = (2πN_A/(3c·4πε₀)) · β |FFT μ̇|² (the μ̇ autocorrelation, computed spectrally
    without finite differences). For a classical harmonic mode with μ = μ₀ + (∂μ/∂Q) Q the band then integrates to
    the harmonic intensity N_A π/(3c²·4πε₀) |∂μ/∂Q|² (km/mol) at any temperature. ``"classical"``/None is the
    classical absorption β ω² C_μ, identical to ``"harmonic"``; ``"standard"`` (Q = 1) multiplies A by
    (1 − e^{−x})/x (bands at βħω ≫ 1, e.g. 3000 cm⁻¹ at 300 K, x ≈ 14, are 14× too weak); ``"schofield"``
    (Q = e^{x/2}) multiplies it by 2 sinh(x/2)/x (too strong at high wavenumber). 2πN_A/(3c·4πε₀) is
    :data:`IR_KM_MOL_FACTOR` (6.058 km/mol/cm⁻¹ per e²Å²/(eV·fs)).

    Without ``temperature_K`` (only for "harmonic"/"classical", whose line shape does not depend on it) the spectrum
    is the same line shape normalised to unit area over cm⁻¹.

    ``window`` ("hann", "hamming", "blackman" or None) tapers each series (or segment) after its mean is removed.
    ``resolution_cm1`` (or ``max_lag_fs``) caps the correlation length: the run is cut into 50 %-overlapping segments
    of 1/(c · resolution_cm1) fs (Welch), each tapered, and their spectra averaged — less noise, coarser lines.
    Without it one segment spans the run (resolution 1/(c·T·dt)). ``max_frequency_cm1`` (default 4000) crops the grid
    and warns (:class:`SpectrumWarning`) when the Nyquist wavenumber 1/(2c·dt) lies below it; None keeps the grid up
    to Nyquist. ``pad_factor`` zero-pads each segment (a finer grid, not sharper lines). For TRPMD pass bead-averaged
    dipoles (the centroid estimator, as SchNetPack does).
    """
    mu = _series(dipoles, "dipoles", "[T, 3] or [T, R, 3]", (3,), 2)
    temperature = _temperature(temperature_K, quantum_correction)
    plan = _plan(mu.shape[0], dt_fs, window, max_frequency_cm1, resolution_cm1, max_lag_fs, pad_factor)
    wavenumber, c = _correlation_spectrum(mu, np.ones(3), plan)
    prefactor = _absorption_factor(wavenumber, temperature or 300.0, quantum_correction)  # no T: only the shape
    parts = {"intensity": IR_KM_MOL_FACTOR * prefactor * c}
    name = quantum_correction or "classical"
    return _build(Spectrum, plan, "ir", "km/mol/cm⁻¹", wavenumber, parts, mu.shape[1], name, temperature)


def raman_spectrum(
    polarizability: ArrayLike,
    dt_fs: float,
    temperature_K: float | None = None,
    *,
    quantum_correction: str | None = "harmonic",
    window: str | None = "hann",
    max_frequency_cm1: float | None = _MAX_FREQUENCY_CM1,
    resolution_cm1: float | None = None,
    max_lag_fs: float | None = None,
    pad_factor: int = 1,
) -> RamanSpectrum:
    """Isotropic and anisotropic Raman spectra in Å⁴/amu per cm⁻¹ from the polarizability ``[T, 3, 3]`` or
    ``[T, R, 3, 3]`` (Å³), symmetrised ((α + αᵀ)/2, non-resonant Raman).

    With ᾱ = tr α / 3, β = α − ᾱ I (traceless), C_iso(ω) the one-sided classical spectrum of ⟨ᾱ(0) ᾱ(t)⟩ and
    C_aniso(ω) that of (3/2)⟨β(0):β(t)⟩ (both Å⁶·fs),

        iso(ν̃) = 2c F(ω) C_iso(ω) · u,   aniso(ν̃) = 2c F(ω) C_aniso(ω) · u,   u = 1 amu·Å²/fs² in eV,

    with F(ω) = (ω/ħ)(1 − e^{−βħω}) Q(βħω) as in :func:`ir_spectrum` (β ω² for "harmonic" and "classical").
    For a classical harmonic mode with α = α₀ + (∂α/∂Q) Q, iso integrates to a'² = (∂ᾱ/∂Q)² and aniso to
    γ'² = (3/2) β':β' (Å⁴/amu), so ``intensity`` = 45 iso + 7 aniso integrates to the harmonic Raman activity
    S = 45 a'² + 7 γ'² — at any temperature. The activity is a molecular property; a measured Stokes intensity
    is further ∝ (ν̃_L − ν̃)⁴ / (ν̃ (1 − e^{−hcν̃/kT})) · S (not applied). The parts combine to
    :attr:`RamanSpectrum.parallel` (VV, 45 a² + 4 γ²) and :attr:`RamanSpectrum.perpendicular` (VH, 3 γ²) for
    linearly polarised light at 90°. Options and the TRPMD estimator (bead-averaged α) are as in :func:`ir_spectrum`.
    """
    alpha = _series(polarizability, "polarizability", "[T, 3, 3] or [T, R, 3, 3]", (3, 3), 3)
    temperature = _temperature(temperature_K, quantum_correction)
    plan = _plan(alpha.shape[0], dt_fs, window, max_frequency_cm1, resolution_cm1, max_lag_fs, pad_factor)
    alpha = 0.5 * (alpha + np.swapaxes(alpha, -1, -2))
    mean = np.trace(alpha, axis1=-2, axis2=-1) / 3.0
    traceless = (alpha - mean[..., None, None] * np.eye(3)).reshape(*alpha.shape[:2], 9)
    wavenumber, c_iso = _correlation_spectrum(mean[..., None], np.ones(1), plan)
    _, c_aniso = _correlation_spectrum(traceless, np.full(9, 1.5), plan)
    prefactor = _DENSITY_FACTOR * _absorption_factor(wavenumber, temperature or 300.0, quantum_correction)  # see IR
    iso, aniso = prefactor * c_iso, prefactor * c_aniso
    parts = {"intensity": 45.0 * iso + 7.0 * aniso, "isotropic": iso, "anisotropic": aniso}
    return _build(RamanSpectrum, plan, "raman", "Å⁴/amu/cm⁻¹", wavenumber, parts, alpha.shape[1],
                  quantum_correction or "classical", temperature)  # fmt: skip


def vibrational_spectrum(
    velocities: ArrayLike,
    dt_fs: float,
    masses: ArrayLike | None = None,
    window: str | None = "hann",
    pad_factor: int = 1,
    **options,
) -> Spectrum:
    """The :func:`power_spectrum` line shape normalised to unit area over cm⁻¹ (``sum(intensity) · Δν̃ = 1``), on
    the whole grid up to Nyquist unless ``max_frequency_cm1`` is passed; velocities ``[T, N, 3]`` or
    ``[T, R, N, 3]`` (Å/fs), ``masses`` ``[N]`` (amu) for the kinetic-energy weighted VDOS. Other keyword
    ``options`` go to :func:`power_spectrum`."""
    options.setdefault("max_frequency_cm1", None)
    return power_spectrum(velocities, dt_fs, masses, window=window, pad_factor=pad_factor, **options).normalized()
