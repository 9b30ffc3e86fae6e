"""Constant-pressure MD with the Martyna–Tobias–Klein barostat (npt_mtk): its conserved quantity drifts by the
integrator's error only (∝ dt²), an ideal gas samples the exact isobaric volume distribution, a fully flexible cell
relaxes a sheared crystal's stress without rotating while an isotropic one cannot, runs restart bit-identically, and
bad settings are refused by name."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk, molecule

from jaxatom.errors import ConfigError, StructureError
from jaxatom.md import ForceField, read_trajectory, simulate
from jaxatom.md.ensembles import MTKBarostat, ensemble_from_settings

SIGMA, EPSILON, CUTOFF = 3.405, 0.0104, 5.5  # argon Lennard-Jones (Å, eV), shifted-force at the cutoff (Å)
IMAGES = np.array(list(itertools.product((-1, 0, 1), repeat=3)), float)
SHEAR = np.array([[0.03, 0.03, 0.0], [0.03, -0.02, 0.0], [0.0, 0.0, 0.0]])  # symmetric strain of the start cell
N_GAS = 8


def _pair(r: jax.Array) -> jax.Array:
    return 4 * EPSILON * ((SIGMA / r) ** 12 - (SIGMA / r) ** 6)


def _lj_energy(positions: jax.Array, cell: jax.Array) -> jax.Array:
    """Shifted-force Lennard-Jones energy (eV) of ``[N, 3]`` positions (Å) in the periodic ``cell [3, 3]`` (rows);
    pairs through the 27 nearest images, exact while the cutoff is below the cell's perpendicular widths."""
    frac = positions @ jnp.linalg.inv(cell)
    d = frac[None, :, :] - frac[:, None, :]
    vectors = (d - jnp.round(d))[:, :, None, :] + IMAGES
    r2 = jnp.sum((vectors @ cell) ** 2, -1)
    is_self = (jnp.eye(len(positions))[:, :, None] * np.all(IMAGES == 0, -1)) > 0
    inside = (r2 < CUTOFF**2) & ~is_self
    r = jnp.sqrt(jnp.where(inside, r2, CUTOFF**2))
    energy = _pair(r) - _pair(CUTOFF) - (r - CUTOFF) * jax.grad(_pair)(CUTOFF)
    return 0.5 * jnp.sum(jnp.where(inside, energy, 0.0))


def _lj_apply(params, positions, neighbors, cell) -> dict:
    """Energy, forces and stress ``(1/V) ∂E/∂ε`` (eV/Å³) through a symmetric strain of positions and cell."""

    def strained(x, strain):
        deformation = jnp.eye(3) + 0.5 * (strain + strain.T)
        return _lj_energy(x @ deformation.T, cell @ deformation.T)

    zero = jnp.zeros((3, 3), positions.dtype)
    energy, (dx, de) = jax.value_and_grad(strained, argnums=(0, 1))(positions, zero)
    return {"energy": energy, "forces": -dx, "stress": de / jnp.abs(jnp.linalg.det(cell))}


LENNARD_JONES = ForceField(apply=_lj_apply, params=jnp.zeros(()), variable_cell=True)


def _ideal_gas(params, positions, neighbors, cell) -> dict:
    return {"energy": 0.0 * jnp.sum(positions), "forces": jnp.zeros_like(positions),
            "stress": jnp.zeros((3, 3), positions.dtype)}  # fmt: skip


@pytest.fixture(scope="module")
def sheared_argon() -> Atoms:
    """8 argon atoms in the triclinic fcc primitive cell (2×2×2) near the stress-free lattice constant, sheared."""
    atoms = bulk("Ar", "fcc", a=5.42).repeat((2, 2, 2))
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + SHEAR).T, scale_atoms=True)
    return atoms


