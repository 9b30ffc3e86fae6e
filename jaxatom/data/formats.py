"""Reading and writing data sets: ASE databases (incl. SchNetPack's layout), extended XYZ, MD17/rMD17 npz, HDF5.

Every reader converts to jaxatom units and records the source units in ``Dataset.source_units``. Writers write to a
temporary file next to the target and move it into place, so an interrupted write never leaves a broken file.
"""

from __future__ import annotations

import functools
import os
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import h5py
import numpy as np
from ase.db import connect
from ase.io import read

from jaxatom.data.dataset import (
    PER_ATOM_PROPERTIES,
    PROPERTY_UNITS,
    Dataset,
    MissingPropertyError,
    atoms_properties,
)
from jaxatom.errors import DataError, JaxAtomError

__all__ = [
    "read_ase_db",
    "write_ase_db",
    "read_extxyz",
    "read_md17_npz",
    "read_rmd17_npz",
    "read_hdf5",
    "write_hdf5",
    "read_dataset",
    "DataFileNotFoundError",
    "SUFFIXES",
]

#: The data file suffixes :func:`read_dataset` understands.
SUFFIXES = ".db, .xyz/.extxyz, .npz or .h5/.hdf5"
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


# -- ASE databases -------------------------------------------------------------------------------------------------


@_names_file
def read_ase_db(path, properties: Sequence[str] | None = None, units: Mapping[str, str] | None = None) -> Dataset:
    """Read an ASE database; SchNetPack's ``ASEAtomsData`` layout (properties in ``row.data``, units in the metadata
    ``_property_unit_dict`` and ``_distance_unit``, ``atomrefs``) is understood.

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
    unit_dict = dict(meta.get("_property_unit_dict", {}))
    unit_dict.update(units or {})
    length_unit = meta.get("_distance_unit", "Ang")
    available = set.intersection(*(set(r.data) | _calculator_keys(r) for r in rows))
    names = list(properties) if properties is not None else sorted(available)
    missing = [n for n in names if n not in available]
    if missing:
        raise MissingPropertyError(
            f"not every structure in {path} has {', '.join(missing)} (all have: {', '.join(sorted(available))}); "
            "ask only for properties every structure has (properties=...)"
        )
    values = {name: [_row_property(r, name) for r in rows] for name in names}
    metadata = {"source": "ase_db", "file": str(path)}
    if "atomrefs" in meta:
        metadata["atomrefs"] = {k: list(map(float, v)) for k, v in meta["atomrefs"].items()}
    return Dataset.from_arrays(
        numbers=[r.numbers for r in rows],
        positions=[r.positions for r in rows],
        properties=values,
        units={name: unit_dict.get(name, PROPERTY_UNITS.get(name, "1")) for name in names},
        length_unit=length_unit,
        cell=np.array([r.cell[:] for r in rows]).reshape(len(rows), 3, 3),
        pbc=np.array([r.pbc for r in rows]).reshape(len(rows), 3),
        metadata=metadata,
    )


def _calculator_keys(row) -> set[str]:
    return {key for key in ("energy", "forces", "stress", "dipole", "charges") if row.get(key) is not None}


def _row_property(row, name: str) -> np.ndarray:
    value = np.asarray(row.data[name] if name in row.data else row.get(name), np.float64)
    # SchNetPack stores per-structure values with a leading axis of length 1 (energy [1], dipole [1, 3])
    if name not in PER_ATOM_PROPERTIES and value.ndim >= 1 and value.shape[0] == 1:
        value = value[0]
    return value


def write_ase_db(dataset: Dataset, path) -> None:
    """Write in SchNetPack's ``ASEAtomsData`` layout (properties in ``data``, unit metadata), readable by both."""
    path = Path(path)
    partial = _partial(path)
    partial.unlink(missing_ok=True)
    with connect(partial, type="db") as db:
        for index in range(len(dataset)):
            atoms = dataset.to_atoms(index)
            atoms.calc = None
            data = {}
            for name, values in dataset.properties.items():
                value = values[dataset.atoms_of(index)] if name in PER_ATOM_PROPERTIES else values[index]
                data[name] = np.atleast_1d(np.asarray(value))
            db.write(atoms, data=data)
        db.metadata = {
            "_property_unit_dict": {name: PROPERTY_UNITS.get(name, "1") for name in dataset.properties},
            "_distance_unit": "Ang",
            "atomrefs": dataset.metadata.get("atomrefs", {}),
        }
    os.replace(partial, path)


# -- extended XYZ ----------------------------------------------------------------------------------------------------


@_names_file
def read_extxyz(path, properties: Sequence[str] | None = None, units: Mapping[str, str] | None = None) -> Dataset:
    """Read an extended XYZ file (``energy`` in the comment line, ``forces`` as a column, or calculator results).

    Args:
        path: the ``.xyz``/``.extxyz`` file.
        properties: which properties to read (default: ``energy`` and ``forces``, each if every structure has it).
        units: units of the properties as stored (default: jaxatom units).
    """
    path = _check_file(path)
    with _parsing(path, "extended XYZ"):
        structures = read(path, index=":", format="extxyz")
    _require_structures(len(structures), path)
    if properties is None:
        common = set.intersection(*(atoms_properties(a) for a in structures))
        properties = [name for name in ("energy", "forces") if name in common]
    dataset = Dataset.from_atoms(structures, properties=properties, metadata={"source": "extxyz", "file": str(path)})
    if not units:
        return dataset
    return Dataset.from_arrays(
        numbers=[a.numbers for a in structures],
        positions=[a.positions for a in structures],
        properties={n: _split(dataset, n) for n in properties},
        units={n: units.get(n, PROPERTY_UNITS.get(n, "1")) for n in properties},
        cell=dataset.cell,
        pbc=dataset.pbc,
        metadata=dataset.metadata,
    )


