"""The cell as a degree of freedom: structures in a reference frame times a deformation gradient per structure.

As ASE's ``UnitCellFilter``, each structure is described by positions ``u`` in its starting (reference) cell and a
deformation gradient ``F`` (``[3, 3]``, identity at the start): the actual positions are ``r_i = F u_i``, the cell
vectors (rows) ``a_k → F a_k`` and the periodic image shifts of the edges likewise. The optimiser moves ``u`` and
``cell_factor · F`` (``cell_factor`` = number of atoms, ASE's default), driven by the generalised forces

* on ``u_i``: ``Fᵀ f_i`` (eV/Å), the chain rule of ``r_i = F u_i``;
* on ``F``: ``−∂(E + P V)/∂F = −V (σ + P 1) F⁻ᵀ`` divided by ``cell_factor``, with ``σ = (1/V) ∂E/∂ε`` the stress
  (eV/Å³, ASE's sign: positive when the cell wants to shrink) and ``P`` the target pressure (eV/Å³). ``"isotropic"``
  keeps its trace part ``(tr G / 3) 1`` (the cell scales uniformly, shape kept), ``"full"`` all nine components,
  ``"fixed"`` none.

At a stationary point of ``E + PV`` the forces vanish and ``σ = −P 1`` (``"full"``) or ``tr σ / 3 = −P``
(``"isotropic"``). ASE's ``FrechetCellFilter`` uses ``log F`` instead of ``F``: same minimum, another path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxatom.graph import Graph

__all__ = ["CELL_MODES", "deformed_graph", "generalised_forces", "skin_used"]

#: How the cell may change: not at all, by a uniform scale, or freely (nine components).
CELL_MODES = ("fixed", "isotropic", "full")


def deformed_graph(reference: Graph, positions: jax.Array, deformation: jax.Array) -> Graph:
    """The actual graph: reference ``positions [N, 3]`` (Å), shifts and cells mapped by ``deformation [G, 3, 3]``."""
    node_f = deformation[reference.node_graph]
    edge_f = deformation[reference.node_graph[reference.receivers]]
    return reference.replace(
        positions=jnp.einsum("nij,nj->ni", node_f, positions),
        shifts=jnp.einsum("eij,ej->ei", edge_f, reference.shifts),
        cell=jnp.einsum("gij,gkj->gki", deformation, reference.cell),
    )


def generalised_forces(
    graph: Graph,
    forces: jax.Array,
    stress: jax.Array | None,
    deformation: jax.Array,
    pressure: jax.Array,
    cell_factor: jax.Array,
    mode: str,
) -> tuple[jax.Array, jax.Array]:
    """Forces on the reference positions ``[N, 3]`` (eV/Å) and on ``cell_factor · F`` ``[G, 3, 3]``.

    ``graph`` is the actual (deformed) graph, ``forces [N, 3]`` its atomic forces (eV/Å), ``stress [G, 3, 3]``
    (eV/Å³, or None with ``mode="fixed"``), ``pressure [G]`` and ``cell_factor [G]``. Padding rows are zero.
    """
    forces = jnp.where(graph.node_mask[:, None], forces, 0.0)
    atom_rows = jnp.einsum("nji,nj->ni", deformation[graph.node_graph], forces)
    if mode == "fixed":
        return atom_rows, jnp.zeros_like(deformation)
    volume = jnp.abs(jnp.linalg.det(graph.cell))
    eye = jnp.eye(3, dtype=forces.dtype)
    virial = -volume[:, None, None] * (stress + pressure[:, None, None] * eye)
    cell_rows = virial @ jnp.swapaxes(jnp.linalg.inv(deformation), 1, 2)
    if mode == "isotropic":
        cell_rows = jnp.trace(cell_rows, axis1=1, axis2=2)[:, None, None] / 3 * eye
    cell_rows = cell_rows / cell_factor[:, None, None]
    return atom_rows, jnp.where(graph.graph_mask[:, None, None], cell_rows, 0.0)


def skin_used(
    reference: Graph,
    positions: jax.Array,
    deformation: jax.Array,
    built_positions: jax.Array,
    built_deformation: jax.Array,
    cutoff: float,
) -> jax.Array:
    """``[G]`` upper bound (Å) on how much any pair distance changed since the neighbour list was built.

    A list built with ``cutoff + skin`` stays complete while this stays below ``skin``. With ``w_i`` the reference
    positions mapped by the deformation at the build and ``M = F F_b⁻¹`` the deformation since, a pair within the
    cutoff now moved by at most ``2 max_i |w_i − r_i(build)| + cutoff ‖M − 1‖₂ ‖M⁻¹‖₂``; the second term is zero
    for a fixed cell.
    """
    node_fb = built_deformation[reference.node_graph]
    moved = jnp.einsum("nij,nj->ni", node_fb, positions - built_positions)
    moved = jnp.where(reference.node_mask, jnp.sqrt(jnp.sum(moved * moved, axis=1)), 0.0)
    largest = jax.ops.segment_max(moved, reference.node_graph, num_segments=reference.n_graph)
    largest = jnp.maximum(largest, 0.0)
    relative = deformation @ jnp.linalg.inv(built_deformation)
    strain = _spectral_norm(relative - jnp.eye(3, dtype=relative.dtype))
    return 2 * largest + cutoff * strain * _spectral_norm(jnp.linalg.inv(relative))


def _spectral_norm(matrices: jax.Array) -> jax.Array:
    """``[G]`` largest singular value of ``[G, 3, 3]`` matrices (eigenvalues of ``AᵀA``, no SVD gradient needed)."""
    gram = jnp.swapaxes(matrices, 1, 2) @ matrices
    return jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(gram)[:, -1], 0.0))
