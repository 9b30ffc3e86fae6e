"""Data sets: in-memory ragged structures with units, file formats, splits, statistics and batching."""

from jaxatom.data.builtin import BUILTIN_DATASETS, load_builtin
from jaxatom.data.dataset import PER_ATOM_PROPERTIES, PROPERTY_UNITS, Dataset, MissingPropertyError, concatenate
from jaxatom.data.formats import (
    DataFileNotFoundError,
    read_ase_db,
    read_dataset,
    read_extxyz,
    read_hdf5,
    read_md17_npz,
    read_npz,
    read_rmd17_npz,
    write_ase_db,
    write_extxyz,
    write_hdf5,
    write_npz,
)
from jaxatom.data.loader import GraphLoader
from jaxatom.data.splits import load_or_create_split, random_split
from jaxatom.data.statistics import fit_atomrefs, fit_standardisation, mean_energy_per_atom

__all__ = [
    "BUILTIN_DATASETS",
    "GraphLoader",
    "concatenate",
    "fit_atomrefs",
    "fit_standardisation",
    "load_builtin",
    "load_or_create_split",
    "mean_energy_per_atom",
    "random_split",
    "Dataset",
    "DataFileNotFoundError",
    "MissingPropertyError",
    "PER_ATOM_PROPERTIES",
    "PROPERTY_UNITS",
    "read_ase_db",
    "read_dataset",
    "read_extxyz",
    "read_hdf5",
    "read_md17_npz",
    "read_npz",
    "read_rmd17_npz",
    "write_ase_db",
    "write_extxyz",
    "write_hdf5",
    "write_npz",
]
