"""Data sets: formats round-trip with units, splits reproduce and validate, statistics, batching."""

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db import connect
from ase.io import write

from jaxatom import data
from jaxatom.graph import PADDING_DISTANCE
from jaxatom.units import UnitError, kcal_mol

from .conftest import triclinic_crystal

RNG = np.random.default_rng(0)


def _molecules(n: int = 6, seed: int = 0) -> list[Atoms]:
    """Molecules of different sizes and compositions with energies (eV) and forces (eV/Å), the same for a seed."""
    rng = np.random.default_rng(seed)
    formulas = ["H2O", "CH4", "CO2", "C2H6O", "CH2O", "H2"]
    structures = []
    for k in range(n):
        atoms = Atoms(formulas[k % len(formulas)])
        atoms.positions = rng.normal(scale=1.2, size=(len(atoms), 3)) + np.arange(len(atoms))[:, None] * 1.1
        forces = rng.normal(size=(len(atoms), 3))
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal(-100.0, 5.0)), forces=forces)
        structures.append(atoms)
    crystal = triclinic_crystal(seed=3)
    crystal.calc = SinglePointCalculator(crystal, energy=-42.0, forces=rng.normal(size=(len(crystal), 3)))
    return structures + [crystal]


@pytest.fixture(scope="module")
def dataset() -> data.Dataset:
    return data.Dataset.from_atoms(_molecules())


def _assert_same(a: data.Dataset, b: data.Dataset, atol=1e-12):
    np.testing.assert_array_equal(a.numbers, b.numbers)
    np.testing.assert_array_equal(a.n_atoms, b.n_atoms)
    np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=atol)
    np.testing.assert_allclose(a.cell, b.cell, atol=atol)
    np.testing.assert_array_equal(a.pbc, b.pbc)
    assert set(a.properties) == set(b.properties)
    for name in a.properties:
        np.testing.assert_allclose(a.properties[name], b.properties[name], rtol=1e-12, atol=atol)


def test_dataset_holds_ragged_structures(dataset):
    assert len(dataset) == 7
    assert dataset.elements == (1, 6, 8)
    atoms = dataset.to_atoms(3)
    assert atoms.get_chemical_formula() == "C2H6O"
    np.testing.assert_allclose(atoms.get_forces(), dataset.properties["forces"][dataset.atoms_of(3)])
    sub = dataset.subset([6, 0])
    assert sub.n_atoms.tolist() == [6, 3] and sub.pbc[0].all()
    assert sub.properties["energy"][0] == -42.0


@pytest.mark.parametrize("fmt", ["hdf5", "ase_db", "extxyz"])
def test_formats_round_trip(tmp_path, dataset, fmt):
    if fmt == "hdf5":
        data.write_hdf5(dataset, tmp_path / "d.h5")
        back = data.read_dataset(tmp_path / "d.h5")
    elif fmt == "ase_db":
        data.write_ase_db(dataset, tmp_path / "d.db")
        back = data.read_dataset(tmp_path / "d.db")
    else:
        write(tmp_path / "d.xyz", [dataset.to_atoms(i) for i in range(len(dataset))], format="extxyz")
        back = data.read_dataset(tmp_path / "d.xyz")
    _assert_same(dataset, back, atol=1e-7 if fmt == "extxyz" else 1e-12)  # extxyz stores 8 decimals
    assert not list(tmp_path.glob(".*partial*"))


def test_schnetpack_ase_db_layout_with_units_and_atomrefs(tmp_path):
    """A database as SchNetPack's ASEAtomsData writes it: kcal/mol and Bohr, values in row.data, atomrefs."""
    path = tmp_path / "spk.db"
    atomrefs = np.zeros(100)
    atomrefs[[1, 6, 8]] = [-0.5, -37.8, -75.0]
    with connect(path) as db:
        for atoms in _molecules(3):
            scaled = Atoms(atoms.numbers, positions=atoms.positions / 0.52917721067)
            db.write(scaled, data={"energy": np.array([atoms.get_potential_energy()]), "forces": atoms.get_forces()})
        db.metadata = {
            "_property_unit_dict": {"energy": "kcal/mol", "forces": "kcal/mol/Bohr"},
            "_distance_unit": "Bohr",
            "atomrefs": {"energy": atomrefs.tolist()},
        }
    loaded = data.read_ase_db(path)
    reference = _molecules(3)
    for i, atoms in enumerate(reference):
        np.testing.assert_allclose(loaded.positions[loaded.atoms_of(i)], atoms.positions, rtol=1e-6)
        assert loaded.properties["energy"][i] == pytest.approx(atoms.get_potential_energy() * kcal_mol)
    assert loaded.source_units == {"energy": "kcal/mol", "forces": "kcal/mol/Bohr", "length": "Bohr"}
    # SchNetPack's atomref tables are converted like their property: {Z: eV}, as QM9's
    assert loaded.metadata["atomrefs"][8] == pytest.approx(-75.0 * kcal_mol)
    assert loaded.metadata["atomrefs_all"]["energy"] == loaded.metadata["atomrefs"]


