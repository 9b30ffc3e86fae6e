"""Ensembles trained as one: equal to each member trained alone, bootstrapping, resuming, the artifact, bad settings."""

import csv

import jax
import numpy as np
import pytest
import yaml

import jaxatom
from jaxatom import data
from jaxatom.calculators import EnsembleCalculator
from jaxatom.cli import main
from jaxatom.md.driver import _potential
from jaxatom.nn import PaiNN
from jaxatom.potential.potential import example_graph
from jaxatom.train import ConfigError, TrainConfig, TrainingDiverged, fit, with_energy_offsets
from jaxatom.train.checkpoint import Checkpoints
from jaxatom.train.ensemble import ENSEMBLE_DIR, member_indices, member_order

CONFIG = dict(batch_size=8, max_epochs=3, learning_rate=3e-3, plateau_patience=1, plateau_cooldown=0, seed=3)


@pytest.fixture(scope="module")
def split():
    ethanol = data.load_builtin("ethanol")
    return ethanol.subset(np.arange(0, 20)), ethanol.subset(np.arange(2000, 2008))


@pytest.fixture(scope="module")
def potential(split):
    model = PaiNN(n_atom_basis=8, n_interactions=1, cutoff=4.0, n_rbf=6)
    return with_energy_offsets(jaxatom.Potential.create(model, elements=[1, 6, 8], seed=0), split[0])


def _config(size: int = 2, bootstrap: bool = False, **changes) -> TrainConfig:
    return TrainConfig(**{**CONFIG, "ensemble": {"size": size, "bootstrap": bootstrap}, **changes})


def _alone(potential, train, val, config: TrainConfig, m: int, run_dir):
    """Member ``m`` of ``config``'s ensemble trained by itself: its seed, its data, the single-model loop."""
    seed = config.seed + m
    params = potential.model.init(jax.random.PRNGKey(seed), example_graph(potential.cutoff))
    subset = train.subset(member_indices(len(train), config)[m])
    single = TrainConfig(**{**config.to_dict(), "ensemble": None, "seed": seed})
    return fit(potential.replace(params=params), subset, val, single, run_dir, progress=False)


def _assert_close(a, b, rtol=2e-4, atol=1e-5) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _member_params(ensemble, m: int):
    return jax.tree.map(lambda leaf: leaf[m], ensemble.params)


def _rows(run_dir):
    with (run_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def _untimed(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "time_s"} for row in rows]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, potential, split):
    """A 2-member ensemble trained with early stopping after one epoch without improvement (at this learning rate
    member 1 stops after epoch 2, member 0 trains on to the end), its run directory and configuration."""
    run_dir = tmp_path_factory.mktemp("ensemble")
    config = _config(early_stopping_patience=0, max_epochs=5, learning_rate=0.03)
    return fit(potential, *split, config, run_dir, progress=False), run_dir, config


def test_ensemble_training_equals_training_each_member_alone(tmp_path, potential, split, trained):
    ensemble, run_dir, config = trained
    assert isinstance(ensemble, jaxatom.PotentialEnsemble) and ensemble.size == 2
    with Checkpoints(run_dir) as checkpoints:
        members = checkpoints.meta()["members"]
    for m in range(2):
        alone = _alone(potential, *split, config, m, tmp_path / f"alone{m}")
        _assert_close(_member_params(ensemble, m), alone.params)
        rows = _rows(tmp_path / f"alone{m}")
        # each member stopped (or went on) exactly when its single run did, with the same validation losses
        assert members[m]["epoch"] == int(rows[-1]["epoch"])
        np.testing.assert_allclose(members[m]["val"]["loss"], float(rows[-1]["val_loss"]), rtol=1e-4)
    assert [(m["epoch"], m["stop_reason"]) for m in members] == [(4, "max_epochs"), (2, "early_stopping")]
    assert [int(r["epoch"]) for r in _rows(run_dir)] == list(range(max(m["epoch"] for m in members) + 1))


