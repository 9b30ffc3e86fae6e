"""Training: the loss falls, a resumed run ends exactly where an uninterrupted one does, NaN stops, bad configs."""

import csv

import jax
import numpy as np
import pytest

import jaxatom
from jaxatom import data
from jaxatom.errors import OutputExistsError
from jaxatom.nn import PaiNN
from jaxatom.train import ConfigError, TrainConfig, TrainingDiverged, fit, with_energy_offsets
from jaxatom.train.schedule import PlateauState, plateau_update

CONFIG = dict(batch_size=16, max_epochs=4, learning_rate=3e-3, plateau_patience=1, plateau_cooldown=0, seed=3)


@pytest.fixture(scope="module")
def split():
    ethanol = data.load_builtin("ethanol")
    return ethanol.subset(np.arange(0, 40)), ethanol.subset(np.arange(2000, 2016))


@pytest.fixture(scope="module")
def potential(split):
    model = PaiNN(n_atom_basis=8, n_interactions=1, cutoff=4.0, n_rbf=6)
    return with_energy_offsets(jaxatom.Potential.create(model, elements=[1, 6, 8], seed=0), split[0])


def _rows(run_dir):
    with (run_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def _leaves(params):
    return [np.asarray(x) for x in jax.tree.leaves(params)]


def test_loss_decreases_and_everything_is_written(tmp_path, potential, split):
    trained = fit(potential, *split, TrainConfig(**CONFIG), tmp_path, progress=False)
    rows = _rows(tmp_path)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    assert (tmp_path / "checkpoints" / "latest").is_dir() and (tmp_path / "checkpoints" / "best").is_dir()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    loaded = jaxatom.load_model(tmp_path / "best_model")
    assert loaded.energy_shift == potential.energy_shift
    for a, b in zip(_leaves(loaded.params), _leaves(trained.params), strict=True):
        np.testing.assert_array_equal(a, b)
    # the caller's potential is untouched (its buffers were not donated to the training step)
    assert np.isfinite(potential.predict(split[1].to_atoms(0))["energy"])


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_run_does(tmp_path, potential, split):
    straight = fit(potential, *split, TrainConfig(**CONFIG), tmp_path / "straight", progress=False)
    fit(potential, *split, TrainConfig(**{**CONFIG, "max_epochs": 2}), tmp_path / "resumed", progress=False)
    resumed = fit(potential, *split, TrainConfig(**CONFIG), tmp_path / "resumed", progress=False)
    for a, b in zip(_leaves(straight.params), _leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(a, b)
    straight_rows, resumed_rows = _rows(tmp_path / "straight"), _rows(tmp_path / "resumed")
    assert [r["val_loss"] for r in straight_rows] == [r["val_loss"] for r in resumed_rows]


def test_a_fresh_run_into_a_directory_with_another_runs_checkpoints_is_refused(tmp_path, potential, split):
    fit(potential, *split, TrainConfig(**{**CONFIG, "max_epochs": 1}), tmp_path, progress=False)
    with pytest.raises(OutputExistsError, match="checkpoints of an earlier run.*another run_dir"):
        fit(potential, *split, TrainConfig(**{**CONFIG, "max_epochs": 1}), tmp_path, resume=False, progress=False)


def test_a_nan_loss_stops_with_the_step_and_the_last_good_checkpoint(tmp_path, potential, split):
    with pytest.raises(TrainingDiverged, match=r"NaN or infinite at step \d+ .*last good checkpoint is .*latest"):
        fit(potential, *split, TrainConfig(**{**CONFIG, "learning_rate": 1e38}), tmp_path, progress=False)


def test_bad_configurations_and_data_are_refused_before_any_compute(tmp_path, potential, split):
    with pytest.raises(ConfigError, match="batch_size: must be positive"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match=r"\(2 problems\):\n  plateau_factor: .*\n  ema_decay: "):
        TrainConfig(plateau_factor=2.0, ema_decay=1.5)
    with pytest.raises(ConfigError, match=r"lr: unknown setting \(did you mean learning_rate\?\); known: batch_size"):
        TrainConfig.from_mapping({"lr": 0.1})
    no_forces = data.Dataset.from_arrays(
        split[0].numbers[:9], [split[0].positions[:9]], {"energy": [0.0]}, units={"energy": "eV"}
    )
    with pytest.raises(ConfigError, match="training set lacks 'forces', which the loss trains"):
        fit(potential, no_forces, split[1], TrainConfig(**CONFIG), tmp_path, progress=False)
    hydrogen_only = potential.replace(elements=(1,))
    with pytest.raises(ValueError, match="elements the model was not built for"):
        fit(hydrogen_only, *split, TrainConfig(**CONFIG), tmp_path, progress=False)
    assert not (tmp_path / "checkpoints").exists()


def test_plateau_follows_torch_semantics():
    state = PlateauState(learning_rate=1.0)
    rates = []
    for value in [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.5]:
        state = plateau_update(state, value, factor=0.5, patience=2, cooldown=1, min_lr=0.1)
        rates.append(state.learning_rate)
    # two epochs may pass without improvement; the third reduces; one cooldown epoch; then counting restarts
    assert rates == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5]


def test_warmup_scales_the_first_steps(potential, split):
    from jaxatom.data import GraphLoader
    from jaxatom.train.step import init_state, train_step

    loader = GraphLoader(split[0], potential.cutoff, 16, atom_offsets=potential.atom_offsets())
    graph, labels = loader.batch(np.arange(16))
    changes = {}
    for warmup in (0, 10):
        config = TrainConfig(**{**CONFIG, "warmup_steps": warmup})
        state, _ = train_step(
            init_state(potential.params, config),
            graph,
            labels,
            potential.model,
            potential.scaling_arrays(np.float32, include_offsets=False),
            config.step,
        )
        before, after = _leaves(potential.params), _leaves(state.params)
        changes[warmup] = max(float(np.abs(a - b).max()) for a, b in zip(after, before, strict=True))
    # Adam's first step moves each parameter by about the learning rate; warm-up starts at a tenth of it
    assert changes[0] == pytest.approx(3e-3, rel=0.05)
    assert changes[10] == pytest.approx(3e-4, rel=0.05)


def test_predictions_are_written_as_npz_or_hdf5(tmp_path, potential, split):
    import h5py

    from jaxatom.train.evaluation import error_metrics, predict_dataset, write_predictions

    predictions = predict_dataset(potential, split[1], batch_size=8)
    direct = potential.predict([split[1].to_atoms(i) for i in range(len(split[1]))])
    # different batch sizes round the float32 model energy differently (~1e-7 eV); offsets are added in float64, so
    # the totals (-310 eV, where a float32 step is 3e-5 eV) still agree far below float32 resolution
    np.testing.assert_allclose(predictions["energy"], [r["energy"] for r in direct], rtol=0, atol=2e-6)
    np.testing.assert_allclose(predictions["forces"], np.concatenate([r["forces"] for r in direct]), atol=1e-6)
    metrics = error_metrics(predictions, split[1])
    assert metrics["energy_mae_kcal_mol"] == pytest.approx(metrics["energy_mae_eV"] / 0.0433641, rel=1e-5)
    write_predictions(predictions, split[1], tmp_path / "p.h5")
    with h5py.File(tmp_path / "p.h5") as saved:
        np.testing.assert_array_equal(saved["predicted_energy"][:], predictions["energy"])
        np.testing.assert_array_equal(saved["reference_forces"][:], split[1].properties["forces"])
