"""Constant-pressure MD (isotropic stochastic cell rescaling): the volume distribution of an ideal gas is the exact
isothermal–isobaric one, the effective energy is conserved, model runs change their cell on the device through the
image edges, restart bit-identically, and bad settings are refused by name."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk, molecule

import jaxatom
from jaxatom.errors import ConfigError, StructureError
from jaxatom.md import ForceField, MTKBarostat, StochasticCellRescaling, read_trajectory, simulate
from jaxatom.md.driver import SimulationFailed, linear_scales
from jaxatom.md.forces import from_ensemble, from_potential
from jaxatom.md.neighbors import EdgeBuilder
from jaxatom.potential import PotentialEnsemble

from .conftest import tiny_painn

N_GAS = 8


def _ideal_gas(positions, neighbors, cell):
    return {"energy": 0.0 * jnp.sum(positions), "forces": jnp.zeros_like(positions),
            "stress": jnp.zeros((3, 3), positions.dtype)}  # fmt: skip


@pytest.fixture(scope="module")
def gas_run():
    """32 replicas of 8 argon atoms without interactions at 300 K and P = 9 kT / (1000 Å³)."""
    force_field = ForceField(apply=lambda p, x, n, cell: _ideal_gas(x, n, cell), params=jnp.zeros(()),
                             variable_cell=True)  # fmt: skip
    rng = np.random.default_rng(0)
    atoms = Atoms("Ar8", positions=rng.random((N_GAS, 3)) * 10.0, cell=np.eye(3) * 10.0, pbc=True)
    pressure = (N_GAS + 1) * units.kB * 300.0 / 1000.0  # eV/Å³
    ensemble = StochasticCellRescaling(
        temperature_K=300.0, pressure=pressure, pressure_unit="eV/Ang^3", compressibility_per_GPa=25.0,
        barostat_tau_fs=200.0, friction_per_fs=0.02,
    )  # fmt: skip
    with jax.enable_x64(True):
        run = simulate(force_field, atoms, 40000, timestep_fs=2.0, ensemble=ensemble, n_replicas=32, stride=20,
                       progress=False)  # fmt: skip
    return run, pressure


def test_ideal_gas_volume_follows_the_isobaric_distribution(gas_run):
    run, pressure = gas_run
    volumes = run.frames["volume"][200:]  # after 8 ps
    scale = units.kB * 300.0 / pressure
    assert volumes.mean() == pytest.approx((N_GAS + 1) * scale, rel=0.02)  # <V> = (N + 1) kT / P
    assert volumes.var() == pytest.approx((N_GAS + 1) * scale**2, rel=0.1)  # var V = (N + 1) (kT / P)²
    assert run.frames["temperature"].mean() == pytest.approx(300.0, rel=0.02)
    np.testing.assert_allclose(np.linalg.det(run.frames["cell"]), run.frames["volume"], rtol=1e-10)


def test_effective_energy_drift_shrinks_with_the_time_step():
    """The effective energy (U + K + P₀V + thermostat and barostat work) drifts only by integration error."""
    force_field = ForceField(apply=lambda p, x, n, cell: _ideal_gas(x, n, cell), params=jnp.zeros(()),
                             variable_cell=True)  # fmt: skip
    atoms = Atoms("Ar8", positions=np.random.default_rng(1).random((8, 3)) * 10.0, cell=np.eye(3) * 10.0, pbc=True)
    ensemble = StochasticCellRescaling(pressure=0.05, compressibility_per_GPa=25.0, barostat_tau_fs=200.0)
    drift = {}
    with jax.enable_x64(True):
        for dt in (2.0, 0.5):
            run = simulate(force_field, atoms, int(2000 / dt), timestep_fs=dt, ensemble=ensemble, n_replicas=16,
                           stride=int(100 / dt), progress=False)  # fmt: skip
            energy = run.frames["conserved_energy"]
            drift[dt] = np.abs(energy - energy[0]).max(axis=0).mean()
    assert drift[0.5] < drift[2.0] / 2
    assert drift[0.5] < 1e-3  # eV over 2 ps, against kT = 0.026 eV


@pytest.fixture(scope="module")
def copper():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.02, seed=3)
    return atoms


@pytest.fixture(scope="module")
def potential():
    return jaxatom.Potential.create(tiny_painn(), [29], seed=2)


def test_model_npt_changes_the_cell_and_restarts_bit_identically(potential, copper, tmp_path):
    ensemble = StochasticCellRescaling(temperature_K=300.0, pressure=1.0, barostat_tau_fs=50.0,
                                       compressibility_per_GPa=0.02)  # fmt: skip
    options = dict(ensemble=ensemble, timestep_fs=1.0, stride=5, frames_per_chunk=2, progress=False)
    whole = simulate(potential, copper, 20, **options).frames
    output = tmp_path / "npt.h5"
    simulate(potential, copper, 10, output=output, **options)
    simulate(potential, copper, 20, output=output, **options)
    data = read_trajectory(output)
    np.testing.assert_array_equal(data["cell"], whole["cell"])
    np.testing.assert_array_equal(data["positions"], whole["positions"])
    assert not np.allclose(whole["volume"], copper.get_volume())
    assert data["stress"].shape == (5, 1, 3, 3) and data["attrs"]["ensemble"] == "npt_scr"  # the start too


def test_npt_settings_and_structures_are_checked(potential, copper):
    with pytest.raises(ConfigError, match="unknown pressure unit 'psi'"):
        StochasticCellRescaling(pressure=1.0, pressure_unit="psi")
    with pytest.raises(ConfigError, match="friction_per_fs must be > 0"):
        StochasticCellRescaling(friction_per_fs=0.0)
    with pytest.raises(ValueError, match=r"changes the cell of a periodic structure; this one has pbc"):
        simulate(potential, molecule("H2O"), 10, ensemble=StochasticCellRescaling(), progress=False)
    with pytest.raises(StructureError, match="neighbour lists cannot handle a cell narrower"):
        simulate(potential, copper, 10, ensemble=StochasticCellRescaling(), neighbors="list", progress=False)


@pytest.mark.parametrize(
    "strain", [np.eye(3) * 0.88, np.eye(3) + [[0.1, 0.05, 0.0], [0.0, -0.1, 0.08], [0.0, 0.0, 0.0]]]
)
def test_lists_of_the_starting_cell_stay_exact_in_a_changed_cell(potential, copper, strain):
    """Edges built for the starting cell (margin 0.85) give Potential.predict's exact results in a deformed cell."""
    start = copper.repeat(4)
    with jax.enable_x64(True):
        edges = EdgeBuilder.create(start.numbers, start.cell[:], True, potential.cutoff, skin=0.5, cell_margin=0.85)
        assert edges.mode == "list"
        force_field = from_potential(potential, edges, variable_cell=True)
        deformed = start.copy()
        deformed.set_cell(start.cell[:] @ strain, scale_atoms=True)
        assert linear_scales(start.cell[:], deformed.cell[:][None])[0] >= 0.85
        cell = jnp.asarray(deformed.cell[:])
        neighbors = edges.allocate(deformed.positions[None], cells=cell[None])
        neighbors = jax.tree.map(lambda x: x[0], neighbors)
        out = force_field.apply(force_field.params, jnp.asarray(deformed.positions), neighbors, cell)
        expected = potential.predict(deformed)
    assert float(out["energy"]) + force_field.energy_offset == pytest.approx(expected["energy"], rel=1e-12)
    np.testing.assert_allclose(out["forces"], expected["forces"], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(out["stress"], expected["stress"], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize(
    "ensemble",
    [
        StochasticCellRescaling(pressure=5.0, barostat_tau_fs=20.0, compressibility_per_GPa=0.05),
        StochasticCellRescaling(pressure=5.0, barostat_tau_fs=20.0, compressibility_per_GPa=0.05,
                                cell_flexibility="full"),
        MTKBarostat(pressure=5.0, barostat_tau_fs=200.0, cell_flexibility="full"),
    ],
    ids=["scr", "scr-full", "mtk-full"],
)  # fmt: skip
def test_npt_on_neighbour_lists_follows_the_same_path_as_exact_images(potential, copper, ensemble):
    """A list that is rebuilt as atoms move and the cell changes gives the images run's trajectory (float64)."""
    start = copper.repeat(4)
    start.set_cell(start.cell[:] @ (np.eye(3) + [[0, 0.03, 0], [0, 0, 0], [0.02, 0, 0]]), scale_atoms=True)
    options = dict(ensemble=ensemble, timestep_fs=2.0, stride=10, skin=0.3, progress=False)
    with jax.enable_x64(True):
        lists = simulate(potential, start, 40, neighbors="list", **options)
        images = simulate(potential, start, 40, neighbors="images", **options)
    assert lists.state.neighbors is not None and images.state.neighbors is None
    assert np.max(np.abs(lists.frames["cell"][-1, 0] - lists.frames["cell"][0, 0])) > 0.05  # Å
    np.testing.assert_allclose(lists.frames["positions"], images.frames["positions"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(lists.frames["cell"], images.frames["cell"], rtol=0, atol=1e-9)


def test_npt_with_a_model_ensemble_follows_the_mean_stress(potential, copper):
    other = jaxatom.Potential.create(tiny_painn(), [29], seed=5)
    members = PotentialEnsemble.from_potentials([potential, other])
    with jax.enable_x64(True):
        edges = EdgeBuilder.create(copper.numbers, copper.cell[:], True, potential.cutoff, cell_margin=0.85)
        force_field = from_ensemble(members, edges, variable_cell=True)
        cell = jnp.asarray(copper.cell[:])
        out = force_field.apply(force_field.params, jnp.asarray(copper.positions), None, cell)
        stresses = [p.predict(copper)["stress"] for p in (potential, other)]
    np.testing.assert_allclose(out["stress"], np.mean(stresses, axis=0), rtol=1e-9, atol=1e-12)
    ensemble = StochasticCellRescaling(pressure=1.0, barostat_tau_fs=50.0, compressibility_per_GPa=0.02)
    run = simulate(members, copper, 10, timestep_fs=1.0, ensemble=ensemble, stride=5, progress=False)
    assert np.all(run.frames["energy_std"] > 0) and not np.allclose(run.frames["volume"], copper.get_volume())


def test_impossible_cells_are_refused(potential, copper, tmp_path):
    flat = copper.copy()
    flat.cell[2] = flat.cell[0]  # two equal lattice vectors: no volume
    with pytest.raises(StructureError, match="non-zero volume"):
        simulate(potential, flat, 10, ensemble=StochasticCellRescaling(), progress=False)
    crushing = StochasticCellRescaling(pressure=500.0, barostat_tau_fs=500.0, compressibility_per_GPa=0.005)
    output = tmp_path / "crushed.h5"
    with pytest.raises(SimulationFailed, match=r"the cell shrank to 0\.\d+ of its starting size, below the 0\.85"):
        simulate(potential, copper, 400, timestep_fs=1.0, ensemble=crushing, stride=10, frames_per_chunk=2,
                 output=output, progress=False)  # fmt: skip
    kept = read_trajectory(output)  # the chunks before the one that crushed the cell, intact
    assert len(kept["step"]) > 0 and np.all(kept["volume"] > 0.85**3 * copper.get_volume())
