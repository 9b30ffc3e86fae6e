"""Molecular dynamics: conservation, canonical sampling, RPMD against the exact quantum oscillator, restart and
overflow-rerun identity, neighbour lists against host lists, trajectories, errors.

Thermostat and RPMD statistics use analytic potentials (fast compiles, exact references); conservation, lists and
ensembles use tiny models.
"""

from __future__ import annotations

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import molecule

import jaxatom
from jaxatom.md import ForceField, from_energy, read_trajectory, simulate, trajectory_atoms
from jaxatom.md.neighbors import EdgeBuilder
from jaxatom.md.rpmd import HBAR
from jaxatom.md.state import BOLTZMANN, masses_of

from .conftest import ELEMENTS, tiny_painn, tiny_schnet


@pytest.fixture(scope="module")
def x64():
    jaxatom.enable_x64(True)
    yield
    jaxatom.enable_x64(False)


def harmonic(k: float, center: np.ndarray):
    """Independent 3D harmonic wells ``½ k |x - x0|²`` (k in eV/Å²)."""
    return from_energy(lambda x: 0.5 * k * jnp.sum((x - center) ** 2))


def hydrogen_atoms(n: int) -> Atoms:
    return Atoms(numbers=[1] * n, positions=np.arange(3 * n, dtype=float).reshape(n, 3))


# ---- conservation ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_nve_conserves_energy(ethanol, precision):
    jaxatom.enable_x64(precision == "float64")
    try:
        # random tiny models differ in stiffness: over seeds 3-6 the float64 drift at 0.25 fs spans 9e-6 to 6e-5
        # eV/atom; the bounds below are stated for this one (seed 4 since heads are named by their output)
        pot = jaxatom.Potential.create(tiny_painn(), ELEMENTS, seed=4, energy_shift=-2.0)
        run = simulate(
            pot,
            ethanol,
            steps=400,
            timestep_fs=0.25,
            stride=10,
            frames_per_chunk=20,
            n_replicas=2,
            temperature_K=300,
            progress=False,
        )
    finally:
        jaxatom.enable_x64(False)
    frames = run.frames
    assert frames["positions"].dtype == np.dtype(precision)
    total = frames["potential_energy"] + frames["kinetic_energy"]
    assert np.allclose(total, frames["conserved_energy"])
    drift = np.abs(total - total[0]).max() / len(ethanol)
    swing = np.abs(frames["kinetic_energy"] - frames["kinetic_energy"][0]).max() / len(ethanol)
    # stated bounds: 2e-5 eV/atom (float64) and 2e-4 eV/atom (float32) over 100 fs, while kinetic energy swings far more
    assert drift < (2e-5 if precision == "float64" else 2e-4), drift
    assert swing > 50 * drift
    # centre-of-mass momentum stays removed
    masses = masses_of(ethanol.numbers)
    momentum = np.einsum("n,frnk->frk", masses, frames["velocities"])
    assert np.abs(momentum).max() < 1e-4


# ---- thermostats ---------------------------------------------------------------------------------------------------
def test_langevin_samples_the_canonical_ensemble(x64):
    n, k, temperature = 4, 2.0, 300.0
    atoms = hydrogen_atoms(n)
    run = simulate(
        harmonic(k, jnp.asarray(atoms.positions)),
        atoms,
        steps=40000,
        timestep_fs=1.0,
        stride=20,
        frames_per_chunk=500,
        ensemble="langevin",
        friction_per_fs=0.05,
        n_replicas=32,
        temperature_K=temperature,
        progress=False,
    )
    kT = BOLTZMANN * temperature
    kinetic = run.frames["kinetic_energy"][200:].ravel()
    potential = run.frames["potential_energy"][200:].ravel()
    # 3N quadratic degrees of freedom each: mean (3N/2) kT, variance (3N/2) kT² (Gamma distribution)
    assert kinetic.mean() == pytest.approx(1.5 * n * kT, rel=0.02)
    assert kinetic.var() == pytest.approx(1.5 * n * kT**2, rel=0.06)
    assert potential.mean() == pytest.approx(1.5 * n * kT, rel=0.03)
    assert run.frames["temperature"][200:].mean() == pytest.approx(temperature, rel=0.02)
    # replicas are independent streams
    assert not np.allclose(run.frames["positions"][:, 0], run.frames["positions"][:, 1])


