"""Harmonic vibrational analysis (float64): autodiff Hessians, APTs and ∂α/∂R against finite differences, exact zero
modes, an analytic Morse diatomic (frequency, IR intensity, Raman activity by hand), agreement with ASE's
finite-difference ``Infrared``, rotation invariance, optimisation, thermochemistry, spectra and the CLI."""

from __future__ import annotations

import csv
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import molecule

import jaxatom
from jaxatom.cli import main
from jaxatom.md.state import masses_of
from jaxatom.nn import ENERGY_HEAD, DipoleMoment, Polarizability
from jaxatom.nn.heads import OutputSpec
from jaxatom.spectra import HARMONIC_IR_KM_MOL
from jaxatom.vibrations import (
    NotConvergedError,
    NotStationaryWarning,
    derivatives,
    harmonic_analysis,
    hessian,
    normal_modes,
    relax,
)

from .conftest import CUTOFF, ELEMENTS, MorseEnergy, random_rotation, tiny_painn, tiny_schnet, triclinic_crystal

STEP = 1e-4  # Å, central differences in float64
#: Equilibrium distances (Å) of the test pair potential, by element pair.
R0 = ((1, 8, 0.96), (1, 1, 1.52), (6, 8, 1.16), (8, 8, 2.32))


@pytest.fixture(scope="module", autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


#: A Morse well per pair (minimum and curvature 2 D a² fc(r0) known exactly), with this file's distances.
PairEnergy = functools.partial(MorseEnergy, depth=4.0, alpha=2.0, pairs=R0, default_r0=1.0)


class FixedCharges(nn.Module):
    """μ = Σ q_Z r_i with fixed charges per element (e): ∂μ/∂R_i = q_i 1."""

    charges: tuple = ((1, 0.4), (6, 0.5), (8, -0.5))

    @property
    def key(self) -> str:
        return "dipole_moment"

    @property
    def outputs(self):
        return (OutputSpec("dipole_moment", False, (3,), "e*Ang", "sum"),)

    def __call__(self, features, graph):
        table = np.zeros(10)
        for z, q in self.charges:
            table[z] = q
        q = jnp.asarray(table)[graph.species]
        mu = jax.ops.segment_sum(q[:, None] * graph.positions, graph.node_graph, num_segments=graph.n_graph)
        return {"dipole_moment": mu}


class PairPolarizability(nn.Module):
    """α = c Σ_{i<j} r_ij ⊗ r_ij (Å³) over every listed pair."""

    coefficient: float = 0.3

    @property
    def key(self) -> str:
        return "polarizability"

    @property
    def outputs(self):
        return (OutputSpec("polarizability", False, (3, 3), "Ang^3", "sum"),)

    def __call__(self, features, graph):
        r = graph.edge_vectors() * graph.edge_mask[:, None]
        outer = self.coefficient * 0.5 * r[:, :, None] * r[:, None, :]
        index = graph.node_graph[graph.receivers]
        return {"polarizability": jax.ops.segment_sum(outer, index, num_segments=graph.n_graph)}


@pytest.fixture(scope="module")
def plain(float64) -> jaxatom.Potential:
    """A random tiny PaiNN with energy, vector-dipole and polarizability heads."""
    heads = [ENERGY_HEAD, DipoleMoment(use_vector_representation=True), Polarizability()]
    return jaxatom.Potential.create(tiny_painn(), ELEMENTS, seed=2, heads=heads, energy_shift=-3.0)


@pytest.fixture(scope="module")
def morse(float64) -> jaxatom.Potential:
    """Pair Morse wells perturbed by a random PaiNN energy, with PaiNN dipole and polarizability heads: a generic
    model with a well-defined minimum near water's and CO2's geometry."""
    heads = [PairEnergy(neural=1.0), DipoleMoment(use_vector_representation=True), Polarizability()]
    return jaxatom.Potential.create(tiny_painn(), ELEMENTS, seed=4, heads=heads, atomrefs={1: -13.6, 8: -2040.0})


@pytest.fixture(scope="module")
def analytic(float64) -> jaxatom.Potential:
    """Exactly known energy, dipole and polarizability (no neural part)."""
    heads = [PairEnergy(), FixedCharges(), PairPolarizability()]
    return jaxatom.Potential.create(tiny_painn(), ELEMENTS, seed=0, heads=heads)


@pytest.fixture(scope="module")
def water(morse):
    return relax(morse, molecule("H2O"), fmax=1e-6, steps=200)


def _rattled_ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=3)
    return atoms


