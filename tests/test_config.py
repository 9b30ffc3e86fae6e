"""One typed configuration mechanism: the run, training and MD schemas (defaults, errors naming the dotted key,
overrides, the old layout), every data source from a run configuration, heads from YAML, and SchNetPack's QM9 recipe
from the command line on a small archive in QM9's exact format. Nothing is downloaded."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

import jaxatom
from jaxatom.cli import main
from jaxatom.config import apply_overrides
from jaxatom.data import sources
from jaxatom.data.statistics import fit_standardisation
from jaxatom.errors import ConfigError
from jaxatom.md.driver import simulate
from jaxatom.md.ensembles import ENSEMBLES, Langevin
from jaxatom.md.run import DEFAULT_MD, SIMULATE_OPTIONS, MDConfig, MDConfigError, load_md_config
from jaxatom.nn.heads import Atomwise, DipoleMoment
from jaxatom.nn.painn import PaiNN
from jaxatom.nn.registry import module_config
from jaxatom.train.config import TrainConfig
from jaxatom.train.run import RunConfig, load_data, load_run_config

from .test_data_sources import (
    QM9_ATOMREF,
    QM9_FILES,
    QM9_UNCHARACTERIZED,
    _add_bytes,
    write_iso17_archive,
    write_md17_npz,
    write_rmd17_archive,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "experiments" / "configs"
TINY_MODEL = {"type": "schnet", "n_atom_basis": 16, "n_interactions": 2, "cutoff": 4.0, "n_rbf": 8}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(url, path, **_):
        raise AssertionError(f"tests must not download ({url} -> {path})")

    monkeypatch.setattr(sources, "download", refuse)


def _load(values: dict) -> RunConfig:
    return RunConfig.load(values)


def _error(values: dict) -> str:
    with pytest.raises(ConfigError) as error:
        RunConfig.load(values, where="run.yaml")
    return str(error.value)


# -- schemas: defaults ------------------------------------------------------------------------------------------------


def test_training_defaults_are_schnetpacks_md17_recipe():
    # configs/experiment/md17.yaml, task/scheduler/reduce_on_plateau.yaml, callbacks/ema.yaml, earlystopping.yaml
    assert TrainConfig().to_dict() == {
        "batch_size": 32, "max_epochs": 1000, "learning_rate": 1e-3, "weight_decay": 0.0, "warmup_steps": 0,
        "clip_norm": None, "loss": {"energy": 0.01, "forces": 0.99}, "plateau_factor": 0.5, "plateau_patience": 75,
        "plateau_cooldown": 10, "min_learning_rate": 1e-6, "ema_decay": 0.995, "early_stopping_patience": 200,
        "max_time_s": None, "seed": 0, "data_parallel": True, "ensemble": None,
    }  # fmt: skip
    config = _load({"data": {"builtin": "ethanol"}})
    assert config.training == TrainConfig()
    assert (config.run_dir, config.data.train, config.data.val, config.data.test) == ("runs/run", 1000, 100, None)
    model = config.model.build()
    assert type(model.representation) is PaiNN and module_config(model.representation) == module_config(PaiNN())
    assert model.heads == (jaxatom.nn.model.ENERGY_HEAD,)
    # a frozen, validated pydantic dataclass that stays a dataclass (fit writes config.json with asdict)
    assert dataclasses.asdict(TrainConfig(batch_size=8)) == TrainConfig(batch_size=8).to_dict()
    assert dataclasses.replace(TrainConfig(), batch_size=8).batch_size == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().batch_size = 3
    with pytest.raises(ConfigError, match="batch_size: must be positive"):
        dataclasses.replace(TrainConfig(), batch_size=0)
    assert hash(TrainConfig().step) == hash(TrainConfig().step)  # the jitted step's static argument


def test_legacy_weights_become_loss_terms():
    assert TrainConfig.from_mapping({"energy_weight": 0.1}).loss == {"energy": 0.1, "forces": 0.99}
    assert TrainConfig.from_mapping({"forces_weight": 1.0, "energy_weight": 0.0}).loss == {"energy": 0.0, "forces": 1.0}
    with pytest.raises(ConfigError, match="either training.loss or energy_weight"):
        TrainConfig.from_mapping({"energy_weight": 0.1, "loss": {"energy": 1.0}})


# -- schemas: errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "line"),
    [
        ({"data": {"builtin": "ethanol", "trian": 10}}, "data.trian: unknown setting (did you mean train?); known: "
         "builtin, data_dir, fold, molecule, path, remove_uncharacterized, seed, source, test, train, units, val"),
        ({"data": {"builtin": "ethanol"}, "modle": {}}, "modle: unknown setting (did you mean model?); known: data, "
         "model, run_dir, training"),
        ({"data": {"builtin": "benzene"}}, "data.builtin: 'benzene' is not one of 'aspirin', 'ethanol' or 'cu'"),
        ({"data": {"builtin": "ethanol", "train": 1.5}}, "data.train: a fraction must lie in [0, 1]"),
        ({"data": {"builtin": "ethanol"}, "training": {"learning_rate": -1}}, "training.learning_rate: must be "
         "positive, got -1"),
        ({"data": {"builtin": "ethanol"}, "training": {"lr": 0.1}}, "training.lr: unknown setting (did you mean "
         "learning_rate?)"),
        ({"data": {"builtin": "ethanol"}, "training": {"batch_size": "many"}}, "training.batch_size: input should be "
         "a valid integer, unable to parse string as an integer, got 'many'"),
        ({"data": {"builtin": "ethanol"}, "training": {"loss": {"energy": {"weight": 1, "kind": "l1"}}}},
         "training.loss: loss term 'energy' has kind 'l1'; choose one of mse, mae, huber"),
        ({"data": {"builtin": "ethanol"}, "model": {"representation": {"type": "dimenet"}}},
         "model.representation: unknown model type 'dimenet'; choose one of schnet, painn"),
        ({"data": {"builtin": "ethanol"}, "model": {"representation": {"type": "painn", "n_filters": 8}}},
         "model.representation: unknown PaiNN settings ['n_filters']; known: ['activation', 'cutoff'"),
        ({"data": {"builtin": "ethanol"}, "model": {"heads": [{"type": "atomwise"}, {"type": "charges"}]}},
         "model.heads[1]: unknown head type 'charges'; choose one of atomwise, dipole_moment, polarizability"),
        ({"data": {"builtin": "ethanol"}, "model": {"heads": [{"type": "atomwise", "aggregation": "max"}]}},
         "model.heads[0]: invalid Atomwise settings: unknown aggregation 'max'; set aggregation to one of avg, sum"),
        ({"data": {"builtin": "ethanol"}, "model": {"heads": []}}, "model.heads: list should have at least 1 item"),
        ({"data": {"builtin": "ethanol"}, "model": {"heads": [{"output_key": "gap"}]}}, "model.heads[0]: needs a "
         "type: one of atomwise, dipole_moment, polarizability"),
        ({"data": {"builtin": "ethanol"}, "model": {"heds": []}}, "model.heds: unknown setting (did you mean heads?); "
         "known: atomrefs, delta_from, fidelities, heads, outputs, representation"),
        ({"data": {"builtin": "ethanol"}, "model": {"outputs": {"energy": {"atomref": True}}}},
         "model.outputs.energy.atomref: unknown setting (did you mean atomrefs?); known: atomrefs, scale, shift"),
        ({"data": {"builtin": "ethanol"}, "model": {"atomrefs": ["forces"]}}, "model: atomrefs names 'forces', but "
         "only per-structure scalar outputs of atomwise heads are scaled (here: energy)"),
        ({"data": {"builtin": "ethanol"}, "model": {"representation": {"type": "schnet"},
                                                    "heads": [{"type": "polarizability"}]}},
         "model: Polarizability needs vector features, which SchNet has not; use PaiNN"),
        ({"data": {"builtin": "ethanol"}, "training": {"loss": {"dipole_moment": 1.0}}},
         "training.loss trains 'dipole_moment', but the model predicts only energy, energies, forces, stress; add a "
         "head for dipole_moment to model.heads or remove it from training.loss"),
        ({"data": {"builtin": "ethanol", "path": "x.h5"}}, "data: set exactly one of data.builtin (aspirin, "
         "ethanol, cu), data.path (a data file) and data.source (qm9, md17, rmd17, md22, iso17); got builtin and path"),
        ({}, "data: required setting is missing; set data.builtin (aspirin, ethanol, cu), data.path (a data file) or "
         "data.source"),
        ({"data": {"source": "md17", "molecule": "water"}}, "data.molecule: data.source md17 needs a molecule: one "
         "of aspirin, azobenzene"),
        ({"data": {"source": "iso17", "molecule": "aspirin"}}, "data.molecule: only data.source md17 or rmd17 or "
         "md22 takes a molecule"),
        ({"data": {"builtin": "ethanol", "data_dir": "/data"}}, "data.data_dir: only a data.source is downloaded"),
        ({"data": {"source": "md22", "molecule": "aspirin"}}, "data.molecule: data.source md22 needs a molecule"),
    ],
)  # fmt: skip
def test_each_bad_setting_gives_one_line_naming_the_dotted_key(values, line):
    message = _error(values)
    assert message.startswith("invalid run configuration in run.yaml: ")
    assert len(message.splitlines()) == 1
    assert line in message


def test_several_problems_give_one_error_with_a_line_each():
    message = _error({"data": {"builtin": "ethanol", "val": -1}, "training": {"batch_size": 0, "ema_decay": 2}})
    assert message.splitlines() == [
        "invalid run configuration in run.yaml (3 problems):",
        "  data.val: must not be negative, got -1",
        "  training.batch_size: must be positive, got 0",
        "  training.ema_decay: must lie in (0, 1), or be null (no EMA), got 2.0",
    ]


# -- overrides and the old layout -----------------------------------------------------------------------------


def test_overrides_are_yaml_values_at_dotted_keys_and_are_validated(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {"data": {"builtin": "ethanol"}, "model": {"representation": TINY_MODEL, "heads": [{"type": "atomwise"}]}}
        )
    )
    config = load_run_config(path, [
        "training.loss={energy: 1.0, forces: {weight: 10, kind: huber, delta: 0.1}}", "data.test=null",
        "data.train=0.8", "model.representation.cutoff=3.5", "model.heads.0.n_layers=3", "run_dir=elsewhere",
        "model.outputs.energy.scale=true",
    ])  # fmt: skip
    assert config.training.loss == {"energy": 1.0, "forces": {"weight": 10, "kind": "huber", "delta": 0.1}}
    assert [(t.name, t.weight, t.kind, t.delta) for t in config.training.terms] == [
        ("energy", 1.0, "mse", 1.0), ("forces", 10, "huber", 0.1)]  # fmt: skip
    assert (config.data.test, config.data.train, config.run_dir) == (None, 0.8, "elsewhere")
    model = config.model.build()
    assert model.representation.cutoff == 3.5 and model.heads[0].n_layers == 3
    assert config.model.output("energy").scaled("energy")
    with pytest.raises(ConfigError, match=r"training.max_epochs: must be positive, got 0"):
        load_run_config(path, ["training.max_epochs=0"])
    with pytest.raises(ConfigError, match=r"override 'data.train.x=1': data.train is a value \(1000\), not a section"):
        load_run_config(path, ["data.train=1000", "data.train.x=1"])
    with pytest.raises(ConfigError, match=r"model.heads\[4\] is not an item of a list of 1"):
        load_run_config(path, ["model.heads.4.n_layers=1"])
    with pytest.raises(ConfigError, match=r"model.atomrefs is not set, so it has no item 0; give the whole list, e.g"):
        load_run_config(path, ["model.atomrefs.0=energy"])
    with pytest.raises(ConfigError, match="an override must look like section.key=value, got 'data.train'"):
        load_run_config(path, ["data.train"])
    assert apply_overrides({"a": {"b": 1}}, ["a.c=[1, 2]", "d.e=x"]) == {"a": {"b": 1, "c": [1, 2]}, "d": {"e": "x"}}


def test_the_old_layout_is_translated_and_round_trips_in_the_new_one(tmp_path):
    old = {
        "run_dir": "runs/old",
        "data": {"builtin": "ethanol", "path": None, "train": 40, "val": 16, "test": None, "seed": 0, "atomrefs": True},
        "model": {"type": "schnet", "n_atom_basis": 16, "n_interactions": 2, "cutoff": 4.0, "n_rbf": 8},
        "training": {"batch_size": 16, "energy_weight": 0.1},
    }
    new = {
        "run_dir": "runs/old",
        "data": {"builtin": "ethanol", "train": 40, "val": 16},
        "model": {"representation": TINY_MODEL, "atomrefs": ["energy"]},
        "training": {"batch_size": 16, "loss": {"energy": 0.1, "forces": 0.99}},
    }
    assert _load(old) == _load(new)
    (tmp_path / "run_config.yaml").write_text(yaml.safe_dump(old))  # a run directory of an earlier version
    config = load_run_config(tmp_path / "run_config.yaml")
    assert config.model.output("energy").atomrefs and config.model.representation["type"] == "schnet"
    assert RunConfig.load(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config
    # a representation setting given the old way on the command line reaches the representation
    assert _load({**new, "model": {**new["model"], "n_rbf": 6}}).model.representation["n_rbf"] == 6


# -- data sources and heads -----------------------------------------------------------------------------------------


def write_qm9(root: Path, n: int = 24, seed: int = 0) -> None:
    """QM9's files (``dsgdb9nsd.xyz.tar.bz2``, ``atomref.txt``, ``uncharacterized.txt``) with ``n`` molecules: the
    three QM9 molecules of test_data_sources (methane, ammonia, water) in turn, atoms displaced and the 15
    properties changed a little, written in the files' exact layout (tab separated, trailing tabs)."""
    rng = np.random.default_rng(seed)
    (root / "qm9").mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / sources.QM9_ARCHIVE, "w:bz2") as tar:
        for index in range(1, n + 1):
            lines = QM9_FILES[(index - 1) % 3 + 1].split("\n")
            header = lines[1].split("\t")  # "gdb <index>", the 15 properties, and "" after the trailing tab
            values = [float(v) * (1 + rng.normal(0, 0.002)) + rng.normal(0, 0.01) for v in header[1:-1]]
            lines[1] = "\t".join([f"gdb {index}", *(f"{v:.6f}" for v in values)]) + "\t"
            for k in range(2, 2 + int(lines[0])):
                symbol, *numbers = lines[k].split("\t")
                xyz = np.array([float(v.replace("*^", "e")) for v in numbers[:3]]) + rng.normal(0, 0.05, 3)
                lines[k] = "\t".join([symbol, *(f"{v:.10f}" for v in xyz), numbers[3]])
            _add_bytes(tar, f"dsgdb9nsd_{index:06d}.xyz", "\n".join(lines).encode())
    (root / sources.QM9_ATOMREF_FILE).write_text(QM9_ATOMREF)
    (root / sources.QM9_UNCHARACTERIZED_FILE).write_text(QM9_UNCHARACTERIZED)


