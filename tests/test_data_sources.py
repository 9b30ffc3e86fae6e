"""Benchmark sources: parsing of files written here in the real formats (MD17/MD22 npz, the rMD17 archive, ISO17
databases in their tarball, the QM9 xyz tarball with its atomref and uncharacterized lists), caching in the data
directory and verified downloads over ``file://``. Nothing is fetched from the network."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.db import connect

from jaxatom.data import sources
from jaxatom.units import Bohr, Debye, Hartree, kcal_mol

RNG = np.random.default_rng(7)
REAL_DOWNLOAD = sources.download  # the autouse fixture below replaces it with one that refuses


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to download fails the test; tests that exercise downloading replace this on purpose."""

    def refuse(url, path, **_):
        raise AssertionError(f"tests must not download ({url} -> {path})")

    monkeypatch.setattr(sources, "download", refuse)


# -- writers of the real formats -------------------------------------------------------------------------------


def write_md17_npz(path: Path, n: int = 4, units: bool = False) -> dict[str, np.ndarray]:
    """An sGDML npz as quantum-machine.org serves it: ``E [S, 1]`` kcal/mol, ``F`` kcal/mol/Å, ``R`` Å, ``z``."""
    z = np.array([6, 6, 8, 1, 1, 1], np.uint8)
    data = dict(
        E=RNG.normal(-97000.0, 3.0, (n, 1)),
        F=RNG.normal(0.0, 30.0, (n, len(z), 3)),
        R=RNG.normal(0.0, 1.2, (n, len(z), 3)),
        z=z,
        name=np.array("ethanol"),
        type=np.array("d"),
        theory=np.array("PBE+vdW-TS"),
        md5=np.array("0123456789abcdef0123456789abcdef"),
    )
    if units:
        data.update(e_unit=np.array("kcal/mol"), r_unit=np.array("Ang"))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return data


def _add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def write_rmd17_archive(path: Path, n: int = 6) -> dict[str, dict[str, np.ndarray]]:
    """``rmd17.tar.bz2`` as on figshare: ``rmd17/npz_data/rmd17_<mol>.npz`` (``nuclear_charges``, ``coords``,
    ``energies [S]``, ``forces``, ``old_*``) and ``rmd17/splits/index_{train,test}_0{1..5}.csv``, one index a line."""
    molecules = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:bz2") as tar:
        for name, file, z in (
            ("aspirin", "rmd17_aspirin.npz", [6, 6, 8, 1]),
            ("salicylic_acid", "rmd17_salicylic.npz", [8, 6, 1]),
        ):
            z = np.array(z, np.int64)
            arrays = dict(
                nuclear_charges=z,
                coords=RNG.normal(0.0, 1.5, (n, len(z), 3)),
                energies=RNG.normal(-406000.0, 2.0, n),
                forces=RNG.normal(0.0, 20.0, (n, len(z), 3)),
                old_indices=np.arange(n) * 17,
                old_energies=RNG.normal(-406000.0, 2.0, n),
                old_forces=RNG.normal(0.0, 20.0, (n, len(z), 3)),
            )
            _add_bytes(tar, f"rmd17/npz_data/{file}", _npz_bytes(**arrays))
            molecules[name] = arrays
        for i in range(1, 6):
            train = np.arange(i, i + 3) % n
            test = np.setdiff1d(np.arange(n), train)
            _add_bytes(tar, f"rmd17/splits/index_train_0{i}.csv", "".join(f"{k}\n" for k in train).encode())
            _add_bytes(tar, f"rmd17/splits/index_test_0{i}.csv", "".join(f"{k}\n" for k in test).encode())
        _add_bytes(tar, "rmd17/readme.txt", b"revised MD17\n")
    return molecules


def write_iso17_db(path: Path, n: int = 3) -> list[tuple[Atoms, float, np.ndarray]]:
    """An ISO17 fold as in ``iso17.tar.gz``: ``total_energy`` (eV) a key-value pair, ``atomic_forces`` in data."""
    entries = []
    with connect(path, type="db") as db:
        for _ in range(n):
            atoms = Atoms("C7O2H10", positions=RNG.normal(0.0, 2.0, (19, 3)))
            energy, forces = float(RNG.normal(-11500.0, 1.0)), RNG.normal(0.0, 1.0, (19, 3))
            db.write(atoms, total_energy=energy, data={"atomic_forces": forces})
            entries.append((atoms, energy, forces))
    return entries


