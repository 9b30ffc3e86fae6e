"""The five stages of a generation. Each reads what the stages before it wrote and writes its own files (see
:mod:`jaxatom.learn.layout`), and each can be rerun after a kill: training and MD resume from their checkpoints,
labelling skips the structures already labelled or failed, and adding skips labels the data set already holds.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from jaxatom.data.formats import read_dataset
from jaxatom.learn.config import LearnConfig
from jaxatom.learn.layout import Layout, write_atomically
from jaxatom.learn.oracle import OracleConfig, append_labels, label, labeled_ids, structure_id
from jaxatom.learn.pool import Pool, explored_pool
from jaxatom.learn.selection import select, structure_features
from jaxatom.md.driver import SimulationFailed, simulate
from jaxatom.potential import PotentialEnsemble
from jaxatom.train.ensemble import ENSEMBLE_DIR
from jaxatom.train.run import DataConfig, RunConfig, evaluate_run, train_run

__all__ = [
    "label_id",
    "label_properties",
    "train_stage",
    "explore_stage",
    "select_stage",
    "label_stage",
    "add_stage",
    "STAGE_FUNCTIONS",
]


def _snapshot(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` once (atomically), so a generation keeps the labels it was trained on."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    shutil.copyfile(source, partial)
    partial.replace(target)


def _run_config(config: LearnConfig, train_dir: Path, labels: Path) -> RunConfig:
    """The training run of a generation: every label, ``val_fraction`` of them (at least one) for validation."""
    n = len(read_dataset(labels))
    n_val = max(1, round(config.val_fraction * n))
    data = DataConfig(path=str(labels), train=n - n_val, val=n_val, test=0, seed=config.seed)
    return RunConfig(run_dir=str(train_dir), data=data, model=config.model, training=config.training)


def train_stage(config: LearnConfig, layout: Layout, g: int, progress: bool) -> None:
    """Train generation ``g``'s ensemble on every label so far and score it on the held-out set."""
    train_dir = layout.train_dir(g)
    labels = train_dir / "labels.h5"
    _snapshot(layout.labels, labels)
    run = _run_config(config, train_dir, labels)
    train_run(run, progress=progress)
    metrics = evaluate_run(train_dir, data_path=layout.test)
    ensemble = PotentialEnsemble.load(train_dir / ENSEMBLE_DIR)
    calibration = {} if ensemble.calibration is None else ensemble.calibration.to_dict()
    layout.update_summary(g, labels=len(read_dataset(labels)), test=metrics, calibration=calibration)


def _starts(config: LearnConfig, layout: Layout, g: int) -> list[Atoms]:
    """``explore.replicas`` labelled structures per temperature, drawn for generation ``g``."""
    labels = read_dataset(layout.train_dir(g) / "labels.h5")
    count = config.explore.replicas * len(config.explore.temperatures_K)
    picks = np.random.default_rng([config.seed, g]).choice(len(labels), count, replace=len(labels) < count)
    return [_bare(labels.to_atoms(int(i))) for i in picks]


def _bare(atoms: Atoms) -> Atoms:
    return Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)


def explore_stage(config: LearnConfig, layout: Layout, g: int, progress: bool) -> None:
    """Run generation ``g``'s gated Langevin MD, ``explore.replicas`` replicas at each temperature in one compiled
    run (resumed if it was cut short); a run that blows up keeps the frames it wrote and is reported."""
    output, done = layout.explore_dir(g) / "md.h5", layout.explore_dir(g) / "md.json"
    if not done.exists():
        explore = config.explore
        temperatures = [t for t in explore.temperatures_K for _ in range(explore.replicas)]
        try:
            run = simulate(
                PotentialEnsemble.load(layout.train_dir(g) / ENSEMBLE_DIR), _starts(config, layout, g),
                explore.steps, explore.timestep_fs, "langevin", temperature_K=temperatures,
                friction_per_fs=explore.friction_per_fs, stride=explore.stride, output=output,
                seed=config.seed + g, progress=progress, uncertainty_threshold=explore.threshold,
                uncertainty_action=explore.action,
            )  # fmt: skip
            stopped = None if run.stopped is None else int(np.sum(run.stopped))
            outcome = {"steps": int(run.state.step), "stopped_replicas": stopped, "failure": None}
        except SimulationFailed as err:
            outcome = {"steps": None, "stopped_replicas": None, "failure": str(err)}
        write_atomically(done, json.dumps(outcome))
    layout.update_summary(g, explore=json.loads(done.read_text()))


def _pool(config: LearnConfig, layout: Layout, g: int) -> Pool:
    output = layout.explore_dir(g) / "md.h5"
    return explored_pool([output] if output.exists() else [])


