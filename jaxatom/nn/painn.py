"""PaiNN (Schütt, Unke, Gastegger 2021) with SchNetPack 2.x's exact layout, parameters and initialisation."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxatom.graph import Graph
from jaxatom.nn.activations import get_activation
from jaxatom.nn.checks import check_representation
from jaxatom.nn.layers import Dense, safe_norm, split_last
from jaxatom.nn.radial import expand_distances
from jaxatom.nn.schnet import MAX_Z

__all__ = ["PaiNN", "PaiNNFilter", "PaiNNInteraction", "PaiNNMixing"]


class PaiNNInteraction(nn.Module):
    """Equivariant message passing. Scalars ``q [N, F]``, vectors ``mu [N, 3, F]``, filters ``w [E, 3F]``."""

    n_atom_basis: int
    activation: str = "silu"

    @nn.compact
    def __call__(self, q, mu, w, unit, graph: Graph):
        f = self.n_atom_basis
        x = Dense(f, name="context_0")(q)
        x = Dense(3 * f, name="context_1")(get_activation(self.activation)(x))
        messages = dense_messages if graph.dense else sparse_messages
        dq, dmu = messages(x, w, unit, mu, graph)
        return q + dq, mu + dmu


def sparse_messages(x, w, unit, mu, graph: Graph) -> tuple[jax.Array, jax.Array]:
    """PaiNN's summed messages ``(Δq [N, F], Δμ [N, 3, F])`` over an edge list: context ``x [N, 3F]``, filters
    ``w [E, 3F]``, unit vectors ``unit [E, 3]``, vectors ``mu [N, 3, F]``."""
    f = mu.shape[-1]
    dq, dmu_r, dmu_mu = split_last(w * x[graph.senders], (f, f, f))
    dmu = dmu_r[:, None, :] * unit[:, :, None] + dmu_mu[:, None, :] * mu[graph.senders]
    n = x.shape[0]
    dq = jax.ops.segment_sum(dq, graph.receivers, num_segments=n)
    return dq, jax.ops.segment_sum(dmu, graph.receivers, num_segments=n)


def dense_messages(x, w, unit, mu, graph: Graph) -> tuple[jax.Array, jax.Array]:
    """:func:`sparse_messages` on dense blocks (:attr:`Graph.blocks`): sums over slots ``j`` are reductions instead
    of scatter-adds."""
    f = mu.shape[-1]
    dq, dmu_r, dmu_mu = split_last(graph.pairs(w) * graph.to_blocks(x)[:, None], (f, f, f))  # [B, M, M, F] each
    unit, mu = graph.pairs(unit), graph.to_blocks(mu)[:, None]  # [B, M, M, 3] and [B, 1, M, 3, F]
    # one reduction over j per Cartesian component: each product fuses into its sum, no [B, M, M, 3, F] temporaries
    dmu = jnp.stack([jnp.sum(dmu_r * unit[..., c, None] + dmu_mu * mu[..., c, :], axis=2) for c in range(3)], axis=2)
    return graph.from_blocks(jnp.sum(dq, axis=2)), graph.from_blocks(dmu)


class PaiNNMixing(nn.Module):
    """Atom-wise mixing of scalar and vector channels; ``epsilon`` stabilises the vector norm's square root."""

    n_atom_basis: int
    activation: str = "silu"
    epsilon: float = 1e-8

    @nn.compact
    def __call__(self, q, mu):
        f = self.n_atom_basis
        mu_mix = Dense(2 * f, use_bias=False, name="mu_channel_mix")(mu)
        mu_v, mu_w = split_last(mu_mix, (f, f))
        mu_v_norm = jnp.sqrt(jnp.sum(mu_v**2, axis=1) + self.epsilon)
        x = Dense(f, name="context_0")(jnp.concatenate([q, mu_v_norm], axis=-1))
        x = Dense(3 * f, name="context_1")(get_activation(self.activation)(x))
        dq, dmu, dqmu = split_last(x, (f, f, f))
        q = q + dq + dqmu * jnp.sum(mu_v * mu_w, axis=1)
        mu = mu + dmu[:, None, :] * mu_w
        return q, mu


