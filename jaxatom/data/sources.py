"""Benchmark data sets from their original sources, cached in a data directory: MD17, rMD17, MD22, ISO17 and QM9.

Every ``load_*`` function returns a :class:`~jaxatom.data.dataset.Dataset` in jaxatom units (eV, Å). It looks for the
source file in the data directory (:func:`default_data_dir`: ``$JAXATOM_DATA`` or ``~/.cache/jaxatom``) and downloads it
only when it is missing. The layout of the data directory::

    md17/md17_aspirin.npz ...                 MD17 (sGDML npz, kcal/mol and Å)
    md22/md22_AT-AT.npz ...                   MD22 (sGDML npz, kcal/mol and Å)
    rmd17/rmd17.tar.bz2                       rMD17 archive (figshare), and what is taken from it:
    rmd17/npz_data/rmd17_aspirin.npz ...      (kcal/mol and Å)
    rmd17/splits/index_train_01.csv ...       (the five official train/test splits)
    iso17/iso17.tar.gz                        ISO17 archive, and the folds taken from it:
    iso17/reference.db ...                    (ASE databases, eV and Å)
    qm9/dsgdb9nsd.xyz.tar.bz2                 QM9 xyz files (Hartree, Debye, Bohr^n, GHz, cal/mol/K)
    qm9/atomref.txt, qm9/uncharacterized.txt  QM9 atom references and the 3054 uncharacterised molecules

To use a file fetched by other means, place it at that path. Parsing is separate from fetching: ``read_*``/``parse_*``
functions read local files, ``load_*`` functions fetch into the data directory when needed and then parse.

Downloads show a progress bar, are written to ``<name>.partial`` next to the target and moved into place only after
they were verified (a checksum when one is given, otherwise that the file opens in the expected format: npz keys, a
complete and readable tar archive holding the expected members, parseable text). A failed or corrupt download never
leaves a file at the target path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers
from ase.db import connect
from tqdm import tqdm

from jaxatom.data.dataset import Dataset, MissingPropertyError, internal_unit
from jaxatom.data.formats import DataFileNotFoundError, read_md17_npz, read_rmd17_npz
from jaxatom.errors import ConfigError, DataError, JaxAtomError
from jaxatom.units import unit_factor

__all__ = [
    "DownloadError",
    "default_data_dir",
    "download",
    "MD17_URL",
    "MD17_MOLECULES",
    "MD22_URL",
    "MD22_MOLECULES",
    "RMD17_URL",
    "RMD17_MOLECULES",
    "ISO17_URL",
    "ISO17_FOLDS",
    "QM9_URL",
    "QM9_ATOMREF_URL",
    "QM9_UNCHARACTERIZED_URL",
    "QM9_PROPERTIES",
    "load_md17",
    "load_md22",
    "load_rmd17",
    "rmd17_split",
    "read_rmd17_archive",
    "read_rmd17_split",
    "load_iso17",
    "read_iso17_db",
    "load_qm9",
    "parse_qm9_xyz",
    "parse_qm9_atomrefs",
    "parse_qm9_uncharacterized",
    "read_qm9_archive",
]

# -- sources -----------------------------------------------------------------------------------------------------

#: sGDML's MD17 files (http://quantum-machine.org/gdml/#datasets), energies kcal/mol, positions Å.
MD17_URL = "http://www.quantum-machine.org/gdml/data/npz/"
MD17_MOLECULES = {
    "aspirin": "md17_aspirin.npz",
    "azobenzene": "azobenzene_dft.npz",
    "benzene": "md17_benzene2017.npz",
    "ethanol": "md17_ethanol.npz",
    "malonaldehyde": "md17_malonaldehyde.npz",
    "naphthalene": "md17_naphthalene.npz",
    "paracetamol": "paracetamol_dft.npz",
    "salicylic_acid": "md17_salicylic.npz",
    "toluene": "md17_toluene.npz",
    "uracil": "md17_uracil.npz",
}
#: sGDML's MD22 files, energies kcal/mol, positions Å.
MD22_URL = "http://www.quantum-machine.org/gdml/repo/datasets/"
MD22_MOLECULES = {
    name: f"md22_{name}.npz"
    for name in (
        "Ac-Ala3-NHMe",
        "DHA",
        "stachyose",
        "AT-AT",
        "AT-AT-CG-CG",
        "buckyball-catcher",
        "double-walled_nanotube",
    )
}
#: The revised MD17 archive (figshare, https://doi.org/10.6084/m9.figshare.12672038): ``rmd17/npz_data/*.npz`` and
#: ``rmd17/splits/index_{train,test}_0{1..5}.csv``.
RMD17_URL = "https://figshare.com/ndownloader/files/23950376"
RMD17_ARCHIVE = "rmd17/rmd17.tar.bz2"
RMD17_MOLECULES = {
    "aspirin": "rmd17_aspirin.npz",
    "azobenzene": "rmd17_azobenzene.npz",
    "benzene": "rmd17_benzene.npz",
    "ethanol": "rmd17_ethanol.npz",
    "malonaldehyde": "rmd17_malonaldehyde.npz",
    "naphthalene": "rmd17_naphthalene.npz",
    "paracetamol": "rmd17_paracetamol.npz",
    "salicylic_acid": "rmd17_salicylic.npz",
    "toluene": "rmd17_toluene.npz",
    "uracil": "rmd17_uracil.npz",
}
#: ISO17 (http://quantum-machine.org/datasets/): ``iso17/<fold>.db`` ASE databases, ``total_energy`` (eV) as a
#: key-value pair and ``atomic_forces`` (eV/Å) in the row data.
ISO17_URL = "http://www.quantum-machine.org/datasets/iso17.tar.gz"
ISO17_ARCHIVE = "iso17/iso17.tar.gz"
ISO17_FOLDS = ("reference", "reference_eq", "test_within", "test_other", "test_eq")
#: QM9 (figshare collection 978904): the xyz tarball ``dsgdb9nsd.xyz.tar.bz2``, the atom references and the list of
#: 3054 molecules whose relaxed geometry does not match their SMILES ("uncharacterized").
QM9_URL = "https://ndownloader.figshare.com/files/3195389"
QM9_ATOMREF_URL = "https://ndownloader.figshare.com/files/3195395"
QM9_UNCHARACTERIZED_URL = "https://ndownloader.figshare.com/files/3195404"
QM9_ARCHIVE = "qm9/dsgdb9nsd.xyz.tar.bz2"
QM9_ATOMREF_FILE = "qm9/atomref.txt"
QM9_UNCHARACTERIZED_FILE = "qm9/uncharacterized.txt"

#: The 15 numbers after ``gdb <index>`` in the second line of a QM9 xyz file: (dataset name, unit in the file).
QM9_PROPERTIES = (
    ("rotational_constant_A", "GHz"),
    ("rotational_constant_B", "GHz"),
    ("rotational_constant_C", "GHz"),
    ("dipole_moment", "Debye"),
    ("isotropic_polarizability", "Bohr^3"),
    ("homo", "Ha"),
    ("lumo", "Ha"),
    ("gap", "Ha"),
    ("electronic_spatial_extent", "Bohr^2"),
    ("zpve", "Ha"),
    ("energy_U0", "Ha"),
    ("energy_U", "Ha"),
    ("enthalpy_H", "Ha"),
    ("free_energy", "Ha"),
    ("heat_capacity", "cal/mol/K"),
)
# How each QM9 property is stored in the Dataset: (unit passed to Dataset.from_arrays, factor applied before,
# unit of the stored values). jaxatom's units cannot spell GHz or K: GHz is 1/ns exactly, and the heat capacity is
# stored in eV/K (cal/mol = kcal/mol / 1000).
_QM9_STORAGE = {
    "GHz": ("1/ns", 1.0, "GHz"),
    "Debye": ("Debye", 1.0, "e*Ang"),
    "Bohr^3": ("Ang^3", unit_factor("Bohr^3", "Ang^3"), "Ang^3"),
    "Bohr^2": ("Ang^2", unit_factor("Bohr^2", "Ang^2"), "Ang^2"),
    "Ha": ("Ha", 1.0, "eV"),
    "cal/mol/K": ("kcal/mol", 1e-3, "eV/K"),
}
# Columns of QM9's atomref.txt after the element symbol.
_QM9_ATOMREF_COLUMNS = ("zpve", "energy_U0", "energy_U", "enthalpy_H", "free_energy", "heat_capacity")


# -- data directory and downloads --------------------------------------------------------------------------------


class DownloadError(JaxAtomError, RuntimeError):
    """A download that failed or fetched something other than what was expected."""


def default_data_dir() -> Path:
    """The data directory: ``$JAXATOM_DATA`` when set, else ``~/.cache/jaxatom``."""
    env = os.environ.get("JAXATOM_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "jaxatom"


def _data_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def _manual_hint(url: str, path: Path) -> str:
    return f"Download it by other means (e.g. `curl -L -o '{path}' '{url}'`) and place it at {path}"


def download(
    url: str,
    path: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    verify: Callable[[Path], None] | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``path`` with a progress bar, verify it, and only then move it into place.

    Args:
        url: any URL ``urllib`` opens (``http(s)://``, ``file://``).
        path: the target file; its directory is created.
        sha256, md5: expected hex digests of the file, checked when given.
        verify: called with the downloaded (still partial) file; raises if the content is not what was expected.
        progress: show a ``tqdm`` progress bar.
        timeout: seconds to wait for the server.

    Raises:
        DownloadError: naming the URL and how to place the file by hand; nothing is left at ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial")
    digests = {name: hashlib.new(name) for name, want in (("sha256", sha256), ("md5", md5)) if want}
    request = urllib.request.Request(url, headers={"User-Agent": "jaxatom (python urllib)"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(partial, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=path.name, disable=not progress
            ) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    for digest in digests.values():
                        digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise DownloadError(f"received {received} bytes of {total}")
        for name, want in (("sha256", sha256), ("md5", md5)):
            if want and digests[name].hexdigest() != want.lower():
                raise DownloadError(f"{name} is {digests[name].hexdigest()}, expected {want.lower()}")
        if verify is not None:
            verify(partial)
        os.replace(partial, path)
    except (Exception, KeyboardInterrupt) as error:
        partial.unlink(missing_ok=True)
        if isinstance(error, KeyboardInterrupt):
            raise
        raise DownloadError(f"downloading {url} to {path} failed: {error}. {_manual_hint(url, path)}") from error
    return path


def _cached(path: Path, url: str, verify: Callable[[Path], None] | None) -> Path:
    """``path`` if it exists, else download it from ``url`` first."""
    if not path.is_file():
        download(url, path, verify=verify)
    return path


def _npz_verifier(keys: Sequence[str]) -> Callable[[Path], None]:
    def verify(path: Path) -> None:
        with np.load(path) as data:
            missing = [key for key in keys if key not in data.files]
            if missing:
                raise ValueError(f"the npz file lacks {', '.join(missing)} (it has {', '.join(data.files)})")
            for key in keys:  # reading each array checks the zip CRC
                data[key]

    return verify


def _tar_verifier(members: Iterable[str]) -> Callable[[Path], None]:
    def verify(path: Path) -> None:
        wanted, names = set(members), []
        with tarfile.open(path, "r|*") as tar:  # reads every member to its end, so truncation and corruption show
            for member in tar:
                names.append(member.name)
                if member.isfile():
                    with tar.extractfile(member) as handle:
                        while handle.read(1 << 22):
                            pass
        if not names:
            raise ValueError("the archive is empty")
        missing = [want for want in sorted(wanted) if not any(_is_member(name, want) for name in names)]
        if missing:
            raise ValueError(f"the archive lacks {', '.join(missing)}")

    return verify


def _text_verifier(parse: Callable[[str], object]) -> Callable[[Path], None]:
    def verify(path: Path) -> None:
        if not parse(path.read_text()):
            raise ValueError("the file holds no entries")

    return verify


def _is_member(name: str, wanted: str) -> bool:
    """Whether archive member ``name`` is ``wanted`` (perhaps with a leading ``./`` or an extra leading folder)."""
    return name.removeprefix("./") == wanted or name.endswith("/" + wanted)


def _extract(archive: Path, targets: Mapping[str, Path]) -> None:
    """Copy the archive members named in ``targets`` to their paths, in one pass through the archive; each is written
    next to its target and moved into place when complete."""
    pending = dict(targets)
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            key = next((k for k in pending if member.isfile() and _is_member(member.name, k)), None)
            if key is None:
                continue
            target = pending.pop(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f"{target.name}.partial")
            try:
                with tar.extractfile(member) as source, open(partial, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
            if not pending:
                break
    if pending:
        raise DataFileNotFoundError(f"{archive} lacks {', '.join(sorted(pending))}; download the archive again")


def _with_metadata(dataset: Dataset, **metadata) -> Dataset:
    return dataclasses.replace(dataset, metadata={**dataset.metadata, **metadata})


def _choice(name: str, options: Iterable[str], what: str) -> None:
    options = list(options)
    if name not in options:
        raise ConfigError(f"unknown {what} {name!r}; choose one of {', '.join(options)}")


# -- MD17 and MD22 -----------------------------------------------------------------------------------------------


def load_md17(molecule: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """MD17 trajectory of ``molecule`` (a key of :data:`MD17_MOLECULES`): energies in kcal/mol and forces in
    kcal/mol/Å in the file, returned in eV and eV/Å; positions Å. Cached as ``md17/<file>.npz``."""
    _choice(molecule, MD17_MOLECULES, "MD17 molecule")
    name = MD17_MOLECULES[molecule]
    url = MD17_URL + name
    path = _cached(_data_dir(data_dir) / "md17" / name, url, _npz_verifier(("z", "R", "E", "F")))
    return _with_metadata(read_md17_npz(path), benchmark="md17", molecule=molecule, url=url)


def load_md22(molecule: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """MD22 trajectory of ``molecule`` (a key of :data:`MD22_MOLECULES`): kcal/mol and kcal/mol/Å in the file,
    returned in eV and eV/Å; positions Å. Cached as ``md22/<file>.npz``."""
    _choice(molecule, MD22_MOLECULES, "MD22 molecule")
    name = MD22_MOLECULES[molecule]
    url = MD22_URL + name
    path = _cached(_data_dir(data_dir) / "md22" / name, url, _npz_verifier(("z", "R", "E", "F")))
    return _with_metadata(read_md17_npz(path), benchmark="md22", molecule=molecule, url=url)


# -- rMD17 -------------------------------------------------------------------------------------------------------


def _rmd17_member(molecule: str) -> str:
    _choice(molecule, RMD17_MOLECULES, "rMD17 molecule")
    return f"rmd17/npz_data/{RMD17_MOLECULES[molecule]}"


def _split_members(index: int) -> tuple[str, str]:
    if index not in range(1, 6):
        raise ConfigError(f"rMD17 has the train/test splits 1 to 5, not {index!r}")
    return f"rmd17/splits/index_train_0{index}.csv", f"rmd17/splits/index_test_0{index}.csv"


def _rmd17_archive(data_dir: Path) -> Path:
    members = [_rmd17_member(m) for m in RMD17_MOLECULES] + [m for i in range(1, 6) for m in _split_members(i)]
    return _cached(data_dir / RMD17_ARCHIVE, RMD17_URL, _tar_verifier(members))


def read_rmd17_archive(path: str | os.PathLike, molecule: str) -> Dataset:
    """Read ``molecule`` straight from the rMD17 archive at ``path`` (kcal/mol, kcal/mol/Å and Å in the file; eV,
    eV/Å and Å returned)."""
    member = _rmd17_member(molecule)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / Path(member).name
        _extract(Path(path), {member: target})
        dataset = read_rmd17_npz(target)
    return _with_metadata(dataset, benchmark="rmd17", molecule=molecule, file=f"{path}:{member}")


def read_rmd17_split(path: str | os.PathLike, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The official train/test split ``index`` (1 to 5) from the rMD17 archive at ``path``, or from a folder that
    holds ``rmd17/splits/*.csv``. Indices are 0-based positions in each molecule's npz file (shared by all
    molecules)."""
    members = _split_members(index)
    path = Path(path)
    if path.is_dir():
        train, test = (_read_index_csv(path / member) for member in members)
        return train, test
    with tempfile.TemporaryDirectory() as tmp:
        targets = {member: Path(tmp) / Path(member).name for member in members}
        _extract(path, targets)
        train, test = (_read_index_csv(targets[member]) for member in members)
    return train, test


