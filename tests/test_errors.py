"""Bad input gets one clear jaxatom error (a ``JaxAtomError``) that names the problem and the fix, before slow work."""

import json
import math
import re

import h5py
import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db import connect
from ase.io import write

import jaxatom
from jaxatom import data
from jaxatom.cli import main
from jaxatom.errors import ConfigError, DataError, JaxAtomError, StructureError
from jaxatom.interop import schnetpack
from jaxatom.nn import Atomwise, PaiNN, SchNet, check_representation
from jaxatom.potential import ModelFileError
from jaxatom.units import UnitError

from .conftest import tiny_schnet

RNG = np.random.default_rng(0)


def _water(n: int, energy: bool = True, forces: bool = True) -> list[Atoms]:
    frames = []
    for _ in range(n):
        atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]] + RNG.normal(0, 0.05, (3, 3)))
        results = {"energy": -10.0} if energy else {}
        if forces:
            results["forces"] = RNG.normal(size=(3, 3))
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


def _raises(error_class: type, *words: str):
    """``pytest.raises`` for a jaxatom error whose message holds every one of ``words``."""
    assert issubclass(error_class, JaxAtomError)
    return pytest.raises(error_class, match="(?s)" + "".join(f"(?=.*{re.escape(word)})" for word in words))


# -- 1. empty and unreadable data files ------------------------------------------------------------------------------


def _empty_xyz(path):
    path.write_text("")


def _empty_db(path):
    with connect(path) as db:
        db.metadata = {}


def _empty_h5(path):
    with h5py.File(path, "w") as out:
        out.attrs["format"] = "jaxatom-dataset"
        out["n_atoms"] = np.zeros(0, np.int64)
        for key in ("numbers", "positions", "cell", "pbc"):
            out[key] = np.zeros(0)
        out.create_group("properties")


def _empty_npz(path):
    np.savez(path, z=np.array([8, 1, 1]), R=np.zeros((0, 3, 3)), E=np.zeros(0), F=np.zeros((0, 3, 3)))


@pytest.mark.parametrize(
    ("name", "make"),
    [("empty.xyz", _empty_xyz), ("empty.db", _empty_db), ("empty.h5", _empty_h5), ("empty.npz", _empty_npz)],
)
def test_a_data_file_without_structures_is_refused_naming_the_file(tmp_path, name, make):
    path = tmp_path / name
    make(path)
    with _raises(DataError, str(path), "holds no structures", "pass a data file with at least one structure"):
        data.read_dataset(path)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("garbage.xyz", ("cannot read", "as extended XYZ", "check that the file is extended XYZ")),
        ("garbage.extxyz", ("cannot read", "as extended XYZ", "check that the file is extended XYZ")),
        ("garbage.db", ("cannot read", "as an ASE database", "check that the file is an ASE database")),
        ("garbage.h5", ("cannot read", "as an HDF5 file", "check that the file is an HDF5 file")),
        ("garbage.npz", ("is not an npz archive", "np.savez")),
    ],
)
def test_a_file_that_is_not_what_its_suffix_says_is_refused(tmp_path, name, words):
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * 8)
    with _raises(DataError, str(path), *words):
        data.read_dataset(path)


def test_the_empty_xyz_readers_and_the_train_command_name_the_file(tmp_path, capsys):
    path = tmp_path / "frames.xyz"
    path.write_text("")
    with _raises(DataError, str(path), "holds no structures"):
        data.read_extxyz(path)
    config = {"run_dir": str(tmp_path / "run"), "data": {"path": str(path)}, "model": {"type": "schnet"}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "run.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxatom train: ") and str(path) in err and "holds no structures" in err


@pytest.mark.parametrize(
    ("target", "error_class", "words"),
    [
        ("folder", DataError, ("is a directory, not a data file", "pass one data file")),
        ("folder.xyz", DataError, ("is a directory, not a data file", "pass one data file")),
        ("missing.xyz", data.DataFileNotFoundError, ("no data file at", "check the path")),
        ("notes.csv", DataError, ("unknown data file type '.csv'", "use .db, .xyz/.extxyz, .npz or .h5/.hdf5")),
    ],
)
def test_a_path_that_is_no_data_file_is_refused(tmp_path, target, error_class, words):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.xyz").mkdir()
    (tmp_path / "notes.csv").write_text("a,b\n")
    with _raises(error_class, str(tmp_path / target), *words):
        data.read_dataset(tmp_path / target)


