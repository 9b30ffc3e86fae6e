"""Calibrated ensemble uncertainty: the fitted scale recovers a known one, the calibration travels with the ensemble
artifact (old artifacts without it still load), and ensemble training and evaluation calibrate and report it."""

import csv
import json

import numpy as np
import pytest
import yaml

import jaxatom
from jaxatom.cli import main
from jaxatom.errors import ConfigError
from jaxatom.potential import Calibration, PotentialEnsemble
from jaxatom.train.calibration import (
    Residuals,
    calibrate,
    fit_calibration,
    per_structure_max,
    plot_calibration,
    reliability_table,
    scale_factor,
)

from .conftest import ELEMENTS, tiny_schnet


def synthetic(scale: float, n_structures: int = 4000, n_atoms: int = 5, seed: int = 0) -> Residuals:
    """Spreads drawn log-normally and errors ``N(0, (scale σ)²)``: a perfectly miscalibrated-by-``scale`` ensemble."""
    rng = np.random.default_rng(seed)
    energy_std = rng.lognormal(-2.0, 0.7, n_structures)
    forces_std = rng.lognormal(-3.0, 0.7, (n_structures * n_atoms, 3))
    return Residuals(
        energy_error=rng.normal(0.0, scale * energy_std),
        energy_std=energy_std,
        forces_error=rng.normal(0.0, scale * forces_std),
        forces_std=forces_std,
        n_atoms=np.full(n_structures, n_atoms),
    )


def test_calibration_recovers_a_known_scale():
    residuals = synthetic(scale=2.5)
    calibration = fit_calibration(residuals, quantile=0.95)
    # s² is a mean of n χ²₁ variables: relative standard error of s is 1/sqrt(2n); allow 4 of them
    assert calibration.energy_scale == pytest.approx(2.5, rel=4 / np.sqrt(2 * 4000))
    assert calibration.forces_scale == pytest.approx(2.5, rel=4 / np.sqrt(2 * 60000))
    largest = calibration.forces_scale * per_structure_max(residuals.forces_std, residuals.n_atoms)
    assert calibration.forces_threshold == pytest.approx(np.quantile(largest, 0.95))
    assert np.mean(largest > calibration.forces_threshold) == pytest.approx(0.05, abs=0.002)
    assert (calibration.n_structures, calibration.n_force_components) == (4000, 60000)
    assert calibration.threshold_quantile == 0.95
    given = fit_calibration(residuals, forces_threshold=0.3)
    assert given.forces_threshold == 0.3 and given.threshold_quantile is None
    rows = reliability_table(residuals, calibration, n_bins=5)
    for row in rows:  # calibrated: observed RMS error ≈ predicted RMS uncertainty in every bin
        if row["output"] != "forces_max":
            assert row["observed_rms"] == pytest.approx(row["predicted_rms"], rel=0.15), row


def test_scale_ignores_points_without_spread_and_refuses_none():
    assert scale_factor(np.array([2.0, 5.0, 0.0]), np.array([1.0, 0.0, 0.0])) == 2.0
    with pytest.raises(ConfigError, match="no spread to calibrate"):
        scale_factor(np.zeros(3), np.zeros(3))
    with pytest.raises(ConfigError, match="quantile"):
        fit_calibration(synthetic(1.0, 10), quantile=1.5)


def test_calibration_json_roundtrip_and_reliability_plot(tmp_path):
    calibration = fit_calibration(synthetic(1.5, 200))
    assert Calibration.from_dict(json.loads(json.dumps(calibration.to_dict()))) == calibration
    assert Calibration.load(calibration.save(tmp_path / "c.json")) == calibration
    with pytest.raises(ConfigError, match="unknown keys"):
        Calibration.from_dict({**calibration.to_dict(), "scale": 1.0})
    path = plot_calibration(reliability_table(synthetic(1.5, 200), calibration), tmp_path / "calibration.png")
    assert path.stat().st_size > 1000


