"""Neural-network building blocks: radial bases, cutoffs, SchNet, PaiNN and output heads (``flax.linen``)."""

from jaxatom.nn.activations import shifted_softplus
from jaxatom.nn.checks import check_representation
from jaxatom.nn.heads import (
    Atomwise,
    DipoleMoment,
    GatedEquivariantMLP,
    OutputSpec,
    Polarizability,
    check_head,
)
from jaxatom.nn.model import ENERGY_HEAD, AtomisticModel, check_model
from jaxatom.nn.painn import PaiNN
from jaxatom.nn.radial import BesselRBF, GaussianRBF, cosine_cutoff, mollifier_cutoff
from jaxatom.nn.schnet import SchNet

__all__ = [
    "SchNet",
    "PaiNN",
    "AtomisticModel",
    "ENERGY_HEAD",
    "Atomwise",
    "DipoleMoment",
    "Polarizability",
    "GatedEquivariantMLP",
    "OutputSpec",
    "GaussianRBF",
    "BesselRBF",
    "cosine_cutoff",
    "mollifier_cutoff",
    "shifted_softplus",
    "check_representation",
    "check_head",
    "check_model",
]
