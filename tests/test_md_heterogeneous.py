"""Replicas that are different structures (other atoms, elements and cells) in one compiled MD batch: each replica
must move as its structure does alone (same key, same noise for its real atoms), with its own degrees of freedom,
restart bit-identically and read back as its own atoms. Tiny models, float64, few steps."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

import jaxatom
from jaxatom.errors import ConfigError, DataError
from jaxatom.md import read_trajectory, simulate, trajectory_atoms
from jaxatom.md.forces import ForceField
from jaxatom.md.padding import is_heterogeneous
from jaxatom.md.run import report
from jaxatom.md.state import BOLTZMANN

from .conftest import ELEMENTS, tiny_schnet, triclinic_crystal

OPTIONS = dict(steps=20, stride=10, timestep_fs=0.5, progress=False)


@pytest.fixture(scope="module")
def x64():
    jaxatom.enable_x64(True)
    yield
    jaxatom.enable_x64(False)


@pytest.fixture(scope="module")
def potential(x64) -> jaxatom.Potential:
    return jaxatom.Potential.create(tiny_schnet(), ELEMENTS, seed=1, atomrefs={1: -13.6, 6: -1030.0, 8: -2040.0})


def with_momenta(atoms: Atoms, seed: int) -> Atoms:
    atoms = atoms.copy()
    atoms.set_momenta(np.random.default_rng(seed).normal(0.0, 0.3, (len(atoms), 3)))
    return atoms


@pytest.fixture(scope="module")
def molecules() -> list[Atoms]:
    return [with_momenta(molecule(name), seed) for seed, name in enumerate(("H2O", "CH3CH2OH", "CH4"))]


def assert_replica_matches(batch: dict, alone: dict, replica: int, alone_replica: int, n_atoms: int) -> None:
    """Replica ``replica`` of a padded batch equals replica ``alone_replica`` of a run of its structure alone."""
    for name in ("positions", "velocities"):
        np.testing.assert_allclose(batch[name][:, replica, :n_atoms], alone[name][:, alone_replica], atol=1e-10)
        assert np.all(batch[name][:, replica, n_atoms:] == 0)  # padding atoms stay put, at rest
    for name in ("potential_energy", "kinetic_energy", "temperature", "conserved_energy"):
        np.testing.assert_allclose(batch[name][:, replica], alone[name][:, alone_replica], rtol=1e-10, atol=1e-10)


def test_nve_batch_of_molecules_equals_each_molecule_alone(potential, molecules):
    batch = simulate(potential, molecules, velocities="atoms", **OPTIONS)
    assert batch.frames["positions"].shape == (3, 3, 9, 3)  # the start and 2 strides
    for r, atoms in enumerate(molecules):
        alone = simulate(potential, atoms, velocities="atoms", **OPTIONS)
        assert_replica_matches(batch.frames, alone.frames, r, 0, len(atoms))
        # the temperature counts each replica's own degrees of freedom (3N - 3 in NVE)
        kinetic = batch.frames["kinetic_energy"][:, r]
        expected = 2 * kinetic / ((3 * len(atoms) - 3) * BOLTZMANN)
        np.testing.assert_allclose(batch.frames["temperature"][:, r], expected, rtol=1e-12)


def test_langevin_replica_draws_the_noise_of_its_structure_alone(potential, molecules):
    options = dict(OPTIONS, ensemble="langevin", temperature_K=300.0, friction_per_fs=0.05, seed=7)
    batch = simulate(potential, molecules, **options)
    for r in (0, 2):  # water and methane are padded to ethanol's 9 atoms
        alone = simulate(potential, molecules[r], n_replicas=3, **options)  # replica r has key split(7)[r]
        assert_replica_matches(batch.frames, alone.frames, r, r, len(molecules[r]))


def test_nose_hoover_chains_per_replica_conserve_their_energy_and_match_alone(potential, molecules):
    options = dict(OPTIONS, ensemble="nose_hoover", temperature_K=300.0, tau_fs=20.0, velocities="atoms", steps=40)
    batch = simulate(potential, molecules, **options)
    conserved = batch.frames["conserved_energy"]
    assert np.abs(conserved - conserved[0]).max() < 1e-3
    assert [chain.degrees_of_freedom for chain in batch.state.thermostat] == [6, 12, 24]  # one chain group per dof
    alone = simulate(potential, molecules[0], **options)
    assert_replica_matches(batch.frames, alone.frames, 0, 0, len(molecules[0]))


def test_potential_ensemble_batch_equals_each_molecule_alone(potential, molecules):
    members = [potential, jaxatom.Potential.create(tiny_schnet(), ELEMENTS, seed=2, atomrefs={1: -13.0})]
    batch = simulate(members, molecules, velocities="atoms", **OPTIONS)
    alone = simulate(members, molecules[0], velocities="atoms", **OPTIONS)
    assert_replica_matches(batch.frames, alone.frames, 0, 0, len(molecules[0]))
    for name in ("energy_std", "forces_std_max"):
        np.testing.assert_allclose(batch.frames[name][:, 0], alone.frames[name][:, 0], rtol=1e-10)


def test_only_atoms_periodicity_and_periodic_cells_make_structures_different():
    water, conformer = molecule("H2O"), molecule("H2O")
    conformer.center(vacuum=5.0)  # a cell that molecules do not use
    assert not is_heterogeneous([water, conformer])
    assert is_heterogeneous([water, molecule("CH4")])
    assert is_heterogeneous([two_atom_cell(), two_atom_cell() * (2, 1, 1)])
    stretched = two_atom_cell()
    stretched.set_cell(stretched.cell[:] * 1.1)
    assert is_heterogeneous([two_atom_cell(), stretched])


def two_atom_cell() -> Atoms:
    return Atoms("CO", positions=[[0.0, 0.0, 0.0], [1.3, 0.4, 0.2]], cell=np.diag([2.6, 2.9, 3.1]), pbc=True)


def test_periodic_cells_of_different_sizes_equal_each_cell_alone(potential):
    cells = [with_momenta(triclinic_crystal(), 3), with_momenta(two_atom_cell(), 4)]
    batch = simulate(potential, cells, velocities="atoms", **OPTIONS)
    for r, atoms in enumerate(cells):
        alone = simulate(potential, atoms, velocities="atoms", **OPTIONS)
        assert_replica_matches(batch.frames, alone.frames, r, 0, len(atoms))


def test_stochastic_cell_rescaling_moves_each_cell_as_alone(potential):
    cells = [triclinic_crystal(), two_atom_cell()]
    options = dict(OPTIONS, ensemble="npt_scr", pressure=1.0, barostat_tau_fs=50.0, seed=5)
    batch = simulate(potential, cells, **options)
    alone = simulate(potential, cells[1], n_replicas=2, **options)  # the padded cell, as replica 1
    assert_replica_matches(batch.frames, alone.frames, 1, 1, len(cells[1]))
    for name in ("cell", "volume", "pressure", "stress"):
        np.testing.assert_allclose(batch.frames[name][:, 1], alone.frames[name][:, 1], rtol=1e-9, atol=1e-10)
    assert not np.allclose(batch.frames["volume"][-1], [c.get_volume() for c in cells])  # the cells do move


def test_restart_and_reading_each_replica_as_its_own_atoms(potential, molecules, tmp_path):
    options = dict(OPTIONS, ensemble="langevin", frames_per_chunk=1, write_forces=True, seed=3)
    simulate(potential, molecules, output=tmp_path / "straight.h5", **dict(options, steps=40))
    interrupted = tmp_path / "interrupted.h5"
    simulate(potential, molecules, output=interrupted, **options)
    simulate(potential, molecules, output=interrupted, **dict(options, steps=40))
    straight, resumed = read_trajectory(tmp_path / "straight.h5"), read_trajectory(interrupted)
    for name in ("positions", "velocities", "forces", "conserved_energy", "time"):
        np.testing.assert_array_equal(straight[name], resumed[name])
    np.testing.assert_array_equal(straight["n_atoms"], [3, 9, 5])
    for r, atoms in enumerate(molecules):
        one = read_trajectory(interrupted, replica=r)
        assert one["positions"].shape == (5, len(atoms), 3) and one["forces"].shape == (5, len(atoms), 3)
        np.testing.assert_array_equal(one["species"], atoms.numbers)
        frames = trajectory_atoms(interrupted, replica=r)
        assert frames[0].get_chemical_formula() == atoms.get_chemical_formula()
        np.testing.assert_allclose(frames[-1].get_potential_energy(), one["potential_energy"][-1])
    with pytest.raises(DataError, match="replicas of the same atoms"):
        report(interrupted)
    other = [molecules[1], molecules[0], molecules[2]]
    with pytest.raises(ValueError, match="other settings"):
        simulate(potential, other, output=interrupted, **dict(options, steps=60))


def test_what_batches_of_different_structures_do_not_support_is_refused(potential, molecules):
    with pytest.raises(ConfigError, match="the rpmd ensemble cannot run replicas that are different structures"):
        simulate(potential, molecules, ensemble="rpmd", **OPTIONS)
    with pytest.raises(ConfigError, match="need static edges"):
        simulate(potential, molecules, neighbors="list", **OPTIONS)
    with pytest.raises(ConfigError, match="need a model"):
        simulate(ForceField(apply=lambda p, x, n: {}, params=None), molecules, **OPTIONS)
    with pytest.raises(ConfigError, match="share their periodicity"):
        simulate(potential, [molecules[0], two_atom_cell()], **OPTIONS)
    with pytest.raises(ConfigError, match="the npt_mtk ensemble cannot"):
        simulate(potential, [triclinic_crystal(), two_atom_cell()], ensemble="npt_mtk", **OPTIONS)