def lennard_jones_cluster() -> tuple[ForceField, Atoms]:
    """An argon-like 13-atom cluster (icosahedron) with a Lennard-Jones energy (ε = 0.0104 eV, σ = 3.4 Å)."""
    from ase.cluster import Icosahedron

    atoms = Icosahedron("Ar", 2, latticeconstant=5.26)
    atoms.numbers[:] = 18

    def energy(x):
        d = x[:, None] - x[None]
        r2 = jnp.sum(d**2, -1) + jnp.eye(len(x))
        s6 = (3.4**2 / r2) ** 3
        return 0.5 * jnp.sum(jnp.where(jnp.eye(len(x)) > 0, 0.0, 4 * 0.0104 * (s6**2 - s6)))

    return from_energy(energy), atoms


def test_nose_hoover_conserves_its_extended_energy_and_thermostats(x64):
    force_field, atoms = lennard_jones_cluster()
    temperature = 20.0
    run = simulate(
        force_field,
        atoms,
        steps=20000,
        timestep_fs=2.0,
        stride=20,
        frames_per_chunk=250,
        ensemble="nose_hoover",
        tau_fs=200.0,
        n_replicas=8,
        temperature_K=temperature,
        progress=False,
    )
    frames = run.frames
    conserved = frames["conserved_energy"]
    total = frames["potential_energy"] + frames["kinetic_energy"]
    # the physical energy exchanges with the chain, the extended energy does not
    assert np.std(conserved, axis=0).max() < 0.02 * np.std(total, axis=0).min()
    assert frames["temperature"][100:].mean() == pytest.approx(temperature, rel=0.05)


# ---- ring-polymer MD -----------------------------------------------------------------------------------------------
def exact_quantum_kinetic(hbar_omega: float, kT: float) -> float:
    """Exact kinetic energy per degree of freedom of a quantum harmonic oscillator (eV)."""
    return hbar_omega / 4 / np.tanh(hbar_omega / (2 * kT))


@pytest.mark.parametrize("thermostat", ["pile_l", "pile_g"])
def test_rpmd_reproduces_the_quantum_harmonic_oscillator(x64, thermostat):
    temperature, beta_hbar_omega = 300.0, 3.0
    kT = BOLTZMANN * temperature
    atoms = hydrogen_atoms(1)
    mass = masses_of(atoms.numbers)[0]
    omega = beta_hbar_omega * kT / HBAR  # 1/ASE time
    force_field = harmonic(mass * omega**2, jnp.asarray(atoms.positions))
    run = simulate(
        force_field,
        atoms,
        steps=20000,
        timestep_fs=1.0,
        stride=10,
        frames_per_chunk=500,
        ensemble="rpmd",
        n_beads=32,
        rpmd_thermostat=thermostat,
        centroid_tau_fs=50.0,
        n_replicas=32,
        temperature_K=temperature,
        progress=False,
    )
    exact = 3 * exact_quantum_kinetic(beta_hbar_omega * kT, kT)
    classical = 1.5 * kT
    assert abs(classical - exact) / exact > 0.30  # a regime where quantum effects are large
    virial = run.frames["kinetic_energy"][300:].mean()
    primitive = run.frames["kinetic_energy_primitive"][300:]
    assert virial == pytest.approx(exact, rel=0.02)
    # the primitive estimator fluctuates ~P times more: its standard error here is ~1 %, so it gets a wider bound
    assert primitive.mean() == pytest.approx(exact, rel=0.05)
    # the quantum potential energy equals the kinetic one for a harmonic oscillator
    assert run.frames["potential_energy"][300:].mean() == pytest.approx(exact, rel=0.02)


