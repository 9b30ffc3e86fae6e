"""The materials data set shipped in jaxatom/data/builtin (fcc Cu, ASE's EMT) and EMT's own lattice reference
numbers, both made by experiments/make_materials_dataset.py."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.emt import EMT

from jaxatom.data.builtin import BUILTIN_DATASETS, builtin_reference, load_builtin
from jaxatom.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "make_materials_dataset.py"


@pytest.fixture(scope="module")
def copper():
    return load_builtin("cu")


@pytest.fixture(scope="module")
def reference():
    return builtin_reference("cu")


def _segments(dataset) -> list[dict]:
    return json.loads(dataset.metadata["segments"])


def test_the_copper_set_is_periodic_fcc_cu_with_energy_forces_and_stress_in_ev_and_angstrom(copper):
    assert BUILTIN_DATASETS["cu"] == "cu_emt.h5"
    structures = len(copper)
    assert 1000 <= structures <= 3000
    assert set(np.unique(copper.n_atoms)) == {31, 32}  # vacancies and perfect 2x2x2 cells
    assert np.all(copper.numbers == 29)
    assert copper.pbc.shape == (structures, 3) and copper.pbc.all()
    assert copper.cell.shape == (structures, 3, 3) and np.all(np.linalg.det(copper.cell) > 250)
    assert copper.units == {"energy": "eV", "forces": "eV/Ang", "stress": "eV/Ang^3"}
    assert copper.properties["energy"].shape == (structures,)
    assert copper.properties["forces"].shape == (copper.n_atoms.sum(), 3)
    stress = copper.properties["stress"]
    assert stress.shape == (structures, 3, 3) and stress.dtype == np.float64
    np.testing.assert_array_equal(stress, np.swapaxes(stress, 1, 2))
    for key in ("method", "code", "command", "created", "seed", "temperatures_K", "strains", "a0_Ang"):
        assert key in copper.metadata
    assert copper.metadata["method"].startswith("EMT")
    segments = _segments(copper)
    assert sum(s["count"] for s in segments) == structures
    assert {s["kind"] for s in segments} == {"nvt", "npt", "vacancy"}


@pytest.mark.parametrize("position", ["first", "middle", "vacancy", "last"])
def test_stored_labels_are_emt_recomputed_at_the_stored_positions(copper, position):
    vacancies = np.flatnonzero(copper.n_atoms == 31)
    index = {"first": 0, "middle": len(copper) // 2, "vacancy": vacancies[len(vacancies) // 2], "last": -1}[position]
    index = int(index) % len(copper)
    atoms = copper.to_atoms(index)
    atoms.calc = EMT()
    assert abs(atoms.get_potential_energy() - copper.properties["energy"][index]) < 1e-8
    np.testing.assert_allclose(atoms.get_forces(), copper.properties["forces"][copper.atoms_of(index)], atol=1e-8)
    np.testing.assert_allclose(atoms.get_stress(voigt=False), copper.properties["stress"][index], atol=1e-8)


def test_stress_follows_the_strain_with_ases_sign(copper):
    """Compressed cells push outwards: ASE's stress (1/V) dE/dε is negative there, positive under tension."""
    pressure = -np.trace(copper.properties["stress"], axis1=1, axis2=2) / 3
    by_strain = {}
    for segment in _segments(copper):
        if segment["kind"] == "nvt" and segment["temperature_K"] == 300.0:
            rows = slice(segment["first"], segment["first"] + segment["count"])
            by_strain.setdefault(segment["strain"], []).append(pressure[rows].mean())
    strains = sorted(by_strain)
    means = [np.mean(by_strain[s]) for s in strains]
    assert strains[0] < 0 < strains[-1]
    assert means[0] > 0 > means[-1]
    assert np.all(np.diff(means) < 0)  # pressure falls as the cell grows


def test_forces_are_thermal_and_sum_to_zero(copper):
    forces = copper.properties["forces"]
    assert 0.1 < np.abs(forces).mean() < 2.0
    for index in (0, len(copper) - 1):
        np.testing.assert_allclose(forces[copper.atoms_of(index)].sum(axis=0), 0.0, atol=1e-10)


def test_reference_numbers_have_their_keys_and_are_emts_own(reference):
    zero = reference["zero_kelvin"]
    assert reference["method"].startswith("EMT") and reference["element"] == "Cu"
    for key in ("code", "command", "created", "seed", "units"):
        assert key in reference
    assert 3.55 < zero["a0_Ang"] < 3.65 and 110 < zero["bulk_modulus_GPa"] < 160
    assert abs(zero["pressure_at_a0_GPa"]) < 0.05
    runs = reference["npt"]["runs"]
    temperatures = [run["temperature_K"] for run in runs]
    assert temperatures == sorted(temperatures) and {100.0, 300.0, 600.0, 900.0} <= set(temperatures)
    lattice = [run["a_Ang"] for run in runs]
    assert zero["a0_Ang"] < lattice[0] and np.all(np.diff(lattice) > 0)  # it expands on heating
    for run in runs:
        assert abs(run["mean_temperature_K"] / run["temperature_K"] - 1) < 0.05
        assert abs(run["mean_pressure_GPa"]) < 0.1
        assert 5e-6 < run["alpha_per_K"] < 1e-4 and run["a_stderr_Ang"] < 2e-3
    expansion = reference["thermal_expansion"]
    assert set(expansion["alpha_per_K"]) == {str(int(t)) for t in temperatures}
    assert 5e-6 < expansion["alpha_secant_per_K"] < 1e-4
    bulk = reference["bulk_modulus_at_T"]
    assert bulk["temperature_K"] == 300.0 and bulk["stderr_GPa"] > 0
    assert 0.5 * zero["bulk_modulus_GPa"] < bulk["from_volume_fluctuations_GPa"] < 1.5 * zero["bulk_modulus_GPa"]


def test_the_zero_kelvin_numbers_are_reproduced_by_the_script(reference):
    spec = importlib.util.spec_from_file_location("make_materials_dataset", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    eos = script.equation_of_state()
    assert abs(eos["a0_Ang"] - reference["zero_kelvin"]["a0_Ang"]) < 1e-4
    assert abs(eos["bulk_modulus_GPa"] - reference["zero_kelvin"]["bulk_modulus_GPa"]) < 0.5


def test_unknown_reference_names_are_refused_with_the_choices():
    with pytest.raises(ConfigError, match="available: cu"):
        builtin_reference("aspirin")