def test_every_data_source_resolves_from_a_run_configuration(tmp_path):
    write_md17_npz(tmp_path / "md17" / "md17_ethanol.npz", n=5)
    write_md17_npz(tmp_path / "md22" / "md22_stachyose.npz", n=3)
    write_rmd17_archive(tmp_path / sources.RMD17_ARCHIVE)
    (tmp_path / "work").mkdir()
    write_iso17_archive(tmp_path / sources.ISO17_ARCHIVE, tmp_path / "work")
    write_qm9(tmp_path, n=6)
    cases = [
        ({"source": "md17", "molecule": "ethanol"}, 5, {"benchmark": "md17", "molecule": "ethanol"}),
        ({"source": "md22", "molecule": "stachyose"}, 3, {"benchmark": "md22"}),
        ({"source": "rmd17", "molecule": "aspirin"}, 6, {"benchmark": "rmd17", "molecule": "aspirin"}),
        ({"source": "iso17"}, 3, {"fold": "reference"}),
        ({"source": "iso17", "fold": "test_other"}, 2, {"fold": "test_other"}),
        ({"source": "qm9"}, 5, {"benchmark": "qm9", "uncharacterized_removed": True}),  # gdb 2 is uncharacterized
        ({"source": "qm9", "remove_uncharacterized": False}, 6, {"uncharacterized_removed": False}),
    ]
    for data, size, metadata in cases:
        config = _load({"data": {**data, "data_dir": str(tmp_path)}})
        dataset = load_data(config.data)
        assert len(dataset) == size, data
        assert {key: dataset.metadata[key] for key in metadata} == metadata
    assert _load({"data": {"source": "iso17"}}).data.fold == "reference"
    assert _load({"data": {"source": "qm9"}}).data.remove_uncharacterized is True
    jaxatom.data.write_hdf5(load_data(_load({"data": {"builtin": "ethanol"}}).data).subset(range(3)), tmp_path / "e.h5")
    assert len(load_data(_load({"data": {"path": str(tmp_path / "e.h5")}}).data)) == 3