# ---- replicas, ensembles, neighbour lists --------------------------------------------------------------------------
def test_periodic_md_graph_matches_host_neighbour_list(x64):
    from jaxatom.md.forces import from_potential

    from .conftest import triclinic_crystal

    crystal = triclinic_crystal().repeat((3, 3, 3))
    crystal.positions += 7.3  # unwrapped positions outside the cell
    pot = jaxatom.Potential.create(tiny_schnet(), ELEMENTS, seed=2, energy_shift=-1.0)
    edges = EdgeBuilder.create(crystal.numbers, crystal.cell[:], crystal.pbc, pot.cutoff, skin=1.0)
    assert edges.mode == "list"
    force_field = from_potential(pot, edges)
    neighbors = edges.allocate(crystal.positions[None])
    out = force_field.apply(force_field.params, jnp.asarray(crystal.positions), jax.tree.map(lambda x: x[0], neighbors))
    reference = pot.predict(crystal)
    assert float(out["energy"]) + force_field.energy_offset == pytest.approx(reference["energy"], abs=1e-9)
    np.testing.assert_allclose(out["forces"], reference["forces"], atol=1e-10)


@pytest.mark.parametrize("make", [tiny_schnet, tiny_painn], ids=["schnet", "painn"])
def test_all_pairs_md_graph_with_reverse_halves_matches_predict(x64, make):
    from jaxatom.md.forces import from_potential

    atoms = molecule("CH3CH2OH")
    pot = jaxatom.Potential.create(make(), ELEMENTS, seed=5, energy_shift=-1.0)
    edges = EdgeBuilder.create(atoms.numbers, atoms.cell[:], atoms.pbc, pot.cutoff, mode="all_pairs")
    graph = edges.graph(jnp.asarray(atoms.positions))
    assert graph.reverse_halves and graph.senders.shape[0] % 64 == 0
    half = graph.senders.shape[0] // 2
    np.testing.assert_allclose(graph.edge_vectors()[half:], -graph.edge_vectors()[:half])
    force_field = from_potential(pot, edges)
    out = force_field.apply(force_field.params, jnp.asarray(atoms.positions), None)
    reference = pot.predict(atoms)
    assert float(out["energy"]) + force_field.energy_offset == pytest.approx(reference["energy"], abs=1e-10)
    np.testing.assert_allclose(out["forces"], reference["forces"], atol=1e-10)


def pair_force_field(atoms: Atoms, cutoff: float, **edge_options) -> ForceField:
    """A smooth repulsive pair potential evaluated on the MD graph (exercises the on-device neighbour list)."""
    edges = EdgeBuilder.create(atoms.numbers, atoms.cell[:], atoms.pbc, cutoff, **edge_options)

    def apply(params, positions, neighbors):
        def energy(x):
            graph = edges.graph(x, neighbors)
            r = jnp.linalg.norm(graph.edge_vectors() + (graph.receivers == graph.senders)[:, None], axis=-1)
            phi = params * (1 - r / cutoff) ** 3 * (r < cutoff)
            return 0.5 * jnp.sum(jnp.where(graph.edge_mask, phi, 0.0))

        e, g = jax.value_and_grad(energy)(positions)
        return {"energy": e, "forces": -g}

    return ForceField(apply=apply, params=jnp.asarray(0.5), edges=edges)


def test_neighbour_list_overflow_reruns_and_equals_an_overflow_free_run(x64, tmp_path):
    rng = np.random.default_rng(1)
    box = 11.0
    atoms = Atoms(numbers=[18] * 64, positions=rng.random((64, 3)) * box, cell=np.eye(3) * box, pbc=True)
    options = dict(
        steps=600,
        timestep_fs=2.0,
        stride=10,
        frames_per_chunk=10,
        ensemble="langevin",
        friction_per_fs=0.02,
        temperature_K=2000.0,
        n_replicas=2,
        progress=False,
    )
    tight = simulate(pair_force_field(atoms, 4.0, skin=0.5, capacity_margin=1.0), atoms, **options)
    assert tight.timing["reruns"] >= 1
    capacity = tight.state.neighbors.max_occupancy
    # an overflow-free run that had the final capacity from the start
    roomy_ff = pair_force_field(atoms, 4.0, skin=0.5, capacity_margin=1.0)
    roomy = simulate(_with_capacity(roomy_ff, capacity), atoms, **options)
    assert roomy.timing["reruns"] == 0
    for name in ("positions", "velocities"):
        np.testing.assert_array_equal(tight.frames[name], roomy.frames[name])
    # chunks before the overflow ran with the smaller capacity: a sum over more padding rounds in another order
    np.testing.assert_allclose(tight.frames["potential_energy"], roomy.frames["potential_energy"], rtol=1e-13)


