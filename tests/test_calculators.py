"""ASE calculators: derivatives against ASE's finite differences (float64), agreement with ``Potential.predict``,
model files, MD/optimisation with few compiled shapes, ensembles and every error path."""

import jax
import numpy as np
import pytest
from ase import units
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS
from ase.stress import full_3x3_to_voigt_6_stress

import jaxatom
from jaxatom.calculators import Capacity, EnsembleCalculator, JaxAtomCalculator
from jaxatom.neighbors import graph_from_atoms

from .conftest import ELEMENTS, tiny_schnet, triclinic_crystal

#: A cutoff shorter than ethanol's longest distances, so that its neighbour pairs change during MD.
MD_CUTOFF = 3.0
ATOMREFS = {1: -13.6, 6: -1030.0, 8: -2040.0}


@pytest.fixture(scope="module", autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def _potential(seed: int) -> jaxatom.Potential:
    return jaxatom.Potential.create(
        tiny_schnet(cutoff=MD_CUTOFF), elements=ELEMENTS, seed=seed, energy_shift=-2.5, atomrefs=ATOMREFS
    )


@pytest.fixture(scope="module")
def potential():
    return _potential(1)


@pytest.fixture(scope="module")
def calc(potential):
    return JaxAtomCalculator(potential)


def _with_calc(atoms, calc):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms


def _rattled_crystal():
    crystal = triclinic_crystal(seed=1)
    crystal.rattle(0.05, seed=2)
    return crystal


@pytest.mark.parametrize("kind", ["molecule", "crystal"])
def test_forces_match_ase_finite_differences(calc, ethanol, kind):
    atoms = _with_calc(ethanol if kind == "molecule" else _rattled_crystal(), calc)
    forces = atoms.get_forces()
    numerical = calculate_numerical_forces(atoms, eps=1e-5)
    np.testing.assert_allclose(forces, numerical, rtol=1e-6, atol=1e-6)
    assert np.abs(forces).max() > 1e-2


def test_stress_matches_ase_finite_differences(calc):
    atoms = _with_calc(_rattled_crystal(), calc)
    stress = atoms.get_stress()
    assert stress.shape == (6,)
    np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-6), rtol=1e-6, atol=1e-7)
    assert np.abs(stress).max() > 1e-3


def _assert_equal_to_predict(calc, potential, atoms):
    atoms = _with_calc(atoms, calc)
    expected = potential.predict(atoms)
    assert atoms.get_potential_energy() == expected["energy"]
    assert atoms.get_potential_energy(force_consistent=True) == expected["energy"]
    np.testing.assert_array_equal(atoms.get_forces(), expected["forces"])
    np.testing.assert_array_equal(atoms.calc.get_property("energies"), expected["energies"])
    if atoms.pbc.any():
        np.testing.assert_array_equal(atoms.get_stress(), full_3x3_to_voigt_6_stress(expected["stress"]))


def test_results_equal_potential_predict_in_float64(calc, potential, ethanol, crystal):
    for atoms in (ethanol, crystal):
        _assert_equal_to_predict(calc, potential, atoms)
    assert {dtype for *_, dtype in calc.shapes} == {"float64"}


def test_results_equal_potential_predict_in_float32(potential, ethanol):
    with jax.enable_x64(False):
        calc32 = JaxAtomCalculator(potential)
        _assert_equal_to_predict(calc32, potential, ethanol)
        assert {dtype for *_, dtype in calc32.shapes} == {"float32"}
        assert calc32.results["forces"].dtype == np.float64  # float32 values, as ASE expects float64 arrays


def test_calculator_loads_a_model_directory(tmp_path, calc, potential, ethanol):
    potential.save(tmp_path / "model")
    loaded = _with_calc(ethanol, JaxAtomCalculator(tmp_path / "model"))
    reference = _with_calc(ethanol, calc)
    assert loaded.get_potential_energy() == reference.get_potential_energy()
    np.testing.assert_array_equal(loaded.get_forces(), reference.get_forces())


def _thermalise(atoms, temperature_K: float, seed: int) -> None:
    """Maxwell-Boltzmann momenta without centre-of-mass motion."""
    masses = atoms.get_masses()[:, None]
    momenta = np.random.default_rng(seed).normal(size=(len(atoms), 3)) * np.sqrt(masses * units.kB * temperature_K)
    atoms.set_momenta(momenta - masses * momenta.sum(axis=0) / masses.sum())


