"""Potentials: a model of named outputs with their scales and offsets; energies, forces, stress and every other
output; ensembles; the portable model file."""

from jaxatom.potential.calibration import Calibration
from jaxatom.potential.delta import delta_potential
from jaxatom.potential.ensemble import PotentialEnsemble, evaluate_ensemble, evaluate_ensemble_jit
from jaxatom.potential.evaluate import evaluate, evaluate_jit
from jaxatom.potential.io import ModelFileError, load_model, save_model
from jaxatom.potential.outputs import OutputScaling
from jaxatom.potential.potential import Potential

__all__ = [
    "Potential",
    "OutputScaling",
    "PotentialEnsemble",
    "Calibration",
    "evaluate",
    "evaluate_jit",
    "evaluate_ensemble",
    "evaluate_ensemble_jit",
    "load_model",
    "save_model",
    "ModelFileError",
    "delta_potential",
]