def test_bootstrapping_draws_a_different_sample_per_member_and_trains_each_on_its_own(tmp_path, potential, split):
    config = _config(size=3, bootstrap=True, max_epochs=1)
    samples = member_indices(20, config)
    assert all(len(s) == 20 and len(np.unique(s)) < 20 for s in samples)  # drawn with replacement
    assert len({tuple(s) for s in samples}) == 3
    assert member_indices(20, _config(size=3))[0].tolist() == list(range(20))
    order = member_order(samples[1], config.seed + 1, epoch=2)
    assert sorted(order.tolist()) == sorted(samples[1].tolist()) and order.tolist() != samples[1].tolist()
    config = _config(size=2, bootstrap=True, max_epochs=1)
    ensemble = fit(potential, *split, config, tmp_path / "bagged", progress=False)
    _assert_close(_member_params(ensemble, 1), _alone(potential, *split, config, 1, tmp_path / "alone").params)


def test_an_interrupted_ensemble_run_resumes_to_the_result_of_an_uninterrupted_one(
    tmp_path, potential, split, trained, monkeypatch
):
    straight, straight_dir, config = trained
    save = Checkpoints.save

    def interrupted(self, name, epoch, state, meta):
        if (name, epoch) == ("latest", 3):  # killed after the best checkpoint of epoch 3, one member stopped
            raise KeyboardInterrupt
        save(self, name, epoch, state, meta)

    monkeypatch.setattr(Checkpoints, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(potential, *split, config, tmp_path, progress=False)
    monkeypatch.setattr(Checkpoints, "save", save)
    resumed = fit(potential, *split, config, tmp_path, progress=False)
    for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert _untimed(_rows(tmp_path)) == _untimed(_rows(straight_dir))


def test_the_artifact_loads_in_potential_ensemble_the_calculator_and_md(potential, split, trained):
    ensemble, run_dir, _ = trained
    path = run_dir / ENSEMBLE_DIR
    loaded = jaxatom.PotentialEnsemble.load(path)
    atoms = split[1].to_atoms(0)
    prediction = loaded.predict(atoms)
    for m in range(2):
        member = jaxatom.load_model(path / f"member_{m:03d}")
        _assert_close(member.params, _member_params(ensemble, m), rtol=0, atol=0)
        np.testing.assert_allclose(prediction["energy_members"][m], member.predict(atoms)["energy"], rtol=1e-6)
    atoms.calc = EnsembleCalculator(path)
    assert atoms.get_potential_energy() == pytest.approx(prediction["energy"], rel=1e-6)
    assert isinstance(_potential(path), jaxatom.PotentialEnsemble) and _potential(str(path)).size == 2


def test_a_diverging_member_stops_the_run_naming_it_and_the_last_good_checkpoint(tmp_path, potential, split):
    with pytest.raises(TrainingDiverged, match=r"ensemble member 0 became NaN .*last good checkpoint is .*latest"):
        fit(potential, *split, _config(learning_rate=1e38, max_epochs=1), tmp_path, progress=False)


def test_bad_ensemble_settings_are_refused_with_a_clear_error(tmp_path, potential, split, trained):
    with pytest.raises(ConfigError, match="ensemble.size: must be a positive number of members, got 0"):
        _config(size=0)
    with pytest.raises(ConfigError, match=r"ensemble.bootstap: unknown setting \(did you mean bootstrap\?\)"):
        TrainConfig(ensemble={"size": 2, "bootstap": True})
    with pytest.raises(ConfigError, match="ensemble.size: required setting is missing"):
        TrainConfig.from_mapping({"ensemble": {"bootstrap": True}})
    with pytest.raises(ConfigError, match="holds the checkpoints of an ensemble of 2 members, not of 3 members"):
        fit(potential, *split, _config(size=3), trained[1], progress=False)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"builtin": "ethanol"}, "training": {"ensemble": {"size": -1}}}))
    assert main(["train", str(config), "--quiet"]) == 2