def _with_capacity(force_field: ForceField, capacity: int) -> ForceField:
    edges = force_field.edges

    class Fixed(EdgeBuilder):
        def allocate(self, positions, capacity_=0, cell_capacity=0, cells=None):
            return EdgeBuilder.allocate(self, positions, max(capacity, capacity_), cell_capacity, cells)

    fixed = Fixed(**{f: getattr(edges, f) for f in edges.__dataclass_fields__})
    return ForceField(apply=force_field.apply, params=force_field.params, edges=fixed)


def test_ensemble_md_reports_the_spread(ethanol):
    members = [jaxatom.Potential.create(tiny_schnet(), ELEMENTS, seed=s) for s in (1, 2)]
    run = simulate(members, ethanol, steps=20, stride=10, frames_per_chunk=2, progress=False)
    assert run.frames["energy_std"].shape == (3, 1)  # the start, then every stride
    assert np.all(run.frames["energy_std"] > 0) and np.all(run.frames["forces_std_max"] > 0)
    # the dynamics follow the mean force of the members
    predictions = [m.predict(ethanol) for m in members]
    mean_forces = np.mean([p["forces"] for p in predictions], axis=0)
    start = simulate(members, ethanol, steps=1, stride=1, frames_per_chunk=1, progress=False)
    initial = simulate(members, ethanol, steps=1, stride=1, frames_per_chunk=1, progress=False, write_forces=True)
    assert int(start.state.step) == 1
    energies = [p["energy"] for p in predictions]
    assert initial.frames["energy_std"][0, 0] == pytest.approx(np.std(energies), rel=0.2)
    assert np.abs(initial.frames["forces"][0, 0] - mean_forces).max() < 0.5 * np.abs(mean_forces).max()


# ---- trajectories, restart -----------------------------------------------------------------------------------------
def test_restart_after_a_crash_continues_bit_identically(x64, tmp_path):
    atoms = hydrogen_atoms(3)
    force_field = harmonic(1.0, jnp.asarray(atoms.positions))
    options = dict(
        timestep_fs=1.0,
        stride=5,
        frames_per_chunk=4,
        ensemble="langevin",
        n_replicas=2,
        write_forces=True,
        progress=False,
    )
    simulate(force_field, atoms, steps=80, output=tmp_path / "straight.h5", **options)
    interrupted = tmp_path / "interrupted.h5"
    simulate(force_field, atoms, steps=40, output=interrupted, **options)
    with h5py.File(interrupted, "a") as file:  # a crash after frames were appended but before the checkpoint
        for dataset in file.values():
            if dataset.maxshape and dataset.maxshape[0] is None:
                dataset.resize(dataset.shape[0] + 3, axis=0)
    simulate(force_field, atoms, steps=80, output=interrupted, **options)
    straight, resumed = read_trajectory(tmp_path / "straight.h5"), read_trajectory(interrupted)
    assert len(resumed["time"]) == 17 and resumed["time"][0] == 0.0  # the start, then 16 strides
    for name in ("positions", "velocities", "forces", "conserved_energy", "time", "step"):
        np.testing.assert_array_equal(straight[name], resumed[name])
    assert straight["attrs"]["ensemble"] == "langevin"
    assert straight["attrs"]["timestep_fs"] == 1.0


