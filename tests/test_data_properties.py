"""Data sets carry properties of any shape and kind, with units, through every reader and writer, the loader and the
statistics."""

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db import connect

from jaxatom import data
from jaxatom.errors import ConfigError, DataError
from jaxatom.units import Hartree, UnitError, kcal_mol

from .conftest import triclinic_crystal

FORMULAS = ["H2O", "CH4", "C2H6O", "Ar", "CH2O"]
UNITS = {
    "energy": "eV",
    "forces": "eV/Ang",
    "dipole_moment": "e*Ang",
    "charges": "e",
    "polarizability": "Ang^3",
    "total_charge": "e",
    "hirshfeld_volumes": "Ang^3",
    "spatial_extent": "Ang^2",
}


def _structures() -> list[Atoms]:
    """Molecules of different sizes (one single atom) and a periodic crystal, positions in Å."""
    rng = np.random.default_rng(7)
    structures = []
    for k, formula in enumerate(FORMULAS):
        atoms = Atoms(formula)
        atoms.positions = rng.normal(scale=1.0, size=(len(atoms), 3)) + np.arange(len(atoms))[:, None] * 1.2 + k
        structures.append(atoms)
    return structures + [triclinic_crystal(seed=2)]


def _properties(structures: list[Atoms], seed: int = 0) -> dict[str, list]:
    """Every kind of property: known per structure and per atom of several shapes, unknown ones of both kinds."""
    rng = np.random.default_rng(seed)
    per_structure = {
        "energy": lambda n: rng.normal(-1000.0, 50.0),
        "dipole_moment": lambda n: rng.normal(size=3),
        "polarizability": lambda n: rng.normal(size=(3, 3)) + 10 * np.eye(3),
        "total_charge": lambda n: float(rng.integers(-1, 2)),
        "spatial_extent": lambda n: rng.uniform(10.0, 100.0),
    }
    per_atom = {
        "forces": lambda n: rng.normal(size=(n, 3)),
        "charges": lambda n: rng.normal(scale=0.3, size=n),
        "hirshfeld_volumes": lambda n: rng.uniform(5.0, 30.0, size=(n, 2)),
    }
    makers = {**per_structure, **per_atom}
    return {name: [make(len(atoms)) for atoms in structures] for name, make in makers.items()}


@pytest.fixture(scope="module")
def dataset() -> data.Dataset:
    structures = _structures()
    return data.Dataset.from_arrays(
        numbers=[a.numbers for a in structures],
        positions=[a.positions for a in structures],
        properties=_properties(structures),
        units=UNITS,
        cell=np.array([a.cell[:] for a in structures]),
        pbc=np.array([a.pbc for a in structures]),
        metadata={"atomrefs": {1: -13.6, 6: -1029.0}},
        per_atom=["hirshfeld_volumes"],
    )


def _assert_same(a: data.Dataset, b: data.Dataset, atol: float = 1e-12) -> None:
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_array_equal(a.n_atoms, b.n_atoms)
    np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=atol)
    np.testing.assert_allclose(a.cell, b.cell, rtol=0, atol=atol)
    np.testing.assert_array_equal(a.pbc, b.pbc)
    assert set(a.properties) == set(b.properties)
    assert a.per_atom == b.per_atom
    assert dict(a.units) == dict(b.units)
    for name in a.properties:
        assert a.properties[name].shape == b.properties[name].shape, name
        np.testing.assert_allclose(a.properties[name], b.properties[name], rtol=1e-12, atol=atol, err_msg=name)


