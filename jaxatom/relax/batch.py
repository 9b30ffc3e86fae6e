"""The compiled part of a batched relaxation: a ``lax.while_loop`` of FIRE steps over a padded batch.

The degrees of freedom of a batch with ``N`` padded atoms and ``G`` graph slots are ``N + 3G`` rows: the reference
positions (:mod:`~jaxatom.relax.cell`), then ``cell_factor · F`` of every graph (three rows each). Each row belongs
to one structure (its FIRE segment). One iteration evaluates the model on the deformed graph, forms the generalised
forces, marks structures whose largest row force is below ``fmax`` (or that used up their steps) as done, and moves
the others by one FIRE step. A structure that may have moved far enough to leave its neighbour list
(:func:`~jaxatom.relax.cell.skin_used` above the skin) waits, untouched and with the results of its last valid
evaluation, while the others go on; the loop stops after ``chunk`` iterations, when no structure can move, or when a
quarter of the unfinished structures wait, and the host rebuilds their lists before any force is computed from a
stale one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from jaxatom.graph import Graph
from jaxatom.potential.ensemble import evaluate_ensemble
from jaxatom.potential.evaluate import evaluate
from jaxatom.relax.cell import deformed_graph, generalised_forces, skin_used
from jaxatom.relax.fire import FireState, fire

__all__ = ["ChunkSettings", "ChunkLimits", "RelaxState", "run_chunk", "run_chunk_jit", "split_dof"]


@dataclasses.dataclass(frozen=True)
class ChunkSettings:
    """Everything static about a compiled chunk (hashable; one compile per settings and padded shape)."""

    model: Any
    ensemble: bool
    mode: str
    fire_options: tuple[tuple[str, float], ...] = ()


@struct.dataclass
class ChunkLimits:
    """The numbers a chunk runs under, as device scalars (changing them does not recompile): force threshold
    ``fmax`` (eV/Å), ``max_steps`` per structure, the model's ``cutoff`` and the lists' ``skin`` (Å), and the most
    iterations of one chunk, ``chunk``."""

    fmax: jax.Array
    max_steps: jax.Array
    cutoff: jax.Array
    skin: jax.Array
    chunk: jax.Array


@struct.dataclass
class RelaxState:
    """The loop's carry. Per structure ``[G]``: ``energy`` (eV, without the energy's offsets), ``max_force`` (largest
    generalised force row, eV/Å), ``stress [G, 3, 3]`` (eV/Å³), ``done``, ``converged``, ``rebuild`` (its list must be
    rebuilt before the next force call); per atom ``forces [N, 3]`` (eV/Å) of the last evaluation."""

    fire: FireState
    energy: jax.Array
    forces: jax.Array
    stress: jax.Array
    max_force: jax.Array
    converged: jax.Array
    done: jax.Array
    rebuild: jax.Array


def split_dof(positions: jax.Array, n_node: int, cell_factor: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reference positions ``[N, 3]`` and deformation gradients ``[G, 3, 3]`` from the rows of the DOF array."""
    deformation = positions[n_node:].reshape(-1, 3, 3) / cell_factor[:, None, None]
    return positions[:n_node], deformation


def _outputs(settings: ChunkSettings, params, scaling, graph: Graph) -> dict:
    with_stress = settings.mode != "fixed"
    if settings.ensemble:
        out = evaluate_ensemble(settings.model, params, graph, scaling, with_stress)
        return {key: jnp.mean(value, axis=0) for key, value in out.items()}
    return evaluate(settings.model, params, graph, scaling, with_stress)


def run_chunk(
    state: RelaxState,
    reference: Graph,
    built_positions: jax.Array,
    built_deformation: jax.Array,
    params,
    scaling,
    pressure: jax.Array,
    cell_factor: jax.Array,
    limits: ChunkLimits,
    settings: ChunkSettings,
) -> RelaxState:
    """Up to ``limits.chunk`` FIRE iterations of the batch (see the module docstring)."""
    optimiser = fire(**dict(settings.fire_options))
    n_node, n_graph = reference.positions.shape[0], reference.n_graph
    real = reference.graph_mask

    def body(carry):
        state, i = carry
        waiting = state.rebuild  # moved past their skin: forces from the stale list would be wrong, so they wait
        positions, deformation = split_dof(state.fire.positions, n_node, cell_factor)
        graph = deformed_graph(reference, positions, deformation)
        out = _outputs(settings, params, scaling, graph)
        stress = out.get("stress")
        atom_rows, cell_rows = generalised_forces(
            graph, out["forces"], stress, deformation, pressure, cell_factor, settings.mode
        )
        rows = jnp.concatenate([atom_rows, cell_rows.reshape(-1, 3)])
        norms = jnp.sqrt(jnp.sum(rows * rows, axis=1))
        max_force = jnp.maximum(jax.ops.segment_max(norms, state.fire.segments, num_segments=n_graph), 0.0)
        converged = real & (max_force < limits.fmax)
        done = (converged | (state.fire.n_steps >= limits.max_steps) | ~real) & ~waiting
        moved = optimiser.step(state.fire, rows, ~done & ~waiting)
        new_positions, new_deformation = split_dof(moved.positions, n_node, cell_factor)
        used = skin_used(reference, new_positions, new_deformation, built_positions, built_deformation, limits.cutoff)
        node_waiting = waiting[reference.node_graph][:, None]
        forces = jnp.where(graph.node_mask[:, None], out["forces"], 0.0)
        stress = jnp.zeros((n_graph, 3, 3), rows.dtype) if stress is None else stress
        state = RelaxState(
            fire=moved,
            energy=jnp.where(waiting, state.energy, out["energy"]),
            forces=jnp.where(node_waiting, state.forces, forces),
            stress=jnp.where(waiting[:, None, None], state.stress, stress),
            max_force=jnp.where(waiting, state.max_force, max_force),
            converged=jnp.where(waiting, state.converged, converged),
            done=done,
            rebuild=waiting | (real & ~done & (used > limits.skin)),
        )
        return state, i + 1

    def cond(carry):
        # go on while some structure can move, until the chunk ends or a quarter of the open ones wait for new lists
        state, i = carry
        n_open = jnp.sum(~state.done)
        n_waiting = jnp.sum(state.rebuild)
        return (i < limits.chunk) & (n_open > n_waiting) & (4 * n_waiting <= n_open)

    state, _ = jax.lax.while_loop(cond, body, (state, jnp.asarray(0, jnp.int32)))
    return state


#: :func:`run_chunk` jitted with the settings static.
run_chunk_jit = jax.jit(run_chunk, static_argnames=("settings",))
