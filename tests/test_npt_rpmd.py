"""Ring polymers at constant pressure (``npt_rpmd``): an ideal gas of ring polymers has the classical isobaric volume
distribution (the cell scales the centroids only), the centroid-virial pressure estimator is the classical one for a
single bead, model runs restart bit-identically, and settings that do not apply are refused."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk

import jaxatom
from jaxatom.errors import ConfigError
from jaxatom.md import ForceField, RingPolymerNPT, read_trajectory, simulate

from .conftest import tiny_painn

N_GAS = 6


def _ideal_gas(positions, neighbors, cell):
    return {"energy": 0.0 * jnp.sum(positions), "forces": jnp.zeros_like(positions),
            "stress": jnp.zeros((3, 3), positions.dtype)}  # fmt: skip


def test_ring_polymer_ideal_gas_has_the_isobaric_volume_distribution():
    force_field = ForceField(apply=lambda p, x, n, cell: _ideal_gas(x, n, cell), params=jnp.zeros(()),
                             variable_cell=True)  # fmt: skip
    rng = np.random.default_rng(0)
    atoms = Atoms("Ar6", positions=rng.random((N_GAS, 3)) * 10.0, cell=np.eye(3) * 10.0, pbc=True)
    pressure = (N_GAS + 1) * units.kB * 300.0 / 1000.0  # eV/Å³
    ensemble = RingPolymerNPT(temperature_K=300.0, n_beads=4, centroid_tau_fs=50.0, pressure=pressure,
                              pressure_unit="eV/Ang^3", compressibility_per_GPa=25.0,
                              barostat_tau_fs=200.0)  # fmt: skip
    with jax.enable_x64(True):
        run = simulate(force_field, atoms, 24000, timestep_fs=2.0, ensemble=ensemble, n_replicas=32, stride=20,
                       frames_per_chunk=400, progress=False)  # fmt: skip
    volumes = run.frames["volume"][200:]
    scale = units.kB * 300.0 / pressure
    assert volumes.mean() == pytest.approx((N_GAS + 1) * scale, rel=0.03)  # <V> = (N + 1) kT / P
    assert volumes.var() == pytest.approx((N_GAS + 1) * scale**2, rel=0.12)
    assert run.frames["pressure"][200:].mean() == pytest.approx(pressure / units.GPa, rel=0.05)  # GPa
    assert run.frames["temperature"][200:].mean() == pytest.approx(300.0, rel=0.03)


@pytest.fixture(scope="module")
def copper_model():
    return jaxatom.Potential.create(tiny_painn(), [29], seed=2)


def test_model_ring_polymer_npt_restarts_bit_identically(copper_model, tmp_path):
    copper = bulk("Cu", "fcc", a=3.6, cubic=True)
    copper.rattle(0.02, seed=3)
    ensemble = RingPolymerNPT(temperature_K=300.0, n_beads=2, pressure=1.0, barostat_tau_fs=50.0,
                              compressibility_per_GPa=0.02)  # fmt: skip
    options = dict(ensemble=ensemble, timestep_fs=1.0, stride=5, frames_per_chunk=2, progress=False)
    whole = simulate(copper_model, copper, 20, **options).frames
    output = tmp_path / "rpmd_npt.h5"
    simulate(copper_model, copper, 10, output=output, **options)
    simulate(copper_model, copper, 20, output=output, **options)
    data = read_trajectory(output)
    for name in ("cell", "positions", "pressure", "conserved_energy"):
        np.testing.assert_array_equal(data[name], whole[name])
    assert not np.allclose(whole["volume"], copper.get_volume())
    assert data["attrs"]["ensemble"] == "npt_rpmd" and data["stress"].shape == (5, 1, 3, 3)


def test_effective_energy_drift_shrinks_with_the_time_step(copper_model):
    """``Σ V_j + K + springs + P·P₀V + heat`` (the ring polymer's energy units) drifts only by integration error."""
    copper = bulk("Cu", "fcc", a=3.6, cubic=True)
    ensemble = RingPolymerNPT(temperature_K=300.0, n_beads=2, thermostat="none", pressure=1.0, barostat_tau_fs=50.0,
                              compressibility_per_GPa=0.02)  # fmt: skip
    drift = {}
    with jax.enable_x64(True):
        for dt in (1.0, 0.25):
            run = simulate(copper_model, copper, int(40 / dt), timestep_fs=dt, ensemble=ensemble, n_replicas=4,
                           stride=int(10 / dt), progress=False)  # fmt: skip
            energy = run.frames["conserved_energy"]
            drift[dt] = np.abs(energy - energy[0]).max(axis=0).mean()
    assert drift[0.25] < drift[1.0] / 2.5  # 3.7x measured: the stochastic barostat bookkeeping is first order


def test_ring_polymer_npt_settings_are_checked():
    with pytest.raises(ConfigError, match="unknown cell_flexibility 'full'; choose one of isotropic"):
        RingPolymerNPT(cell_flexibility="full")
    with pytest.raises(ConfigError, match="unknown pressure unit"):
        RingPolymerNPT(pressure_unit="psi")
    with pytest.raises(ConfigError, match="unknown ring-polymer thermostat"):
        RingPolymerNPT(thermostat="andersen")