def test_the_data_set_declares_kind_and_unit_of_every_property(dataset):
    assert dataset.per_atom == {"forces", "charges", "hirshfeld_volumes"}
    assert dataset.is_per_atom("hirshfeld_volumes") and not dataset.is_per_atom("spatial_extent")
    assert dict(dataset.units) == UNITS
    n_atoms, n_structures = int(dataset.n_atoms.sum()), len(dataset)
    assert dataset.properties["hirshfeld_volumes"].shape == (n_atoms, 2)
    assert dataset.properties["polarizability"].shape == (n_structures, 3, 3)
    sub = dataset.subset([5, 3])
    assert sub.properties["hirshfeld_volumes"].shape == (7, 2) and sub.per_atom == dataset.per_atom
    np.testing.assert_array_equal(sub.properties["spatial_extent"], dataset.properties["spatial_extent"][[5, 3]])
    # an unknown property keeps its unit, converted to the base unit of its dimension where jaxatom has one
    homo = data.Dataset.from_arrays(np.array([1, 1]), np.zeros((2, 2, 3)) + [[0], [0.7]], {"homo": [-0.5, -0.4]},
                                    units={"homo": "Ha"})  # fmt: skip
    assert homo.units["homo"] == "eV" and homo.properties["homo"][0] == pytest.approx(-0.5 * Hartree)
    assert not homo.is_per_atom("homo") and homo.source_units["homo"] == "Ha"
    # the known per-atom properties are derived from jaxatom.properties
    assert {"forces", "charges", "energies", "magnetic_moments"} <= data.PER_ATOM_PROPERTIES
    assert data.PROPERTY_UNITS["polarizability"] == "Ang^3"


def test_atoms_carry_each_kind_where_ase_expects_it(dataset):
    atoms = dataset.to_atoms(2)
    np.testing.assert_allclose(atoms.get_dipole_moment(), dataset.properties["dipole_moment"][2])
    np.testing.assert_allclose(atoms.get_charges(), dataset.value("charges", 2))
    np.testing.assert_allclose(atoms.arrays["hirshfeld_volumes"], dataset.value("hirshfeld_volumes", 2))
    np.testing.assert_allclose(atoms.info["polarizability"], dataset.properties["polarizability"][2])
    assert atoms.info["charge"] == dataset.properties["total_charge"][2]
    assert atoms.info["spatial_extent"] == dataset.properties["spatial_extent"][2]
    back = data.Dataset.from_atoms(
        [dataset.to_atoms(i) for i in range(len(dataset))], properties=list(UNITS), units=UNITS
    )
    _assert_same(dataset, back)


@pytest.mark.parametrize("fmt", ["db", "xyz", "h5", "npz"])
def test_every_format_round_trips_values_kinds_and_units(tmp_path, dataset, fmt):
    path = tmp_path / f"d.{fmt}"
    writer = {"db": data.write_ase_db, "xyz": data.write_extxyz, "h5": data.write_hdf5, "npz": data.write_npz}[fmt]
    writer(dataset, path)
    back = data.read_dataset(path)
    _assert_same(dataset, back, atol=1e-8 if fmt == "xyz" else 1e-12)  # extended XYZ columns keep 8 decimals
    assert not list(tmp_path.glob(".*partial*"))
    if fmt in ("db", "npz"):
        assert back.metadata["atomrefs"] == dataset.metadata["atomrefs"]


def test_an_ase_db_without_jaxatom_metadata_infers_the_kind(tmp_path, dataset):
    path = tmp_path / "d.db"
    data.write_ase_db(dataset, path)
    with connect(path) as db:
        meta = db.metadata
        assert meta["_jaxatom_per_atom"] == ["charges", "forces", "hirshfeld_volumes"]
        assert meta["_property_unit_dict"]["spatial_extent"] == "Ang^2"
        assert db.get(1).data["energy"].shape == (1,) and db.get(1).data["polarizability"].shape == (1, 3, 3)
        del meta["_jaxatom_per_atom"]
        db.metadata = meta
    _assert_same(dataset, data.read_ase_db(path))
    single = tmp_path / "argon.db"
    data.write_ase_db(dataset.subset([3]), single)  # one atom: only the declaration tells the kinds apart
    assert data.read_ase_db(single).per_atom == dataset.per_atom


