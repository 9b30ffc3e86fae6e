"""``Dataset``: labelled structures of different sizes, held ragged in memory, in jaxatom units (eV, Å).

Every property declares its kind (one value per atom, or per structure) and its unit. Properties that
:mod:`jaxatom.properties` knows by name have their kind, unit and value shape fixed there; any other property may have
any shape, is per structure unless declared per atom, and keeps the unit it was given (converted to jaxatom's base
unit of the same dimension where there is one, e.g. Hartree to eV).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols
from ase.stress import voigt_6_to_full_3x3_stress

from jaxatom.errors import DataError
from jaxatom.neighbors import total_charge_of
from jaxatom.properties import PROPERTIES, is_per_atom, property_info, property_unit
from jaxatom.units import UnitError, parse_unit, unit_factor

__all__ = [
    "Dataset",
    "DataOrigin",
    "PROPERTY_UNITS",
    "PROPERTY_SHAPES",
    "PER_ATOM_PROPERTIES",
    "ASE_RESULT_NAMES",
    "MissingPropertyError",
    "internal_unit",
    "from_ase_result",
    "describe_structures",
    "concatenate",
]

#: The jaxatom unit of each known property (from :data:`jaxatom.properties.PROPERTIES`).
PROPERTY_UNITS = {name: info.unit for name, info in PROPERTIES.items()}
#: The known properties with one value per atom; a :class:`Dataset` may declare more (``Dataset.per_atom``).
PER_ATOM_PROPERTIES = frozenset(name for name, info in PROPERTIES.items() if info.per_atom)
#: The shape of one value (per structure or per atom) of the known properties whose shape is fixed.
PROPERTY_SHAPES = {name: info.shape for name, info in PROPERTIES.items() if info.shape is not None}
#: jaxatom property name -> ASE calculator result name, where they differ.
ASE_RESULT_NAMES = {"dipole_moment": "dipole", "magnetic_moments": "magmoms"}
# ASE calculator results with one value per atom; every other result is per structure.
_ASE_PER_ATOM_RESULTS = frozenset({"forces", "energies", "charges", "magmoms", "stresses", "born_effective_charges"})
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


def from_ase_result(name: str, value) -> np.ndarray:
    """An ASE calculator result (or ``info`` entry) as jaxatom holds it: ``stress`` in Voigt form ``[6]`` becomes
    ``[3, 3]``; everything else is only made an array."""
    value = np.asarray(value)
    if name == "stress" and value.shape == (6,):
        return voigt_6_to_full_3x3_stress(value)
    return value


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


def _declared_per_atom(names: Iterable[str], per_atom: Collection[str]) -> frozenset[str]:
    """The per-atom properties among ``names``: the known per-atom ones and those declared in ``per_atom``; declaring
    a known per-structure property per atom is refused."""
    names = set(names)
    wrong = sorted(n for n in set(per_atom) & names if property_info(n) is not None and not is_per_atom(n))
    if wrong:
        raise DataError(
            f"{', '.join(map(repr, wrong))} cannot be declared per atom: jaxatom.properties defines "
            f"{'it' if len(wrong) == 1 else 'them'} per structure; use another name for a per-atom property"
        )
    return frozenset(n for n in names if n in per_atom or is_per_atom(n))


@dataclasses.dataclass(frozen=True)
class DataOrigin:
    """The file or shipped set a :class:`Dataset` was read from: ``data`` is a run configuration's ``data`` section
    naming it (``{"builtin": "aspirin"}``, ``{"path": "/abs/file.h5", "units": {...}}``), ``size`` its structures."""

    data: Mapping[str, Any]
    size: int


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Structures with properties, atoms of all structures concatenated. Units: eV, Å, e (see :attr:`units`).

    Attributes:
        numbers: ``[A]`` atomic numbers of all atoms, structure after structure.
        positions: ``[A, 3]`` positions (Å, float64).
        n_atoms: ``[S]`` atoms per structure.
        cell: ``[S, 3, 3]`` cells (Å; zeros for molecules).
        pbc: ``[S, 3]`` periodic directions.
        properties: per-structure ``[S, ...]`` or per-atom ``[A, ...]`` arrays (float64), in jaxatom units.
        source_units: the unit each property was stored in before conversion (provenance).
        metadata: free-form provenance (source, file, method ...).
        per_atom: the properties with one value per atom (default: the known per-atom ones); the known per-atom
            properties are always included.
        units: the unit of each property's values (default: the known unit, else ``"1"``); known properties are
            always in jaxatom's unit (:data:`PROPERTY_UNITS`), others in the base unit of their dimension where
            jaxatom has one (:func:`internal_unit`). A ``total_charge`` property (e) is each structure's total charge.
        info: per-structure annotations that are not labels, ``[S]`` arrays of strings, integers, floats or booleans
            (e.g. the provenance of actively learned structures: generation, method, structure id); no units, never
            trained on, NaN allowed. Kept by subsets, :func:`concatenate`, HDF5 and npz files.
        origin: where the structures were read from, as a run configuration's ``data`` section (``{"builtin":
            "aspirin"}``, ``{"path": "/abs/file.h5"}``), with ``size`` its number of structures; None for data built
            in memory. Set by :func:`~jaxatom.data.load_builtin` and :func:`~jaxatom.data.read_dataset`, kept by
            :meth:`subset`, dropped by :func:`concatenate`. With :attr:`rows` it lets a run trained from Python
            record its split (``fit`` writes ``run_config.yaml`` and ``split.npz``), so that ``jaxatom evaluate`` finds
            the test set.
        rows: ``[S]`` the row of each structure in :attr:`origin` (None: all rows, in order).
    """

    numbers: np.ndarray
    positions: np.ndarray
    n_atoms: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    properties: Mapping[str, np.ndarray]
    source_units: Mapping[str, str] = dataclasses.field(default_factory=dict)
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    per_atom: frozenset[str] = frozenset()
    units: Mapping[str, str] = dataclasses.field(default_factory=dict)
    info: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    origin: DataOrigin | None = None
    rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_atom", _declared_per_atom(self.properties, self.per_atom))
        given = dict(self.units)
        object.__setattr__(self, "units", {n: given.get(n, property_unit(n)) for n in self.properties})
        object.__setattr__(self, "info", {n: _info_array(n, v, len(self.n_atoms)) for n, v in self.info.items()})
        both = sorted(set(self.info) & set(self.properties))
        if both:
            raise DataError(f"{', '.join(both)} is both a property and an info entry; rename one of them")
        self._check_units()
        self._check_shapes()
        self._check_atoms()
        for name, values in self.properties.items():
            bad = ~np.isfinite(values).all(axis=tuple(range(1, np.ndim(values))))
            if bad.any():
                where = self._structures_of(np.flatnonzero(bad), per_atom=self.is_per_atom(name))
                raise DataError(
                    f"property {name!r} is NaN or infinite in {where}; remove those structures or fix the data"
                )

    def _check_units(self) -> None:
        for name, unit in self.units.items():
            held = internal_unit(name, unit)
            if held != unit:
                raise UnitError(
                    f"property {name!r} is given in {unit!r}, but a Dataset holds it in {held!r}; build the data set "
                    "with Dataset.from_arrays(..., units=...), which converts"
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
            per_atom = self.is_per_atom(name)
            expected = n_total if per_atom else n_structures
            kind = "atom" if per_atom else "structure"
            if np.ndim(values) == 0 or len(values) != expected:
                raise DataError(
                    f"property {name!r} has {len(np.atleast_1d(values))} entries, expected {expected} (one per "
                    f"{kind}); give one value per {kind}"
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
        per_atom: Collection[str] = (),
    ) -> Dataset:
        """Build from per-structure arrays and convert to jaxatom units.

        Args:
            numbers: ``[N]`` for structures that share one composition, ``[S, N]``, or a list of ``[n_s]`` arrays.
            positions: ``[S, N, 3]`` or a list of ``[n_s, 3]`` arrays, in ``length_unit``.
            properties: per structure ``[S, ...]``; per atom ``[S, N, ...]`` or a list of ``[n_s, ...]`` arrays.
            units: the unit of every property as stored, e.g. ``{"energy": "kcal/mol", "forces": "kcal/mol/Ang"}``.
            length_unit: unit of ``positions`` and ``cell``.
            cell, pbc: ``[S, 3, 3]`` or ``[3, 3]`` cells and periodicity (default: molecules).
            per_atom: properties jaxatom does not know by name that have one value per atom (e.g.
                ``hirshfeld_volumes``); the known per-atom ones (forces, charges ...) need not be listed.
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
        undeclared = sorted(set(per_atom) - set(properties))
        if undeclared:
            raise DataError(f"per_atom names {', '.join(undeclared)}, which the properties lack; declare only those")
        per_atom = _declared_per_atom(properties, per_atom)
        converted, held = {}, {}
        for name, values in properties.items():
            held[name] = internal_unit(name, units[name])
            if name in per_atom:
                per_structure = [_float_array(name, v) for v in values]
                _check_atom_counts(name, per_structure, atom_counts)
                data = np.concatenate(per_structure)
            else:
                data = _float_array(name, values)
            converted[name] = data * unit_factor(units[name], held[name])
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
            source_units={**{n: units[n] for n in properties}, "length": length_unit},
            metadata=dict(metadata or {}),
            per_atom=per_atom,
            units=held,
        )

    @classmethod
    def from_atoms(
        cls,
        structures: Iterable[Atoms],
        properties: Sequence[str] = ("energy", "forces"),
        metadata: Mapping[str, Any] | None = None,
        units: Mapping[str, str] | None = None,
    ) -> Dataset:
        """Build from ``ase.Atoms`` whose calculator results, ``arrays`` or ``info`` hold the properties.

        A property found among the calculator results has ASE's kind (``forces``, ``charges``, ``energies``,
        ``magmoms`` per atom; ``dipole`` is read as ``dipole_moment``, ``magmoms`` as ``magnetic_moments``); one in
        ``atoms.arrays`` is per atom, one in ``atoms.info`` per structure. ``total_charge`` is ``info["total_charge"]``,
        else ASE's ``info["charge"]`` (else the sum of the initial charges, 0 unless set).

        Args:
            units: the unit of each property as stored (default: the known unit, i.e. eV and Å, else ``"1"``).
        """
        structures = list(structures)
        values: dict[str, list] = {name: [] for name in properties}
        kinds: dict[str, set[bool]] = {name: set() for name in properties}
        for index, atoms in enumerate(structures):
            for name in properties:
                value, per_atom = _atoms_property(atoms, name, index)
                values[name].append(value)
                kinds[name].add(per_atom)
        mixed = sorted(name for name, kind in kinds.items() if len(kind) > 1)
        if mixed:
            raise DataError(
                f"{', '.join(mixed)} is per atom in some structures and per structure in others (atoms.arrays vs "
                "atoms.info); store each property in one place"
            )
        units = dict(units or {})
        return cls.from_arrays(
            numbers=[a.numbers for a in structures],
            positions=[a.positions for a in structures],
            properties=values,
            units={name: units.get(name, property_unit(name)) for name in properties},
            cell=np.array([a.cell[:] for a in structures]).reshape(len(structures), 3, 3),
            pbc=np.array([a.pbc for a in structures]).reshape(len(structures), 3),
            metadata=metadata,
            per_atom=[name for name, kind in kinds.items() if True in kind],
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

    def is_per_atom(self, name: str) -> bool:
        """Whether property ``name`` has one value per atom (``[A, ...]``), else one per structure (``[S, ...]``);
        for a property the data set lacks, its known kind."""
        return name in self.per_atom if name in self.properties else is_per_atom(name)

    def atoms_of(self, index: int) -> slice:
        """The slice of the concatenated atom arrays that belongs to structure ``index``."""
        start, stop = self.atom_offsets[index], self.atom_offsets[index + 1]
        return slice(int(start), int(stop))

    def value(self, name: str, index: int) -> np.ndarray:
        """Property ``name`` of structure ``index``: ``[n, ...]`` per atom, ``[...]`` per structure."""
        values = self.properties[name]
        return values[self.atoms_of(index)] if self.is_per_atom(name) else values[index]

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
        """Structure ``index`` as ``ase.Atoms``: properties ASE's calculators know (energy, forces, stress, energies,
        charges, magnetic moments, a dipole vector) as single-point calculator results under ASE's names,
        ``total_charge`` as ``info["charge"]``, other per-atom properties in ``arrays``, other per-structure ones and
        the :attr:`info` annotations in ``info``."""
        atoms_slice = self.atoms_of(index)
        atoms = Atoms(
            numbers=self.numbers[atoms_slice],
            positions=self.positions[atoms_slice],
            cell=self.cell[index],
            pbc=self.pbc[index],
        )
        results = {}
        atoms.info.update({name: values[index].item() for name, values in self.info.items()})
        for name in self.properties:
            value = self.value(name, index)
            ase_name = ASE_RESULT_NAMES.get(name, name)
            if name == "total_charge":
                atoms.info["charge"] = float(value)
            elif name in PROPERTIES and _is_ase_result(ase_name, value, self.is_per_atom(name)):
                results[ase_name] = float(value) if ase_name == "energy" else value
            elif self.is_per_atom(name):
                atoms.new_array(name, np.array(value))
            else:
                atoms.info[name] = value.item() if value.ndim == 0 else np.array(value)
        atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    def __repr__(self) -> str:
        elements = sorted({chemical_symbols[z] for z in np.unique(self.numbers)})
        properties = ", ".join(f"{name} [{unit}]" for name, unit in self.units.items())
        where = "" if self.origin is None else f", from {_origin_name(self.origin)}"
        info = f", info: {', '.join(self.info)}" if self.info else ""
        return (f"Dataset({len(self)} structures, {int(np.sum(self.n_atoms))} atoms, elements {' '.join(elements)}; "
                f"properties: {properties or 'none'}{info}{where})")  # fmt: skip

    def subset(self, indices: Sequence[int] | np.ndarray) -> Dataset:
        """The structures at ``indices``, in that order (their :attr:`rows` in the origin follow)."""
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
                name: values[atom_index] if self.is_per_atom(name) else values[indices]
                for name, values in self.properties.items()
            },
            info={name: values[indices] for name, values in self.info.items()},
            rows=None if self.origin is None else self.origin_rows[indices],
        )

    def with_properties(
        self, properties: Mapping[str, np.ndarray], units: Mapping[str, str] | None = None,
        per_atom: Collection[str] = (),
    ) -> Dataset:  # fmt: skip
        """This data set with ``properties`` added or replaced: arrays per structure ``[S, ...]`` or, for the
        known per-atom properties and those named in ``per_atom``, ``[A, ...]`` over all atoms; in ``units`` (default:
        jaxatom's unit of each), converted as :meth:`from_arrays` does. E.g. a derived per-structure target,
        ``ds.with_properties({"alpha_iso": np.trace(ds.properties["polarizability"], axis1=1, axis2=2) / 3},
        {"alpha_iso": "Ang^3"})``, or a ``fidelity`` index for multi-fidelity data. The result is data in memory
        (no :attr:`origin`): its file lacks these values."""
        units = dict(units or {})
        converted, held = {}, {}
        for name, values in properties.items():
            held[name] = internal_unit(name, units.get(name, property_unit(name)))
            factor = unit_factor(units.get(name, held[name]), held[name])
            converted[name] = _float_array(name, values) * factor
        declared = {n for n in self.per_atom if n not in properties} | set(per_atom)
        return dataclasses.replace(self, properties={**self.properties, **converted}, units={**self.units, **held},
                                   per_atom=frozenset(declared), origin=None, rows=None)  # fmt: skip

    def select_properties(self, names: Collection[str]) -> Dataset:
        """This data set with only the properties ``names`` (e.g. to :func:`concatenate` it with data that has
        fewer); an unknown name is refused."""
        unknown = sorted(set(names) - set(self.properties))
        if unknown:
            raise DataError(f"no property {', '.join(unknown)}; this data set has {', '.join(self.properties)}")
        keep = [name for name in self.properties if name in names]
        return dataclasses.replace(self, properties={n: self.properties[n] for n in keep},
                                   units={n: self.units[n] for n in keep},
                                   per_atom=frozenset(n for n in self.per_atom if n in keep))  # fmt: skip

    @property
    def origin_rows(self) -> np.ndarray:
        """``[S]`` the row of each structure in :attr:`origin` (``arange(S)`` where the whole origin is held)."""
        return np.arange(len(self)) if self.rows is None else np.asarray(self.rows)

    def with_origin(self, data: Mapping[str, Any]) -> Dataset:
        """This data set (all rows of it) marked as read from ``data`` (a run configuration's ``data`` section)."""
        return dataclasses.replace(self, origin=DataOrigin(dict(data), len(self)), rows=None)


#: The value an :attr:`Dataset.info` entry takes, by dtype kind, for structures of a part that lacks it.
INFO_FILL = {"U": "", "i": -1, "u": 0, "f": np.nan, "b": False}


def concatenate(parts: Sequence[Dataset]) -> Dataset:
    """The structures of all ``parts`` in order, as one data set (the first part's metadata and source units).

    Every part must have the same properties, each with the same kind (per atom or not) and unit; an
    :attr:`Dataset.info` entry that some parts lack is filled there with :data:`INFO_FILL` (``""``, ``-1``, NaN,
    ``False``)."""
    if not parts:
        raise DataError("nothing to concatenate; pass at least one data set")
    first = parts[0]
    for index, part in enumerate(parts[1:], start=1):
        if (set(part.properties), part.per_atom, part.units) != (set(first.properties), first.per_atom, first.units):
            raise DataError(
                f"data set {index} has properties {_describe_properties(part)}, data set 0 has "
                f"{_describe_properties(first)}; concatenate only data sets with the same properties"
            )
    info = {}
    for name in dict.fromkeys(n for part in parts for n in part.info):
        kind = next(part.info[name].dtype.kind for part in parts if name in part.info)
        info[name] = np.concatenate([part.info.get(name, np.full(len(part), INFO_FILL[kind])) for part in parts])
    return dataclasses.replace(
        first,
        numbers=np.concatenate([part.numbers for part in parts]),
        positions=np.concatenate([part.positions for part in parts]),
        n_atoms=np.concatenate([part.n_atoms for part in parts]),
        cell=np.concatenate([part.cell for part in parts]),
        pbc=np.concatenate([part.pbc for part in parts]),
        properties={name: np.concatenate([part.properties[name] for part in parts]) for name in first.properties},
        info=info,
        origin=None,
        rows=None,
    )


def _origin_name(origin: DataOrigin) -> str:
    data = origin.data
    return f"built-in {data['builtin']!r}" if "builtin" in data else str(data.get("path") or data.get("source"))


def _describe_properties(dataset: Dataset) -> str:
    """``energy [eV], forces [eV/Ang, per atom]``."""
    return (
        ", ".join(
            f"{name} [{dataset.units[name]}{', per atom' if dataset.is_per_atom(name) else ''}]"
            for name in sorted(dataset.properties)
        )
        or "none"
    )


def _info_array(name: str, values, count: int) -> np.ndarray:
    """``values`` as a ``[count]`` array of str, int, float or bool (see :attr:`Dataset.info`)."""
    array = np.asarray(values)
    if array.dtype.kind == "O" and all(isinstance(v, str) for v in array.ravel()):
        array = array.astype(str)
    if array.shape != (count,) or array.dtype.kind not in INFO_FILL:
        raise DataError(
            f"info {name!r} must be one string, integer, float or bool per structure ([{count}]), got "
            f"{array.dtype} of shape {list(array.shape)}; give one plain value per structure"
        )
    return array


def _is_ase_result(ase_name: str, value: np.ndarray, per_atom: bool) -> bool:
    """Whether ``value`` can be an ASE calculator result ``ase_name`` (a dipole must be a vector)."""
    if ase_name == "dipole":
        return value.shape == (3,)
    return ase_name in _ASE_PER_ATOM_RESULTS if per_atom else ase_name in ("energy", "stress")


def _atoms_property(atoms: Atoms, name: str, index: int) -> tuple[np.ndarray, bool]:
    """Property ``name`` of ``atoms`` (structure ``index``) and whether it is per atom (see ``from_atoms``)."""
    results = atoms.calc.results if atoms.calc is not None else {}
    ase_name = ASE_RESULT_NAMES.get(name, name)
    if ase_name in results:
        return from_ase_result(name, results[ase_name]), ase_name in _ASE_PER_ATOM_RESULTS
    if name in atoms.arrays and name not in ("numbers", "positions"):
        return np.asarray(atoms.arrays[name]), True
    if name in atoms.info:
        return from_ase_result(name, atoms.info[name]), False
    if name == "total_charge":
        return np.asarray(total_charge_of(atoms)), False
    have = ", ".join(sorted(atoms_properties(atoms))) or "nothing"
    raise MissingPropertyError(
        f"structure {index} has no property {name!r} (it has {have}); ask only for properties every structure has "
        "(properties=...)"
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
    """The names (jaxatom's) of the properties ``atoms`` carries: calculator results, ``info`` entries and per-atom
    arrays."""
    names = set(atoms.info) | (set(atoms.arrays) - {"numbers", "positions"})
    if atoms.calc is not None:
        ase_names = {ase: name for name, ase in ASE_RESULT_NAMES.items()}
        names |= {ase_names.get(key, key) for key in atoms.calc.results}
    return names
