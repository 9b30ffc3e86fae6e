"""Training on stress: data files carry stress in eV/Å³ (converted from GPa, kbar, bar), ASE's sign convention, the
stress loss term lowers the stress error, its metrics and plot, and the errors for data without stress or cells."""

import csv

import numpy as np
import pytest
import yaml
from ase import units as ase_units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db import connect
from ase.io import write

import jaxatom
from jaxatom import data
from jaxatom.calculators import JaxAtomCalculator
from jaxatom.cli import main
from jaxatom.errors import ConfigError
from jaxatom.nn import SchNet
from jaxatom.train import TrainConfig, fit
from jaxatom.train.config import LossTerm
from jaxatom.train.evaluation import error_metrics, predict_dataset
from jaxatom.train.run import load_run_config, train_run
from jaxatom.units import GPa, UnitError, kbar, unit_factor

N_STRUCTURES = 40
TINY = dict(n_atom_basis=16, n_interactions=2, cutoff=4.0, n_rbf=8)


def strained_copper(rng: np.random.Generator, seed: int):
    """fcc Cu (conventional cell, 4 atoms), strained by up to ±3 % per component and rattled, with EMT."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    strain = rng.uniform(-0.03, 0.03, (3, 3))
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + 0.5 * (strain + strain.T)), scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    atoms.calc = EMT()
    atoms.get_potential_energy()
    atoms.get_stress()
    return atoms


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(7)
    return [strained_copper(rng, seed) for seed in range(N_STRUCTURES)]


@pytest.fixture(scope="module")
def reference(frames):
    """EMT's stress of every frame, 3x3, eV/Å³ (ASE's ``get_stress``)."""
    return np.array([a.get_stress(voigt=False) for a in frames])


def _labelled(atoms, stress):
    """A copy of ``atoms`` with EMT's energy and forces and ``stress`` as single-point results."""
    copy = atoms.copy()
    copy.calc = SinglePointCalculator(
        copy, energy=atoms.get_potential_energy(), forces=atoms.get_forces(), stress=stress
    )
    return copy


@pytest.fixture(scope="module")
def gpa_file(frames, tmp_path_factory):
    """The frames as extended XYZ with stress (3x3) in GPa, as other codes write it."""
    path = tmp_path_factory.mktemp("stress") / "cu_gpa.xyz"
    write(path, [_labelled(a, a.get_stress(voigt=False) / GPa) for a in frames], format="extxyz")
    return path


def test_pressure_units():
    assert unit_factor("eV/Ang^3", "GPa") == pytest.approx(160.21766, rel=1e-7)
    assert 1 / GPa == pytest.approx(160.21766, rel=1e-7) and 1 / kbar == pytest.approx(1602.1766, rel=1e-7)
    assert unit_factor("GPa", "eV/Ang^3") == pytest.approx(ase_units.GPa, rel=1e-12)
    assert unit_factor("bar", "eV/Ang^3") == pytest.approx(ase_units.bar, rel=1e-12)
    assert unit_factor("kbar", "GPa") == pytest.approx(0.1) and unit_factor("Pa", "J/m^3") == pytest.approx(1.0)
    assert unit_factor("MPa", "bar") == pytest.approx(10.0) and unit_factor("atm", "Pa") == pytest.approx(101325.0)
    with pytest.raises(UnitError, match="different quantities"):
        unit_factor("GPa", "eV/Ang")
    with pytest.raises(UnitError, match="does not measure"):
        data.Dataset.from_arrays(np.array([29]), [np.zeros((1, 3))], {"stress": [np.eye(3)]}, units={"stress": "eV"})


def test_ase_stress_is_the_strain_derivative_over_volume_tensile_positive():
    """ASE's stress, which jaxatom stores and predicts, is (1/V) dE/dε: negative (compressive) in a squeezed cell."""
    atoms = bulk("Cu", "fcc", a=3.55, cubic=True)  # EMT's lattice constant is ~3.59 Å: compressed
    atoms.calc = EMT()
    stress = atoms.get_stress(voigt=False)
    assert np.all(np.diag(stress) < 0)

    def energy(strain):
        strained = atoms.copy()
        strained.calc = EMT()
        strained.set_cell(atoms.cell[:] @ (np.eye(3) + strain), scale_atoms=True)
        return strained.get_potential_energy()

    h, numerical = 1e-5, np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            step = np.zeros((3, 3))
            step[i, j] = step[j, i] = h / 2 if i != j else h
            numerical[i, j] = (energy(step) - energy(-step)) / (2 * h) / atoms.get_volume()
    np.testing.assert_allclose(stress, numerical, atol=1e-7)