def test_md17_and_rmd17_npz_are_read_in_kcal_per_mol(tmp_path):
    z = np.array([6, 1, 8])
    positions = RNG.normal(size=(4, 3, 3))
    energy, forces = RNG.normal(-1000, 1, size=(4, 1)), RNG.normal(size=(4, 3, 3))
    np.savez(tmp_path / "md17_x.npz", z=z, R=positions, E=energy, F=forces, name="x", theory="PBE+vdW-TS")
    md17 = data.read_dataset(tmp_path / "md17_x.npz")
    np.testing.assert_allclose(md17.properties["energy"], energy[:, 0] * kcal_mol)
    np.testing.assert_allclose(md17.properties["forces"], forces.reshape(-1, 3) * kcal_mol)
    np.savez(tmp_path / "rmd17_x.npz", nuclear_charges=z, coords=positions, energies=energy[:, 0], forces=forces,
             old_indices=np.arange(4), old_energies=energy[:, 0], old_forces=forces)  # fmt: skip
    rmd17 = data.read_dataset(tmp_path / "rmd17_x.npz")
    _assert_same(md17, rmd17)


def test_builtin_data_sets_load_in_ev():
    aspirin = data.load_builtin("aspirin")
    assert len(aspirin) == 3000 and aspirin.n_atoms[0] == 21
    assert aspirin.metadata["method"] == "GFN2-xTB"
    assert -1100 < aspirin.properties["energy"].mean() < -1050
    with pytest.raises(ValueError, match="no built-in data set 'benzene'; available: aspirin, ethanol"):
        data.load_builtin("benzene")


def test_bad_input_is_refused(tmp_path, dataset):
    with pytest.raises(KeyError, match="lacks dipole_moment"):
        dataset.require("energy", "dipole_moment")
    with pytest.raises(UnitError, match="does not measure what 'forces' is"):
        data.Dataset.from_arrays(
            np.array([1, 1]), [np.zeros((2, 3))], {"forces": [np.zeros((2, 3))]}, units={"forces": "eV"}
        )
    with pytest.raises(UnitError, match="no unit given for energy"):
        data.Dataset.from_arrays(np.array([1, 1]), [np.zeros((2, 3))], {"energy": [1.0]}, units={})
    with pytest.raises(ValueError, match="NaN"):
        data.Dataset.from_arrays(np.array([1]), [np.zeros((1, 3))], {"energy": [np.nan]}, units={"energy": "eV"})
    with pytest.raises(FileNotFoundError, match="no data file"):
        data.read_dataset(tmp_path / "missing.db")
    with pytest.raises(ValueError, match="unknown data file type"):
        data.read_dataset(tmp_path / "x.csv")
    np.savez(tmp_path / "bad.npz", z=[1], R=np.zeros((1, 1, 3)))
    with pytest.raises(KeyError, match="lacks E, F"):
        data.read_md17_npz(tmp_path / "bad.npz")
    with pytest.raises(KeyError, match="has no property 'energy'"):
        data.Dataset.from_atoms([Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]])])


