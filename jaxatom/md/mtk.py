"""Constant-pressure MD with a deterministic extended system: the Martyna–Tobias–Klein barostat with Nosé–Hoover
chains (MTTK; Martyna, Tobias & Klein, J. Chem. Phys. 101, 4177 (1994); Tuckerman et al., J. Phys. A 39, 5629
(2006)), isotropic or with a fully flexible cell.

The cell moves with a symmetric cell velocity ``ġ`` (``[3, 3]``, 1/ASE time): ``ḣ = ġ h`` for the lattice vectors
``h``, so the cell changes shape and size but never rotates. Isotropically ``ġ = (p_ε/W) I`` with ``ε = ln(V/V₀)/3``;
fully flexible ``ġ = p_g/W`` with a symmetric ``p_g``. The equations of motion (``N_f`` thermostatted degrees of
freedom, ``d = 3``) are

* ``ṙ = p/m + ġ r`` and ``ṗ = F − (ġ + Tr ġ/N_f) p − (p_ξ/Q) p``,
* ``ṗ_g = V (P_int − P₀ I) + (2K/N_f) I − (p_η/Q_η) p_g`` (isotropic: its trace drives ``p_ε``),

with ``P_int = (Σ p⊗p/m − V σ)/V`` from the stress ``σ`` of the potential (ASE's sign, ``(1/V) ∂E/∂ε``) and one
Nosé–Hoover chain on the particles (``ξ``) and one on the cell (``η``). They conserve
``U + K + P₀V + p_g²/2W + (chain energies)`` and are integrated by the time-reversible splitting of Tuckerman et al.
(jax-md's ``npt_nose_hoover``): chains ½ · cell kick ½ · particle kick ½ · drift 1 · particle kick ½ · cell kick ½ ·
chains ½, each part solved exactly. Units are ASE's inside (eV, Å, amu, ASE time); pressure in eV/Å³.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from jax_md import simulate

from jaxatom.md.barostats import instantaneous_pressure_tensor, volume
from jaxatom.md.integrators import ComputeFn, Integrator, MDState, _force_update
from jaxatom.md.state import BOLTZMANN, kinetic_energy

__all__ = ["MTKVariables", "mtk_barostat"]

#: Independent components of the symmetric cell momentum that the fully flexible cell's chain thermostats.
FLEXIBLE_CELL_DOF = 6


@struct.dataclass
class MTKVariables:
    """The barostat's and thermostats' variables of ``R`` replicas (``state.thermostat`` of :func:`mtk_barostat`).

    Attributes:
        particles: the particles' Nosé–Hoover chain (jax-md's, arrays ``[R, chain_length]``).
        cell: the cell momentum's Nosé–Hoover chain (same shapes).
        cell_momentum: ``p_ε [R]`` (isotropic) or the symmetric ``p_g [R, 3, 3]`` (fully flexible), eV·ASE time.
    """

    particles: simulate.NoseHooverChain
    cell: simulate.NoseHooverChain
    cell_momentum: jax.Array


def _exprel(x: jax.Array) -> jax.Array:
    """``(eˣ − 1)/x``, exact at and near 0."""
    small = jnp.abs(x) < 1e-3
    safe = jnp.where(small, 1.0, x)
    return jnp.where(small, 1.0 + x / 2 + x * x / 6, jnp.expm1(safe) / safe)


def _rotate(vectors: jax.Array, basis: jax.Array) -> jax.Array:
    """Row vectors ``[R, N, 3]`` in the eigenbasis ``[R, 3, 3]`` (columns) of the cell velocity: ``[R, N, 3]``."""
    return jnp.einsum("rni,rik->rnk", vectors, basis)


def _unrotate(vectors: jax.Array, basis: jax.Array) -> jax.Array:
    """Inverse of :func:`_rotate`."""
    return jnp.einsum("rnk,rik->rni", vectors, basis)


def _drift(state: MDState, cell_velocity: jax.Array, dt: float, inv_m: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Exact flow of ``ṙ = p/m + ġ r``, ``ḣ = ġ h`` over ``dt`` at fixed ``p`` and ``ġ [R, 3, 3]``:
    ``(positions [R, N, 3], cell [R, 3, 3])``."""
    rate, basis = jnp.linalg.eigh(cell_velocity)
    x = _rotate(state.positions, basis)
    v = _rotate(state.momenta * inv_m, basis)
    grow = jnp.exp(rate * dt)[:, None, :]
    positions = _unrotate(x * grow + dt * v * _exprel(rate * dt)[:, None, :], basis)
    cell = _unrotate(_rotate(state.cell, basis) * grow, basis)
    return positions, cell


def _particle_kick(momenta: jax.Array, forces: jax.Array, cell_velocity: jax.Array, dt: float, n_f: int) -> jax.Array:
    """Exact flow of ``ṗ = F − (ġ + Tr ġ/N_f) p`` over ``dt`` at fixed forces ``[R, N, 3]`` and ``ġ [R, 3, 3]``."""
    rate, basis = jnp.linalg.eigh(cell_velocity)
    friction = (rate + jnp.trace(cell_velocity, axis1=-2, axis2=-1)[:, None] / n_f)[:, None, :] * dt
    y, f = _rotate(momenta, basis), _rotate(forces, basis)
    return _unrotate(y * jnp.exp(-friction) + dt * f * _exprel(-friction), basis)


