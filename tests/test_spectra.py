"""MD spectra in absolute units (numpy only): harmonic oscillators with linear dipoles/polarizabilities give bands at
their wavenumbers whose integrals equal the harmonic IR intensity (km/mol) and Raman activity (Å⁴/amu); quantum
corrections, replicas, windows, stride and resolution warnings, errors, trajectories and the CLI."""

import warnings

import numpy as np
import pytest
import scipy.constants as si

from jaxatom.spectra import (
    RamanSpectrum,
    SpectrumWarning,
    ir_spectrum,
    power_spectrum,
    quantum_correction_factor,
    raman_spectrum,
    spectra_from_trajectory,
    write_spectrum_csv,
)

C_CM_PER_FS = si.c * 100 * 1e-15
AMU = si.physical_constants["atomic mass constant"][0]


def _kt_internal(temperature_K):
    """k_B T in amu·Å²/fs² (from SI, independently of the module's ASE constants)."""
    return si.k * temperature_K / (AMU * 1e-20 / 1e-30)


def _thermal_modes(wavenumber_cm1, temperature_K, n_replicas, n_frames, dt_fs, seed=0):
    """Mass-weighted normal coordinates Q [T, R] (amu^½·Å) of a classical harmonic mode in a canonical ensemble
    (CODATA 2018 via scipy; the module uses ASE's CODATA 2014, a 3e-6 relative difference):
    random phases, squared amplitudes exponentially distributed (stratified, scaled to the exact mean 2 kT/ω²)."""
    rng = np.random.default_rng(seed)
    omega = 2 * np.pi * C_CM_PER_FS * wavenumber_cm1
    energy = -np.log1p(-(np.arange(n_replicas) + 0.5) / n_replicas)
    amplitude = np.sqrt(2 * _kt_internal(temperature_K) / omega**2 * energy / energy.mean())
    t = np.arange(n_frames)[:, None] * dt_fs
    return amplitude * np.cos(omega * t + rng.uniform(0, 2 * np.pi, n_replicas)), omega


def _harmonic_ir_km_mol(dmu_dq):
    """A = N_A π / (3 c² 4πε₀) |∂μ/∂Q|², |∂μ/∂Q| in e/amu^½, in km/mol (the harmonic-analysis formula)."""
    squared = np.sum(np.square(dmu_dq)) * si.e**2 / AMU
    return si.N_A * np.pi / (3 * si.c**2 * 4 * np.pi * si.epsilon_0) * squared / 1000.0


def _peak(spectrum, part="intensity", low=0.0, high=np.inf):
    """Wavenumber of the highest point of ``part`` between ``low`` and ``high`` (cm⁻¹)."""
    inside = (spectrum.frequency_cm1 >= low) & (spectrum.frequency_cm1 <= high)
    return spectrum.frequency_cm1[inside][np.argmax(getattr(spectrum, part)[inside])]


@pytest.mark.parametrize("temperature_K", [100.0, 1000.0])
def test_ir_of_a_harmonic_mode_integrates_to_the_harmonic_intensity_in_km_per_mol(temperature_K):
    dmu_dq = np.array([0.12, -0.05, 0.03])  # e/amu^½
    q, _ = _thermal_modes(1500.0, temperature_K, n_replicas=64, n_frames=8192, dt_fs=0.5)
    dipoles = np.array([0.3, 1.1, -0.4]) + q[..., None] * dmu_dq  # [T, R, 3] with a permanent dipole
    spectrum = ir_spectrum(dipoles, 0.5, temperature_K)
    assert spectrum.unit == "km/mol/cm⁻¹" and spectrum.n_replicas == 64 and spectrum.quantum_correction == "harmonic"
    assert abs(_peak(spectrum) - 1500.0) <= spectrum.resolution_cm1
    expected = _harmonic_ir_km_mol(dmu_dq)
    assert spectrum.integral(1400.0, 1600.0) == pytest.approx(expected, rel=0.01)
    assert spectrum.integral() == pytest.approx(expected, rel=0.01)  # nothing outside the band
    assert spectrum.resolution_cm1 == pytest.approx(1 / (8192 * 0.5 * C_CM_PER_FS))
    assert spectrum.nyquist_cm1 == pytest.approx(1 / (2 * 0.5 * C_CM_PER_FS))
    assert spectrum.frequency_cm1[-1] <= 4000.0 and spectrum.window == "hann"


