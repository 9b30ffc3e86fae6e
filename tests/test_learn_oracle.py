"""The oracle (jaxatom.learn.oracle): parallel labelling equals serial labelling, failures are reported and never
kept, errors come before work, and labels are appended atomically with their provenance."""

from __future__ import annotations

import os
import sys
import time

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from jaxatom.data.dataset import Dataset
from jaxatom.data.formats import read_hdf5, write_hdf5
from jaxatom.errors import ConfigError, DataError
from jaxatom.learn.oracle import (
    LabelingWarning,
    OracleConfig,
    append_labels,
    label,
    labeled_ids,
    make_calculator,
    structure_id,
)

FLAKY = "tests.oracle_calculators:FlakyEMT"


def copper(count: int) -> list[Atoms]:
    """``count`` rattled periodic copper cells (EMT knows Cu)."""
    structures = []
    for seed in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, seed=seed)
        structures.append(atoms)
    return structures


def emt_reference(atoms: Atoms) -> tuple[float, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = EMT()
    return atoms.get_potential_energy(), atoms.get_forces()


def emt_labeled(structures: list[Atoms]) -> list[Atoms]:
    """The structures labelled with EMT in this process (for tests of the data set file)."""
    labeled = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = EMT()
        atoms.get_forces()
        labeled.append(atoms)
    return labeled


def provenance(structures, generation: int = 1) -> dict:
    return {"generation": [generation] * len(structures), "method": ["emt"] * len(structures),
            "uncertainty": np.linspace(0.1, 0.5, len(structures))}  # fmt: skip


def test_two_worker_processes_equal_serial_labels():
    structures = copper(4)
    arrived = []
    config = OracleConfig(method="emt", workers=2, properties=("energy", "forces", "stress"))
    results = label(structures, config, on_result=lambda index, result: arrived.append(index))
    assert sorted(arrived) == [0, 1, 2, 3]
    for atoms, result in zip(structures, results, strict=True):
        assert result.ok and result.error is None
        energy, forces = emt_reference(atoms)
        assert result.atoms.get_potential_energy() == pytest.approx(energy, rel=1e-12)
        np.testing.assert_allclose(result.atoms.get_forces(), forces, rtol=1e-10, atol=1e-12)
        assert result.atoms.get_stress().shape == (6,)
        np.testing.assert_array_equal(result.atoms.positions, atoms.positions)


def test_failures_are_reported_and_never_appended(tmp_path):
    structures = copper(4)
    structures[1].info["fail"] = "raise"
    structures[2].info["fail"] = "nan"
    with pytest.warns(LabelingWarning, match=r"2 of 4 structures were not labelled") as caught:
        results = label(structures, OracleConfig(method=FLAKY, workers=2))
    message = str(caught[0].message)
    assert "structure 1: RuntimeError: SCF did not converge" in message and "structure 2:" in message
    assert [r.ok for r in results] == [True, False, False, True]
    assert results[1].atoms is None and "SCF did not converge" in results[1].error
    assert "non-finite energy" in results[2].error

    path = tmp_path / "labels.h5"
    good = [r.atoms for r in results if r.ok]
    assert append_labels(path, good, provenance(good)) == 2
    assert len(read_hdf5(path)) == 2
    (nan_labeled,) = emt_labeled(structures[2:3])  # a NaN label handed in directly is refused, the file kept
    nan_labeled.calc.results["energy"] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        append_labels(path, [nan_labeled], provenance([nan_labeled]))
    assert len(read_hdf5(path)) == 2


def test_a_hung_calculation_times_out():
    structures = copper(2)
    structures[0].info["fail"] = "hang"  # sleeps a minute
    start = time.perf_counter()
    with pytest.warns(LabelingWarning, match="timeout_s"):
        results = label(structures, OracleConfig(method=FLAKY, workers=2, timeout_s=2.0))
    assert time.perf_counter() - start < 50
    assert not results[0].ok and "TimeoutError" in results[0].error
    assert results[1].ok


def test_a_dead_worker_is_a_failure_not_a_crash():
    structures = copper(2)
    structures[0].info["fail"] = "die"  # the worker process exits, as on a segmentation fault
    with pytest.warns(LabelingWarning, match="the worker failed"):
        results = label(structures, OracleConfig(method=FLAKY))
    assert not results[0].ok and "BrokenProcessPool" in results[0].error
    assert results[1].ok or "the worker failed" in results[1].error  # labelled, or reported: never lost


def test_dask_engine_labels_like_serial():
    distributed = pytest.importorskip("distributed")
    structures = copper(3)
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
    with cluster:
        config = OracleConfig(method="emt", engine="dask", address=cluster.scheduler_address)
        arrived = []
        results = label(structures, config, on_result=lambda index, result: arrived.append(index))
    assert sorted(arrived) == [0, 1, 2]
    for atoms, result in zip(structures, results, strict=True):
        energy, forces = emt_reference(atoms)
        assert result.atoms.get_potential_energy() == pytest.approx(energy, rel=1e-12)
        np.testing.assert_allclose(result.atoms.get_forces(), forces, rtol=1e-10, atol=1e-12)


def _no_work(index, result):
    raise AssertionError("no structure may be labelled when the settings cannot work")


def test_missing_ray_is_refused_before_work(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(ConfigError, match=r"engine 'ray' needs ray.*pip install 'jaxatom\[ray\]'"):
        label(copper(1), OracleConfig(method="emt", engine="ray"), on_result=_no_work)


def test_missing_tblite_is_refused_before_work(monkeypatch):
    monkeypatch.setitem(sys.modules, "tblite.ase", None)
    with pytest.raises(ConfigError, match=r"needs tblite.*pip install 'jaxatom\[xtb\]'"):
        label([molecule("H2O")], OracleConfig(), on_result=_no_work)


def test_bad_settings_are_refused_before_work():
    with pytest.raises(ConfigError, match="unknown method 'GFN3'"):
        OracleConfig.load({"method": "GFN3"})
    with pytest.raises(ConfigError, match="address is for engine 'dask' or 'ray'"):
        OracleConfig.load({"address": "tcp://localhost:8786"})
    with pytest.raises(ConfigError, match="use jaxatom's, 'dipole_moment'"):
        OracleConfig.load({"properties": ["energy", "dipole"]})
    with pytest.raises(ConfigError, match="cannot import calculator 'no_such_module:Calc'"):
        label(copper(1), OracleConfig(method="no_such_module:Calc"), on_result=_no_work)
    with pytest.raises(ConfigError, match="cannot compute dipole_moment"):
        label(copper(1), OracleConfig(method="emt", properties=("energy", "dipole_moment")), on_result=_no_work)
    with pytest.raises(ConfigError, match="fix the oracle's kwargs"):
        make_calculator(OracleConfig(method="tests.oracle_calculators:Springs", kwargs={"no_such_option": 1}))
    assert make_calculator(OracleConfig(method="tests.oracle_calculators:Springs", kwargs={"k": 2.0})).k == 2.0


def test_gfn2_labels_match_a_direct_ase_call():
    pytest.importorskip("tblite")
    from tblite.ase import TBLite

    water = molecule("H2O")
    (result,) = label([water], OracleConfig(properties=("energy", "forces", "dipole_moment")))
    direct = water.copy()
    direct.calc = TBLite(method="GFN2-xTB", verbosity=0)
    assert result.atoms.get_potential_energy() == pytest.approx(direct.get_potential_energy(), abs=1e-8)
    np.testing.assert_allclose(result.atoms.get_forces(), direct.get_forces(), atol=1e-8)
    np.testing.assert_allclose(result.atoms.get_dipole_moment(), direct.get_dipole_moment(), atol=1e-8)


def test_provenance_round_trips_and_duplicates_are_skipped(tmp_path):
    path = tmp_path / "labels.h5"
    first = emt_labeled(copper(3))
    assert append_labels(path, first, provenance(first, generation=0)) == 3
    second = emt_labeled(copper(5)[2:])  # structure 2 is in already
    extra = {**provenance(second, generation=1), "note": ["a", "b", "c"]}
    assert append_labels(path, second, extra) == 2

    data = read_hdf5(path)
    assert len(data) == 5 and set(data.properties) == {"energy", "forces"}
    np.testing.assert_array_equal(data.info["generation"], [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(data.info["method"], ["emt"] * 5)
    np.testing.assert_allclose(data.info["uncertainty"], [0.1, 0.3, 0.5, 0.3, 0.5])
    np.testing.assert_array_equal(data.info["note"], ["", "", "", "b", "c"])
    ids = [structure_id(atoms) for atoms in copper(5)]
    np.testing.assert_array_equal(data.info["structure_id"], ids)
    assert labeled_ids(path) == set(ids)
    for index, atoms in enumerate(copper(5)):
        energy, forces = emt_reference(atoms)
        assert data.value("energy", index) == pytest.approx(energy, rel=1e-12)
        np.testing.assert_allclose(data.value("forces", index), forces, rtol=1e-10, atol=1e-12)
    assert append_labels(path, second, provenance(second, generation=2)) == 0
    assert labeled_ids(tmp_path / "missing.h5") == set()


def test_older_files_without_ids_get_them(tmp_path):
    path = tmp_path / "train.h5"
    old = emt_labeled(copper(2))
    write_hdf5(Dataset.from_atoms(old), path)  # a training set written before provenance existed
    with h5py.File(path, "r") as data:
        assert "structure_id" not in data.get("info", {})
    assert labeled_ids(path) == {structure_id(atoms) for atoms in old}
    new = emt_labeled(copper(3))
    assert append_labels(path, new, provenance(new, generation=4)) == 1
    data = read_hdf5(path)
    np.testing.assert_array_equal(data.info["generation"], [-1, -1, 4])
    assert np.isnan(data.info["uncertainty"][:2]).all() and list(data.info["method"]) == ["", "", "emt"]


def test_an_append_killed_before_the_rename_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "labels.h5"
    labeled = emt_labeled(copper(3))
    append_labels(path, labeled[:2], provenance(labeled[:2]))
    before = path.read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        append_labels(path, labeled[2:], provenance(labeled[2:]))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert len(read_hdf5(path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.h5", "labels.h5.lock"]

    (tmp_path / ".labels.h5.partial").write_bytes(b"half a file")  # left by a kill -9 during the write
    assert append_labels(path, labeled[2:], provenance(labeled[2:])) == 1
    assert len(read_hdf5(path)) == 3 and not (tmp_path / ".labels.h5.partial").exists()


def test_provenance_must_be_complete(tmp_path):
    labeled = emt_labeled(copper(2))
    with pytest.raises(DataError, match="provenance lacks uncertainty"):
        append_labels(tmp_path / "x.h5", labeled, {"generation": [0, 0], "method": ["emt", "emt"]})
    with pytest.raises(DataError, match="provenance 'method' has shape"):
        append_labels(tmp_path / "x.h5", labeled, {**provenance(labeled), "method": ["emt"]})
    with pytest.raises(DataError, match="'generation' must be integers"):
        append_labels(tmp_path / "x.h5", labeled, {**provenance(labeled), "generation": [0.5, 1.5]})
    with pytest.raises(DataError, match="structure 0 has no property 'energy'"):
        append_labels(tmp_path / "x.h5", copper(2), provenance(labeled))
    with pytest.raises(DataError, match="holds energy, forces; append the properties the data set holds"):
        append_labels(tmp_path / "y.h5", labeled[:1], provenance(labeled[:1]))
        append_labels(tmp_path / "y.h5", labeled[1:], provenance(labeled[1:]), properties=["energy", "stress"])
    assert not (tmp_path / "x.h5").exists()
