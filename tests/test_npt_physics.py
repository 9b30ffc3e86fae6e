"""Constant-pressure physics of a model crystal (a Morse fcc solid through the full model path, float64): the virial
pressure and stress equal finite differences of the energy in the volume and the strain, and NPT samples the
volume the energy–volume curve predicts — mean at the zero-pressure volume, variance ``kT V / B`` (at 3 K, where
the crystal is harmonic enough for the static bulk modulus to be the isothermal one)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import units
from ase.build import bulk

import jaxatom
from jaxatom.md import StochasticCellRescaling, simulate
from jaxatom.md.forces import from_potential
from jaxatom.md.neighbors import EdgeBuilder

from .conftest import MorseEnergy, tiny_painn

#: An fcc "carbon" held together by Morse pairs of 2.5 Å (elements below 10 are what the test head tabulates).
A0 = 3.6
GPA = units.GPa  # eV/Å³ per GPa


@pytest.fixture(scope="module")
def crystal_model():
    with jax.enable_x64(True):
        yield jaxatom.Potential.create(tiny_painn(), [6], seed=0, heads=[MorseEnergy(depth=0.3, alpha=1.4,
                                                                                     default_r0=2.5)])  # fmt: skip


def _strained(atoms, strain: np.ndarray):
    out = atoms.copy()
    out.set_cell(atoms.cell[:] @ (np.eye(3) + strain), scale_atoms=True)
    return out


def test_virial_stress_is_the_strain_derivative_of_the_energy(crystal_model):
    atoms = _strained(bulk("C", "fcc", a=A0, cubic=True), np.array([[0.02, 0.01, 0], [0, -0.01, 0.03], [0, 0, 0]]))
    atoms.rattle(0.05, seed=1)
    with jax.enable_x64(True):
        edges = EdgeBuilder.create(atoms.numbers, atoms.cell[:], True, crystal_model.cutoff, cell_margin=0.85)
        force_field = from_potential(crystal_model, edges, variable_cell=True)
        out = force_field.apply(force_field.params, jnp.asarray(atoms.positions), None, jnp.asarray(atoms.cell[:]))
        h = 1e-5
        for i, j in [(0, 0), (1, 2), (2, 1), (0, 1)]:
            step = np.zeros((3, 3))
            step[i, j] = step[j, i] = 0.5 * h
            plus, minus = (crystal_model.predict(_strained(atoms, s))["energy"] for s in (step, -step))
            derivative = (plus - minus) / (h if i == j else 2 * h)  # dE/dε_ij with ε_ij = ε_ji
            assert out["stress"][i, j] == pytest.approx(derivative / atoms.get_volume(), rel=1e-6)
        volumes, energies = [], []
        for scale in (1 - h, 1 + h):
            scaled = _strained(atoms, (scale - 1) * np.eye(3))
            volumes.append(scaled.get_volume())
            energies.append(crystal_model.predict(scaled)["energy"])
    pressure = -np.trace(np.asarray(out["stress"])) / 3  # the potential part of the pressure estimator
    assert pressure == pytest.approx(-(energies[1] - energies[0]) / (volumes[1] - volumes[0]), rel=1e-6)


def _energy_volume_curve(model, atoms) -> tuple[float, float]:
    """The zero-pressure volume (Å³) and bulk modulus ``V E''(V)`` (eV/Å³) of the perfect crystal."""
    scales = np.linspace(0.97, 1.05, 41)
    volumes = atoms.get_volume() * scales**3
    energies = [model.predict(_strained(atoms, (s - 1) * np.eye(3)))["energy"] for s in scales]
    fit = np.polynomial.Polynomial.fit(volumes, energies, 6)
    v0 = min((r.real for r in fit.deriv().roots() if abs(r.imag) < 1e-9), key=lambda r: abs(r - volumes.mean()))
    return v0, v0 * fit.deriv(2)(v0)


def test_npt_volume_fluctuations_give_the_compressibility(crystal_model):
    atoms = bulk("C", "fcc", a=A0, cubic=True)
    temperature = 3.0  # low enough that anharmonic thermal expansion (0.07 % per K here) stays below 0.3 %
    with jax.enable_x64(True):
        v0, bulk_modulus = _energy_volume_curve(crystal_model, atoms)
        start = _strained(atoms, ((v0 / atoms.get_volume()) ** (1 / 3) - 1) * np.eye(3))
        compressibility = GPA / bulk_modulus  # 1/GPa
        ensemble = StochasticCellRescaling(temperature_K=temperature, pressure=0.0, barostat_tau_fs=100.0,
                                           compressibility_per_GPa=compressibility, friction_per_fs=0.02)  # fmt: skip
        run = simulate(crystal_model, start, 3000, timestep_fs=5.0, ensemble=ensemble, n_replicas=32, stride=10,
                       frames_per_chunk=200, progress=False)  # fmt: skip
    volumes = run.frames["volume"][41:]  # after 2 ps (frame 0 is the start)
    kT = units.kB * temperature
    assert volumes.mean() == pytest.approx(v0, rel=3e-3)
    assert volumes.var() == pytest.approx(kT * v0 / bulk_modulus, rel=0.06)  # <δV²> = kT V β_T
    assert run.frames["temperature"][41:].mean() == pytest.approx(temperature, rel=0.03)
    assert abs(run.frames["pressure"][41:].mean()) < 1e-3 * bulk_modulus / GPA  # GPa
