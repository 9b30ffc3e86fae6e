"""The CLI end to end: train from a YAML file with overrides, resume, evaluate, quickstart; errors before compute."""

import json

import numpy as np
import pytest
import yaml
from ase.io import write

import jaxatom
from jaxatom.cli import main

TINY = {
    "data": {"builtin": "ethanol", "train": 40, "val": 16, "test": 24},
    "model": {"type": "painn", "n_atom_basis": 8, "n_interactions": 1, "cutoff": 4.0, "n_rbf": 6},
    "training": {"batch_size": 16, "max_epochs": 2, "learning_rate": 0.003, "seed": 3},
}


def _config(tmp_path, **changes):
    config = {**TINY, "run_dir": str(tmp_path / "run"), **changes}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_evaluate_and_resume_from_the_command_line(tmp_path, capsys):
    path = _config(tmp_path)
    assert main(["train", str(path), "training.max_epochs=1", "--quiet"]) == 0
    output = capsys.readouterr().out
    assert "test set (24 structures)" in output and "parity.png" in output
    run = tmp_path / "run"
    assert yaml.safe_load((run / "run_config.yaml").read_text())["training"]["max_epochs"] == 1
    split = np.load(run / "split.npz")
    assert [len(split[k]) for k in ("train_idx", "val_idx", "test_idx")] == [40, 16, 24]
    # a second call with more epochs resumes from the checkpoint and reuses the split
    assert main(["train", str(path), "--quiet"]) == 0
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert metrics["forces_mae_kcal_mol_per_A"] == pytest.approx(metrics["forces_mae_eV_per_A"] / 0.0433641, 1e-4)
    assert (run / "evaluation" / "parity.png").stat().st_size > 10_000
    # evaluate on another data file
    ethanol = jaxatom.data.load_builtin("ethanol").subset(np.arange(100, 110))
    jaxatom.data.write_hdf5(ethanol, tmp_path / "other.h5")
    assert main(["evaluate", str(run), "--data", str(tmp_path / "other.h5")]) == 0
    assert "test set (10 structures)" in capsys.readouterr().out
    predictions = np.load(run / "evaluation" / "predictions.npz")
    assert predictions["predicted_forces"].shape == (90, 3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training.batch_size=0"], "training.batch_size: must be positive, got 0"),
        (["training.lr=0.1"], "training.lr: unknown setting"),
        (["data.train=5000"], "data set has only 3000"),
        (["model.type=dimenet"], "model.representation: unknown model type 'dimenet'; choose one of schnet, painn"),
        (["data.path=x.db"], "exactly one of data.builtin"),
        (["model.n_heads=2"], "unknown PaiNN settings ['n_heads']"),
        (["model.representation.n_heads=2"], "unknown PaiNN settings ['n_heads']"),
        (["model.cutoff=0"], "cutoff"),
        (["nonsense"], "section.key=value"),
        (["model.heads=[{type: dipole_moment}]"], "training.loss trains 'energy', but the model predicts only"),
        (["training.loss={dipole_moment: 1.0}"], "training.loss trains 'dipole_moment'"),
        (["data.source=md17", "data.molecule=aspirin"], "data: set exactly one of"),
        (["data.builtin=null", "data.source=md17"], "data.molecule: data.source md17 needs a molecule: one of"),
    ],
)
def test_bad_configurations_fail_before_training(tmp_path, capsys, overrides, message):
    assert main(["train", str(_config(tmp_path)), *overrides, "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_evaluate_without_a_model_is_refused(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "holds no trained model" in capsys.readouterr().err


def test_quickstart_runs_the_main_job_and_a_rerun_changes_nothing(tmp_path, capsys):
    args = ["quickstart", "--out", str(tmp_path / "qs"), "--minutes", "0.01", "--md-ps", "0.02", "--quiet"]
    assert main(args) == 0
    output = capsys.readouterr().out
    assert "test set (1900 structures)" in output
    assert jaxatom.load_model(tmp_path / "qs" / "best_model").model.representation.n_atom_basis == 64
    assert "energy drift:" in output and "eV/atom/ps" in output
    report = json.loads((tmp_path / "qs" / "md" / "nve.h5.report.json").read_text())
    assert report["frames"] == 3 and report["time_ps"] == pytest.approx(0.02)  # t = 0, 10, 20 fs: the whole run
    kept = {name: (tmp_path / "qs" / name).read_bytes() for name in ("best_model/params.msgpack", "md/nve.h5")}
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "already finished (" in captured.err and "training.max_time_s" in captured.err
    assert "evaluated before" in captured.out and "MD of this model was run before" in captured.out
    assert kept == {name: (tmp_path / "qs" / name).read_bytes() for name in kept}


def test_training_data_with_nan_positions_is_refused_in_one_line(tmp_path, capsys):
    atoms = jaxatom.data.load_builtin("ethanol").to_atoms(0)
    atoms.positions[2, 1] = np.nan
    write(tmp_path / "bad.xyz", [atoms] * 3)
    path = _config(tmp_path, data={"path": str(tmp_path / "bad.xyz"), "train": 2, "val": 1, "test": 0})
    assert main(["train", str(path), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("jaxatom train: ") and len(error.splitlines()) == 1
    assert "bad.xyz" in error and "NaN" in error and "(indices 0, 1, 2)" in error


def test_evaluate_without_the_run_configuration_says_what_to_do(tmp_path, capsys):
    jaxatom.Potential.create(jaxatom.nn.SchNet(n_atom_basis=8, n_interactions=1, n_rbf=6), [1, 6, 8]).save(
        tmp_path / "best_model"
    )
    assert main(["evaluate", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "run_config.yaml is missing" in error and "--data" in error
