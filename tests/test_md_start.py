"""Trajectories start at t = 0: frame 0 is the starting state (energies, temperature, observables), in memory and on
disk alike; reports cover the whole run; trajectories of format version 1 (first frame one stride in) stay readable
and are analysed with their own times; the default stride resolves every vibration, and a stride too coarse for the
O–H stretch warns when dipoles are recorded."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms, units

from jaxatom.md import ForceField, read_trajectory, simulate
from jaxatom.md.analysis import energy_drift
from jaxatom.md.driver import default_stride
from jaxatom.md.run import MDConfig, report
from jaxatom.md.state import BOLTZMANN
from jaxatom.spectra import SpectrumWarning

CENTER = np.zeros((3, 3))
CHARGE = 0.1  # e: the dipole observable is CHARGE × Σ positions


def dipolar_wells() -> ForceField:
    """Harmonic wells (1 eV/Å²) around the origin that also report a dipole moment."""

    def apply(params, positions, neighbors):
        energy, grad = jax.value_and_grad(lambda x: 0.5 * jnp.sum(x**2))(positions)
        return {"energy": energy, "forces": -grad, "dipole_moment": CHARGE * jnp.sum(positions, axis=0)}

    return ForceField(apply=apply, params={}, units={"dipole_moment": "e*Ang"})


def start() -> Atoms:
    atoms = Atoms("H3", positions=[[0.3, 0.0, 0.0], [0.0, -0.2, 0.1], [0.1, 0.2, -0.4]])
    momenta = np.array([[1.0, 0.5, 0.0], [-0.5, 0.0, 0.5], [-0.5, -0.5, -0.5]]) * 0.05
    atoms.set_momenta(momenta)  # no total momentum: NVE keeps them as they are
    return atoms


OPTIONS = dict(timestep_fs=0.5, stride=2, frames_per_chunk=2, velocities="atoms", observables=["dipole_moment"],
               progress=False)  # fmt: skip


def test_frame_0_is_the_starting_state_in_memory_and_on_disk(tmp_path):
    atoms = start()
    run = simulate(dipolar_wells(), atoms, steps=8, **OPTIONS)
    frames = {name: values for name, values in run.frames.items()}
    assert frames["time"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] and frames["step"].tolist() == [0, 2, 4, 6, 8]
    np.testing.assert_allclose(frames["positions"][0, 0], atoms.positions, atol=1e-6)
    np.testing.assert_allclose(frames["velocities"][0, 0], atoms.get_velocities() * units.fs, rtol=1e-5)
    assert frames["potential_energy"][0, 0] == pytest.approx(0.5 * np.sum(atoms.positions**2), rel=1e-5)
    assert frames["kinetic_energy"][0, 0] == pytest.approx(atoms.get_kinetic_energy(), rel=1e-5)
    dof = 3 * len(atoms) - 3
    assert frames["temperature"][0, 0] == pytest.approx(2 * atoms.get_kinetic_energy() / (dof * BOLTZMANN), rel=1e-5)
    np.testing.assert_allclose(frames["dipole_moment"][0, 0], CHARGE * atoms.positions.sum(axis=0), rtol=1e-5)
    assert frames["conserved_energy"][0, 0] == pytest.approx(atoms.get_kinetic_energy() + 0.5 * np.sum(
        atoms.positions**2), rel=1e-5)  # fmt: skip
    path = tmp_path / "run.h5"
    simulate(dipolar_wells(), atoms, steps=8, output=path, **OPTIONS)
    written = read_trajectory(path)
    assert written["attrs"]["version"] == 2
    for name, values in frames.items():
        np.testing.assert_array_equal(written[name], values, err_msg=name)


def test_a_run_in_two_calls_equals_one_and_counts_only_steps_as_speed(tmp_path):
    whole, parts = tmp_path / "whole.h5", tmp_path / "parts.h5"
    simulate(dipolar_wells(), start(), steps=12, output=whole, **OPTIONS)
    first = simulate(dipolar_wells(), start(), steps=4, output=parts, **OPTIONS)
    second = simulate(dipolar_wells(), start(), steps=12, output=parts, **OPTIONS)
    a, b = read_trajectory(whole), read_trajectory(parts)
    assert len(a["time"]) == 7 and a["time"][0] == 0.0 and a["time"][-1] == 6.0
    for name in a.keys() - {"attrs"}:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    for run in (first, second):
        assert run.timing["steps_per_s"] > 0 and run.timing["compile_s"] > 0
    done = simulate(dipolar_wells(), start(), steps=12, output=parts, **OPTIONS)  # complete: nothing runs
    assert np.isnan(done.timing["steps_per_s"]) and len(read_trajectory(parts)["time"]) == 7


def test_the_report_covers_the_whole_run_and_old_trajectories_use_their_own_times(tmp_path):
    path = tmp_path / "nve.h5"
    simulate(dipolar_wells(), start(), steps=200, output=path, **OPTIONS)
    summary = report(path)
    assert summary["frames"] == 101 and summary["time_ps"] == pytest.approx(0.1)
    old = tmp_path / "old.h5"  # format version 1: the first frame is one stride (5 fs) in
    shutil.copy(Path(__file__).parent / "data" / "md_run_v1" / "langevin.h5", old)
    data = read_trajectory(old)
    assert data["attrs"]["version"] == 1 and data["time"].tolist() == [5.0, 10.0, 15.0, 20.0]
    summary = report(old)
    assert summary["frames"] == 4 and summary["time_ps"] == pytest.approx(0.020)  # the run's length, from its times
    expected = energy_drift(data["time"], data["conserved_energy"], len(data["species"]))
    np.testing.assert_allclose(summary["energy_drift_eV_per_atom_per_ps"], expected)


def test_the_default_stride_keeps_frames_at_most_1_fs_apart():
    assert default_stride(2000, 0.5) == 2 and default_stride(2001, 0.5) == 1
    assert default_stride(1000, 0.25) == 4 and default_stride(1000, 0.3) == 2  # 3 does not divide 1000
    assert default_stride(10, 1.0) == 1 and default_stride(10, 2.0) == 1
    assert MDConfig(model="m", structure="s.xyz").simulate_options()["stride"] is None  # the same default
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpectrumWarning)  # the default never warns
        run = simulate(dipolar_wells(), start(), steps=20, velocities="atoms", observables=["dipole_moment"],
                       progress=False)  # fmt: skip
    assert run.settings["stride"] == 2 and run.settings["frames_per_chunk"] == 500
    np.testing.assert_allclose(np.diff(run.frames["time"]), 1.0)


def test_recording_dipoles_too_far_apart_for_the_oh_stretch_warns():
    options = dict(steps=20, velocities="atoms", progress=False)
    with pytest.warns(SpectrumWarning, match=r"frames 5 fs apart .* up to 3336 cm⁻¹.*Use stride ≤ 8"):
        simulate(dipolar_wells(), start(), stride=10, observables=["dipole_moment"], **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpectrumWarning)
        simulate(dipolar_wells(), start(), stride=10, **options)  # no spectral observable: positions only
        simulate(dipolar_wells(), start(), stride=4, observables=["dipole_moment"], **options)  # 2 fs: fine