def test_heads_from_yaml_build_the_expected_model():
    text = """
    data: {builtin: ethanol}
    model:
      representation: {type: PaiNN, n_atom_basis: 16, n_interactions: 2, cutoff: 4.0, n_rbf: 8}
      heads:
        - {type: atomwise, output_key: energy, per_atom_output_key: energies, n_hidden: [12, 6]}
        - {type: dipole_moment, use_vector_representation: true}
        - {type: atomwise, output_key: homo, aggregation: avg, unit: eV}
    training: {loss: {energy: 0.01, forces: 0.99, dipole_moment: 0.1}}
    """
    config = _load(yaml.safe_load(text))
    model = config.model.build()
    assert model.representation == PaiNN(n_atom_basis=16, n_interactions=2, cutoff=4.0, n_rbf=8)
    assert model.heads == (
        Atomwise(output_key="energy", per_atom_output_key="energies", n_hidden=(12, 6)),
        DipoleMoment(use_vector_representation=True),
        Atomwise(output_key="homo", aggregation="avg", unit="eV"),
    )
    assert model.output_names == ("energy", "energies", "dipole_moment", "charges", "homo", "forces", "stress")
    assert config.model.representation["type"] == "painn"  # the registry's name
    assert [spec.unit for spec in model.outputs] == ["eV", "eV", "e*Ang", "e", "eV"]
    # a potential from it predicts every output
    potential = jaxatom.Potential.create(model.representation, [1, 6, 8], heads=model.heads)
    prediction = potential.predict(jaxatom.data.load_builtin("ethanol").to_atoms(0))
    assert np.shape(prediction["dipole_moment"]) == (3,) and np.shape(prediction["charges"]) == (9,)


