"""The oracle: a reference method (GFN2-xTB by default, or any ASE calculator) labels the selected structures, in
parallel, and the labels are appended to a data set file atomically with their provenance.

:func:`label` runs one calculation per structure on local worker processes (``concurrent.futures`` with the spawn
start method), a dask cluster (``distributed``) or ray, and hands each result to a callback the moment it arrives,
so a caller can persist labels one by one. A calculation that raises, or returns NaN or infinite values, is a
failure: reported (a warning with a summary) and returned, never kept as a label. Everything that can be checked
without computing (the method, its package, the engine's package, the properties) is checked before any work.

:func:`append_labels` adds labelled structures to a jaxatom HDF5 data set with per-structure provenance in
:attr:`~jaxatom.data.Dataset.info` (``generation``, ``method``, ``uncertainty``, ``structure_id``);
:func:`labeled_ids` tells a resumed loop which structures are in already.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import importlib
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import h5py
import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from pydantic import Field, field_validator, model_validator

from jaxatom.config import StrictModel
from jaxatom.data.dataset import ASE_RESULT_NAMES, Dataset, concatenate
from jaxatom.data.formats import read_hdf5, read_hdf5_info, write_hdf5
from jaxatom.errors import ConfigError, DataError
from jaxatom.files import exclusive_lock

__all__ = [
    "OracleConfig",
    "LabelResult",
    "LabelingWarning",
    "XTB_METHODS",
    "PROVENANCE",
    "make_calculator",
    "label",
    "label_one",
    "failure_summary",
    "structure_id",
    "append_labels",
    "labeled_ids",
]

#: The tblite methods :class:`OracleConfig` names directly.
XTB_METHODS = ("GFN2-xTB", "GFN1-xTB")
#: The provenance every appended structure needs, with the numpy dtype kinds it may have (``structure_id`` is
#: computed when not given).
PROVENANCE = {"generation": "iu", "method": "U", "uncertainty": "iuf"}
#: Seconds allowed, on top of ``timeout_s``, for the first result: workers start and import jaxatom and the method.
STARTUP_S = 120.0
_JAXATOM_NAMES = {ase: name for name, ase in ASE_RESULT_NAMES.items()}


class OracleConfig(StrictModel):
    """How structures are labelled: the reference method and where it runs."""

    title: ClassVar[str] = "oracle settings"

    method: str = Field(
        "GFN2-xTB",
        description="'GFN2-xTB' or 'GFN1-xTB' (tblite), 'emt' (ASE's EMT), or any ASE calculator as 'module:Class'",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the calculator")
    workers: int = Field(
        1, ge=0, description="worker processes (engine processes; a local dask or ray cluster); 0: in this process"
    )
    engine: Literal["processes", "dask", "ray"] = "processes"
    address: str | None = Field(None, description="scheduler address of a running dask or ray cluster")
    properties: tuple[str, ...] = Field(("energy", "forces"), min_length=1, description="jaxatom property names")
    timeout_s: float | None = Field(None, gt=0, description="give up when no result arrives for this long (s)")

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        module, colon, name = method.partition(":")
        if method in (*XTB_METHODS, "emt") or (colon and module and name):
            return method
        raise ValueError(f"unknown method {method!r}; use {', '.join(XTB_METHODS)}, 'emt' or 'module:Class'")

    @field_validator("properties")
    @classmethod
    def _jaxatom_names(cls, properties: tuple[str, ...]) -> tuple[str, ...]:
        for name in properties:
            if name in _JAXATOM_NAMES:
                raise ValueError(f"{name!r} is ASE's name; use jaxatom's, {_JAXATOM_NAMES[name]!r}")
        if len(set(properties)) != len(properties):
            raise ValueError(f"{list(properties)} names a property twice; name each once")
        return properties

    @model_validator(mode="after")
    def _address_needs_cluster(self) -> OracleConfig:
        if self.address is not None and self.engine == "processes":
            raise ValueError("address is for engine 'dask' or 'ray'; remove it or choose one of those engines")
        if self.workers == 0 and (self.engine != "processes" or self.timeout_s is not None):
            raise ValueError("workers: 0 labels in this process, without engine or timeout_s; give workers >= 1")
        return self


@dataclasses.dataclass(frozen=True)
class LabelResult:
    """The outcome of labelling one structure: ``atoms`` (a copy of the input with the properties as
    ``SinglePointCalculator`` results in ASE units and names: ``energy`` eV, ``forces [n, 3]`` eV/Å, ``stress``
    eV/Å³, ``dipole`` e·Å, ...) or, on failure, ``atoms`` None and ``error`` saying why; ``seconds`` of wall time."""

    atoms: Atoms | None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the structure was labelled."""
        return self.error is None