@pytest.mark.parametrize("flexibility", ["isotropic", "full"])
def test_conserved_quantity_drifts_by_the_integration_error(sheared_argon, flexibility):
    """Over 1 ps of large cell oscillations the MTK energy deviates little, and ~4× less when dt halves."""
    ensemble = MTKBarostat(temperature_K=40.0, pressure=0.0, tau_fs=50.0, barostat_tau_fs=200.0,
                           cell_flexibility=flexibility)  # fmt: skip
    drift, volumes = {}, None
    with jax.enable_x64(True):
        for dt in (4.0, 2.0):
            run = simulate(LENNARD_JONES, sheared_argon, int(1000 / dt), timestep_fs=dt, ensemble=ensemble,
                           n_replicas=2, stride=int(20 / dt), progress=False)  # fmt: skip
            energy = run.frames["conserved_energy"]
            drift[dt] = np.abs(energy - energy[0]).max()
            volumes = run.frames["volume"]
    print(f"npt_mtk {flexibility}: max |ΔH| {drift[4.0]:.2e} eV (dt 4 fs), {drift[2.0]:.2e} eV (dt 2 fs)")
    assert volumes.max() / volumes.min() > 1.05  # the barostat did move the cell
    assert drift[2.0] < drift[4.0] / 3  # second order: ideally 4
    assert drift[2.0] < 3e-4  # eV, against kT = 3.4e-3 eV and a potential energy of -0.3 eV


def test_ideal_gas_volume_follows_the_isobaric_distribution():
    """An ideal gas of N atoms whose total momentum is conserved samples ``V^(N_f/3) exp(−P₀V/kT) dV/V`` with
    ``N_f = 3N − 3``: a Gamma distribution, ``<V> = N kT/P₀`` and ``var V = N (kT/P₀)²``. (The centre of mass stays
    at the same scaled position, so it does not add the factor V it adds when it moves freely, as under the Langevin
    thermostat of npt_scr, where ``<V> = (N + 1) kT/P₀``.)"""
    force_field = ForceField(apply=_ideal_gas, params=jnp.zeros(()), variable_cell=True)
    rng = np.random.default_rng(0)
    atoms = Atoms("Ar8", positions=rng.random((N_GAS, 3)) * 10.0, cell=np.eye(3) * 10.0, pbc=True)
    pressure = N_GAS * units.kB * 300.0 / 1000.0  # eV/Å³: <V> = 1000 Å³
    ensemble = MTKBarostat(temperature_K=300.0, pressure=pressure, pressure_unit="eV/Ang^3", tau_fs=50.0,
                           barostat_tau_fs=200.0)  # fmt: skip
    with jax.enable_x64(True):
        run = simulate(force_field, atoms, 40000, timestep_fs=2.0, ensemble=ensemble, n_replicas=32, stride=20,
                       progress=False)  # fmt: skip
    volumes = run.frames["volume"][200:]  # after 8 ps
    scale = units.kB * 300.0 / pressure
    print(f"ideal gas: <V> = {volumes.mean() / scale:.3f} kT/P, var V = {volumes.var() / scale**2:.3f} (kT/P)²")
    assert volumes.mean() == pytest.approx(N_GAS * scale, rel=0.02)
    assert volumes.var() == pytest.approx(N_GAS * scale**2, rel=0.1)
    assert run.frames["temperature"].mean() == pytest.approx(300.0, rel=0.02)
    energy = run.frames["conserved_energy"]
    assert np.abs(energy - energy[0]).max() < 1e-3  # eV over 80 ps
    np.testing.assert_allclose(np.linalg.det(run.frames["cell"]), run.frames["volume"], rtol=1e-10)


@pytest.fixture(scope="module")
def relaxed_shapes(sheared_argon):
    """The sheared crystal at 20 K and P₀ = 0, 20 ps with a fully flexible and with an isotropic cell, every step."""
    runs = {}
    with jax.enable_x64(True):
        for flexibility in ("full", "isotropic"):
            ensemble = MTKBarostat(temperature_K=20.0, pressure=0.0, tau_fs=100.0, barostat_tau_fs=500.0,
                                   cell_flexibility=flexibility)  # fmt: skip
            run = simulate(LENNARD_JONES, sheared_argon, 4000, timestep_fs=5.0, ensemble=ensemble, n_replicas=2,
                           stride=1, frames_per_chunk=1000, progress=False)  # fmt: skip
            runs[flexibility] = run.frames
    return runs


def _rotation_angle(start: np.ndarray, cell: np.ndarray) -> float:
    """Angle (rad) of the rotation in the polar decomposition of the deformation from ``start`` to ``cell`` (rows)."""
    u, _, vt = np.linalg.svd(np.linalg.solve(start, cell))
    rotation = u @ vt
    return float(np.arcsin(min(1.0, np.linalg.norm(rotation - rotation.T) / 8**0.5)))