def test_trajectory_units_export_and_reading_while_open(tmp_path, ethanol):
    pot = jaxatom.Potential.create(tiny_schnet(), ELEMENTS, seed=1)
    path = tmp_path / "md.h5"
    run = simulate(
        pot, ethanol, steps=20, stride=10, frames_per_chunk=1, output=path, write_forces=True, progress=False
    )
    assert run.frames is None and run.output == path
    with h5py.File(path, "r") as file:
        assert file["positions"].attrs["units"] == "Ang"
        assert file["velocities"].attrs["units"] == "Ang/fs"
        assert file["potential_energy"].attrs["units"] == "eV"
        assert file["time"][-1] == 10.0
    frames = trajectory_atoms(path)
    assert len(frames) == 3 and frames[0].info["time_fs"] == 0.0
    np.testing.assert_allclose(frames[0].positions, ethanol.positions, atol=1e-5)  # frame 0 is the start
    np.testing.assert_allclose(
        frames[-1].get_velocities() * units.fs, read_trajectory(path, 0)["velocities"][-1], rtol=1e-5
    )
    reference = pot.predict(frames[-1])
    assert frames[-1].get_potential_energy() == pytest.approx(reference["energy"], abs=2e-3)
    for suffix in (".extxyz", ".traj"):
        out = jaxatom.md.export_trajectory(path, tmp_path / f"out{suffix}")
        from ase.io import read

        assert len(read(out, ":")) == 3


# ---- errors --------------------------------------------------------------------------------------------------------
def test_bad_input_is_refused_with_a_clear_message(tmp_path, ethanol):
    pot = jaxatom.Potential.create(tiny_schnet(), ELEMENTS, seed=1)
    with pytest.raises(ValueError, match="elements the model was not built for: Cl"):
        simulate(pot, molecule("CH3Cl"), steps=10, progress=False)
    bad = ethanol.copy()
    bad.positions[2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        simulate(pot, bad, steps=10, progress=False)
    small = Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]], cell=np.eye(3) * 6.0, pbc=True)
    with pytest.raises(ValueError, match=r"a cell narrower than 2 \(cutoff \+ skin\); use neighbors='images'"):
        simulate(pot, small, steps=10, neighbors="list", progress=False)
    slab = small.copy()
    slab.pbc = [True, True, False]
    with pytest.raises(ValueError, match="cannot handle a slab or wire"):
        simulate(pot, slab, steps=10, neighbors="list", progress=False)
    flat = Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]], cell=[6.0, 6.0, 0.0], pbc=[True, True, False])
    with pytest.raises(ValueError, match="non-zero volume"):
        simulate(pot, flat, steps=10, progress=False)
    with pytest.raises(ValueError, match="multiple of stride"):
        simulate(pot, ethanol, steps=15, stride=10, progress=False)
    with pytest.raises(ValueError, match="unknown ensemble"):
        simulate(pot, ethanol, steps=10, ensemble="npt", progress=False)
    with pytest.raises(ValueError, match="timestep_fs must be positive"):
        simulate(pot, ethanol, steps=10, timestep_fs=-1.0, progress=False)
    (tmp_path / "taken.h5").write_bytes(b"")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        simulate(pot, ethanol, steps=10, output=tmp_path / "taken.h5", progress=False)


def test_restart_with_other_settings_is_refused(tmp_path):
    atoms = hydrogen_atoms(2)
    force_field = harmonic(1.0, jnp.asarray(atoms.positions))
    path = tmp_path / "run.h5"
    simulate(force_field, atoms, steps=10, stride=5, output=path, progress=False)
    with pytest.raises(jaxatom.md.CheckpointMismatch, match="timestep_fs"):
        simulate(force_field, atoms, steps=20, stride=5, timestep_fs=1.0, output=path, progress=False)


# ---- initial conditions and ring-polymer variants ------------------------------------------------------------------
def test_initial_conditions_remove_momentum_and_rotation(x64):
    from jaxatom.md.state import (
        degrees_of_freedom,
        kinetic_energy,
        maxwell_boltzmann,
        remove_com_momentum,
        remove_rotation,
        temperature,
    )

    atoms = molecule("CH3CH2OH")
    masses = jnp.asarray(masses_of(atoms.numbers))
    momenta = maxwell_boltzmann(jax.random.PRNGKey(0), masses, 300.0, (4000,))
    # Maxwell-Boltzmann: every momentum component has variance m kT
    variance = np.var(np.asarray(momenta), axis=(0, 2))
    np.testing.assert_allclose(variance / (np.asarray(masses) * BOLTZMANN * 300.0), 1.0, atol=0.05)
    assert np.mean(temperature(kinetic_energy(momenta, masses), 3 * len(atoms))) == pytest.approx(300.0, rel=0.01)
    positions = jnp.asarray(atoms.positions)
    fixed = remove_rotation(positions, remove_com_momentum(momenta[:3], masses), masses)
    assert np.abs(np.sum(fixed, axis=1)).max() < 1e-10
    com = np.sum(np.asarray(masses)[:, None] * atoms.positions, 0) / np.sum(masses)
    angular = np.sum(np.cross(atoms.positions - com, np.asarray(fixed)), axis=1)
    assert np.abs(angular).max() < 1e-10
    assert degrees_of_freedom(9, True, True) == 21 and degrees_of_freedom(9, False) == 27


