"""Potentials: a model with energy offsets; energies, forces and stress; the portable model file."""

from jaxatom.potential.evaluate import evaluate, evaluate_jit
from jaxatom.potential.io import ModelFileError, load_model, save_model
from jaxatom.potential.potential import Potential

__all__ = ["Potential", "evaluate", "evaluate_jit", "load_model", "save_model", "ModelFileError"]
