"""Training never loses work: `jaxatom train` runs killed with SIGKILL at chosen points resume to bit-identical results
with logs consistent with an uninterrupted run; a finished run is recognised and left alone until its budget is raised
explicitly; one process at a time trains into a run directory."""

import csv
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

import jaxatom
from jaxatom.cli import main
from jaxatom.errors import RunInUseError
from jaxatom.nn import PaiNN
from jaxatom.train import TrainConfig, fit, init_state, with_energy_offsets
from jaxatom.train.checkpoint import LOCK_FILE, Checkpoints
from jaxatom.train.fit import stop_reason

TINY = {
    "data": {"builtin": "ethanol", "train": 40, "val": 16, "test": 0},
    "model": {"type": "painn", "n_atom_basis": 8, "n_interactions": 1, "cutoff": 4.0, "n_rbf": 6},
    "training": {"batch_size": 16, "max_epochs": 4, "learning_rate": 0.003, "seed": 3},
}

#: Runs `jaxatom train CONFIG --quiet`, killing itself with SIGKILL at a chosen point of the given epoch:
#: after_latest / after_best: right after that checkpoint is written; in_save: while orbax writes `latest`.
DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    import orbax.checkpoint as ocp
    from jaxatom.cli import main
    from jaxatom.train.checkpoint import Checkpoints

    config, point, epoch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    save, save_json = Checkpoints.save, ocp.handlers.JsonCheckpointHandler._save_fn

    def checkpoint_then_die(self, name, at, state, meta):
        save(self, name, at, state, meta)
        if point == f"after_{name}" and at == epoch:
            die()

    def die_while_saving(self, item, directory):
        result = save_json(self, item, directory)
        if point == "in_save" and f"/latest/{epoch}.orbax-checkpoint-tmp" in str(directory):
            die()
        return result

    Checkpoints.save, ocp.handlers.JsonCheckpointHandler._save_fn = checkpoint_then_die, die_while_saving
    sys.exit(main(["train", config, "--quiet"]))
    """
)


def _write_config(directory: Path, **training) -> Path:
    config = {**TINY, "run_dir": str(directory / "run"), "training": {**TINY["training"], **training}}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """The environment of the subprocesses: one persistent JAX compilation cache for all of them."""
    cache = tmp_path_factory.mktemp("jax_cache")
    return {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    }


def _run(env: dict, config: Path, kill_at: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    if kill_at is None:
        command = [sys.executable, "-m", "jaxatom.cli", "train", str(config), "--quiet"]
    else:
        command = [sys.executable, "-c", DRIVER, str(config), kill_at[0], str(kill_at[1])]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env) -> Path:
    """An uninterrupted `jaxatom train` run of 4 epochs."""
    directory = tmp_path_factory.mktemp("reference")
    result = _run(env, _write_config(directory))
    assert result.returncode == 0, result.stderr[-3000:]
    return directory / "run"


def _rows(run_dir: Path) -> list[dict]:
    with (run_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every TensorBoard scalar as (epoch, value) pairs, read the way TensorBoard does (purged events dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _checkpoint(run_dir: Path, name: str):
    """The state (leaves as numpy arrays) and metadata of checkpoint ``name``."""
    potential = jaxatom.load_model(run_dir / "best_model")
    template = init_state(potential.params, TrainConfig(**TINY["training"]))
    with Checkpoints(run_dir) as checkpoints:
        state, meta = checkpoints.restore(name, template)
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))], meta


def _files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def _assert_same_run(run_dir: Path, reference: Path) -> None:
    """The finished run in ``run_dir`` equals the uninterrupted ``reference``: model and checkpoint bit for bit, the
    same log rows (all but the wall-clock time) and TensorBoard scalars, each epoch exactly once."""
    for name in ("params.msgpack", "config.json"):
        assert (run_dir / "best_model" / name).read_bytes() == (reference / "best_model" / name).read_bytes()
    for name in ("latest", "best"):
        listing = sorted(p.name for p in (run_dir / "checkpoints" / name).iterdir())
        assert listing == sorted(p.name for p in (reference / "checkpoints" / name).iterdir())  # no partial saves
        (state, meta), (expected_state, expected_meta) = _checkpoint(run_dir, name), _checkpoint(reference, name)
        assert len(state) == len(expected_state)
        for a, b in zip(state, expected_state, strict=True):
            np.testing.assert_array_equal(a, b)
        assert {**meta, "elapsed_s": 0} == {**expected_meta, "elapsed_s": 0}
    rows, expected_rows = _rows(run_dir), _rows(reference)
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]
    assert [{**r, "time_s": ""} for r in rows] == [{**r, "time_s": ""} for r in expected_rows]
    scalars, expected_scalars = _scalars(run_dir), _scalars(reference)
    assert sorted(scalars) == sorted(expected_scalars) and "val_forces_mae" in scalars
    for tag, values in expected_scalars.items():
        assert [epoch for epoch, _ in values] == [0, 1, 2, 3], tag
        if tag != "time_s":
            assert scalars[tag] == values, tag


@pytest.mark.parametrize(
    ("kill_at", "latest", "best", "logged"),
    [
        # the latest checkpoint of epoch 1 is written, its metrics.csv row and TensorBoard scalars are not
        pytest.param(("after_latest", 1), ["1"], None, 1, id="after_a_checkpoint_before_its_logs"),
        # orbax is writing the latest checkpoint of epoch 2: the one of epoch 1 stays, beside the partial one
        pytest.param(("in_save", 2), ["1", "2.orbax-checkpoint-tmp"], None, 2, id="while_orbax_saves"),
        # the best checkpoint of epoch 2 (an improvement in this tiny run) is written, the latest one is not
        pytest.param(("after_best", 2), ["1"], ["2"], 2, id="between_the_best_and_the_latest_checkpoint"),
        # the last epoch's checkpoint is written; the kill comes before its logs and the model export
        pytest.param(("after_latest", 3), ["3"], None, 3, id="after_the_last_checkpoint"),
    ],
)
def test_a_killed_run_resumes_to_the_result_of_an_uninterrupted_one(
    tmp_path, env, reference, capsys, kill_at, latest, best, logged
):
    config = _write_config(tmp_path)
    killed = _run(env, config, kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run_dir = tmp_path / "run"
    listing = {name: sorted(p.name for p in (run_dir / "checkpoints" / name).iterdir()) for name in ("latest", "best")}
    assert listing["latest"] == latest and (best is None or listing["best"] == best)
    assert [int(r["epoch"]) for r in _rows(run_dir)] == list(range(logged))
    assert not (run_dir / "best_model").exists()
    assert main(["train", str(config), "--quiet"]) == 0
    finished = "already finished" in capsys.readouterr().err
    assert finished == (latest == ["3"])  # a run killed after its last checkpoint only needs its files completed
    _assert_same_run(run_dir, reference)


@pytest.mark.parametrize(
    ("training", "epochs", "message", "extension", "extended_epochs"),
    [
        pytest.param(
            {},
            4,
            "(4 epochs trained, max_epochs = 4); raise training.max_epochs to continue",
            "max_epochs=5",
            5,
            id="max_epochs",
        ),
        pytest.param(
            {"learning_rate": 1e-12, "early_stopping_patience": 0},  # nothing improves after the first epoch
            2,
            "(early stopping after epoch 1: no improvement for 1 epochs); raise training.early_stopping_patience",
            "early_stopping_patience=1",
            3,
            id="early_stopping",
        ),
        pytest.param(
            {"max_time_s": 0},
            1,
            "max_time_s = 0); raise training.max_time_s to continue",
            "max_time_s=null",
            4,
            id="max_time_s",
        ),
    ],
)
def test_a_finished_run_is_reported_and_left_alone_until_its_budget_is_raised(
    tmp_path, reference, capsys, training, epochs, message, extension, extended_epochs
):
    config = _write_config(tmp_path, **training)
    run_dir = tmp_path / "run"
    if training:
        assert main(["train", str(config), "--quiet"]) == 0
    else:  # the uninterrupted reference run stopped at max_epochs
        shutil.copytree(reference, run_dir)
    assert len(_rows(run_dir)) == epochs
    capsys.readouterr()
    before = _files(run_dir)
    assert main(["train", str(config), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"jaxatom: training in {run_dir} already finished " in err and message in err
    after = _files(run_dir)
    del before[LOCK_FILE], after[LOCK_FILE]  # the lock file holds the id of the process that opened the run last
    assert after == before
    assert main(["train", str(config), f"training.{extension}", "--quiet"]) == 0
    assert "already finished" not in capsys.readouterr().err
    assert [int(r["epoch"]) for r in _rows(run_dir)] == list(range(extended_epochs))


def test_a_finished_run_whose_model_is_missing_or_stale_gets_it_from_the_best_checkpoint(tmp_path, reference, capsys):
    config = _write_config(tmp_path)
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    shutil.rmtree(run_dir / "best_model")
    assert main(["train", str(config), "--quiet"]) == 0
    _assert_same_run(run_dir, reference)
    # e.g. a model exported before the budget was raised, then a kill after the last checkpoint of the longer run
    stale = jaxatom.load_model(reference / "best_model")
    stale.replace(params=jax.tree.map(lambda x: 2 * x, stale.params)).save(run_dir / "best_model")
    assert main(["train", str(config), "--quiet"]) == 0
    assert "already finished" in capsys.readouterr().err
    _assert_same_run(run_dir, reference)


def test_a_checkpoint_of_the_previous_version_resumes_with_its_log_row_rebuilt(tmp_path, reference):
    config = _write_config(tmp_path)
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    # the previous version stored no stop reason, and a kill could come between its checkpoint and its CSV row
    with Checkpoints(run_dir) as checkpoints:
        state, meta = checkpoints.restore("latest", init_state(jaxatom.load_model(run_dir / "best_model").params,
                                                               TrainConfig(**TINY["training"])))  # fmt: skip
        del meta["stop_reason"]
        checkpoints.save("latest", 3, state, meta)
    lines = (run_dir / "metrics.csv").read_bytes().splitlines(keepends=True)
    (run_dir / "metrics.csv").write_bytes(b"".join(lines[:-1]))
    assert main(["train", str(config), "training.max_epochs=5", "--quiet"]) == 0
    rows = _rows(run_dir)
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3", "4"] and rows[:4] == _rows(reference)
    assert [epoch for epoch, _ in _scalars(run_dir)["val_loss"]] == [0, 1, 2, 3, 4]


def test_the_finished_message_names_why_and_how_to_continue(tmp_path, reference, capsys):
    config = _write_config(tmp_path, max_epochs=2, max_time_s=0)
    shutil.copytree(reference, tmp_path / "run")
    assert main(["train", str(config), "--quiet"]) == 0
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            "already finished (4 epochs trained, max_epochs = 2; "
            + f"{_checkpoint(reference, 'latest')[1]['elapsed_s']:.1f} s trained after epoch 3, max_time_s = 0); "
            "raise training.max_epochs and training.max_time_s to continue"
        )
    )


def test_stop_reason_follows_the_checkpoint_metadata_and_the_configuration():
    meta = {"epoch": 9, "stale_epochs": 3, "elapsed_s": 60.5}
    assert stop_reason(meta, TrainConfig(max_epochs=11, early_stopping_patience=3)) is None
    assert stop_reason(meta, TrainConfig(max_epochs=10)) == "max_epochs"
    assert stop_reason(meta, TrainConfig(max_epochs=11, early_stopping_patience=2)) == "early_stopping"
    assert stop_reason(meta, TrainConfig(max_epochs=11, early_stopping_patience=None, max_time_s=60)) == "max_time_s"
    assert stop_reason(meta, TrainConfig(max_epochs=11, early_stopping_patience=None, max_time_s=61)) is None


def test_a_run_directory_in_use_by_another_process_is_refused(tmp_path, capsys):
    config = _write_config(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ethanol = jaxatom.data.load_builtin("ethanol")
    train, val = ethanol.subset(np.arange(40)), ethanol.subset(np.arange(2000, 2016))
    potential = jaxatom.Potential.create(PaiNN(n_atom_basis=8, n_interactions=1, cutoff=4.0, n_rbf=6), [1, 6, 8])
    with (run_dir / LOCK_FILE).open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a live `jaxatom train` holds it
        handle.write("4242")
        handle.flush()
        with pytest.raises(RunInUseError, match=f"training run {run_dir} is in use .*pid 4242.*wait for it to finish"):
            fit(potential, train, val, TrainConfig(**TINY["training"]), run_dir, progress=False)
        assert main(["train", str(config), "--quiet"]) == 2
        assert f"training run {run_dir} is in use by another running process (pid 4242" in capsys.readouterr().err
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "run_config.yaml").exists()


def test_a_run_of_jaxatom_0_1_resumes(tmp_path):
    """Checkpoints written by jaxatom 0.1 (commit 091f201: one epoch of a tiny SchNet on 8 ethanol frames, the energy
    head's parameters under ``head``) resume into today's energy model; another model is refused by name."""
    import shutil

    from jaxatom.data.builtin import load_builtin
    from jaxatom.errors import OutputExistsError
    from jaxatom.nn import PaiNN, SchNet

    shutil.copytree(Path(__file__).parent / "data" / "train_run_v1", tmp_path / "run")
    ethanol = load_builtin("ethanol")
    train, val = ethanol.subset(np.arange(8)), ethanol.subset(np.arange(8, 12))
    schnet = SchNet(n_atom_basis=8, n_interactions=1, cutoff=4.0, n_rbf=6)
    potential = with_energy_offsets(jaxatom.Potential.create(schnet, [1, 6, 8], seed=0), train)
    fit(potential, train, val, TrainConfig(batch_size=4, max_epochs=2), tmp_path / "run", progress=False)
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "1"]
    painn = jaxatom.Potential.create(PaiNN(n_atom_basis=8, n_interactions=1, cutoff=4.0, n_rbf=6), [1, 6, 8])
    with pytest.raises(OutputExistsError, match="written for another model"):
        fit(painn, train, val, TrainConfig(batch_size=4, max_epochs=3), tmp_path / "run", progress=False)