def write_iso17_archive(path: Path, tmp: Path) -> dict[str, list]:
    folds = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for fold in sources.ISO17_FOLDS:
            db_path = tmp / f"{fold}.db"
            folds[fold] = write_iso17_db(db_path, n=2 if fold != "reference" else 3)
            tar.add(db_path, arcname=f"iso17/{fold}.db")
        _add_bytes(tar, "iso17/validation_ids.txt", b"1\n2\n")
    return folds


# Three QM9 files as in dsgdb9nsd.xyz.tar.bz2 (tab separated, trailing tab on the property and SMILES lines);
# the water file uses Mathematica's '*^' exponents as some real files do.
QM9_FILES = {
    1: (
        "5\n"
        "gdb 1\t157.7118\t157.70997\t157.70699\t0.\t13.21\t-0.3877\t0.1171\t0.5048\t35.3641\t0.044749\t"
        "-40.47893\t-40.476062\t-40.475117\t-40.498597\t6.469\t\n"
        "C\t-0.0126981359\t 1.0858041578\t 0.0080009958\t-0.535689\n"
        "H\t 0.002150416\t-0.0060313176\t 0.0019761204\t 0.133921\n"
        "H\t 1.0117308433\t 1.4637511618\t 0.0002765748\t 0.133922\n"
        "H\t-0.540815069\t 1.4475266138\t-0.8766437152\t 0.133923\n"
        "H\t-0.5238136345\t 1.4379326443\t 0.9063972942\t 0.133923\n"
        "1341.307\t1341.3284\t1341.365\t1562.6731\t1562.7453\t3038.3205\t3151.6034\t3151.6788\t3151.7078\n"
        "C\tC\t\n"
        "InChI=1S/CH4/h1H4\tInChI=1S/CH4/h1H4\n"
    ),
    2: (
        "4\n"
        "gdb 2\t293.60975\t293.54111\t191.39397\t1.6256\t9.46\t-0.257\t0.0829\t0.3399\t26.1563\t0.034358\t"
        "-56.525887\t-56.523026\t-56.522082\t-56.544961\t6.316\t\n"
        "N\t-0.0404260543\t 1.0241077531\t 0.0625637998\t-0.707143\n"
        "H\t 0.0172574639\t 0.0125452063\t-0.0273771593\t 0.235712\n"
        "H\t 0.9157893661\t 1.3587451948\t-0.0287577581\t 0.235712\n"
        "H\t-0.5202777357\t 1.3435321258\t-0.7755426124\t 0.235718\n"
        "1038.2469\t1713.1713\t1713.2136\t3439.1622\t3534.8123\t3534.8477\n"
        "N\tN\t\n"
        "InChI=1S/H3N/h1H3\tInChI=1S/H3N/h1H3\n"
    ),
    3: (
        "3\n"
        "gdb 3\t799.58812\t437.90386\t282.94545\t1.8511\t6.31\t-0.2928\t0.0687\t0.3615\t19.0002\t0.021375\t"
        "-76.404702\t-76.401867\t-76.400922\t-76.422349\t6.002\t\n"
        "O\t-0.0343604951\t 0.9775395708\t 0.0076015923\t-0.589706\n"
        "H\t 0.0647664923\t 0.0205721989\t 1.2345*^-6\t 0.294853\n"
        "H\t 0.8717903737\t 1.3007924048\t-3.4567*^-5\t 0.294853\n"
        "1636.1357\t3557.4326\t3659.5508\n"
        "O\tO\t\n"
        "InChI=1S/H2O/h1H2\tInChI=1S/H2O/h1H2\n"
    ),
}