def test_raman_isotropic_and_anisotropic_bands_integrate_to_the_harmonic_activity():
    temperature_K, n_frames, dt_fs = 300.0, 8192, 0.5
    q_iso, _ = _thermal_modes(1000.0, temperature_K, 48, n_frames, dt_fs, seed=1)
    q_aniso, _ = _thermal_modes(2500.0, temperature_K, 48, n_frames, dt_fs, seed=2)
    a_prime = 0.8  # ∂ᾱ/∂Q in Å²/amu^½ (a pure breathing mode)
    b_prime = 0.5 * np.array([[1.0, 0.5, 0.0], [0.5, -1.0, 0.0], [0.0, 0.0, 0.0]])  # traceless ∂α/∂Q
    (xx, xy, xz), (_, yy, yz), (_, _, zz) = b_prime  # the standard anisotropy invariant of ∂α/∂Q
    gamma_sq = 0.5 * ((xx - yy) ** 2 + (yy - zz) ** 2 + (zz - xx) ** 2 + 6 * (xy**2 + yz**2 + xz**2))
    alpha0 = np.diag([8.0, 9.0, 10.0])
    alpha = alpha0 + q_iso[..., None, None] * a_prime * np.eye(3) + q_aniso[..., None, None] * b_prime
    spectrum = raman_spectrum(alpha, dt_fs, temperature_K)
    assert isinstance(spectrum, RamanSpectrum) and spectrum.unit == "Å⁴/amu/cm⁻¹"
    assert abs(_peak(spectrum, "isotropic") - 1000.0) <= spectrum.resolution_cm1
    assert abs(_peak(spectrum, "anisotropic") - 2500.0) <= spectrum.resolution_cm1
    assert spectrum.integral(900, 1100, "isotropic") == pytest.approx(a_prime**2, rel=0.01)
    assert spectrum.integral(2400, 2600, "anisotropic") == pytest.approx(gamma_sq, rel=0.01)
    assert spectrum.integral(900, 1100, "anisotropic") < 1e-6 * gamma_sq  # no cross-talk between the parts
    assert spectrum.integral(2400, 2600, "isotropic") < 1e-6 * a_prime**2
    assert spectrum.integral() == pytest.approx(45 * a_prime**2 + 7 * gamma_sq, rel=0.01)  # activity S
    np.testing.assert_allclose(spectrum.parallel + spectrum.perpendicular, spectrum.intensity, rtol=1e-12)
    band = np.abs(spectrum.frequency_cm1 - 2500) < 20  # a non-totally-symmetric mode is depolarised: ρ = 3/4
    np.testing.assert_allclose(spectrum.perpendicular[band] / spectrum.parallel[band], 0.75, rtol=1e-6)


def test_power_spectrum_counts_one_mode_per_harmonic_degree_of_freedom():
    temperature_K, masses = 300.0, np.array([1.008, 15.999])
    q1, w1 = _thermal_modes(3600.0, temperature_K, 32, 4096, 0.25, seed=3)
    q2, w2 = _thermal_modes(800.0, temperature_K, 32, 4096, 0.25, seed=4)
    velocities = np.zeros((4096, 32, 2, 3))  # Q̇ = dQ/dt, v = Q̇ / sqrt(m)
    velocities[..., 0, 0] = np.gradient(q1, 0.25, axis=0) / np.sqrt(masses[0])
    velocities[..., 1, 2] = np.gradient(q2, 0.25, axis=0) / np.sqrt(masses[1])
    spectrum = power_spectrum(velocities, 0.25, masses, temperature_K)
    assert spectrum.unit == "1/cm⁻¹ (modes)" and spectrum.quantum_correction is None
    assert spectrum.integral(3400, 3800) == pytest.approx(1.0, rel=0.02)  # np.gradient damps by sinc(ω dt) < 1 %
    assert spectrum.integral(700, 900) == pytest.approx(1.0, rel=0.01)
    assert abs(_peak(spectrum, low=2000) - 3600.0) <= spectrum.resolution_cm1
    assert abs(_peak(spectrum, high=2000) - 800.0) <= spectrum.resolution_cm1
    in_ev = power_spectrum(velocities, 0.25, masses)
    assert in_ev.unit == "eV/cm⁻¹"
    assert in_ev.integral() == pytest.approx(spectrum.integral() * si.k * temperature_K / si.e, rel=1e-5)
    assert power_spectrum(velocities, 0.25).unit == "(Å/fs)²/cm⁻¹"