def test_shipped_example_configurations_load():
    qm9 = load_run_config(EXAMPLES / "qm9_u0.yaml")
    assert qm9.data.source == "qm9" and qm9.model.output("energy_U0").atomrefs
    assert not qm9.model.output("energy_U0").scaled("energy_U0")  # SchNetPack's RemoveOffsets, no ScaleProperty
    assert qm9.training.loss == {"energy_U0": 1.0} and qm9.training.learning_rate == 5e-4
    dipole = load_run_config(EXAMPLES / "dipole_ethanol.yaml")
    names = dipole.model.build().output_names
    assert {"energy", "forces", "dipole_moment", "charges"} <= set(names)
    ethanol = jaxatom.data.load_builtin("ethanol")
    assert {term.name for term in dipole.training.terms} <= set(ethanol.properties)
    assert "charges" in ethanol.properties


# -- MD -----------------------------------------------------------------------------------------------------------


def test_md_config_has_every_simulate_argument_with_its_default():
    parameters = inspect.signature(simulate).parameters
    assert set(SIMULATE_OPTIONS) == set(parameters) - {"model", "atoms", "ensemble", "ensemble_settings"}
    for name in SIMULATE_OPTIONS:
        if parameters[name].default is not inspect.Parameter.empty and name != "output":
            assert DEFAULT_MD[name] == parameters[name].default, name
    for name, cls in ENSEMBLES.items():  # the flat ensemble settings default to each ensemble's own defaults
        spec = MDConfig(model="m", structure="s.xyz", ensemble=name).ensemble_spec()
        assert spec == cls(), name
    assert (DEFAULT_MD["steps"], DEFAULT_MD["output"], DEFAULT_MD["precision"]) == (2000, "md/trajectory.h5", "float32")