def test_schnetpack_reads_the_ase_db_jaxatom_writes(tmp_path, dataset):
    spk = pytest.importorskip("schnetpack")
    path = tmp_path / "d.db"
    data.write_ase_db(dataset, path)
    spk_data = spk.data.ASEAtomsData(str(path))
    assert len(spk_data) == len(dataset) and sorted(spk_data.available_properties) == sorted(UNITS)
    assert spk_data.units == UNITS
    for index in (0, 3, 5):
        sample = spk_data[index]
        np.testing.assert_allclose(sample["_positions"].numpy(), dataset.positions[dataset.atoms_of(index)])
        for name in UNITS:
            expected = dataset.value(name, index)
            expected = expected if dataset.is_per_atom(name) else expected[None]  # SchNetPack's leading axis
            np.testing.assert_allclose(sample[name].numpy(), expected, err_msg=name)
    assert spk_data.atomrefs["energy"][6].item() == pytest.approx(-1029.0)
    converted = spk.data.ASEAtomsData(str(path), property_units={"energy": "kcal/mol"})
    assert converted[0]["energy"].item() == pytest.approx(dataset.properties["energy"][0] / kcal_mol)


def test_the_extxyz_reader_maps_info_and_arrays_to_kinds(tmp_path):
    structures = _structures()[:3]
    for k, atoms in enumerate(structures):
        atoms.info["gap"] = 0.1 * k
        atoms.arrays["spins"] = np.full(len(atoms), 0.5)
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0 * k, forces=np.ones((len(atoms), 3)), dipole=[0, 0, k])
    path = tmp_path / "frames.xyz"
    from ase.io import write

    write(path, structures, format="extxyz")
    default = data.read_extxyz(path)
    assert sorted(default.properties) == ["energy", "forces"]
    chosen = data.read_extxyz(path, properties=["gap", "spins", "dipole_moment"], units={"gap": "Ha"})
    assert chosen.per_atom == {"spins"} and chosen.units == {"gap": "eV", "spins": "1", "dipole_moment": "e*Ang"}
    np.testing.assert_allclose(chosen.properties["gap"], [0.0, 0.1 * Hartree, 0.2 * Hartree])
    np.testing.assert_allclose(chosen.properties["dipole_moment"][:, 2], [0, 1, 2])


# -- the loader ------------------------------------------------------------------------------------------------------


def _atoms_of(dataset: data.Dataset, indices) -> np.ndarray:
    return np.concatenate([np.arange(dataset.atom_offsets[i], dataset.atom_offsets[i + 1]) for i in indices])


def test_loader_labels_follow_the_declaration_with_zero_padding(dataset):
    loader = data.GraphLoader(dataset, 3.0, batch_size=4, properties=list(UNITS), shuffle=False)
    indices = [4, 0, 5]
    graph, labels = loader.batch(indices)
    atoms, n_real = _atoms_of(dataset, indices), int(dataset.n_atoms[indices].sum())
    for name, values in labels.items():
        if dataset.is_per_atom(name):
            assert values.shape == (graph.positions.shape[0], *dataset.properties[name].shape[1:]), name
            expected, real = dataset.properties[name][atoms], n_real
        else:
            assert values.shape == (5, *dataset.properties[name].shape[1:]), name
            expected, real = dataset.properties[name][indices], len(indices)
        np.testing.assert_allclose(values[:real], expected, rtol=1e-6, atol=1e-6, err_msg=name)
        assert np.all(values[real:] == 0), name
    np.testing.assert_allclose(graph.total_charge, [*dataset.properties["total_charge"][indices], 0, 0])