def test_quantum_corrections_differ_as_documented():
    temperature_K = 300.0
    q, _ = _thermal_modes(2000.0, temperature_K, 8, 2048, 0.5)
    dipoles = q[..., None] * np.array([0.1, 0.0, 0.0])
    spectra = {name: ir_spectrum(dipoles, 0.5, temperature_K, quantum_correction=name)
               for name in ("harmonic", "standard", "schofield", "classical", None)}  # fmt: skip
    nu = spectra["harmonic"].frequency_cm1[1:]
    x = si.hbar * 2 * np.pi * si.c * 100 * nu / (si.k * temperature_K)
    harmonic = spectra["harmonic"].intensity[1:]
    np.testing.assert_allclose(spectra["schofield"].intensity[1:], harmonic * 2 * np.sinh(x / 2) / x, rtol=1e-5)
    np.testing.assert_allclose(spectra["standard"].intensity[1:], harmonic * -np.expm1(-x) / x, rtol=1e-5)
    np.testing.assert_array_equal(spectra["classical"].intensity[1:], harmonic)
    np.testing.assert_array_equal(spectra[None].intensity[1:], harmonic)
    assert spectra[None].quantum_correction == "classical"
    at_2000 = np.interp(2000.0, nu, x)  # ≈ 9.6 at 300 K: the standard correction loses a factor ~10
    assert spectra["standard"].integral(1900, 2100) / spectra["harmonic"].integral(1900, 2100) == pytest.approx(
        -np.expm1(-at_2000) / at_2000, rel=0.02
    )
    factor = quantum_correction_factor("harmonic", [1e-9, 2000.0], temperature_K)
    assert factor[0] == pytest.approx(1.0) and factor[1] == pytest.approx(at_2000 / -np.expm1(-at_2000), rel=1e-3)
    assert quantum_correction_factor("schofield", 2000.0, temperature_K) == pytest.approx(np.exp(at_2000 / 2), 1e-3)


def test_without_temperature_the_harmonic_shape_is_normalised_and_other_corrections_refuse():
    q, _ = _thermal_modes(1200.0, 300.0, 4, 1024, 0.5)
    dipoles = q[..., None] * np.array([0.1, 0.2, 0.0])
    shape = ir_spectrum(dipoles, 0.5)
    assert shape.unit == "1/cm⁻¹ (unit area)" and shape.integral() == pytest.approx(1.0)
    np.testing.assert_allclose(shape.intensity, ir_spectrum(dipoles, 0.5, 300.0).normalized().intensity)
    with pytest.raises(ValueError, match="needs temperature_K"):
        ir_spectrum(dipoles, 0.5, quantum_correction="schofield")


def test_replicas_are_averaged():
    rng = np.random.default_rng(5)
    dipoles = rng.normal(size=(512, 3, 3))
    averaged = ir_spectrum(dipoles, 1.0, 300.0, max_frequency_cm1=None)
    singles = [ir_spectrum(dipoles[:, r], 1.0, 300.0, max_frequency_cm1=None).intensity for r in range(3)]
    assert averaged.n_replicas == 3
    np.testing.assert_allclose(averaged.intensity, np.mean(singles, axis=0), rtol=1e-12)
    np.testing.assert_allclose(ir_spectrum(dipoles[:, :1], 1.0, 300.0).intensity,
                               ir_spectrum(dipoles[:, 0], 1.0, 300.0).intensity)  # fmt: skip


