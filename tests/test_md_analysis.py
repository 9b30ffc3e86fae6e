"""Trajectory analysis (numpy only): energy drift, temperature, spectra, MSD and diffusion, g(r), plots."""

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk

from jaxatom.md.analysis import (
    DiffusionResult,
    degrees_of_freedom,
    diffusion_coefficient,
    energy_drift,
    energy_fluctuation,
    ir_spectrum,
    kinetic_energy,
    mean_square_displacement,
    plot_energies,
    plot_msd,
    plot_rdf,
    plot_spectrum,
    plot_temperature,
    radial_distribution_function,
    temperature,
    vibrational_spectrum,
)

CM1_PER_THZ = 33.356


def test_energy_drift_recovers_a_known_slope_per_atom_per_ps():
    rng = np.random.default_rng(0)
    n_atoms, time_fs = 50, np.arange(0.0, 10_000.0, 5.0)  # 10 ps
    slopes = np.array([2e-4, -1e-3, 0.0])  # eV/atom/ps
    energy = -300.0 + np.outer(time_fs / 1000.0, slopes * n_atoms) + rng.normal(0, 0.005, (time_fs.size, 3))
    np.testing.assert_allclose(energy_drift(time_fs, energy, n_atoms), slopes, atol=2e-6)
    single = energy_drift(time_fs, energy[:, 0], n_atoms)
    assert isinstance(single, float) and single == pytest.approx(2e-4, abs=2e-6)
    assert energy_fluctuation(energy[:, 2], n_atoms) == pytest.approx(0.005 / n_atoms, rel=0.05)


def test_temperature_of_maxwell_boltzmann_velocities_matches_the_target():
    rng = np.random.default_rng(1)
    atoms = Atoms("H400O400C200", positions=rng.random((1000, 3)))
    masses = atoms.get_masses()
    sigma = np.sqrt(units.kB * 300.0 / masses)[:, None] * units.fs  # per component, ASE velocity units -> Å/fs
    velocities = rng.normal(size=(20, 1000, 3)) * sigma
    energy = kinetic_energy(velocities, masses)
    atoms.set_velocities(velocities[-1] / units.fs)
    assert energy[-1] == pytest.approx(atoms.get_kinetic_energy(), rel=1e-12)
    assert temperature(energy, 3 * len(atoms)).mean() == pytest.approx(300.0, rel=0.01)
    assert float(temperature(0.5 * units.kB * 3, 3)) == pytest.approx(1.0)
    assert degrees_of_freedom(10) == 27 and degrees_of_freedom(10, remove_rotation=True) == 24
    assert degrees_of_freedom(10, remove_com=False) == 30


def _oscillating_velocities(wavenumbers_cm1, n_frames=4096, dt_fs=0.5):
    """Velocities [T, N, 3]: atom k oscillates along x at wavenumbers_cm1[k] with amplitude 0.01 Å/fs, plus a drift."""
    t = np.arange(n_frames) * dt_fs
    velocities = np.zeros((n_frames, len(wavenumbers_cm1), 3))
    for k, wavenumber in enumerate(wavenumbers_cm1):
        velocities[:, k, 0] = 0.01 * np.cos(2 * np.pi * wavenumber / CM1_PER_THZ * 1e-3 * t + k) + 0.003
    return velocities


def _peaks(spectrum, count):
    """Wavenumbers of the ``count`` highest local maxima of a spectrum, ascending."""
    y = spectrum.intensity
    maxima = np.flatnonzero((y[1:-1] > y[:-2]) & (y[1:-1] >= y[2:])) + 1
    return np.sort(spectrum.frequency_cm1[maxima[np.argsort(y[maxima])[-count:]]])


def _area(spectrum, centre_cm1, half_width_cm1=60.0):
    near = np.abs(spectrum.frequency_cm1 - centre_cm1) < half_width_cm1
    return spectrum.intensity[near].sum()


