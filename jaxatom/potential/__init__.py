"""Potentials: a model with energy offsets; energies, forces and stress; ensembles; the portable model file."""

from jaxatom.potential.ensemble import PotentialEnsemble, evaluate_ensemble, evaluate_ensemble_jit
from jaxatom.potential.evaluate import evaluate, evaluate_jit
from jaxatom.potential.io import ModelFileError, load_model, save_model
from jaxatom.potential.potential import Potential

__all__ = [
    "Potential",
    "PotentialEnsemble",
    "evaluate",
    "evaluate_jit",
    "evaluate_ensemble",
    "evaluate_ensemble_jit",
    "load_model",
    "save_model",
    "ModelFileError",
]
