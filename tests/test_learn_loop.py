"""``jaxatom learn`` end to end on an analytic oracle (ASE's EMT on ethanol): two generations, the report, and a run
interrupted at every stage that ends with exactly the labels of an uninterrupted one."""

import csv
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.emt import EMT

from jaxatom import data
from jaxatom.cli import main
from jaxatom.data.formats import read_dataset, write_hdf5
from jaxatom.errors import ConfigError
from jaxatom.learn import LearnConfig, learn, loop
from jaxatom.learn import stages as stage_module
from jaxatom.learn.layout import STAGES, Layout
from jaxatom.learn.oracle import labeled_ids


def _emt_labels(dataset, indices):
    structures = []
    for i in indices:
        atoms = dataset.to_atoms(int(i))
        atoms.calc = EMT()
        atoms.get_forces()
        structures.append(atoms)
    return data.Dataset.from_atoms(structures)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("learn_data") / "ethanol_emt.h5"
    write_hdf5(_emt_labels(data.load_builtin("ethanol"), np.arange(0, 3000, 100)), path)
    return path


def _config(data_file, run_dir, **changes) -> dict:
    config = {
        "run_dir": str(run_dir),
        "data": {"path": str(data_file), "train": 8, "val": 2, "test": 10},
        "model": {
            "representation": {"type": "schnet", "n_atom_basis": 16, "n_interactions": 2, "n_rbf": 8, "cutoff": 4.0}
        },  # fmt: skip
        "training": {"batch_size": 4, "max_epochs": 2, "learning_rate": 1e-3, "ensemble": {"size": 2}},
        "explore": {
            "temperatures_K": [300, 600],
            "replicas": 2,
            "steps": 20,
            "stride": 5,
            "action": "flag",
            "threshold": 1e-3,
        },  # fmt: skip
        "select": {"budget": 3, "method": "fps"},
        "oracle": {"method": "emt", "workers": 0},
        "generations": 2,
    }
    for key, value in changes.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


