"""The training loop: epochs of jitted steps, validation with EMA parameters, plateau, early stop, checkpoints, logs."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization, traverse_util
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxatom.data.dataset import Dataset
from jaxatom.data.loader import GraphLoader, fidelity_of
from jaxatom.data.statistics import fit_atomrefs, mean_energy_per_atom
from jaxatom.distributed import (
    global_mesh,
    is_main_process,
    local_shard_indices,
    main_process_only,
    process_count,
    replicated,
    sync,
)
from jaxatom.errors import JaxAtomError, OutputExistsError
from jaxatom.potential import Potential, PotentialEnsemble, load_model
from jaxatom.potential.io import ModelFileError, model_config
from jaxatom.potential.outputs import OutputScaling
from jaxatom.train.checkpoint import Checkpoints, run_lock
from jaxatom.train.config import ConfigError, StepConfig, TrainConfig
from jaxatom.train.logs import RunLogs, epoch_row
from jaxatom.train.progress import epoch_bar, stopped_line, update_total
from jaxatom.train.record import record_python_run
from jaxatom.train.schedule import PlateauState, plateau_update
from jaxatom.train.step import TrainState, data_parallel_train_step, eval_step, init_state, train_step

__all__ = [
    "check_training_data",
    "fit",
    "stop_reason",
    "run_stop_reason",
    "TrainingDiverged",
    "epoch_metrics",
    "with_energy_offsets",
    "check_loss_outputs",
    "check_fidelities",
    "check_distributed",
]

#: The settings that end a run, by stop reason: raising one extends a finished run.
STOP_SETTINGS = {"max_epochs": "max_epochs", "early_stopping": "early_stopping_patience", "max_time_s": "max_time_s"}


class TrainingDiverged(JaxAtomError, RuntimeError):
    """The loss or its gradient became NaN or infinite."""


def epoch_metrics(sums: dict) -> dict[str, float]:
    """Loss, and MAE and RMSE of every loss term ``X`` (``X_mae``, ``X_rmse``, in the property's unit), from the
    metric sums of an epoch."""
    sums = {k: float(v) for k, v in sums.items()}
    metrics = {"loss": sums["loss_sum"] / max(sums["batches"], 1.0)}
    for name in (key[: -len("_count")] for key in sums if key.endswith("_count")):
        count = max(sums[f"{name}_count"], 1.0)
        metrics[f"{name}_mae"] = sums[f"{name}_abs"] / count
        metrics[f"{name}_rmse"] = math.sqrt(sums[f"{name}_sq"] / count)
    return metrics


def with_energy_offsets(potential: Potential, train: Dataset, atomrefs: bool = False) -> Potential:
    """The potential with its energy offsets taken from the training data (float64): mean energy per atom, and
    optionally per-element reference energies fitted by least squares first. The energy scale is kept."""
    indices = np.arange(len(train))
    refs = fit_atomrefs(train, indices) if atomrefs else {}
    energy = OutputScaling(potential.energy_scale, mean_energy_per_atom(train, indices, refs), refs)
    return potential.replace(scaling={**potential.scaling, "energy": energy})


def _accumulate(total, batch):
    return batch if total is None else jax.tree.map(lambda a, b: a + b, total, batch)


def check_training_data(
    datasets: dict[str, Dataset], config: TrainConfig, indices: Mapping[str, np.ndarray] | None = None
) -> None:
    """Refuse empty data sets, data sets lacking a property a loss term asks for (``{name: dataset}``), naming the
    property and the file, and, when stress is trained, structures that are not periodic in all three directions
    with a cell volume, naming the first such structure (by its index in the data file when ``indices`` maps each
    set's name to the file indices of its structures, as a split does)."""
    for name, dataset in datasets.items():
        if len(dataset) == 0:
            raise ConfigError(f"the {name} set is empty")
        source = f" (read from {dataset.metadata['file']})" if "file" in dataset.metadata else ""
        for term in config.terms:
            if term.name not in dataset.properties:
                have = ", ".join(sorted(dataset.properties)) or "nothing"
                hint = STRESS_HINT if term.name == "stress" else ""
                raise ConfigError(
                    f"the {name} set{source} lacks {term.name!r}, which the loss trains (it has: {have}); use data "
                    f"that has {term.name} or remove it from training.loss{hint}"
                )
        if "stress" in {term.name for term in config.terms}:
            _check_periodic(name, dataset, source, None if indices is None else indices.get(name))


#: How a data file carries stress, added to the error for data without it.
STRESS_HINT = (
    " (stress is read from ASE's 'stress' in extended XYZ and ASE databases, Voigt [6] or 3x3, and from 'stress' "
    "[S, 3, 3] in jaxatom's HDF5/npz; declare a unit other than eV/Ang^3 with data.units, e.g. {stress: GPa})"
)


def _check_periodic(name: str, dataset: Dataset, source: str, indices: np.ndarray | None) -> None:
    """Stress ``(1/V) dE/dε`` needs a cell: every structure periodic in x, y and z with a nonzero volume."""
    volume = np.abs(np.linalg.det(dataset.cell))
    bad = np.flatnonzero(~dataset.pbc.all(axis=1) | (volume < 1e-6))
    if bad.size == 0:
        return
    first = int(bad[0])
    where = f"structure {first} of the {name} set"
    if indices is not None:
        where = f"structure {int(indices[first])} of the data{source} ({where})"
    pbc = "".join("T" if p else "F" for p in dataset.pbc[first])
    others = f" and {bad.size - 1} more" if bad.size > 1 else ""
    raise ConfigError(
        f"the loss trains 'stress', but {where}{others} is not periodic with a cell (pbc {pbc}, volume "
        f"{volume[first]:.3g} Ang^3); stress (1/V) dE/d(strain) is defined only for structures periodic in x, y and "
        "z: remove the non-periodic structures from the data or remove stress from training.loss"
    )


def check_loss_outputs(potential: Potential, dataset: Dataset, config: TrainConfig) -> None:
    """Refuse loss terms the model cannot predict, and labels whose shape differs from the model's output."""
    specs = {spec.name: spec for spec in potential.model.outputs}
    for term in config.terms:
        if term.name not in potential.outputs:
            raise ConfigError(
                f"the loss trains {term.name!r}, but the model predicts only {', '.join(potential.outputs)}; add a "
                f"head for {term.name} (model.heads) or remove it from training.loss"
            )
        expected = (3,) if term.name == "forces" else (3, 3) if term.name == "stress" else specs[term.name].shape
        found = tuple(np.shape(dataset.properties[term.name])[1:])
        if found != expected:
            raise ConfigError(
                f"the labels of {term.name!r} have shape {list(found)} per value, the model predicts {list(expected)}; "
                "choose a head that matches the data (e.g. DipoleMoment(predict_magnitude=True) for dipole magnitudes)"
            )


def _check_data(potential: Potential, datasets: dict[str, Dataset], config: TrainConfig) -> None:
    check_training_data(datasets, config)
    for name, dataset in datasets.items():
        check_loss_outputs(potential, dataset, config)
        potential.check_elements(dataset.numbers)
        check_fidelities(potential.fidelities, dataset, name)


def check_fidelities(fidelities: tuple[str, ...], dataset: Dataset, name: str = "training") -> None:
    """Refuse data whose structures' ``fidelity`` does not fit the model: a multi-fidelity model needs every
    structure's fidelity index (``0..len(fidelities)-1``); a single-fidelity model may not mix fidelities. Names in
    the data set's ``metadata["fidelities"]`` must match the model's."""
    indices = fidelity_of(dataset)
    declared = dataset.metadata.get("fidelities")
    if fidelities and indices is None:
        raise ConfigError(
            f"the model predicts fidelities {', '.join(fidelities)}, but the {name} set has no 'fidelity' property; "
            "give each structure its fidelity index (0 = the cheapest) or use a single-fidelity energy head"
        )
    if indices is None:
        return
    if not fidelities and len(np.unique(indices)) > 1:
        raise ConfigError(
            f"the {name} set mixes fidelities {sorted(set(indices.tolist()))}, but the model has one energy; set "
            "model.fidelities (e.g. [gfn1, gfn2]) or train on one fidelity"
        )
    if fidelities and indices.max() >= len(fidelities):
        raise ConfigError(
            f"the {name} set has fidelity {indices.max()}, but the model knows {len(fidelities)} "
            f"({', '.join(fidelities)}); list every fidelity in model.fidelities"
        )
    if fidelities and declared is not None and list(declared) != list(fidelities):
        raise ConfigError(
            f"the {name} set names its fidelities {list(declared)}, the model {list(fidelities)}; use the data's "
            "names in the same order (cheapest first)"
        )


def _evaluate(params, training: _Training) -> dict[str, float]:
    total = None
    for graph, labels in training.val_loader(epoch=0):
        sums = eval_step(params, graph, labels, training.potential.model, training.scales, training.step_config)
        total = _accumulate(total, sums)
    return epoch_metrics(jax.device_get(total))


def stop_reason(meta: Mapping[str, Any], config: TrainConfig) -> str | None:
    """Why a run stops after the epoch whose checkpoint metadata is ``meta`` (``epoch``, ``stale_epochs``,
    ``elapsed_s`` in s) under ``config``: ``"max_epochs"``, ``"early_stopping"`` or ``"max_time_s"`` (the first that
    holds), or None if it trains on. :func:`fit` asks after every epoch and, on resume, of the ``latest`` checkpoint."""
    reasons = _stop_reasons(meta, config)
    return reasons[0] if reasons else None


def _stop_reasons(meta: Mapping[str, Any], config: TrainConfig) -> list[str]:
    patience, budget = config.early_stopping_patience, config.max_time_s
    holds = {
        "max_epochs": meta["epoch"] + 1 >= config.max_epochs,
        "early_stopping": patience is not None and meta["stale_epochs"] > patience,
        "max_time_s": budget is not None and meta["elapsed_s"] > budget,
    }
    return [reason for reason, held in holds.items() if held]


def run_stop_reason(run_dir: str | Path, config: TrainConfig) -> str | None:
    """The :func:`stop_reason` of the run in ``run_dir`` under ``config``: not None if that run is finished (and
    :func:`fit` would not train), None if it goes on or has not begun."""
    if not (Path(run_dir) / "checkpoints" / "latest").is_dir():
        return None
    with Checkpoints(run_dir) as checkpoints:
        meta = checkpoints.meta()
    return None if meta is None else stop_reason(meta, config)


def _finished_message(run_dir: Path, meta: Mapping[str, Any], config: TrainConfig) -> str:
    reasons = _stop_reasons(meta, config)
    why = "; ".join(_describe_stop(reason, meta, config) for reason in reasons)
    settings = " and ".join(f"training.{STOP_SETTINGS[reason]}" for reason in reasons)
    return f"jaxatom: training in {run_dir} already finished ({why}); raise {settings} to continue"


def _describe_stop(reason: str, meta: Mapping[str, Any], config: TrainConfig) -> str:
    epoch = meta["epoch"]
    if reason == "max_epochs":
        return f"{epoch + 1} epochs trained, max_epochs = {config.max_epochs}"
    if reason == "early_stopping":
        return f"early stopping after epoch {epoch}: no improvement for {meta['stale_epochs']} epochs"
    return f"{meta['elapsed_s']:.1f} s trained after epoch {epoch}, max_time_s = {config.max_time_s:g}"


@dataclasses.dataclass(frozen=True)
class _Training:
    """What the epochs of one :func:`fit` call share."""

    potential: Potential
    config: TrainConfig
    train_loader: GraphLoader
    val_loader: GraphLoader
    step_fn: Callable
    sharding: NamedSharding | None
    scales: dict
    step_config: StepConfig
    #: The mesh of data-parallel training (the state is replicated on it), else None.
    mesh: Mesh | None = None

    def placed(self, state: TrainState) -> TrainState:
        """``state`` replicated on every device of the data-parallel mesh (of every process), so that a state
        restored from a checkpoint (on one device) meets the batches' devices; as it is without a mesh."""
        return state if self.mesh is None else replicated(state, self.mesh)


def check_distributed(config: TrainConfig, n_train: int) -> None:
    """Refuse settings a run over several processes cannot train (before anything is built): training that is not
    data-parallel, ensembles, a batch that does not split evenly over all devices, or fewer training structures than
    devices (no batch would give every device a structure)."""
    n_processes, n_devices = process_count(), jax.device_count()
    if n_processes == 1:
        return
    where = f"{n_devices} devices in {n_processes} processes"
    if not config.data_parallel:
        raise ConfigError(f"training on {where} is data-parallel: set data_parallel (training.data_parallel) to true "
                          "or run one process")  # fmt: skip
    if config.ensemble is not None:
        raise ConfigError(
            f"ensembles train in one process, not on {where}: remove training.ensemble or run one process"
        )
    if config.batch_size % n_devices:
        raise ConfigError(
            f"batch_size {config.batch_size} does not split evenly over the {where}; use a multiple of {n_devices}"
        )
    if n_train < n_devices:
        raise ConfigError(f"the training set has {n_train} structures, fewer than the {where}: every device needs "
                          "at least one structure per batch; add data or use fewer devices")  # fmt: skip


def _setup(potential: Potential, train: Dataset, val: Dataset, config: TrainConfig) -> _Training:
    """Loaders and the training step: data-parallel over all devices when there are several (and
    ``config.data_parallel``). Across processes the mesh spans every process's devices, and each process's loader
    builds only its own shards of every batch."""
    devices = jax.devices()
    n_shards = len(devices) if config.data_parallel and len(devices) > 1 else 1
    if config.batch_size % n_shards:
        raise ConfigError(f"batch_size {config.batch_size} must be a multiple of the {n_shards} devices")
    multi_process = process_count() > 1
    mesh = global_mesh("data") if n_shards > 1 else None
    local = local_shard_indices(mesh) if multi_process else None
    labels = _label_settings(potential, config)
    train_loader = GraphLoader(
        train, potential.cutoff, config.batch_size, seed=config.seed, n_shards=n_shards, local_shards=local, **labels
    )
    val_loader = GraphLoader(val, potential.cutoff, config.batch_size, shuffle=False, **labels)
    step_fn, sharding = train_step, None
    if n_shards > 1:
        step_fn, sharding = data_parallel_train_step(mesh), NamedSharding(mesh, P("data"))
    step_config = dataclasses.replace(config.step, frozen=potential.model.frozen)
    return _Training(potential, config, train_loader, val_loader, step_fn, sharding, _scales(potential), step_config,
                     mesh)  # fmt: skip


def _label_settings(potential: Potential, config: TrainConfig) -> dict[str, Any]:
    """The loaders' labels: the loss terms' properties, less each output's offsets (in float64)."""
    names = [term.name for term in config.terms]
    specs = {spec.name: spec for spec in potential.model.outputs}
    offsets = {name: potential.scaling[name].tables() for name in names if name in potential.scaling}
    intensive = [name for name in offsets if specs[name].aggregation == "avg"]
    return {"properties": names, "offsets": offsets, "intensive": intensive}


def _scales(potential: Potential) -> dict:
    """The potential's per-output scales with zero offsets, for the steps (labels come without offsets)."""
    return potential.scaling_arrays(np.float32, include_offsets=False)


def fit(
    potential: Potential,
    train: Dataset,
    val: Dataset,
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    test: Dataset | None = None,
) -> Potential | PotentialEnsemble:
    """Train ``potential`` on ``train``, validating on ``val`` after every epoch; return it with the EMA parameters
    of the best validation epoch (written to ``run_dir/best_model`` too).

    The potential's energy offsets are used as they are (see :func:`with_energy_offsets`). With several visible
    devices (and ``config.data_parallel``) each batch is split evenly across them and gradients are averaged.
    ``run_dir`` receives ``checkpoints/latest`` and ``checkpoints/best`` (orbax), ``metrics.csv``, TensorBoard event
    files in ``tensorboard`` and ``config.json``, and, for data read from a file or a shipped set, the
    ``run_config.yaml`` and ``split.npz`` that ``jaxatom evaluate RUN_DIR`` reads (rows of that origin neither
    trained nor validated on are the test set, or those of ``test`` if given; never trained on:
    :func:`~jaxatom.train.record.record_python_run`). While training,
    ``run_dir/train.lock`` keeps other processes out (:class:`~jaxatom.errors.RunInUseError`). With ``resume`` a
    run continues from ``checkpoints/latest`` and ends exactly where an uninterrupted run would, also after a
    ``kill -9``; a run that is already finished under ``config`` (see :func:`stop_reason`) is reported on stderr
    and returned without training. A NaN or infinite loss
    raises :class:`TrainingDiverged` naming the step and the last good checkpoint.

    With ``config.ensemble`` set, trains that many members as one and returns a
    :class:`~jaxatom.potential.PotentialEnsemble` (see :func:`~jaxatom.train.ensemble.fit_ensemble`).

    Across processes (after :func:`jaxatom.distributed.initialize`) every process calls ``fit`` with the same
    arguments; the batch is split over every device of every process (each process builds its own shards), the
    orbax checkpoints are written together, and process 0 alone writes the logs, records and ``best_model`` (see
    ``docs/distributed.md``); ``run_dir`` must be on a file system every process sees.
    """
    if config.ensemble is not None and potential.model.frozen:
        raise ConfigError(
            "a Δ-model (model.delta_from) trains as a single model: ensemble members would be initialised "
            "afresh, base included; remove training.ensemble and train several runs with other seeds"
        )
    _check_data(potential, {"training": train, "validation": val}, config)  # before anything is written
    check_distributed(config, len(train))
    main = is_main_process()
    if main:
        with run_lock(Path(run_dir)):  # never write into a run directory another process trains in
            record_python_run(Path(run_dir), potential, train, val, config, test)
    if config.ensemble is not None:
        from jaxatom.train.ensemble import fit_ensemble  # it builds on this module

        return fit_ensemble(potential, train, val, config, run_dir, resume, progress)
    training = _setup(potential, train, val, config)
    run_dir = Path(run_dir)
    with main_process_only(run_lock(run_dir)), Checkpoints(run_dir) as checkpoints:
        template = training.placed(init_state(potential.params, config, potential.model.frozen))
        state, meta, best_params = _restore(checkpoints, template, resume)
        if meta is not None and stop_reason(meta, config) is not None:
            if main:
                print(_finished_message(run_dir, meta, config), file=sys.stderr)
                with RunLogs(run_dir) as logs:
                    logs.repair(epoch_row(meta, int(state.step)))
        else:
            if main:
                (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
            with RunLogs(run_dir) if main else _NoLogs() as logs:
                logs.start(None if meta is None else epoch_row(meta, int(state.step)))
                state, best_params = _epochs(training, checkpoints, logs, state, meta, best_params, progress and main)
        trained = _trained(potential, best_params, state, run_dir / "best_model", write=main)
    sync("jaxatom.fit.done")  # no process returns before process 0 has written the model
    return trained


class _NoLogs:
    """The logs of a process other than 0 in a multi-process run: nothing is written."""

    def __enter__(self) -> _NoLogs:
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def start(self, row) -> None:
        pass

    def log(self, row) -> None:
        pass


def _restore(checkpoints: Checkpoints, template: TrainState, resume: bool) -> tuple[TrainState, dict | None, Any]:
    """The state and metadata of the ``latest`` checkpoint and the EMA parameters of the ``best`` one (``template``,
    None and None for a new run)."""
    if checkpoints.latest_epoch() is None:
        return template, None, None
    if not resume:
        raise OutputExistsError(
            f"{checkpoints.paths['latest'].parent} holds the checkpoints of an earlier run, which a new run would "
            "mix with its own; resume it (resume=True), or train into another run_dir"
        )
    state, meta = checkpoints.restore("latest", template)
    best = None
    if checkpoints.latest_epoch("best") is not None:
        best = jax.device_get(checkpoints.restore("best", template)[0].ema_params)
    return state, meta, best


def _epochs(
    training: _Training,
    checkpoints: Checkpoints,
    logs: RunLogs,
    state: TrainState,
    meta: dict | None,
    best_params: Any,
    progress: bool,
) -> tuple[TrainState, Any]:
    """Train from the epoch after ``meta`` (None: from the first) until :func:`stop_reason` holds, checkpointing and
    then logging every epoch; return the last state and the best EMA parameters."""
    config = training.config
    start = 0 if meta is None else meta["epoch"] + 1
    started = time.perf_counter() - (0.0 if meta is None else meta["elapsed_s"])
    bar = epoch_bar(start, config, "training", progress)
    with contextlib.closing(bar):
        for epoch in bar:
            epoch_started = time.perf_counter()
            state, train_metrics = _train_epoch(training, checkpoints, state, epoch)
            # one copy on the default device (the state may be replicated over several), reused for every batch
            val_params = jax.device_put(jax.device_get(state.ema_params))
            val_metrics = _evaluate(val_params, training)
            meta = _next_meta(config, meta, epoch, train_metrics, val_metrics, time.perf_counter() - started)
            state = state.replace(learning_rate=_learning_rate(training, meta["plateau"]["learning_rate"]))
            if meta["stale_epochs"] == 0:
                best_params = jax.device_get(state.ema_params)
                checkpoints.save("best", epoch, state, meta)
            checkpoints.save("latest", epoch, state, meta)
            row = epoch_row(meta, int(state.step))
            logs.log(row)
            maes = {f"{term.name}_mae": f"{row[f'val_{term.name}_mae']:.3g}" for term in config.terms}
            bar.set_postfix(loss=f"{row['train_loss']:.4g}", val=f"{row['val_loss']:.4g}",
                            lr=f"{row['learning_rate']:.2g}", **maes)  # fmt: skip
            update_total(bar, config, meta, time.perf_counter() - epoch_started)
            if meta["stop_reason"] is not None:
                break
    if is_main_process():
        report_stop(meta, config)
    return state, best_params


def _learning_rate(training: _Training, value: float):
    """The plateau's learning rate as the state's leaf (replicated on the data-parallel mesh, if any)."""
    value = np.float32(value)
    return value if training.mesh is None else replicated(value, training.mesh)


def report_stop(meta: Mapping[str, Any] | None, config: TrainConfig) -> None:
    """Say on stderr why training ended after the epoch of ``meta`` (nothing if no epoch ran)."""
    reason = None if meta is None else meta["stop_reason"]
    if reason is not None:
        print(stopped_line(reason, _describe_stop(reason, meta, config)), file=sys.stderr)


def _train_epoch(
    training: _Training, checkpoints: Checkpoints, state: TrainState, epoch: int
) -> tuple[TrainState, dict[str, float]]:
    """One pass over the training data; the new state and the epoch's training metrics."""
    totals = None
    potential = training.potential
    for graph, labels in training.train_loader(epoch, sharding=training.sharding):
        state, sums = training.step_fn(state, graph, labels, potential.model, training.scales, training.step_config)
        totals = _accumulate(totals, sums)
    if int(state.nan_step) >= 0:
        raise TrainingDiverged(
            f"the loss became NaN or infinite at step {int(state.nan_step)} (epoch {epoch}); the last good "
            f"checkpoint is {checkpoints.describe('latest')} (best: {checkpoints.describe('best')}). "
            "Lower learning_rate, set clip_norm, or check the data for outliers."
        )
    return state, epoch_metrics(jax.device_get(totals))


def _next_meta(
    config: TrainConfig, meta: dict | None, epoch: int, train: dict, val: dict, elapsed: float
) -> dict[str, Any]:
    """The checkpoint metadata after ``epoch`` (``meta``: that of the epoch before, None for the first): plateau
    state, epochs without improvement (0: this one improved), ``elapsed_s`` (s), metrics and the stop reason."""
    plateau = PlateauState(config.learning_rate) if meta is None else PlateauState(**meta["plateau"])
    improved = val["loss"] < plateau.best * (1 - 1e-4)
    plateau = plateau_update(plateau, val["loss"], config.plateau_factor, config.plateau_patience,
                             config.plateau_cooldown, config.min_learning_rate)  # fmt: skip
    stale = 0 if improved else (0 if meta is None else meta["stale_epochs"]) + 1
    new = {"epoch": epoch, "stale_epochs": stale, "elapsed_s": elapsed, "plateau": dataclasses.asdict(plateau),
           "val": val, "train": train}  # fmt: skip
    return {**new, "stop_reason": stop_reason(new, config)}


def _trained(potential: Potential, best_params: Any, state: TrainState, path: Path, write: bool = True) -> Potential:
    """``potential`` with the EMA parameters of the best epoch (of the last one if none improved), also written to
    ``path`` (if ``write``) unless it already holds exactly that model."""
    params = best_params if best_params is not None else jax.device_get(state.ema_params)
    trained = potential.replace(params=params)
    if write and not _holds(path, trained):
        trained.save(path)
    return trained


def _holds(path: Path, potential: Potential) -> bool:
    """Whether the model file at ``path`` is ``potential``: the same settings and bit-identical parameters."""
    try:
        saved = load_model(path)
    except ModelFileError:
        return False
    if model_config(saved) != model_config(potential):
        return False
    found, expected = _flat(saved.params), _flat(potential.params)
    return found.keys() == expected.keys() and all(
        found[k].dtype == expected[k].dtype and np.array_equal(found[k], expected[k]) for k in expected
    )


def _flat(params: Any) -> dict[tuple, np.ndarray]:
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(serialization.to_state_dict(params)).items()}
