"""The properties jaxatom knows by name: their unit, whether they have one value per atom, and the shape of one value.

This is the vocabulary shared by data sets, model outputs, loss terms and calculators (SchNetPack's
``schnetpack.properties``, with units). Properties not listed here are welcome anywhere: a data set declares their
kind and unit itself, and a model head declares what it predicts.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PropertyInfo", "PROPERTIES", "property_info", "is_per_atom", "property_unit"]


@dataclass(frozen=True)
class PropertyInfo:
    """What a property is: ``unit`` (jaxatom's), ``per_atom`` (one value per atom, else per structure) and ``shape``
    of one value (None: any shape, e.g. a QM9 dipole magnitude ``()`` or a dipole vector ``(3,)``)."""

    unit: str
    per_atom: bool
    shape: tuple[int, ...] | None
    description: str


#: name -> what it is. Polarizabilities are polarizability volumes (Gaussian units, α / 4πε₀) in Å³, as QM9 and most
#: quantum-chemistry codes report them (1 Bohr³ = 0.148185 Å³); in e·Å²/V they are smaller by 14.3996.
PROPERTIES: dict[str, PropertyInfo] = {
    "energy": PropertyInfo("eV", False, (), "total energy"),
    "energies": PropertyInfo("eV", True, (), "energy contribution of each atom"),
    "forces": PropertyInfo("eV/Ang", True, (3,), "forces, -dE/dR"),
    "stress": PropertyInfo("eV/Ang^3", False, (3, 3), "stress, (1/V) dE/d(strain)"),
    "dipole_moment": PropertyInfo("e*Ang", False, None, "dipole moment: a vector [3], or its magnitude (QM9)"),
    "charges": PropertyInfo("e", True, (), "partial charges"),
    "total_charge": PropertyInfo("e", False, (), "total charge of the structure (0: neutral)"),
    "polarizability": PropertyInfo("Ang^3", False, (3, 3), "static dipole polarizability tensor (volume units)"),
    "magnetic_moments": PropertyInfo("1", True, (), "atomic magnetic moments (Bohr magnetons)"),
    "fidelity": PropertyInfo("1", False, (), "index of the level of theory that labelled the structure (0: cheapest)"),
}


def property_info(name: str) -> PropertyInfo | None:
    """What ``name`` is, or None for a property jaxatom does not know by name."""
    return PROPERTIES.get(name)


def is_per_atom(name: str) -> bool:
    """Whether the known property ``name`` has one value per atom (False for unknown names)."""
    info = PROPERTIES.get(name)
    return info is not None and info.per_atom


def property_unit(name: str, default: str = "1") -> str:
    """jaxatom's unit of the known property ``name``, else ``default``."""
    info = PROPERTIES.get(name)
    return default if info is None else info.unit
