"""Output heads that turn atom features into per-atom and per-structure predictions."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxatom.errors import ConfigError
from jaxatom.graph import Graph
from jaxatom.nn.activations import ACTIVATIONS
from jaxatom.nn.checks import choice_problems, count_problems
from jaxatom.nn.layers import MLP, pyramid_widths

__all__ = ["Atomwise", "AGGREGATIONS", "check_head"]

AGGREGATIONS = ("sum", "avg")


def check_head(head: Atomwise) -> None:
    """Raise a :class:`ConfigError` listing every unusable setting of an ``Atomwise`` head."""
    problems = count_problems("n_out", head.n_out) + count_problems("n_layers", head.n_layers)
    hidden = head.n_hidden
    widths = [] if hidden is None else list(hidden) if isinstance(hidden, Sequence) else [hidden]
    if any(count_problems("n_hidden", width) for width in widths):
        problems.append(f"n_hidden must be None, a positive integer or a list of them, got {hidden!r}")
    problems += choice_problems("activation", head.activation, tuple(ACTIVATIONS))
    problems += choice_problems("aggregation", head.aggregation, AGGREGATIONS)
    if problems:
        raise ConfigError("invalid Atomwise settings: " + "; ".join(problems))


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

    def __post_init__(self) -> None:
        check_head(self)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, graph: Graph) -> tuple[jax.Array, jax.Array]:
        widths = pyramid_widths(x.shape[-1], self.n_out, self.n_hidden, self.n_layers)
        y = MLP(widths, self.activation, name="outnet")(x) * graph.node_mask[:, None]
        total = jax.ops.segment_sum(y, graph.node_graph, num_segments=graph.n_graph)
        if self.aggregation == "avg":
            total = total / jnp.maximum(graph.n_node, 1)[:, None].astype(total.dtype)
        return y, total