def _chain_energy(chain: simulate.NoseHooverChain, kT: float) -> jax.Array:
    """``[R]`` energy (eV) of a batched Nosé–Hoover chain: ``Σ p²/2Q + kT (dof·ξ₀ + Σ_{k>0} ξ_k)``."""
    kinetic = jnp.sum(chain.momentum**2 / (2 * chain.mass), axis=-1)
    return kinetic + kT * (chain.degrees_of_freedom * chain.position[:, 0] + jnp.sum(chain.position[:, 1:], -1))


def mtk_barostat(
    masses: jax.Array,
    dt: float,
    temperature_K: float,
    pressure: float,
    thermostat_tau: float,
    barostat_tau: float,
    dof: int,
    flexible: bool,
    chain_length: int = 3,
    chain_steps: int = 2,
    sy_steps: int = 3,
) -> Integrator:
    """MTTK isothermal–isobaric dynamics at ``pressure`` (eV/Å³) and ``temperature_K`` (K), isotropic or with a fully
    flexible, rotation-free cell (``flexible``).

    ``thermostat_tau`` and ``barostat_tau`` (ASE time) are the oscillation periods of the particle chain and of the
    cell (cell mass ``W = (N_f + 3) kT τ_b²``, divided by 3 when flexible; the cell's chain has the same period);
    ``dof`` is ``N_f``, the particles' thermostatted degrees of freedom. The chains use jax-md's Suzuki–Yoshida
    substeps (``chain_steps``, ``sy_steps``). The state must hold the cell; ``state.extras["stress"]`` is read.
    """
    kT = BOLTZMANN * temperature_K
    inv_m = 1.0 / masses[:, None]
    cell_mass = (dof + 3) * kT * barostat_tau**2 / (3 if flexible else 1)
    cell_dof = FLEXIBLE_CELL_DOF if flexible else 1
    particle_chain = simulate.nose_hoover_chain(dt, chain_length, chain_steps, sy_steps, thermostat_tau)
    cell_chain = simulate.nose_hoover_chain(dt, chain_length, chain_steps, sy_steps, barostat_tau)
    particle_half = jax.vmap(particle_chain.half_step, in_axes=(0, 0, None))
    cell_half = jax.vmap(cell_chain.half_step, in_axes=(0, 0, None))

    def cell_kinetic(momentum: jax.Array) -> jax.Array:
        return 0.5 * jnp.sum(momentum.reshape(momentum.shape[0], -1) ** 2, axis=-1) / cell_mass

    def cell_velocity(momentum: jax.Array) -> jax.Array:
        if flexible:
            return momentum / cell_mass
        return (momentum / cell_mass)[:, None, None] * jnp.eye(3, dtype=momentum.dtype)

    def cell_force(state: MDState) -> jax.Array:
        """``V (P_int − P₀ I) + (2K/N_f) I`` (``[R, 3, 3]``, eV), or its trace when isotropic (``[R]``)."""
        v = volume(state.cell)[:, None, None]
        excess = instantaneous_pressure_tensor(state, masses) - pressure * jnp.eye(3)
        kinetic = (2.0 * kinetic_energy(state.momenta, masses) / dof)[:, None, None] * jnp.eye(3)
        force = v * excess + kinetic
        return force if flexible else jnp.trace(force, axis1=-2, axis2=-1)

    def chains_half_step(state: MDState) -> MDState:
        """Half a step of both chains (``dt/2``), each scaling the momenta it thermostats."""
        c = state.thermostat
        cell_momentum, cell = cell_half(c.cell_momentum, c.cell.set(kinetic_energy=cell_kinetic(c.cell_momentum)), kT)
        particles = c.particles.set(kinetic_energy=kinetic_energy(state.momenta, masses))
        momenta, particles = particle_half(state.momenta, particles, kT)
        return state.replace(momenta=momenta, thermostat=MTKVariables(particles, cell, cell_momentum))

    def kick_cell(state: MDState) -> MDState:
        c = state.thermostat
        return state.replace(thermostat=c.replace(cell_momentum=c.cell_momentum + 0.5 * dt * cell_force(state)))

    def kick_particles(state: MDState) -> MDState:
        rate = cell_velocity(state.thermostat.cell_momentum)
        return state.replace(momenta=_particle_kick(state.momenta, state.forces, rate, 0.5 * dt, dof))

    def init(state: MDState) -> MDState:
        if state.cell is None:
            raise ValueError("the MTK barostat needs the cell in the state (an ensemble with variable_cell)")
        ke = kinetic_energy(state.momenta, masses)
        shape = (ke.shape[0], 3, 3) if flexible else ke.shape
        variables = MTKVariables(
            particles=jax.vmap(lambda k: particle_chain.initialize(dof, k, kT))(ke),
            cell=jax.vmap(lambda k: cell_chain.initialize(cell_dof, k, kT))(jnp.zeros_like(ke)),
            cell_momentum=jnp.zeros(shape, ke.dtype),
        )
        return state.replace(thermostat=variables)

    def step(state: MDState, compute: ComputeFn) -> MDState:
        state = kick_particles(kick_cell(chains_half_step(state)))
        positions, cell = _drift(state, cell_velocity(state.thermostat.cell_momentum), dt, inv_m)
        state = _force_update(state.replace(cell=cell), compute, positions)
        state = chains_half_step(kick_cell(kick_particles(state)))
        return state.replace(step=state.step + 1)

    def conserved(state: MDState) -> jax.Array:
        c = state.thermostat
        energy = state.potential_energy + kinetic_energy(state.momenta, masses) + pressure * volume(state.cell)
        return energy + cell_kinetic(c.cell_momentum) + _chain_energy(c.particles, kT) + _chain_energy(c.cell, kT)

    return Integrator(init=init, step=step, conserved=conserved, name="npt_mtk_full" if flexible else "npt_mtk")