class LabelingWarning(UserWarning):
    """Some structures could not be labelled (the message lists them); they are returned as failures."""


# -- the calculator ------------------------------------------------------------------------------------------------


def make_calculator(config: OracleConfig) -> Calculator:
    """A fresh ASE calculator for ``config.method`` with ``config.kwargs`` (tblite: ``verbosity=0`` unless given).

    Raises :class:`ConfigError` naming the fix if the method's package is missing or the calculator cannot be made.
    """
    if config.method in XTB_METHODS:
        try:
            from tblite.ase import TBLite
        except ImportError as err:
            raise ConfigError(
                f"method {config.method!r} needs tblite, which cannot be imported ({err}); install it with "
                "pip install 'jaxatom[xtb]' (or choose another method)"
            ) from err
        return _construct(TBLite, config, {"method": config.method, "verbosity": 0})
    if config.method == "emt":
        from ase.calculators.emt import EMT

        return _construct(EMT, config, {})
    module, _, name = config.method.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(
            f"cannot import calculator {config.method!r} ({type(err).__name__}: {err}); install its package or "
            "correct the 'module:Class' path"
        ) from err
    return _construct(cls, config, {})


def _construct(cls: type, config: OracleConfig, defaults: Mapping[str, Any]) -> Calculator:
    try:
        return cls(**{**defaults, **config.kwargs})
    except Exception as err:  # a calculator may reject its arguments with any exception type
        raise ConfigError(
            f"cannot create calculator {config.method!r} with kwargs {config.kwargs} ({type(err).__name__}: {err}); "
            "fix the oracle's kwargs"
        ) from err


def _check_properties(calculator: Calculator, config: OracleConfig) -> None:
    implemented = getattr(calculator, "implemented_properties", None)
    if implemented is None:
        return
    missing = [name for name in config.properties if ASE_RESULT_NAMES.get(name, name) not in implemented]
    if missing:
        raise ConfigError(
            f"calculator {config.method!r} cannot compute {', '.join(missing)} (it implements "
            f"{', '.join(implemented)}); remove them from the oracle's properties or choose another method"
        )


def _import_engine(config: OracleConfig):
    """The engine's module (``distributed`` or ``ray``; None for local processes), or a ConfigError naming the fix."""
    if config.engine == "processes":
        return None
    package, extra = ("distributed", "dask") if config.engine == "dask" else ("ray", "ray")
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise ConfigError(
            f"engine {config.engine!r} needs {package}, which cannot be imported ({err}); install it with "
            f"pip install 'jaxatom[{extra}]' (or use engine 'processes')"
        ) from err


# -- one calculation (runs in a worker) ----------------------------------------------------------------------------


def label_one(atoms: Atoms, config: OracleConfig) -> LabelResult:
    """Label one structure with a fresh calculator; any exception, NaN or infinity becomes a failed result."""
    start = time.perf_counter()
    try:
        labeled = _calculate(atoms, config)
    except Exception as err:  # the oracle's failures are data, reported by the caller
        return LabelResult(None, f"{type(err).__name__}: {err}", time.perf_counter() - start)
    return LabelResult(labeled, None, time.perf_counter() - start)


def _calculate(atoms: Atoms, config: OracleConfig) -> Atoms:
    work = atoms.copy()
    work.calc = make_calculator(config)
    results = {}
    for name in config.properties:
        ase_name = ASE_RESULT_NAMES.get(name, name)
        value = np.asarray(work.calc.get_property(ase_name, work), np.float64)
        if not np.isfinite(value).all():
            raise FloatingPointError(f"the calculator returned a non-finite {name} ({value.ravel()[:3]} ...)")
        results[ase_name] = float(value) if value.ndim == 0 else value
    labeled = atoms.copy()
    labeled.calc = SinglePointCalculator(labeled, **results)
    return labeled