@pytest.mark.parametrize("window", ["hann", None])
@pytest.mark.parametrize("pad_factor", [1, 4])
def test_vibrational_spectrum_peaks_at_the_oscillation_wavenumbers(window, pad_factor):
    n_frames, dt_fs = 4096, 0.5
    spectrum = vibrational_spectrum(
        _oscillating_velocities([1000.0, 3000.0]), dt_fs, window=window, pad_factor=pad_factor
    )
    resolution_cm1 = 1e3 / (n_frames * dt_fs) * CM1_PER_THZ
    np.testing.assert_allclose(_peaks(spectrum, 2), [1000.0, 3000.0], atol=resolution_cm1)
    np.testing.assert_allclose(spectrum.frequency_cm1[1:] / spectrum.frequency_thz[1:], CM1_PER_THZ, rtol=1e-4)
    assert spectrum.frequency_thz[-1] == pytest.approx(1e3 / (2 * dt_fs))  # Nyquist
    assert spectrum.intensity.sum() * spectrum.frequency_cm1[1] == pytest.approx(1.0)  # unit area over cm⁻¹
    assert spectrum.intensity[0] < 1e-3 * spectrum.intensity.max()  # the constant drift is removed
    assert _area(spectrum, 1000.0) == pytest.approx(_area(spectrum, 3000.0), rel=0.05)


def test_mass_weighting_scales_each_atoms_contribution_by_its_mass():
    velocities, masses = _oscillating_velocities([1000.0, 3000.0]), np.array([1.008, 15.999])
    plain = vibrational_spectrum(velocities, 0.5)
    weighted = vibrational_spectrum(velocities, 0.5, masses=masses)
    ratio_plain = _area(plain, 3000.0) / _area(plain, 1000.0)
    ratio_weighted = _area(weighted, 3000.0) / _area(weighted, 1000.0)
    assert ratio_weighted / ratio_plain == pytest.approx(masses[1] / masses[0], rel=1e-3)


def test_ir_spectrum_peaks_at_the_dipole_frequency_with_omega_squared_intensity():
    t = np.arange(8192) * 0.25
    frequencies_thz = np.array([1000.0, 2000.0]) / CM1_PER_THZ
    dipoles = np.zeros((t.size, 3))
    dipoles[:, 0] = 1.5 + 0.1 * np.sin(2 * np.pi * frequencies_thz[0] * 1e-3 * t)  # with a permanent dipole
    dipoles[:, 2] = 0.1 * np.sin(2 * np.pi * frequencies_thz[1] * 1e-3 * t)
    spectrum = ir_spectrum(dipoles, 0.25)
    resolution_thz = 1e3 / (t.size * 0.25)
    np.testing.assert_allclose(_peaks(spectrum, 2), [1000.0, 2000.0], atol=resolution_thz * CM1_PER_THZ)
    assert _area(spectrum, 2000.0) / _area(spectrum, 1000.0) == pytest.approx(4.0, rel=0.02)  # |dμ/dt|² ∝ ω²


def test_msd_of_a_ballistic_trajectory_is_v_squared_t_squared():
    rng = np.random.default_rng(2)
    dt_fs, speeds = 2.0, rng.normal(0, 0.05, (6, 3))
    positions = rng.random((6, 3)) * 10 + np.arange(100)[:, None, None] * dt_fs * speeds
    lag, msd = mean_square_displacement(positions, dt_fs)
    assert lag.shape == msd.shape == (51,) and lag[1] == dt_fs
    np.testing.assert_allclose(msd, np.mean(np.sum(speeds**2, axis=1)) * lag**2, rtol=1e-9, atol=1e-9)
    mask = np.zeros(6, bool)
    mask[[1, 4]] = True
    for selection in (mask, np.array([1, 4])):
        _, part = mean_square_displacement(positions, dt_fs, max_lag_fs=20.0, atoms=selection)
        np.testing.assert_allclose(part, np.mean(np.sum(speeds[[1, 4]] ** 2, axis=1)) * lag[:11] ** 2, atol=1e-9)