def test_md_config_files_overrides_and_errors(tmp_path):
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump({"model": "model", "structure": "ethanol.xyz", "steps": 40, "output": "/abs/x.h5"}))
    config = load_md_config(path, ["ensemble=langevin", "temperature_K=500", "n_replicas=2"])
    assert isinstance(config, MDConfig)
    assert config.model == str(tmp_path / "model") and config.structure == str(tmp_path / "ethanol.xyz")
    assert config.output == "/abs/x.h5"  # relative paths are relative to the file, absolute ones stay
    assert (config.ensemble, config.temperature_K, config.n_replicas, config.steps) == ("langevin", 500.0, 2, 40)
    options = config.simulate_options()
    assert options["ensemble"] == Langevin(temperature_K=500.0, friction_per_fs=0.01)
    assert "model" not in options and "structure" not in options
    cases = [
        (["thermostat=pile"], "unknown MD setting(s) thermostat; known: "),
        (["model=null"], "model: the MD configuration needs 'model' (a model directory and a structure file)"),
        (["ensemble=npt"], "ensemble: unknown ensemble 'npt'; choose one of nve, langevin, nose_hoover, rpmd, npt_scr"),
        (["precision=float16"], "precision: precision must be float32 or float64, got 'float16'"),
        (["steps=many"], "steps: input should be a valid integer, unable to parse string as an integer"),
        (["rpmd_thermostat=gle"], "unknown ring-polymer thermostat 'gle'; choose one of pile_l, pile_g, trpmd"),
        (["velocities=random"], "velocities must be 'maxwell_boltzmann' or 'atoms', got 'random'"),
        (["tau_fs=50"], "tau_fs do not apply to the nve ensemble; remove them"),
        (["neighbors=cells"], "neighbors must be one of auto, dense, all_pairs, list, images, got 'cells'"),
        (["steps"], "an override must look like key=value, got 'steps'"),
    ]
    for overrides, message in cases:
        with pytest.raises(MDConfigError) as error:
            load_md_config(path, overrides)
        assert message in str(error.value), overrides
    with pytest.raises(MDConfigError, match=re.escape("invalid MD configuration (2 problems):\n  model: ")):
        MDConfig.load({}, error=MDConfigError)
    with pytest.raises(FileNotFoundError, match="MD configuration .* not found"):
        load_md_config(tmp_path / "absent.yaml")