def select_stage(config: LearnConfig, layout: Layout, g: int, progress: bool) -> None:
    """Choose generation ``g``'s batch from the structures its MD visited and write it (with each pick's
    uncertainty, temperature, replica, step and, with a cheap oracle, the fidelity to label it at) to
    ``select/selected.extxyz``."""
    target = layout.select_dir(g) / "selected.extxyz"
    if target.exists():
        return
    pool, choice = _pool(config, layout, g), config.select
    if not pool.structures:
        failure = layout.read_summary(g).get("explore", {}).get("failure")
        raise SimulationFailed(
            f"generation {g}'s MD visited no structure to choose from ({failure or 'no frame was written'}); lower "
            "explore.temperatures_K or explore.timestep_fs, or add labels, then rerun (the loop continues here)"
        )
    budget = choice.budget + (choice.cheap_budget if config.cheap_oracle is not None else 0)
    ensemble = PotentialEnsemble.load(layout.train_dir(g) / ENSEMBLE_DIR)
    shortlist = pool.most_uncertain(int(np.ceil(choice.shortlist * budget)), choice.method)
    features = structure_features(ensemble, [pool.structures[i] for i in shortlist])
    picks = shortlist[select(features, pool.uncertainty[shortlist], budget, choice.method,
                             threshold=choice.threshold, seed=config.seed + g)]  # fmt: skip
    chosen = [pool.structures[i] for i in picks]
    if config.cheap_oracle is not None:
        for rank, atoms in enumerate(chosen):
            atoms.info["fidelity"] = len(config.model.fidelities) - 1 if rank < choice.budget else 0
    _write_structures(target, chosen)
    layout.update_summary(g, select={**pool.statistics(), "selected": len(picks),
                                     "selected_uncertainty_mean": float(np.mean(pool.uncertainty[picks]))})  # fmt: skip


def _write_structures(path: Path, structures: Sequence[Atoms]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial.extxyz")
    ase.io.write(partial, list(structures), format="extxyz")
    partial.replace(path)


def _failed_ids(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()}


def label_id(atoms: Atoms) -> str:
    """The id of a label: the structure's (:func:`~jaxatom.learn.oracle.structure_id`), and its fidelity where it
    has one, so one structure may be labelled at two levels."""
    fidelity = atoms.info.get("fidelity")
    return structure_id(atoms) if fidelity is None else f"{structure_id(atoms)}-f{int(fidelity)}"


def label_properties(config: LearnConfig) -> tuple[str, ...]:
    """The properties every label holds: the oracle's, and with a cheap oracle each structure's ``fidelity``."""
    return (*config.oracle.properties, *(("fidelity",) if config.cheap_oracle is not None else ()))


def _oracles(config: LearnConfig) -> dict[int | None, OracleConfig]:
    """The oracle of each fidelity index (None: a single-fidelity run)."""
    if config.cheap_oracle is None:
        return {None: config.oracle}
    return {len(config.model.fidelities) - 1: config.oracle, 0: config.cheap_oracle}


def label_stage(config: LearnConfig, layout: Layout, g: int, progress: bool) -> None:
    """Label generation ``g``'s picks with the oracle (of their fidelity), each result kept as it arrives (a label
    in ``label/labels.h5``, a failure in ``label/failures.jsonl``); picks already done are skipped."""
    selected = ase.io.read(layout.select_dir(g) / "selected.extxyz", index=":")
    labels, failures = layout.label_dir(g) / "labels.h5", layout.label_dir(g) / "failures.jsonl"
    done = labeled_ids(labels) | _failed_ids(failures)
    for fidelity, oracle in _oracles(config).items():
        todo = [a for a in selected if label_id(a) not in done and a.info.get("fidelity") == fidelity]
        if todo:
            label(todo, oracle, on_result=_keeper(config, g, todo, oracle, labels, failures))
    layout.update_summary(g, label={"selected": len(selected), "labeled": len(labeled_ids(labels)),
                                    "failed": len(_failed_ids(failures))})  # fmt: skip


def _keeper(config: LearnConfig, g: int, todo: list[Atoms], oracle: OracleConfig, labels: Path, failures: Path):
    """The oracle's ``on_result``: append each label (or failure) to disk as it arrives."""

    def keep(index: int, result) -> None:
        atoms, done_id = todo[index], label_id(todo[index])
        if not result.ok:
            _append_line(failures, {"id": done_id, "error": result.error, **_where(atoms)})
            return
        if "fidelity" in atoms.info:
            result.atoms.info["fidelity"] = int(atoms.info["fidelity"])
        uncertainty = float(atoms.info.get("uncertainty", np.nan))
        provenance = {"generation": [g], "method": [oracle.method], "uncertainty": [uncertainty],
                      "structure_id": [done_id]}  # fmt: skip
        append_labels(labels, [result.atoms], provenance, properties=label_properties(config))

    return keep


def _where(atoms: Atoms) -> dict:
    return {key: atoms.info[key] for key in ("uncertainty", "temperature_K", "replica", "step") if key in atoms.info}


def _append_line(path: Path, record: dict) -> None:
    """Append one JSON line and flush it to disk (a kill loses at most the line being written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def add_stage(config: LearnConfig, layout: Layout, g: int, progress: bool) -> None:
    """Append generation ``g``'s new labels, with their provenance, to the run's data set (atomically; labels it
    already holds are skipped, so a rerun adds nothing twice)."""
    path = layout.label_dir(g) / "labels.h5"
    added = 0
    if path.exists():
        new = read_dataset(path)
        provenance = {name: list(new.info[name]) for name in ("generation", "method", "uncertainty", "structure_id")}
        added = append_labels(layout.labels, [new.to_atoms(i) for i in range(len(new))], provenance)
    layout.update_summary(g, added=added)


STAGE_FUNCTIONS = {"train": train_stage, "explore": explore_stage, "select": select_stage, "label": label_stage,
                   "add": add_stage}  # fmt: skip
