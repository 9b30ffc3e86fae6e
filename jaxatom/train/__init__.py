"""Training: configuration, jitted optax steps, the fit loop with orbax checkpoints, CSV and TensorBoard logs."""

from jaxatom.train.assessment import Evaluation, evaluate
from jaxatom.train.calibration import Calibration, calibrate
from jaxatom.train.config import ConfigError, EnsembleConfig, TrainConfig
from jaxatom.train.ensemble import fit_ensemble
from jaxatom.train.fit import TrainingDiverged, epoch_metrics, fit, with_energy_offsets
from jaxatom.train.step import TrainState, eval_step, init_state, train_step

__all__ = [
    "Calibration",
    "calibrate",
    "ConfigError",
    "EnsembleConfig",
    "Evaluation",
    "evaluate",
    "TrainConfig",
    "TrainState",
    "TrainingDiverged",
    "epoch_metrics",
    "eval_step",
    "fit",
    "fit_ensemble",
    "init_state",
    "train_step",
    "with_energy_offsets",
]
