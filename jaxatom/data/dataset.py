"""``Dataset``: labelled structures of different sizes, held ragged in memory, in jaxatom units (eV, Å)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols

from jaxatom.errors import DataError
from jaxatom.units import UnitError, parse_unit, unit_factor

__all__ = [
    "Dataset",
    "PROPERTY_UNITS",
    "PROPERTY_SHAPES",
    "PER_ATOM_PROPERTIES",
    "MissingPropertyError",
    "internal_unit",
    "describe_structures",
]

#: The jaxatom unit of each known property; other properties keep any unit with a known dimension.
PROPERTY_UNITS = {
    "energy": "eV",
    "forces": "eV/Ang",
    "stress": "eV/Ang^3",
    "dipole_moment": "e*Ang",
    "charges": "e",
}
#: Properties with one value per atom (all others have one value per structure).
PER_ATOM_PROPERTIES = frozenset({"forces", "charges"})
#: The shape of one value (per structure or per atom) of the properties whose shape is fixed.
PROPERTY_SHAPES = {"energy": (), "forces": (3,), "charges": ()}
_MAX_Z = len(chemical_symbols) - 1
_BASE_UNITS = ("eV", "Ang", "amu", "fs", "e", "eV/Ang", "eV/Ang^3", "e*Ang", "eV/Ang^2")


def internal_unit(name: str, unit: str) -> str:
    """The jaxatom unit for property ``name`` given in ``unit``; raises ``UnitError`` if they do not fit."""
    source = parse_unit(unit)
    if name in PROPERTY_UNITS:
        target = PROPERTY_UNITS[name]
        if parse_unit(target).dimension != source.dimension:
            raise UnitError(
                f"property {name!r} is given in {unit!r}, which does not measure what {name!r} is ({target}); "
                "pass the unit the data is stored in"
            )
        return target
    for target in _BASE_UNITS:
        if parse_unit(target).dimension == source.dimension:
            return target
    return unit


class MissingPropertyError(DataError, KeyError):
    """A data set or structure lacks a property that was asked for (also a ``KeyError``)."""

    def __str__(self) -> str:  # the message as given, not quoted as ``KeyError`` would
        return Exception.__str__(self)


def describe_structures(indices: np.ndarray | Sequence[int], limit: int = 5) -> str:
    """``"structure 3"`` or ``"3 structures (indices 2, 4, 7)"``, listing the first ``limit`` indices."""
    indices = np.unique(np.asarray(indices, np.int64))
    if len(indices) == 1:
        return f"structure {indices[0]}"
    shown = ", ".join(str(i) for i in indices[:limit]) + (", ..." if len(indices) > limit else "")
    return f"{len(indices)} structures (indices {shown})"


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Structures with properties, atoms of all structures concatenated. Units: eV, Å (see :data:`PROPERTY_UNITS`).

    Attributes:
        numbers: ``[A]`` atomic numbers of all atoms, structure after structure.
        positions: ``[A, 3]`` positions (Å, float64).
        n_atoms: ``[S]`` atoms per structure.
        cell: ``[S, 3, 3]`` cells (Å; zeros for molecules).
        pbc: ``[S, 3]`` periodic directions.
        properties: per-structure ``[S, ...]`` or per-atom ``[A, ...]`` arrays (float64), in jaxatom units.
        source_units: the unit each property was stored in before conversion (provenance).
        metadata: free-form provenance (source, file, method ...).
    """

    numbers: np.ndarray
    positions: np.ndarray
    n_atoms: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    properties: Mapping[str, np.ndarray]
    source_units: Mapping[str, str] = dataclasses.field(default_factory=dict)
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self._check_shapes()
        self._check_atoms()
        for name, values in self.properties.items():
            bad = ~np.isfinite(values).all(axis=tuple(range(1, np.ndim(values))))
            if bad.any():
                where = self._structures_of(np.flatnonzero(bad), per_atom=name in PER_ATOM_PROPERTIES)
                raise DataError(
                    f"property {name!r} is NaN or infinite in {where}; remove those structures or fix the data"
                )

    def _check_shapes(self) -> None:
        n_total, n_structures = int(np.sum(self.n_atoms)), len(self.n_atoms)
        if self.positions.ndim != 2 or self.positions.shape[1] != 3:
            raise DataError(f"positions must have shape [atoms, 3], got {list(self.positions.shape)}; give x, y, z")
        if self.numbers.shape != (n_total,) or len(self.positions) != n_total:
            raise DataError(
                f"numbers {self.numbers.shape} and positions {self.positions.shape} must hold the {n_total} atoms "
                "that n_atoms counts: one atomic number and one [x, y, z] position per atom"
            )
        if self.cell.shape != (n_structures, 3, 3) or self.pbc.shape != (n_structures, 3):
            raise DataError(
                f"cell {self.cell.shape} and pbc {self.pbc.shape} must be [{n_structures}, 3, 3] and "
                f"[{n_structures}, 3]: one 3x3 cell and three periodic flags per structure"
            )
        for name, values in self.properties.items():
            per_atom = name in PER_ATOM_PROPERTIES
            expected = n_total if per_atom else n_structures
            kind = "atom" if per_atom else "structure"
            if len(values) != expected:
                raise DataError(
                    f"property {name!r} has {len(values)} entries, expected {expected} (one per {kind}); "
                    f"give one value per {kind}"
                )
            shape = PROPERTY_SHAPES.get(name)
            if shape is not None and tuple(np.shape(values)[1:]) != shape:
                wanted = ", ".join([f"{kind}s", *map(str, shape)])
                raise DataError(
                    f"property {name!r} must have shape [{wanted}], got {list(np.shape(values))}; reshape it"
                )

    def _check_atoms(self) -> None:
        empty = np.flatnonzero(self.n_atoms < 1)
        if empty.size:
            raise DataError(f"no atoms in {describe_structures(empty)}; remove those structures from the data")
        bad_z = (self.numbers < 1) | (self.numbers > _MAX_Z)
        if bad_z.any():
            found = ", ".join(str(z) for z in np.unique(self.numbers[bad_z])[:5])
            raise DataError(
                f"atomic numbers must lie in 1..{_MAX_Z}, found {found} in "
                f"{self._structures_of(np.flatnonzero(bad_z), per_atom=True)}; remove dummy atoms (e.g. 'X', Z=0) "
                "or fix the data"
            )
        bad_positions = ~np.isfinite(self.positions).all(axis=1)
        if bad_positions.any():
            where = self._structures_of(np.flatnonzero(bad_positions), per_atom=True)
            raise DataError(f"positions are NaN or infinite in {where}; remove those structures or fix the data")

    def _structures_of(self, indices: np.ndarray, per_atom: bool) -> str:
        """Name the structures that ``indices`` (of atoms when ``per_atom``, else of structures) belong to."""
        if per_atom:
            indices = np.searchsorted(self.atom_offsets, indices, side="right") - 1
        return describe_structures(indices)

    # -- construction -------------------------------------------------------------------------------------------

    @classmethod
    def from_arrays(
        cls,
        numbers: np.ndarray | Sequence[np.ndarray],
        positions: np.ndarray | Sequence[np.ndarray],
        properties: Mapping[str, np.ndarray | Sequence[np.ndarray]],
        units: Mapping[str, str],
        length_unit: str = "Ang",
        cell: np.ndarray | None = None,
        pbc: np.ndarray | bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> Dataset:
        """Build from per-structure arrays and convert to jaxatom units.

        Args:
            numbers: ``[N]`` for structures that share one composition, ``[S, N]``, or a list of ``[n_s]`` arrays.
            positions: ``[S, N, 3]`` or a list of ``[n_s, 3]`` arrays, in ``length_unit``.
            properties: per structure ``[S, ...]``; per atom (forces, charges) ``[S, N, ...]`` or a list.
            units: the unit of every property as stored, e.g. ``{"energy": "kcal/mol", "forces": "kcal/mol/Ang"}``.
            length_unit: unit of ``positions`` and ``cell``.
            cell, pbc: ``[S, 3, 3]`` or ``[3, 3]`` cells and periodicity (default: molecules).
        """
        positions_list = [_float_array("positions", p) for p in positions]
        n_structures = len(positions_list)
        if n_structures == 0:
            raise DataError("no structures given; a data set needs at least one structure")
        if isinstance(numbers, np.ndarray) and numbers.ndim == 1:
            numbers_list = [numbers] * n_structures
        else:
            numbers_list = [np.asarray(z) for z in numbers]
        if len(numbers_list) != n_structures:
            raise DataError(
                f"{len(numbers_list)} sets of atomic numbers for {n_structures} structures; give one per structure"
            )
        atom_counts = [len(z) for z in numbers_list]
        _check_atom_counts("positions", positions_list, atom_counts)
        length = unit_factor(length_unit, "Ang")
        missing = sorted(set(properties) - set(units))
        if missing:
            raise UnitError(f"no unit given for {', '.join(missing)}; pass units={{name: unit}} for every property")
        converted, source_units = {}, {}
        for name, values in properties.items():
            factor = unit_factor(units[name], internal_unit(name, units[name]))
            if name in PER_ATOM_PROPERTIES:
                per_structure = [_float_array(name, v) for v in values]
                _check_atom_counts(name, per_structure, atom_counts)
                data = np.concatenate(per_structure)
            else:
                data = _float_array(name, values)
            converted[name] = data * factor
            source_units[name] = units[name]
        cells = np.zeros((n_structures, 3, 3)) if cell is None else np.asarray(cell, np.float64) * length
        if cells.shape == (3, 3):
            cells = np.broadcast_to(cells, (n_structures, 3, 3)).copy()
        return cls(
            numbers=np.concatenate(numbers_list).astype(np.int32),
            positions=np.concatenate(positions_list) * length,
            n_atoms=np.array(atom_counts, np.int64),
            cell=cells,
            pbc=np.broadcast_to(np.asarray(pbc, bool), (n_structures, 3)).copy(),
            properties=converted,
            source_units={**source_units, "length": length_unit},
            metadata=dict(metadata or {}),
        )

    @classmethod
    def from_atoms(
        cls, structures: Iterable[Atoms], properties: Sequence[str] = ("energy", "forces"), metadata=None
    ) -> Dataset:
        """Build from ``ase.Atoms`` (Å, eV) whose calculator results or ``info``/``arrays`` hold the properties."""
        structures = list(structures)
        values: dict[str, list] = {name: [] for name in properties}
        for index, atoms in enumerate(structures):
            results = atoms.calc.results if atoms.calc is not None else {}
            for name in properties:
                source = results if name in results else atoms.arrays if name in atoms.arrays else atoms.info
                if name not in source:
                    have = ", ".join(sorted(atoms_properties(atoms))) or "nothing"
                    raise MissingPropertyError(
                        f"structure {index} has no property {name!r} (it has {have}); ask only for properties "
                        "every structure has (properties=...)"
                    )
                values[name].append(source[name])
        return cls.from_arrays(
            numbers=[a.numbers for a in structures],
            positions=[a.positions for a in structures],
            properties=values,
            units={name: PROPERTY_UNITS.get(name, "1") for name in properties},
            cell=np.array([a.cell[:] for a in structures]).reshape(len(structures), 3, 3),
            pbc=np.array([a.pbc for a in structures]).reshape(len(structures), 3),
            metadata=metadata,
        )

    # -- access -------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.n_atoms)

    @property
    def atom_offsets(self) -> np.ndarray:
        """``[S + 1]`` index of each structure's first atom (and the total)."""
        return np.concatenate([[0], np.cumsum(self.n_atoms)])

    @property
    def elements(self) -> tuple[int, ...]:
        """Atomic numbers present in the data set."""
        return tuple(int(z) for z in np.unique(self.numbers))

    def atoms_of(self, index: int) -> slice:
        """The slice of the concatenated atom arrays that belongs to structure ``index``."""
        start, stop = self.atom_offsets[index], self.atom_offsets[index + 1]
        return slice(int(start), int(stop))

    def require(self, *names: str) -> None:
        """Raise :class:`MissingPropertyError` (a ``KeyError``) naming what is missing unless every property in
        ``names`` is present."""
        missing = [name for name in names if name not in self.properties]
        if missing:
            have = ", ".join(sorted(self.properties)) or "none"
            raise MissingPropertyError(
                f"the data set lacks {', '.join(missing)} (it has: {have}); use data that has them or do not ask "
                "for them"
            )

    def to_atoms(self, index: int) -> Atoms:
        """Structure ``index`` as ``ase.Atoms`` with its properties as single-point calculator results."""
        atoms_slice = self.atoms_of(index)
        atoms = Atoms(
            numbers=self.numbers[atoms_slice],
            positions=self.positions[atoms_slice],
            cell=self.cell[index],
            pbc=self.pbc[index],
        )
        results = {
            name: values[atoms_slice] if name in PER_ATOM_PROPERTIES else values[index]
            for name, values in self.properties.items()
        }
        atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    def subset(self, indices: Sequence[int] | np.ndarray) -> Dataset:
        """The structures at ``indices``, in that order."""
        indices = np.asarray(indices, np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"indices must lie in 0..{len(self) - 1}")
        offsets = self.atom_offsets
        atom_index = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in indices]) if len(indices) else []
        atom_index = np.asarray(atom_index, np.int64)
        return dataclasses.replace(
            self,
            numbers=self.numbers[atom_index],
            positions=self.positions[atom_index],
            n_atoms=self.n_atoms[indices],
            cell=self.cell[indices],
            pbc=self.pbc[indices],
            properties={
                name: values[atom_index] if name in PER_ATOM_PROPERTIES else values[indices]
                for name, values in self.properties.items()
            },
        )