QM9_ATOMREF = """   Atomic reference energies and heat capacities of the free atoms (B3LYP/6-31G(2df,p))
   =========================================================================================================
   Ele-    ZPVE         U (0 K)      U (298.15 K)    H (298.15 K)    G (298.15 K)     CV
   ment   Hartree       Hartree        Hartree         Hartree         Hartree        Cal/(Mol Kelvin)
   =========================================================================================================
   H     0.000000     -0.500273      -0.498857       -0.497912       -0.510927       2.981
   C     0.000000    -37.846772     -37.845355      -37.844411      -37.861317       2.981
   N     0.000000    -54.583861     -54.582445      -54.581501      -54.598897       2.981
   O     0.000000    -75.064579     -75.063163      -75.062219      -75.079532       2.981
   F     0.000000    -99.718730     -99.717314      -99.716370      -99.733544       2.981
   =========================================================================================================
"""

QM9_UNCHARACTERIZED = """List of molecules among the 133885 GDB9 molecules for which the Corina generated Cartesian
coordinates and the B3LYP/6-31G(2df,p) equilibrium geometry lead to different SMILES and InChI strings. Given are the
indices of these molecules in the database, the original GDB17 SMILES, the SMILES generated from the Cartesian
coordinates, as well as the L1 norm of the difference between the Coulomb matrices (D_IJ in au).

================================================================================================================
#   Index                 GDB17 SMILES              SMILES for B3LYP XYZ          SMILES for Corina XYZ      D_IJ
================================================================================================================
       2                            N                                 N                              N   6.036217
      58                    NC(=N)C#N                         NC(=N)C#N               [NH]C(=[NH2])C#N   6.036217
================================================================================================================
"""


def write_qm9_files(root: Path) -> None:
    (root / "qm9").mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / sources.QM9_ARCHIVE, "w:bz2") as tar:
        for index in (3, 1, 2):  # members in any order; the data set is ordered by index
            _add_bytes(tar, f"dsgdb9nsd_{index:06d}.xyz", QM9_FILES[index].encode())
    (root / sources.QM9_ATOMREF_FILE).write_text(QM9_ATOMREF)
    (root / sources.QM9_UNCHARACTERIZED_FILE).write_text(QM9_UNCHARACTERIZED)


# -- data directory and downloads ------------------------------------------------------------------------------


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXATOM_DATA", str(tmp_path / "data"))
    assert sources.default_data_dir() == tmp_path / "data"
    monkeypatch.delenv("JAXATOM_DATA")
    assert sources.default_data_dir() == Path.home() / ".cache" / "jaxatom"


@pytest.fixture
def real_download():
    """The real :func:`sources.download`, for tests that fetch ``file://`` URLs only."""
    return REAL_DOWNLOAD