def test_extxyz_with_stress_in_gpa_kbar_and_ev(frames, reference, gpa_file, tmp_path):
    dataset = data.read_dataset(gpa_file, units={"stress": "GPa"})
    assert set(dataset.properties) == {"energy", "forces", "stress"}  # stress read by default when all have it
    assert dataset.units["stress"] == "eV/Ang^3" and dataset.source_units["stress"] == "GPa"
    np.testing.assert_allclose(dataset.properties["stress"], reference, rtol=1e-9, atol=1e-12)
    # Voigt 6-vectors in atoms.info, in kbar
    structures = []
    for atoms in frames[:5]:
        copy = atoms.copy()
        copy.info["stress"] = atoms.get_stress() / kbar
        copy.calc = SinglePointCalculator(copy, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        structures.append(copy)
    write(tmp_path / "kbar.extxyz", structures, format="extxyz")
    kbar_data = data.read_extxyz(tmp_path / "kbar.extxyz", properties=["energy", "stress"], units={"stress": "kbar"})
    np.testing.assert_allclose(kbar_data.properties["stress"], reference[:5], rtol=1e-9, atol=1e-12)
    # ASE's own files hold eV/Å³; jaxatom's writer records the unit, so its files read back without units=
    write(tmp_path / "ase.xyz", frames[:5], format="extxyz")
    np.testing.assert_allclose(data.read_dataset(tmp_path / "ase.xyz").properties["stress"], reference[:5])
    data.write_extxyz(dataset, tmp_path / "jaxatom.xyz")
    np.testing.assert_array_equal(
        data.read_dataset(tmp_path / "jaxatom.xyz").properties["stress"], dataset.properties["stress"]
    )
    assert np.allclose(dataset.to_atoms(3).get_stress(voigt=False), reference[3])


def test_ase_databases_hdf5_and_npz_with_stress(frames, reference, tmp_path):
    # ASE's own database: the stress column (Voigt, eV/Å³) of calculator results
    with connect(tmp_path / "ase.db") as db:
        for atoms in frames[:5]:
            db.write(atoms)
    np.testing.assert_allclose(data.read_ase_db(tmp_path / "ase.db").properties["stress"], reference[:5], atol=1e-12)
    # SchNetPack's layout: row.data with a leading axis of 1, the unit in _property_unit_dict
    with connect(tmp_path / "spk.db") as db:
        for atoms in frames[:5]:
            labels = {"energy": np.array([atoms.get_potential_energy()]), "forces": atoms.get_forces(),
                      "stress": atoms.get_stress(voigt=False)[None] / GPa}  # fmt: skip
            db.write(atoms.copy(), data=labels)
        db.metadata = {"_property_unit_dict": {"energy": "eV", "forces": "eV/Ang", "stress": "GPa"},
                       "_distance_unit": "Ang"}  # fmt: skip
    spk = data.read_ase_db(tmp_path / "spk.db")
    assert spk.source_units["stress"] == "GPa"
    np.testing.assert_allclose(spk.properties["stress"], reference[:5], rtol=1e-9, atol=1e-12)
    # jaxatom's HDF5 and npz keep the stress; a file whose unit attribute says GPa is converted
    dataset = data.Dataset.from_atoms(frames[:5], properties=("energy", "forces", "stress"))
    for suffix in ("h5", "npz", "db"):
        path = tmp_path / f"round.{suffix}"
        {"h5": data.write_hdf5, "npz": data.write_npz, "db": data.write_ase_db}[suffix](dataset, path)
        np.testing.assert_array_equal(data.read_dataset(path).properties["stress"], dataset.properties["stress"])
    import h5py

    with h5py.File(tmp_path / "round.h5", "r+") as out:
        out["properties/stress"][...] = out["properties/stress"][...] / GPa
        out["properties/stress"].attrs["unit"] = "GPa"
    np.testing.assert_allclose(data.read_hdf5(tmp_path / "round.h5").properties["stress"], reference[:5], rtol=1e-9)
    in_bar = data.read_dataset(tmp_path / "round.npz", units={"stress": "bar"})
    np.testing.assert_allclose(in_bar.properties["stress"], reference[:5] * ase_units.bar, rtol=1e-9)


def _run_config(tmp_path, path, weight, **changes):
    config = {
        "run_dir": str(tmp_path / f"stress_{weight:g}"),
        "data": {"path": str(path), "units": {"stress": "GPa"}, "train": 28, "val": 6, "test": 6, "seed": 0},
        "model": {"representation": {"type": "schnet", **TINY}},
        "training": {"batch_size": 7, "max_epochs": 20, "learning_rate": 5e-3, "plateau_patience": 100,
                     "ema_decay": 0.9, "seed": 0, "loss": {"energy": 0.01, "forces": 0.99, "stress": weight}},
    }  # fmt: skip
    config.update(changes)
    yaml_path = tmp_path / f"run_{weight:g}.yaml"
    yaml_path.write_text(yaml.safe_dump(config))
    return yaml_path


@pytest.fixture(scope="module")
def runs(gpa_file, tmp_path_factory):
    """Two runs from the same seed and data (stress in GPa, declared in the YAML): stress weight 0 and 100."""
    tmp_path = tmp_path_factory.mktemp("runs")
    results = {}
    for weight in (0.0, 100.0):
        config = load_run_config(_run_config(tmp_path, gpa_file, weight))
        train_run(config, progress=False)
        results[weight] = config.run_dir
    return results


def _rows(run_dir):
    with open(f"{run_dir}/metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_stress_training_lowers_the_stress_error(runs, capsys):
    """Energy and forces alone teach some stress (it is their strain derivative) but do not pin it: the run with the
    stress term ends with a clearly lower validation stress MAE (mean of the last 5 epochs; measured 3-6x lower)."""
    without, with_stress = _rows(runs[0.0]), _rows(runs[100.0])
    for rows in (without, with_stress):
        assert {"train_stress_mae", "val_stress_mae", "val_stress_rmse"} <= set(rows[0])  # columns follow the term
    final = {
        w: np.mean([float(r["val_stress_mae"]) for r in rows[-5:]]) for w, rows in ((0, without), (1, with_stress))
    }
    assert final[1] < 0.5 * final[0], {w: mae / GPa for w, mae in final.items()}
    # the CLI evaluates on the test split: stress in eV/Å³ and GPa, a stress parity plot
    assert main(["evaluate", runs[100.0]]) == 0
    output = capsys.readouterr().out
    line = next(line for line in output.splitlines() if line.strip().startswith("stress"))
    assert "eV/Å^3" in line and "GPa MAE" in line
    import json
    from pathlib import Path

    metrics = json.loads((Path(runs[100.0]) / "evaluation" / "metrics.json").read_text())
    assert metrics["stress_mae_GPa"] == pytest.approx(metrics["stress_mae"] * 160.21766, rel=1e-6)
    assert (Path(runs[100.0]) / "evaluation" / "parity.png").stat().st_size > 0


def test_trained_stress_matches_the_data_in_evaluation(runs, gpa_file):
    potential = jaxatom.load_model(f"{runs[100.0]}/best_model")
    dataset = data.read_dataset(gpa_file, units={"stress": "GPa"}).subset(np.arange(5))
    predictions = predict_dataset(potential, dataset)
    assert predictions["stress"].shape == (5, 3, 3)
    np.testing.assert_allclose(predictions["stress"], np.swapaxes(predictions["stress"], 1, 2), atol=1e-6)
    metrics = error_metrics(predictions, dataset)
    assert metrics["stress_rmse_GPa"] == pytest.approx(metrics["stress_rmse"] / GPa)
    # the ASE calculator gives the same stress in ASE's Voigt form and sign
    atoms = dataset.to_atoms(0)
    atoms.calc = JaxAtomCalculator(potential)
    np.testing.assert_allclose(atoms.get_stress(voigt=False), predictions["stress"][0], rtol=1e-4, atol=1e-6)


def test_stress_needs_stress_labels_and_periodic_structures(frames, gpa_file, tmp_path):
    no_stress = data.Dataset.from_atoms(frames[:8], properties=("energy", "forces"), metadata={"file": "cu.xyz"})
    potential = jaxatom.Potential.create(SchNet(**TINY), elements=[29], seed=0)
    config = TrainConfig(batch_size=4, max_epochs=1, loss={"energy": 0.01, "forces": 0.99, "stress": 1.0})
    with pytest.raises(ConfigError, match=r"training set \(read from cu.xyz\) lacks 'stress'.*Voigt.*data.units"):
        fit(potential, no_stress, no_stress, config, tmp_path / "a", progress=False)
    # a molecule among the structures: named with its index, before any compute
    structures = [_labelled(a, a.get_stress()) for a in frames[:8]]
    structures[5].pbc = False
    mixed = data.Dataset.from_atoms(structures, properties=("energy", "forces", "stress"))
    with pytest.raises(ConfigError, match=r"structure 5 of the training set is not periodic .*pbc FFF.*remove"):
        fit(potential, mixed, mixed.subset([0, 1]), config, tmp_path / "b", progress=False)
    assert not (tmp_path / "b").exists()
    # through a run: the index in the data file
    write(tmp_path / "mixed.xyz", structures, format="extxyz")
    yaml_path = _run_config(tmp_path, tmp_path / "mixed.xyz", 1.0, data={"path": str(tmp_path / "mixed.xyz"),
                            "train": 6, "val": 2, "test": 0})  # fmt: skip
    with pytest.raises(ConfigError, match=r"structure 5 of the data \(read from .*mixed.xyz\) \(structure \d of the"):
        train_run(load_run_config(yaml_path), progress=False)
    # data.units: only with a data file, and only units that measure the property
    with pytest.raises(ConfigError, match="data.units: only a data file"):
        load_run_config(None, ["data.builtin=ethanol", "data.units={stress: GPa}"])
    with pytest.raises(ConfigError, match="data.units: .*stress.*does not measure"):
        load_run_config(None, [f"data.path={gpa_file}", "data.units={stress: eV/Ang}"])


def test_the_stress_term_takes_the_dict_form():
    config = TrainConfig(
        loss={"energy": 0.01, "forces": 0.99, "stress": {"weight": 100.0, "kind": "huber", "delta": 0.01}}
    )
    assert config.terms[-1] == LossTerm("stress", 100.0, "huber", 0.01)
    with pytest.raises(ConfigError, match="loss term 'stress' has kind 'l1'"):
        TrainConfig(loss={"energy": 1.0, "stress": {"weight": 1.0, "kind": "l1"}})