def test_ring_polymer_without_thermostat_conserves_its_hamiltonian_and_trpmd_leaves_the_centroid_alone(x64):
    atoms = hydrogen_atoms(2)
    force_field = harmonic(0.5, jnp.asarray(atoms.positions))
    options = dict(
        steps=2000,
        timestep_fs=0.5,
        stride=20,
        frames_per_chunk=100,
        ensemble="rpmd",
        n_beads=8,
        temperature_K=300.0,
        n_replicas=2,
        progress=False,
    )
    microcanonical = simulate(force_field, atoms, rpmd_thermostat="none", **options).frames["conserved_energy"]
    assert np.abs(microcanonical - microcanonical[0]).max() < 1e-3 * np.abs(microcanonical[0]).max()
    free = from_energy(lambda x: 0.0 * jnp.sum(x))
    velocities = simulate(free, atoms, rpmd_thermostat="trpmd", **options).frames["velocities"]
    np.testing.assert_allclose(velocities, np.broadcast_to(velocities[:1], velocities.shape), rtol=1e-10, atol=1e-14)


def test_trajectory_is_readable_while_the_writer_has_it_open(tmp_path):
    from jaxatom.md.trajectory import TrajectoryWriter

    path = tmp_path / "live.h5"
    writer = TrajectoryWriter.create(
        path,
        {"species": np.array([1]), "masses": np.array([1.008]), "cell": np.zeros((3, 3)), "pbc": np.zeros(3, bool)},
        {"ensemble": "nve"},
        {"time": ((), np.float64), "positions": ((1, 1, 3), np.float32)},
    )
    try:
        writer.append({"time": np.array([0.5]), "positions": np.ones((1, 1, 1, 3), np.float32)})
        assert read_trajectory(path)["time"].tolist() == [0.5]
        writer.append({"time": np.array([1.0]), "positions": np.ones((1, 1, 1, 3), np.float32)})
        assert read_trajectory(path)["time"].tolist() == [0.5, 1.0]
    finally:
        writer.close()


def test_remove_rotation_fixes_angular_momentum_and_counts_degrees_of_freedom(x64):
    atoms = molecule("CH3CH2OH")
    free = from_energy(lambda x: 0.0 * jnp.sum(x))
    run = simulate(free, atoms, steps=20, stride=10, frames_per_chunk=2, remove_rotation=True, progress=False)
    masses = masses_of(atoms.numbers)
    positions, velocities = run.frames["positions"][:, 0], run.frames["velocities"][:, 0]
    com = np.einsum("n,fnk->fk", masses, positions) / masses.sum()
    angular = np.einsum("n,fnk->fk", masses, np.cross(positions - com[:, None], velocities))
    assert np.abs(angular).max() < 1e-10
    kinetic = run.frames["kinetic_energy"][:, 0]
    np.testing.assert_allclose(run.frames["temperature"][:, 0], 2 * kinetic / ((3 * len(atoms) - 6) * BOLTZMANN))


def test_an_exploding_simulation_stops_with_a_clear_error_and_keeps_the_written_frames(x64, tmp_path):
    atoms = hydrogen_atoms(2)
    stiff = harmonic(1.0e4, jnp.asarray(atoms.positions))  # ω·dt ≈ 10 at 1 fs: velocity Verlet is unstable
    path = tmp_path / "boom.h5"
    with pytest.raises(FloatingPointError, match="blew up between steps"):
        simulate(stiff, atoms, steps=1000, timestep_fs=1.0, stride=1, frames_per_chunk=50, output=path, progress=False)
    frames = read_trajectory(path)
    assert len(frames["time"]) > 0 and np.all(np.isfinite(frames["positions"]))
