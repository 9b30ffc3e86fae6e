"""Evaluating a trained model on a test set: :func:`evaluate` for scripts and notebooks, :func:`evaluate_run` behind
``jaxatom evaluate``; both read the same run directories, whether ``jaxatom train`` or :func:`~jaxatom.train.fit`
wrote them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxatom.data.dataset import Dataset
from jaxatom.data.formats import read_dataset
from jaxatom.errors import ConfigError
from jaxatom.plotting import data_label, model_label
from jaxatom.potential import Potential, PotentialEnsemble, load_model
from jaxatom.potential.ensemble import ensemble_members
from jaxatom.train.calibration import (
    calibration_report,
    ensemble_residuals,
    plot_calibration,
    reliability_table,
    write_reliability_csv,
)
from jaxatom.train.ensemble import ENSEMBLE_DIR
from jaxatom.train.evaluation import (
    error_metrics,
    plot_parity,
    predict_dataset,
    predict_dataset_ensemble,
    write_predictions,
)

__all__ = ["Evaluation", "evaluate", "evaluate_run", "load_trained", "run_test_set"]

Model = Potential | PotentialEnsemble


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """A model's predictions on a data set and their errors.

    Attributes:
        metrics: MAE and RMSE of every predicted property the data has, in its unit (``energy_mae`` eV,
            ``forces_mae`` eV/Å, ...; energy and forces also in kcal/mol, stress also in GPa), ``structures`` and
            ``units`` (the unit of each property); a calibrated ensemble adds ``calibration``.
        predictions: every output, per structure ``[S, ...]`` or per atom ``[A, ...]`` (no padding rows).
        dataset: the structures evaluated, with their reference values.
    """

    metrics: dict[str, Any]
    predictions: dict[str, np.ndarray]
    dataset: Dataset

    def plot_parity(self, path: str | Path, **options) -> Path:
        """A parity plot of every predicted property (and a force-error histogram) as a PNG at ``path``;
        ``options`` go to :func:`~jaxatom.train.evaluation.plot_parity`."""
        return plot_parity(self.predictions, self.dataset, path, **options)

    def __str__(self) -> str:
        units = self.metrics.get("units", {})
        lines = [f"{self.metrics['structures']} structures:"]
        for name in sorted(units, key=lambda n: (n not in ("energy", "forces"), n)):
            unit = units[name].replace("Ang", "Å")
            lines.append(f"  {name}: MAE {self.metrics[f'{name}_mae']:.4g} {unit}, "
                         f"RMSE {self.metrics[f'{name}_rmse']:.4g} {unit}")  # fmt: skip
        return "\n".join(lines)


def load_trained(run_dir: str | Path) -> Model:
    """The model a run directory holds: ``best_model``, else the ensemble in ``best_ensemble``."""
    run_dir = Path(run_dir)
    if (run_dir / "best_model").exists():
        return load_model(run_dir / "best_model")
    if ensemble_members(run_dir / ENSEMBLE_DIR):
        return PotentialEnsemble.load(run_dir / ENSEMBLE_DIR)
    raise ConfigError(f"{run_dir} holds no trained model (best_model or {ENSEMBLE_DIR}); train first")


def run_test_set(run_dir: str | Path) -> Dataset:
    """The test split of a run directory, from its ``run_config.yaml`` and ``split.npz`` (written by ``jaxatom
    train``, and by :func:`~jaxatom.train.fit` for data read from a file or a shipped set)."""
    from jaxatom.train.run import load_data, load_run_config, run_split

    config_path = Path(run_dir) / "run_config.yaml"
    if not config_path.is_file():
        raise ConfigError(
            f"{run_dir} records no data set ({config_path.name} is missing): it was trained from Python on data "
            "built in memory, so its test split is unknown; evaluate on a data file (jaxatom evaluate RUN_DIR "
            "--data FILE) or pass the data set (jaxatom.evaluate(run_dir, dataset))"
        )
    config = load_run_config(config_path)
    full = load_data(config.data)
    return full.subset(run_split(config, full)["test_idx"])


def _is_run_dir(path: Path) -> bool:
    return (path / "best_model").exists() or (path / ENSEMBLE_DIR).is_dir() or (path / "checkpoints").is_dir()


def _model_and_data(model: Model | str | Path, dataset: Dataset | str | Path | None) -> tuple[Model, Dataset]:
    if isinstance(dataset, str | Path):
        dataset = read_dataset(dataset)
    if isinstance(model, str | Path):
        path = Path(model)
        if _is_run_dir(path):
            return load_trained(path), run_test_set(path) if dataset is None else dataset
        model = PotentialEnsemble.load(path) if ensemble_members(path) else load_model(path)
    if dataset is None:
        raise ConfigError("give the data set to evaluate on (a Dataset or a data file); only a run directory "
                          "knows its own test split")  # fmt: skip
    return model, dataset


def evaluate(
    model: Model | str | Path,
    dataset: Dataset | str | Path | None = None,
    batch_size: int = 32,
    out_dir: str | Path | None = None,
) -> Evaluation:
    """Predict every output of ``model`` on ``dataset`` and compare with its references.

    Args:
        model: a :class:`Potential` or :class:`PotentialEnsemble` (the members' mean is evaluated), a model
            directory, or a run directory (``jaxatom train`` or :func:`~jaxatom.train.fit`): its best model.
        dataset: the structures (a :class:`Dataset` or a data file); for a run directory, default its test split.
        batch_size: structures per compiled evaluation.
        out_dir: where to write ``metrics.json``, ``parity.png`` and ``predictions.npz`` (nothing if None).
    """
    model, dataset = _model_and_data(model, dataset)
    if isinstance(model, PotentialEnsemble):
        predictions = predict_dataset_ensemble(model, dataset, batch_size)
    else:
        predictions = predict_dataset(model, dataset, batch_size)
    metrics = {"structures": len(dataset), **error_metrics(predictions, dataset)}
    metrics["units"] = {name: dataset.units[name] for name in sorted(set(predictions) & set(dataset.properties))}
    result = Evaluation(metrics, predictions, dataset)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if isinstance(model, PotentialEnsemble) and model.calibration is not None:
            metrics["calibration"] = _test_calibration(model, dataset, batch_size, out)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        result.plot_parity(out / "parity.png", title=f"{model_label(model)} on {data_label(dataset)}")
        write_predictions(predictions, dataset, out / "predictions.npz")
    return result


def evaluate_run(
    run_dir: str | Path,
    data_path: str | Path | None = None,
    batch_size: int = 32,
    units: Mapping[str, str] | None = None,
) -> dict:
    """Evaluate a run directory's best model (of an ensemble run: the members' mean) on the run's test split (or on
    all of ``data_path``, whose properties are stored in ``units`` where the file does not record them, e.g.
    ``{"stress": "GPa"}``); writes ``evaluation/metrics.json``, ``parity.png`` and ``predictions.npz`` and returns
    the metrics (:attr:`Evaluation.metrics`). A calibrated ensemble also gets ``calibration``
    (:func:`~jaxatom.train.calibration.calibration_report` on these structures) and
    ``evaluation/calibration.png``/``calibration.csv``."""
    run_dir = Path(run_dir)
    model = load_trained(run_dir)
    if data_path is not None:
        dataset = read_dataset(data_path, **({"units": units} if units else {}))
    else:
        dataset = run_test_set(run_dir)
    return evaluate(model, dataset, batch_size, out_dir=run_dir / "evaluation").metrics


def _test_calibration(ensemble: PotentialEnsemble, dataset: Dataset, batch_size: int, out: Path) -> dict:
    """How the ensemble's stored calibration holds on ``dataset`` (:func:`calibration_report`), with its
    reliability diagram ``calibration.png`` and bins ``calibration.csv`` in ``out``."""
    residuals = ensemble_residuals(ensemble, dataset, batch_size)
    rows = reliability_table(residuals, ensemble.calibration)
    write_reliability_csv(rows, out / "calibration.csv")
    plot_calibration(rows, out / "calibration.png", ensemble.calibration)
    return calibration_report(residuals, ensemble.calibration)
