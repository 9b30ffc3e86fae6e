"""The portable model file: round trips, atomic overwrite and every error path."""

import json
import os
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
from ase.build import molecule

import jaxatom
from jaxatom.nn import Atomwise, PaiNN
from jaxatom.potential.io import FORMAT_VERSION, ModelFileError, load_model

from .conftest import ELEMENTS, tiny_schnet


@pytest.fixture(scope="module")
def saved(tmp_path_factory, potential):
    path = tmp_path_factory.mktemp("model") / "model_dir"
    potential.save(path)
    return potential, path


def _assert_same_predictions(a, b, structures):
    for ra, rb in zip(a.predict(structures), b.predict(structures), strict=True):
        assert ra["energy"] == rb["energy"]
        np.testing.assert_array_equal(ra["forces"], rb["forces"])
        if "stress" in ra:
            np.testing.assert_array_equal(ra["stress"], rb["stress"])


def test_round_trip_reproduces_predictions_exactly(saved, ethanol, crystal):
    potential, path = saved
    loaded = jaxatom.load_model(path)
    assert loaded.model == potential.model
    assert loaded.elements == potential.elements
    assert loaded.atomrefs == potential.atomrefs and loaded.energy_shift == potential.energy_shift
    _assert_same_predictions(potential, loaded, [ethanol, crystal])
    jax.tree.map(np.testing.assert_array_equal, loaded.params, jax.device_get(potential.params))


def test_config_records_architecture_units_and_versions(saved):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    assert config["format_version"] == 2 < FORMAT_VERSION  # format 3 only for Δ- and multi-fidelity models
    assert config["representation"]["type"] in ("SchNet", "PaiNN")
    assert config["representation"]["n_atom_basis"] == 16
    assert [head["type"] for head in config["heads"]] == ["Atomwise"]
    assert config["heads"][0]["output_key"] == "energy" and config["heads"][0]["per_atom_output_key"] == "energies"
    assert {o["name"]: o["unit"] for o in config["outputs"]} == {"energy": "eV", "energies": "eV"}
    assert config["elements"] == ELEMENTS and config["cutoff"] == 4.0
    assert config["units"]["energy"] == "eV" and config["units"]["length"] == "Ang"
    assert config["scaling"]["energy"]["atomrefs"]["6"] == -1030.0
    assert set(config["versions"]) == {"jaxatom", "jax", "flax"}
    assert not list(path.parent.glob(".*partial*"))  # no staging leftovers


def test_zip_round_trip_and_custom_head(tmp_path, ethanol):
    pot = jaxatom.Potential.create(
        PaiNN(n_atom_basis=8, n_interactions=1, cutoff=3.0, n_rbf=6),
        elements=["H", "C", "O"],
        head=Atomwise(n_hidden=(5, 3), n_layers=3, aggregation="avg", activation="tanh"),
        energy_scale=2.0,
    )
    pot.save(tmp_path / "model.zip")
    assert zipfile.is_zipfile(tmp_path / "model.zip")
    loaded = load_model(tmp_path / "model.zip")
    assert loaded.model.heads == pot.model.heads and loaded.energy_scale == 2.0
    _assert_same_predictions(pot, loaded, [ethanol])


def test_saving_over_an_existing_model_replaces_it_whole(tmp_path, ethanol):
    first = jaxatom.Potential.create(tiny_schnet(), elements=ELEMENTS, seed=0)
    second = jaxatom.Potential.create(tiny_schnet(n_atom_basis=8), elements=ELEMENTS, seed=1)
    first.save(tmp_path / "m")
    second.save(tmp_path / "m")
    _assert_same_predictions(second, load_model(tmp_path / "m"), [ethanol])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def _copy(saved, tmp_path):
    _, path = saved
    target = tmp_path / "copy"
    target.mkdir(parents=True)
    for name in ("config.json", "params.msgpack"):
        (target / name).write_bytes((path / name).read_bytes())
    return target


