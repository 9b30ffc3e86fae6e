"""Ensembles as spec objects: the keyword and object forms build the same run, a user-written ensemble plugs into
``simulate`` without touching the driver, and checkpoints are keyed by the state's field names so that a state of
other fields or shapes can never restore into the wrong ones."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import molecule

import jaxatom
from jaxatom.errors import ConfigError
from jaxatom.md import NVE, CheckpointMismatch, Langevin, read_trajectory, simulate
from jaxatom.md.state import kinetic_energy

from .conftest import ELEMENTS, tiny_painn


@pytest.fixture(scope="module")
def potential() -> jaxatom.Potential:
    return jaxatom.Potential.create(tiny_painn(), ELEMENTS, seed=4)


@pytest.fixture(scope="module")
def ethanol():
    return molecule("CH3CH2OH")


@dataclasses.dataclass(frozen=True)
class TaggedNVE(NVE):
    """A user's ensemble: NVE that also writes the kinetic energy per degree of freedom (eV)."""

    name: ClassVar[str] = "tagged_nve"
    units: ClassVar[dict] = {"kinetic_per_dof": "eV"}

    def observe(self, state, masses, integrator, dof):
        frame = super().observe(state, masses, integrator, dof)
        return {**frame, "kinetic_per_dof": kinetic_energy(state.momenta, masses) / dof}


def test_keyword_and_object_forms_run_the_same_dynamics(potential, ethanol):
    by_name = simulate(potential, ethanol, 20, ensemble="langevin", temperature_K=400, friction_per_fs=0.02,
                       stride=10, progress=False)  # fmt: skip
    by_object = simulate(potential, ethanol, 20, ensemble=Langevin(temperature_K=400, friction_per_fs=0.02),
                         stride=10, progress=False)  # fmt: skip
    np.testing.assert_array_equal(by_name.frames["positions"], by_object.frames["positions"])
    assert by_name.settings == by_object.settings
    assert by_name.settings["ensemble"] == "langevin" and by_name.settings["friction_per_fs"] == 0.02


def test_a_user_written_ensemble_plugs_in_and_records_its_quantities(potential, ethanol, tmp_path):
    output = tmp_path / "tagged.h5"
    run = simulate(potential, ethanol, 20, ensemble=TaggedNVE(temperature_K=300), stride=10, output=output,
                   progress=False)  # fmt: skip
    data = read_trajectory(output)
    np.testing.assert_allclose(data["kinetic_per_dof"], data["kinetic_energy"] / (3 * len(ethanol) - 3), rtol=1e-6)
    assert data["attrs"]["ensemble"] == "tagged_nve"
    import h5py

    with h5py.File(output) as file:
        assert file["kinetic_per_dof"].attrs["units"] == "eV"
    assert run.settings["remove_rotation"] is False


def test_checkpoints_are_keyed_by_field_names_and_refuse_another_state(potential, ethanol, tmp_path):
    output = tmp_path / "run.h5"
    options = dict(ensemble="nose_hoover", stride=10, frames_per_chunk=1, output=output, progress=False)
    simulate(potential, ethanol, 20, **options)
    checkpoint = output.with_name(output.name + ".ckpt.npz")
    with np.load(checkpoint) as data:
        arrays = dict(data)
    assert {"state/positions", "state/momenta", "state/thermostat.momentum", "state/key"} <= set(arrays)
    assert not any(name.startswith("leaf_") for name in arrays)
    for change, message in [
        (lambda a: a.pop("state/thermostat.momentum"), "missing state/thermostat.momentum"),
        (lambda a: a.update({"state/barostat": np.zeros(3)}), "unexpected state/barostat"),
        (lambda a: a.update({"state/momenta": np.zeros((1, 3, 3))}), r"other shapes: state/momenta \(1, 3, 3\)"),
    ]:
        broken = dict(arrays)
        change(broken)
        np.savez(checkpoint, **broken)
        with pytest.raises(CheckpointMismatch, match=message):
            simulate(potential, ethanol, 40, **options)


def test_nve_from_given_momenta_removes_the_total_momentum(potential, ethanol):
    atoms = ethanol.copy()
    atoms.set_momenta(np.ones((len(atoms), 3)))  # a drifting molecule
    run = simulate(potential, atoms, 10, ensemble=NVE(), velocities="atoms", stride=10, progress=False)
    masses = jnp.asarray(atoms.get_masses())
    total = np.asarray(run.state.momenta).sum(axis=-2)
    np.testing.assert_allclose(total, 0.0, atol=1e-4)
    assert float(kinetic_energy(run.state.momenta, masses)[0]) < float(kinetic_energy(jnp.ones((9, 3)), masses))


def test_ensemble_settings_are_checked_by_name(potential, ethanol):
    with pytest.raises(ConfigError, match="the nve ensemble has no setting friction_per_fs"):
        simulate(potential, ethanol, 10, ensemble="nve", friction_per_fs=0.1, progress=False)
    with pytest.raises(ConfigError, match=r"go into the ensemble object \(e.g. Langevin\(...\)\)"):
        simulate(potential, ethanol, 10, ensemble=Langevin(), temperature_K=10, progress=False)
    with pytest.raises(ConfigError, match="unknown ensemble 'npt'"):
        simulate(potential, ethanol, 10, ensemble="npt", progress=False)
    with pytest.raises(ConfigError, match="friction_per_fs must be >= 0"):
        Langevin(friction_per_fs=-1.0)
    with pytest.raises(ConfigError, match="temperature_K must be a positive number"):
        NVE(temperature_K=0.0)