# -- QM9 from the command line ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qm9_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("qm9_data")
    write_qm9(root)
    return root


def _qm9_run(tmp_path, qm9_dir, head: dict, loss: dict, **model) -> Path:
    config = {
        "run_dir": str(tmp_path / "run"),
        "data": {"source": "qm9", "data_dir": str(qm9_dir), "train": 15, "val": 4, "test": 4, "seed": 1},
        "model": {"representation": TINY_MODEL, "heads": [head], **model},
        "training": {"batch_size": 8, "max_epochs": 2, "learning_rate": 5e-4, "loss": loss},
    }
    path = tmp_path / "qm9.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _train_split(run_dir: Path, qm9_dir: Path):
    dataset = sources.load_qm9(qm9_dir)
    return dataset, np.load(run_dir / "split.npz")["train_idx"]


def test_qm9_u0_with_atomrefs_from_the_command_line(tmp_path, qm9_dir, capsys):
    path = _qm9_run(tmp_path, qm9_dir, {"type": "atomwise", "output_key": "energy_U0"}, {"energy_U0": 1.0},
                    atomrefs=["energy_U0"])  # fmt: skip
    assert main(["train", str(path), "--quiet"]) == 0
    output = capsys.readouterr().out
    assert "test set (4 structures):" in output and re.search(r"energy_U0 +MAE [0-9.e+-]+ eV, RMSE", output)
    run = tmp_path / "run"
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert metrics["structures"] == 4 and metrics["units"]["energy_U0"] == "eV"
    assert np.isfinite(metrics["energy_U0_mae"]) and metrics["energy_U0_rmse"] >= metrics["energy_U0_mae"]
    assert "energy_mae" not in metrics  # the model predicts U0 only
    # the saved scaling is SchNetPack's RemoveOffsets with QM9's own atomrefs, from the training split in float64
    dataset, train_idx = _train_split(run, qm9_dir)
    atomrefs = dataset.metadata["atomrefs_all"]["energy_U0"]
    expected = fit_standardisation(dataset, train_idx, "energy_U0", extensive=True, atomrefs=atomrefs)
    model = jaxatom.load_model(run / "best_model")
    assert [(spec.name, spec.unit) for spec in model.model.outputs] == [("energy_U0", "eV")]  # the data's unit
    scaling = model.scaling
    assert set(scaling) == {"energy_U0"}
    assert scaling["energy_U0"].shift == expected["shift"] and scaling["energy_U0"].scale == 1.0
    assert scaling["energy_U0"].atomrefs == pytest.approx(atomrefs, rel=1e-15) and len(atomrefs) == 5
    written = yaml.safe_load((run / "run_config.yaml").read_text())
    assert written["model"]["atomrefs"] == ["energy_U0"] and written["data"]["source"] == "qm9"
    assert main(["evaluate", str(run)]) == 0
    assert "energy_U0" in capsys.readouterr().out


