"""A representation and an energy head joined into one flax model: ``apply(params, graph) -> {"energy": [G], ...}``."""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxatom.graph import Graph
from jaxatom.nn.heads import Atomwise

__all__ = ["EnergyModel"]


class EnergyModel(nn.Module):
    """Energy (in the model's scaled units, without reference offsets) from a representation and an ``Atomwise`` head.

    Returns ``energy [G]``, per-atom ``energies [N]`` and the representation's features (``scalar [N, F]`` and, for
    equivariant models, ``vector [N, 3, F]``).
    """

    representation: nn.Module
    head: Atomwise = Atomwise()

    @nn.compact
    def __call__(self, graph: Graph) -> dict[str, jax.Array]:
        features = self.representation(graph)
        per_atom, per_graph = self.head(features["scalar"], graph)
        return {"energy": per_graph[:, 0], "energies": per_atom[:, 0], **features}