def _central_differences(potential, atoms, keys):
    """∂(output)/∂R by central differences of ``potential.predict`` (one batch of 6N structures)."""
    displaced = []
    for index in range(3 * len(atoms)):
        for sign in (1, -1):
            copy = atoms.copy()
            copy.positions.reshape(-1)[index] += sign * STEP
            displaced.append(copy)
    results = potential.predict(displaced, batch_size=len(displaced))
    return {key: np.stack([(np.asarray(results[2 * i][key]) - np.asarray(results[2 * i + 1][key])) / (2 * STEP)
                           for i in range(3 * len(atoms))]) for key in keys}  # fmt: skip


@pytest.fixture(scope="module")
def ethanol_differences(plain):
    """A rattled ethanol and central differences of forces, dipole and polarizability (one batch)."""
    atoms = _rattled_ethanol()
    return atoms, _central_differences(plain, atoms, ["forces", "dipole_moment", "polarizability"])


def test_hessian_matches_finite_differences_of_forces_and_is_symmetric(plain, ethanol_differences):
    atoms, expected = ethanol_differences
    result = hessian(plain, atoms)
    assert result.shape == (27, 27)
    assert np.max(np.abs(result - result.T)) < 1e-12 * np.max(np.abs(result))
    np.testing.assert_allclose(result, -expected["forces"].reshape(27, 27), atol=1e-6 * np.max(np.abs(result)))


def test_dipole_and_polarizability_derivatives_match_finite_differences(plain, ethanol_differences):
    atoms, expected = ethanol_differences
    result = derivatives(plain, atoms)
    np.testing.assert_allclose(result.dipole_derivatives, expected["dipole_moment"], atol=1e-7)
    np.testing.assert_allclose(result.polarizability_derivatives, expected["polarizability"], atol=1e-7)
    reference = plain.predict(atoms)
    assert result.energy == pytest.approx(reference["energy"], abs=1e-9)
    np.testing.assert_allclose(result.forces, reference["forces"], atol=1e-10)


def test_batched_hessians_equal_one_at_a_time_and_ignore_offsets(plain):
    first = _rattled_ethanol()
    second = molecule("CH3CH2OH")
    second.positions = second.positions @ random_rotation(1).T
    batched = hessian(plain, [first, second])
    assert batched.shape == (2, 27, 27)
    np.testing.assert_allclose(batched[1], hessian(plain, second), atol=1e-12)
    shifted = plain.replace(energy_shift=100.0, atomrefs={1: -1.0, 6: 5.0, 8: 2.0})
    np.testing.assert_allclose(hessian(shifted, [first, second]), batched, atol=1e-12)


def test_hessian_of_a_periodic_cell_matches_finite_differences():
    potential = jaxatom.Potential.create(tiny_schnet(), ELEMENTS, seed=1)
    crystal = triclinic_crystal(seed=1)
    crystal.rattle(0.05, seed=2)
    result = hessian(potential, crystal)
    expected = -_central_differences(potential, crystal, ["forces"])["forces"].reshape(18, 18)
    np.testing.assert_allclose(result, expected, atol=1e-6 * np.max(np.abs(result)))


