"""Pure device functions: energy, per-atom energies, forces (-dE/dR) and stress ((1/V) dE/d(strain)) of a Graph."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxatom.graph import Graph

__all__ = ["evaluate", "evaluate_jit", "cast_params"]


def cast_params(params, dtype):
    """Cast every floating parameter to ``dtype`` (a no-op under jit when they already match)."""
    return jax.tree.map(lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params)


def _strained(graph: Graph, strain: jax.Array) -> Graph:
    """Apply the symmetric part of ``strain [G, 3, 3]`` to positions, shifts and cells (x -> x (1 + eps))."""
    eps = 0.5 * (strain + jnp.swapaxes(strain, 1, 2))
    node_eps = eps[graph.node_graph]
    edge_eps = eps[graph.node_graph[graph.receivers]]
    return graph.replace(
        positions=graph.positions + jnp.einsum("ni,nij->nj", graph.positions, node_eps),
        shifts=graph.shifts + jnp.einsum("ei,eij->ej", graph.shifts, edge_eps),
        cell=graph.cell + jnp.einsum("gki,gij->gkj", graph.cell, eps),
    )


def evaluate(
    model: nn.Module,
    params,
    graph: Graph,
    energy_scale: jax.Array,
    atom_offsets: jax.Array,
    with_stress: bool = False,
) -> dict[str, jax.Array]:
    """Energy and its derivatives for a padded batch, in the dtype of ``graph.positions``.

    Args:
        model: an :class:`~jaxatom.nn.EnergyModel`.
        params: its parameters (cast to the positions' dtype).
        graph: the padded batch.
        energy_scale: scalar multiplying the model energy.
        atom_offsets: ``[100]`` energy (eV) added per atom of each atomic number (mean per atom + reference energies);
            zeros to get the energy without offsets.
        with_stress: also return ``stress [G, 3, 3]`` (eV/Å³; zero where the cell has no volume).

    Returns:
        ``energy [G]`` (eV), ``energies [N]`` (eV), ``forces [N, 3]`` (eV/Å), optionally ``stress``, and the
        representation's ``scalar``/``vector`` features. Entries of padding atoms and graphs are zero or meaningless.
    """
    dtype = graph.positions.dtype
    params = cast_params(params, dtype)
    offsets = atom_offsets.astype(dtype)[graph.species] * graph.node_mask
    strain = jnp.zeros((graph.n_graph, 3, 3), dtype)

    def total_energy(positions, strain):
        g = graph.replace(positions=positions)
        if with_stress:
            g = _strained(g, strain)
        out = model.apply(params, g)
        out["energies"] = energy_scale * out["energies"] + offsets
        out["energy"] = energy_scale * out["energy"] + jax.ops.segment_sum(
            offsets, graph.node_graph, num_segments=graph.n_graph
        )
        return jnp.sum(jnp.where(graph.graph_mask, out["energy"], 0.0)), out

    argnums = (0, 1) if with_stress else 0
    grads, out = jax.grad(total_energy, argnums=argnums, has_aux=True)(graph.positions, strain)
    if with_stress:
        grad_positions, grad_strain = grads
        volume = jnp.abs(jnp.linalg.det(graph.cell))
        safe_volume = jnp.where(volume > 0, volume, 1.0)
        out["stress"] = jnp.where(volume[:, None, None] > 0, grad_strain / safe_volume[:, None, None], 0.0)
    else:
        grad_positions = grads
    out["forces"] = -grad_positions
    return out


#: :func:`evaluate` jitted, with the model and the stress switch static; one compile per model and padded shape.
evaluate_jit = jax.jit(evaluate, static_argnames=("model", "with_stress"))