def test_msd_matches_the_direct_average_over_time_origins():
    positions = np.cumsum(np.random.default_rng(3).normal(size=(40, 5, 3)), axis=0)
    lag, msd = mean_square_displacement(positions, 1.0, max_lag_fs=39.0)
    direct = [np.mean(np.sum((positions[m:] - positions[: positions.shape[0] - m]) ** 2, axis=2)) for m in range(40)]
    np.testing.assert_allclose(msd, direct, rtol=1e-10, atol=1e-10)


def test_diffusion_coefficient_of_a_random_walk():
    rng = np.random.default_rng(4)
    sigma, dt_fs = 0.1, 2.0  # Å per step and dimension, fs per step
    positions = np.cumsum(rng.normal(0, sigma, (1000, 500, 3)), axis=0)
    lag, msd = mean_square_displacement(positions, dt_fs, max_lag_fs=100.0)
    result = diffusion_coefficient(lag, msd)
    expected = sigma**2 / (2 * dt_fs) * 1000.0  # Å²/ps
    assert isinstance(result, DiffusionResult) and result.dim == 3
    assert result.d_ang2_ps == pytest.approx(expected, rel=0.04)
    assert result.d_cm2_s == pytest.approx(result.d_ang2_ps * 1e-4)
    assert result.slope == pytest.approx(6 * result.d_ang2_ps) and result.fit_range_fs == (20.0, 80.0)
    along_x = positions * [1.0, 0.0, 0.0]
    in_1d = diffusion_coefficient(lag, mean_square_displacement(along_x, dt_fs, 100.0)[1], dim=1)
    assert in_1d.d_ang2_ps == pytest.approx(expected, rel=0.06)
    exact = diffusion_coefficient([0.0, 10.0, 20.0, 30.0], [1.0, 1.6, 2.2, 2.8], fit_range_fs=(10.0, 30.0))
    assert exact.slope == pytest.approx(60.0) and exact.intercept == pytest.approx(1.0)
    assert exact.d_ang2_ps == pytest.approx(10.0) and exact.d_cm2_s == pytest.approx(1e-3)


def test_rdf_of_an_ideal_gas_is_one_in_a_triclinic_cell():
    rng = np.random.default_rng(5)
    cell = np.array([[10.0, 0.0, 0.0], [2.0, 9.0, 0.0], [1.0, -1.5, 11.0]])
    positions = rng.random((300, 60, 3)) @ cell
    r, g = radial_distribution_function(positions, cell, r_max=4.0, n_bins=40)
    assert r.shape == g.shape == (40,) and r[0] == pytest.approx(0.05)
    assert np.mean(g[10:]) == pytest.approx(1.0, abs=0.02)
    assert np.all(np.abs(g[10:] - 1.0) < 0.15)


def _rattled(atoms, n_frames=5, scale=0.02, seed=6):
    rng = np.random.default_rng(seed)
    return atoms.positions + rng.normal(0, scale, (n_frames, len(atoms), 3))


@pytest.mark.parametrize(("structure", "nearest"), [("sc", 3.0), ("fcc", 4.0 / np.sqrt(2))])
def test_rdf_of_a_lattice_peaks_at_the_nearest_neighbour_distance(structure, nearest):
    atoms = bulk("Cu", structure, a=3.0 if structure == "sc" else 4.0, cubic=True).repeat(4 if structure == "sc" else 3)
    r, g = radial_distribution_function(_rattled(atoms), atoms.cell[:], r_max=5.5, n_bins=220)
    start = np.flatnonzero(g > 0)[0]
    first_shell_bins = start + np.arange(np.flatnonzero(g[start:] == 0)[0])  # the shells are separated by g = 0
    assert abs(r[first_shell_bins[np.argmax(g[first_shell_bins])]] - nearest) < 0.05
    assert np.all(g[r < 0.9 * nearest] == 0)
    first_shell = r < 0.5 * (1 + np.sqrt(2)) * nearest  # the second shell is at sqrt(2) times nearest for both
    density = (len(atoms) - 1) / atoms.get_volume()  # g is normalised by N(N - 1)/2 pairs
    shells = 4 / 3 * np.pi * np.diff(np.linspace(0, 5.5, 221) ** 3)
    coordination = density * np.sum(g[first_shell] * shells[first_shell])
    assert coordination == pytest.approx(6 if structure == "sc" else 12, rel=1e-9)