def test_morse_diatomic_frequency_ir_intensity_and_raman_activity_by_hand(analytic):
    r0, depth, alpha, charge, c = 1.16, 4.0, 2.0, 0.5, 0.3
    start = Atoms("CO", positions=[[0.0, 0.0, 0.0], [1.3, 0.0, 0.0]])
    result = harmonic_analysis(analytic, start, fmax=1e-8)
    assert result.converged and result.optimization_steps > 0
    assert result.atoms.get_distance(0, 1) == pytest.approx(r0, abs=1e-8)
    assert result.linear and result.frequencies_cm1.shape == (1,)
    m_c, m_o = masses_of([6, 8])
    reduced = m_c * m_o / (m_c + m_o)
    k = 2.0 * depth * alpha**2 * 0.5 * (np.cos(np.pi * r0 / CUTOFF) + 1.0)
    wavenumber = np.sqrt(k / reduced) * units._hbar * 1e10 / np.sqrt(units._e * units._amu) / units.invcm
    assert result.frequencies_cm1[0] == pytest.approx(wavenumber, rel=1e-9)
    assert result.ir_intensities_km_mol[0] == pytest.approx(HARMONIC_IR_KM_MOL * charge**2 / reduced, rel=1e-9)
    x = 2.0 * c * r0 / np.sqrt(reduced)  # ∂α_xx/∂Q; every other component is zero
    assert result.raman_activities[0] == pytest.approx(45.0 * (x / 3.0) ** 2 + 7.0 * x**2, rel=1e-9)


def test_ir_constant_is_the_one_ase_infrared_uses():
    porezag = 42.255  # ASE Infrared: km/mol per (D/Å)²/amu
    assert HARMONIC_IR_KM_MOL == pytest.approx(porezag / units.Debye**2, rel=1e-4)


@pytest.mark.parametrize(("name", "n_zero"), [("H2O", 6), ("CO2", 5)])
def test_six_or_five_near_zero_modes_before_projection_and_exact_zeros_after(morse, name, n_zero):
    relaxed = relax(morse, molecule(name), fmax=1e-6, steps=300)
    assert relaxed.converged
    h = hessian(morse, relaxed.atoms)
    masses = masses_of(relaxed.atoms.numbers)
    raw = normal_modes(h, masses, project=False).frequencies_cm1
    order = np.argsort(np.abs(raw))
    assert np.all(np.abs(raw[order[:n_zero]]) < 2.0), raw
    assert np.all(np.abs(raw[order[n_zero:]]) > 100.0), raw
    projected = normal_modes(h, masses, relaxed.atoms.positions)
    assert projected.n_external == n_zero
    assert np.all(projected.frequencies_cm1[:n_zero] == 0.0)
    np.testing.assert_allclose(projected.frequencies_cm1[n_zero:], np.sort(raw[order[n_zero:]]), atol=0.05)
    vectors = projected.eigenvectors
    np.testing.assert_allclose(vectors @ vectors.T, np.eye(len(vectors)), atol=1e-12)