def _init_process() -> None:
    """Worker start: one OpenMP thread per worker (tblite), set before the method's library loads."""
    os.environ["OMP_NUM_THREADS"] = "1"


# -- engines: each yields (index, result) as results arrive --------------------------------------------------------


def label(
    structures: Sequence[Atoms],
    config: OracleConfig,
    on_result: Callable[[int, LabelResult], None] | None = None,
) -> list[LabelResult]:
    """Label every structure with ``config.method``; one :class:`LabelResult` per structure, in input order.

    ``on_result(index, result)`` is called in this process as each result arrives (in completion order), e.g. to
    persist it at once. Failures (exceptions, non-finite values, no result within ``timeout_s``, a dead worker) are
    returned as results with ``error`` set and summarised in a :class:`LabelingWarning`. The method, its package, the
    engine's package and the properties are checked before any work (:class:`ConfigError` naming the fix).

    ``timeout_s``: when no result arrives for that long (plus :data:`STARTUP_S` for the first), the structures still
    running or waiting are failures and the workers are stopped. A calculation shorter than ``timeout_s`` is never
    given up.
    """
    structures = list(structures)
    _check_properties(make_calculator(config), config)
    engine = _import_engine(config)
    results: list[LabelResult | None] = [None] * len(structures)
    if structures:
        engines = {"processes": _run_processes, "dask": _run_dask, "ray": _run_ray}
        run = _run_inline if config.engine == "processes" and config.workers == 0 else engines[config.engine]
        for index, result in run(structures, config, engine):
            results[index] = result
            if on_result is not None:
                on_result(index, result)
    summary = failure_summary(results, config.method)
    if summary:
        warnings.warn(summary, LabelingWarning, stacklevel=2)
    return results


def failure_summary(results: Sequence[LabelResult], method: str = "the oracle") -> str:
    """One message listing the failed structures and why (``""`` if none failed)."""
    failed = [(index, result.error) for index, result in enumerate(results) if not result.ok]
    if not failed:
        return ""
    lines = [f"structure {index}: {error}" for index, error in failed[:10]]
    more = [f"... and {len(failed) - 10} more"] if len(failed) > 10 else []
    return f"{len(failed)} of {len(results)} structures were not labelled by {method}:\n  " + "\n  ".join(lines + more)


def _gather(
    pending: dict[Any, int],
    wait_first: Callable[[list, float | None], Sequence],
    outcome: Callable[[Any], LabelResult],
    timeout_s: float | None,
) -> Iterator[tuple[int, LabelResult]]:
    """Yield ``(index, result)`` for the handles in ``pending`` (handle -> index, emptied as results arrive);
    ``wait_first(handles, timeout)`` returns those done (none on timeout)."""
    first = True
    while pending:
        timeout = None if timeout_s is None else timeout_s + (STARTUP_S if first else 0.0)
        done = wait_first(list(pending), timeout)
        if not done:
            for index in sorted(pending.values()):
                yield index, LabelResult(None, f"TimeoutError: no result within timeout_s={timeout_s} s")
            return
        first = False
        for handle in done:
            yield pending.pop(handle), outcome(handle)


def _failed_worker(err: BaseException) -> LabelResult:
    return LabelResult(None, f"the worker failed ({type(err).__name__}: {err})")


def _run_inline(structures: list[Atoms], config: OracleConfig, _) -> Iterator[tuple[int, LabelResult]]:
    """One after another in this process (``workers: 0``: quick analytic methods, debugging; no ``timeout_s``)."""
    for index, atoms in enumerate(structures):
        yield index, label_one(atoms, config)