def test_missing_model_or_files_give_clear_errors(saved, tmp_path):
    with pytest.raises(ModelFileError, match="no model at"):
        load_model(tmp_path / "nothing")
    target = _copy(saved, tmp_path)
    (target / "params.msgpack").unlink()
    with pytest.raises(ModelFileError, match="lacks params.msgpack"):
        load_model(target)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelFileError, match="neither a model directory nor a zip"):
        load_model(tmp_path / "notes.txt")
    with zipfile.ZipFile(tmp_path / "half.zip", "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(ModelFileError, match="lacks params.msgpack"):
        load_model(tmp_path / "half.zip")


def _edit_config(target, change):
    config = json.loads((target / "config.json").read_text())
    change(config)
    (target / "config.json").write_text(json.dumps(config))


def test_newer_format_version_is_refused(saved, tmp_path):
    target = _copy(saved, tmp_path)
    _edit_config(target, lambda c: c.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ModelFileError, match="newer than this jaxatom reads.*upgrade jaxatom"):
        load_model(target)


def test_config_parameter_mismatch_is_refused(saved, tmp_path):
    target = _copy(saved, tmp_path)
    _edit_config(target, lambda c: c["representation"].update(n_atom_basis=32))
    with pytest.raises(ModelFileError, match="do not match its config.json.*shape"):
        load_model(target)
    target2 = _copy(saved, tmp_path / "b")
    _edit_config(target2, lambda c: c["representation"].update(n_interactions=3))
    with pytest.raises(ModelFileError, match="missing params/representation/"):
        load_model(target2)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda c: c["representation"].update(type="DimeNet"), "unknown model part 'DimeNet'"),
        (lambda c: c["representation"].update(n_heads=4), r"unknown (SchNet|PaiNN) settings \['n_heads'\]"),
        (lambda c: c.pop("elements"), "lacks the entry 'elements'"),
        (lambda c: c.update(format="something-else"), "not a jaxatom model file"),
    ],
)
def test_malformed_configs_are_refused(saved, tmp_path, change, match):
    target = _copy(saved, tmp_path)
    _edit_config(target, change)
    with pytest.raises(ModelFileError, match=match):
        load_model(target)


def test_corrupt_files_are_refused(saved, tmp_path):
    target = _copy(saved, tmp_path)
    (target / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(target)
    target = _copy(saved, tmp_path / "b")
    (target / "params.msgpack").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ModelFileError, match="cannot be read|do not match"):
        load_model(target)


def test_readme_example(tmp_path):
    from jaxatom.nn import PaiNN

    pot = jaxatom.Potential.create(PaiNN(n_atom_basis=16, n_interactions=2, cutoff=5.0, n_rbf=20), elements=[1, 6, 8])
    res = pot.predict(molecule("CH3CH2OH"))
    assert set(res) == {"energy", "energies", "forces"} and res["forces"].shape == (9, 3)
    assert res["energy"] == pytest.approx(res["energies"].sum(), rel=1e-6)
    pot.save(tmp_path / "model_dir")
    pot2 = jaxatom.load_model(tmp_path / "model_dir")
    assert pot2.predict([molecule("CH3CH2OH"), molecule("H2O")])[0]["energy"] == res["energy"]


def test_invalid_potential_settings_are_refused():
    with pytest.raises(ValueError, match="unknown element symbol 'Xx'"):
        jaxatom.Potential.create(tiny_schnet(), elements=["H", "Xx"])
    with pytest.raises(ValueError, match="unknown activation 'swish2'"):
        jaxatom.Potential.create(tiny_schnet(activation="swish2"), elements=[1])
    with pytest.raises(ValueError, match="unknown radial basis"):
        jaxatom.Potential.create(tiny_schnet(radial_basis="chebyshev"), elements=[1])
    with pytest.raises(ValueError, match="unknown aggregation"):
        jaxatom.Potential.create(tiny_schnet(), elements=[1], head=Atomwise(aggregation="max"))


def test_model_files_get_default_permissions_and_a_save_killed_half_way_is_cleaned_up(tmp_path):
    potential = jaxatom.Potential.create(tiny_schnet(), elements=ELEMENTS, seed=0)
    potential.save(tmp_path / "model")
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o777 & ~_umask()  # not mkdtemp's 0o700
    # killed after moving the old model aside, before moving the new one in
    (tmp_path / ".model.old-x").mkdir()
    os.replace(tmp_path / "model", tmp_path / ".model.old-x" / "model")
    (tmp_path / ".model.partial-y").mkdir()
    jaxatom.Potential.create(tiny_schnet(), elements=ELEMENTS, seed=1).save(tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.old-x", ".model.partial-y", "other"]
    potential.save(tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "other"]


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@pytest.mark.parametrize("name", ["schnet", "painn"])
def test_model_files_of_format_1_load_and_predict_the_same_numbers(name):
    """Model files written by jaxatom 0.1 (format 1, one energy head) load as energy models with the same outputs."""
    import ase.io

    fixture = Path(__file__).parent / "data" / "model_v1"
    expected = json.loads((fixture / "predictions.json").read_text())["predictions"][name]
    structures = ase.io.read(fixture / "structures.xyz", ":")[: len(expected)]
    potential = load_model(fixture / name)
    assert json.loads((fixture / name / "config.json").read_text())["format_version"] == 1
    assert potential.outputs == ("energy", "energies", "forces", "stress")
    for result, reference in zip(potential.predict(structures), expected, strict=True):
        assert result.keys() == reference.keys()
        for key, value in reference.items():
            np.testing.assert_allclose(result[key], value, rtol=1e-6, atol=1e-6)