def test_qm9_gap_standardised_from_the_command_line(tmp_path, qm9_dir, capsys):
    head = {"type": "atomwise", "output_key": "gap", "aggregation": "avg"}
    assert main(["train", str(_qm9_run(tmp_path, qm9_dir, head, {"gap": 1.0})), "--quiet"]) == 0
    assert re.search(r"gap +MAE [0-9.e+-]+ eV", capsys.readouterr().out)
    run = tmp_path / "run"
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert np.isfinite(metrics["gap_mae"]) and metrics["units"]["gap"] == "eV"
    dataset, train_idx = _train_split(run, qm9_dir)
    gap = dataset.properties["gap"][train_idx]
    scaling = jaxatom.load_model(run / "best_model").scaling["gap"]
    assert scaling.shift == pytest.approx(gap.mean(), rel=1e-12) and scaling.scale == pytest.approx(gap.std(), 1e-12)
    assert scaling.atomrefs == {}


def test_a_property_the_data_lacks_is_refused_before_any_compute(tmp_path, qm9_dir, capsys, monkeypatch):
    import jaxatom.train.run as run_module

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the data were checked")

    monkeypatch.setattr(run_module.Potential, "create", no_model)
    path = _qm9_run(tmp_path, qm9_dir, {"type": "atomwise", "output_key": "energy"}, {"energy": 0.1, "forces": 0.9})
    assert main(["train", str(path), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "'forces'" in error and "dsgdb9nsd.xyz.tar.bz2" in error and "remove it from training.loss" in error
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_old_layout_configuration_resumes_a_run_of_jaxatom_0_1(tmp_path, capsys):
    """The run directory of jaxatom 0.1 (tests/data/train_run_v1: one epoch of a tiny SchNet) continues from the
    command line with a configuration in that version's layout, which the run then writes in today's."""
    import shutil

    shutil.copytree(Path(__file__).parent / "data" / "train_run_v1", tmp_path / "run")
    old = {
        "run_dir": str(tmp_path / "run"),
        "data": {"builtin": "ethanol", "path": None, "train": 8, "val": 4, "test": 0, "seed": 0, "atomrefs": False},
        "model": {"type": "schnet", "n_atom_basis": 8, "n_interactions": 1, "cutoff": 4.0, "n_rbf": 6},
        "training": {"batch_size": 4, "max_epochs": 2, "energy_weight": 0.01, "forces_weight": 0.99},
    }
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    assert main(["train", str(tmp_path / "old.yaml"), "--quiet"]) == 0
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "1"]  # epoch 0 from 0.1's checkpoint, epoch 1 new
    written = yaml.safe_load((tmp_path / "run" / "run_config.yaml").read_text())
    assert written["model"]["representation"]["type"] == "schnet" and "type" not in written["model"]
    assert written["training"]["loss"] == {"energy": 0.01, "forces": 0.99} and "atomrefs" not in written["data"]
    assert RunConfig.load(written) == load_run_config(tmp_path / "old.yaml")
