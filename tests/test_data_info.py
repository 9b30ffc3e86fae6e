"""``Dataset.info`` (per-structure annotations that are not labels): validation, subsets, concatenation, HDF5 and
npz round trips, older files, and the atomic HDF5 write."""

from __future__ import annotations

import dataclasses
import os

import h5py
import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.emt import EMT

from jaxatom.data.dataset import Dataset, concatenate
from jaxatom.data.formats import read_dataset, write_hdf5, write_npz
from jaxatom.errors import DataError


def labelled(count: int, offset: int = 0) -> Dataset:
    structures = []
    for seed in range(offset, offset + count):
        atoms = molecule("H2O")
        atoms.rattle(0.02, seed=seed)
        atoms.calc = EMT()
        atoms.get_forces()
        structures.append(atoms)
    return Dataset.from_atoms(structures)


def annotated() -> Dataset:
    info = {"method": ["xtb", "emt", "xtb"], "generation": [0, 1, 2], "uncertainty": [0.1, np.nan, 0.3],
            "kept": [True, False, True]}  # fmt: skip
    return dataclasses.replace(labelled(3), info=info)


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_info_round_trips(tmp_path, suffix):
    dataset = annotated()
    path = tmp_path / f"data{suffix}"
    (write_hdf5 if suffix == ".h5" else write_npz)(dataset, path)
    back = read_dataset(path)
    assert set(back.info) == set(dataset.info)
    for name, values in dataset.info.items():
        np.testing.assert_array_equal(back.info[name], values)
        assert back.info[name].dtype.kind == values.dtype.kind
    np.testing.assert_array_equal(back.properties["forces"], dataset.properties["forces"])


def test_info_follows_subsets_concatenation_and_atoms():
    dataset = annotated()
    part = dataset.subset([2, 0])
    np.testing.assert_array_equal(part.info["method"], ["xtb", "xtb"])
    both = concatenate([dataset, labelled(2, offset=10)])
    assert len(both) == 5
    np.testing.assert_array_equal(both.info["generation"], [0, 1, 2, -1, -1])
    np.testing.assert_array_equal(both.info["method"], ["xtb", "emt", "xtb", "", ""])
    assert np.isnan(both.info["uncertainty"][3:]).all()
    np.testing.assert_array_equal(both.properties["energy"][3:], labelled(2, offset=10).properties["energy"])
    atoms = dataset.to_atoms(1)
    assert atoms.info["method"] == "emt" and atoms.info["generation"] == 1


def test_bad_info_and_mismatched_parts_are_refused():
    with pytest.raises(DataError, match="one string, integer, float or bool per structure"):
        dataclasses.replace(labelled(2), info={"method": ["xtb"]})
    with pytest.raises(DataError, match="both a property and an info entry"):
        dataclasses.replace(labelled(2), info={"energy": [1.0, 2.0]})
    other = dataclasses.replace(labelled(1), properties={"energy": np.zeros(1)}, per_atom=frozenset())
    with pytest.raises(DataError, match="same properties"):
        concatenate([labelled(1), other])


def test_files_without_info_still_read(tmp_path):
    path = tmp_path / "old.h5"
    write_hdf5(labelled(2), path)
    with h5py.File(path, "a") as data:  # as written before jaxatom had Dataset.info
        del data["info"]
    assert read_dataset(path).info == {}


def test_an_interrupted_hdf5_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "data.h5"
    write_hdf5(labelled(2), path)
    before = path.read_bytes()

    def killed(*args):
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(OSError, match="killed"):
        write_hdf5(annotated(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["data.h5"]
