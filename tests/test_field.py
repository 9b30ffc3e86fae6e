"""Molecules in a uniform electric field: E(R, F) = E(R) − μ·F − ½ F·α·F / k_e. The field derivatives of the energy
give back the dipole and polarizability heads, forces are the position derivatives of the field energy, and
predict, the ASE calculator and MD agree — all checked against finite differences in float64."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

import jaxatom
from jaxatom.calculators import JaxAtomCalculator
from jaxatom.errors import ConfigError
from jaxatom.nn import ENERGY_HEAD, DipoleMoment, Polarizability
from jaxatom.potential import OutputScaling
from jaxatom.potential.field import COULOMB_EV_ANG, field_response

from .conftest import ELEMENTS, tiny_painn

FIELD = np.array([0.02, -0.05, 0.08])  # V/Å


@pytest.fixture(scope="module")
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def potential(x64) -> jaxatom.Potential:
    """A tiny PaiNN with energy, dipole (with atomic dipoles) and polarizability heads; the polarizability carries a
    scale and offsets, so the field energy must use the offsets too."""
    heads = [ENERGY_HEAD, DipoleMoment(use_vector_representation=True), Polarizability()]
    scaling = {"polarizability": OutputScaling(scale=3.0, shift=0.4)}
    return jaxatom.Potential.create(tiny_painn(), ELEMENTS, seed=3, heads=heads, scaling=scaling, energy_shift=-2.0)


@pytest.fixture(scope="module")
def ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    return atoms


def test_the_field_energy_is_minus_mu_f_minus_half_f_alpha_f(potential, ethanol):
    plain = potential.predict(ethanol)
    in_field = potential.predict(ethanol, field=FIELD)
    expected = -plain["dipole_moment"] @ FIELD - 0.5 * FIELD @ plain["polarizability"] @ FIELD / COULOMB_EV_ANG
    assert in_field["energy"] - plain["energy"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    np.testing.assert_allclose(in_field["dipole_moment"], plain["dipole_moment"], rtol=1e-12)


def test_dipole_and_polarizability_are_field_derivatives_of_the_energy(potential, ethanol):
    plain = potential.predict(ethanol)
    response = field_response(potential, ethanol)
    np.testing.assert_allclose(response["dipole_moment"], plain["dipole_moment"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(response["polarizability"], plain["polarizability"], rtol=1e-9, atol=1e-12)
    assert response["energy"] == pytest.approx(plain["energy"], rel=1e-12)
    in_field = field_response(potential, ethanol, FIELD)
    induced = plain["polarizability"] @ FIELD / COULOMB_EV_ANG
    np.testing.assert_allclose(in_field["dipole_moment"], plain["dipole_moment"] + induced, rtol=1e-9, atol=1e-12)


def test_field_response_matches_finite_differences_in_the_field(potential, ethanol):
    h = 1e-4
    energy = lambda f: potential.predict(ethanol, field=f)["energy"]  # noqa: E731
    response = field_response(potential, ethanol, FIELD)
    steps = h * np.eye(3)
    gradient = np.array([(energy(FIELD + s) - energy(FIELD - s)) / (2 * h) for s in steps])
    np.testing.assert_allclose(-gradient, response["dipole_moment"], rtol=1e-6, atol=1e-9)
    curvature = np.array(
        [[(energy(FIELD + a + b) - energy(FIELD + a - b) - energy(FIELD - a + b) + energy(FIELD - a - b)) / (4 * h * h)
          for b in steps] for a in steps]
    )  # fmt: skip
    np.testing.assert_allclose(-COULOMB_EV_ANG * curvature, response["polarizability"], rtol=1e-4, atol=1e-6)


def test_forces_in_a_field_are_minus_the_gradient_of_the_field_energy(potential, ethanol):
    h = 1e-5
    forces = potential.predict(ethanol, field=FIELD)["forces"]
    for atom, axis in [(0, 0), (2, 1), (8, 2)]:
        moved = [ethanol.copy(), ethanol.copy()]
        moved[0].positions[atom, axis] += h
        moved[1].positions[atom, axis] -= h
        plus, minus = (potential.predict(a, field=FIELD)["energy"] for a in moved)
        assert forces[atom, axis] == pytest.approx(-(plus - minus) / (2 * h), rel=1e-6, abs=1e-8)
    assert not np.allclose(forces, potential.predict(ethanol)["forces"], atol=1e-6)


def test_calculator_and_md_force_field_feel_the_same_field(potential, ethanol):
    from jaxatom.md.forces import from_potential
    from jaxatom.md.neighbors import EdgeBuilder

    expected = potential.predict(ethanol, field=FIELD)
    atoms = ethanol.copy()
    atoms.calc = JaxAtomCalculator(potential, electric_field=FIELD)
    assert atoms.get_potential_energy() == pytest.approx(expected["energy"], rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), expected["forces"], rtol=1e-9, atol=1e-12)
    edges = EdgeBuilder.create(atoms.numbers, np.zeros((3, 3)), atoms.pbc, potential.cutoff)
    force_field = from_potential(potential, edges, field=FIELD)
    out = force_field.apply(force_field.params, jax.numpy.asarray(atoms.positions), None)
    assert float(out["energy"]) + force_field.energy_offset == pytest.approx(expected["energy"], rel=1e-12)
    np.testing.assert_allclose(out["forces"], expected["forces"], rtol=1e-9, atol=1e-12)


def test_nve_in_a_field_conserves_the_field_energy(potential, ethanol):
    run = jaxatom.md.simulate(
        potential, ethanol, steps=200, timestep_fs=0.25, stride=10, electric_field=FIELD * 5, progress=False
    )
    conserved = run.frames["conserved_energy"][:, 0]
    assert np.ptp(conserved) < 2e-4 * len(ethanol)
    assert run.settings["electric_field"] == pytest.approx(list(FIELD * 5))


def test_field_errors_name_the_problem(potential, ethanol):
    plain = jaxatom.Potential.create(tiny_painn(), ELEMENTS, seed=3)
    with pytest.raises(ConfigError, match="DipoleMoment head"):
        plain.predict(ethanol, field=FIELD)
    with pytest.raises(ConfigError, match="DipoleMoment head"):
        JaxAtomCalculator(plain, electric_field=FIELD)
    with pytest.raises(ConfigError, match="three finite numbers"):
        potential.predict(ethanol, field=[0.0, 1.0])
    magnitude = jaxatom.Potential.create(
        tiny_painn(), ELEMENTS, heads=[ENERGY_HEAD, DipoleMoment(predict_magnitude=True)]
    )
    with pytest.raises(ConfigError, match="dipole vector"):
        field_response(magnitude, ethanol)
