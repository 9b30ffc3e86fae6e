"""Fully flexible stochastic cell rescaling (Del Tatto et al. 2022, ``cell_flexibility="full"``): a sheared and
strained spring crystal relaxes to its stress-free cubic cell with the pressure tensor at the target, the effective
energy drifts only by integration error, the ideal gas keeps the isobaric volume distribution, runs restart
bit-identically, and the setting is checked (and absent from the settings of older runs)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms, units

from jaxatom.errors import ConfigError
from jaxatom.md import ForceField, StochasticCellRescaling, read_trajectory, simulate
from jaxatom.md.driver import _comparable_settings

A0 = 2.5  # Å, the springs' simple-cubic lattice constant
SITES = np.array(list(itertools.product(range(2), repeat=3)))  # a 2×2×2 supercell, lattice units
#: Each site's bonds: the 3 nearest (stiffness 1 eV/Å²) and 6 next-nearest neighbours (0.5 eV/Å²), each once.
BOND_VECTORS = np.array([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, -1, 0), (1, 0, 1), (1, 0, -1), (0, 1, 1),
                         (0, 1, -1)])  # fmt: skip
BOND_STIFFNESS = np.array([1.0] * 3 + [0.5] * 6)


def _bonds() -> tuple[np.ndarray, ...]:
    """``(first [B], second [B], image shift [B, 3] in cells, rest length [B] Å, stiffness [B] eV/Å²)``."""
    rows = []
    for i, site in enumerate(SITES):
        for vector, stiffness in zip(BOND_VECTORS, BOND_STIFFNESS, strict=True):
            target = site + vector
            j = int(np.flatnonzero((SITES == target % 2).all(axis=1))[0])
            rows.append((i, j, target // 2, A0 * np.linalg.norm(vector), stiffness))
    return tuple(np.array(column) for column in zip(*rows, strict=True))


FIRST, SECOND, SHIFTS, REST, STIFFNESS = _bonds()


def _spring_energy(positions: jax.Array, cell: jax.Array) -> jax.Array:
    """Harmonic springs (eV) between lattice neighbours, across the images of ``cell [3, 3]`` (rows, Å)."""
    bonds = positions[SECOND] + SHIFTS @ cell - positions[FIRST]
    return 0.5 * jnp.sum(STIFFNESS * (jnp.linalg.norm(bonds, axis=-1) - REST) ** 2)


def _springs(params, positions: jax.Array, neighbors, cell: jax.Array) -> dict:
    """Energy, forces and stress ``(1/V) ∂E/∂ε`` (eV/Å³, ASE's sign) of the spring crystal."""

    def strained(strain: jax.Array) -> jax.Array:
        deformation = jnp.eye(3, dtype=cell.dtype) + strain
        return _spring_energy(positions @ deformation, cell @ deformation)

    energy, gradient = jax.value_and_grad(_spring_energy)(positions, cell)
    stress = jax.grad(strained)(jnp.zeros_like(cell)) / jnp.abs(jnp.linalg.det(cell))
    return {"energy": energy, "forces": -gradient, "stress": stress}


SPRINGS = ForceField(apply=_springs, params=jnp.zeros(()), variable_cell=True)
#: The stress-free cell of the spring crystal (P₀ = 0, no thermal expansion to speak of at 30 K).
CUBE = 2 * A0 * np.eye(3)
SHEAR = np.array([[1.04, 0.0, 0.0], [0.08, 0.97, 0.0], [-0.06, 0.05, 1.02]])


def _sheared_crystal() -> Atoms:
    """The spring crystal strained and sheared by :data:`SHEAR`, then turned away from ASE's standard orientation."""
    turn, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    turn *= np.sign(np.linalg.det(turn))
    return Atoms("Ar8", scaled_positions=SITES / 2, cell=CUBE @ SHEAR @ turn, pbc=True)


def _crystal_npt(**changes) -> StochasticCellRescaling:
    settings = dict(temperature_K=30.0, pressure=0.0, barostat_tau_fs=100.0, compressibility_per_GPa=0.016,
                    friction_per_fs=0.02, cell_flexibility="full")  # fmt: skip
    return StochasticCellRescaling(**{**settings, **changes})


@pytest.fixture(scope="module")
def crystal_run():
    """16 replicas of the sheared crystal, 6 ps at 30 K and P₀ = 0 with a 100 fs barostat."""
    with jax.enable_x64(True):
        return simulate(SPRINGS, _sheared_crystal(), 3000, timestep_fs=2.0, ensemble=_crystal_npt(), n_replicas=16,
                        stride=30, progress=False).frames  # fmt: skip


def test_full_flexibility_relaxes_a_sheared_cell_to_the_stress_free_shape(crystal_run):
    cells = crystal_run["cell"]
    assert np.all(cells[..., np.triu_indices(3, 1)[0], np.triu_indices(3, 1)[1]] == 0.0)  # never rotates
    assert np.abs(cells[1] - CUBE).max() > 0.15  # still sheared after 60 fs (0.30 Å at the start, frame 0)
    relaxed = cells[51:].mean(axis=(0, 1))  # the last 3 ps
    np.testing.assert_allclose(relaxed, CUBE, atol=0.02)
    assert crystal_run["temperature"][51:].mean() == pytest.approx(30.0, rel=0.05)


def test_pressure_tensor_averages_to_the_target(crystal_run):
    tensor = crystal_run["pressure_tensor"]  # GPa, [F, R, 3, 3]
    assert tensor.shape == (101, 16, 3, 3)  # the start and 100 strides
    np.testing.assert_allclose(np.trace(tensor, axis1=-2, axis2=-1) / 3, crystal_run["pressure"], atol=1e-12)
    assert np.abs(tensor[0]).mean() > 0.5  # the sheared start is far from the target
    diagonal = np.diagonal(tensor[51:], axis1=-2, axis2=-1).mean(axis=(0, 1))
    np.testing.assert_allclose(diagonal, 0.0, atol=0.1)  # P₀ = 0; each frame fluctuates by ~0.5 GPa
    np.testing.assert_allclose(tensor[51:].mean(axis=(0, 1)), 0.0, atol=0.1)  # no shear stress left either


def test_effective_energy_drift_shrinks_with_the_time_step():
    """U + K + P₀V + heat (thermostat and barostat work) of the flexible cell drifts only by integration error."""
    ensemble = _crystal_npt(pressure=0.5)
    drift = {}
    with jax.enable_x64(True):
        for dt in (2.0, 0.5):
            run = simulate(SPRINGS, _sheared_crystal(), int(2000 / dt), timestep_fs=dt, ensemble=ensemble,
                           n_replicas=8, stride=int(100 / dt), progress=False)  # fmt: skip
            energy = run.frames["conserved_energy"]
            drift[dt] = np.abs(energy - energy[0]).max(axis=0).mean()
    assert drift[0.5] < drift[2.0] / 4
    assert drift[0.5] < 1e-4  # eV over 2 ps, against the 0.2 eV of elastic energy released


N_GAS = 8


def _ideal_gas(params, positions, neighbors, cell):
    return {"energy": 0.0 * jnp.sum(positions), "forces": jnp.zeros_like(positions),
            "stress": jnp.zeros((3, 3), positions.dtype)}  # fmt: skip


@pytest.mark.parametrize("flexibility", ["isotropic", "full"])
def test_ideal_gas_volume_follows_the_isobaric_distribution(flexibility):
    """Both variants sample ``∝ V^N exp(−βP₀V)``: ``<V> = (N + 1) kT/P₀``, ``var V = (N + 1) (kT/P₀)²``. For "full"
    that is the volume marginal of Martyna–Tobias–Klein's flexible-cell ensemble (measure ``V⁻² dh``); the measures
    ``dh`` or ``V⁻³ dh`` (without the drift correction) would give ``<V>`` 11 % higher or lower."""
    force_field = ForceField(apply=_ideal_gas, params=jnp.zeros(()), variable_cell=True)
    rng = np.random.default_rng(0)
    atoms = Atoms("Ar8", positions=rng.random((N_GAS, 3)) * 10.0, cell=np.eye(3) * 10.0, pbc=True)
    pressure = (N_GAS + 1) * units.kB * 300.0 / 1000.0  # eV/Å³
    ensemble = StochasticCellRescaling(
        temperature_K=300.0, pressure=pressure, pressure_unit="eV/Ang^3", compressibility_per_GPa=25.0,
        barostat_tau_fs=200.0, friction_per_fs=0.02, cell_flexibility=flexibility,
    )  # fmt: skip
    with jax.enable_x64(True):
        frames = simulate(force_field, atoms, 20000, timestep_fs=2.0, ensemble=ensemble, n_replicas=16, stride=20,
                          progress=False).frames  # fmt: skip
    volumes = frames["volume"][200:]  # after 8 ps
    scale = units.kB * 300.0 / pressure
    assert volumes.mean() == pytest.approx((N_GAS + 1) * scale, rel=0.03)
    assert volumes.var() == pytest.approx((N_GAS + 1) * scale**2, rel=0.15)
    assert ("pressure_tensor" in frames) == (flexibility == "full")


def test_unknown_cell_flexibility_is_refused():
    with pytest.raises(ConfigError, match="unknown cell_flexibility 'shear'; choose one of isotropic, full"):
        StochasticCellRescaling(cell_flexibility="shear")


def test_settings_of_earlier_isotropic_runs_still_match():
    """Checkpoints written before ``cell_flexibility`` existed compare equal to today's isotropic settings."""
    today = StochasticCellRescaling(pressure=1.0)
    recorded = {key: value for key, value in today.settings().items() if key != "cell_flexibility"}
    assert _comparable_settings(recorded)["cell_flexibility"] == "isotropic"
    assert {k: v for k, v in _comparable_settings(recorded).items() if k in today.settings()} == today.settings()


def test_full_flexibility_restarts_bit_identically(tmp_path):
    options = dict(ensemble=_crystal_npt(temperature_K=100.0), timestep_fs=2.0, stride=5, frames_per_chunk=2,
                   n_replicas=2, progress=False)  # fmt: skip
    whole = simulate(SPRINGS, _sheared_crystal(), 20, **options).frames
    output = tmp_path / "npt_full.h5"
    simulate(SPRINGS, _sheared_crystal(), 10, output=output, **options)
    simulate(SPRINGS, _sheared_crystal(), 20, output=output, **options)
    data = read_trajectory(output)
    for name in ("cell", "positions", "pressure_tensor", "conserved_energy"):
        np.testing.assert_array_equal(data[name], whole[name])
    assert data["attrs"]["cell_flexibility"] == "full"
    assert not np.allclose(whole["cell"][-1], whole["cell"][0])
