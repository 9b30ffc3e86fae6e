"""Training: configuration, jitted optax steps, the fit loop with orbax checkpoints, CSV and TensorBoard logs."""

from jaxatom.train.config import ConfigError, TrainConfig
from jaxatom.train.fit import TrainingDiverged, epoch_metrics, fit, with_energy_offsets
from jaxatom.train.step import TrainState, eval_step, init_state, train_step

__all__ = [
    "ConfigError",
    "TrainConfig",
    "TrainState",
    "TrainingDiverged",
    "epoch_metrics",
    "eval_step",
    "fit",
    "init_state",
    "train_step",
    "with_energy_offsets",
]