# -- 2. non-finite and misshapen data --------------------------------------------------------------------------------


def _md17_arrays(n: int = 6) -> dict[str, np.ndarray]:
    return {
        "z": np.array([8, 1, 1]),
        "R": RNG.normal(size=(n, 3, 3)),
        "E": RNG.normal(size=n),
        "F": RNG.normal(size=(n, 3, 3)),
    }


def _spoil(arrays: dict, key: str, value: float) -> dict:
    spoiled = {k: v.copy() for k, v in arrays.items()}
    spoiled[key].reshape(len(spoiled[key]), -1)[[2, 4], 0] = value
    return spoiled


@pytest.mark.parametrize(
    ("key", "value", "what"),
    [("R", np.nan, "positions are NaN or infinite"), ("E", np.inf, "'energy' is NaN or infinite"),
     ("F", np.nan, "'forces' is NaN or infinite"), ("F", -np.inf, "'forces' is NaN or infinite")],
)  # fmt: skip
def test_non_finite_values_are_refused_naming_the_structures_and_the_file(tmp_path, key, value, what):
    path = tmp_path / "md17_water.npz"
    np.savez(path, **_spoil(_md17_arrays(), key, value))
    with _raises(DataError, str(path), what, "2 structures (indices 2, 4)", "remove those structures or fix"):
        data.read_dataset(path)


def test_non_finite_values_in_arrays_name_the_structures():
    arrays = _spoil(_md17_arrays(12), "R", np.nan)
    arrays["R"][5:11, 1, 1] = np.nan
    with _raises(DataError, "positions are NaN or infinite in 8 structures (indices 2, 4, 5, 6, 7, ...)"):
        data.Dataset.from_arrays(arrays["z"], arrays["R"], {"energy": arrays["E"]}, units={"energy": "eV"})


@pytest.mark.parametrize(
    ("properties", "words"),
    [
        ({"forces": np.zeros((4, 3, 2))}, ("property 'forces' must have shape [atoms, 3], got [12, 2]",)),
        ({"forces": np.zeros((4, 2, 3))}, ("'forces' does not have one row per atom in 4 structures", "one row")),
        ({"energy": np.zeros((4, 1))}, ("property 'energy' must have shape [structures], got [4, 1]",)),
        ({"energy": np.zeros(3)}, ("property 'energy' has 3 entries, expected 4", "one value per structure")),
        ({"energy": ["a", "b", "c", "d"]}, ("'energy' cannot be read as numbers", "give numeric values")),
    ],
)
def test_misshapen_labels_are_refused(properties, words):
    units = {name: data.PROPERTY_UNITS[name] for name in properties}
    with _raises(DataError, *words):
        data.Dataset.from_arrays(np.array([8, 1, 1]), np.zeros((4, 3, 3)), properties, units=units)


def test_misshapen_positions_dummy_atoms_and_empty_structures_are_refused():
    with _raises(DataError, "positions must have shape [atoms, 3], got [6, 2]"):
        data.Dataset.from_arrays(np.array([1, 1]), np.zeros((3, 2, 2)), {}, units={})
    with _raises(DataError, "'positions' does not have one row per atom", "structure 0: 2 atomic numbers"):
        data.Dataset.from_arrays(np.array([1, 1]), np.zeros((3, 3, 3)), {}, units={})
    with _raises(DataError, "atomic numbers must lie in 1..118, found 0 in structure 1", "remove dummy atoms"):
        data.Dataset.from_arrays([np.array([1]), np.array([1, 0])], [np.zeros((1, 3)), np.ones((2, 3))], {}, {})
    with _raises(DataError, "no atoms in structure 1", "remove those structures"):
        data.Dataset.from_arrays([np.array([1]), np.array([], int)], [np.zeros((1, 3)), np.zeros((0, 3))], {}, {})
    with _raises(DataError, "no structures given"):
        data.Dataset.from_atoms([])


