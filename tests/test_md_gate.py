"""The uncertainty gate of MD: an analytic two-member ensemble whose members disagree only where an atom is displaced
beyond ``A`` along x; the gate fires there and nowhere else, freezes exactly the crossing replica, restarts
bit-identically and leaves ungated runs unchanged."""

from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms

import jaxatom
from jaxatom.errors import ConfigError
from jaxatom.md import Langevin, flagged_structures, read_trajectory, simulate
from jaxatom.md.forces import ForceField, from_energy
from jaxatom.potential import Calibration, PotentialEnsemble

from .conftest import ELEMENTS, tiny_schnet

A = 0.5  # Å: members agree while every atom's x displacement is below A
THRESHOLD = 0.1  # eV/Å: crossed when the displacement exceeds A + THRESHOLD (members' spread = u - A)
STEPS, STRIDE = 120, 5


def disagreeing_ensemble(reference: np.ndarray) -> ForceField:
    """Harmonic wells (k = 1 eV/Å²) around ``reference [N, 3]``; member ±1 adds ``±½ relu(u_x − A)²`` per atom, so
    the mean force is harmonic and ``forces_std_max = max_i relu(u_ix − A)``."""
    reference = jnp.asarray(reference)

    def member_energy(sign, positions):
        u = positions - reference
        return 0.5 * jnp.sum(u**2) + sign * 0.5 * jnp.sum(jax.nn.relu(u[:, 0] - A) ** 2)

    def apply(params, positions, neighbors):
        signs = jnp.array([1.0, -1.0], positions.dtype)
        energy, grad = jax.vmap(jax.value_and_grad(member_energy, argnums=1), in_axes=(0, None))(signs, positions)
        forces = -grad
        force_std = jnp.sqrt(jnp.sum(jnp.var(forces, axis=0), axis=-1))
        return {"energy": jnp.mean(energy), "forces": jnp.mean(forces, axis=0), "energy_std": jnp.std(energy),
                "forces_std_max": jnp.max(force_std)}  # fmt: skip

    return ForceField(apply=apply, params={}, units={"energy_std": "eV", "forces_std_max": "eV/Ang"})


def replicas() -> list[Atoms]:
    """Two replicas of four H atoms; in replica 0 atoms 0 and 1 swing ±1 Å along x (atom 0 first towards +x), in
    replica 1 ±0.2 Å."""
    structures = []
    for amplitude in (1.0, 0.2):
        atoms = Atoms("H4", positions=[[0, 0, 0], [3, 0, 0], [0, 3, 0], [0, 0, 3]])
        momenta = np.zeros((4, 3))
        momenta[0, 0] = momenta[1, 0] = amplitude * atoms.get_masses()[0]  # p = m ω A with ω = 1 per ASE time
        momenta[1, 0] *= -1  # atom 1 swings the other way: no total momentum
        atoms.set_momenta(momenta)
        structures.append(atoms)
    return structures


OPTIONS = dict(timestep_fs=0.5, ensemble="nve", velocities="atoms", frames_per_chunk=8, progress=False)


@pytest.fixture(scope="module")
def force_field():
    return disagreeing_ensemble(replicas()[0].positions)


@pytest.fixture(scope="module")
def every_step(force_field):
    """The ungated run written at every step: the reference for what the gate must see."""
    return simulate(force_field, replicas(), steps=STEPS, stride=1, **{**OPTIONS, "frames_per_chunk": STEPS}).frames