class PaiNNFilter(nn.Module):
    """SchNetPack's ``filter_net``: ``Dense(n_sets * width)`` on the radial basis times the cutoff, cut into one
    ``[E, width]`` filter per block (block ``b`` uses set ``b``, or set 0 when ``n_sets == 1``).

    Same ``kernel``/``bias`` parameters (names, shapes, initialisation) as ``Dense``, but each block multiplies the
    basis by its own slice of the kernel: the edge-sized ``[E, n_sets * width]`` product is never built or sliced,
    so its gradient is no zero-padded full-width copy per block.
    """

    width: int
    n_sets: int
    n_blocks: int

    @nn.compact
    def __call__(self, rbf: jax.Array, fcut: jax.Array) -> list[jax.Array]:
        n_out = self.n_sets * self.width
        kernel = self.param("kernel", nn.initializers.xavier_uniform(), (rbf.shape[-1], n_out))
        bias = self.param("bias", nn.initializers.zeros, (n_out,))
        kernel, bias = kernel.astype(rbf.dtype), bias.astype(rbf.dtype)
        filters = []
        for b in range(self.n_blocks):
            lo = self.width * (0 if self.n_sets == 1 else b)
            w = jnp.dot(rbf, kernel[:, lo : lo + self.width]) + bias[lo : lo + self.width]
            filters.append(w * fcut[:, None])
        return filters


class PaiNN(nn.Module):
    """PaiNN representation: ``Graph -> {"scalar": [N, F], "vector": [N, 3, F]}``.

    Attributes mirror ``schnetpack.representation.PaiNN``: ``n_atom_basis`` features, ``n_interactions`` blocks,
    ``shared_interactions``, ``shared_filters``, ``activation``, ``epsilon``; the radial basis
    (``"gaussian"``/``"bessel"``, ``n_rbf`` functions) and cutoff function (``"cosine"``/``"mollifier"``) are
    chosen by name with ``cutoff`` in Å. The basis spans ``rbf_start``..``rbf_cutoff`` (default: the cutoff), as
    SchNetPack's ``GaussianRBF(start, cutoff)`` may differ from the cutoff function's radius.
    """

    #: whether the features include ``vector [N, 3, F]`` (needed by ``Polarizability`` and vector dipoles)
    has_vector_features = True
    #: whether MD's ``neighbors="auto"`` runs molecules on dense blocks (measured 0.79–1.01× the speed of all-pairs
    #: lists on CPU, so no; ``docs/performance.md``)
    md_dense_blocks = False

    n_atom_basis: int = 128
    n_interactions: int = 3
    cutoff: float = 5.0
    n_rbf: int = 20
    shared_interactions: bool = False
    shared_filters: bool = False
    activation: str = "silu"
    epsilon: float = 1e-8
    radial_basis: str = "gaussian"
    cutoff_fn: str = "cosine"
    trainable_rbf: bool = False
    rbf_start: float = 0.0
    rbf_cutoff: float | None = None

    def __post_init__(self) -> None:
        check_representation(self)  # refuse unusable settings before any parameter is made
        super().__post_init__()

    @nn.compact
    def __call__(self, graph: Graph) -> dict[str, jax.Array]:
        f, k = self.n_atom_basis, self.n_interactions
        r = graph.edge_vectors(first_half=graph.reverse_halves)
        d = safe_norm(r)
        unit = r / jnp.where(d == 0, 1.0, d)[:, None]
        rbf, fcut = expand_distances(self, d)
        n_filter_sets = 1 if self.shared_filters else k
        filter_list = PaiNNFilter(3 * f, n_filter_sets, k, name="filter_net")(rbf, fcut)
        if graph.reverse_halves:  # second half: the same pairs reversed, same filters, opposite directions
            unit = jnp.concatenate([unit, -unit])
            filter_list = [jnp.concatenate([w, w]) for w in filter_list]

        q = nn.Embed(MAX_Z, f, embedding_init=nn.initializers.normal(1.0), name="embedding")(graph.species)
        mu = jnp.zeros((q.shape[0], 3, f), q.dtype)
        if self.shared_interactions:
            interactions = [PaiNNInteraction(f, self.activation, name="interaction")] * k
            mixings = [PaiNNMixing(f, self.activation, self.epsilon, name="mixing")] * k
        else:
            interactions = [PaiNNInteraction(f, self.activation, name=f"interactions_{b}") for b in range(k)]
            mixings = [PaiNNMixing(f, self.activation, self.epsilon, name=f"mixing_{b}") for b in range(k)]
        for interaction, mixing, w in zip(interactions, mixings, filter_list, strict=True):
            q, mu = interaction(q, mu, w, unit, graph)
            q, mu = mixing(q, mu)
        return {"scalar": q, "vector": mu}