def test_partial_rdf_of_rock_salt():
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(2)
    positions, numbers = _rattled(atoms), atoms.numbers
    for pair, nearest in (((11, 17), 2.82), ((11, 11), 5.64 / np.sqrt(2)), ((17, 17), 5.64 / np.sqrt(2))):
        r, g = radial_distribution_function(positions, atoms.cell[:], 5.6, n_bins=112, species=numbers, pair=pair)
        assert abs(r[np.argmax(g)] - nearest) < 0.1, pair
    one_cell = radial_distribution_function(positions, atoms.cell[:], 5.6, 112, numbers, (11, 17))[1]
    cells = np.broadcast_to(atoms.cell[:], (5, 3, 3))  # one cell per frame (NPT) gives the same
    np.testing.assert_allclose(radial_distribution_function(positions, cells, 5.6, 112, numbers, (11, 17))[1], one_cell)


def test_errors_name_the_problem():
    good_v, good_x = np.zeros((10, 2, 3)), np.zeros((10, 2, 3))
    cell, noise = np.eye(3) * 10.0, np.random.default_rng(8).random((10, 2, 3))
    cases = [
        (lambda: energy_drift(np.arange(5.0), np.zeros(4), 1), "pass one time per frame"),
        (lambda: energy_drift([0.0], [1.0], 1), "at least 2"),
        (lambda: energy_drift([0.0, 0.0, 1.0], [1.0, 1.0, 1.0], 1), "strictly increasing"),
        (lambda: energy_drift([0.0, 1.0], [1.0, np.nan], 1), "NaN"),
        (lambda: energy_drift([0.0, 1.0], [1.0, 2.0], 0), "n_atoms must be a positive integer"),
        (lambda: energy_fluctuation(np.zeros((2, 2, 2)), 1), r"energy must have shape \[T\] or \[T, R\]"),
        (lambda: temperature([0.1], 0), "n_dof must be a positive integer"),
        (lambda: kinetic_energy(good_v, [1.0]), "one mass per atom"),
        (lambda: kinetic_energy(good_v, [1.0, -1.0]), "masses must be positive"),
        (lambda: degrees_of_freedom(1, remove_com=True), "degrees of freedom"),
        (lambda: vibrational_spectrum(np.zeros((10, 2)), 1.0), r"\[T, N, 3\]"),
        (lambda: vibrational_spectrum(np.ones((10, 2, 3)), 0.0), "dt_fs must be a positive"),
        (lambda: vibrational_spectrum(np.ones((10, 2, 3)), -1.0), "dt_fs must be a positive"),
        (lambda: vibrational_spectrum(np.ones((3, 2, 3)), 1.0), "at least 4"),
        (lambda: vibrational_spectrum(np.ones((10, 2, 3)), 1.0), "do not change in time"),
        (lambda: vibrational_spectrum(noise, 1.0, window="kaiser"), "unknown window"),
        (lambda: vibrational_spectrum(noise, 1.0, pad_factor=0), "pad_factor"),
        (lambda: ir_spectrum(np.zeros((10, 2)), 1.0), r"dipoles must have shape \[T, 3\]"),
        (lambda: mean_square_displacement(good_x[:1], 1.0), "at least 2"),
        (lambda: mean_square_displacement(good_x, 0.0), "dt_fs"),
        (lambda: mean_square_displacement(good_x, 1.0, max_lag_fs=50.0), "max_lag_fs"),
        (lambda: mean_square_displacement(good_x, 1.0, atoms=[True]), "boolean atom mask"),
        (lambda: mean_square_displacement(good_x, 1.0, atoms=[5]), r"atom indices must lie in \[0, 2\)"),
        (lambda: mean_square_displacement(good_x, 1.0, atoms=np.array([], int)), "empty"),
        (lambda: mean_square_displacement(good_x, 1.0, atoms=[0.5]), "integer atom indices"),
        (lambda: diffusion_coefficient([0.0, 1.0], [0.0], fit_range_fs=(0, 1)), "same shape"),
        (lambda: diffusion_coefficient([0.0, 1.0, 2.0], [0, 1, 2], fit_range_fs=(1.5, 2.0)), "widen it"),
        (lambda: diffusion_coefficient([0.0, 1.0], [0, 1], (0, 1), (0, 1)), "not both"),
        (lambda: diffusion_coefficient([0.0, 1.0], [0, 1], fit_fraction=(0.9, 0.1)), "fit_fraction"),
        (lambda: diffusion_coefficient([0.0, 1.0], [0, 1], dim=4), "dim must be 1, 2 or 3"),
        (lambda: radial_distribution_function(good_x, None, 2.0), "cell is None"),
        (lambda: radial_distribution_function(good_x[0], cell, 2.0), r"positions\[None\]"),
        (lambda: radial_distribution_function(good_x, cell, 5.01), "half the smallest perpendicular"),
        (lambda: radial_distribution_function(good_x, np.zeros((3, 3)), 2.0), "singular"),
        (lambda: radial_distribution_function(good_x, np.zeros((4, 3, 3)), 2.0), r"\[T, 3, 3\] = \[10, 3, 3\]"),
        (lambda: radial_distribution_function(good_x, cell, 0.0), "r_max must be a positive"),
        (lambda: radial_distribution_function(good_x, cell, 2.0, pair=(1, 1)), "needs species"),
        (lambda: radial_distribution_function(good_x, cell, 2.0, species=[1], pair=(1, 1)), "species must have"),
        (lambda: radial_distribution_function(good_x, cell, 2.0, species=[1, 8], pair=(1, 1)), "no atom pairs"),
        (lambda: radial_distribution_function(good_x[:, :1], cell, 2.0), "no atom pairs"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_rdf_limit_uses_the_perpendicular_width_of_a_skewed_cell():
    cell = np.array([[10.0, 0.0, 0.0], [8.0, 6.0, 0.0], [0.0, 0.0, 10.0]])  # |b| = 10 Å but the width along y is 6 Å
    positions = np.random.default_rng(7).random((2, 8, 3)) @ cell
    radial_distribution_function(positions, cell, 2.99)
    with pytest.raises(ValueError, match=r"\(3 Å\)"):
        radial_distribution_function(positions, cell, 3.01)


def test_plots_write_png_files(tmp_path):
    png = b"\x89PNG\r\n\x1a\n"
    t = np.arange(50) * 2.0
    velocities = _oscillating_velocities([1500.0], n_frames=256)
    lag, msd = t, 0.01 * t + 0.1
    r = np.linspace(0.05, 5.0, 50)
    paths = [
        plot_energies(t, -np.cos(t), np.cos(t), np.zeros_like(t) + 1e-4 * t, tmp_path / "new" / "energies.png"),
        plot_temperature(t, 300 + np.sin(t), tmp_path / "temperature.png"),
        plot_spectrum(vibrational_spectrum(velocities, 0.5), tmp_path / "vdos.png", max_frequency=4000),
        plot_spectrum(vibrational_spectrum(velocities, 0.5), str(tmp_path / "vdos_thz.png"), unit="THz"),
        plot_msd(lag, msd, diffusion_coefficient(lag, msd), tmp_path / "msd.png"),
        plot_msd(lag, msd, None, tmp_path / "msd_plain.png"),
        plot_rdf(r, 1 - np.exp(-r), tmp_path / "rdf.png"),
    ]
    for path in paths:
        assert path.stat().st_size > 1000 and path.read_bytes()[:8] == png
    with pytest.raises(ValueError, match="unit must be"):
        plot_spectrum(vibrational_spectrum(velocities, 0.5), tmp_path / "x.png", unit="eV")
