"""HDF5 MD trajectories: resizable chunked datasets, units in attributes, readable while the run goes on (SWMR),
truncation to a checkpoint, and export to ASE trajectories or extended XYZ.

Layout (frames first, then replicas). Frame 0 is the starting state (``time`` 0 and ``step`` 0 for a new run, with its
energies, temperature, observables and uncertainty), then one frame every ``stride`` steps: a run of ``steps`` steps
holds ``steps / stride + 1`` frames and its last frame is at ``steps × timestep_fs``. Files of format ``version`` 1
(before jaxatom wrote the starting frame) begin one stride in; they stay readable, resumable and analysable, and every
analysis takes the times from ``time`` rather than counting frames.
``positions``/``velocities``/``forces`` ``[F, R, N, 3]`` (Å, Å/fs, eV/Å),
``potential_energy``/``kinetic_energy``/``temperature``/``conserved_energy`` ``[F, R]`` (eV, K),
``time`` ``[F]`` (fs), ``step`` ``[F]``, and the constant ``species [N]``, ``masses [N]`` (amu), ``cell [3, 3]`` (Å),
``pbc [3]``; ensembles that change the cell write ``cell [F, R, 3, 3]``, ``volume [F, R]`` (Å³), ``pressure [F, R]``
(GPa) and ``stress [F, R, 3, 3]`` (eV/Å³) per frame instead.
Observables a run records (e.g. ``dipole_moment [F, R, 3]`` e·Å, ``polarizability [F, R, 3, 3]`` Å³,
``charges [F, R, N]`` e) follow with their units; ring-polymer runs write bead averages, and with ``write_beads``
every bead's values as ``<name>_beads [F, R, P, ...]``. Run settings are root attributes. For ring-polymer runs
positions, velocities and forces are centroid values.

Runs with an uncertainty gate (:mod:`jaxatom.md.gate`) add ``uncertainty [F, R]`` (eV/Å: the largest calibrated
per-atom force uncertainty of the steps in the frame's stride interval, NaN for a frozen replica), ``flagged [F, R]``
(bool: some step of the interval exceeded the threshold), ``candidate_positions [F, R, N, 3]`` (Å) and
``candidate_step [F, R]`` (the structure and step of the interval's most uncertain step; ``-1`` if none) and, when
the cell changes, ``candidate_cell [F, R, 3, 3]``; :func:`flagged_structures` returns the flagged candidates.

Replicas that are different structures (a heterogeneous batch) are padded to the largest atom count ``N``: the
constants become ``species [R, N]`` (0 for padding atoms), ``masses [R, N]``, ``cell [R, 3, 3]`` and ``n_atoms [R]``,
and the per-atom datasets (marked with a ``per_atom`` attribute) hold zeros for padding atoms.
:func:`read_trajectory` with ``replica`` and :func:`trajectory_atoms` return each replica's real atoms only.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from jaxatom.errors import DataError, DiskFullError
from jaxatom.files import format_bytes, free_bytes, is_disk_full
from jaxatom.md.hdf5_files import open_for_append
from jaxatom.md.state import FS

__all__ = [
    "FORMAT",
    "UNITS",
    "TrajectoryWriter",
    "has_initial_frame",
    "read_trajectory",
    "trajectory_atoms",
    "export_trajectory",
    "require_equal_atoms",
    "flagged_structures",
]

FORMAT = "jaxatom-md-trajectory"
#: 2: frame 0 is the starting state; 1: the first frame is one stride in (jaxatom before the starting frame).
VERSION = 2
#: Bytes reserved beyond the frames' chunks for HDF5's own bookkeeping when frames are appended.
METADATA_MARGIN = 256 * 1024

#: Unit of every per-frame quantity the driver writes.
UNITS = {
    "time": "fs",
    "step": "1",
    "positions": "Ang",
    "velocities": "Ang/fs",
    "forces": "eV/Ang",
    "potential_energy": "eV",
    "kinetic_energy": "eV",
    "kinetic_energy_primitive": "eV",
    "temperature": "K",
    "conserved_energy": "eV",
    "energy_std": "eV",
    "forces_std_max": "eV/Ang",
    "uncertainty": "eV/Ang",
    "candidate_positions": "Ang",
    "candidate_cell": "Ang",
}


class TrajectoryWriter:
    """Appends frames to an HDF5 trajectory, flushing after every append so readers see whole chunks.

    Open with :meth:`create` (new file) or :meth:`resume` (truncate to a checkpoint's frame count and continue; this
    also opens a file whose writer was killed). :meth:`reserve` allocates the disk blocks of the next frames before
    they are computed, so a full disk stops the run with :class:`~jaxatom.errors.DiskFullError` before HDF5 writes
    anything (a write that fails inside HDF5 leaves its library unable to close the file).
    """

    def __init__(self, file: h5py.File, path: Path):
        self.file = file
        self.path = path
        self._descriptor = os.open(path, os.O_RDWR)
        self._reserved: tuple[int, int] | None = None  # (frames written, frames to come) of the last reservation

    @classmethod
    def create(
        cls,
        path,
        constants: Mapping[str, np.ndarray],
        attributes: Mapping,
        frame_shapes: Mapping,
        units: Mapping[str, str] | None = None,
        per_atom: Sequence[str] = (),
    ) -> TrajectoryWriter:
        """Create ``path`` with the constant datasets, root ``attributes`` and empty per-frame datasets
        ``{name: (shape_without_frames, dtype)}``, each with its unit (from ``units``, else :data:`UNITS`, else
        ``"1"``) in its ``units`` attribute; the datasets ``per_atom`` names (those of padded replicas,
        ``[F, R, N, ...]``) are marked with a ``per_atom`` attribute. The file is built under a temporary name and
        renamed when complete, so ``path`` is never a half-made file."""
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        file = h5py.File(partial, "w", libver="latest")
        file.attrs["format"] = FORMAT
        file.attrs["version"] = VERSION
        for key, value in attributes.items():
            file.attrs[key] = json.dumps(value) if isinstance(value, dict | list | tuple) or value is None else value
        for name, value in constants.items():
            file.create_dataset(name, data=value)
        file["masses"].attrs["units"] = "amu"
        if "cell" in file:
            file["cell"].attrs["units"] = "Ang"
        for name, (shape, dtype) in frame_shapes.items():
            frame_bytes = max(int(np.prod(shape)) * np.dtype(dtype).itemsize, 1)
            chunk_frames = int(np.clip(2**20 // frame_bytes, 1, 1024))
            dataset = file.create_dataset(
                name, (0, *shape), dtype, maxshape=(None, *shape), chunks=(chunk_frames, *shape)
            )
            dataset.attrs["units"] = {**UNITS, **(units or {})}.get(name, "1")
            if name in per_atom:
                dataset.attrs["per_atom"] = True
        file.swmr_mode = True
        os.replace(partial, path)
        return cls(file, path)

    @classmethod
    def resume(cls, path, n_frames: int) -> TrajectoryWriter:
        """Reopen ``path`` and drop every frame after the first ``n_frames`` (those of the last checkpoint)."""
        file = open_for_append(path)
        if file.attrs.get("format") != FORMAT:
            file.close()
            raise DataError(f"{path} is not a jaxatom MD trajectory; choose another output file")
        for dataset in _per_frame(file):
            if dataset.shape[0] < n_frames:
                file.close()
                raise DataError(
                    f"{path} has {dataset.shape[0]} frames of {dataset.name}, fewer than the "
                    f"{n_frames} its checkpoint records; the file does not belong to this checkpoint"
                )
            dataset.resize(n_frames, axis=0)
        file.swmr_mode = True
        return cls(file, Path(path))

    @property
    def n_frames(self) -> int:
        return int(self.file["time"].shape[0])

    @property
    def initial_frame(self) -> bool:
        """Whether this trajectory holds the starting state as frame 0 (see :func:`has_initial_frame`)."""
        return has_initial_frame(self.file)

    def append_bytes(self, count: int) -> int:
        """Upper bound of the bytes that appending ``count`` frames adds to the file (whole chunks are allocated)."""
        first = self.n_frames
        total = METADATA_MARGIN
        for dataset in _per_frame(self.file):
            chunk_frames = dataset.chunks[0]
            new_chunks = (first + count - 1) // chunk_frames - (first - 1) // chunk_frames if count else 0
            chunk_bytes = int(np.prod(dataset.chunks)) * dataset.dtype.itemsize
            total += new_chunks * chunk_bytes
        return total

    def reserve(self, count: int) -> None:
        """Allocate disk blocks for appending ``count`` frames; raise :class:`DiskFullError` if the disk is full."""
        if self._reserved == (self.n_frames, count):  # already reserved for these frames (the driver does it first)
            return
        size = self.file.id.get_filesize()
        needed = self.append_bytes(count)
        allocate = getattr(os, "posix_fallocate", None)  # not on macOS: the driver's free-space checks remain
        try:
            if allocate is not None:  # HDF5 has written everything below its end of allocation: reserve past it
                allocate(self._descriptor, size, needed)
        except OSError as err:
            if is_disk_full(err):
                raise DiskFullError(
                    f"the disk holding {self.path} is full: the next {count} frames need about "
                    f"{format_bytes(needed)}, {format_bytes(free_bytes(self.path))} are free"
                ) from err
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
        self._reserved = (self.n_frames, count)

    def append(self, frames: Mapping[str, np.ndarray]) -> None:
        """Append ``{name: [F, ...]}`` for every per-frame dataset, then flush and ``fsync``."""
        n = self.n_frames
        count = len(frames["time"])
        self.reserve(count)
        for name, values in frames.items():
            dataset = self.file[name]
            dataset.resize(n + count, axis=0)
            dataset[n:] = values
        self.file.flush()
        os.fsync(self._descriptor)  # on disk before the checkpoint that counts them, even if the power fails

    def close(self) -> None:
        """Close the file and give back the blocks reserved but not used (HDF5 trims the file when it closes a
        file that it opened longer than its data)."""
        self.file.close()
        os.close(self._descriptor)
        try:
            h5py.File(self.path, "a", libver="latest").close()
        except OSError:  # a reader holds it open: the unused tail stays, which is harmless
            pass


def has_initial_frame(file: h5py.File) -> bool:
    """Whether the trajectory open in ``file`` starts with the starting state (format version 2 and later)."""
    return int(file.attrs.get("version", 1)) >= 2


def _per_frame(file: h5py.File) -> list[h5py.Dataset]:
    return [d for d in file.values() if isinstance(d, h5py.Dataset) and d.maxshape and d.maxshape[0] is None]


def read_trajectory(path, replica: int | None = None) -> dict:
    """Read a trajectory (also while it is being written) into a dict of numpy arrays plus ``"attrs"``.

    With ``replica`` set, per-frame arrays lose their replica axis (``positions [F, N, 3]``, energies ``[F]``); for
    replicas that are different structures they and ``species``, ``masses`` and ``cell`` are cut to that replica's
    own atoms. Without it such a trajectory is returned padded, with ``n_atoms [R]``.
    """
    with h5py.File(path, "r", libver="latest", swmr=True) as file:
        if file.attrs.get("format") != FORMAT:
            raise DataError(f"{path} is not a jaxatom MD trajectory")
        n = int(file["time"].shape[0])
        out = {}
        padded = "n_atoms" in file
        for name, dataset in file.items():
            dataset.refresh()
            per_frame = bool(dataset.maxshape) and dataset.maxshape[0] is None
            values = dataset[:n] if per_frame else dataset[()]
            if per_frame and replica is not None and values.ndim >= 2:
                values = values[:, replica]
            if padded and replica is not None:
                values = _replica_values(file, name, values, replica, per_frame)
            out[name] = values
        out["attrs"] = {k: _decode(v) for k, v in file.attrs.items()}
    return out


def _replica_values(file: h5py.File, name: str, values: np.ndarray, replica: int, per_frame: bool) -> np.ndarray:
    """``values`` of one replica of a padded (heterogeneous) trajectory, cut to its own atoms."""
    n_atoms = int(file["n_atoms"][replica])
    if name in ("species", "masses"):
        return values[replica, :n_atoms]
    if name in ("cell", "n_atoms") and not per_frame:
        return values[replica]
    if per_frame and file[name].attrs.get("per_atom", False):
        return values[:, :n_atoms]
    return values


def require_equal_atoms(data: Mapping, what: str) -> None:
    """Refuse a trajectory read without ``replica`` whose replicas are different structures, for an analysis
    (``what``) that needs every replica to have the same atoms."""
    if "n_atoms" in data and np.ndim(data["n_atoms"]):
        raise DataError(
            f"{what} needs replicas of the same atoms; this trajectory holds different structures (n_atoms "
            f"{np.asarray(data['n_atoms']).tolist()}): read one replica at a time (read_trajectory(path, replica=r))"
        )


def _decode(value):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value.item() if isinstance(value, np.generic) else value


def trajectory_atoms(path, replica: int = 0, frames: slice = slice(None)) -> list[Atoms]:
    """The frames of one replica as ``ase.Atoms`` with momenta, cell, and energy/forces attached."""
    data = read_trajectory(path, replica=replica)
    masses = data["masses"]
    atoms_list = []
    for index in range(len(data["time"]))[frames]:
        atoms = Atoms(
            numbers=data["species"],
            positions=data["positions"][index],
            cell=data["cell"][index] if data["cell"].ndim == 3 else data["cell"],
            pbc=data["pbc"],
            masses=masses,
        )
        atoms.set_momenta(masses[:, None] * data["velocities"][index] / FS)
        results = {"energy": float(data["potential_energy"][index])}
        if "forces" in data:
            results["forces"] = data["forces"][index]
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info["time_fs"] = float(data["time"][index])
        atoms_list.append(atoms)
    return atoms_list


def export_trajectory(path, out, replica: int = 0, frames: slice = slice(None)) -> Path:
    """Write one replica to any format ``ase.io.write`` knows from the suffix (``.traj``, ``.extxyz``, ``.xyz``)."""
    from ase.io import write

    out = Path(out)
    write(out, trajectory_atoms(path, replica, frames))
    return out


def flagged_structures(path) -> list[Atoms]:
    """The candidates an uncertainty-gated run flagged (one per flagged frame and replica, in frame then replica
    order), as ``ase.Atoms`` with ``info`` ``uncertainty`` (eV/Å, calibrated), ``step``, ``replica``, ``frame`` and
    ``temperature_K`` (the replica's, if the ensemble has one). Reads only the flagged candidates, also while the
    run goes on; a trajectory without a gate has none (empty list)."""
    with h5py.File(path, "r", libver="latest", swmr=True) as file:
        if file.attrs.get("format") != FORMAT:
            raise DataError(f"{path} is not a jaxatom MD trajectory")
        if "flagged" not in file:
            return []
        n_frames = int(file["time"].shape[0])
        for name in ("flagged", "uncertainty", "candidate_step", "candidate_positions", "candidate_cell"):
            if name in file:
                file[name].refresh()
        temperature = _decode(file.attrs.get("temperature_K", "null"))
        return [_candidate(file, int(f), int(r), temperature) for f, r in np.argwhere(file["flagged"][:n_frames])]


def _candidate(file: h5py.File, frame: int, replica: int, temperature) -> Atoms:
    """The flagged candidate of ``frame`` and ``replica`` (cut to the replica's own atoms in a padded file)."""
    species = file["species"][()]
    numbers = species if species.ndim == 1 else species[replica]
    n_atoms = int(file["n_atoms"][replica]) if "n_atoms" in file else len(numbers)
    if "candidate_cell" in file:
        cell = file["candidate_cell"][frame, replica]
    else:
        cell = file["cell"][()] if file["cell"].ndim == 2 else file["cell"][replica]
    atoms = Atoms(numbers=numbers[:n_atoms], positions=file["candidate_positions"][frame, replica, :n_atoms],
                  cell=cell, pbc=file["pbc"][()])  # fmt: skip
    atoms.info.update(uncertainty=float(file["uncertainty"][frame, replica]), replica=replica, frame=frame,
                      step=int(file["candidate_step"][frame, replica]))  # fmt: skip
    if temperature is not None:
        atoms.info["temperature_K"] = float(temperature[replica] if np.ndim(temperature) else temperature)
    return atoms