def _run_processes(structures: list[Atoms], config: OracleConfig, _) -> Iterator[tuple[int, LabelResult]]:
    context = multiprocessing.get_context("spawn")
    workers = min(config.workers, len(structures))
    pool = cf.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_process)
    pending = {pool.submit(label_one, atoms, config): index for index, atoms in enumerate(structures)}

    def wait_first(handles: list, timeout: float | None) -> Sequence:
        return list(cf.wait(handles, timeout, return_when=cf.FIRST_COMPLETED).done)

    def outcome(future: cf.Future) -> LabelResult:
        try:
            return future.result()
        except Exception as err:  # e.g. BrokenProcessPool when a worker crashed
            return _failed_worker(err)

    try:
        yield from _gather(pending, wait_first, outcome, config.timeout_s)
    finally:
        if pending:
            _terminate(pool)
        pool.shutdown(wait=True, cancel_futures=True)


def _terminate(pool: cf.ProcessPoolExecutor) -> None:
    """Kill the pool's workers (a stuck calculation cannot be interrupted otherwise)."""
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    processes = list((pool._processes or {}).values())  # the pool's own record of its workers before 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()


def _run_dask(structures: list[Atoms], config: OracleConfig, distributed) -> Iterator[tuple[int, LabelResult]]:
    if config.address is None:  # a local cluster of worker processes (dask sets OMP_NUM_THREADS=1 in them)
        client = distributed.Client(n_workers=config.workers, threads_per_worker=1, dashboard_address=None)
    else:
        client = distributed.Client(config.address)
    futures = client.map(label_one, structures, config=config, pure=False)
    pending = {future: index for index, future in enumerate(futures)}

    def wait_first(handles: list, timeout: float | None) -> Sequence:
        try:
            return list(distributed.wait(handles, timeout=timeout, return_when="FIRST_COMPLETED").done)
        except TimeoutError:
            return []

    def outcome(future) -> LabelResult:
        try:
            return future.result()
        except Exception as err:  # a worker lost, a task that could not be sent
            return _failed_worker(err)

    try:
        yield from _gather(pending, wait_first, outcome, config.timeout_s)
    finally:
        if pending:
            client.cancel(list(pending))
        client.close()


def _run_ray(structures: list[Atoms], config: OracleConfig, ray) -> Iterator[tuple[int, LabelResult]]:
    started = not ray.is_initialized()
    if started:
        local = {"num_cpus": config.workers} if config.address is None else {}
        ray.init(address=config.address, **local)
    task = ray.remote(num_cpus=1)(label_one)  # ray runs each task with OMP_NUM_THREADS = its num_cpus
    pending = {task.remote(atoms, config): index for index, atoms in enumerate(structures)}

    def wait_first(handles: list, timeout: float | None) -> Sequence:
        return ray.wait(handles, num_returns=1, timeout=timeout)[0]

    def outcome(ref) -> LabelResult:
        try:
            return ray.get(ref)
        except Exception as err:  # ray.exceptions.RayError: a worker died, a task could not run
            return _failed_worker(err)

    try:
        yield from _gather(pending, wait_first, outcome, config.timeout_s)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


# -- the data set file ---------------------------------------------------------------------------------------------


