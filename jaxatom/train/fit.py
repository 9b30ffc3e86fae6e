"""The training loop: epochs of jitted steps, validation with EMA parameters, plateau, early stop, checkpoints, logs."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxatom.data.dataset import Dataset
from jaxatom.data.loader import GraphLoader
from jaxatom.data.statistics import fit_atomrefs, mean_energy_per_atom
from jaxatom.errors import JaxAtomError
from jaxatom.potential import Potential
from jaxatom.train.checkpoint import Checkpoints
from jaxatom.train.config import ConfigError, TrainConfig
from jaxatom.train.schedule import PlateauState, plateau_update
from jaxatom.train.step import TrainState, data_parallel_train_step, eval_step, init_state, train_step

__all__ = ["fit", "TrainingDiverged", "epoch_metrics", "with_energy_offsets"]

CSV_COLUMNS = (
    "epoch", "step", "learning_rate", "train_loss", "val_loss", "train_energy_mae", "train_forces_mae",
    "val_energy_mae", "val_energy_rmse", "val_forces_mae", "val_forces_rmse", "time_s",
)  # fmt: skip


class TrainingDiverged(JaxAtomError, RuntimeError):
    """The loss or its gradient became NaN or infinite."""


def epoch_metrics(sums: dict) -> dict[str, float]:
    """Loss, MAE and RMSE (eV, eV/Å) from the metric sums of an epoch."""
    sums = {k: float(v) for k, v in sums.items()}
    return {
        "loss": sums["loss_sum"] / max(sums["batches"], 1.0),
        "energy_mae": sums["energy_abs"] / max(sums["n_graphs"], 1.0),
        "energy_rmse": math.sqrt(sums["energy_sq"] / max(sums["n_graphs"], 1.0)),
        "forces_mae": sums["forces_abs"] / max(sums["n_forces"], 1.0),
        "forces_rmse": math.sqrt(sums["forces_sq"] / max(sums["n_forces"], 1.0)),
    }


def with_energy_offsets(potential: Potential, train: Dataset, atomrefs: bool = False) -> Potential:
    """The potential with its energy offsets taken from the training data (float64): mean energy per atom, and
    optionally per-element reference energies fitted by least squares first."""
    indices = np.arange(len(train))
    refs = fit_atomrefs(train, indices) if atomrefs else {}
    return potential.replace(energy_shift=mean_energy_per_atom(train, indices, refs), atomrefs=refs)


def _accumulate(total, batch):
    return batch if total is None else jax.tree.map(lambda a, b: a + b, total, batch)


def _check_data(potential: Potential, datasets: dict[str, Dataset], config: TrainConfig) -> None:
    for name, dataset in datasets.items():
        if len(dataset) == 0:
            raise ConfigError(f"the {name} set is empty")
        needed = [p for p, w in (("energy", config.energy_weight), ("forces", config.forces_weight)) if w > 0]
        try:
            dataset.require(*needed)
        except KeyError as err:
            raise ConfigError(f"the {name} set cannot be trained on: {err.args[0]}") from err
        potential.check_elements(dataset.numbers)


def _evaluate(params, loader: GraphLoader, potential: Potential, config: TrainConfig) -> dict[str, float]:
    total = None
    for graph, labels in loader(epoch=0):
        sums = eval_step(params, graph, labels, potential.model, potential.energy_scale, config.step)
        total = _accumulate(total, sums)
    return epoch_metrics(jax.device_get(total))


def fit(
    potential: Potential,
    train: Dataset,
    val: Dataset,
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
) -> Potential:
    """Train ``potential`` on ``train``, validating on ``val`` after every epoch; return it with the EMA parameters
    of the best validation epoch (written to ``run_dir/best_model`` too).

    The potential's energy offsets are used as they are (see :func:`with_energy_offsets`). With several visible
    devices (and ``config.data_parallel``) each batch is split evenly across them and gradients are averaged.
    ``run_dir`` receives ``checkpoints/latest`` and ``checkpoints/best`` (orbax), ``metrics.csv``, TensorBoard event
    files in ``tensorboard`` and ``config.json``. With ``resume`` a run continues from ``checkpoints/latest`` and ends
    exactly where an uninterrupted run would. A NaN or infinite loss raises :class:`TrainingDiverged` naming the
    step and the last good checkpoint.
    """
    _check_data(potential, {"training": train, "validation": val}, config)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    offsets = potential.atom_offsets()
    devices = jax.devices()
    n_shards = len(devices) if config.data_parallel and len(devices) > 1 else 1
    if config.batch_size % n_shards:
        raise ConfigError(f"batch_size {config.batch_size} must be a multiple of the {n_shards} devices")
    train_loader = GraphLoader(
        train, potential.cutoff, config.batch_size, seed=config.seed, atom_offsets=offsets, n_shards=n_shards
    )
    val_loader = GraphLoader(val, potential.cutoff, config.batch_size, shuffle=False, atom_offsets=offsets)
    checkpoints = Checkpoints(run_dir)
    state: TrainState = init_state(potential.params, config)
    step_fn, sharding = train_step, None
    if n_shards > 1:
        mesh = Mesh(np.array(devices), ("data",))
        step_fn, sharding = data_parallel_train_step(mesh), NamedSharding(mesh, P("data"))
    plateau, start_epoch, best_params, stale, elapsed = PlateauState(config.learning_rate), 0, None, 0, 0.0
    if resume and checkpoints.latest_epoch() is not None:
        state, meta = checkpoints.restore("latest", state)
        start_epoch, stale, elapsed = meta["epoch"] + 1, meta["stale_epochs"], meta["elapsed_s"]
        plateau = PlateauState(**meta["plateau"])
        if checkpoints.latest_epoch("best") is not None:
            best_params = jax.device_get(checkpoints.restore("best", state)[0].ema_params)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))

    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tensorboard"))
    csv_path = run_dir / "metrics.csv"
    _truncate_csv(csv_path, start_epoch)
    started = time.perf_counter() - elapsed
    bar = tqdm(range(start_epoch, config.max_epochs), initial=start_epoch, total=config.max_epochs,
               desc="training", unit="epoch", disable=not progress)  # fmt: skip
    try:
        for epoch in bar:
            totals = None
            for graph, labels in train_loader(epoch, sharding=sharding):
                state, sums = step_fn(state, graph, labels, potential.model, potential.energy_scale, config.step)
                totals = _accumulate(totals, sums)
            if int(state.nan_step) >= 0:
                raise TrainingDiverged(
                    f"the loss became NaN or infinite at step {int(state.nan_step)} (epoch {epoch}); the last good "
                    f"checkpoint is {checkpoints.describe('latest')} (best: {checkpoints.describe('best')}). "
                    "Lower learning_rate, set clip_norm, or check the data for outliers."
                )
            train_metrics = epoch_metrics(jax.device_get(totals))
            # one copy on the default device (the state may be replicated over several), reused for every batch
            val_params = jax.device_put(jax.device_get(state.ema_params))
            val_metrics = _evaluate(val_params, val_loader, potential, config)
            improved = val_metrics["loss"] < plateau.best * (1 - 1e-4)
            plateau = plateau_update(plateau, val_metrics["loss"], config.plateau_factor, config.plateau_patience,
                                     config.plateau_cooldown, config.min_learning_rate)  # fmt: skip
            state = state.replace(learning_rate=np.float32(plateau.learning_rate))
            stale = 0 if improved else stale + 1
            elapsed = time.perf_counter() - started
            meta = {"epoch": epoch, "stale_epochs": stale, "elapsed_s": elapsed, "plateau": dataclasses.asdict(plateau),
                    "val": val_metrics, "train": train_metrics}  # fmt: skip
            if improved:
                best_params = jax.device_get(state.ema_params)
                checkpoints.save("best", epoch, state, meta)
            checkpoints.save("latest", epoch, state, meta)
            row = _log(
                csv_path, writer, epoch, int(state.step), plateau.learning_rate, train_metrics, val_metrics, elapsed
            )
            bar.set_postfix(loss=f"{train_metrics['loss']:.4g}", val=f"{val_metrics['loss']:.4g}",
                            lr=f"{plateau.learning_rate:.2g}", F_mae=f"{row['val_forces_mae']:.3g}")  # fmt: skip
            if config.early_stopping_patience is not None and stale > config.early_stopping_patience:
                break
            if config.max_time_s is not None and elapsed > config.max_time_s:
                break
    finally:
        bar.close()
        writer.close()
        checkpoints.close()
    trained = potential.replace(params=best_params if best_params is not None else jax.device_get(state.ema_params))
    trained.save(run_dir / "best_model")
    return trained


def _truncate_csv(path: Path, start_epoch: int) -> None:
    """Keep the rows of epochs before ``start_epoch`` (a resumed run rewrites what came after its checkpoint)."""
    rows = []
    if path.exists() and start_epoch > 0:
        with path.open() as handle:
            rows = [r for r in csv.DictReader(handle) if int(r["epoch"]) < start_epoch]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _log(path: Path, writer, epoch: int, step: int, lr: float, train: dict, val: dict, elapsed: float) -> dict:
    row = {
        "epoch": epoch, "step": step, "learning_rate": lr, "train_loss": train["loss"], "val_loss": val["loss"],
        "train_energy_mae": train["energy_mae"], "train_forces_mae": train["forces_mae"],
        "val_energy_mae": val["energy_mae"], "val_energy_rmse": val["energy_rmse"],
        "val_forces_mae": val["forces_mae"], "val_forces_rmse": val["forces_rmse"], "time_s": elapsed,
    }  # fmt: skip
    with path.open("a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=CSV_COLUMNS).writerow(row)
    for key, value in row.items():
        if key not in ("epoch", "step"):
            writer.add_scalar(key, value, epoch)
    writer.flush()
    return row