def test_gate_flags_where_the_members_disagree_and_keeps_the_dynamics(force_field, every_step):
    run = simulate(force_field, replicas(), steps=STEPS, stride=STRIDE, uncertainty_threshold=THRESHOLD,
                   uncertainty_action="flag", **OPTIONS)  # fmt: skip
    start = {name: values[0] for name, values in run.frames.items()}  # frame 0: the starting state
    np.testing.assert_allclose(start["uncertainty"], every_step["forces_std_max"][0], rtol=1e-6)
    assert not start["flagged"].any() and np.all(start["candidate_step"] == -1)  # the gate judges steps taken
    frames = {name: values[1:] for name, values in run.frames.items()}  # one per stride interval
    after = {name: values[1:] for name, values in every_step.items()}  # every step after the start
    spread = after["forces_std_max"].reshape(-1, STRIDE, 2)  # [F, stride, R]
    np.testing.assert_allclose(frames["uncertainty"], spread.max(axis=1), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(frames["flagged"], spread.max(axis=1) > THRESHOLD)
    assert frames["flagged"][:, 0].any() and not frames["flagged"][:, 1].any()
    np.testing.assert_allclose(run.frames["positions"], every_step["positions"][::STRIDE], atol=1e-6)
    for f, r in zip(*np.nonzero(frames["flagged"]), strict=True):  # the candidate is the most uncertain step
        k = int(np.argmax(spread[f, :, r]))
        assert frames["candidate_step"][f, r] == after["step"][f * STRIDE + k]
        np.testing.assert_allclose(frames["candidate_positions"][f, r], after["positions"][f * STRIDE + k, r],
                                   atol=1e-6)  # fmt: skip
        displacement = frames["candidate_positions"][f, r] - replicas()[0].positions
        assert displacement[:, 0].max() > A + THRESHOLD


def test_stop_replica_freezes_exactly_the_crossing_replica(force_field, every_step):
    run = simulate(force_field, replicas(), steps=STEPS, stride=STRIDE, uncertainty_threshold=THRESHOLD,
                   uncertainty_action="stop_replica", **OPTIONS)  # fmt: skip
    crossing = int(np.argmax(every_step["forces_std_max"][:, 0] > THRESHOLD))  # the first crossing step (frame 0: 0)
    np.testing.assert_array_equal(run.stopped, [True, False])
    final = np.asarray(run.state.positions)
    np.testing.assert_allclose(final[0], every_step["positions"][crossing, 0], atol=1e-6)
    np.testing.assert_allclose(final[1], every_step["positions"][-1, 1], atol=1e-6)
    frames = run.frames
    assert len(frames["time"]) == STEPS // STRIDE + 1
    crossed_frame = (crossing - 1) // STRIDE + 1  # frame f > 0 holds steps (f - 1) * STRIDE + 1 ... f * STRIDE
    assert frames["flagged"][crossed_frame, 0] and frames["flagged"][:, 0].sum() == 1
    assert frames["candidate_step"][crossed_frame, 0] == every_step["step"][crossing]
    assert np.all(np.isnan(frames["uncertainty"][crossed_frame + 1 :, 0]))
    np.testing.assert_array_equal(frames["positions"][crossed_frame + 1 :, 0], final[None, 0].repeat(
        STEPS // STRIDE - crossed_frame, axis=0))  # fmt: skip


def test_stop_ends_the_run_after_the_chunk_that_crossed(force_field, every_step, tmp_path):
    path = tmp_path / "stop.h5"
    run = simulate(force_field, replicas(), steps=STEPS, stride=STRIDE, uncertainty_threshold=THRESHOLD,
                   uncertainty_action="stop", output=path, **OPTIONS)  # fmt: skip
    crossing = int(np.argmax(every_step["forces_std_max"][:, 0] > THRESHOLD))
    chunk_steps = OPTIONS["frames_per_chunk"] * STRIDE
    last_step = ((crossing - 1) // chunk_steps + 1) * chunk_steps
    assert last_step < STEPS and int(run.state.step) == last_step
    np.testing.assert_array_equal(run.stopped, [True, False])
    assert read_trajectory(path)["step"][-1] == last_step
    again = simulate(force_field, replicas(), steps=STEPS, stride=STRIDE, uncertainty_threshold=THRESHOLD,
                     uncertainty_action="stop", output=path, **OPTIONS)  # fmt: skip
    assert int(again.state.step) == last_step  # a stopped run stays stopped when rerun


def test_restart_with_the_gate_is_bit_identical_and_flagged_structures_are_read(force_field, tmp_path):
    options = dict(steps=STEPS, stride=STRIDE, uncertainty_threshold=THRESHOLD, uncertainty_action="stop_replica")
    straight, interrupted = tmp_path / "straight.h5", tmp_path / "interrupted.h5"
    simulate(force_field, replicas(), output=straight, **options, **OPTIONS)
    simulate(force_field, replicas(), output=interrupted, **{**options, "steps": 40}, **OPTIONS)
    with h5py.File(interrupted, "a") as file:  # a crash after frames were appended but before the checkpoint
        for dataset in file.values():
            if dataset.maxshape and dataset.maxshape[0] is None:
                dataset.resize(dataset.shape[0] + 3, axis=0)
    simulate(force_field, replicas(), output=interrupted, **options, **OPTIONS)
    a, b = read_trajectory(straight), read_trajectory(interrupted)
    assert a.keys() == b.keys() and {"uncertainty", "flagged", "candidate_positions", "candidate_step"} <= set(a)
    for name in a.keys() - {"attrs"}:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    n_frames = STEPS // STRIDE + 1
    assert a["uncertainty"].shape == (n_frames, 2) and a["candidate_positions"].shape == (n_frames, 2, 4, 3)
    flagged = flagged_structures(interrupted)
    assert len(flagged) == 1
    atoms = flagged[0]
    assert atoms.info["replica"] == 0 and atoms.info["uncertainty"] > THRESHOLD
    assert atoms.info["step"] == int(a["candidate_step"][a["flagged"]][0])
    assert atoms.info["temperature_K"] == 300.0 and atoms.get_chemical_formula() == "H4"


def test_ungated_runs_are_unchanged(force_field, tmp_path):
    path = tmp_path / "plain.h5"
    run = simulate(force_field, replicas(), steps=10, stride=5, output=path, **OPTIONS)
    data = read_trajectory(path)
    assert run.stopped is None and run.state.gate is None
    assert not {"uncertainty", "flagged", "candidate_positions", "candidate_step"} & set(data)
    assert not any(key.startswith("uncertainty") for key in data["attrs"])
    assert flagged_structures(path) == []
    old = Path(__file__).parent / "data" / "md_run_v1" / "langevin.h5"  # written before the gate existed
    assert flagged_structures(old) == [] and len(read_trajectory(old)["time"]) > 0


def test_gate_errors_name_the_fix(force_field):
    atoms = replicas()[0]
    single = from_energy(lambda x: 0.5 * jnp.sum(x**2))
    with pytest.raises(ConfigError, match="ensemble's force spread"):
        simulate(single, atoms, steps=5, stride=5, uncertainty_threshold=0.1, uncertainty_action="flag", **OPTIONS)
    with pytest.raises(ConfigError, match="pass uncertainty_threshold"):
        simulate(force_field, atoms, steps=5, stride=5, uncertainty_action="flag", **OPTIONS)
    with pytest.raises(ConfigError, match="set uncertainty_action"):
        simulate(force_field, atoms, steps=5, stride=5, uncertainty_threshold=0.1, **OPTIONS)
    with pytest.raises(ConfigError, match="uncertainty_action must be one of"):
        simulate(force_field, atoms, steps=5, stride=5, uncertainty_threshold=0.1, uncertainty_action="halt",
                 **OPTIONS)  # fmt: skip


@pytest.fixture(scope="module")
def ensemble():
    members = [jaxatom.Potential.create(tiny_schnet(), elements=ELEMENTS, seed=seed) for seed in range(2)]
    return PotentialEnsemble.from_potentials(members)


def test_a_potential_ensemble_gates_with_its_calibrated_threshold(ensemble, ethanol):
    with pytest.raises(ConfigError, match="single Potential"):
        simulate(jaxatom.Potential.create(tiny_schnet(), elements=ELEMENTS, seed=0), ethanol, steps=2, stride=2,
                 uncertainty_threshold=0.1, uncertainty_action="flag", progress=False)  # fmt: skip
    calibration = Calibration(energy_scale=2.0, forces_scale=3.0, forces_max_scale=3.0, forces_threshold=1e-9,
                              threshold_quantile=0.99, n_structures=10, n_force_components=270)  # fmt: skip
    run = simulate(ensemble.with_calibration(calibration), ethanol, steps=4, stride=2, n_replicas=2,
                   uncertainty_action="stop_replica", frames_per_chunk=1, progress=False)  # fmt: skip
    assert run.settings["uncertainty_threshold"] == 1e-9 and run.settings["uncertainty_scale"] == 3.0
    np.testing.assert_array_equal(run.stopped, [True, True])  # any spread exceeds 1e-9 eV/Å: stopped at step 1
    np.testing.assert_array_equal(run.frames["candidate_step"], [[-1, -1], [1, 1]])  # the start, then step 1
    np.testing.assert_allclose(run.frames["uncertainty"][0], 3.0 * run.frames["forces_std_max"][0], rtol=1e-6)


def test_flagged_structures_of_a_temperature_ladder_carry_their_replica_temperature(force_field, tmp_path):
    path = tmp_path / "ladder.h5"
    swinging = replicas()[0]
    simulate(force_field, [swinging, swinging], steps=60, stride=STRIDE, uncertainty_threshold=THRESHOLD,
             uncertainty_action="flag", output=path, **{**OPTIONS, "ensemble": Langevin(temperature_K=(300.0, 600.0),
             friction_per_fs=1e-4)})  # fmt: skip
    flagged = flagged_structures(path)
    assert {atoms.info["replica"] for atoms in flagged} == {0, 1}
    for atoms in flagged:
        assert atoms.info["temperature_K"] == (300.0, 600.0)[atoms.info["replica"]]


def test_md_configuration_takes_the_gate_and_a_temperature_ladder():
    from jaxatom.md.run import MDConfig, MDConfigError

    config = MDConfig(model="m", structure="s.xyz", ensemble="langevin", temperature_K=[300, 600], n_replicas=2,
                      uncertainty_action="stop_replica", uncertainty_threshold="calibrated")  # fmt: skip
    options = config.simulate_options()
    assert options["uncertainty_action"] == "stop_replica" and options["uncertainty_threshold"] == "calibrated"
    assert options["ensemble"] == Langevin(temperature_K=(300.0, 600.0))
    with pytest.raises(MDConfigError, match="uncertainty_action"):
        MDConfig.load({"model": "m", "structure": "s.xyz", "uncertainty_action": "halt"}, error=MDConfigError)


def test_replicas_of_different_molecules_keep_their_own_atoms_in_the_candidates(ensemble, ethanol, tmp_path):
    from ase.build import molecule

    path = tmp_path / "mixed.h5"
    water = molecule("H2O")
    simulate(ensemble, [ethanol, water], steps=4, stride=2, uncertainty_threshold=1e-9, uncertainty_action="flag",
             output=path, progress=False)  # fmt: skip
    flagged = flagged_structures(path)
    assert [(a.info["frame"], a.info["replica"]) for a in flagged] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert [len(a) for a in flagged] == [9, 3, 9, 3]
    assert flagged[1].get_chemical_formula() == water.get_chemical_formula()
    with h5py.File(path) as file:
        assert file["candidate_positions"].attrs["per_atom"] and file["uncertainty"].attrs["units"] == "eV/Ang"


def test_constant_pressure_candidates_keep_their_cell(ensemble, crystal, tmp_path):
    path = tmp_path / "npt.h5"
    simulate(ensemble, crystal, steps=4, stride=2, ensemble="npt_scr", uncertainty_threshold=1e-9,
             uncertainty_action="flag", output=path, progress=False)  # fmt: skip
    data, flagged = read_trajectory(path), flagged_structures(path)
    assert data["candidate_cell"].shape == (3, 1, 3, 3) and len(flagged) == 2  # frame 0 is never flagged
    for atoms in flagged:
        np.testing.assert_array_equal(atoms.cell.array, data["candidate_cell"][atoms.info["frame"], 0])
        assert atoms.pbc.all() and atoms.info["step"] in (2 * atoms.info["frame"] - 1, 2 * atoms.info["frame"])


def test_ring_polymers_are_gated_on_their_most_uncertain_bead(force_field):
    run = simulate(force_field, replicas(), steps=40, stride=STRIDE, uncertainty_threshold=THRESHOLD,
                   uncertainty_action="stop_replica", **{**OPTIONS, "ensemble": "rpmd", "n_beads": 4})  # fmt: skip
    np.testing.assert_array_equal(run.stopped, [True, False])
    frames, beads = run.frames, np.asarray(run.state.positions)
    crossed = int(np.argmax(frames["flagged"][:, 0]))
    np.testing.assert_allclose(frames["candidate_positions"][crossed, 0], beads[0].mean(axis=0), rtol=1e-6)
    assert int(frames["candidate_step"][crossed, 0]) > 0 and np.all(frames["candidate_step"][crossed + 1 :, 0] == -1)