def test_loader_removes_offsets_in_float64(dataset):
    rng = np.random.default_rng(1)
    tables = {name: np.zeros(100) for name in ("energy", "charges", "spatial_extent")}
    for table in tables.values():
        table[[1, 6, 8, 18]] = rng.normal(size=4) * [300.0, 1000.0, 2000.0, 500.0]
    loader = data.GraphLoader(dataset, 3.0, batch_size=6, properties=list(tables), shuffle=False, offsets=tables,
                              intensive=["spatial_extent"])  # fmt: skip
    indices = [1, 2, 3, 5]
    _, labels = loader.batch(indices)
    for k, i in enumerate(indices):
        z = dataset.numbers[dataset.atoms_of(i)]
        energy = dataset.properties["energy"][i] - sum(tables["energy"][zi] for zi in z)
        extent = dataset.properties["spatial_extent"][i] - sum(tables["spatial_extent"][zi] for zi in z) / len(z)
        assert labels["energy"][k] == pytest.approx(energy, rel=1e-6)
        assert labels["spatial_extent"][k] == pytest.approx(extent, rel=1e-6)
    charges = (
        dataset.properties["charges"][_atoms_of(dataset, indices)]
        - tables["charges"][dataset.numbers[_atoms_of(dataset, indices)]]
    )
    np.testing.assert_allclose(labels["charges"][: len(charges)], charges, rtol=1e-6)
    shorthand = data.GraphLoader(dataset, 3.0, 6, shuffle=False, atom_offsets=tables["energy"])
    np.testing.assert_array_equal(shorthand.batch(indices)[1]["energy"], labels["energy"])
    with pytest.raises(ConfigError, match="given twice"):
        data.GraphLoader(dataset, 3.0, 6, atom_offsets=tables["energy"], offsets={"energy": tables["energy"]})
    with pytest.raises(ConfigError, match="intensive names forces"):
        data.GraphLoader(dataset, 3.0, 6, intensive=["forces"])
    with pytest.raises(ConfigError, match=r"offsets\['energy'\] must be a table \[100\]"):
        data.GraphLoader(dataset, 3.0, 6, offsets={"energy": np.zeros(10)})


# -- statistics ------------------------------------------------------------------------------------------------------


def test_standardisation_matches_numpy(dataset):
    train = np.array([0, 1, 2, 4, 5])
    n = dataset.n_atoms[train]
    energy = dataset.properties["energy"][train]
    plain = data.fit_standardisation(dataset, train, "energy", extensive=True)
    assert plain["atomrefs"] == {}
    assert (plain["shift"], plain["scale"]) == pytest.approx((np.mean(energy / n), np.std(energy / n)))
    elements = sorted(set(dataset.numbers[_atoms_of(dataset, train)].tolist()))
    counts = np.array([[np.sum(dataset.numbers[dataset.atoms_of(i)] == z) for z in elements] for i in train])
    refs, *_ = np.linalg.lstsq(counts, energy, rcond=None)
    fitted = data.fit_standardisation(dataset, train, "energy", extensive=True, atomrefs=True)
    assert fitted["atomrefs"] == pytest.approx(dict(zip(elements, refs, strict=True)))
    residual = (energy - counts @ refs) / n
    assert fitted["shift"] == pytest.approx(np.mean(residual), abs=1e-9)
    assert fitted["scale"] == pytest.approx(np.std(residual), abs=1e-9)
    extent = dataset.properties["spatial_extent"][train]
    given = {1: 2.0, 6: 5.0, 8: -3.0}
    intensive = data.fit_standardisation(dataset, train, "spatial_extent", extensive=False, atomrefs=given)
    residual = extent - np.array([sum(given.get(int(z), 0.0) for z in dataset.numbers[dataset.atoms_of(i)])
                                  for i in train]) / n  # fmt: skip
    assert intensive["atomrefs"] == given
    assert (intensive["shift"], intensive["scale"]) == pytest.approx((np.mean(residual), np.std(residual)))
    mean_refs = data.fit_standardisation(dataset, train, "spatial_extent", extensive=False, atomrefs=True)["atomrefs"]
    expected, *_ = np.linalg.lstsq(counts / n[:, None], extent, rcond=None)
    assert mean_refs == pytest.approx(dict(zip(elements, expected, strict=True)))
    with pytest.raises(DataError, match="'forces' is per atom"):
        data.fit_standardisation(dataset, train, "forces", extensive=True)
    with pytest.raises(DataError, match=r"'polarizability' is shaped \[6, 3, 3\]"):
        data.fit_standardisation(dataset, train, "polarizability", extensive=False)


