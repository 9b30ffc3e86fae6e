"""jaxatom's one unit system and strict conversions from other units.

Inside jaxatom every quantity is in eV, Å, amu and elementary charges; every public function that takes a time takes
femtoseconds. Unit values are taken from :mod:`ase.units` (CODATA 2014), the same constants SchNetPack converts with,
so imported data and models give the same numbers.

Unit strings are products and quotients of known unit names with optional integer powers, e.g. ``"kcal/mol/Ang"``,
``"Ha/Bohr"``, ``"eV/Ang^3"``, ``"e*Ang"``; pressures (stress) also by name: ``"GPa"``, ``"MPa"``, ``"Pa"``,
``"kbar"``, ``"bar"``, ``"atm"`` (1 eV/Å³ = 160.21766 GPa = 1602.1766 kbar). Anything else is refused with
:class:`UnitError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ase import units as _ase

from jaxatom.errors import JaxAtomError

__all__ = [
    "UnitError",
    "Unit",
    "parse_unit",
    "unit_factor",
    "convert",
    "INTERNAL_UNITS",
    "eV",
    "Ang",
    "amu",
    "fs",
    "ps",
    "kcal_mol",
    "kJ_mol",
    "Hartree",
    "Bohr",
    "Debye",
    "nm",
    "GPa",
    "kbar",
    "kB",
]


class UnitError(JaxAtomError, ValueError):
    """A unit string that cannot be parsed or converted."""


# Dimension exponents over (mass, length, time, charge) in ASE's coherent unit system
# (eV, Å, amu, e; energy = mass * length^2 / time^2).
_ENERGY = (1, 2, -2, 0)
_LENGTH = (0, 1, 0, 0)
_MASS = (1, 0, 0, 0)
_TIME = (0, 0, 1, 0)
_CHARGE = (0, 0, 0, 1)
_NONE = (0, 0, 0, 0)
_PRESSURE = (1, -1, -2, 0)  # energy / length^3

# name -> (value in ASE units, dimension)
_UNITS: dict[str, tuple[float, tuple[int, int, int, int]]] = {
    "eV": (1.0, _ENERGY),
    "meV": (1e-3, _ENERGY),
    "Ha": (_ase.Hartree, _ENERGY),
    "Hartree": (_ase.Hartree, _ENERGY),
    "kcal": (_ase.kcal, _ENERGY),
    "kJ": (_ase.kJ, _ENERGY),
    "J": (_ase.J, _ENERGY),
    "Ry": (_ase.Rydberg, _ENERGY),
    "mol": (_ase.mol, _NONE),
    "1": (1.0, _NONE),
    "Ang": (1.0, _LENGTH),
    "A": (1.0, _LENGTH),
    "Å": (1.0, _LENGTH),
    "Angstrom": (1.0, _LENGTH),
    "Bohr": (_ase.Bohr, _LENGTH),
    "a0": (_ase.Bohr, _LENGTH),
    "nm": (_ase.nm, _LENGTH),
    "pm": (1e-2, _LENGTH),
    "m": (_ase.m, _LENGTH),
    "amu": (1.0, _MASS),
    "u": (1.0, _MASS),
    "Da": (1.0, _MASS),
    "kg": (_ase.kg, _MASS),
    "fs": (_ase.fs, _TIME),
    "ps": (1e3 * _ase.fs, _TIME),
    "ns": (1e6 * _ase.fs, _TIME),
    "s": (_ase.s, _TIME),
    "aut": (_ase.AUT, _TIME),
    "e": (1.0, _CHARGE),
    "C": (_ase.C, _CHARGE),
    "Debye": (_ase.Debye, (0, 1, 0, 1)),
    "D": (_ase.Debye, (0, 1, 0, 1)),
    "Pa": (_ase.Pascal, _PRESSURE),
    "kPa": (1e3 * _ase.Pascal, _PRESSURE),
    "MPa": (1e6 * _ase.Pascal, _PRESSURE),
    "GPa": (_ase.GPa, _PRESSURE),
    "bar": (_ase.bar, _PRESSURE),
    "kbar": (1e3 * _ase.bar, _PRESSURE),
    "atm": (101325.0 * _ase.Pascal, _PRESSURE),
}
_ALIASES = {"ev": "eV", "hartree": "Hartree", "angstrom": "Angstrom", "bohr": "Bohr", "debye": "Debye"}

#: The unit jaxatom uses internally for each kind of quantity.
INTERNAL_UNITS = {
    "energy": "eV",
    "forces": "eV/Ang",
    "stress": "eV/Ang^3",
    "length": "Ang",
    "mass": "amu",
    "time": "fs",
    "charge": "e",
    "dipole": "e*Ang",
}

_TOKEN = re.compile(r"\s*([A-Za-zÅ0-9_]+)\s*(?:(?:\^|\*\*)\s*(-?\d+))?\s*")


@dataclass(frozen=True)
class Unit:
    """A parsed unit: its value in ASE units and its dimension over (mass, length, time, charge)."""

    text: str
    value: float
    dimension: tuple[int, int, int, int]


def _lookup(name: str, text: str) -> tuple[float, tuple[int, int, int, int]]:
    name = _ALIASES.get(name, name)
    if name not in _UNITS:
        known = ", ".join(sorted(_UNITS))
        raise UnitError(
            f"unknown unit {name!r} in {text!r}; known units are: {known} (combine them with '/', '*', '^n')"
        )
    return _UNITS[name]


def parse_unit(text: str) -> Unit:
    """Parse a unit string such as ``"kcal/mol/Ang"`` strictly; raise :class:`UnitError` on anything unknown."""
    if not isinstance(text, str) or not text.strip():
        raise UnitError(f"a unit must be a non-empty string such as 'eV' or 'kcal/mol/Ang', got {text!r}")
    value, dim = 1.0, [0, 0, 0, 0]
    pos, sign = 0, 1
    spec = text.strip()
    while True:
        match = _TOKEN.match(spec, pos)
        if match is None or match.end() == pos:
            raise UnitError(f"cannot parse unit {text!r} at position {pos}; write e.g. 'kcal/mol/Ang' or 'eV/Ang^3'")
        name, power = match.group(1), int(match.group(2) or 1)
        unit_value, unit_dim = _lookup(name, text)
        value *= unit_value ** (sign * power)
        dim = [d + sign * power * u for d, u in zip(dim, unit_dim, strict=True)]
        pos = match.end()
        if pos == len(spec):
            break
        op = spec[pos]
        if op not in "/*":
            raise UnitError(f"unexpected {op!r} in unit {text!r}; only '/', '*' and '^n' may join unit names")
        sign = -1 if op == "/" else 1
        pos += 1
    return Unit(text=text, value=value, dimension=tuple(dim))


def unit_factor(from_unit: str, to_unit: str) -> float:
    """Factor that converts a number in ``from_unit`` to ``to_unit``; refuses incompatible dimensions."""
    src, dst = parse_unit(from_unit), parse_unit(to_unit)
    if src.dimension != dst.dimension:
        raise UnitError(f"cannot convert {from_unit!r} to {to_unit!r}: they measure different quantities")
    return src.value / dst.value


def convert(value, from_unit: str, to_unit: str):
    """Convert ``value`` (number or array) from ``from_unit`` to ``to_unit``."""
    return value * unit_factor(from_unit, to_unit)


# Frequently used factors, each giving the value of one such unit in jaxatom units.
eV = 1.0
Ang = 1.0
amu = 1.0
fs = 1.0
ps = 1000.0
nm = 10.0
kcal_mol = unit_factor("kcal/mol", "eV")
kJ_mol = unit_factor("kJ/mol", "eV")
Hartree = unit_factor("Ha", "eV")
Bohr = unit_factor("Bohr", "Ang")
Debye = unit_factor("Debye", "e*Ang")
#: One GPa and one kbar in eV/Å³ (stress and pressure; 1 eV/Å³ = 160.21766 GPa).
GPa = unit_factor("GPa", "eV/Ang^3")
kbar = unit_factor("kbar", "eV/Ang^3")
#: Boltzmann constant in eV/K.
kB = _ase.kB
