"""The GFN2-xTB data sets shipped in jaxatom/data/builtin (made by experiments/make_xtb_dataset.py)."""

import hashlib
import importlib.util
from pathlib import Path

import h5py
import numpy as np
import pytest

BUILTIN = Path(__file__).resolve().parents[1] / "jaxatom" / "data" / "builtin"
SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "make_xtb_dataset.py"


@pytest.mark.parametrize(("name", "n_atoms"), [("aspirin", 21), ("ethanol", 9)])
def test_shipped_data_sets_are_complete_and_carry_their_provenance(name, n_atoms):
    with h5py.File(BUILTIN / f"{name}_gfn2.h5", "r") as data:
        frames = int(data.attrs["frames"])
        assert frames >= 2000
        assert data["numbers"].shape == (n_atoms,)
        assert data["positions"].shape == data["forces"].shape == (frames, n_atoms, 3)
        assert data["energy"].shape == (frames,)
        assert {k: data[k].attrs["unit"] for k in ("positions", "forces", "energy")} == {
            "positions": "Ang", "forces": "eV/Ang", "energy": "eV"
        }  # fmt: skip
        assert data.attrs["method"] == "GFN2-xTB" and data.attrs["temperature_K"] == 500.0
        for key in ("timestep_fs", "seed", "stride_steps", "code", "command"):
            assert key in data.attrs
        energy, forces = data["energy"][:], data["forces"][:]
    assert np.all(np.isfinite(energy)) and np.all(np.isfinite(forces))
    assert np.ptp(energy) > 0.1  # thermal fluctuations at 500 K, not a frozen geometry
    np.testing.assert_allclose(forces.sum(axis=1), 0.0, atol=1e-3)  # no net force on a free molecule


# -- dipole moments, charges and polarizabilities (experiments/make_xtb_dataset.py --relabel) -----------------------

#: sha256 of the arrays as the MD wrote them, before the labels were added: the relabelling must not touch them.
ARRAY_SHA256 = {
    "aspirin": {
        "numbers": "714d9aafaca795917558d9222104210e1f8a883b982196e4e509876757d14ffe",
        "positions": "8f74742c30be51e948ee95b9f41c22110e869f3cb072fbdb94f71cda1c90550c",
        "energy": "44c10ce68560eb59eac194a0fa20beddda9cc791724662d29f24faf4e6a6a519",
        "forces": "a902ab8f186e952eb332e98c1586d1e82aa167ff0714ebd36be18093d8fb0b3c",
    },
    "ethanol": {
        "numbers": "28606ffbbf640751a8c7e8db2bacde9ea729110e2201e7c00d694e7590196e1c",
        "positions": "4f4dca597bded8d4e4e9fd59d40c892e2a6f8026fa8dbdeff31a08fe3a2cddc8",
        "energy": "0e91e2679849e848b7405b3eb16c425b6b40da6573acb305a0df33e00c2fc18a",
        "forces": "9a7a60ee9dbf1f462d01cef6b27be7a237ce040bd318ab3e3a10dfe9facf8892",
    },
}
#: a generous band around each molecule's GFN2-xTB isotropic polarizability (Å³; GFN2's minimal basis gives about
#: half the experimental 5.1 Å³ of ethanol and two thirds of aspirin's ~17 Å³)
ISOTROPIC_RANGE = {"aspirin": (8.0, 16.0), "ethanol": (1.5, 3.5)}
LABEL_UNITS = {"dipole_moment": "e*Ang", "charges": "e", "polarizability": "Ang^3"}


@pytest.mark.parametrize("name", ["aspirin", "ethanol"])
def test_relabelling_left_positions_energies_and_forces_untouched(name):
    with h5py.File(BUILTIN / f"{name}_gfn2.h5", "r") as data:
        digests = {key: hashlib.sha256(data[key][:].tobytes()).hexdigest() for key in ARRAY_SHA256[name]}
        assert data.attrs["command"].endswith(f"--molecule {name} --frames 3000")  # the MD's provenance is kept
    assert digests == ARRAY_SHA256[name]


@pytest.mark.parametrize(("name", "n_atoms"), [("aspirin", 21), ("ethanol", 9)])
def test_shipped_labels_have_their_shapes_units_and_provenance(name, n_atoms):
    with h5py.File(BUILTIN / f"{name}_gfn2.h5", "r") as data:
        frames = len(data["positions"])
        assert data["dipole_moment"].shape == (frames, 3)
        assert data["charges"].shape == (frames, n_atoms)
        assert data["polarizability"].shape == (frames, 3, 3)
        assert {key: data[key].attrs["unit"] for key in LABEL_UNITS} == LABEL_UNITS
        assert 1e-4 <= data.attrs["field_step_au"] <= 5e-4
        assert data.attrs["labels_code"].startswith("tblite ")
        assert "--relabel" in data.attrs["labels_command"] and data.attrs["labels_created"]
        assert data.attrs["polarizability_max_asymmetry_Ang3"] < 1e-3
        assert data.attrs["labels_max_energy_deviation_eV"] < 1e-5  # a fresh single point reproduces the MD's energy


