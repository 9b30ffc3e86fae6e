"""Training and MD across two CPU processes on localhost (JAX's distributed runtime, gloo collectives) give the
results of one process; settings a multi-process run cannot use are refused."""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxatom import data, distributed
from jaxatom.cli import _start_distributed, build_parser
from jaxatom.data.loader import GraphLoader
from jaxatom.errors import ConfigError
from jaxatom.train import TrainConfig

fit_module = importlib.import_module("jaxatom.train.fit")  # jaxatom.train.fit is also the function
driver = importlib.import_module("jaxatom.md.driver")
CHILD = Path(__file__).with_name("distributed_child.py")
TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _launch(out: Path, n_processes: int, process_id: int, port: int) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    command = [sys.executable, str(CHILD), str(out), str(n_processes), str(process_id), str(port)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Two processes (one CPU device each) and the one-process reference (two forced CPU devices), run at once."""
    out = tmp_path_factory.mktemp("distributed")
    port = _free_port()
    children = [_launch(out, 2, 0, port), _launch(out, 2, 1, port), _launch(out, 1, 0, 0)]
    try:
        logs = [child.communicate(timeout=TIMEOUT_S)[0] for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    for child, log in zip(children, logs, strict=True):
        assert child.returncode == 0, log[-4000:]
    return out


def test_two_processes_train_like_one(runs):
    """A batch split over two processes (each builds its half) trains the parameters of one process splitting it
    over two devices; the second fit resumed the first's orbax checkpoint, written by both processes together."""
    one, two = np.load(runs / "result_1.npz"), np.load(runs / "result_2.npz")
    params = sorted(k for k in one.files if k.startswith("param_"))
    assert params and params == sorted(k for k in two.files if k.startswith("param_"))
    for name in params:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-5, atol=1e-6, err_msg=name)
    rows = (runs / "run_2" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3, rows  # header and one row per epoch: written once, by process 0
    assert (runs / "run_2" / "best_model").is_dir()
    assert sorted(p.name for p in (runs / "run_2" / "checkpoints" / "latest").iterdir()) == ["1"]


def test_two_processes_run_md_like_one(runs):
    """Four Langevin replicas split over two processes (two each) follow the trajectories of one process, in the
    trajectory process 0 wrote (also across a restart from its checkpoint) and in the final state; so do periodic
    replicas whose on-device neighbour list overflowed (and grew) before a restart."""
    one, two = np.load(runs / "result_1.npz"), np.load(runs / "result_2.npz")
    assert two["trajectory"].shape == (5, 4, 9, 3)  # the starting frame and 4 strided frames of all replicas
    np.testing.assert_array_equal(two["trajectory_steps"], [0, 2, 4, 6, 8])
    for name in ("trajectory", "final"):
        np.testing.assert_allclose(two[name], one[name], rtol=0, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(two["trajectory"][-1], two["final"], rtol=0, atol=1e-6)
    assert not (runs / "md_2.h5.ckpt.npz.tmp").exists()
    np.testing.assert_allclose(two["argon"], one["argon"], rtol=0, atol=1e-5)  # overflow, rerun, restart
    assert two["argon"].shape == (7, 2, 64, 3)
    for process in (0, 1):  # each process holds only its two replicas
        local = json.loads((runs / f"process_2_{process}.json").read_text())["local_positions"]
        assert local == [[2, 9, 3]]


def test_loader_builds_only_local_shards():
    """A process's shards of a batch are those shards of the whole batch, with the whole batch's padded shapes."""
    ethanol = data.load_builtin("ethanol").subset(np.arange(8))
    whole = GraphLoader(ethanol, 4.0, 8, shuffle=False, n_shards=4)
    local = GraphLoader(ethanol, 4.0, 8, shuffle=False, n_shards=4, local_shards=[2, 3])
    expected, found = next(whole.host_batches()), next(local.host_batches())
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(found), strict=True):
        np.testing.assert_array_equal(np.asarray(a)[2:], np.asarray(b))
    with pytest.raises(ConfigError, match="local_shards"):
        GraphLoader(ethanol, 4.0, 8, n_shards=2, local_shards=[2])


@pytest.fixture
def two_processes(monkeypatch):
    """Make the refusal checks see two processes with one device each (nothing is started)."""
    monkeypatch.setattr(fit_module, "process_count", lambda: 2)
    monkeypatch.setattr(distributed, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "device_count", lambda backend=None: 2)


@pytest.mark.parametrize(
    ("changes", "n_train", "message"),
    [
        ({"data_parallel": False}, 16, "data-parallel"),
        ({"ensemble": {"size": 2}}, 16, "ensembles train in one process"),
        ({"batch_size": 3}, 16, "does not split evenly over the 2 devices in 2 processes"),
        ({}, 1, "fewer than the 2 devices in 2 processes"),
    ],
)
def test_training_refuses_what_processes_cannot_share(two_processes, changes, n_train, message):
    config = TrainConfig(**{"batch_size": 4, **changes})
    with pytest.raises(ConfigError, match=message):
        fit_module.check_distributed(config, n_train)


def test_md_refuses_replicas_that_do_not_split(two_processes):
    with pytest.raises(ConfigError, match="3 replicas do not split evenly over the 2 devices in 2 processes"):
        driver._replica_mesh(3, None)
    with pytest.raises(ConfigError, match="shard_replicas"):
        driver._replica_mesh(4, False)


def test_one_process_needs_no_runtime():
    assert driver._replica_mesh(1, None) is None
    assert distributed.process_count() == 1 and distributed.is_main_process()
    distributed.initialize(num_processes=1)  # a no-op
    assert not distributed.is_initialized()


def test_initialize_refuses_incomplete_settings(monkeypatch):
    for name in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "OMPI_MCA_orte_hnp_uri"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="lacks num_processes, process_id"):
        distributed.initialize("localhost:1234")
    with pytest.raises(ConfigError, match="process_id must be in 0..1"):
        distributed.initialize("localhost:1234", 2, 2)
    assert not distributed.is_initialized()


def test_cli_takes_distributed_settings(monkeypatch):
    args = build_parser().parse_args(["train", "run.yaml", "--coordinator", "h:1", "--num-processes", "2",
                                      "--process-id", "1"])  # fmt: skip
    assert (args.coordinator, args.num_processes, args.process_id) == ("h:1", 2, 1)
    started = []
    monkeypatch.setattr(distributed, "initialize", lambda *a: started.append(a))
    _start_distributed(args)
    args = build_parser().parse_args(["md", "md.yaml"])
    monkeypatch.setenv(distributed.ENV_COORDINATOR, "h:2")
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "4")
    monkeypatch.setenv(distributed.ENV_PROCESS_ID, "3")
    _start_distributed(args)
    assert started == [("h:1", 2, 1), ("h:2", 4, 3)]
    monkeypatch.setenv(distributed.ENV_PROCESS_ID, "three")
    with pytest.raises(ConfigError, match="must be integers"):
        _start_distributed(args)
