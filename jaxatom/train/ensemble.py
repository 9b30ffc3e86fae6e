"""Ensembles trained as one: ``M`` members in one compiled step (:func:`~jaxatom.train.step.ensemble_train_step`,
the single-model step vmapped over stacked parameters and optimiser states).

Member ``m`` is initialised with seed ``config.seed + m`` and sees the training set in its own order each epoch,
``np.random.default_rng([seed + m, epoch])`` (the order a single run with that seed sees); with ``bootstrap`` it
trains on its own sample drawn with replacement once per run. Each member has its own EMA, plateau schedule and early
stopping; a member that stopped keeps its state (its updates are computed and discarded) and its best parameters.
Checkpoints hold the stacked state (``latest``) and each member's best EMA parameters (``best``), so a run resumes
exactly. The result is written to ``run_dir/best_ensemble`` (:meth:`PotentialEnsemble.load`). The members train on
one device (``data_parallel`` does not apply).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxatom.data.dataset import Dataset
from jaxatom.data.loader import Batch, GraphLoader, prefetched
from jaxatom.potential import Potential, PotentialEnsemble
from jaxatom.potential.ensemble import member_path
from jaxatom.potential.potential import example_graph
from jaxatom.train.checkpoint import Checkpoints, run_lock
from jaxatom.train.config import ConfigError, TrainConfig
from jaxatom.train.fit import (
    TrainingDiverged,
    _accumulate,
    _check_data,
    _finished_message,
    _holds,
    _label_settings,
    _next_meta,
    _restore,
    _scales,
    epoch_metrics,
    report_stop,
    stop_reason,
)
from jaxatom.train.logs import RunLogs, epoch_row
from jaxatom.train.progress import epoch_bar, update_total
from jaxatom.train.step import TrainState, ensemble_eval_step, ensemble_train_step, init_state

__all__ = ["fit_ensemble", "member_seeds", "member_indices", "member_order", "ENSEMBLE_DIR"]

#: The ensemble artifact in a run directory: one model directory per member.
ENSEMBLE_DIR = "best_ensemble"


def member_seeds(config: TrainConfig) -> list[int]:
    """The members' seeds (initialisation and data order): ``seed``, ``seed + 1``, ..."""
    return [config.seed + m for m in range(config.ensemble.size)]


def member_indices(n: int, config: TrainConfig) -> list[np.ndarray]:
    """Each member's training structures ``[n]`` (indices into the training set): all of them, or with ``bootstrap``
    a sample drawn with replacement, seeded by the member's seed."""
    if not config.ensemble.bootstrap:
        return [np.arange(n) for _ in member_seeds(config)]
    return [np.random.default_rng([seed, n]).integers(0, n, n) for seed in member_seeds(config)]


def member_order(indices: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The member's structures in the order of ``epoch`` (a single run with ``seed`` sees ``arange(n)`` so)."""
    return indices[np.random.default_rng([seed, epoch]).permutation(len(indices))]


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *trees)


def _member(tree: Any, m: int) -> Any:
    return jax.tree.map(lambda leaf: np.asarray(leaf[m]), tree)


def _initial_state(potential: Potential, config: TrainConfig) -> TrainState:
    """The stacked state ``[M, ...]`` of members initialised afresh with their seeds."""
    graph = example_graph(potential.cutoff)
    states = [init_state(potential.model.init(jax.random.PRNGKey(s), graph), config) for s in member_seeds(config)]
    return jax.device_put(_stack(states))


@dataclasses.dataclass(frozen=True)
class _Ensemble:
    """What the epochs of one :func:`fit_ensemble` call share."""

    potential: Potential
    config: TrainConfig
    train_loader: GraphLoader
    val_loader: GraphLoader
    indices: list[np.ndarray]
    scales: dict


def _host_batches(training: _Ensemble, epoch: int) -> Iterator[Batch]:
    """The stacked batches ``[M, ...]`` of ``epoch``, member ``m`` in its own order (numpy)."""
    loader, size = training.train_loader, training.config.batch_size
    orders = [member_order(i, s, epoch) for i, s in zip(training.indices, member_seeds(training.config), strict=True)]
    for k in range(len(loader)):
        yield loader.stacked([order[k * size : (k + 1) * size] for order in orders], size + 1)