def test_frequencies_and_intensities_are_invariant_under_rotation(morse, water):
    rotated = water.atoms.copy()
    rotated.positions = rotated.positions @ random_rotation(5).T + np.array([1.0, -2.0, 0.5])
    here = harmonic_analysis(morse, water.atoms, optimize=False)
    there = harmonic_analysis(morse, rotated, optimize=False)
    np.testing.assert_allclose(there.frequencies_cm1, here.frequencies_cm1, atol=1e-6)
    np.testing.assert_allclose(there.ir_intensities_km_mol, here.ir_intensities_km_mol, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(there.raman_activities, here.raman_activities, rtol=1e-6, atol=1e-8)
    assert here.frequencies_cm1.shape == (3,) and here.n_imaginary == 0


def test_frequencies_and_ir_intensities_agree_with_ase_infrared(morse, water, tmp_path):
    from ase.vibrations import Infrared

    from jaxatom.calculators import JaxAtomCalculator

    atoms = water.atoms.copy()
    atoms.calc = JaxAtomCalculator(morse)
    infrared = Infrared(atoms, name=str(tmp_path / "ir"), delta=1e-3, nfree=4)
    infrared.run()
    ase_frequencies = infrared.get_frequencies().real[-3:]
    ase_intensities = infrared.intensities[-3:] * 42.255  # (D/Å)²/amu -> km/mol
    result = harmonic_analysis(morse, water.atoms, optimize=False)
    np.testing.assert_allclose(result.frequencies_cm1, ase_frequencies, rtol=1e-5)
    np.testing.assert_allclose(result.ir_intensities_km_mol, ase_intensities, rtol=1e-3, atol=1e-4)


def test_optimisation_brings_the_force_below_fmax_and_refuses_to_analyse_a_non_minimum(morse):
    start = molecule("H2O")
    start.rattle(0.05, seed=1)
    assert np.max(np.linalg.norm(morse.predict(start)["forces"], axis=1)) > 1e-3
    result = harmonic_analysis(morse, start, fmax=1e-3)
    assert result.converged and result.max_force <= 1e-3
    with pytest.raises(NotConvergedError, match="largest residual force .* eV/Å > fmax"):
        harmonic_analysis(morse, start, fmax=1e-3, steps=1)
    with pytest.warns(NotStationaryWarning, match="not a stationary point"):
        unconverged = harmonic_analysis(morse, start, fmax=1e-3, steps=1, allow_unconverged=True)
    assert not unconverged.converged and "NOT A STATIONARY POINT" in unconverged.summary()
    with pytest.warns(NotStationaryWarning, match="atom"):
        harmonic_analysis(morse, start, optimize=False)


def test_thermochemistry_gives_finite_energies(morse, water):
    result = harmonic_analysis(morse, water.atoms, optimize=False)
    gibbs = result.ideal_gas_thermo(symmetry_number=2).get_gibbs_energy(298.15, 101325.0, verbose=False)
    helmholtz = result.harmonic_thermo().get_helmholtz_energy(298.15, verbose=False)
    assert np.isfinite(gibbs) and np.isfinite(helmholtz)
    assert result.zero_point_energy == pytest.approx(0.5 * np.sum(result.frequencies_cm1) * units.invcm)
    assert gibbs < result.energy + result.zero_point_energy  # the entropy term dominates at room temperature


def test_spectrum_integrates_to_the_sticks_and_files_are_written(morse, water, tmp_path):
    result = harmonic_analysis(morse, water.atoms, optimize=False)
    for kind, sticks in (("ir", result.ir_intensities_km_mol), ("raman", result.raman_activities)):
        spectrum = result.spectrum(width_cm1=20.0, kind=kind, shape="gaussian")
        step = spectrum.wavenumbers_cm1[1] - spectrum.wavenumbers_cm1[0]
        assert np.sum(spectrum.intensity) * step == pytest.approx(np.sum(sticks), rel=1e-6)
    lorentz = result.spectrum(width_cm1=10.0, grid_cm1=np.arange(0.0, 20000.0, 0.5))
    assert np.sum(lorentz.intensity) * 0.5 == pytest.approx(np.sum(result.ir_intensities_km_mol), rel=2e-3)
    assert result.plot(tmp_path / "spectrum.png").stat().st_size > 0
    with (result.to_csv(tmp_path / "modes.csv")).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["frequency_cm1"]) for row in rows] == pytest.approx(result.frequencies_cm1, abs=1e-5)
    assert set(rows[0]) == {"mode", "frequency_cm1", "ir_intensity_km_mol", "raman_activity_A4_amu"}
    assert "km/mol" in result.summary() and len(result.summary().splitlines()) == 2 + 2 + 3


def test_cli_writes_frequencies_summary_and_plot(plain, tmp_path, capsys):
    plain.save(tmp_path / "model")
    molecule("H2O").write(tmp_path / "water.xyz")
    out = tmp_path / "out"
    code = main(["vibrations", str(tmp_path / "model"), str(tmp_path / "water.xyz"), "--no-optimize",
                 "--width", "15", "--out", str(out)])  # fmt: skip
    assert code == 0
    for name in ("frequencies.csv", "summary.txt", "spectrum.png", "structure.xyz"):
        assert (out / name).stat().st_size > 0, name
    captured = capsys.readouterr()
    assert "km/mol" in captured.out and "Å⁴/amu" in (out / "summary.txt").read_text()
    assert captured.err.startswith("jaxatom vibrations: warning: the analysed structure is not a stationary point")


def test_cli_names_a_missing_structure_file(tmp_path, capsys):
    code = main(["vibrations", str(tmp_path / "model"), str(tmp_path / "missing.xyz")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxatom vibrations: ") and "missing.xyz" in err and len(err.splitlines()) == 1
