"""Model outputs recorded along MD: every named observable is computed in the compiled chunk from the same model
evaluation as the forces, written per frame with its unit, and equals the model's prediction at the written
positions — for NVE, thermostats, replicas, ensembles and ring polymers (bead averages, optionally every bead)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from ase.build import molecule

import jaxatom
from jaxatom.errors import ConfigError
from jaxatom.md import read_trajectory, simulate
from jaxatom.md.forces import from_potential
from jaxatom.md.neighbors import EdgeBuilder
from jaxatom.nn import ENERGY_HEAD, DipoleMoment, PaiNN, Polarizability
from jaxatom.potential import PotentialEnsemble

from .conftest import ELEMENTS, tiny_painn

OBSERVABLES = ["dipole_moment", "polarizability", "charges"]
TOL = dict(rtol=2e-4, atol=2e-5)  # float32 along a trajectory


@pytest.fixture(scope="module")
def potential() -> jaxatom.Potential:
    heads = [ENERGY_HEAD, DipoleMoment(use_vector_representation=True), Polarizability()]
    return jaxatom.Potential.create(tiny_painn(), ELEMENTS, seed=5, heads=heads)


@pytest.fixture(scope="module")
def ethanol():
    return molecule("CH3CH2OH")


def _frame_atoms(ethanol, positions):
    atoms = ethanol.copy()
    atoms.positions = positions
    return atoms


def test_observables_are_written_with_units_and_equal_the_prediction(potential, ethanol, tmp_path):
    output = tmp_path / "nve.h5"
    simulate(potential, ethanol, steps=30, stride=10, observables=OBSERVABLES, output=output, progress=False)
    data = read_trajectory(output)
    import h5py

    with h5py.File(output) as file:
        units = {name: file[name].attrs["units"] for name in OBSERVABLES}
    assert units == {"dipole_moment": "e*Ang", "polarizability": "Ang^3", "charges": "e"}
    assert data["dipole_moment"].shape == (4, 1, 3) and data["polarizability"].shape == (4, 1, 3, 3)  # t = 0 too
    assert data["charges"].shape == (4, 1, len(ethanol))
    assert data["attrs"]["observables"] == OBSERVABLES
    for frame in range(4):
        expected = potential.predict(_frame_atoms(ethanol, data["positions"][frame, 0]))
        for name in OBSERVABLES:
            np.testing.assert_allclose(data[name][frame, 0], expected[name], **TOL)


def test_replicas_and_thermostats_record_each_replica(potential, ethanol):
    run = simulate(
        potential, ethanol, steps=20, stride=10, ensemble="langevin", n_replicas=3, observables=["dipole_moment"],
        progress=False,
    )  # fmt: skip
    dipoles = run.frames["dipole_moment"]
    assert dipoles.shape == (3, 3, 3)
    expected = potential.predict(_frame_atoms(ethanol, run.frames["positions"][-1, 2]))
    np.testing.assert_allclose(dipoles[-1, 2], expected["dipole_moment"], **TOL)
    assert not np.allclose(dipoles[-1, 0], dipoles[-1, 1])


def test_ring_polymers_write_bead_averages_and_optionally_every_bead(potential, ethanol):
    run = simulate(
        potential, ethanol, steps=20, stride=10, ensemble="rpmd", n_beads=4, rpmd_thermostat="trpmd",
        observables=["dipole_moment", "polarizability"], write_beads=True, progress=False,
    )  # fmt: skip
    beads = run.frames["dipole_moment_beads"]
    assert beads.shape == (3, 1, 4, 3)
    np.testing.assert_allclose(run.frames["dipole_moment"], beads.mean(axis=2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        run.frames["polarizability"], run.frames["polarizability_beads"].mean(axis=2), rtol=1e-5, atol=1e-6
    )
    assert run.state.extras["dipole_moment"].shape == (1, 4, 3)


def test_ensemble_md_records_the_members_mean(potential, ethanol):
    other = jaxatom.Potential.create(tiny_painn(), ELEMENTS, seed=6, heads=potential.model.heads)
    ensemble = PotentialEnsemble.from_potentials([potential, other])
    run = simulate(ensemble, ethanol, steps=10, stride=10, observables=["dipole_moment"], progress=False)
    expected = ensemble.predict(_frame_atoms(ethanol, run.frames["positions"][-1, 0]))
    np.testing.assert_allclose(run.frames["dipole_moment"][-1, 0], expected["dipole_moment"], **TOL)
    assert "energy_std" in run.frames


def test_every_head_shares_one_representation_pass(potential, ethanol, monkeypatch):
    calls = []
    original = PaiNN.__call__

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PaiNN, "__call__", counting)
    edges = EdgeBuilder.create(ethanol.numbers, np.zeros((3, 3)), ethanol.pbc, potential.cutoff)
    positions = jax.numpy.asarray(ethanol.positions, jax.numpy.float32)
    for observables in ([], OBSERVABLES):
        calls.clear()
        force_field = from_potential(potential, edges, observables)
        jax.make_jaxpr(force_field.apply)(force_field.params, positions, None)
        assert len(calls) == 1, observables


def test_a_continued_run_records_the_same_observables(potential, ethanol, tmp_path):
    options = dict(stride=10, frames_per_chunk=2, observables=["dipole_moment"], progress=False)
    whole = simulate(potential, ethanol, steps=40, **options).frames["dipole_moment"]
    output = tmp_path / "continued.h5"
    simulate(potential, ethanol, steps=20, output=output, **options)
    simulate(potential, ethanol, steps=40, output=output, **options)
    np.testing.assert_array_equal(read_trajectory(output)["dipole_moment"], whole)
    with pytest.raises(jaxatom.md.CheckpointMismatch, match="observables"):
        simulate(potential, ethanol, steps=60, output=output, **{**options, "observables": ["polarizability"]})


def test_unknown_observables_are_refused_naming_what_the_model_offers(potential, ethanol):
    with pytest.raises(ConfigError, match=r"quadrupole.*can record: charges, dipole_moment, polarizability"):
        simulate(potential, ethanol, steps=10, observables=["quadrupole"], progress=False)
    with pytest.raises(ConfigError, match="energies"):
        simulate(potential, ethanol, steps=10, observables=["energies"], progress=False)


def test_md_configuration_takes_observables_beads_and_field():
    from jaxatom.md.run import MDConfigError, load_md_config

    config = load_md_config(
        None,
        ["model=m", "structure=s.xyz", "observables=[dipole_moment, polarizability]", "write_beads=true",
         "electric_field=[0, 0, 0.01]"],
    )  # fmt: skip
    options = config.simulate_options()
    assert options["observables"] == ("dipole_moment", "polarizability") and options["write_beads"] is True
    assert options["electric_field"] == (0.0, 0.0, 0.01)
    with pytest.raises(MDConfigError, match="electric_field"):
        load_md_config(None, ["model=m", "structure=s.xyz", "electric_field=[0, 1]"])