def test_welch_segments_set_the_resolution_and_keep_the_integral():
    q, _ = _thermal_modes(1500.0, 300.0, 16, 8192, 0.5, seed=6)
    dipoles = q[..., None] * np.array([0.1, 0.0, 0.0])
    full = ir_spectrum(dipoles, 0.5, 300.0)
    coarse = ir_spectrum(dipoles, 0.5, 300.0, resolution_cm1=20.0)
    assert coarse.resolution_cm1 <= 20.0 and coarse.resolution_cm1 > 15.0 and coarse.n_segments == 4
    assert coarse.integral(1300, 1700) == pytest.approx(full.integral(1300, 1700), rel=0.01)
    by_lag = ir_spectrum(dipoles, 0.5, 300.0, max_lag_fs=1 / (20.0 * C_CM_PER_FS))
    np.testing.assert_allclose(by_lag.intensity, coarse.intensity)


def test_stride_and_resolution_warnings():
    rng = np.random.default_rng(7)
    with pytest.warns(SpectrumWarning, match=r"Nyquist limit 3336 cm⁻¹.*4000"):
        spectrum = ir_spectrum(rng.normal(size=(200, 3)), 5.0, 300.0, max_frequency_cm1=4000.0)
    assert spectrum.nyquist_cm1 == pytest.approx(3335.6, abs=0.1) and spectrum.frequency_cm1[-1] <= 3336
    with pytest.warns(SpectrumWarning, match="too short for the requested resolution"):
        spectrum = ir_spectrum(rng.normal(size=(200, 3)), 0.5, 300.0, resolution_cm1=1.0)
    assert spectrum.n_segments == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ir_spectrum(rng.normal(size=(200, 3)), 1.0, 300.0, max_frequency_cm1=4000.0)  # 1 fs: Nyquist 16678 cm⁻¹


