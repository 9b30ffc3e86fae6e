"""Forces and stress against central finite differences of the energy, in float64."""

import jax
import numpy as np
import pytest

import jaxatom

from .conftest import ELEMENTS, tiny_painn, tiny_schnet, triclinic_crystal

MODELS = {
    "schnet": lambda: tiny_schnet(),
    "schnet_bessel_mollifier": lambda: tiny_schnet(radial_basis="bessel", cutoff_fn="mollifier", n_filters=12),
    "painn": lambda: tiny_painn(),
    "painn_shared_bessel": lambda: tiny_painn(shared_filters=True, shared_interactions=True, radial_basis="bessel"),
}
STEP = 1e-5


@pytest.fixture(scope="module", autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module", params=list(MODELS))
def potential64(request, float64):
    return jaxatom.Potential.create(MODELS[request.param](), elements=ELEMENTS, seed=3, energy_shift=-1.0)


def _energy(potential, atoms) -> float:
    return potential.predict(atoms)["energy"]


def _structures(ethanol):
    crystal = triclinic_crystal(seed=1)
    crystal.rattle(0.05, seed=2)
    return {"molecule": ethanol, "triclinic_crystal": crystal}


@pytest.mark.parametrize("kind", ["molecule", "triclinic_crystal"])
def test_forces_are_minus_the_energy_gradient(potential64, ethanol, kind):
    atoms = _structures(ethanol)[kind]
    forces = potential64.predict(atoms)["forces"]
    assert forces.dtype == np.float64
    numerical = np.zeros_like(forces)
    for a in range(len(atoms)):
        for k in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, k] += STEP
            minus.positions[a, k] -= STEP
            numerical[a, k] = -(_energy(potential64, plus) - _energy(potential64, minus)) / (2 * STEP)
    np.testing.assert_allclose(forces, numerical, rtol=1e-6, atol=1e-7)
    assert np.abs(forces).max() > 1e-3


def test_stress_is_the_strain_derivative_over_volume(potential64, ethanol):
    atoms = _structures(ethanol)["triclinic_crystal"]
    stress = potential64.predict(atoms)["stress"]
    np.testing.assert_allclose(stress, stress.T, atol=1e-12)
    numerical = np.zeros((3, 3))
    volume = atoms.get_volume()
    for i in range(3):
        for j in range(3):
            energies = []
            for sign in (1, -1):
                strain = np.eye(3)
                strain[i, j] += sign * STEP / 2
                strain[j, i] += sign * STEP / 2
                deformed = atoms.copy()
                deformed.set_cell(atoms.cell[:] @ strain, scale_atoms=True)
                energies.append(_energy(potential64, deformed))
            numerical[i, j] = (energies[0] - energies[1]) / (2 * STEP) / volume
    np.testing.assert_allclose(stress, numerical, rtol=1e-6, atol=1e-8)
    assert np.abs(stress).max() > 1e-4


def test_float64_mode_gives_float64_results(potential64, ethanol):
    result = potential64.predict(ethanol)
    assert result["forces"].dtype == np.float64 and result["energies"].dtype == np.float64
