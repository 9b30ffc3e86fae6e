"""Constant-pressure integrators: isotropic stochastic cell rescaling (Bernetti & Bussi, J. Chem. Phys. 153, 114107
(2020)) with a Langevin thermostat, in its time-reversible form with a conserved effective energy.

The volume moves in ``λ = √V`` by a first-order stochastic equation whose stationary distribution is the
isothermal–isobaric one (``∝ V^N exp(−β(U + P₀V))``); positions and the cell scale by ``s = (V'/V)^{1/3}`` and
momenta by ``1/s``. ``compressibility`` (an estimate of the isothermal compressibility β_T) and ``tau`` (the
volume relaxation time) set how fast the volume relaxes, not the distribution it samples. Units are ASE's inside
(eV, Å, amu, ASE time); pressure and compressibility in eV/Å³ and its inverse.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxatom.md.integrators import ComputeFn, Integrator, MDState, _force_update, replica_normal, split_keys
from jaxatom.md.state import BOLTZMANN, kinetic_energy

__all__ = ["stochastic_cell_rescaling", "volume", "instantaneous_pressure"]


def volume(cell: jax.Array) -> jax.Array:
    """``[R]`` volumes (Å³) of cells ``[R, 3, 3]``."""
    return jnp.abs(jnp.linalg.det(cell))


def instantaneous_pressure(state: MDState, masses: jax.Array) -> jax.Array:
    """``[R]`` pressure (eV/Å³) ``(2K − V tr σ) / 3V`` from the momenta and the stress of the last force call."""
    v = volume(state.cell)
    trace = jnp.trace(state.extras["stress"], axis1=-2, axis2=-1)
    return (2.0 * kinetic_energy(state.momenta, masses) - v * trace) / (3.0 * v)


def stochastic_cell_rescaling(
    masses: jax.Array,
    dt: float,
    temperature_K: float,
    friction: float,
    pressure: float,
    tau: float,
    compressibility: float,
) -> Integrator:
    """Isotropic NPT: O(dt/2) B(dt/2) [barostat + A(dt) with scaling] B(dt/2) O(dt/2).

    The barostat step follows the reversible scheme of Bernetti & Bussi: ``dλ = (D/kT) f dt + √(2 D dt) ξ`` with
    ``D = kT β_T / 4τ`` and ``f = −2λ (P₀ − P_int − kT/2V)``, positions ``x ← s x + ½(s + 1/s) p/m dt``, cell
    ``← s·cell``, momenta ``← p/s``; the work it does enters ``heat``, so ``U + K + P₀V + heat`` is conserved up to
    the integrator's error (and the thermostat's exchange, also in ``heat``). ``friction`` in 1/ASE time.
    """
    kT = BOLTZMANN * temperature_K
    m = masses[:, None]
    c1 = jnp.exp(-0.5 * friction * dt)
    c2 = jnp.sqrt((1.0 - c1**2) * kT * m)
    diffusion = kT * compressibility / (4.0 * tau)

    def thermostat(state: MDState) -> MDState:
        keys, sub = split_keys(state.key)
        noise = replica_normal(sub, state.momenta.shape[1:], state.momenta.dtype)
        momenta = c1 * state.momenta + c2 * noise
        heat = state.heat - (kinetic_energy(momenta, masses) - kinetic_energy(state.momenta, masses))
        return state.replace(momenta=momenta, key=keys, heat=heat)

    def lambda_force(state: MDState) -> jax.Array:
        v = volume(state.cell)
        return -2.0 * jnp.sqrt(v) * (pressure - instantaneous_pressure(state, masses) - 0.5 * kT / v)

    def step(state: MDState, compute: ComputeFn) -> MDState:
        state = thermostat(state)
        state = state.replace(momenta=state.momenta + 0.5 * dt * state.forces)
        force, v = lambda_force(state), volume(state.cell)
        keys, sub = split_keys(state.key)
        d_lambda = diffusion / kT * force * dt + jnp.sqrt(2.0 * diffusion * dt) * replica_normal(sub, (), v.dtype)
        s = ((jnp.sqrt(v) + d_lambda) / jnp.sqrt(v)) ** (2.0 / 3.0)
        heat = state.heat + 0.5 * d_lambda * force - 0.25 * diffusion / kT * dt * force**2 + 0.5 * kT * jnp.log(v)
        s3 = s[:, None, None]
        positions = s3 * state.positions + 0.5 * (s3 + 1.0 / s3) * state.momenta / m * dt
        state = state.replace(momenta=state.momenta / s3, cell=state.cell * s3, key=keys)
        state = _force_update(state, compute, positions)
        force = lambda_force(state)
        heat = (
            heat
            + 0.5 * d_lambda * force
            + 0.25 * diffusion / kT * dt * force**2
            - 0.5 * kT * jnp.log(volume(state.cell))
        )
        state = state.replace(momenta=state.momenta + 0.5 * dt * state.forces, heat=heat)
        return thermostat(state).replace(step=state.step + 1)

    def conserved(state: MDState) -> jax.Array:
        kinetic = kinetic_energy(state.momenta, masses)
        return state.potential_energy + kinetic + pressure * volume(state.cell) + state.heat

    return Integrator(init=lambda s: s, step=step, conserved=conserved, name="npt_scr")