def _float_array(name: str, values) -> np.ndarray:
    """``values`` as a float64 array; a :class:`DataError` naming ``name`` if they are ragged or not numbers."""
    try:
        return np.asarray(values, np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(
            f"{name!r} cannot be read as numbers ({err}); give numeric values of the same shape for every structure"
        ) from err


def _check_atom_counts(name: str, arrays: Sequence[np.ndarray], atom_counts: Sequence[int]) -> None:
    """Every structure's ``name`` array must have one row per atom."""
    if len(arrays) != len(atom_counts):
        raise DataError(f"{name!r} is given for {len(arrays)} structures, expected {len(atom_counts)}; give one each")
    wrong = [i for i, (a, n) in enumerate(zip(arrays, atom_counts, strict=True)) if a.ndim == 0 or len(a) != n]
    if wrong:
        first = wrong[0]
        raise DataError(
            f"{name!r} does not have one row per atom in {describe_structures(wrong)} (structure {first}: "
            f"{atom_counts[first]} atomic numbers, {name} shaped {list(arrays[first].shape)}); give one row per atom"
        )


def atoms_properties(atoms: Atoms) -> set[str]:
    """The names of the properties ``atoms`` carries: calculator results, ``info`` entries and per-atom arrays."""
    names = set(atoms.info) | (set(atoms.arrays) - {"numbers", "positions"})
    if atoms.calc is not None:
        names |= set(atoms.calc.results)
    return names