# -- errors ----------------------------------------------------------------------------------------------------------


def test_a_per_atom_property_with_the_wrong_number_of_entries_names_property_and_file(tmp_path, dataset):
    path = tmp_path / "d.h5"
    data.write_hdf5(dataset, path)
    with h5py.File(path, "r+") as out:
        values = out["properties/hirshfeld_volumes"][:-1]
        del out["properties/hirshfeld_volumes"]
        out["properties/hirshfeld_volumes"] = values
        out["properties/hirshfeld_volumes"].attrs.update({"unit": "Ang^3", "per_atom": True})
    with pytest.raises(DataError, match=r"(?s)in .*d\.h5.*'hirshfeld_volumes' does not have one row per atom"):
        data.read_dataset(path)
    n_atoms = int(dataset.n_atoms.sum())
    wrong = {"hirshfeld_volumes": values}
    with pytest.raises(DataError, match=f"'hirshfeld_volumes' has {n_atoms - 1} entries, expected {n_atoms} "):
        data.Dataset(**_fields(dataset), properties=wrong, per_atom=frozenset(wrong))


def _fields(dataset: data.Dataset) -> dict:
    return {key: getattr(dataset, key) for key in ("numbers", "positions", "n_atoms", "cell", "pbc")}


def test_a_known_property_with_the_wrong_shape_names_property_and_file(tmp_path, dataset):
    path = tmp_path / "d.npz"
    data.write_npz(dataset, path)
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["properties/polarizability"] = arrays["properties/polarizability"][:, 0]
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=r"(?s)in .*d\.npz.*'polarizability' must have shape \[structures, 3, 3\]"):
        data.read_dataset(path)


def test_declarations_that_contradict_jaxatom_properties_are_refused(dataset):
    with pytest.raises(DataError, match="'energy' cannot be declared per atom"):
        data.Dataset.from_arrays(np.array([1]), np.zeros((1, 1, 3)), {"energy": [[1.0]]}, {"energy": "eV"},
                                 per_atom=["energy"])  # fmt: skip
    with pytest.raises(DataError, match="per_atom names spins, which the properties lack"):
        data.Dataset.from_arrays(np.array([1]), np.zeros((1, 1, 3)), {}, {}, per_atom=["spins"])
    with pytest.raises(UnitError, match="a Dataset holds it in 'eV'"):
        data.Dataset(**_fields(dataset), properties={"gap": np.zeros(len(dataset))}, units={"gap": "meV"})


def test_derived_properties_are_added_in_their_unit_and_others_dropped():
    from jaxatom.data import load_builtin

    ethanol = load_builtin("ethanol").subset(range(4))
    alpha = np.trace(ethanol.properties["polarizability"], axis1=1, axis2=2) / 3
    derived = ethanol.with_properties({"alpha_iso": alpha, "e_kcal": ethanol.properties["energy"] / kcal_mol},
                                      {"alpha_iso": "Ang^3", "e_kcal": "kcal/mol"})  # fmt: skip
    np.testing.assert_allclose(derived.properties["e_kcal"], ethanol.properties["energy"])  # converted to eV
    assert derived.units["alpha_iso"] == "Ang^3" and not derived.is_per_atom("alpha_iso")
    assert derived.origin is None and ethanol.origin is not None  # the file lacks these values
    kept = derived.select_properties(["energy", "forces", "alpha_iso"])
    assert list(kept.properties) == ["energy", "forces", "alpha_iso"] and kept.is_per_atom("forces")
    with pytest.raises(DataError, match="no property dipole"):
        kept.select_properties(["dipole"])
