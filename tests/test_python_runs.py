"""A run trained from Python reads like a ``jaxatom train`` run: ``jaxatom evaluate`` and ``jaxatom.evaluate`` find
its test split; training says why it stopped; data sets print briefly."""

import dataclasses

import numpy as np
import pytest

import jaxatom
from jaxatom import data
from jaxatom.cli import main
from jaxatom.errors import ConfigError
from jaxatom.train import TrainConfig, fit, with_energy_offsets
from jaxatom.train.progress import expected_epochs
from tests.conftest import tiny_schnet


@pytest.fixture(scope="module")
def ethanol_data():
    return data.load_builtin("ethanol").subset(range(60))  # rows 0..59 of the shipped set


@pytest.fixture(scope="module")
def trained(ethanol_data, tmp_path_factory):
    """Two epochs on 20 structures of the shipped set, from Python, the way the README shows it."""
    run_dir = tmp_path_factory.mktemp("python_run") / "run"
    train, val = ethanol_data.subset(range(0, 20)), ethanol_data.subset(range(20, 30))
    potential = with_energy_offsets(jaxatom.Potential.create(tiny_schnet(), elements=[1, 6, 8], seed=0), train)
    potential = fit(potential, train, val, TrainConfig(max_epochs=2, batch_size=10), run_dir, progress=False)
    return run_dir, potential


def test_subsets_remember_their_rows_in_the_shipped_set(ethanol_data):
    part = ethanol_data.subset([5, 7, 9]).subset([2, 0])
    assert part.origin.data == {"builtin": "ethanol"} and part.origin.size == 3000
    np.testing.assert_array_equal(part.rows, [9, 5])
    assert data.concatenate([part, part]).origin is None


def test_a_run_trained_from_python_records_its_data_and_split(trained):
    run_dir, _ = trained
    assert (run_dir / "run_config.yaml").read_text().startswith("# written by jaxatom.train.fit")
    split = np.load(run_dir / "split.npz")
    np.testing.assert_array_equal(split["train_idx"], np.arange(20))
    assert len(split["test_idx"]) == 3000 - 30 and not set(split["test_idx"]) & set(range(30))


def test_jaxatom_evaluate_reads_a_python_run(trained, capsys):
    run_dir, potential = trained
    result = jaxatom.evaluate(run_dir, data.load_builtin("ethanol").subset(range(30, 50)))
    assert result.metrics["structures"] == 20 and result.predictions["forces"].shape == (20 * 9, 3)
    assert set(result.metrics["units"]) == {"energy", "forces"}
    assert main(["evaluate", str(run_dir), "--data", str(_write_h5(run_dir, result.dataset))]) == 0
    printed = capsys.readouterr().out
    assert "energy" in printed and "resume" not in printed and "tensorboard" not in printed


def _write_h5(run_dir, dataset):
    path = run_dir.parent / "test.h5"
    data.write_hdf5(dataset, path)
    return path


def test_evaluating_on_the_run_test_split_uses_the_rows_not_trained_on(trained, monkeypatch):
    run_dir, _ = trained
    seen = {}
    monkeypatch.setattr("jaxatom.train.assessment.predict_dataset",
                        lambda model, dataset, batch_size: seen.setdefault("data", dataset) and {})  # fmt: skip
    jaxatom.evaluate(run_dir)
    assert len(seen["data"]) == 2970 and seen["data"].rows.min() == 30


def test_a_given_test_set_is_the_run_test_split(trained, ethanol_data):
    run_dir, potential = trained
    train, val, test = (ethanol_data.subset(rows) for rows in (range(20), range(20, 30), [40, 41]))
    fit(potential, train, val, TrainConfig(max_epochs=2, batch_size=10), run_dir, progress=False, test=test)
    np.testing.assert_array_equal(np.load(run_dir / "split.npz")["test_idx"], [40, 41])
    assert jaxatom.evaluate(run_dir).metrics["structures"] == 2


def test_a_run_on_data_built_in_memory_names_what_to_do(ethanol_data, tmp_path):
    in_memory = dataclasses.replace(ethanol_data.subset(range(20)), origin=None, rows=None)
    potential = with_energy_offsets(jaxatom.Potential.create(tiny_schnet(), elements=[1, 6, 8]), in_memory)
    fit(potential, in_memory.subset(range(10)), in_memory.subset(range(10, 20)), TrainConfig(max_epochs=1,
        batch_size=10), tmp_path, progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match="built in memory.*--data FILE.*jaxatom.evaluate"):
        jaxatom.evaluate(tmp_path)


def test_training_says_why_it_stopped(trained, ethanol_data, capsys):
    run_dir, potential = trained
    fit(potential, ethanol_data.subset(range(20)), ethanol_data.subset(range(20, 30)),
        TrainConfig(max_epochs=3, batch_size=10), run_dir, progress=False)  # fmt: skip
    assert "training stopped, reached max_epochs: 3 epochs trained" in capsys.readouterr().err


def test_the_expected_epoch_count_follows_the_time_budget():
    config = TrainConfig(max_epochs=1000, max_time_s=60.0)
    assert expected_epochs(config, epochs_done=10, elapsed_s=20.0, epoch_s=2.0) == 30
    assert expected_epochs(TrainConfig(max_epochs=50), 10, 20.0, 2.0) == 50
    assert expected_epochs(config, 10, 100.0, 2.0) == 10


def test_a_dataset_prints_in_one_line(ethanol_data):
    text = repr(ethanol_data)
    assert text.startswith("Dataset(60 structures, 540 atoms, elements C H O") and "\n" not in text
    assert "built-in 'ethanol'" in text and len(text) < 300