def test_bad_input_is_refused_before_any_work():
    good = np.zeros((16, 3)) + np.arange(16)[:, None]
    nan = good.copy()
    nan[7, 1] = np.nan
    cases = [
        (lambda: ir_spectrum(np.zeros((16, 2)), 1.0, 300.0), r"dipoles must have shape \[T, 3\] or \[T, R, 3\]"),
        (lambda: ir_spectrum(nan, 1.0, 300.0), "NaN or inf in 1 frames \\(first: frame 7\\)"),
        (lambda: ir_spectrum(good[:3], 1.0, 300.0), "at least 4"),
        (lambda: ir_spectrum(good, 1.0, 300.0, window="kaiser"), "unknown window"),
        (lambda: ir_spectrum(good, 1.0, 300.0, quantum_correction="kubo"), "unknown quantum_correction"),
        (lambda: ir_spectrum(good, 1.0, -5.0), "temperature_K must be a positive"),
        (lambda: ir_spectrum(good, 0.0, 300.0), "dt_fs must be a positive"),
        (lambda: ir_spectrum(good, 1.0, 300.0, resolution_cm1=5, max_lag_fs=10), "not both"),
        (lambda: raman_spectrum(np.zeros((16, 3, 2)), 1.0, 300.0), r"\[T, 3, 3\] or \[T, R, 3, 3\]"),
        (lambda: power_spectrum(np.zeros((16, 2, 2)), 1.0), r"\[T, N, 3\] or \[T, R, N, 3\]"),
        (lambda: power_spectrum(np.zeros((16, 2, 3)), 1.0, masses=[1.0]), "one per atom"),
        (lambda: power_spectrum(np.zeros((16, 2, 3)), 1.0, temperature_K=300.0), "needs masses"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def _write_trajectory(path, dipole=True, polarizability=True, dt_fs=0.5, n_frames=2048, n_replicas=4):
    from jaxatom.md.trajectory import TrajectoryWriter

    masses = np.array([15.999, 1.008])
    q, _ = _thermal_modes(1700.0, 300.0, n_replicas, n_frames, dt_fs, seed=8)
    frames = {"time": np.arange(n_frames) * dt_fs, "step": np.arange(n_frames) * 2}
    frames["velocities"] = np.zeros((n_frames, n_replicas, 2, 3))
    frames["velocities"][..., 1, 0] = np.gradient(q, dt_fs, axis=0) / np.sqrt(masses[1])
    if dipole:
        frames["dipole_moment"] = 0.5 + q[..., None] * np.array([0.1, 0.0, 0.0])
    if polarizability:
        frames["polarizability"] = 5.0 * np.eye(3) + q[..., None, None] * 0.3 * np.eye(3)
    shapes = {name: (value.shape[1:], value.dtype) for name, value in frames.items()}
    constants = {"species": np.array([8, 1]), "masses": masses, "cell": np.zeros((3, 3)), "pbc": np.zeros(3, bool)}
    attributes = {"timestep_fs": 0.25, "stride": 2, "temperature_K": 300.0, "ensemble": "langevin", "n_beads": 1}
    writer = TrajectoryWriter.create(path, constants, attributes, shapes)
    writer.append(frames)
    writer.close()
    return path


def test_spectra_from_a_trajectory_file(tmp_path):
    path = _write_trajectory(tmp_path / "run.h5")
    spectra = spectra_from_trajectory(path)
    assert list(spectra) == ["ir", "raman", "power"]
    assert spectra["ir"].temperature_K == 300.0 and spectra["ir"].n_replicas == 4
    assert abs(_peak(spectra["ir"]) - 1700.0) <= spectra["ir"].resolution_cm1
    assert spectra["ir"].integral(1500, 1900) == pytest.approx(_harmonic_ir_km_mol([0.1, 0, 0]), rel=0.03)
    assert spectra["raman"].integral(1500, 1900, "isotropic") == pytest.approx(0.09, rel=0.03)
    assert spectra["power"].integral(1500, 1900) == pytest.approx(1.0, rel=0.03)
    only = spectra_from_trajectory(path, ir=True, raman=False, power=False, skip_fs=100.0)
    assert list(only) == ["ir"]
    bare = _write_trajectory(tmp_path / "bare.h5", dipole=False, polarizability=False)
    assert list(spectra_from_trajectory(bare)) == ["power"]
    with pytest.raises(ValueError, match=r"no dipole_moment; rerun simulate with observables=\['dipole_moment'\]"):
        spectra_from_trajectory(bare, ir=True)


def test_a_trajectory_too_short_for_the_resolution_warns_once(tmp_path):
    path = _write_trajectory(tmp_path / "short.h5", n_frames=256, n_replicas=1)
    with pytest.warns(SpectrumWarning) as caught:
        spectra_from_trajectory(path, resolution_cm1=5.0)  # three spectra, one warning
    assert len([w for w in caught if "too short" in str(w.message)]) == 1


def test_csv_has_units_in_its_header(tmp_path):
    q, _ = _thermal_modes(1000.0, 300.0, 2, 512, 1.0)
    spectrum = raman_spectrum(4.0 * np.eye(3) + q[..., None, None] * np.eye(3), 1.0, 300.0)
    path = write_spectrum_csv(spectrum, tmp_path / "raman.csv")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# raman: Å⁴/amu/cm⁻¹, resolution") and "Nyquist" in lines[0]
    assert lines[1].split(",")[:2] == ["wavenumber (cm-1)", "total 45 iso + 7 aniso (Å⁴/amu/cm⁻¹)"]
    table = np.loadtxt(path, delimiter=",", skiprows=2)
    np.testing.assert_allclose(table[:, 0], spectrum.frequency_cm1, rtol=1e-7)
    np.testing.assert_allclose(table[:, 2], spectrum.isotropic, rtol=1e-7, atol=1e-12)


def test_cli_writes_csv_and_png_and_names_a_missing_series(tmp_path, capsys):
    from jaxatom.cli import main

    path = _write_trajectory(tmp_path / "run.h5", polarizability=False, n_frames=512)
    assert main(["spectrum", str(path), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "resolution" in printed and "Nyquist" in printed and str(tmp_path / "out" / "ir.csv") in printed
    for name in ("ir", "power"):
        assert (tmp_path / "out" / f"{name}.csv").stat().st_size > 100
        assert (tmp_path / "out" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "out" / "raman.csv").exists()
    assert main(["spectrum", str(path), "--raman", "--out", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("jaxatom spectrum: the trajectory") and "no polarizability" in error
    assert main(["spectrum", str(path), "--ir", "--max-frequency", "1e5", "--out", str(tmp_path / "w")]) == 0
    assert "jaxatom spectrum: warning: frames 0.5 fs apart" in capsys.readouterr().err
