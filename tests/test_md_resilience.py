"""MD survives the ways real runs fail: SIGKILL at every dangerous moment, a full disk, a second writer, a changed
model, bad structures. Hard stops run ``jaxatom md`` in a subprocess (tests/md_child.py) and the finished trajectory
must equal an uninterrupted run's bit for bit."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from ase.build import molecule
from ase.io import write

import jaxatom
from jaxatom.cli import main
from jaxatom.errors import DiskFullError, StructureError
from jaxatom.files import exclusive_lock
from jaxatom.md import read_trajectory, simulate
from jaxatom.md.driver import CheckpointMismatch
from jaxatom.md.hdf5_files import open_for_append

from .conftest import ELEMENTS, tiny_schnet

CHILD = Path(__file__).with_name("md_child.py")
#: Langevin (random keys must be restored too): 24 frames in 6 chunks.
RUN = {"ensemble": "langevin", "steps": 48, "stride": 2, "frames_per_chunk": 4, "temperature_K": 500}


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict:
    """A tiny saved model, a structure, a shared compilation cache and the reference (uninterrupted) trajectory."""
    root = tmp_path_factory.mktemp("md_resilience")
    jaxatom.Potential.create(tiny_schnet(), elements=ELEMENTS, seed=0).save(root / "model")
    write(root / "ethanol.xyz", molecule("CH3CH2OH"))
    env = {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(root / "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
        # XLA logs an error-level line when it loads a cached executable built for other CPU features; the tests
        # check that jaxatom's own message is the whole stderr
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    case = {"root": root, "env": env}
    reference = _config(case, root / "reference")
    assert _child(case, "none", 0, reference).returncode == 0
    case["reference"] = read_trajectory(reference.parent / "traj.h5")
    return case


def _config(case: dict, directory: Path, output: str = "traj.h5", **changes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    root = case["root"]
    settings = {"model": str(root / "model"), "structure": str(root / "ethanol.xyz"), "output": output}
    settings.update(RUN, **changes)
    path = directory / "md.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def _child(case: dict, point: str, nth: int, config: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(CHILD), point, str(nth), str(config)]
    return subprocess.run(command, env=case["env"], capture_output=True, text=True, timeout=600)


def _assert_same_trajectory(case: dict, path: Path) -> None:
    finished, reference = read_trajectory(path), case["reference"]
    assert finished.keys() == reference.keys()
    for name, values in reference.items():
        if name != "attrs":
            np.testing.assert_array_equal(finished[name], values, err_msg=name)


def _flags_left_set(path: Path) -> bool:
    try:
        h5py.File(path, "a", libver="latest").close()
    except OSError as err:
        return "already open for write" in str(err)
    return False


def test_md_killed_at_every_dangerous_moment_resumes_bit_identically(case, tmp_path):
    config = _config(case, tmp_path)
    output, checkpoint = tmp_path / "traj.h5", tmp_path / "traj.h5.ckpt.npz"
    # killed after the trajectory was created, before its first checkpoint: the next run simply starts again
    result = _child(case, "first_checkpoint", 0, config)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert output.exists() and not checkpoint.exists()
    kills = [("append", 2), ("between_chunks", 2), ("checkpoint_write", 2), ("append", 1)]
    for point, nth in kills:
        result = _child(case, point, nth, config)
        assert result.returncode == -signal.SIGKILL, (point, result.stderr)
        assert _flags_left_set(output), point  # what made a plain reopen fail before
        assert checkpoint.exists() and not list(tmp_path.glob("*.partial"))
    result = _child(case, "none", 0, config)
    assert result.returncode == 0, result.stderr
    _assert_same_trajectory(case, output)
    assert not _flags_left_set(output)


def test_a_disk_that_fills_during_md_stops_with_a_clear_message_and_the_run_continues_once_there_is_space(
    case, tmp_path
):
    """A real full file system: a small tmpfs in a private mount namespace, filled by another writer mid-run, just
    before an append that needs new HDF5 chunks (frame 1024): after the 4th checkpoint with frames (frame 0's, then
    chunks 1 to 3)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    long_run = {"steps": 2080, "frames_per_chunk": 260}
    config = _config(case, tmp_path / "config", output=str(mount / "traj.h5"), **long_run)
    reference = _config(case, tmp_path / "reference", **long_run)
    child = f"{sys.executable} {CHILD}"
    script = (
        f"mount -t tmpfs -o size=4m tmpfs {mount} || exit 99; {child} none 0 {reference} || exit 98; "
        f"{child} fill_disk 4 {config} > {tmp_path}/full.out 2> {tmp_path}/full.err; echo $? > {tmp_path}/full.rc; "
        f"ls {mount} > {tmp_path}/kept.txt; rm {mount}/filler; "
        f"{child} none 0 {config} > /dev/null 2> {tmp_path}/resume.err; echo $? > {tmp_path}/resume.rc; "
        f"cp {mount}/traj.h5 {tmp_path}/traj.h5"
    )
    done = None
    for unshare in (["unshare", "-m"], ["unshare", "-r", "-m"]):
        if shutil.which(unshare[0]) is not None:
            done = subprocess.run([*unshare, "sh", "-c", script], env=case["env"], capture_output=True, text=True)
            if done.returncode == 0:
                break
    if done is None or done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs unshare and mount rights)")
    error = (tmp_path / "full.err").read_text()
    assert (tmp_path / "full.rc").read_text().strip() == "2", error  # not 139 (a segmentation fault in HDF5)
    assert len(error.strip().splitlines()) == 1 and error.startswith("jaxatom md: "), error
    assert f"the disk holding {mount / 'traj.h5'} is full: the next 260 frames need about" in error
    assert "keep the run up to step 1560; free space and rerun the same command" in error
    assert "traj.h5.ckpt.npz" in (tmp_path / "kept.txt").read_text()
    assert (tmp_path / "resume.rc").read_text().strip() == "0", (tmp_path / "resume.err").read_text()
    finished, expected = read_trajectory(tmp_path / "traj.h5"), read_trajectory(reference.parent / "traj.h5")
    for name in ("positions", "velocities", "conserved_energy", "time"):
        np.testing.assert_array_equal(finished[name], expected[name], err_msg=name)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_injected_enospc_while_reserving_frames_keeps_everything_and_resumes(case, tmp_path, monkeypatch, capsys):
    config = _config(case, tmp_path)
    calls = {"n": 0}
    allocate = os.posix_fallocate

    def fallocate(fd, offset, length):
        calls["n"] += 1
        return _enospc() if calls["n"] == 3 else allocate(fd, offset, length)  # frame 0, chunk 1, chunk 2 fails

    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    assert main(["md", str(config), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert "disk holding" in error and "is full" in error and "keep the run up to step 8" in error
    assert read_trajectory(tmp_path / "traj.h5")["time"].shape == (5,)  # the start and chunk 1
    monkeypatch.undo()
    assert main(["md", str(config), "--quiet"]) == 0
    _assert_same_trajectory(case, tmp_path / "traj.h5")


def test_injected_enospc_while_writing_the_checkpoint_keeps_the_previous_one(case, tmp_path, monkeypatch):
    config = _config(case, tmp_path)
    calls = {"n": 0}
    savez = np.savez

    def failing_savez(handle, **arrays):
        calls["n"] += 1
        if calls["n"] == 4:  # the checkpoints at creation, after frame 0, after chunk 1, then chunk 2's fails
            handle.write(b"half a checkpoint")
            _enospc()
        savez(handle, **arrays)

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(DiskFullError, match=r"checkpoint .*ckpt.npz is full.*keep the run up to step 8"):
        main_raising(config)
    assert not list(tmp_path.glob("*.tmp"))
    with np.load(tmp_path / "traj.h5.ckpt.npz") as checkpoint:  # the previous one, intact
        assert '"n_frames": 5' in bytes(checkpoint["meta"]).decode()
    monkeypatch.undo()
    assert main(["md", str(config), "--quiet"]) == 0
    _assert_same_trajectory(case, tmp_path / "traj.h5")


def main_raising(config: Path) -> None:
    """``jaxatom md`` in-process, letting jaxatom's error through instead of printing it."""
    from jaxatom.md.run import load_md_config, md_run

    md_run(load_md_config(config), progress=False)


def test_a_run_that_cannot_fit_on_the_disk_is_refused_before_it_computes(case, tmp_path, monkeypatch, capsys):
    config = _config(case, tmp_path)
    monkeypatch.setattr("jaxatom.files.free_bytes", lambda path: 10_000)
    monkeypatch.setattr("jaxatom.md.driver._run_chunk", lambda *args: pytest.fail("a chunk ran"))
    assert main(["md", str(config), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "not enough disk space for the 25 frames still to write" in error and "10 kB are free" in error
    assert "raise stride" in error


def test_a_second_writer_is_refused_while_the_first_runs(case, tmp_path):
    config = _config(case, tmp_path)
    with exclusive_lock(tmp_path / "traj.h5", "test"):
        done = subprocess.run(
            [sys.executable, str(CHILD), "none", "0", str(config)], env=case["env"], capture_output=True, text=True
        )
    assert done.returncode == 2
    assert done.stderr.startswith(f"jaxatom md: the MD trajectory {tmp_path / 'traj.h5'} is in use by another")
    assert f"(pid {os.getpid()}" in done.stderr


def test_continuing_with_another_model_is_refused(case, tmp_path):
    config = _config(case, tmp_path)
    settings = yaml.safe_load(config.read_text())
    main_raising(config)
    jaxatom.Potential.create(tiny_schnet(), elements=ELEMENTS, seed=1).save(tmp_path / "other_model")
    config.write_text(yaml.safe_dump({**settings, "model": str(tmp_path / "other_model"), "steps": 96}))
    with pytest.raises(CheckpointMismatch, match="another model"):
        main_raising(config)


def test_overlapping_atoms_are_refused_by_md_as_by_the_calculator(case):
    atoms = molecule("CH3CH2OH")
    atoms.positions[1] = atoms.positions[0] + 0.01
    potential = jaxatom.load_model(case["root"] / "model")
    with pytest.raises(StructureError, match="atoms 0 and 1 overlap") as from_md:
        simulate(potential, atoms, steps=2, stride=2, progress=False)
    with pytest.raises(StructureError) as from_predict:
        potential.predict(atoms)
    assert str(from_md.value) == str(from_predict.value)


def _stale_file(path: Path) -> None:
    """An HDF5 file whose SWMR writer was killed: its consistency flags stay set."""
    code = (
        f"import h5py, os, signal; f = h5py.File(r'{path}', 'w', libver='latest'); "
        "d = f.create_dataset('x', (0, 2), 'f8', maxshape=(None, 2)); f.swmr_mode = True; "
        "d.resize(3, axis=0); d[:] = [[1, 2], [3, 4], [5, 6]]; f.flush(); os.kill(os.getpid(), signal.SIGKILL)"
    )
    subprocess.run([sys.executable, "-c", code])
    assert _flags_left_set(path)


@pytest.mark.parametrize("route", ["clear_flags", "rewrite"])
def test_a_file_left_open_by_a_killed_writer_is_reopened(tmp_path, monkeypatch, route):
    path = tmp_path / "stale.h5"
    _stale_file(path)
    if route == "rewrite":  # an HDF5 build without the clear_status_flags property
        monkeypatch.setattr("jaxatom.md.hdf5_files._open_clearing_status_flags", _enospc)
    with open_for_append(path) as file:
        np.testing.assert_array_equal(file["x"][()], [[1, 2], [3, 4], [5, 6]])
    assert not _flags_left_set(path)


def test_md_errors_are_one_line_and_overrides_may_follow_options(case, tmp_path, capsys):
    config = _config(case, tmp_path)
    assert main(["md", str(config), "--quiet", "steps=7"]) == 2  # the override after --quiet is applied
    error = capsys.readouterr().err
    assert error == "jaxatom md: steps (7) must be a multiple of stride (2)\n"
    atoms = molecule("CH3CH2OH")
    atoms.positions[3] = atoms.positions[2]
    write(tmp_path / "overlap.xyz", atoms)
    assert main(["md", str(config), f"structure={tmp_path / 'overlap.xyz'}", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("jaxatom md: atoms 2 and 3 overlap") and len(error.splitlines()) == 1


def test_a_checkpoint_of_the_previous_version_without_a_model_fingerprint_still_resumes(case, tmp_path):
    config = _config(case, tmp_path, steps=24)
    main_raising(config)
    checkpoint = tmp_path / "traj.h5.ckpt.npz"
    with np.load(checkpoint) as data:
        arrays = dict(data)
    meta = json.loads(bytes(arrays["meta"]).decode())
    del meta["model_sha256"]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(checkpoint, **arrays)
    main_raising(_config(case, tmp_path))  # the same run, 48 steps
    _assert_same_trajectory(case, tmp_path / "traj.h5")


def test_an_md_run_of_jaxatom_0_1_continues(tmp_path):
    """A Langevin run written by jaxatom 0.1 (commit 091f201; 40 steps with a format-1 model file) continues to 80
    steps with today's jaxatom: the model's fingerprint of that version is recognised."""
    data = Path(__file__).parent / "data"
    shutil.copytree(data / "md_run_v1", tmp_path / "md")
    from ase.io import read

    atoms = read(data / "model_v1" / "structures.xyz", 0)
    before = read_trajectory(tmp_path / "md" / "langevin.h5")["positions"]
    settings = dict(ensemble="langevin", stride=10, frames_per_chunk=2, timestep_fs=0.5, temperature_K=300, seed=1)
    simulate(data / "model_v1" / "schnet", atoms, steps=80, output=tmp_path / "md" / "langevin.h5", progress=False,
             **settings)  # fmt: skip
    after = read_trajectory(tmp_path / "md" / "langevin.h5")["positions"]
    assert before.shape[0] == 4 and after.shape[0] == 8
    np.testing.assert_array_equal(after[:4], before)