@pytest.fixture(scope="module")
def finished(data_file, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("learn") / "run"
    learn(_config(data_file, run_dir), progress=False)
    return run_dir


def _rows(run_dir):
    with (run_dir / "report.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_two_generations_add_their_labels_and_report(finished):
    labels = read_dataset(Layout(finished).labels)
    generation = labels.info["generation"].astype(int)
    assert np.sum(generation == -1) == 10
    assert np.sum(generation == 0) + np.sum(generation == 1) == 6  # the oracle never fails on EMT
    assert len(labeled_ids(Layout(finished).labels)) == len(labels)  # no structure twice
    rows = _rows(finished)
    assert [int(r["generation"]) for r in rows] == [0, 1, 2]
    assert [int(r["labels"]) for r in rows] == [10, 13, 16]
    assert all(float(r["test_forces_mae_eV_per_A"]) > 0 for r in rows)
    assert (finished / "report.png").exists()


def test_the_labels_match_what_emt_says(finished):
    labels = read_dataset(Layout(finished).labels)
    new = np.flatnonzero(labels.info["generation"] >= 0)
    for i in new[:2]:
        atoms = labels.to_atoms(int(i))
        reference = atoms.copy()
        reference.calc = EMT()
        np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=1e-10)


def test_a_run_interrupted_at_every_stage_loses_and_repeats_no_label(data_file, finished, tmp_path, monkeypatch):
    """Each stage of each generation is stopped once after its work (before the loop records it), and labelling
    once more half-way (after its first label); the resumed run ends with exactly the labels of the uninterrupted
    one."""
    run_dir = tmp_path / "run"
    interrupted, originals = set(), dict(stage_module.STAGE_FUNCTIONS)

    def interrupting(stage):
        def run(config, layout, g, progress):
            originals[stage](config, layout, g, progress)
            if (stage, g) not in interrupted:
                interrupted.add((stage, g))
                raise KeyboardInterrupt(stage)

        return run

    append = stage_module.append_labels
    kept_at_kill = []

    def dying_append(path, labeled, provenance, **options):
        append(path, labeled, provenance, **options)
        if Path(path).parent.name == "label" and not kept_at_kill:
            kept_at_kill.append(labeled_ids(path))
            raise KeyboardInterrupt("killed while labelling")

    monkeypatch.setattr(stage_module, "STAGE_FUNCTIONS", {s: interrupting(s) for s in STAGES})
    monkeypatch.setattr(loop, "STAGE_FUNCTIONS", stage_module.STAGE_FUNCTIONS)
    monkeypatch.setattr(stage_module, "append_labels", dying_append)
    for _ in range(3 * len(STAGES) + 3):
        try:
            learn(_config(data_file, run_dir), progress=False)
            break
        except KeyboardInterrupt:
            continue
    assert len(interrupted) == 2 * len(STAGES) + 1  # two generations and the last training
    assert len(kept_at_kill[0]) == 1 and kept_at_kill[0] <= labeled_ids(Layout(run_dir).labels)
    assert labeled_ids(Layout(run_dir).labels) == labeled_ids(Layout(finished).labels)
    assert len(read_dataset(Layout(run_dir).labels)) == len(read_dataset(Layout(finished).labels))


def test_continuing_under_other_settings_is_refused(data_file, finished):
    config = _config(data_file, finished, select={"budget": 5})
    with pytest.raises(ConfigError, match="select"):
        learn(config, progress=False)


def test_bad_configurations_are_named(data_file, tmp_path):
    with pytest.raises(ConfigError, match="ensemble"):
        LearnConfig.load(_config(data_file, tmp_path, training={"ensemble": None}))
    with pytest.raises(ConfigError, match="multiple of stride"):
        LearnConfig.load(_config(data_file, tmp_path, explore={"steps": 12}))


def test_the_cli_continues_a_finished_run(finished, capsys):
    assert main(["learn", str(finished / "learn_config.yaml"), "--quiet"]) == 0
    assert "report" in capsys.readouterr().out


def _two_levels(ethanol) -> data.Dataset:
    """20 frames labelled with EMT (fidelity 0) and 20 others with EMT plus springs (fidelity 1)."""
    from tests.oracle_calculators import EMTWithSprings

    structures = []
    for k, i in enumerate(range(0, 3000, 75)):
        atoms = ethanol.to_atoms(i)
        atoms.calc = EMT() if k % 2 == 0 else EMTWithSprings()
        atoms.get_forces()
        atoms.info["fidelity"] = k % 2
        structures.append(atoms)
    return data.Dataset.from_atoms(structures, properties=("energy", "forces", "fidelity"),
                                   metadata={"fidelities": ["emt", "springs"]})  # fmt: skip


def test_a_multi_fidelity_loop_labels_cheaply_widely_and_expensively_sparingly(tmp_path):
    path = tmp_path / "two_levels.h5"
    write_hdf5(_two_levels(data.load_builtin("ethanol")), path)
    config = _config(path, tmp_path / "run", generations=1, model={"fidelities": ["emt", "springs"]},
                     data={"train": 24, "val": 6, "test": 10}, select={"budget": 2, "cheap_budget": 4},
                     oracle={"method": "tests.oracle_calculators:EMTWithSprings"},
                     cheap_oracle={"method": "emt", "workers": 0})  # fmt: skip
    learn(config, progress=False)
    labels = read_dataset(Layout(tmp_path / "run").labels)
    new = np.flatnonzero(labels.info["generation"] == 0)
    fidelity = labels.properties["fidelity"][new].astype(int)
    assert sorted(fidelity.tolist()) == [0, 0, 0, 0, 1, 1]
    assert set(labels.info["method"][new[fidelity == 1]]) == {"tests.oracle_calculators:EMTWithSprings"}
    test = read_dataset(Layout(tmp_path / "run").test)
    assert set(test.properties["fidelity"].astype(int).tolist()) == {1}  # scored at the expensive level
    assert [int(r["labels"]) for r in _rows(tmp_path / "run")] == [30, 36]