def test_full_flexibility_relaxes_the_shear_without_rotating_the_cell(sheared_argon, relaxed_shapes):
    start = _lj_apply(None, jnp.asarray(sheared_argon.positions), None, jnp.asarray(sheared_argon.cell[:]))
    initial_shear = abs(float(start["stress"][0, 1])) / units.GPa
    full, isotropic = relaxed_shapes["full"], relaxed_shapes["isotropic"]
    tensor = full["pressure_tensor"][2000:].mean(axis=(0, 1))  # GPa, the last 10 ps
    deviation = np.abs(tensor - np.trace(tensor) / 3 * np.eye(3)).max()
    print(f"shear stress {initial_shear:.3f} GPa at the start; |deviatoric <P>| {deviation:.4f} GPa (full), "
          f"<σ_xy> {isotropic['stress'][2000:, :, 0, 1].mean() / units.GPa:.4f} GPa (isotropic)")  # fmt: skip
    assert initial_shear > 0.05
    assert deviation < 0.1 * initial_shear
    assert np.abs(np.trace(tensor) / 3) < 0.02  # GPa, at P₀ = 0
    stretch = np.linalg.svd(np.linalg.solve(sheared_argon.cell[:], full["cell"][-1, 0]), compute_uv=False)
    assert stretch.max() - stretch.min() > 0.02  # the shape changed, not only the size
    # the cell velocity is symmetric: every step deforms the cell without spin
    cells = full["cell"][:, 0]
    steps = [_rotation_angle(a, b) for a, b in zip(cells[:-1], cells[1:], strict=True)]
    total = _rotation_angle(sheared_argon.cell[:], cells[-1])
    print(f"rotation per step at most {max(steps):.1e} rad; accumulated over the path {total:.1e} rad")
    assert max(steps) < 1e-9
    # the isotropic cell keeps its shape and cannot relax the shear
    scale = (isotropic["volume"][-1, 0] / sheared_argon.get_volume()) ** (1 / 3)
    np.testing.assert_allclose(isotropic["cell"][-1, 0], scale * sheared_argon.cell[:], rtol=0, atol=1e-10)
    assert abs(isotropic["stress"][2000:, :, 0, 1].mean()) / units.GPa > 0.5 * initial_shear
    assert "pressure_tensor" not in isotropic


def test_run_restarts_bit_identically_and_is_recorded(sheared_argon, tmp_path):
    ensemble = MTKBarostat(temperature_K=50.0, pressure=0.1, barostat_tau_fs=100.0, cell_flexibility="full")
    options = dict(ensemble=ensemble, timestep_fs=4.0, stride=5, frames_per_chunk=2, progress=False)
    whole = simulate(LENNARD_JONES, sheared_argon, 20, **options).frames
    output = tmp_path / "mtk.h5"
    simulate(LENNARD_JONES, sheared_argon, 10, output=output, **options)
    simulate(LENNARD_JONES, sheared_argon, 20, output=output, **options)
    data = read_trajectory(output)
    for name in ("cell", "positions", "velocities", "pressure_tensor", "conserved_energy"):
        np.testing.assert_array_equal(data[name], whole[name])
    assert not np.allclose(whole["cell"][-1, 0], sheared_argon.cell[:])
    assert data["attrs"]["ensemble"] == "npt_mtk" and data["attrs"]["cell_flexibility"] == "full"
    assert data["pressure_tensor"].shape == (5, 1, 3, 3) and data["attrs"]["degrees_of_freedom"] == 21  # t = 0 too


def test_settings_and_structures_are_checked(sheared_argon):
    assert ensemble_from_settings("npt_mtk", {"cell_flexibility": "full", "tau_fs": 50.0}) == MTKBarostat(
        cell_flexibility="full", tau_fs=50.0
    )
    with pytest.raises(ConfigError, match="unknown cell_flexibility 'anisotropic'; choose one of isotropic, full"):
        MTKBarostat(cell_flexibility="anisotropic")
    with pytest.raises(ConfigError, match="unknown pressure unit 'psi'.*GPa, MPa, bar, kbar, atm or eV/Ang"):
        MTKBarostat(pressure=1.0, pressure_unit="psi")
    with pytest.raises(ConfigError, match="barostat_tau_fs must be a positive number"):
        MTKBarostat(barostat_tau_fs=0.0)
    with pytest.raises(StructureError, match=r"npt_mtk ensemble changes the cell of a periodic structure"):
        simulate(LENNARD_JONES, molecule("H2O"), 10, ensemble=MTKBarostat(), progress=False)
    with pytest.raises(ConfigError, match="must take the cell and return stress"):
        simulate(ForceField(apply=_ideal_gas, params=None), sheared_argon, 10, ensemble=MTKBarostat(), progress=False)