@pytest.mark.parametrize("name", ["aspirin", "ethanol"])
def test_shipped_charges_are_neutral_and_polarizabilities_symmetric_positive_and_plausible(name):
    with h5py.File(BUILTIN / f"{name}_gfn2.h5", "r") as data:
        charges, dipole, alpha = data["charges"][:], data["dipole_moment"][:], data["polarizability"][:]
    np.testing.assert_allclose(charges.sum(axis=1, dtype=np.float64), 0.0, atol=1e-5)  # neutral, to float32 precision
    assert np.all(np.abs(charges) < 1.0) and charges.std() > 0.05
    np.testing.assert_array_equal(alpha, np.swapaxes(alpha, 1, 2))
    assert np.linalg.eigvalsh(alpha).min() > 0  # positive definite
    isotropic = np.trace(alpha, axis1=1, axis2=2) / 3
    low, high = ISOTROPIC_RANGE[name]
    assert low < isotropic.min() and isotropic.max() < high
    assert np.ptp(isotropic) > 0.01  # it follows the geometry
    magnitude = np.linalg.norm(dipole, axis=1)
    assert 0.05 < magnitude.mean() < 2.0 and np.ptp(magnitude) > 0.05  # e·Å (1 e·Å = 4.8 D)


@pytest.mark.parametrize(("name", "n_atoms"), [("aspirin", 21), ("ethanol", 9)])
def test_load_builtin_returns_dipoles_charges_and_polarizabilities(name, n_atoms):
    from jaxatom.data import load_builtin

    dataset = load_builtin(name)
    structures = len(dataset)
    assert dataset.properties["dipole_moment"].shape == (structures, 3)
    assert dataset.properties["charges"].shape == (structures * n_atoms,)  # per atom
    assert dataset.properties["polarizability"].shape == (structures, 3, 3)
    assert {key: dataset.source_units[key] for key in LABEL_UNITS} == LABEL_UNITS
    assert dataset.metadata["field_step_au"] > 0
    with h5py.File(BUILTIN / f"{name}_gfn2.h5", "r") as data:
        np.testing.assert_array_equal(dataset.properties["charges"], data["charges"][:].reshape(-1))
        np.testing.assert_array_equal(dataset.properties["polarizability"], data["polarizability"][:])
        np.testing.assert_array_equal(dataset.properties["dipole_moment"], data["dipole_moment"][:])
    assert "polarizability" in dataset.to_atoms(0).info  # as jaxatom quickstart's MD start does
    subset = dataset.subset([2, 0])
    np.testing.assert_array_equal(
        subset.properties["charges"][:n_atoms], dataset.properties["charges"][2 * n_atoms :][:n_atoms]
    )


def test_a_trajectory_file_without_the_labels_still_reads(tmp_path):
    from jaxatom.data.formats import read_hdf5

    with h5py.File(BUILTIN / "ethanol_gfn2.h5", "r") as data, h5py.File(tmp_path / "old.h5", "w") as old:
        for key in ("numbers", "positions", "forces", "energy"):
            old[key] = data[key][:5] if key != "numbers" else data[key][:]
            old[key].attrs.update(data[key].attrs)
    dataset = read_hdf5(tmp_path / "old.h5")
    assert len(dataset) == 5 and sorted(dataset.properties) == ["energy", "forces"]


def test_labels_of_ethanol_frame_0_are_reproduced_by_the_script():
    pytest.importorskip("tblite")
    spec = importlib.util.spec_from_file_location("make_xtb_dataset", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with h5py.File(BUILTIN / "ethanol_gfn2.h5", "r") as data:
        numbers, positions = data["numbers"][:], data["positions"][0].astype(np.float64)
        stored = {key: data[key][0] for key in LABEL_UNITS} | {"energy": data["energy"][0]}
        field_step, accuracy = float(data.attrs["field_step_au"]), float(data.attrs["scf_accuracy"])
    labels = script.label_frame(numbers, positions, field_step, accuracy)
    assert abs(labels["energy"] - stored["energy"]) < 1e-5
    np.testing.assert_allclose(labels["dipole_moment"], stored["dipole_moment"], atol=1e-6)
    np.testing.assert_allclose(labels["charges"], stored["charges"], atol=1e-6)
    np.testing.assert_allclose(labels["polarizability"], stored["polarizability"], rtol=1e-5, atol=1e-5)