def _train_epoch(
    training: _Ensemble, checkpoints: Checkpoints, state: TrainState, active: np.ndarray, epoch: int
) -> tuple[TrainState, list]:
    """One pass of every active member (``active [M]``) over its training data; the new state and each member's
    metrics."""
    totals, config = None, training.config
    for graph, labels in prefetched(_host_batches(training, epoch)):
        state, sums = ensemble_train_step(state, graph, labels, active, training.potential.model, training.scales,
                                          config.step)  # fmt: skip
        totals = _accumulate(totals, sums)
    nan_steps = np.asarray(jax.device_get(state.nan_step))
    if (nan_steps >= 0).any():
        m = int(np.flatnonzero(nan_steps >= 0)[0])
        raise TrainingDiverged(
            f"the loss of ensemble member {m} became NaN or infinite at its step {int(nan_steps[m])} (epoch {epoch}); "
            f"the last good checkpoint is {checkpoints.describe('latest')} (best: {checkpoints.describe('best')}). "
            "Lower learning_rate, set clip_norm, or check the data for outliers."
        )
    return state, _per_member(jax.device_get(totals), config.ensemble.size)


def _per_member(sums: dict, size: int) -> list[dict[str, float]]:
    return [epoch_metrics({k: v[m] for k, v in sums.items()}) for m in range(size)]


def _evaluate(params: Any, training: _Ensemble) -> list[dict[str, float]]:
    """Each member's validation metrics (``params`` stacked ``[M, ...]``)."""
    total = None
    for graph, labels in training.val_loader(epoch=0):
        sums = ensemble_eval_step(params, graph, labels, training.potential.model, training.scales,
                                  training.config.step)  # fmt: skip
        total = _accumulate(total, sums)
    return _per_member(jax.device_get(total), training.config.ensemble.size)


def _mean(metrics: Sequence[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([m[key] for m in metrics])) for key in metrics[0]}


def _next_ensemble_meta(config: TrainConfig, meta: dict | None, epoch: int, train: list, val: list,
                        elapsed: float) -> dict[str, Any]:  # fmt: skip
    """The checkpoint metadata after ``epoch``: each active member's (as a single run's, see ``_next_meta``; a stopped
    member's stays), and for the logs and :func:`stop_reason` the members' mean metrics and learning rate, the epoch,
    ``elapsed_s`` (s) and the fewest epochs without improvement of any member (early stopping: all have stopped)."""
    members = []
    for m in range(config.ensemble.size):
        before = None if meta is None else meta["members"][m]
        stopped = before is not None and before["stop_reason"] is not None
        members.append(before if stopped else _next_meta(config, before, epoch, train[m], val[m], elapsed))
    rates = [member["plateau"]["learning_rate"] for member in members]
    new = {"epoch": epoch, "stale_epochs": min(member["stale_epochs"] for member in members), "elapsed_s": elapsed,
           "plateau": {"learning_rate": float(np.mean(rates))}, "train": _mean([m["train"] for m in members]),
           "val": _mean([m["val"] for m in members]), "members": members}  # fmt: skip
    return {**new, "stop_reason": stop_reason(new, config)}


def _active(meta: dict | None, size: int) -> np.ndarray:
    """``[M]`` whether each member still trains."""
    if meta is None:
        return np.ones(size, bool)
    return np.array([member["stop_reason"] is None for member in meta["members"]])


def _improved(meta: dict, epoch: int) -> np.ndarray:
    """``[M]`` whether each member's validation loss improved in ``epoch``."""
    return np.array([member["epoch"] == epoch and member["stale_epochs"] == 0 for member in meta["members"]])


def _keep_best(best: Any, ema: Any, improved: np.ndarray) -> Any:
    """The stacked best parameters: ``ema`` for the members that improved, ``best`` for the others."""
    if best is None:
        return ema
    return jax.tree.map(lambda e, b: np.where(improved.reshape((-1,) + (1,) * (b.ndim - 1)), e, b), ema, best)