def _read_index_csv(path: Path) -> np.ndarray:
    values = np.array([_as_number(v) for v in re.split(r"[,;\s]+", path.read_text().strip()) if v], np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values % 1 != 0) or np.any(values < 0):
        raise DataError(f"{path} must list non-negative integer indices")
    return values.astype(np.int64)


def _as_number(word: str) -> float:
    """``float(word)``, or NaN for a word that is not a number."""
    try:
        return float(word)
    except ValueError:
        return float("nan")


def load_rmd17(molecule: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Revised MD17 trajectory of ``molecule`` (a key of :data:`RMD17_MOLECULES`), 100000 structures: kcal/mol and
    kcal/mol/Å in the file, returned in eV and eV/Å. The archive is cached as ``rmd17/rmd17.tar.bz2`` and the
    molecule's npz taken out of it once into ``rmd17/npz_data/``."""
    member = _rmd17_member(molecule)
    root = _data_dir(data_dir)
    target = root / member
    if not target.is_file():
        _extract(_rmd17_archive(root), {member: target})
    return _with_metadata(read_rmd17_npz(target), benchmark="rmd17", molecule=molecule, url=RMD17_URL)


def rmd17_split(index: int, data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The official rMD17 train/test split ``index`` (1 to 5): ``(train, test)`` 0-based indices into the structures
    of any rMD17 molecule (the same for all). The csv files are cached in ``rmd17/splits/``."""
    members = _split_members(index)
    root = _data_dir(data_dir)
    targets = {member: root / member for member in members}
    missing = {member: target for member, target in targets.items() if not target.is_file()}
    if missing:
        _extract(_rmd17_archive(root), missing)
    train, test = (_read_index_csv(targets[member]) for member in members)
    return train, test


# -- ISO17 -------------------------------------------------------------------------------------------------------


def read_iso17_db(path: str | os.PathLike) -> Dataset:
    """Read an ISO17 fold database: ``total_energy`` (eV; a key-value pair, or in the row data as SchNetPack rewrites
    it) becomes ``energy`` and ``atomic_forces`` (eV/Å, row data) becomes ``forces``; positions Å."""
    path = Path(path)
    if not path.is_file():
        raise DataFileNotFoundError(f"no ISO17 database at {path}; check the path")
    numbers, positions, energies, forces = [], [], [], []
    with connect(path, type="db") as db:
        for row in db.select():
            energy = row.data["total_energy"] if "total_energy" in row.data else row.get("total_energy")
            if energy is None or "atomic_forces" not in row.data:
                raise MissingPropertyError(f"row {row.id} of {path} lacks total_energy or atomic_forces")
            numbers.append(row.numbers)
            positions.append(row.positions)
            energies.append(float(np.asarray(energy, np.float64).reshape(-1)[0]))
            forces.append(np.asarray(row.data["atomic_forces"], np.float64).reshape(-1, 3))
    if not numbers:
        raise DataError(f"the database {path} holds no structures; pass an ISO17 fold database")
    return Dataset.from_arrays(
        numbers=numbers,
        positions=positions,
        properties={"energy": np.array(energies), "forces": forces},
        units={"energy": "eV", "forces": "eV/Ang"},
        metadata={"source": "iso17", "file": str(path)},
    )


def load_iso17(fold: str = "reference", data_dir: str | os.PathLike | None = None) -> Dataset:
    """ISO17 fold ``fold`` (one of :data:`ISO17_FOLDS`): energies eV, forces eV/Å, positions Å. The archive is
    cached as ``iso17/iso17.tar.gz`` and the fold's database taken out of it once as ``iso17/<fold>.db``."""
    _choice(fold, ISO17_FOLDS, "ISO17 fold")
    root = _data_dir(data_dir)
    target = root / "iso17" / f"{fold}.db"
    if not target.is_file():
        members = [f"iso17/{name}.db" for name in ISO17_FOLDS]
        archive = _cached(root / ISO17_ARCHIVE, ISO17_URL, _tar_verifier(members))
        _extract(archive, {f"iso17/{fold}.db": target})
    return _with_metadata(read_iso17_db(target), benchmark="iso17", fold=fold, url=ISO17_URL)


# -- QM9 ---------------------------------------------------------------------------------------------------------


def _qm9_float(text: str) -> float:
    return float(text.replace("*^", "e"))


def parse_qm9_xyz(text: str) -> dict:
    """Parse one QM9 xyz file (``dsgdb9nsd_NNNNNN.xyz``).

    Layout: the number of atoms; ``gdb <index>`` and the 15 properties of :data:`QM9_PROPERTIES` (tab separated);
    one line per atom with element, x, y, z (Å) and the Mulliken charge (e), numbers possibly in Mathematica's
    ``1.2*^-6`` notation; the harmonic frequencies (cm^-1); the GDB-17 and relaxed SMILES; the two InChI.

    Returns:
        ``index`` (int), ``numbers [n]``, ``positions [n, 3]`` (Å), ``charges [n]`` (e), ``properties`` (name ->
        float in the file's units, see :data:`QM9_PROPERTIES`), ``frequencies`` (cm^-1), ``smiles``, ``inchi``.
    """
    lines = text.splitlines()
    try:
        n_atoms = int(lines[0].split()[0])
        header = lines[1].split()
        if header[0] != "gdb" or len(header) != 2 + len(QM9_PROPERTIES):
            raise ValueError(f"the second line must be 'gdb <index>' and {len(QM9_PROPERTIES)} numbers")
        atoms = [line.split() for line in lines[2 : 2 + n_atoms]]
        if len(atoms) != n_atoms or any(len(atom) < 4 for atom in atoms):
            raise ValueError(f"expected {n_atoms} atom lines of element, x, y, z and charge")
        tail = lines[2 + n_atoms :]
        return {
            "index": int(header[1]),
            "numbers": np.array([atomic_numbers[atom[0]] for atom in atoms], np.int32),
            "positions": np.array([[_qm9_float(v) for v in atom[1:4]] for atom in atoms], np.float64),
            "charges": np.array([_qm9_float(atom[4]) if len(atom) > 4 else np.nan for atom in atoms]),
            "properties": {
                name: _qm9_float(value) for (name, _), value in zip(QM9_PROPERTIES, header[2:], strict=True)
            },
            "frequencies": np.array([_qm9_float(v) for v in tail[0].split()]) if tail else np.zeros(0),
            "smiles": tuple(tail[1].split()) if len(tail) > 1 else (),
            "inchi": tuple(tail[2].split()) if len(tail) > 2 else (),
        }
    except (IndexError, KeyError, ValueError) as error:
        first = lines[1][:40] if len(lines) > 1 else text[:40]
        raise DataError(f"not a QM9 xyz file ({first!r}...): {error}") from error


def parse_qm9_atomrefs(text: str) -> dict[str, dict[int, float]]:
    """Parse QM9's ``atomref.txt``: for each of ``zpve``, ``energy_U0``, ``energy_U``, ``enthalpy_H``,
    ``free_energy`` (Hartree) and ``heat_capacity`` (cal/mol/K), the value of the free atom per atomic number
    (H, C, N, O, F), in the file's units. Rows are recognised as an element symbol followed by six numbers."""
    table: dict[str, dict[int, float]] = {name: {} for name in _QM9_ATOMREF_COLUMNS}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 1 + len(_QM9_ATOMREF_COLUMNS) or fields[0] not in atomic_numbers:
            continue
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            continue
        for name, value in zip(_QM9_ATOMREF_COLUMNS, values, strict=True):
            table[name][atomic_numbers[fields[0]]] = value
    if not table["energy_U0"]:
        raise ValueError("no atom reference rows (element symbol and six numbers) found")
    return table


def parse_qm9_uncharacterized(text: str) -> np.ndarray:
    """Parse QM9's ``uncharacterized.txt``: the (1-based) indices of the molecules listed, taken from every line that
    starts with an integer followed by the SMILES columns."""
    indices = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0].isdigit():
            indices.append(int(fields[0]))
    return np.array(indices, np.int64)


def read_qm9_archive(
    path: str | os.PathLike,
    exclude: Iterable[int] | None = None,
    atomrefs: Mapping[str, Mapping[int, float]] | None = None,
) -> Dataset:
    """Read the QM9 xyz tarball (``dsgdb9nsd.xyz.tar.bz2``, any compression ``tarfile`` reads), ordered by index.

    Args:
        path: the archive.
        exclude: 1-based QM9 indices to leave out (e.g. from :func:`parse_qm9_uncharacterized`).
        atomrefs: from :func:`parse_qm9_atomrefs` (file units); stored converted like the properties.

    Returns:
        ``energy`` (U0) and every property of :data:`QM9_PROPERTIES`: energies (Hartree) in eV, ``dipole_moment``
        (its magnitude; Debye) in e*Å, ``isotropic_polarizability`` (Bohr^3) in Å^3, ``electronic_spatial_extent``
        (Bohr^2) in Å^2, rotational constants in GHz, ``heat_capacity`` (cal/mol/K) in eV/K. ``metadata`` holds
        ``property_units`` (the unit of each stored property), ``gdb_index`` (the QM9 index of each structure),
        ``atomrefs`` ({Z: eV} for U0, i.e. ``energy``) and ``atomrefs_all`` (every atomref column, stored units).
        ``source_units`` records the units of the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileNotFoundError(f"no QM9 archive at {path}; check the path")
    skip = {int(i) for i in exclude} if exclude is not None else set()
    records = []
    with tarfile.open(path, "r|*") as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".xyz"):
                continue
            with tar.extractfile(member) as handle:
                text = handle.read().decode("utf-8")
            record = parse_qm9_xyz(text)
            if record["index"] not in skip:
                records.append(record)
    if not records:
        raise DataError(f"{path} holds no QM9 xyz files (after leaving out {len(skip)} listed molecules)")
    records.sort(key=lambda r: r["index"])
    properties, units, stored, file_units = {}, {}, {}, {}
    for name, unit in QM9_PROPERTIES:
        unit_in, factor, unit_out = _QM9_STORAGE[unit]
        properties[name] = np.array([r["properties"][name] for r in records]) * factor
        units[name], stored[name], file_units[name] = unit_in, unit_out, unit
    properties["energy"], units["energy"] = properties["energy_U0"], units["energy_U0"]
    stored["energy"], file_units["energy"] = "eV", "Ha"
    metadata = {
        "source": "qm9",
        "file": str(path),
        "property_units": stored,
        "gdb_index": np.array([r["index"] for r in records], np.int64),
    }
    if atomrefs is not None:
        converted = {}
        for name, table in atomrefs.items():
            unit_in, factor, _ = _QM9_STORAGE[dict(QM9_PROPERTIES)[name]]
            scale = factor * unit_factor(unit_in, internal_unit(name, unit_in))
            converted[name] = {int(z): float(v) * scale for z, v in table.items()}
        metadata["atomrefs"] = dict(converted["energy_U0"])
        metadata["atomrefs_all"] = converted
    dataset = Dataset.from_arrays(
        numbers=[r["numbers"] for r in records],
        positions=[r["positions"] for r in records],
        properties=properties,
        units=units,
        metadata=metadata,
    )
    return dataclasses.replace(dataset, source_units={**file_units, "length": "Ang"})


def load_qm9(data_dir: str | os.PathLike | None = None, remove_uncharacterized: bool = True) -> Dataset:
    """QM9: 133885 molecules, or 130831 with ``remove_uncharacterized`` (the 3054 molecules whose relaxed geometry no
    longer matches their SMILES left out). See :func:`read_qm9_archive` for properties and units; ``energy`` is U0 in
    eV and ``metadata["atomrefs"]`` the U0 of the free atoms ({Z: eV}). Files are cached in ``qm9/``."""
    root = _data_dir(data_dir)
    archive = _cached(root / QM9_ARCHIVE, QM9_URL, _tar_verifier(["dsgdb9nsd_000001.xyz"]))
    atomref_path = _cached(root / QM9_ATOMREF_FILE, QM9_ATOMREF_URL, _text_verifier(parse_qm9_atomrefs))
    exclude = None
    if remove_uncharacterized:
        listing = _cached(root / QM9_UNCHARACTERIZED_FILE, QM9_UNCHARACTERIZED_URL, _text_verifier(_nonempty_list))
        exclude = parse_qm9_uncharacterized(listing.read_text())
    dataset = read_qm9_archive(archive, exclude=exclude, atomrefs=parse_qm9_atomrefs(atomref_path.read_text()))
    return _with_metadata(dataset, benchmark="qm9", url=QM9_URL, uncharacterized_removed=remove_uncharacterized)


def _nonempty_list(text: str) -> bool:
    return parse_qm9_uncharacterized(text).size > 0
