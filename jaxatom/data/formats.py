"""Reading and writing data sets: ASE databases (incl. SchNetPack's layout), extended XYZ, npz (jaxatom's own layout,
MD17/rMD17), HDF5.

Every reader converts to jaxatom units and records the source units in ``Dataset.source_units``; every writer records
each property's unit and kind (per atom or per structure), so any property round-trips. Writers write to a temporary
file next to the target and move it into place, so an interrupted write never leaves a broken file.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import zipfile
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np
from ase import Atoms
from ase.db import connect
from ase.io import read, write

from jaxatom.data.dataset import (
    ASE_RESULT_NAMES,
    Dataset,
    MissingPropertyError,
    atoms_properties,
    from_ase_result,
    internal_unit,
)
from jaxatom.errors import DataError, JaxAtomError
from jaxatom.properties import is_per_atom, property_info, property_unit
from jaxatom.units import unit_factor

__all__ = [
    "read_ase_db",
    "write_ase_db",
    "read_extxyz",
    "write_extxyz",
    "read_npz",
    "write_npz",
    "read_md17_npz",
    "read_rmd17_npz",
    "read_hdf5",
    "read_hdf5_info",
    "write_hdf5",
    "read_dataset",
    "DataFileNotFoundError",
    "SUFFIXES",
]

#: The data file suffixes :func:`read_dataset` understands.
SUFFIXES = ".db, .xyz/.extxyz, .npz or .h5/.hdf5"
# The ``format`` entry of the HDF5 and npz files jaxatom writes.
_FORMAT = "jaxatom-dataset"
Reader = TypeVar("Reader", bound=Callable[..., Dataset])


class DataFileNotFoundError(DataError, FileNotFoundError):
    """There is no data file at the given path (also a ``FileNotFoundError``)."""


def _check_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory, not a data file; pass one data file ({SUFFIXES})")
    if not path.is_file():
        raise DataFileNotFoundError(f"no data file at {path}; check the path")
    return path


def _names_file(reader: Reader) -> Reader:
    """Make every jaxatom error of ``reader(path, ...)`` name the file (Dataset's checks do not know it)."""

    @functools.wraps(reader)
    def read_file(path, *args, **kwargs) -> Dataset:
        try:
            return reader(path, *args, **kwargs)
        except JaxAtomError as err:
            if str(Path(path)) in str(err):
                raise
            raise type(err)(f"in {Path(path)}: {err}") from err

    return read_file  # type: ignore[return-value]


@contextmanager
def _parsing(path: Path, kind: str) -> Iterator[None]:
    """Turn any failure of a third-party parser on ``path`` into a :class:`DataError` naming file and format."""
    try:
        yield
    except JaxAtomError:
        raise
    except Exception as err:  # parsers raise many unrelated types on malformed input
        raise DataError(
            f"cannot read {path} as {kind} ({type(err).__name__}: {err}); check that the file is {kind} and "
            "complete (the reader is chosen by the file's suffix)"
        ) from err


def _require_structures(count: int, path: Path) -> None:
    if count == 0:
        raise DataError(f"{path} holds no structures; pass a data file with at least one structure")


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def _ragged_dataset(
    arrays: Mapping[str, np.ndarray],
    properties: Mapping[str, np.ndarray],
    units: Mapping[str, str],
    per_atom: Collection[str],
    metadata: Mapping[str, Any],
) -> Dataset:
    """A data set from jaxatom's flat layout: ``arrays`` holds ``numbers [A]``, ``positions [A, 3]`` (Å),
    ``n_atoms [S]``, ``cell [S, 3, 3]``, ``pbc [S, 3]``; ``properties`` ``[A, ...]`` or ``[S, ...]`` arrays."""
    offsets = np.concatenate([[0], np.cumsum(arrays["n_atoms"])]).astype(np.int64)
    split = [slice(a, b) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    return Dataset.from_arrays(
        numbers=[arrays["numbers"][s] for s in split],
        positions=[arrays["positions"][s] for s in split],
        properties={n: [v[s] for s in split] if n in per_atom or is_per_atom(n) else v for n, v in properties.items()},
        units=units,
        cell=arrays["cell"],
        pbc=arrays["pbc"],
        metadata=metadata,
        per_atom=per_atom,
    )


def _structure(dataset: Dataset, index: int) -> Atoms:
    """Structure ``index`` without its properties."""
    atoms = dataset.atoms_of(index)
    return Atoms(dataset.numbers[atoms], dataset.positions[atoms], cell=dataset.cell[index], pbc=dataset.pbc[index])


# -- ASE databases -------------------------------------------------------------------------------------------------

# ASE database columns that hold calculator results
_ROW_RESULTS = ("energy", "forces", "stress", "dipole", "charges", "magmoms")
_JAXATOM_NAMES = {ase: name for name, ase in ASE_RESULT_NAMES.items()}


@_names_file
def read_ase_db(path, properties: Sequence[str] | None = None, units: Mapping[str, str] | None = None) -> Dataset:
    """Read an ASE database; SchNetPack's ``ASEAtomsData`` layout (properties in ``row.data``, per-structure values
    with a leading axis of 1, units in the metadata ``_property_unit_dict`` and ``_distance_unit``, ``atomrefs``) is
    understood, as are calculator results (``dipole`` is read as ``dipole_moment``).

    A property is per atom if jaxatom knows it so, else if the metadata ``_jaxatom_per_atom`` (written by
    :func:`write_ase_db`) lists it, else (other writers) if every row has one entry per atom and not every structure
    is a single atom. SchNetPack's ``atomrefs`` tables of the properties read become ``metadata["atomrefs_all"]``
    (``{name: {Z: value}}``, jaxatom units) and that of ``energy`` ``metadata["atomrefs"]`` (``{Z: eV}``), as for QM9.

    Args:
        path: the ``.db`` file.
        properties: which properties to read (default: all that every row has).
        units: units of properties for databases without SchNetPack metadata (default: jaxatom units).
    """
    path = _check_file(path)
    with _parsing(path, "an ASE database"), connect(path) as db:
        meta = db.metadata
        rows = list(db.select())
    _require_structures(len(rows), path)
    unit_dict = {**meta.get("_property_unit_dict", {}), **(units or {})}
    available = set.intersection(*(set(r.data) | _calculator_keys(r) for r in rows))
    names = list(properties) if properties is not None else sorted(available)
    missing = [n for n in names if n not in available]
    if missing:
        raise MissingPropertyError(
            f"not every structure in {path} has {', '.join(missing)} (all have: {', '.join(sorted(available))}); "
            "ask only for properties every structure has (properties=...)"
        )
    values = {name: [_row_property(r, name) for r in rows] for name in names}
    counts = [r.natoms for r in rows]
    per_atom = [n for n in names if _row_per_atom(n, values[n], counts, meta.get("_jaxatom_per_atom"))]
    units = {name: unit_dict.get(name, property_unit(name)) for name in names}
    metadata = {"source": "ase_db", "file": str(path), **_atomrefs_metadata(meta.get("atomrefs") or {}, units)}
    return Dataset.from_arrays(
        numbers=[r.numbers for r in rows],
        positions=[r.positions for r in rows],
        properties={n: v if n in per_atom else [_drop_leading_one(x) for x in v] for n, v in values.items()},
        units=units,
        length_unit=meta.get("_distance_unit", "Ang"),
        cell=np.array([r.cell[:] for r in rows]).reshape(len(rows), 3, 3),
        pbc=np.array([r.pbc for r in rows]).reshape(len(rows), 3),
        metadata=metadata,
        per_atom=per_atom,
    )


def _calculator_keys(row) -> set[str]:
    return {_JAXATOM_NAMES.get(key, key) for key in _ROW_RESULTS if row.get(key) is not None}


def _row_property(row, name: str) -> np.ndarray:
    if name in row.data:
        return np.asarray(row.data[name], np.float64)
    return from_ase_result(name, np.asarray(row.get(ASE_RESULT_NAMES.get(name, name)), np.float64))


def _row_per_atom(name: str, values: Sequence[np.ndarray], counts: Sequence[int], declared: list | None) -> bool:
    """Whether ``name`` is per atom: its known kind, else the writer's declaration, else one entry per atom."""
    if property_info(name) is not None:
        return is_per_atom(name)
    if declared is not None:
        return name in declared
    one_per_atom = all(v.ndim >= 1 and len(v) == n for v, n in zip(values, counts, strict=True))
    return one_per_atom and any(n > 1 for n in counts)


def _drop_leading_one(value: np.ndarray) -> np.ndarray:
    """A per-structure value without SchNetPack's leading axis of 1 (energy ``[1]``, dipole ``[1, 3]``)."""
    return value[0] if value.ndim >= 1 and value.shape[0] == 1 else value


def _atomrefs_metadata(tables: Mapping[str, Sequence[float]], units: Mapping[str, str]) -> dict[str, Any]:
    """SchNetPack's ``atomrefs`` (``{name: [value per Z]}`` in the property's unit) of the properties read, as
    ``atomrefs_all`` (``{name: {Z: value}}``, jaxatom units, nonzero entries) and ``atomrefs`` (energy, eV)."""
    converted = {}
    for name, table in tables.items():
        if name in units:
            factor = unit_factor(units[name], internal_unit(name, units[name]))
            refs = {int(z): float(v) * factor for z, v in enumerate(table) if v != 0}
            if refs:
                converted[name] = refs
    metadata: dict[str, Any] = {"atomrefs_all": converted} if converted else {}
    if "energy" in converted:
        metadata["atomrefs"] = converted["energy"]
    return metadata


def write_ase_db(dataset: Dataset, path) -> None:
    """Write in SchNetPack's ``ASEAtomsData`` layout, readable by both: properties in ``row.data`` (per structure
    with a leading axis of 1), metadata ``_property_unit_dict`` (jaxatom units), ``_distance_unit`` (Å),
    ``atomrefs`` (SchNetPack's tables from ``metadata["atomrefs_all"]``/``["atomrefs"]``) and ``_jaxatom_per_atom``
    (the per-atom properties, which SchNetPack does not record)."""
    path = Path(path)
    partial = _partial(path)
    partial.unlink(missing_ok=True)
    with connect(partial, type="db") as db:
        for index in range(len(dataset)):
            data = {name: _schnetpack_value(dataset, name, index) for name in dataset.properties}
            db.write(_structure(dataset, index), data=data)
        db.metadata = {
            "_property_unit_dict": dict(dataset.units),
            "_distance_unit": "Ang",
            "atomrefs": _schnetpack_atomrefs(dataset),
            "_jaxatom_per_atom": sorted(dataset.per_atom),
        }
    os.replace(partial, path)


def _schnetpack_value(dataset: Dataset, name: str, index: int) -> np.ndarray:
    value = np.asarray(dataset.value(name, index))
    return value if dataset.is_per_atom(name) else value[None]


def _schnetpack_atomrefs(dataset: Dataset) -> dict[str, list[float]]:
    """SchNetPack's ``{name: [value per Z]}`` for the properties of ``dataset`` that have references in its
    metadata (``atomrefs_all`` ``{name: {Z: value}}``, ``atomrefs`` ``{Z: eV}`` for the energy)."""
    refs = dict(dataset.metadata.get("atomrefs_all", {}))
    if "energy" not in refs and "atomrefs" in dataset.metadata:
        refs["energy"] = dataset.metadata["atomrefs"]
    tables = {}
    for name, by_z in refs.items():
        if name in dataset.properties and isinstance(by_z, Mapping):
            table = np.zeros(max([100, *(int(z) + 1 for z in by_z)]))
            table[[int(z) for z in by_z]] = list(by_z.values())
            tables[name] = table.tolist()
    return tables


# -- extended XYZ ----------------------------------------------------------------------------------------------------

# The comment-line entry in which write_extxyz records each property's unit and value shape (JSON).
_EXTXYZ_KEY = "jaxatom_properties"


@_names_file
def read_extxyz(path, properties: Sequence[str] | None = None, units: Mapping[str, str] | None = None) -> Dataset:
    """Read an extended XYZ file: calculator results by their kind, ``info`` (comment line) entries per structure,
    ``arrays`` (columns) per atom; see :meth:`Dataset.from_atoms`.

    Args:
        path: the ``.xyz``/``.extxyz`` file.
        properties: which properties to read (default: those :func:`write_extxyz` recorded, else ``energy``,
            ``forces`` and ``stress``, each if every structure has it).
        units: units of the properties as stored, e.g. ``{"stress": "GPa"}`` (default: as :func:`write_extxyz`
            recorded them, else jaxatom's for known properties, else ``"1"``).

    ``stress`` is ASE's: a Voigt 6-vector ``[xx, yy, zz, yz, xz, xy]`` or a 3×3 matrix in ``info`` or among the
    calculator results, ``(1/V) dE/dε`` (positive = tensile), as ``atoms.get_stress()`` returns it; ASE writes it in
    eV/Å³, files from other codes may hold GPa or kbar (declare it with ``units``).
    """
    path = _check_file(path)
    with _parsing(path, "extended XYZ"):
        structures = read(path, index=":", format="extxyz")
    _require_structures(len(structures), path)
    recorded = _extxyz_record(structures, path)
    if properties is None and recorded:
        properties = list(recorded["units"])
    elif properties is None:
        common = set.intersection(*(atoms_properties(a) for a in structures))
        properties = [name for name in ("energy", "forces", "stress") if name in common]
    return Dataset.from_atoms(
        structures,
        properties=properties,
        metadata={"source": "extxyz", "file": str(path)},
        units={**recorded.get("units", {}), **(units or {})},
    )


def _extxyz_record(structures: Sequence[Atoms], path: Path) -> dict[str, Any]:
    """What :func:`write_extxyz` recorded (``units``, ``shapes``), taken out of every structure's ``info``, with the
    recorded value shapes restored (columns hold at most a vector per atom); ``{}`` for other files."""
    text = structures[0].info.get(_EXTXYZ_KEY)
    if text is None:
        return {}
    try:
        record = json.loads(text)
        shapes = {name: tuple(shape) for name, shape in record["shapes"].items()}
        units = dict(record["units"])
    except (TypeError, ValueError, KeyError) as err:
        raise DataError(f"{path}: the {_EXTXYZ_KEY} entry is not what write_extxyz writes ({err}); remove it") from err
    for atoms in structures:
        atoms.info.pop(_EXTXYZ_KEY, None)
        for name, shape in shapes.items():
            if name in atoms.arrays:
                atoms.arrays[name] = atoms.arrays[name].reshape(len(atoms), *shape)
            elif name in atoms.info:
                atoms.info[name] = np.reshape(atoms.info[name], shape)
    return {"units": units, "shapes": shapes}


def write_extxyz(dataset: Dataset, path) -> None:
    """Write an extended XYZ file (positions, forces and other per-atom values with 8 decimals): properties as
    :meth:`Dataset.to_atoms` places them, plus a comment-line entry ``jaxatom_properties`` recording each property's
    unit and value shape, which :func:`read_extxyz` uses."""
    path = Path(path)
    partial = _partial(path)
    record = json.dumps(
        {"units": dict(dataset.units), "shapes": {n: list(np.shape(v)[1:]) for n, v in dataset.properties.items()}}
    )
    frames = []
    for index in range(len(dataset)):
        atoms = dataset.to_atoms(index)
        for name, values in atoms.arrays.items():
            if values.ndim > 2:  # an extended XYZ column holds a scalar or a vector per atom
                atoms.arrays[name] = values.reshape(len(atoms), -1)
        atoms.info[_EXTXYZ_KEY] = record
        frames.append(atoms)
    write(partial, frames, format="extxyz")
    os.replace(partial, path)


# -- npz -------------------------------------------------------------------------------------------------------------


def _load_npz(path) -> dict[str, np.ndarray]:
    """All arrays of an npz file (no pickled objects)."""
    path = _check_file(path)
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not an npz archive (a zip of named arrays); write it with np.savez")
    with _parsing(path, "an npz archive"), np.load(path) as data:
        return {k: data[k] for k in data.files}


def read_npz(path, **options) -> Dataset:
    """Read an npz archive, told apart by its keys: jaxatom's layout (:func:`write_npz`; ``units={name: unit}``
    overrides the recorded units), revised MD17 (:func:`read_rmd17_npz`) or sGDML/MD17/MD22 (:func:`read_md17_npz`,
    which takes ``options``)."""
    arrays = _load_npz(path)
    if "jaxatom" in arrays:
        return _read_jaxatom_npz(path, arrays, **options)
    if "units" in options:
        raise DataError(
            f"{path} is an MD17-style npz, whose units are fixed (rMD17) or set with energy_unit/length_unit; "
            "units={...} applies to jaxatom's own npz layout"
        )
    if "nuclear_charges" in arrays:
        return read_rmd17_npz(path)
    return read_md17_npz(path, **options)


def write_npz(dataset: Dataset, path) -> None:
    """Write jaxatom's npz layout (no pickled objects): ``numbers [A]``, ``positions [A, 3]`` (Å), ``n_atoms [S]``,
    ``cell [S, 3, 3]`` (Å), ``pbc [S, 3]``, ``properties/<name>`` (``[A, ...]`` or ``[S, ...]``), ``info/<name>``
    (``[S]``, :attr:`Dataset.info`) and ``jaxatom``, a JSON string with ``format``, ``format_version``, ``units``,
    ``per_atom`` and ``metadata``."""
    path = Path(path)
    partial = _partial(path)
    description = {
        "format": _FORMAT,
        "format_version": 1,
        "units": dict(dataset.units),
        "per_atom": sorted(dataset.per_atom),
        "metadata": dict(dataset.metadata),
    }
    arrays = {key: getattr(dataset, key) for key in ("numbers", "positions", "n_atoms", "cell", "pbc")}
    arrays.update({f"properties/{name}": values for name, values in dataset.properties.items()})
    arrays.update({f"info/{name}": values for name, values in dataset.info.items()})
    arrays["jaxatom"] = np.array(json.dumps(description, default=_json_value))
    with open(partial, "wb") as out:
        np.savez(out, **arrays)
    os.replace(partial, path)


@_names_file
def _read_jaxatom_npz(path, arrays: Mapping[str, np.ndarray], units: Mapping[str, str] | None = None) -> Dataset:
    given = dict(units or {})
    try:
        description = json.loads(str(arrays["jaxatom"]))
        units, per_atom = dict(description["units"]), list(description["per_atom"])
    except (TypeError, ValueError, KeyError) as err:
        raise DataError(f"its 'jaxatom' entry is not what write_npz writes ({err}); write the file again") from err
    if (description.get("format"), description.get("format_version")) != (_FORMAT, 1):
        raise DataError(
            f"it is format {description.get('format')!r} version {description.get('format_version')!r}; this jaxatom "
            f"reads {_FORMAT!r} version 1 (update jaxatom, or write the file again)"
        )
    missing = [k for k in ("numbers", "positions", "n_atoms", "cell", "pbc") if k not in arrays]
    missing += [f"properties/{name}" for name in units if f"properties/{name}" not in arrays]
    if missing:
        raise DataError(f"the jaxatom npz lacks {', '.join(missing)}; write the file again with write_npz")
    _require_structures(len(arrays["n_atoms"]), Path(path))
    properties = {name: arrays[f"properties/{name}"] for name in units}
    units.update({name: unit for name, unit in given.items() if name in units})
    metadata = _int_keys(description.get("metadata", {}))
    info = {key[5:]: arrays[key] for key in arrays if key.startswith("info/")}
    return dataclasses.replace(_ragged_dataset(arrays, properties, units, per_atom, metadata), info=info)


def _json_value(value) -> Any:
    """numpy values as JSON numbers and lists; anything else as its string."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return str(value)


def _int_keys(value: Any) -> Any:
    """``value`` with the keys of nested dicts made integers where they all are (JSON keeps atomic numbers as
    strings, e.g. in ``atomrefs``)."""
    if not isinstance(value, dict):
        return value
    numeric = bool(value) and all(k.lstrip("-").isdigit() for k in value)
    return {int(k) if numeric else k: _int_keys(v) for k, v in value.items()}


def _npz(path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    data = _load_npz(path)
    missing = [k for k in keys if k not in data]
    if missing:
        raise MissingPropertyError(
            f"{path} lacks {', '.join(missing)} (it has {', '.join(data) or 'nothing'}); an MD17-style npz needs "
            f"{', '.join(keys)}"
        )
    positions = data[keys[1]]
    _require_structures(positions.shape[0] if positions.ndim == 3 else 0, Path(path))
    return data


@_names_file
def read_md17_npz(path, energy_unit: str = "kcal/mol", length_unit: str = "Ang") -> Dataset:
    """Read an sGDML/MD17/MD22 npz (``z [N]``, ``R [S, N, 3]``, ``E [S]`` or ``[S, 1]``, ``F [S, N, 3]``).

    Units: energies in ``energy_unit`` (MD17/MD22: kcal/mol; the file's ``e_unit``/``r_unit`` entries win when present),
    forces in ``energy_unit`` per ``length_unit``.
    """
    data = _npz(path, ("z", "R", "E", "F"))
    energy_unit = _unit_entry(data, "e_unit", energy_unit)
    length_unit = _unit_entry(data, "r_unit", length_unit)
    return Dataset.from_arrays(
        numbers=data["z"],
        positions=data["R"],
        properties={"energy": data["E"].reshape(-1), "forces": data["F"]},
        units={"energy": energy_unit, "forces": f"{energy_unit}/{length_unit}"},
        length_unit=length_unit,
        metadata={"source": "md17_npz", "file": str(path), "name": str(data.get("name", ""))},
    )


@_names_file
def read_rmd17_npz(path) -> Dataset:
    """Read a revised-MD17 npz (``nuclear_charges``, ``coords`` Å, ``energies`` and ``forces`` in kcal/mol(/Å))."""
    data = _npz(path, ("nuclear_charges", "coords", "energies", "forces"))
    return Dataset.from_arrays(
        numbers=data["nuclear_charges"],
        positions=data["coords"],
        properties={"energy": data["energies"].reshape(-1), "forces": data["forces"]},
        units={"energy": "kcal/mol", "forces": "kcal/mol/Ang"},
        metadata={"source": "rmd17_npz", "file": str(path)},
    )


def _unit_entry(data: Mapping[str, np.ndarray], key: str, default: str) -> str:
    if key not in data:
        return default
    value = str(np.asarray(data[key]).reshape(-1)[0])
    return {"kcal/mol": "kcal/mol", "Ang": "Ang", "eV": "eV", "Ha": "Ha", "Bohr": "Bohr"}.get(value, value)


# -- HDF5 ----------------------------------------------------------------------------------------------------------


def write_hdf5(dataset: Dataset, path) -> None:
    """Write the ragged arrays (``numbers``, ``positions``, ``n_atoms``, ``cell``, ``pbc``, ``properties/*``) with
    ``unit``, ``per_atom`` and ``source_unit`` attributes per property, the metadata as attributes and
    :attr:`Dataset.info` as ``info/<name>`` ``[S]`` datasets (UTF-8 strings, int64, float64 or bool).

    Atomic: the file is written in full to a temporary file beside ``path``, flushed to disk (``fsync``) and then
    moved into place, so a crash at any moment leaves either the old file or the new one."""
    path = Path(path)
    partial = _partial(path)
    try:
        _write_hdf5(dataset, partial)
        _fsync(partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    """Flush the file (or directory entry) ``path`` to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_hdf5(dataset: Dataset, partial: Path) -> None:
    with h5py.File(partial, "w") as out:
        out.attrs["format"] = _FORMAT
        out.attrs["format_version"] = 1
        for key in ("numbers", "positions", "n_atoms", "cell", "pbc"):
            out.create_dataset(key, data=getattr(dataset, key), compression="gzip")
        out["positions"].attrs["unit"] = "Ang"
        group = out.create_group("properties")
        for name, values in dataset.properties.items():
            group.create_dataset(name, data=values, compression="gzip")
            group[name].attrs["unit"] = dataset.units[name]
            group[name].attrs["per_atom"] = dataset.is_per_atom(name)
            if name in dataset.source_units:
                group[name].attrs["source_unit"] = dataset.source_units[name]
        for key, value in dataset.metadata.items():
            out.attrs[f"meta:{key}"] = repr(value) if isinstance(value, dict) else value
        info = out.create_group("info")
        for name, values in dataset.info.items():
            if values.dtype.kind == "U":
                info.create_dataset(name, data=values.astype(object), dtype=h5py.string_dtype())
            else:
                info.create_dataset(name, data=values)


@_names_file
def read_hdf5(path, units: Mapping[str, str] | None = None) -> Dataset:
    """Read a data set written by :func:`write_hdf5` (each property in the unit its ``unit`` attribute names, e.g.
    ``stress`` in ``"GPa"`` or ``"eV/Ang^3"``), or a built-in GFN2-xTB trajectory file.

    Args:
        units: units of properties as stored, overriding the files' ``unit`` attributes (for files written by other
            tools that lack them or got them wrong).
    """
    path = _check_file(path)
    with _parsing(path, "an HDF5 file"):
        data = h5py.File(path, "r")
    with data, _parsing(path, "a jaxatom HDF5 data set or trajectory"):
        if data.attrs.get("format") == _FORMAT:
            return _read_hdf5_dataset(data, path, units or {})
        if {"numbers", "positions", "energy", "forces"} <= set(data):
            return _read_hdf5_trajectory(data, path, units or {})
        members = ", ".join(sorted(data)) or "nothing"
    raise DataError(
        f"{path} is neither a jaxatom data set (written by write_hdf5) nor a trajectory with numbers, positions, "
        f"energy and forces (it holds: {members}); convert it with write_hdf5"
    )


def _read_hdf5_dataset(data: h5py.File, path: Path, given: Mapping[str, str]) -> Dataset:
    group = data["properties"]
    properties = {name: group[name][:] for name in group}
    units = {name: given.get(name, str(group[name].attrs.get("unit", property_unit(name)))) for name in properties}
    per_atom = [name for name in properties if bool(group[name].attrs.get("per_atom", is_per_atom(name)))]
    metadata = {k[5:]: _attr(v) for k, v in data.attrs.items() if k.startswith("meta:")}
    arrays = {key: data[key][:] for key in ("numbers", "positions", "n_atoms", "cell", "pbc")}
    _require_structures(len(arrays["n_atoms"]), path)
    dataset = _ragged_dataset(arrays, properties, units, per_atom, metadata)
    return dataclasses.replace(dataset, info=read_hdf5_info(data))


def read_hdf5_info(data: h5py.File | h5py.Group, names: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """The ``info/<name>`` ``[S]`` arrays of an open data set file (strings as ``str`` arrays), all or ``names``
    (those present); ``{}`` for files without (written before jaxatom had :attr:`Dataset.info`)."""
    group = data.get("info", {})
    chosen = group if names is None else [name for name in names if name in group]
    return {name: _info_values(group[name]) for name in chosen}


def _info_values(values: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(values.dtype) is not None:
        return np.asarray(values.asstr()[:], dtype=str)
    return values[:]


def _read_hdf5_trajectory(data: h5py.File, path: Path, given: Mapping[str, str]) -> Dataset:
    positions = data["positions"][:].astype(np.float64)
    _require_structures(len(positions), path)
    properties = {"energy": data["energy"][:], "forces": data["forces"][:].astype(np.float64)}
    # optional labels (older files lack them): dipole_moment [F, 3], charges [F, N], polarizability [F, 3, 3];
    # charges have one value per atom, so they go in as one array per structure
    for name in ("dipole_moment", "charges", "polarizability"):
        if name in data:
            values = data[name][:].astype(np.float64)
            properties[name] = list(values) if name == "charges" else values
    return Dataset.from_arrays(
        numbers=data["numbers"][:],
        positions=positions,
        properties=properties,
        units={name: given.get(name, str(data[name].attrs["unit"])) for name in properties},
        length_unit=str(data["positions"].attrs["unit"]),
        metadata={"source": "trajectory_hdf5", "file": str(path), **{k: _attr(v) for k, v in data.attrs.items()}},
    )


def _attr(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_dataset(path, **options) -> Dataset:
    """Read any supported file, chosen by its extension (``.db``, ``.xyz``/``.extxyz``, ``.npz``, ``.h5``/``.hdf5``).

    ``options`` go to the reader. The readers of ASE databases, extended XYZ, jaxatom's npz and HDF5 take
    ``units={name: unit}``, the units the file stores properties in where it does not record them (or records them
    wrongly), e.g. ``{"stress": "GPa"}``; values are converted to jaxatom's units (stress: eV/Å³) and the given unit
    is kept in ``Dataset.source_units``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        _check_file(path)  # refuses the directory by name, whatever its suffix
    readers = {".db": read_ase_db, ".xyz": read_extxyz, ".extxyz": read_extxyz, ".h5": read_hdf5,
               ".hdf5": read_hdf5, ".npz": read_npz}  # fmt: skip
    if suffix not in readers:
        raise DataError(f"unknown data file type {suffix!r} for {path}; use {SUFFIXES} (or convert the file)")
    dataset = readers[suffix](path, **options)
    origin = {"path": str(path.resolve()), **({"units": dict(options["units"])} if options.get("units") else {})}
    return dataset.with_origin(origin) if set(options) <= {"units"} else dataset