def test_velocity_verlet_conserves_energy_with_few_compiled_shapes(potential, ethanol):
    calc = JaxAtomCalculator(potential)
    atoms = _with_calc(ethanol, calc)
    _thermalise(atoms, 300.0, seed=0)
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    total, potential_energy, n_edges = [], [], []

    def record():
        total.append(atoms.get_total_energy())
        potential_energy.append(atoms.get_potential_energy())
        n_edges.append(graph_from_atoms(atoms, MD_CUTOFF).n_edge)

    dynamics.attach(record, interval=1)
    dynamics.run(200)
    # The random tiny model is smooth but does not bind ethanol: atoms drift apart and many pairs leave the cutoff.
    assert len(set(n_edges)) > 5
    assert np.ptp(total) < 1e-2  # eV, over 100 fs at 0.5 fs
    assert np.ptp(potential_energy) > 50 * np.ptp(total)
    assert calc.n_shapes <= 3


def test_langevin_runs(calc, ethanol):
    atoms = _with_calc(ethanol, calc)
    dynamics = Langevin(
        atoms, 0.5 * units.fs, temperature_K=300.0, friction=0.02 / units.fs, fixcm=False, rng=np.random.default_rng(0)
    )
    dynamics.run(20)
    assert np.all(np.isfinite(atoms.positions)) and atoms.get_temperature() > 0


def test_bfgs_reduces_fmax(calc, ethanol):
    atoms = _with_calc(ethanol, calc)
    atoms.rattle(0.05, seed=3)
    initial_fmax = np.linalg.norm(atoms.get_forces(), axis=1).max()
    initial_energy = atoms.get_potential_energy()
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=30)
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() < 0.2 * initial_fmax
    assert atoms.get_potential_energy() < initial_energy


def test_capacity_grows_with_headroom_and_shrinks_after_sustained_low_need():
    capacity = Capacity(multiple=64, shrink_after=5)
    assert capacity.fit(100) == 128  # ceil(1.25 * 100) rounded up to 64
    assert {capacity.fit(need) for need in [90, 120, 110, 128, 70, 100] * 10} == {128}  # fluctuations: no change
    assert capacity.fit(129) == 192
    assert [capacity.fit(40) for _ in range(5)] == [192, 192, 192, 192, 64]
    assert Capacity(multiple=8).fit(0) == 8


@pytest.fixture(scope="module")
def members():
    return [_potential(seed) for seed in (1, 2, 3)]


@pytest.mark.parametrize("kind", ["molecule", "crystal"])
def test_ensemble_calculator_mean_and_std(members, ethanol, kind):
    structure = ethanol if kind == "molecule" else _rattled_crystal()
    atoms = _with_calc(structure, EnsembleCalculator(members))
    singles = [_with_calc(structure, JaxAtomCalculator(member)) for member in members]
    energies = np.array([s.get_potential_energy() for s in singles])
    forces = np.array([s.get_forces() for s in singles])
    assert atoms.get_potential_energy() == pytest.approx(energies.mean(), abs=1e-9)
    assert atoms.calc.get_property("energy_std") == pytest.approx(energies.std(), abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), forces.mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(atoms.calc.results["forces_std"], forces.std(axis=0), atol=1e-9)
    np.testing.assert_allclose(atoms.calc.results["energy_members"], energies, atol=1e-9)
    assert atoms.calc.results["energy_std"] > 1e-3 and atoms.calc.results["forces_std"].max() > 1e-3
    if kind == "crystal":
        stresses = np.array([s.get_stress() for s in singles])
        np.testing.assert_allclose(atoms.get_stress(), stresses.mean(axis=0), atol=1e-10)
        np.testing.assert_allclose(atoms.calc.get_property("stress_std"), stresses.std(axis=0), atol=1e-10)


def test_ensemble_of_identical_members_has_zero_spread(potential, ethanol):
    atoms = _with_calc(ethanol, EnsembleCalculator([potential] * 3))
    assert atoms.get_potential_energy() == pytest.approx(potential.predict(ethanol)["energy"], abs=1e-9)
    assert atoms.calc.results["energy_std"] < 1e-9
    assert np.abs(atoms.calc.results["forces_std"]).max() < 1e-12


def test_unknown_element_is_refused(calc, members):
    for calculator in (calc, EnsembleCalculator(members)):
        with pytest.raises(ValueError, match="elements the model was not built for: Cl"):
            _with_calc(molecule("CH3Cl"), calculator).get_potential_energy()


def test_nan_positions_are_refused(calc, ethanol):
    atoms = _with_calc(ethanol, calc)
    atoms.positions[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"atoms \[2\] are NaN"):
        atoms.get_forces()


def test_stress_of_a_molecule_is_not_implemented(calc, ethanol):
    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        _with_calc(ethanol, calc).get_stress()
