"""Neural-network building blocks: radial bases, cutoffs, SchNet, PaiNN and output heads (``flax.linen``)."""

from jaxatom.nn.activations import shifted_softplus
from jaxatom.nn.checks import check_representation
from jaxatom.nn.heads import Atomwise, check_head
from jaxatom.nn.model import EnergyModel
from jaxatom.nn.painn import PaiNN
from jaxatom.nn.radial import BesselRBF, GaussianRBF, cosine_cutoff, mollifier_cutoff
from jaxatom.nn.schnet import SchNet

__all__ = [
    "SchNet",
    "PaiNN",
    "Atomwise",
    "EnergyModel",
    "GaussianRBF",
    "BesselRBF",
    "cosine_cutoff",
    "mollifier_cutoff",
    "shifted_softplus",
    "check_representation",
    "check_head",
]
