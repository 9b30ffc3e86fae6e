"""Output heads that turn atom features into per-atom and per-structure predictions."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxatom.graph import Graph
from jaxatom.nn.layers import MLP, pyramid_widths

__all__ = ["Atomwise", "AGGREGATIONS"]

AGGREGATIONS = ("sum", "avg")


class Atomwise(nn.Module):
    """SchNetPack's ``Atomwise``: an MLP on each atom's scalar features, then summed or averaged per structure.

    ``n_hidden=None`` gives the pyramidal MLP (width halves per layer). Returns ``(per_atom [N, n_out],
    per_graph [G, n_out])``; padding atoms are zeroed and land in the dummy graph.
    """

    n_out: int = 1
    n_hidden: int | Sequence[int] | None = None
    n_layers: int = 2
    activation: str = "silu"
    aggregation: str = "sum"

    @nn.compact
    def __call__(self, x: jax.Array, graph: Graph) -> tuple[jax.Array, jax.Array]:
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.aggregation!r}; choose one of {AGGREGATIONS}")
        widths = pyramid_widths(x.shape[-1], self.n_out, self.n_hidden, self.n_layers)
        y = MLP(widths, self.activation, name="outnet")(x) * graph.node_mask[:, None]
        total = jax.ops.segment_sum(y, graph.node_graph, num_segments=graph.n_graph)
        if self.aggregation == "avg":
            total = total / jnp.maximum(graph.n_node, 1)[:, None].astype(total.dtype)
        return y, total