@pytest.fixture(scope="module")
def ensemble():
    members = [jaxatom.Potential.create(tiny_schnet(), elements=ELEMENTS, seed=seed) for seed in range(3)]
    return PotentialEnsemble.from_potentials(members)


def test_calibrated_ensemble_saves_loads_and_reports_uncertainty(ensemble, ethanol, tmp_path):
    calibration = Calibration(energy_scale=2.0, forces_scale=3.0, forces_max_scale=2.5, forces_threshold=0.4,
                              threshold_quantile=0.99, n_structures=50, n_force_components=1350)  # fmt: skip
    ensemble.with_calibration(calibration).save(tmp_path / "calibrated")
    assert (tmp_path / "calibrated" / "calibration.json").is_file()
    loaded = PotentialEnsemble.load(tmp_path / "calibrated")
    assert loaded.calibration == calibration
    prediction = loaded.predict(ethanol)
    assert prediction["energy_uncertainty"] == pytest.approx(2.0 * prediction["energy_std"])
    per_atom = 3.0 * np.linalg.norm(prediction["forces_std"], axis=-1)
    np.testing.assert_allclose(prediction["forces_uncertainty"], per_atom)
    assert prediction["forces_uncertainty_max"] == pytest.approx(per_atom.max())
    loaded.with_calibration(None).save(tmp_path / "calibrated")  # saving uncalibrated removes the file
    assert not (tmp_path / "calibrated" / "calibration.json").exists()


def test_an_artifact_without_calibration_still_loads(ensemble, ethanol, tmp_path):
    ensemble.save(tmp_path / "old")  # as ensemble training wrote it before calibration existed
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == ["member_000", "member_001", "member_002"]
    loaded = PotentialEnsemble.load(tmp_path / "old")
    assert loaded.calibration is None
    prediction = loaded.predict(ethanol)
    assert "energy_std" in prediction and not any(key.endswith("uncertainty") for key in prediction)


def test_calibrate_fits_an_ensemble_on_a_data_set(ensemble):
    data = jaxatom.data.load_builtin("ethanol").subset(np.arange(6))
    calibration = calibrate(ensemble, data, batch_size=4, quantile=0.5)
    assert calibration.n_structures == 6 and calibration.n_force_components == 6 * 9 * 3
    assert calibration.energy_scale > 0 and calibration.forces_scale > 0 and calibration.forces_threshold > 0


def test_ensemble_training_calibrates_and_evaluation_reports_it(tmp_path, capsys):
    config = {
        "run_dir": str(tmp_path / "run"),
        "data": {"builtin": "ethanol", "train": 16, "val": 8, "test": 8},
        "model": {"type": "schnet", "n_atom_basis": 16, "n_interactions": 2, "cutoff": 4.0, "n_rbf": 8},
        "training": {"batch_size": 8, "max_epochs": 1, "seed": 3, "ensemble": {"size": 2}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--quiet"]) == 0
    run = tmp_path / "run"
    stored = Calibration.load(run / "best_ensemble" / "calibration.json")
    assert stored.n_structures == 8 and stored.threshold_quantile == 0.99 and stored.forces_threshold > 0
    assert PotentialEnsemble.load(run / "best_ensemble").calibration == stored
    assert (run / "calibration.png").is_file()
    with (run / "calibration.csv").open() as handle:
        assert {row["output"] for row in csv.DictReader(handle)} == {"energy", "forces", "forces_max"}
    output = capsys.readouterr().out  # the CLI trains an ensemble (test_ensemble_training has the Python path)
    assert "calibration:" in output and "test set (8 structures)" in output and "best_ensemble" in output
    assert PotentialEnsemble.load(run / "best_ensemble").size == 2
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert metrics["calibration"]["structures"] == 8 and metrics["calibration"]["forces_scale_ratio"] > 0
    assert (run / "evaluation" / "calibration.png").is_file()
