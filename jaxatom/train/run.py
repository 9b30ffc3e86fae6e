"""Whole runs from a configuration (YAML): data, split, model, training, evaluation — what the CLI executes."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from jaxatom.data.builtin import load_builtin
from jaxatom.data.dataset import Dataset
from jaxatom.data.formats import read_dataset
from jaxatom.data.splits import load_or_create_split
from jaxatom.potential import Potential, load_model
from jaxatom.train.checkpoint import run_lock
from jaxatom.train.config import ConfigError, TrainConfig
from jaxatom.train.evaluation import error_metrics, plot_parity, predict_dataset, write_predictions
from jaxatom.train.fit import check_training_data, fit, run_stop_reason, with_energy_offsets

__all__ = ["DEFAULT_RUN", "load_run_config", "apply_overrides", "train_run", "evaluate_run"]

#: Defaults of a run; training defaults are SchNetPack's MD17 recipe (:class:`TrainConfig`).
DEFAULT_RUN: dict[str, Any] = {
    "run_dir": "runs/run",
    "data": {"builtin": None, "path": None, "train": 1000, "val": 100, "test": None, "seed": 0, "atomrefs": False},
    "model": {"type": "painn", "n_atom_basis": 128, "n_interactions": 3, "cutoff": 5.0, "n_rbf": 20},
    "training": {},
}
MODELS = {"painn": "PaiNN", "schnet": "SchNet"}


def _merge(base: dict, update: Mapping, where: str = "") -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if key not in base and where not in ("model", "training"):
            raise ConfigError(f"unknown setting {where + '.' if where else ''}{key}; known: {sorted(base)}")
        if isinstance(base.get(key), dict) and isinstance(value, Mapping):
            merged[key] = _merge(base[key], value, key)
        else:
            merged[key] = value
    return merged


def apply_overrides(config: dict, overrides: Sequence[str]) -> dict:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a run configuration."""
    config = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"an override must look like section.key=value, got {item!r}")
        dotted, raw = item.split("=", 1)
        keys = dotted.split(".")
        target = config
        for key in keys[:-1]:
            if not isinstance(target.get(key), dict):
                raise ConfigError(f"unknown section {key!r} in override {item!r}")
            target = target[key]
        target[keys[-1]] = yaml.safe_load(raw)
    return _merge(DEFAULT_RUN, config)


def load_run_config(path: str | Path | None, overrides: Sequence[str] = ()) -> dict:
    """Read a YAML run configuration, fill in defaults, apply overrides and validate everything that can be
    validated without computing (sections, model type, training settings, data source)."""
    raw = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"no configuration file at {path}")
        raw = _read_yaml(path)
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of sections (data, model, training, run_dir)")
    config = apply_overrides(_merge(DEFAULT_RUN, raw), overrides)
    TrainConfig.from_mapping(config["training"])
    if str(config["model"].get("type", "")).lower() not in MODELS:
        raise ConfigError(f"unknown model type {config['model'].get('type')!r}; choose one of {sorted(MODELS)}")
    _representation(config["model"])  # refuses unusable settings (cutoff, sizes) before any data is read
    data = config["data"]
    if (data["builtin"] is None) == (data["path"] is None):
        raise ConfigError("set exactly one of data.builtin (aspirin, ethanol) and data.path (a data file)")
    return config


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None


def _dataset(data: Mapping) -> Dataset:
    return load_builtin(data["builtin"]) if data["builtin"] else read_dataset(data["path"])


def _representation(model: Mapping):
    from jaxatom import nn

    settings = {k: v for k, v in model.items() if k != "type"}
    try:
        return getattr(nn, MODELS[str(model["type"]).lower()])(**settings)
    except TypeError as err:
        raise ConfigError(f"invalid model settings: {err}") from err


def _split(config: Mapping, dataset: Dataset) -> dict:
    data = config["data"]
    path = Path(config["run_dir"]) / "split.npz"
    try:
        return load_or_create_split(path, len(dataset), data["train"], data["val"], data["test"], data["seed"])
    except ValueError as err:
        raise ConfigError(str(err)) from err


def train_run(config: dict, progress: bool = True) -> Potential:
    """Load the data, split it (reusing ``run_dir/split.npz``), build the model, write ``run_config.yaml`` and train
    with checkpoints (resuming a previous run in ``run_dir``). A run that is already finished under ``config`` is
    reported and keeps its files (see :func:`~jaxatom.train.fit`). Returns the trained potential."""
    run_dir = Path(config["run_dir"])
    training = TrainConfig.from_mapping(config["training"])
    representation = _representation(config["model"])
    dataset = _dataset(config["data"])
    split = _split(config, dataset)
    train, val = dataset.subset(split["train_idx"]), dataset.subset(split["val_idx"])
    check_training_data({"training": train, "validation": val}, training)
    potential = Potential.create(representation, elements=dataset.elements, seed=training.seed)
    potential = with_energy_offsets(potential, train, atomrefs=bool(config["data"]["atomrefs"]))
    with run_lock(run_dir):
        written = run_dir / "run_config.yaml"
        if run_stop_reason(run_dir, training) is None or not written.exists():  # a finished run keeps its own
            written.write_text(yaml.safe_dump(config, sort_keys=False))
        return fit(potential, train, val, training, run_dir, resume=True, progress=progress)


def evaluate_run(run_dir: str | Path, data_path: str | Path | None = None, batch_size: int = 32) -> dict:
    """Evaluate ``run_dir/best_model`` on the run's test split (or on all of ``data_path``); writes
    ``evaluation/metrics.json``, ``parity.png`` and ``predictions.npz`` and returns the metrics."""
    run_dir = Path(run_dir)
    config_path = run_dir / "run_config.yaml"
    if not (run_dir / "best_model").exists():
        raise ConfigError(f"{run_dir} holds no trained model (best_model); train first")
    if data_path is not None:
        dataset = read_dataset(data_path)
    else:
        if not config_path.is_file():
            raise ConfigError(
                f"{config_path} is missing, so the run's test split is unknown; rerun `jaxatom train` for this run "
                "or evaluate on a data file with --data"
            )
        config = _read_yaml(config_path)
        full = _dataset(config["data"])
        dataset = full.subset(_split(config, full)["test_idx"])
    potential = load_model(run_dir / "best_model")
    predictions = predict_dataset(potential, dataset, batch_size)
    metrics = {"structures": len(dataset), **error_metrics(predictions, dataset)}
    out = run_dir / "evaluation"
    out.mkdir(exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_parity(predictions, dataset, out / "parity.png")
    write_predictions(predictions, dataset, out / "predictions.npz")
    return metrics