def structure_id(atoms: Atoms) -> str:
    """A stable id of a structure's geometry: 32 hex digits of the SHA-256 of its atomic numbers, positions (Å, as
    float64), cell and periodicity. Equal for equal structures, in any process and after an HDF5 round trip."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(atoms.numbers, np.int64).tobytes())
    for values in (atoms.positions, atoms.cell[:]):
        digest.update((np.ascontiguousarray(values, np.float64) + 0.0).tobytes())  # + 0.0: -0.0 hashes as 0.0
    digest.update(np.ascontiguousarray(atoms.pbc, bool).tobytes())
    return digest.hexdigest()[:32]


def append_labels(
    path: str | os.PathLike,
    labeled: Sequence[Atoms],
    provenance: Mapping[str, Sequence],
    properties: Sequence[str] | None = None,
) -> int:
    """Append labelled structures with their provenance to the jaxatom HDF5 data set at ``path`` (made if missing);
    returns how many were appended.

    The labels are the calculator results of ``labeled`` (e.g. :attr:`LabelResult.atoms`) named by ``properties``
    (jaxatom names; default: those the file holds, for a new file ``energy`` and ``forces``), which every structure
    must have and which must be those the file holds. ``provenance`` gives one value per structure of ``generation``
    (int), ``method`` (str) and ``uncertainty`` (float, at selection), optionally ``structure_id`` (default
    :func:`structure_id`) and any further str/int/float/bool entries; they go to :attr:`Dataset.info`. A structure
    whose id the file (or this call) has already is skipped, so a resumed loop can append again safely. Structures
    of an older file without ids get them computed, and provenance it lacks is filled (``-1``, ``""``, NaN).

    Atomic: the whole new file is written beside the old one, flushed to disk (``fsync``) and moved into place
    (:func:`~jaxatom.data.formats.write_hdf5`), under an exclusive lock on ``<path>.lock``; a crash at any moment
    leaves the old file intact.
    """
    path, labeled = Path(path), list(labeled)
    info = _provenance(labeled, provenance)
    with exclusive_lock(path, f"data set {path}", "wait for the other writer"):
        old = _with_ids(read_hdf5(path)) if path.exists() else None
        names = _label_names(old, properties, path)
        fresh = _new_structures(info["structure_id"], set() if old is None else set(old.info["structure_id"]))
        if not fresh:
            return 0
        new = Dataset.from_atoms([labeled[i] for i in fresh], properties=names)
        new = dataclasses.replace(new, info={name: values[fresh] for name, values in info.items()})
        write_hdf5(new if old is None else concatenate([old, new]), path)
    return len(fresh)


def labeled_ids(path: str | os.PathLike) -> set[str]:
    """The :func:`structure_id` of every structure in the data set at ``path`` (empty if there is no file)."""
    path = Path(path)
    if not path.exists():
        return set()
    with h5py.File(path, "r") as data:
        ids = read_hdf5_info(data, ["structure_id"]).get("structure_id")
    return set(ids) if ids is not None else set(_with_ids(read_hdf5(path)).info["structure_id"])


def _new_structures(ids: Sequence[str], known: set[str]) -> list[int]:
    """Indices of the first occurrence of each id not in ``known``."""
    fresh = []
    for index, key in enumerate(ids):
        if key not in known:
            known.add(key)
            fresh.append(index)
    return fresh


def _provenance(labeled: Sequence[Atoms], provenance: Mapping[str, Sequence]) -> dict[str, np.ndarray]:
    """The provenance as ``[S]`` arrays, checked, with ``structure_id`` added when not given."""
    missing = [name for name in PROVENANCE if name not in provenance]
    if missing:
        raise DataError(f"provenance lacks {', '.join(missing)}; give one value per structure of each")
    arrays = {name: np.asarray(values) for name, values in provenance.items()}
    if "structure_id" not in arrays:
        arrays["structure_id"] = np.array([structure_id(atoms) for atoms in labeled], dtype=str)
    for name, values in arrays.items():
        if values.shape != (len(labeled),):
            raise DataError(
                f"provenance {name!r} has shape {list(values.shape)}, expected [{len(labeled)}]; give one value "
                "per structure"
            )
    for name, kinds in PROVENANCE.items():
        if arrays[name].dtype.kind not in kinds and len(labeled):
            wanted = {"iu": "integers", "U": "strings", "iuf": "numbers"}[kinds]
            raise DataError(f"provenance {name!r} must be {wanted}, got {arrays[name].dtype}; give {wanted}")
    arrays["uncertainty"] = arrays["uncertainty"].astype(np.float64)
    return arrays


def _label_names(old: Dataset | None, properties: Sequence[str] | None, path: Path) -> list[str]:
    """The properties to store: ``properties``, else the file's, else energy and forces; they must be the file's."""
    if properties is None:
        return sorted(old.properties) if old is not None else ["energy", "forces"]
    if old is not None and set(properties) != set(old.properties):
        raise DataError(
            f"the labels to append are {', '.join(sorted(properties))}, {path} holds "
            f"{', '.join(sorted(old.properties))}; append the properties the data set holds"
        )
    return list(properties)


def _with_ids(dataset: Dataset) -> Dataset:
    """``dataset`` with ``info["structure_id"]`` (computed from the geometry where missing)."""
    if "structure_id" in dataset.info:
        return dataset
    ids = np.array([structure_id(dataset.to_atoms(i)) for i in range(len(dataset))], dtype=str)
    return dataclasses.replace(dataset, info={**dataset.info, "structure_id": ids})
