import numpy as np
import pytest
from ase import units as ase_units

from jaxatom import units


def test_common_factors_match_ase_constants():
    assert units.kcal_mol == pytest.approx(ase_units.kcal / ase_units.mol)
    assert units.kcal_mol == pytest.approx(0.0433641, rel=1e-5)
    assert units.kJ_mol == pytest.approx(ase_units.kJ / ase_units.mol)
    assert units.Hartree == pytest.approx(27.211386, rel=1e-6)
    assert units.Bohr == pytest.approx(0.52917721, rel=1e-7)
    assert units.Debye == pytest.approx(0.20819434, rel=1e-6)


@pytest.mark.parametrize(
    ("source", "target", "factor"),
    [
        ("kcal/mol/Ang", "eV/Ang", ase_units.kcal / ase_units.mol),
        ("Ha/Bohr", "eV/Ang", ase_units.Hartree / ase_units.Bohr),
        ("Hartree/Bohr^2", "eV/Ang**2", ase_units.Hartree / ase_units.Bohr**2),
        ("eV/nm^3", "eV/Ang^3", 1e-3),
        ("ps", "fs", 1000.0),
        ("nm", "Ang", 10.0),
        ("Debye", "e*Ang", ase_units.Debye),
        ("kJ/mol", "kcal/mol", 1 / 4.184),
        ("eV", "amu*Ang^2/fs^2", ase_units.fs**2),
    ],
)
def test_unit_factor(source, target, factor):
    assert units.unit_factor(source, target) == pytest.approx(factor, rel=1e-12)


def test_convert_arrays_and_round_trip():
    values = np.array([1.0, -2.0])
    back = units.convert(units.convert(values, "kcal/mol", "eV"), "eV", "kcal/mol")
    np.testing.assert_allclose(back, values, rtol=1e-14)


@pytest.mark.parametrize("bad", ["kcal/mole", "eV/Angstroem", "eV//Ang", "eV Ang", "", "eV/", "3eV", None])
def test_unknown_or_malformed_units_are_refused(bad):
    with pytest.raises(units.UnitError):
        units.parse_unit(bad)


def test_unknown_unit_error_lists_known_units():
    with pytest.raises(units.UnitError, match="unknown unit 'kcals'.*known units are"):
        units.parse_unit("kcals/mol")


def test_incompatible_dimensions_are_refused():
    with pytest.raises(units.UnitError, match="different quantities"):
        units.unit_factor("eV", "Ang")
    with pytest.raises(units.UnitError, match="different quantities"):
        units.unit_factor("kcal/mol/Ang", "eV")
