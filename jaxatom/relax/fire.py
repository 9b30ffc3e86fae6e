"""FIRE (Bitzek et al., PRL 97, 170201 (2006)) as a pure ``(init, step)`` pair, vectorised over structures.

The degrees of freedom are rows ``x [D, 3]``; ``segments [D]`` says which structure each row belongs to. Every
structure keeps its own time step, mixing factor α, count of downhill steps and velocity, so a batch of structures
relaxes exactly as each would alone. The update is ASE's ``ase.optimize.FIRE`` (same defaults, same order):

1. after the first step, with ``P = F·v`` summed over the structure: if ``P > 0``, ``v ← (1−α) v + α |v| F/|F|``
   and, after more than ``n_min`` such steps in a row, ``dt ← min(f_inc dt, dt_max)``, ``α ← f_alpha α``;
   otherwise ``v ← 0``, ``dt ← f_dec dt``, ``α ← alpha_start``;
2. ``v ← v + dt F``, ``Δx = dt v``, scaled down so that its norm over the structure is at most ``max_step`` (Å).

Units follow the degrees of freedom (forces in eV/Å, positions in Å, ``dt`` in ASE's FIRE units: it multiplies
forces as if masses were 1). ``step(state, forces, active)`` leaves structures with ``active == False`` untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

__all__ = ["FireState", "Fire", "fire"]


@struct.dataclass
class FireState:
    """FIRE's state for ``S`` structures whose degrees of freedom are ``D`` rows of 3.

    Attributes:
        positions: ``[D, 3]`` degrees of freedom.
        velocities: ``[D, 3]``.
        segments: ``[D]`` structure of each row.
        dt: ``[S]`` time step per structure.
        alpha: ``[S]`` mixing factor per structure.
        n_downhill: ``[S]`` consecutive steps with ``P > 0`` (ASE's ``Nsteps``).
        n_steps: ``[S]`` updates taken.
        n_segments: static number of structures ``S``.
    """

    positions: jax.Array
    velocities: jax.Array
    segments: jax.Array
    dt: jax.Array
    alpha: jax.Array
    n_downhill: jax.Array
    n_steps: jax.Array
    n_segments: int = struct.field(pytree_node=False, default=1)


class Fire(NamedTuple):
    """The ``init``/``step`` pair returned by :func:`fire`."""

    init: Callable[..., FireState]
    step: Callable[..., FireState]


def fire(
    dt_start: float = 0.1,
    dt_max: float = 1.0,
    n_min: int = 5,
    f_inc: float = 1.1,
    f_dec: float = 0.5,
    alpha_start: float = 0.1,
    f_alpha: float = 0.99,
    max_step: float = 0.2,
) -> Fire:
    """FIRE with ASE's defaults; returns ``init(positions, segments=None, n_segments=1)`` and
    ``step(state, forces, active=None)`` (pure, jit- and vmap-friendly)."""

    def init(positions: jax.Array, segments: jax.Array | None = None, n_segments: int = 1) -> FireState:
        positions = jnp.asarray(positions)
        dtype = positions.dtype
        if segments is None:
            segments = jnp.zeros(positions.shape[0], jnp.int32)
        return FireState(
            positions=positions,
            velocities=jnp.zeros_like(positions),
            segments=jnp.asarray(segments, jnp.int32),
            dt=jnp.full(n_segments, dt_start, dtype),
            alpha=jnp.full(n_segments, alpha_start, dtype),
            n_downhill=jnp.zeros(n_segments, jnp.int32),
            n_steps=jnp.zeros(n_segments, jnp.int32),
            n_segments=n_segments,
        )

    def step(state: FireState, forces: jax.Array, active: jax.Array | None = None) -> FireState:
        seg, n = state.segments, state.n_segments

        def total(rows):  # [D, 3] -> [S]: the sum over each structure's rows
            return jax.ops.segment_sum(jnp.sum(rows, axis=-1), seg, num_segments=n)

        f, v = forces.astype(state.positions.dtype), state.velocities
        power, f_norm, v_norm = total(f * v), jnp.sqrt(total(f * f)), jnp.sqrt(total(v * v))
        first = state.n_steps == 0
        downhill = (power > 0) & ~first
        uphill = (power <= 0) & ~first
        ratio = jnp.where(f_norm > 0, v_norm / jnp.where(f_norm > 0, f_norm, 1.0), 0.0)
        mixed = (1 - state.alpha[seg, None]) * v + state.alpha[seg, None] * ratio[seg, None] * f
        v = jnp.where(downhill[seg, None], mixed, jnp.where(uphill[seg, None], 0.0, v))
        speed_up = downhill & (state.n_downhill > n_min)
        dt = jnp.where(speed_up, jnp.minimum(state.dt * f_inc, dt_max), jnp.where(uphill, state.dt * f_dec, state.dt))
        alpha = jnp.where(speed_up, state.alpha * f_alpha, jnp.where(uphill, alpha_start, state.alpha))
        n_downhill = jnp.where(downhill, state.n_downhill + 1, jnp.where(uphill, 0, state.n_downhill))
        v = v + dt[seg, None] * f
        dx = dt[seg, None] * v
        norm = jnp.sqrt(total(dx * dx))
        dx = dx * jnp.where(norm > max_step, max_step / jnp.where(norm > 0, norm, 1.0), 1.0)[seg, None]
        if active is None:
            active = jnp.ones(n, bool)
        row = active[seg, None]
        return FireState(
            positions=jnp.where(row, state.positions + dx, state.positions),
            velocities=jnp.where(row, v, state.velocities),
            segments=seg,
            dt=jnp.where(active, dt, state.dt),
            alpha=jnp.where(active, alpha, state.alpha),
            n_downhill=jnp.where(active, n_downhill, state.n_downhill),
            n_steps=jnp.where(active, state.n_steps + 1, state.n_steps),
            n_segments=n,
        )

    return Fire(init, step)