def test_download_file_url_verified(real_download, tmp_path):
    source = tmp_path / "served" / "md17_ethanol.npz"
    write_md17_npz(source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    target = tmp_path / "cache" / "md17" / "md17_ethanol.npz"
    checks = []
    result = real_download(
        source.as_uri(), target, sha256=digest, md5=hashlib.md5(source.read_bytes()).hexdigest(), verify=checks.append
    )
    assert result == target and target.read_bytes() == source.read_bytes()
    assert checks and checks[0].name.endswith(".partial")  # verified before it was moved into place
    assert not list(target.parent.glob("*.partial"))


@pytest.mark.parametrize("problem", ["checksum", "format", "missing"])
def test_download_failure_leaves_nothing(real_download, tmp_path, problem):
    source = tmp_path / "served.npz"
    source.write_bytes(b"PK\x03\x04 this is not a complete npz file")
    url = source.as_uri() if problem != "missing" else (tmp_path / "absent.npz").as_uri()
    target = tmp_path / "cache" / "file.npz"
    options = {"sha256": "0" * 64} if problem == "checksum" else {"verify": sources._npz_verifier(("z", "R"))}
    with pytest.raises(sources.DownloadError) as error:
        real_download(url, target, **options)
    message = str(error.value)
    assert url in message and str(target) in message and "place it at" in message
    assert not target.exists() and not list(target.parent.glob("*"))


def test_download_truncated_tarball_refused(real_download, tmp_path):
    archive = tmp_path / "served.tar.bz2"
    write_rmd17_archive(archive)
    truncated = tmp_path / "truncated.tar.bz2"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    target = tmp_path / "cache" / sources.RMD17_ARCHIVE
    with pytest.raises(sources.DownloadError):
        real_download(truncated.as_uri(), target, verify=sources._tar_verifier(["rmd17/npz_data/rmd17_aspirin.npz"]))
    assert not target.exists()
    # a complete archive that lacks an expected member is refused too
    with pytest.raises(sources.DownloadError, match="lacks"):
        real_download(archive.as_uri(), target, verify=sources._tar_verifier(["rmd17/npz_data/rmd17_uracil.npz"]))
    assert not target.exists()


def test_missing_file_is_downloaded_from_its_url(monkeypatch, tmp_path):
    served = tmp_path / "served.npz"
    write_md17_npz(served)
    calls = []

    def fake_download(url, path, **options):
        calls.append(url)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(served.read_bytes())
        options["verify"](Path(path))
        return Path(path)

    monkeypatch.setattr(sources, "download", fake_download)
    data = sources.load_md17("aspirin", data_dir=tmp_path / "cache")
    assert calls == ["http://www.quantum-machine.org/gdml/data/npz/md17_aspirin.npz"]
    assert (tmp_path / "cache" / "md17" / "md17_aspirin.npz").is_file()
    sources.load_md17("aspirin", data_dir=tmp_path / "cache")  # now cached
    assert len(calls) == 1 and len(data) == 4


# -- MD17 and MD22 ---------------------------------------------------------------------------------------------


def test_md17_from_cache_in_ev(tmp_path):
    raw = write_md17_npz(tmp_path / "md17" / "md17_ethanol.npz")
    data = sources.load_md17("ethanol", data_dir=tmp_path)
    assert len(data) == 4 and data.n_atoms.tolist() == [6] * 4
    np.testing.assert_allclose(data.properties["energy"], raw["E"][:, 0] * kcal_mol, rtol=1e-12)
    np.testing.assert_allclose(data.properties["forces"], raw["F"].reshape(-1, 3) * kcal_mol, rtol=1e-12)
    np.testing.assert_allclose(data.positions, raw["R"].reshape(-1, 3))
    assert data.numbers.tolist() == raw["z"].tolist() * 4
    assert data.metadata["benchmark"] == "md17" and data.metadata["molecule"] == "ethanol"
    assert data.source_units["energy"] == "kcal/mol"
    assert kcal_mol == pytest.approx(0.0433641, rel=1e-5)


def test_md17_and_md22_names(tmp_path):
    assert set(sources.MD17_MOLECULES) == {
        "aspirin", "azobenzene", "benzene", "ethanol", "malonaldehyde", "naphthalene", "paracetamol",
        "salicylic_acid", "toluene", "uracil",
    }  # fmt: skip
    assert set(sources.RMD17_MOLECULES) == set(sources.MD17_MOLECULES)
    with pytest.raises(ValueError, match="unknown MD17 molecule"):
        sources.load_md17("water", data_dir=tmp_path)
    assert sources.MD22_MOLECULES["AT-AT-CG-CG"] == "md22_AT-AT-CG-CG.npz"


def test_md22_from_cache(tmp_path):
    raw = write_md17_npz(tmp_path / "md22" / "md22_stachyose.npz", n=3, units=True)
    data = sources.load_md22("stachyose", data_dir=tmp_path)
    np.testing.assert_allclose(data.properties["energy"], raw["E"][:, 0] * kcal_mol, rtol=1e-12)
    np.testing.assert_allclose(data.properties["forces"], raw["F"].reshape(-1, 3) * kcal_mol, rtol=1e-12)
    assert data.metadata["benchmark"] == "md22"


# -- rMD17 -----------------------------------------------------------------------------------------------------


def test_rmd17_archive_cache_and_splits(tmp_path):
    raw = write_rmd17_archive(tmp_path / sources.RMD17_ARCHIVE)
    data = sources.load_rmd17("salicylic_acid", data_dir=tmp_path)
    expected = raw["salicylic_acid"]
    assert len(data) == 6 and data.numbers[:3].tolist() == [8, 6, 1]
    np.testing.assert_allclose(data.properties["energy"], expected["energies"] * kcal_mol, rtol=1e-12)
    np.testing.assert_allclose(data.properties["forces"], expected["forces"].reshape(-1, 3) * kcal_mol, rtol=1e-12)
    np.testing.assert_allclose(data.positions, expected["coords"].reshape(-1, 3))
    assert (tmp_path / "rmd17" / "npz_data" / "rmd17_salicylic.npz").is_file()  # taken out of the archive once

    for index in range(1, 6):
        train, test = sources.rmd17_split(index, data_dir=tmp_path)
        assert train.tolist() == [k % 6 for k in range(index, index + 3)]
        assert sorted(train.tolist() + test.tolist()) == list(range(6))
        assert train.dtype == np.int64 and not set(train) & set(test)
    assert (tmp_path / "rmd17" / "splits" / "index_test_05.csv").is_file()
    with pytest.raises(ValueError, match="1 to 5"):
        sources.rmd17_split(0, data_dir=tmp_path)

    direct = sources.read_rmd17_archive(tmp_path / sources.RMD17_ARCHIVE, "aspirin")
    np.testing.assert_allclose(direct.properties["energy"], raw["aspirin"]["energies"] * kcal_mol, rtol=1e-12)
    train, test = sources.read_rmd17_split(tmp_path / sources.RMD17_ARCHIVE, 2)
    assert train.tolist() == [2, 3, 4]
    with pytest.raises(FileNotFoundError, match="rmd17_uracil.npz"):
        sources.read_rmd17_archive(tmp_path / sources.RMD17_ARCHIVE, "uracil")


def test_rmd17_split_csv_formats(tmp_path):
    splits = tmp_path / "rmd17" / "splits"
    splits.mkdir(parents=True)
    (splits / "index_train_03.csv").write_text("1.000000000000000000e+00\n5.000000000000000000e+00\n")
    (splits / "index_test_03.csv").write_text("0,2\n3\n")
    train, test = sources.rmd17_split(3, data_dir=tmp_path)
    assert train.tolist() == [1, 5] and test.tolist() == [0, 2, 3]
    (splits / "index_test_03.csv").write_text("0.5\n")
    with pytest.raises(ValueError, match="integer"):
        sources.rmd17_split(3, data_dir=tmp_path)


# -- ISO17 -----------------------------------------------------------------------------------------------------


def test_iso17_folds_from_archive(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    folds = write_iso17_archive(tmp_path / "data" / sources.ISO17_ARCHIVE, work)
    for fold in ("reference", "test_other"):
        data = sources.load_iso17(fold, data_dir=tmp_path / "data")
        entries = folds[fold]
        assert len(data) == len(entries) and data.n_atoms.tolist() == [19] * len(entries)
        np.testing.assert_allclose(data.properties["energy"], [e for _, e, _ in entries], rtol=1e-14)
        np.testing.assert_allclose(data.properties["forces"], np.concatenate([f for _, _, f in entries]))
        np.testing.assert_allclose(data.positions, np.concatenate([a.positions for a, _, _ in entries]))
        assert data.metadata["fold"] == fold and data.source_units["energy"] == "eV"
        assert (tmp_path / "data" / "iso17" / f"{fold}.db").is_file()
    with pytest.raises(ValueError, match="unknown ISO17 fold"):
        sources.load_iso17("train", data_dir=tmp_path / "data")


def test_iso17_schnetpack_rewritten_layout(tmp_path):
    """SchNetPack rewrites the folds with ``total_energy`` as ``[1]`` array in the row data; that reads too."""
    path = tmp_path / "reference.db"
    atoms = Atoms("CO", positions=[[0, 0, 0], [1.13, 0, 0]])
    with connect(path, type="db") as db:
        db.write(atoms, data={"total_energy": np.array([-3.5]), "atomic_forces": np.ones((2, 3))})
    data = sources.read_iso17_db(path)
    assert data.properties["energy"].tolist() == [-3.5] and data.properties["forces"].shape == (2, 3)


# -- QM9 -------------------------------------------------------------------------------------------------------


def test_parse_qm9_xyz_with_mathematica_exponents():
    record = sources.parse_qm9_xyz(QM9_FILES[3])
    assert record["index"] == 3 and record["numbers"].tolist() == [8, 1, 1]
    assert record["positions"][1, 2] == pytest.approx(1.2345e-6) and record["positions"][2, 2] == -3.4567e-5
    assert record["properties"]["energy_U0"] == -76.404702 and record["properties"]["heat_capacity"] == 6.002
    assert record["charges"].tolist() == [-0.589706, 0.294853, 0.294853]
    assert record["smiles"] == ("O", "O") and record["inchi"][0] == "InChI=1S/H2O/h1H2"
    assert record["frequencies"].shape == (3,)
    with pytest.raises(ValueError, match="not a QM9 xyz file"):
        sources.parse_qm9_xyz("3\nwater\nO 0 0 0\n")


def test_parse_qm9_atomrefs_and_uncharacterized():
    refs = sources.parse_qm9_atomrefs(QM9_ATOMREF)
    assert sorted(refs["energy_U0"]) == [1, 6, 7, 8, 9]
    assert refs["energy_U0"][6] == -37.846772 and refs["free_energy"][9] == -99.733544
    assert refs["heat_capacity"][1] == 2.981 and refs["zpve"][8] == 0.0
    assert sources.parse_qm9_uncharacterized(QM9_UNCHARACTERIZED).tolist() == [2, 58]


@pytest.mark.parametrize("remove", [True, False])
def test_qm9_from_cache_units_and_atomrefs(tmp_path, remove):
    write_qm9_files(tmp_path)
    data = sources.load_qm9(data_dir=tmp_path, remove_uncharacterized=remove)
    kept = [1, 3] if remove else [1, 2, 3]
    assert data.metadata["gdb_index"].tolist() == kept
    records = [sources.parse_qm9_xyz(QM9_FILES[i]) for i in kept]
    raw = {name: np.array([r["properties"][name] for r in records]) for name, _ in sources.QM9_PROPERTIES}
    props = data.properties

    np.testing.assert_allclose(props["energy"], raw["energy_U0"] * Hartree, rtol=1e-12)
    np.testing.assert_allclose(props["energy_U0"], props["energy"])
    for name in ("homo", "lumo", "gap", "zpve", "energy_U", "enthalpy_H", "free_energy"):
        np.testing.assert_allclose(props[name], raw[name] * Hartree, rtol=1e-12)
    assert Hartree == pytest.approx(27.211386, rel=1e-6)
    np.testing.assert_allclose(props["dipole_moment"], raw["dipole_moment"] * Debye, rtol=1e-12)
    np.testing.assert_allclose(props["isotropic_polarizability"], raw["isotropic_polarizability"] * Bohr**3)
    np.testing.assert_allclose(props["electronic_spatial_extent"], raw["electronic_spatial_extent"] * Bohr**2)
    np.testing.assert_allclose(props["rotational_constant_A"], raw["rotational_constant_A"])  # GHz
    np.testing.assert_allclose(props["heat_capacity"], raw["heat_capacity"] * kcal_mol / 1000)  # eV/K
    assert data.metadata["property_units"]["heat_capacity"] == "eV/K"
    assert data.source_units["energy"] == "Ha" and data.source_units["rotational_constant_A"] == "GHz"

    assert data.n_atoms.tolist() == [len(r["numbers"]) for r in records]
    np.testing.assert_allclose(data.positions, np.concatenate([r["positions"] for r in records]))
    atomrefs = data.metadata["atomrefs"]
    assert atomrefs[1] == pytest.approx(-0.500273 * Hartree) and atomrefs[8] == pytest.approx(-75.064579 * Hartree)
    assert data.metadata["atomrefs_all"]["heat_capacity"][6] == pytest.approx(2.981e-3 * kcal_mol)
    # methane's atomization energy from these references: -0.631066 Ha = -17.17 eV
    methane = props["energy"][0] - atomrefs[6] - 4 * atomrefs[1]
    assert methane == pytest.approx((-40.47893 + 37.846772 + 4 * 0.500273) * Hartree, rel=1e-9)
    assert methane == pytest.approx(-17.17, abs=0.01)


def test_qm9_without_atomrefs_and_empty_archive(tmp_path):
    write_qm9_files(tmp_path)
    data = sources.read_qm9_archive(tmp_path / sources.QM9_ARCHIVE, exclude=[1, 2])
    assert data.metadata["gdb_index"].tolist() == [3] and "atomrefs" not in data.metadata
    with pytest.raises(ValueError, match="holds no QM9 xyz files"):
        sources.read_qm9_archive(tmp_path / sources.QM9_ARCHIVE, exclude=[1, 2, 3])