# -- 3. model settings -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("representation", [SchNet, PaiNN])
@pytest.mark.parametrize(
    ("setting", "value", "words"),
    [
        ("cutoff", 0.0, ("cutoff must be a finite positive number of Å", "got 0.0")),
        ("cutoff", -1.0, ("cutoff must be a finite positive number of Å", "got -1.0")),
        ("cutoff", math.nan, ("cutoff must be a finite positive number of Å", "got nan")),
        ("cutoff", "5", ("cutoff must be a finite positive number of Å", "got '5'")),
        ("n_atom_basis", 0, ("n_atom_basis must be an integer >= 1, got 0",)),
        ("n_interactions", 0, ("n_interactions must be an integer >= 1, got 0",)),
        ("n_rbf", 0, ("n_rbf must be an integer >= 2, got 0",)),
        ("n_rbf", 1, ("n_rbf must be an integer >= 2, got 1",)),
        ("activation", "swish2", ("unknown activation 'swish2'", "set activation to one of")),
        ("cutoff_fn", "hard", ("unknown cutoff function 'hard'", "set cutoff_fn to one of cosine, mollifier")),
        ("rbf_start", 6.0, ("the radial basis must end (at 5.0 Å) after it starts",)),
    ],
)
def test_unusable_model_settings_are_refused_when_the_model_is_made(representation, setting, value, words):
    with _raises(ConfigError, f"invalid {representation.__name__} settings", *words):
        representation(**{"cutoff": 5.0, setting: value})


def test_every_problem_is_listed_and_the_check_is_callable():
    with _raises(ConfigError, "cutoff must be", "n_interactions must be", "n_rbf must be"):
        PaiNN(cutoff=-2.0, n_interactions=0, n_rbf=0)
    check_representation(tiny_schnet())  # valid settings pass
    with _raises(ConfigError, "unknown aggregation 'max'", "set aggregation to one of avg, sum"):
        Atomwise(aggregation="max")


def test_a_model_file_with_unusable_settings_is_refused(tmp_path):
    jaxatom.Potential.create(tiny_schnet(n_atom_basis=4, n_interactions=1), elements=[1, 8]).save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["representation"]["cutoff"] = 0.0
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with _raises(ModelFileError, "settings are not usable: invalid SchNet settings", "cutoff must be"):
        jaxatom.load_model(tmp_path / "m")
    config["representation"]["cutoff"] = 4.0
    config["scaling"] = 5
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with _raises(ModelFileError, "config.json is malformed", "save the model again"):
        jaxatom.load_model(tmp_path / "m")


# -- 4. SchNetPack import: units and file before torch ---------------------------------------------------------------


@pytest.fixture
def no_torch(monkeypatch):
    """Fail loudly if import_model reaches for torch."""

    def refuse():
        raise AssertionError("torch was needed before the arguments were checked")

    monkeypatch.setattr(schnetpack, "_require_schnetpack", refuse)


@pytest.mark.parametrize(
    ("options", "error_class", "words"),
    [
        ({"energy_unit": "foo"}, UnitError, ("energy_unit 'foo' cannot be used", "unknown unit 'foo'", "'kcal/mol'")),
        ({"position_unit": "eV"}, UnitError, ("position_unit 'eV' cannot be used", "pass e.g. 'Ang' or 'Bohr'")),
        ({"elements": ["Xx"]}, ConfigError, ("unknown element symbol 'Xx'",)),
    ],
)
def test_schnetpack_import_checks_its_options_before_torch(tmp_path, no_torch, options, error_class, words):
    dummy = tmp_path / "best_model"
    dummy.write_bytes(b"not a torch file")
    for source in (dummy, tmp_path / "missing_model"):
        with _raises(error_class, *words):
            schnetpack.import_model(source, **options)


def test_schnetpack_import_checks_the_file_before_torch(tmp_path, no_torch, capsys):
    with _raises(ModelFileError, "no SchNetPack model file at", "pass the file written by torch.save"):
        schnetpack.import_model(tmp_path / "missing_model")
    with _raises(ModelFileError, "is a directory", "pass the SchNetPack model file inside it"):
        schnetpack.import_model(tmp_path)
    assert main(["import-schnetpack", str(tmp_path / "missing"), str(tmp_path / "out"), "--energy-unit", "foo"]) == 2
    assert "jaxatom import-schnetpack: energy_unit 'foo' cannot be used" in capsys.readouterr().err


# -- 5. other plausible mistakes ------------------------------------------------------------------------------------


