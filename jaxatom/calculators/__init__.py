"""ASE calculators for jaxatom potentials and ensembles."""

from jaxatom.calculators.ase import Capacity, EnsembleCalculator, JaxAtomCalculator

__all__ = ["JaxAtomCalculator", "EnsembleCalculator", "Capacity"]
