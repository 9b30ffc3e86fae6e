"""Molecular dynamics on the accelerator: NVE, Langevin, Nosé–Hoover, ring-polymer and constant-pressure MD as
ensemble spec objects, in compiled ``lax.scan`` chunks, with replicas and model ensembles, model observables per frame,
jax-md neighbour lists or lattice-image edges, HDF5 trajectories with restart, and analysis.

This is the only package that imports jax-md.
"""

from jaxatom.md.driver import CheckpointMismatch, MDRun, simulate
from jaxatom.md.ensembles import (
    ENSEMBLES,
    NVE,
    RPMD,
    Ensemble,
    Langevin,
    MTKBarostat,
    NoseHoover,
    RingPolymerNPT,
    StochasticCellRescaling,
)
from jaxatom.md.forces import ForceField, from_energy, from_ensemble, from_potential
from jaxatom.md.integrators import Integrator, MDState
from jaxatom.md.trajectory import export_trajectory, flagged_structures, read_trajectory, trajectory_atoms

__all__ = [
    "flagged_structures",
    "ENSEMBLES",
    "CheckpointMismatch",
    "Ensemble",
    "Langevin",
    "MTKBarostat",
    "NVE",
    "NoseHoover",
    "RPMD",
    "RingPolymerNPT",
    "StochasticCellRescaling",
    "ForceField",
    "Integrator",
    "MDRun",
    "MDState",
    "export_trajectory",
    "from_energy",
    "from_ensemble",
    "from_potential",
    "read_trajectory",
    "simulate",
    "trajectory_atoms",
]
