"""Reading and writing data sets: ASE databases (incl. SchNetPack's layout), extended XYZ, MD17/rMD17 npz, HDF5.

Every reader converts to jaxatom units and records the source units in ``Dataset.source_units``. Writers write to a
temporary file next to the target and move it into place, so an interrupted write never leaves a broken file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
from ase.db import connect
from ase.io import read

from jaxatom.data.dataset import PER_ATOM_PROPERTIES, PROPERTY_UNITS, Dataset

__all__ = [
    "read_ase_db",
    "write_ase_db",
    "read_extxyz",
    "read_md17_npz",
    "read_rmd17_npz",
    "read_hdf5",
    "write_hdf5",
    "read_dataset",
]


def _check_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {path}")
    return path


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


# -- ASE databases -------------------------------------------------------------------------------------------------


def read_ase_db(path, properties: Sequence[str] | None = None, units: Mapping[str, str] | None = None) -> Dataset:
    """Read an ASE database; SchNetPack's ``ASEAtomsData`` layout (properties in ``row.data``, units in the metadata
    ``_property_unit_dict`` and ``_distance_unit``, ``atomrefs``) is understood.

    Args:
        path: the ``.db`` file.
        properties: which properties to read (default: all that every row has).
        units: units of properties for databases without SchNetPack metadata (default: jaxatom units).
    """
    path = _check_file(path)
    with connect(path) as db:
        meta = db.metadata
        rows = list(db.select())
    if not rows:
        raise ValueError(f"the database {path} holds no structures")
    unit_dict = dict(meta.get("_property_unit_dict", {}))
    unit_dict.update(units or {})
    length_unit = meta.get("_distance_unit", "Ang")
    available = set.intersection(*(set(r.data) | _calculator_keys(r) for r in rows))
    names = list(properties) if properties is not None else sorted(available)
    missing = [n for n in names if n not in available]
    if missing:
        raise KeyError(f"not every structure in {path} has {', '.join(missing)}; common: {sorted(available)}")
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


def read_extxyz(path, properties: Sequence[str] = ("energy", "forces"), units: Mapping[str, str] | None = None):
    """Read an extended XYZ file (``energy`` in the comment line, ``forces`` as a column, or calculator results)."""
    path = _check_file(path)
    structures = read(path, index=":", format="extxyz")
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


def _npz(path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    path = _check_file(path)
    with np.load(path) as data:
        missing = [k for k in keys if k not in data.files]
        if missing:
            raise KeyError(f"{path} lacks {', '.join(missing)} (it has {', '.join(data.files)})")
        return {k: data[k] for k in data.files}


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


def read_hdf5(path) -> Dataset:
    """Read a data set written by :func:`write_hdf5`, or a built-in GFN2-xTB trajectory file."""
    path = _check_file(path)
    with h5py.File(path, "r") as data:
        if data.attrs.get("format") == "jaxatom-dataset":
            properties = {name: data["properties"][name][:] for name in data["properties"]}
            units = {name: str(data["properties"][name].attrs["unit"]) for name in properties}
            metadata = {k[5:]: _attr(v) for k, v in data.attrs.items() if k.startswith("meta:")}
            n_atoms = data["n_atoms"][:]
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
        if {"numbers", "positions", "energy", "forces"} <= set(data):
            return Dataset.from_arrays(
                numbers=data["numbers"][:],
                positions=data["positions"][:].astype(np.float64),
                properties={"energy": data["energy"][:], "forces": data["forces"][:].astype(np.float64)},
                units={"energy": str(data["energy"].attrs["unit"]), "forces": str(data["forces"].attrs["unit"])},
                length_unit=str(data["positions"].attrs["unit"]),
                metadata={
                    "source": "trajectory_hdf5",
                    "file": str(path),
                    **{k: _attr(v) for k, v in data.attrs.items()},
                },  # noqa: E501
            )
    raise ValueError(f"{path} is neither a jaxatom data set nor a trajectory with numbers/positions/energy/forces")


def _attr(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_dataset(path, **options) -> Dataset:
    """Read any supported file, chosen by its extension (``.db``, ``.xyz``/``.extxyz``, ``.npz``, ``.h5``/``.hdf5``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".db":
        return read_ase_db(path, **options)
    if suffix in (".xyz", ".extxyz"):
        return read_extxyz(path, **options)
    if suffix in (".h5", ".hdf5"):
        return read_hdf5(path)
    if suffix == ".npz":
        keys = set(np.load(_check_file(path)).files)
        return read_rmd17_npz(path) if "nuclear_charges" in keys else read_md17_npz(path, **options)
    raise ValueError(f"unknown data file type {suffix!r} for {path}; use .db, .xyz/.extxyz, .npz or .h5/.hdf5")
