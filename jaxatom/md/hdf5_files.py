"""Opening an HDF5 file whose writer died.

A writer in SWMR mode marks the file "open for write" in its superblock and clears the mark when it closes the file.
After ``kill -9``, a segmentation fault or a full disk the mark stays, and HDF5 refuses to open the file for writing
again ("file is already open for write/SWMR write"). Only call this when no live process writes the file (the MD
driver holds :func:`jaxatom.files.exclusive_lock` for that).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import h5py

from jaxatom.files import require_free_space

__all__ = ["open_for_append"]

_STALE_FLAGS = "already open for write"


def open_for_append(path: str | os.PathLike) -> h5py.File:
    """Open ``path`` for reading and writing, clearing the consistency flags a dead writer left behind."""
    try:
        return h5py.File(path, "a", libver="latest")
    except OSError as err:
        if _STALE_FLAGS not in str(err):
            raise
    try:
        return _open_clearing_status_flags(Path(path))
    except (OSError, AttributeError):  # HDF5 without the property, or the file needs more than its flags cleared
        _rewrite(Path(path))
        return h5py.File(path, "a", libver="latest")


def _open_clearing_status_flags(path: Path) -> h5py.File:
    """Open with HDF5's ``clear_status_flags`` file-access property, the one its ``h5clear -s`` tool sets; h5py does
    not expose it, so it is set with ``H5Pset``, found through h5py's own link to the HDF5 library."""
    library = ctypes.CDLL(h5py.h5p.__file__)
    library.H5Pset.argtypes = [ctypes.c_int64, ctypes.c_char_p, ctypes.c_void_p]
    library.H5Pset.restype = ctypes.c_int
    access = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    access.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    true = (ctypes.c_ubyte * 8)(1)  # hbool_t is 1 byte in current HDF5, wider in old builds; non-zero either way
    if library.H5Pset(access.id, b"clear_status_flags", true) < 0:
        raise OSError(f"HDF5 refused the clear_status_flags property for {path}")
    return h5py.File(h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDWR, fapl=access))


def _rewrite(path: Path) -> None:
    """Copy what a SWMR reader sees of ``path`` into a new file and atomically replace ``path`` with it."""
    copy = path.with_name(path.name + ".recovered")
    require_free_space(copy, path.stat().st_size, f"a repaired copy of {path}")
    with h5py.File(path, "r", libver="latest", swmr=True) as source, h5py.File(copy, "w", libver="latest") as target:
        for key, value in source.attrs.items():
            target.attrs[key] = value
        for name in source:
            source.copy(source[name], target, name=name)
    os.replace(copy, path)