def _split(dataset: Dataset, name: str):
    values = dataset.properties[name]
    if name in PER_ATOM_PROPERTIES:
        return [values[dataset.atoms_of(i)] for i in range(len(dataset))]
    return values


# -- MD17-style npz --------------------------------------------------------------------------------------------------


def _load_npz(path) -> dict[str, np.ndarray]:
    """All arrays of an npz file (no pickled objects)."""
    path = _check_file(path)
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not an npz archive (a zip of named arrays); write it with np.savez")
    with _parsing(path, "an npz archive"), np.load(path) as data:
        return {k: data[k] for k in data.files}


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
    unit attributes and the metadata as JSON-compatible attributes."""
    path = Path(path)
    partial = _partial(path)
    with h5py.File(partial, "w") as out:
        out.attrs["format"] = "jaxatom-dataset"
        out.attrs["format_version"] = 1
        for key in ("numbers", "positions", "n_atoms", "cell", "pbc"):
            out.create_dataset(key, data=getattr(dataset, key), compression="gzip")
        out["positions"].attrs["unit"] = "Ang"
        group = out.create_group("properties")
        for name, values in dataset.properties.items():
            group.create_dataset(name, data=values, compression="gzip")
            group[name].attrs["unit"] = PROPERTY_UNITS.get(name, "1")
            group[name].attrs["per_atom"] = name in PER_ATOM_PROPERTIES
            if name in dataset.source_units:
                group[name].attrs["source_unit"] = dataset.source_units[name]
        for key, value in dataset.metadata.items():
            out.attrs[f"meta:{key}"] = repr(value) if isinstance(value, dict) else value
    os.replace(partial, path)


@_names_file
def read_hdf5(path) -> Dataset:
    """Read a data set written by :func:`write_hdf5`, or a built-in GFN2-xTB trajectory file."""
    path = _check_file(path)
    with _parsing(path, "an HDF5 file"):
        data = h5py.File(path, "r")
    with data, _parsing(path, "a jaxatom HDF5 data set or trajectory"):
        if data.attrs.get("format") == "jaxatom-dataset":
            return _read_hdf5_dataset(data, path)
        if {"numbers", "positions", "energy", "forces"} <= set(data):
            return _read_hdf5_trajectory(data, path)
        members = ", ".join(sorted(data)) or "nothing"
    raise DataError(
        f"{path} is neither a jaxatom data set (written by write_hdf5) nor a trajectory with numbers, positions, "
        f"energy and forces (it holds: {members}); convert it with write_hdf5"
    )


def _read_hdf5_dataset(data: h5py.File, path: Path) -> Dataset:
    properties = {name: data["properties"][name][:] for name in data["properties"]}
    units = {name: str(data["properties"][name].attrs["unit"]) for name in properties}
    metadata = {k[5:]: _attr(v) for k, v in data.attrs.items() if k.startswith("meta:")}
    n_atoms = data["n_atoms"][:]
    _require_structures(len(n_atoms), path)
    offsets = np.concatenate([[0], np.cumsum(n_atoms)])
    split = [slice(a, b) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    return Dataset.from_arrays(
        numbers=[data["numbers"][s] for s in split],
        positions=[data["positions"][s] for s in split],
        properties={n: [v[s] for s in split] if n in PER_ATOM_PROPERTIES else v for n, v in properties.items()},
        units=units,
        cell=data["cell"][:],
        pbc=data["pbc"][:],
        metadata=metadata,
    )


def _read_hdf5_trajectory(data: h5py.File, path: Path) -> Dataset:
    positions = data["positions"][:].astype(np.float64)
    _require_structures(len(positions), path)
    return Dataset.from_arrays(
        numbers=data["numbers"][:],
        positions=positions,
        properties={"energy": data["energy"][:], "forces": data["forces"][:].astype(np.float64)},
        units={"energy": str(data["energy"].attrs["unit"]), "forces": str(data["forces"].attrs["unit"])},
        length_unit=str(data["positions"].attrs["unit"]),
        metadata={"source": "trajectory_hdf5", "file": str(path), **{k: _attr(v) for k, v in data.attrs.items()}},
    )


def _attr(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_dataset(path, **options) -> Dataset:
    """Read any supported file, chosen by its extension (``.db``, ``.xyz``/``.extxyz``, ``.npz``, ``.h5``/``.hdf5``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        _check_file(path)  # refuses the directory by name, whatever its suffix
    if suffix == ".db":
        return read_ase_db(path, **options)
    if suffix in (".xyz", ".extxyz"):
        return read_extxyz(path, **options)
    if suffix in (".h5", ".hdf5"):
        return read_hdf5(path)
    if suffix == ".npz":
        keys = _load_npz(path)
        return read_rmd17_npz(path) if "nuclear_charges" in keys else read_md17_npz(path, **options)
    raise DataError(f"unknown data file type {suffix!r} for {path}; use {SUFFIXES} (or convert the file)")
