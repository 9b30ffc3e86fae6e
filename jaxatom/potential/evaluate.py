"""Pure device functions: every output of a model on a Graph, scaled, with forces (-dE/dR) and stress
((1/V) dE/d(strain)) of the energy.

``scaling`` is a pytree ``{name: {"scale": [], "offsets": [100]}}`` (see :meth:`Potential.scaling_arrays`): the
output ``name`` (and every output whose :attr:`~jaxatom.nn.OutputSpec.scaling` is ``name``) becomes
``scale * raw + offsets`` — per atom ``offsets[Z_i]``; per structure their sum (``"sum"``) or mean (``"avg"``).
Offsets ``[fidelities, 100]`` (multi-fidelity outputs) are taken at each structure's ``graph.fidelity``.
Names absent from ``scaling`` are returned raw.

``field`` (``[G, 3]`` V/Å, optional) puts each structure in a uniform electric field: the energy becomes
``E − μ·F − ½ F·α·F / k_e`` (:mod:`jaxatom.potential.field`) and the forces include the field terms.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxatom.graph import Graph
from jaxatom.nn.heads import OutputSpec, atom_fidelities
from jaxatom.potential.field import field_energy

__all__ = ["evaluate", "evaluate_jit", "cast_params", "scale_outputs"]

Scaling = dict[str, dict[str, jax.Array]]


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


def _trailing(values: jax.Array, ndim: int) -> jax.Array:
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def scale_outputs(specs: tuple[OutputSpec, ...], raw: dict, graph: Graph, scaling: Scaling) -> dict[str, jax.Array]:
    """``raw`` model outputs with each one's scale and offsets applied (see the module docstring)."""
    out = dict(raw)
    for spec in specs:
        if spec.scaling not in scaling:
            continue
        scale, table = scaling[spec.scaling]["scale"], scaling[spec.scaling]["offsets"]
        value = raw[spec.name]
        table = table.astype(value.dtype)
        per_atom = table[graph.species] if table.ndim == 1 else table[atom_fidelities(graph, len(table)), graph.species]
        atom_offsets = per_atom * graph.node_mask
        if not spec.per_atom:
            total = jax.ops.segment_sum(atom_offsets, graph.node_graph, num_segments=graph.n_graph)
            atom_offsets = total / jnp.maximum(graph.n_node, 1) if spec.aggregation == "avg" else total
        out[spec.name] = scale.astype(value.dtype) * value + _trailing(atom_offsets, value.ndim)
    return out


def evaluate(
    model: nn.Module, params, graph: Graph, scaling: Scaling, with_stress: bool = False, field: jax.Array | None = None
) -> dict:
    """Every output of ``model`` for a padded batch, in the dtype of ``graph.positions``.

    Args:
        model: an :class:`~jaxatom.nn.AtomisticModel`.
        params: its parameters (cast to the positions' dtype).
        graph: the padded batch.
        scaling: per-output scale and offsets (module docstring); offsets of zero leave them out.
        with_stress: also return ``stress [G, 3, 3]`` (eV/Å³; zero where the cell has no volume).
        field: uniform electric field per structure ``[G, 3]`` (V/Å), or None. The model needs energy and dipole
            heads (:func:`~jaxatom.potential.field.check_field_model`); ``energy`` then includes the field energy.

    Returns:
        The model's outputs (per structure ``[G, ...]``, per atom ``[N, ...]``, e.g. ``energy [G]`` eV,
        ``energies [N]`` eV, ``dipole_moment [G, 3]`` e·Å, ``charges [N]`` e), the representation's ``scalar`` /
        ``vector`` features and, for models with an energy, ``forces [N, 3]`` (eV/Å) and optionally ``stress``.
        Entries of padding atoms and graphs are zero or meaningless.
    """
    dtype = graph.positions.dtype
    params = cast_params(params, dtype)
    specs = model.outputs
    strain = jnp.zeros((graph.n_graph, 3, 3), dtype)

    def outputs(positions, strain):
        g = graph.replace(positions=positions)
        if with_stress:
            g = _strained(g, strain)
        out = scale_outputs(specs, model.apply(params, g), graph, scaling)
        if field is not None:
            out["energy"] = out["energy"] + field_energy(out, field.astype(dtype))
        return out

    if "energy" not in {spec.name for spec in specs}:
        return outputs(graph.positions, strain)

    def total_energy(positions, strain):
        out = outputs(positions, strain)
        return jnp.sum(jnp.where(graph.graph_mask, out["energy"], 0.0)), out

    argnums = (0, 1) if with_stress else 0
    grads, out = jax.grad(total_energy, argnums=argnums, has_aux=True)(graph.positions, strain)
    grad_positions = grads[0] if with_stress else grads
    if with_stress:
        volume = jnp.abs(jnp.linalg.det(graph.cell))
        safe_volume = jnp.where(volume > 0, volume, 1.0)
        out["stress"] = jnp.where(volume[:, None, None] > 0, grads[1] / safe_volume[:, None, None], 0.0)
    out["forces"] = -grad_positions
    return out


#: :func:`evaluate` jitted, with the model and the stress switch static; one compile per model and padded shape.
evaluate_jit = jax.jit(evaluate, static_argnames=("model", "with_stress"))
