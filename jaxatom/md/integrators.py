"""Classical integrators as ``init``/``step``/``conserved`` triples (the shape of jax-md's ``simulate``).

Every function works on a whole :class:`MDState` whose arrays carry a leading replica axis ``[R, N, 3]``; the force
call ``compute(positions, neighbors) -> (results, neighbors)`` evaluates all replicas at once, so an on-device
neighbour list can be rebuilt for all replicas under one unbatched condition. Randomness comes from one key per
replica, split every step, so a replica's trajectory does not depend on how many replicas run beside it.

Time step and friction are in ASE units here (the public API takes fs and 1/fs and converts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax_md import simulate

from jaxatom.md.state import BOLTZMANN, kinetic_energy

__all__ = ["MDState", "Integrator", "ComputeFn", "velocity_verlet", "langevin", "nose_hoover", "split_keys"]

#: ``compute(positions [R, ..., N, 3], neighbors, cell=None) -> ({"energy": [R, ...], "forces": [R, ..., N, 3],
#: ...}, neighbors)``; ``cell [R, 3, 3]`` for force fields whose cell changes (they also return ``stress``).
ComputeFn = Callable[..., tuple[dict, Any]]


@struct.dataclass
class MDState:
    """The full dynamical state of ``R`` replicas (a pytree; checkpointed whole).

    Attributes:
        positions: ``[R, N, 3]`` (``[R, P, N, 3]`` for ring polymers) unwrapped positions (Å).
        momenta: same shape, amu·Å per ASE time unit.
        forces: same shape, eV/Å, at ``positions``.
        potential_energy: ``[R]`` (``[R, P]``) eV.
        extras: further per-replica outputs of the force call (e.g. ensemble spread).
        key: ``[R, 2]`` one PRNG key per replica.
        thermostat: integrator-specific variables (Nosé–Hoover chain, ...), or ``None``.
        heat: ``[R]`` energy (eV) the thermostat has taken out of the system, for the conserved quantity.
        neighbors: the on-device neighbour list (batched over replicas), or ``None`` for all-pairs edges.
        overflow: ``[]`` bool, set when a neighbour list overflowed since the chunk started.
        step: ``[]`` int, MD steps done.
        cell: ``[R, 3, 3]`` cell rows (Å) of ensembles that change the cell (constant-pressure MD), else ``None``
            (a constant cell lives in the force field's edges).
        gate: the uncertainty gate's variables (``{"stopped": [R] bool}``, :mod:`jaxatom.md.gate`), else ``None``.
    """

    positions: jax.Array
    momenta: jax.Array
    forces: jax.Array
    potential_energy: jax.Array
    extras: dict
    key: jax.Array
    thermostat: Any
    heat: jax.Array
    neighbors: Any
    overflow: jax.Array
    step: jax.Array
    cell: jax.Array | None = None
    gate: dict | None = None


@dataclass(frozen=True)
class Integrator:
    """``init(state) -> state`` sets thermostat variables; ``step(state, compute) -> state`` advances one time
    step; ``conserved(state) -> [R]`` is the quantity the exact dynamics conserves (eV)."""

    init: Callable[[MDState], MDState]
    step: Callable[[MDState, ComputeFn], MDState]
    conserved: Callable[[MDState], jax.Array]
    name: str


def split_keys(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Split each replica's key: ``(new keys [R, 2], subkeys [R, 2])``."""
    pairs = jax.vmap(jax.random.split)(keys)
    return pairs[:, 0], pairs[:, 1]


def replica_normal(keys: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """Standard normal numbers ``[R, *shape]``, one independent stream per replica key."""
    return jax.vmap(lambda k: jax.random.normal(k, shape, dtype))(keys)


def _force_update(state: MDState, compute: ComputeFn, positions: jax.Array) -> MDState:
    results, neighbors = compute(positions, state.neighbors, state.cell)
    overflow = state.overflow
    if neighbors is not None:
        overflow = overflow | jnp.any(neighbors.did_buffer_overflow != 0)
    extras = {k: v for k, v in results.items() if k not in ("energy", "forces")}
    return state.replace(
        positions=positions,
        forces=results["forces"],
        potential_energy=results["energy"],
        extras=extras,
        neighbors=neighbors,
        overflow=overflow,
    )


def _kick(state: MDState, dt: float) -> MDState:
    return state.replace(momenta=state.momenta + dt * state.forces)


def velocity_verlet(masses: jax.Array, dt: float) -> Integrator:
    """NVE velocity Verlet; conserved quantity: total energy. ``masses`` ``[N]`` or ``[R, N]`` (amu)."""
    inv_m = 1.0 / masses[..., None]

    def step(state: MDState, compute: ComputeFn) -> MDState:
        state = _kick(state, 0.5 * dt)
        state = _force_update(state, compute, state.positions + dt * state.momenta * inv_m)
        return _kick(state, 0.5 * dt).replace(step=state.step + 1)

    def conserved(state: MDState) -> jax.Array:
        return state.potential_energy + kinetic_energy(state.momenta, masses)

    return Integrator(init=lambda s: s, step=step, conserved=conserved, name="nve")


def _replica_kT(temperature_K: float | tuple[float, ...], dtype) -> float | jax.Array:
    """``kT`` (eV): a number for one temperature, ``[R, 1, 1]`` for one temperature per replica."""
    if np.ndim(temperature_K) == 0:
        return BOLTZMANN * temperature_K
    return jnp.asarray(BOLTZMANN * np.asarray(temperature_K, np.float64), dtype)[:, None, None]


def langevin(
    masses: jax.Array,
    dt: float,
    temperature_K: float | tuple[float, ...],
    friction: float,
    atom_mask: jax.Array | None = None,
) -> Integrator:
    """Langevin NVT, BAOAB splitting (Leimkuhler & Matthews), friction in 1/ASE time.

    The O step is the exact Ornstein–Uhlenbeck update ``p <- c1 p + sqrt((1 - c1²) m kT) ξ`` with
    ``c1 = exp(-γ dt)``; the energy it exchanges is accumulated in ``heat`` so that ``E - heat`` is conserved up to
    the integrator's error. ``masses`` ``[N]``, or ``[R, N]`` with ``atom_mask [R, N]`` for padded replicas (padding
    atoms get no noise; each replica's real atoms draw the noise they would draw alone). ``temperature_K`` is one
    temperature or one per replica ``[R]`` (K).
    """
    kT = _replica_kT(temperature_K, masses.dtype)
    m = masses[..., None]
    c1 = jnp.exp(-friction * dt)
    c2 = jnp.sqrt((1.0 - c1**2) * kT * m)
    if atom_mask is not None:
        c2 = c2 * atom_mask[..., None]

    def step(state: MDState, compute: ComputeFn) -> MDState:
        state = _kick(state, 0.5 * dt)
        positions = state.positions + 0.5 * dt * state.momenta / m
        keys, sub = split_keys(state.key)
        noise = replica_normal(sub, state.momenta.shape[1:], state.momenta.dtype)
        before = kinetic_energy(state.momenta, masses)
        momenta = c1 * state.momenta + c2 * noise
        heat = state.heat - (kinetic_energy(momenta, masses) - before)
        positions = positions + 0.5 * dt * momenta / m
        state = _force_update(state.replace(momenta=momenta, key=keys, heat=heat), compute, positions)
        return _kick(state, 0.5 * dt).replace(step=state.step + 1)

    def conserved(state: MDState) -> jax.Array:
        return state.potential_energy + kinetic_energy(state.momenta, masses) + state.heat

    return Integrator(init=lambda s: s, step=step, conserved=conserved, name="langevin")


def nose_hoover(
    masses: jax.Array,
    dt: float,
    temperature_K: float,
    tau: float,
    dof: int | np.ndarray,
    chain_length: int = 3,
    chain_steps: int = 2,
    sy_steps: int = 3,
) -> Integrator:
    """Nosé–Hoover chain NVT (Martyna–Tuckerman–Klein), using jax-md's chain with Suzuki–Yoshida substeps.

    ``tau`` (ASE time) is the chain's oscillation period; ``dof`` the number of thermostatted degrees of freedom
    (``[R]`` per replica, with ``masses [R, N]``, for padded replicas of different structures).
    Conserved quantity: ``E + p_ξ0²/2Q0 + dof·kT·ξ0 + Σ_k (p_ξk²/2Qk + kT·ξk)``.
    """
    kT = BOLTZMANN * temperature_K
    chain = simulate.nose_hoover_chain(dt, chain_length, chain_steps, sy_steps, tau)
    chains = _Chains(chain, kT, dof) if np.ndim(dof) == 0 else _GroupedChains(chain, kT, np.asarray(dof))
    inv_m = 1.0 / masses[..., None]

    def init(state: MDState) -> MDState:
        return state.replace(thermostat=chains.init(kinetic_energy(state.momenta, masses)))

    def step(state: MDState, compute: ComputeFn) -> MDState:
        momenta, thermo = chains.half_step(state.momenta, state.thermostat)
        state = _kick(state.replace(momenta=momenta), 0.5 * dt)
        state = _force_update(state, compute, state.positions + dt * state.momenta * inv_m)
        state = _kick(state, 0.5 * dt)
        thermo = chains.with_kinetic_energy(thermo, kinetic_energy(state.momenta, masses))
        momenta, thermo = chains.half_step(state.momenta, thermo)
        return state.replace(momenta=momenta, thermostat=thermo, step=state.step + 1)

    def conserved(state: MDState) -> jax.Array:
        return chains.conserved(state.potential_energy + kinetic_energy(state.momenta, masses), state.thermostat)

    return Integrator(init=init, step=step, conserved=conserved, name="nose_hoover")


@dataclass(frozen=True)
class _Chains:
    """One jax-md Nosé–Hoover chain per replica, all with ``dof`` degrees of freedom (batched over replicas)."""

    chain: Any
    kT: float
    dof: int

    def init(self, kinetic: jax.Array):
        """Chains ``[R]`` at rest for replicas of kinetic energy ``kinetic [R]`` (eV)."""
        return jax.vmap(lambda k: self.chain.initialize(self.dof, k, self.kT))(kinetic)

    def half_step(self, momenta: jax.Array, chains) -> tuple[jax.Array, Any]:
        return jax.vmap(self.chain.half_step, in_axes=(0, 0, None))(momenta, chains, self.kT)

    def with_kinetic_energy(self, chains, kinetic: jax.Array):
        return chains.set(kinetic_energy=kinetic)

    def conserved(self, energy: jax.Array, chains) -> jax.Array:
        """``[R]`` the replicas' ``energy`` (eV) plus that of their chains, ``p_ξ0²/2Q0 + dof·kT·ξ0 + Σ_k (p_ξk²/2Qk
        + kT·ξk)``."""
        chain_energy = jnp.sum(chains.momentum**2 / (2 * chains.mass), axis=-1)
        thermal = self.dof * self.kT * chains.position[:, 0]
        return energy + chain_energy + thermal + self.kT * jnp.sum(chains.position[:, 1:], axis=-1)


@dataclass(frozen=True)
class _GroupedChains:
    """Chains of replicas with their own degrees of freedom ``dofs [R]``: jax-md keeps a chain's degrees of freedom
    static, so replicas of equal ``dof`` share one batched :class:`_Chains`; the state is a tuple of them."""

    chain: Any
    kT: float
    dofs: np.ndarray

    @property
    def groups(self) -> list[tuple[_Chains, np.ndarray]]:
        """``(chains, replica indices)`` per distinct number of degrees of freedom."""
        return [(_Chains(self.chain, self.kT, int(d)), np.flatnonzero(self.dofs == d)) for d in np.unique(self.dofs)]

    def init(self, kinetic: jax.Array) -> tuple:
        return tuple(chains.init(kinetic[index]) for chains, index in self.groups)

    def half_step(self, momenta: jax.Array, state: tuple) -> tuple[jax.Array, tuple]:
        moved = []
        for (chains, index), group in zip(self.groups, state, strict=True):
            group_momenta, group = chains.half_step(momenta[index], group)
            momenta = momenta.at[index].set(group_momenta)
            moved.append(group)
        return momenta, tuple(moved)

    def with_kinetic_energy(self, state: tuple, kinetic: jax.Array) -> tuple:
        groups = zip(self.groups, state, strict=True)
        return tuple(group.set(kinetic_energy=kinetic[index]) for (_, index), group in groups)

    def conserved(self, energy: jax.Array, state: tuple) -> jax.Array:
        for (chains, index), group in zip(self.groups, state, strict=True):
            energy = energy.at[index].set(chains.conserved(energy[index], group))
        return energy