def test_splits_reproduce_and_split_files_are_reused_and_validated(tmp_path):
    a = data.random_split(100, 60, 0.2, seed=3)
    b = data.random_split(100, 60, 0.2, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert [len(a[k]) for k in ("train_idx", "val_idx", "test_idx")] == [60, 20, 20]
    assert len(np.unique(np.concatenate(list(a.values())))) == 100
    assert not np.array_equal(a["train_idx"], data.random_split(100, 60, 0.2, seed=4)["train_idx"])

    path = tmp_path / "split.npz"
    created = data.load_or_create_split(path, 100, 60, 20, seed=1)
    reused = data.load_or_create_split(path, 100, 60, 20, seed=99)  # the file wins over the seed
    assert all(np.array_equal(created[k], reused[k]) for k in created)
    with pytest.raises(ValueError, match="has sizes .* but .* were asked for"):
        data.load_or_create_split(path, 100, 50, 20)
    with pytest.raises(ValueError, match="outside the data set"):
        data.load_or_create_split(path, 70, 60, 5, test=5)
    np.savez(tmp_path / "overlap.npz", train_idx=[0, 1], val_idx=[1], test_idx=[2])
    with pytest.raises(ValueError, match="overlap"):
        data.load_or_create_split(tmp_path / "overlap.npz", 4, 2, 1, 1)
    with pytest.raises(ValueError, match="only 10"):
        data.random_split(10, 8, 3)
    with pytest.raises(ValueError, match="fraction must lie"):
        data.random_split(10, 1.5, 0)
    rounded = data.random_split(55, 0.9, 0.1, 0)  # 49.5 and 5.5 both round up: the validation share gives way
    assert [len(rounded[k]) for k in ("train_idx", "val_idx", "test_idx")] == [50, 5, 0]


def test_statistics_match_a_direct_computation(dataset):
    train = np.array([0, 1, 2, 3, 4, 6])
    energies = dataset.properties["energy"][train]
    assert data.mean_energy_per_atom(dataset, train) == pytest.approx(np.mean(energies / dataset.n_atoms[train]))
    # energies that are exactly a sum of per-element references are fitted exactly
    references = {1: -13.6, 6: -1029.0, 8: -2040.5}
    exact = dataset.subset(np.arange(len(dataset)))
    exact.properties["energy"][:] = [
        sum(references[int(z)] for z in exact.numbers[exact.atoms_of(i)]) for i in range(len(exact))
    ]
    fitted = data.fit_atomrefs(exact, train)
    assert fitted == pytest.approx(references, abs=1e-8)
    assert data.mean_energy_per_atom(exact, train, atomrefs=fitted) == pytest.approx(0.0, abs=1e-9)


def test_loader_batches_follow_the_padding_contract(dataset):
    loader = data.GraphLoader(dataset, cutoff=3.0, batch_size=3, seed=5)
    assert len(loader) == 3
    seen = []
    for graph, labels in loader.host_batches(epoch=0):
        assert graph.cell.shape[0] == 4 and labels["energy"].shape == (4,)
        assert labels["forces"].shape == graph.positions.shape
        real = graph.n_node > 0
        seen.extend(labels["energy"][real].tolist())
        assert np.all(labels["forces"][~np.asarray(graph.node_mask)] == 0)
        pad = ~np.asarray(graph.edge_mask)
        assert np.all(np.linalg.norm(np.asarray(graph.edge_vectors())[pad], axis=1) >= PADDING_DISTANCE)
    np.testing.assert_allclose(sorted(seen), sorted(dataset.properties["energy"].tolist()), rtol=1e-6)
    # offsets are removed in float64 before the float32 cast
    offsets = np.zeros(100)
    offsets[[1, 6, 8]] = [-13.6, -1029.0, -2040.5]
    shifted = data.GraphLoader(dataset, 3.0, 3, shuffle=False, atom_offsets=offsets)
    _, labels = shifted.batch([0, 6])
    for k, i in enumerate([0, 6]):
        expected = dataset.properties["energy"][i] - offsets[dataset.numbers[dataset.atoms_of(i)]].sum()
        assert labels["energy"][k] == pytest.approx(expected, abs=1e-5 * abs(expected))
    assert np.array_equal(loader.order(2), data.GraphLoader(dataset, 3.0, 3, seed=5).order(2))
    assert not np.array_equal(loader.order(1), loader.order(2))
    on_device = list(loader(epoch=0))
    host = list(loader.host_batches(epoch=0))
    assert len(on_device) == len(host)
    np.testing.assert_array_equal(np.asarray(on_device[1][1]["forces"]), host[1][1]["forces"])
    assert len(data.GraphLoader(dataset, 3.0, 3, drop_last=True)) == 2
    with pytest.raises(KeyError, match="lacks stress"):
        data.GraphLoader(dataset, 3.0, 3, properties=("energy", "stress"))