def test_data_without_a_property_that_is_asked_for(tmp_path):
    path = tmp_path / "energies.xyz"
    write(path, _water(3, forces=False))
    dataset = data.read_dataset(path)  # energy only: read what every structure has
    assert sorted(dataset.properties) == ["energy"]
    with _raises(data.MissingPropertyError, "the data set lacks forces (it has: energy)", "use data that has them"):
        dataset.require("energy", "forces")
    with _raises(data.MissingPropertyError, str(path), "structure 0 has no property 'forces'", "properties=..."):
        data.read_extxyz(path, properties=("energy", "forces"))
    with pytest.raises(KeyError):  # still a KeyError for existing code
        dataset.require("forces")


def test_unit_strings_that_do_not_parse_name_the_file(tmp_path):
    path = tmp_path / "frames.xyz"
    write(path, _water(2))
    with _raises(UnitError, str(path), "unknown unit 'kcals'", "known units are"):
        data.read_extxyz(path, units={"energy": "kcals/mol", "forces": "eV/Ang"})
    with _raises(UnitError, str(path), "does not measure what 'energy' is", "pass the unit the data is stored in"):
        data.read_extxyz(path, units={"energy": "Ang", "forces": "eV/Ang"})


@pytest.mark.parametrize(
    ("arrays", "error_class", "words"),
    [
        ({"train_idx": [0, 1], "val_idx": [2], "test_idx": [30]}, DataError, ("outside the data set (0..11)",)),
        ({"train_idx": [0, 1], "val_idx": [1], "test_idx": [3]}, DataError, ("overlap",)),
        ({"train_idx": [0.5, 1], "val_idx": [2], "test_idx": [3]}, DataError, ("not lists of integer indices",)),
        ({"train_idx": [0, 1]}, DataError, ("lacks val_idx, test_idx",)),
        ({"train_idx": [0], "val_idx": [2], "test_idx": [3]}, ConfigError, ("has sizes", "were asked for")),
        (None, DataError, ("is not an npz archive",)),
    ],
)
def test_a_split_file_that_does_not_fit_the_data_is_refused(tmp_path, arrays, error_class, words):
    path = tmp_path / "split.npz"
    if arrays is None:
        path.write_bytes(b"garbage")
    else:
        np.savez(path, **arrays)
    with _raises(error_class, str(path), *words, "remove"):
        data.load_or_create_split(path, 12, 2, 1, 1)


@pytest.mark.parametrize(
    ("sizes", "words"),
    [((20, 1), ("asks for 20 + 1 + 0 structures", "only 12")), (("abc", 1), ("train size must be a count",)),
     ((1.5, 0), ("fraction must lie in [0, 1]",)), ((-1, 1), ("must not be negative",))],
)  # fmt: skip
def test_split_sizes_that_cannot_work_are_refused(sizes, words):
    with _raises(ConfigError, *words):
        data.random_split(12, *sizes)


def test_unknown_builtin_data_and_bad_loader_settings_are_refused():
    with _raises(ConfigError, "no built-in data set 'benzene'", "available: aspirin, ethanol"):
        data.load_builtin("benzene")
    dataset = data.Dataset.from_atoms(_water(2))
    with _raises(ConfigError, "batch_size must be positive"):
        data.GraphLoader(dataset, 3.0, 0)
    periodic = data.Dataset.from_arrays(
        np.array([1, 1]), np.zeros((2, 2, 3)) + [[0, 0, 0], [0.7, 0, 0]], {}, units={}, pbc=True
    )
    with _raises(StructureError, "structure 0 of the data set", "cell with non-zero volume"):
        data.GraphLoader(periodic, 3.0, 1, properties=())


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: (p / "notes.txt").write_text("hi"), ("is not a jaxatom model", "e.g. <run_dir>/best_model")),
        (lambda p: (p / "config.json").write_text("{}"), ("lacks params.msgpack", "incomplete")),
    ],
)
def test_load_model_on_a_directory_that_holds_no_model(tmp_path, make, words):
    make(tmp_path)
    with _raises(ModelFileError, str(tmp_path), *words):
        jaxatom.load_model(tmp_path)


def test_bad_elements_are_refused():
    with _raises(ConfigError, "unknown element symbol 'Xx'", "use symbols such as"):
        jaxatom.Potential.create(tiny_schnet(), elements=["H", "Xx"])
    with _raises(ConfigError, "atomic numbers must be integers in 1..99, got 0"):
        jaxatom.Potential.create(tiny_schnet(), elements=[0, 1])
    with _raises(ConfigError, "at least one element"):
        jaxatom.Potential.create(tiny_schnet(), elements=[])