def fit_ensemble(
    potential: Potential,
    train: Dataset,
    val: Dataset,
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
) -> PotentialEnsemble:
    """Train ``config.ensemble.size`` members of ``potential``'s architecture and scaling as one (see the module);
    return them with each member's best EMA parameters, written to ``run_dir/best_ensemble`` too. Checkpoints,
    logs (the members' mean metrics), locking, resuming and the finished-run report are those of
    :func:`~jaxatom.train.fit.fit`."""
    _check_data(potential, {"training": train, "validation": val}, config)
    labels = _label_settings(potential, config)
    training = _Ensemble(
        potential, config,
        GraphLoader(train, potential.cutoff, config.batch_size, shuffle=False, **labels),
        GraphLoader(val, potential.cutoff, config.batch_size, shuffle=False, **labels),
        member_indices(len(train), config), _scales(potential),
    )  # fmt: skip
    run_dir = Path(run_dir)
    with run_lock(run_dir), Checkpoints(run_dir) as checkpoints:
        _check_members(checkpoints, config, run_dir)
        state, meta, best = _restore(checkpoints, _initial_state(potential, config), resume)
        if meta is not None and stop_reason(meta, config) is not None:
            print(_finished_message(run_dir, meta, config), file=sys.stderr)
            with RunLogs(run_dir) as logs:
                logs.repair(epoch_row(meta, int(np.max(state.step))))
        else:
            (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
            with RunLogs(run_dir) as logs:
                logs.start(None if meta is None else epoch_row(meta, int(np.max(state.step))))
                state, best = _epochs(training, checkpoints, logs, state, meta, best, progress)
        return _trained(potential, best if best is not None else jax.device_get(state.ema_params), run_dir)


def _check_members(checkpoints: Checkpoints, config: TrainConfig, run_dir: Path) -> None:
    """Refuse to resume a run of another ensemble size (or of a single model) in ``run_dir``."""
    meta = checkpoints.meta()
    if meta is None or len(meta.get("members", ())) == config.ensemble.size:
        return
    found = f"an ensemble of {len(meta['members'])} members" if "members" in meta else "a single model"
    raise ConfigError(
        f"{run_dir} holds the checkpoints of {found}, not of {config.ensemble.size} members; resume it with the "
        "training.ensemble it was started with, or train into another run_dir"
    )


def _epochs(
    training: _Ensemble,
    checkpoints: Checkpoints,
    logs: RunLogs,
    state: TrainState,
    meta: dict | None,
    best: Any,
    progress: bool,
) -> tuple[TrainState, Any]:
    """Train from the epoch after ``meta`` until :func:`stop_reason` holds, checkpointing then logging every epoch;
    return the last state and the stacked best EMA parameters."""
    config = training.config
    start = 0 if meta is None else meta["epoch"] + 1
    started = time.perf_counter() - (0.0 if meta is None else meta["elapsed_s"])
    bar = epoch_bar(start, config, f"training {config.ensemble.size} members", progress)
    with contextlib.closing(bar):
        for epoch in bar:
            epoch_started = time.perf_counter()
            active = _active(meta, config.ensemble.size)
            state, train_metrics = _train_epoch(training, checkpoints, state, active, epoch)
            val_metrics = _evaluate(state.ema_params, training)
            meta = _next_ensemble_meta(config, meta, epoch, train_metrics, val_metrics,
                                       time.perf_counter() - started)  # fmt: skip
            rates = np.array([member["plateau"]["learning_rate"] for member in meta["members"]], np.float32)
            state = state.replace(learning_rate=jax.device_put(rates))
            improved = _improved(meta, epoch)
            if improved.any():
                best = _keep_best(best, jax.device_get(state.ema_params), improved)
                checkpoints.save("best", epoch, state.replace(ema_params=best), meta)
            checkpoints.save("latest", epoch, state, meta)
            row = epoch_row(meta, int(np.max(state.step)))
            logs.log(row)
            bar.set_postfix(loss=f"{row['train_loss']:.4g}", val=f"{row['val_loss']:.4g}",
                            active=int(_active(meta, config.ensemble.size).sum()))  # fmt: skip
            update_total(bar, config, meta, time.perf_counter() - epoch_started)
            if meta["stop_reason"] is not None:
                break
    report_stop(meta, config)
    return state, best


def _trained(potential: Potential, best: Any, run_dir: Path) -> PotentialEnsemble:
    """The ensemble of ``potential`` with each member's parameters from the stacked ``best``, written member by
    member to ``run_dir/best_ensemble`` where a member's directory does not already hold exactly it."""
    size = len(jax.tree.leaves(best)[0])
    members = [potential.replace(params=_member(best, m)) for m in range(size)]
    for m, member in enumerate(members):
        path = member_path(run_dir / ENSEMBLE_DIR, m)
        if not _holds(path, member):
            member.save(path)
    return PotentialEnsemble.from_potentials(members)
