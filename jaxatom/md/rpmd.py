"""Ring-polymer MD: normal modes, exact free ring-polymer propagation, PILE-L / PILE-G / TRPMD thermostats, and
the primitive and centroid-virial kinetic-energy estimators.

``P`` beads of each replica sample ``exp(-β_P H_P)`` with ``β_P = β/P`` and

    H_P = Σ_j [ p_j²/2m + V(q_j) + ½ m ω_P² (q_j - q_{j+1})² ],   ω_P = 1/(β_P ħ) = P k_B T/ħ.

Positions and momenta are ``[R, P, N, 3]``. The orthogonal normal-mode matrix ``C [P, P]`` maps beads to modes
(``q̃_k = Σ_j C_jk q_j``; the centroid mode is ``√P`` times the centroid), with frequencies ``ω_k = 2 ω_P sin(kπ/P)``.
The springs are integrated exactly in normal modes. One step is B(dt/2) A(dt/2) O(dt) A(dt/2) B(dt/2): the
thermostat (Ceriotti et al., J. Chem. Phys. 133, 124104 (2010)) sits between two exact free ring-polymer half steps,
so the free ring polymer is sampled exactly at any time step. (The original O B A B O ordering biases the internal
modes: with it the primitive estimator was 13 % low at 1 fs in our harmonic test; see also Korol et al.,
J. Chem. Phys. 151, 124103 (2019).) The normal-mode arithmetic runs in the positions' dtype, float64 when x64
is on.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from ase import units

from jaxatom.errors import ConfigError
from jaxatom.md.barostats import isotropic_move, volume
from jaxatom.md.integrators import ComputeFn, Integrator, MDState, _force_update, split_keys
from jaxatom.md.state import BOLTZMANN, kinetic_energy

__all__ = [
    "HBAR",
    "THERMOSTATS",
    "normal_mode_matrix",
    "normal_mode_frequencies",
    "ring_polymer",
    "centroid",
    "spring_energy",
    "primitive_kinetic_energy",
    "virial_kinetic_energy",
    "centroid_virial_pressure",
]

#: ħ in eV × ASE time units.
HBAR = units._hbar * units.J * units.s

#: Ring-polymer thermostats: PILE-L (Langevin on every mode), PILE-G (global Bussi on the centroid, Langevin on the
#: others), TRPMD (Langevin on the internal modes only), and none (microcanonical ring polymer).
THERMOSTATS = ("pile_l", "pile_g", "trpmd", "none")


def normal_mode_matrix(n_beads: int) -> np.ndarray:
    """``[P, P]`` orthogonal real normal-mode matrix ``C[j, k]`` (bead ``j``, mode ``k``), float64."""
    j = np.arange(n_beads)[:, None]
    k = np.arange(n_beads)[None, :]
    angle = 2.0 * np.pi * j * k / n_beads
    matrix = np.where(k <= n_beads // 2, np.sqrt(2.0 / n_beads) * np.cos(angle), np.sqrt(2.0 / n_beads) * np.sin(angle))
    matrix[:, 0] = np.sqrt(1.0 / n_beads)
    if n_beads % 2 == 0:
        matrix[:, n_beads // 2] = np.sqrt(1.0 / n_beads) * (-1.0) ** np.arange(n_beads)
    return matrix


def normal_mode_frequencies(n_beads: int, omega_p: float) -> np.ndarray:
    """``[P]`` free ring-polymer frequencies ``ω_k = 2 ω_P sin(kπ/P)`` (1/ASE time)."""
    return 2.0 * omega_p * np.sin(np.arange(n_beads) * np.pi / n_beads)


def _to_modes(x: jax.Array, matrix: jax.Array) -> jax.Array:
    return jnp.einsum("jk,...jna->...kna", matrix, x)


def _from_modes(x: jax.Array, matrix: jax.Array) -> jax.Array:
    return jnp.einsum("jk,...kna->...jna", matrix, x)


def centroid(x: jax.Array) -> jax.Array:
    """Bead average ``[..., N, 3]`` of ``[..., P, N, 3]``."""
    return jnp.mean(x, axis=-3)


def spring_energy(positions: jax.Array, masses: jax.Array, omega_p: float) -> jax.Array:
    """``Σ_j ½ m ω_P² |q_j - q_{j+1}|²`` (eV) per replica for ``[R, P, N, 3]``."""
    stretch = positions - jnp.roll(positions, -1, axis=-3)
    return 0.5 * omega_p**2 * jnp.sum(masses[:, None] * stretch**2, axis=(-3, -2, -1))


def primitive_kinetic_energy(positions: jax.Array, masses: jax.Array, temperature_K: float) -> jax.Array:
    """Primitive estimator of the quantum kinetic energy (eV) per replica: ``3NP/(2β) - spring/P``."""
    n_beads, n_atoms = positions.shape[-3], positions.shape[-2]
    kT = BOLTZMANN * temperature_K
    omega_p = n_beads * kT / HBAR
    return 1.5 * n_atoms * n_beads * kT - spring_energy(positions, masses, omega_p) / n_beads


def virial_kinetic_energy(positions: jax.Array, forces: jax.Array, temperature_K: float) -> jax.Array:
    """Centroid-virial estimator (eV) per replica: ``3N/(2β) - (1/2P) Σ_j (q_j - q̄)·F_j``."""
    n_beads, n_atoms = positions.shape[-3], positions.shape[-2]
    offsets = positions - centroid(positions)[..., None, :, :]
    return 1.5 * n_atoms * BOLTZMANN * temperature_K - jnp.sum(offsets * forces, axis=(-3, -2, -1)) / (2 * n_beads)


def centroid_virial_pressure(state: MDState, masses: jax.Array) -> jax.Array:
    """``[R]`` centroid-virial pressure estimator (eV/Å³) of ring polymers in cells ``state.cell [R, 3, 3]``:
    ``(Σ p̄²/m − (1/P) Σ_j (V tr σ_j + Σ (q_j − q̄)·F_j)) / 3V`` with centroid momenta ``p̄`` and each bead's stress
    ``σ_j`` (ASE's sign) — minus the volume derivative of the ring polymer's free energy when the cell scales the
    centroids and leaves the bead offsets alone (the classical estimator for one bead)."""
    v = volume(state.cell)
    kinetic = jnp.sum(centroid(state.momenta) ** 2 / masses[:, None], axis=(-2, -1))
    offsets = state.positions - centroid(state.positions)[..., None, :, :]
    virial = v[:, None] * jnp.trace(state.extras["stress"], axis1=-2, axis2=-1)
    virial = virial + jnp.sum(offsets * state.forces, axis=(-2, -1))
    return (kinetic - jnp.mean(virial, axis=-1)) / (3.0 * v)


def _bussi_factor(key: jax.Array, kinetic: jax.Array, target: jax.Array, n_dof: int, c: jax.Array) -> jax.Array:
    """Bussi–Donadio–Parrinello stochastic velocity-rescaling factor for one replica (exact for a time ``-τ ln c``)."""
    k1, k2 = jax.random.split(key)
    r1 = jax.random.normal(k1, (), kinetic.dtype)
    rest = 2.0 * jax.random.gamma(k2, (n_dof - 1) / 2.0, (), kinetic.dtype) if n_dof > 1 else 0.0
    ratio = target / (n_dof * kinetic)
    alpha2 = c + (1 - c) * (r1**2 + rest) * ratio + 2 * r1 * jnp.sqrt(c * (1 - c) * ratio)
    sign = jnp.sign(r1 + jnp.sqrt(c / ((1 - c) * ratio)))
    return sign * jnp.sqrt(alpha2)


def ring_polymer(
    masses: jax.Array,
    dt: float,
    temperature_K: float,
    n_beads: int,
    thermostat: str = "pile_l",
    centroid_tau: float | None = None,
    pile_lambda: float = 1.0,
    barostat: tuple[float, float, float] | None = None,
) -> Integrator:
    """RPMD integrator for ``[R, P, N, 3]`` states (time in ASE units).

    Args:
        masses: ``[N]`` amu.
        dt: time step.
        temperature_K: physical temperature; beads are propagated at ``P·T``.
        n_beads: ``P``.
        thermostat: one of :data:`THERMOSTATS`.
        centroid_tau: centroid thermostat time constant (PILE-L friction ``1/τ``, PILE-G Bussi time ``τ``).
        pile_lambda: internal-mode friction ``γ_k = 2 λ ω_k``; 1 is critical damping (Ceriotti et al. 2010, and
            SchNetPack's default), 1/2 the value Rossi et al. (2014) suggest for TRPMD spectra.
        barostat: ``(pressure, tau, compressibility)`` (eV/Å³, ASE time, Å³/eV) for constant pressure: isotropic
            stochastic cell rescaling (:func:`~jaxatom.md.barostats.isotropic_move`) of ``state.cell`` driven by
            :func:`centroid_virial_pressure`, scaling the centroids (by ``√s`` before and after the free
            propagation, a reversible sandwich) and leaving the bead offsets alone; its work, in the ring polymer's
            energy units (``P`` times the physical), enters ``heat``.
    """
    if thermostat not in THERMOSTATS:
        raise ConfigError(f"unknown ring-polymer thermostat {thermostat!r}; choose one of {', '.join(THERMOSTATS)}")
    if thermostat in ("pile_l", "pile_g") and not centroid_tau:
        raise ConfigError(f"thermostat {thermostat!r} needs centroid_tau (the centroid thermostat time constant)")
    dtype = masses.dtype
    kT_p = n_beads * BOLTZMANN * temperature_K
    omega_p = kT_p / HBAR
    matrix = jnp.asarray(normal_mode_matrix(n_beads), dtype)
    omega = normal_mode_frequencies(n_beads, omega_p)
    m = masses[None, :, None]  # [1, N, 1], broadcasts against modes [P, N, 3]
    w = jnp.asarray(omega, dtype)[:, None, None]
    half = 0.5 * dt
    cos, sin = jnp.cos(w * half), jnp.sin(w * half)
    safe_w = jnp.where(w > 0, w, 1.0)
    # exact free propagation of (p̃, q̃) per mode over dt/2: p' = cos p - mω sin q, q' = sin/(mω) p + cos q
    # (centroid: free flight)
    p_from_q = -m * w * sin
    q_from_p = jnp.where(w > 0, sin / (m * safe_w), half / m)

    gamma = 2.0 * pile_lambda * omega
    gamma[0] = 0.0 if thermostat in ("trpmd", "pile_g", "none") else 1.0 / centroid_tau
    if thermostat == "none":
        gamma[:] = 0.0
    c1 = jnp.asarray(np.exp(-gamma * dt), dtype)[:, None, None]
    c2 = jnp.sqrt(1.0 - c1**2) * jnp.sqrt(m * kT_p)
    bussi_c = float(np.exp(-dt / centroid_tau)) if thermostat == "pile_g" else None
    n_dof = 3 * masses.shape[0]

    def ring_kinetic(momenta: jax.Array) -> jax.Array:
        return jnp.sum(kinetic_energy(momenta, masses), axis=-1)

    def mode_kinetic(modes: jax.Array) -> jax.Array:
        return jnp.sum(kinetic_energy(modes, masses), axis=-1)

    def free_half_step(p: jax.Array, q: jax.Array) -> tuple[jax.Array, jax.Array]:
        return cos * p + p_from_q * q, q_from_p * p + cos * q

    def thermostat_step(state: MDState, modes: jax.Array) -> tuple[MDState, jax.Array]:
        if thermostat == "none":
            return state, modes
        keys, sub = split_keys(state.key)
        noise_key, bussi_key = jax.vmap(jax.random.split, out_axes=1)(sub)
        noise = jax.vmap(lambda k: jax.random.normal(k, modes.shape[1:], dtype))(noise_key)
        new = c1 * modes + c2 * noise
        if thermostat == "pile_g":
            k0 = kinetic_energy(modes[:, 0], masses)
            factor = jax.vmap(_bussi_factor, in_axes=(0, 0, None, None, None))(
                bussi_key, k0, 0.5 * n_dof * kT_p, n_dof, bussi_c
            )
            new = new.at[:, 0].set(modes[:, 0] * factor[:, None, None])
        # normal modes are orthogonal, so the kinetic energy is the same in either representation
        heat = state.heat - (mode_kinetic(new) - mode_kinetic(modes))
        return state.replace(key=keys, heat=heat), new

    move = None
    if barostat is not None:
        pressure, tau, compressibility = barostat
        internal = functools.partial(centroid_virial_pressure, masses=masses)
        move = isotropic_move(internal, dt, kT_p / n_beads, pressure, tau, compressibility)

    def scale_centroids(p: jax.Array, q: jax.Array, factor: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Centroid modes of ``[R, P, N, 3]`` mode arrays: positions times ``factor [R]``, momenta divided."""
        f = factor[:, None, None]
        return p.at[:, 0].divide(f), q.at[:, 0].multiply(f)

    def step(state: MDState, compute: ComputeFn) -> MDState:
        state = state.replace(momenta=state.momenta + 0.5 * dt * state.forces)
        p, q = _to_modes(state.momenta, matrix), _to_modes(state.positions, matrix)
        if move is not None:
            keys, sub = split_keys(state.key)
            deformation, heat, carry = move.propose(state, sub)
            root = jnp.sqrt(deformation[:, 0, 0])
            state = state.replace(
                key=keys, heat=state.heat + n_beads * heat, cell=state.cell * root[:, None, None] ** 2
            )
            p, q = scale_centroids(p, q, root)
        p, q = free_half_step(p, q)
        state, p = thermostat_step(state, p)
        p, q = free_half_step(p, q)
        if move is not None:
            p, q = scale_centroids(p, q, root)
        state = _force_update(state.replace(momenta=_from_modes(p, matrix)), compute, _from_modes(q, matrix))
        if move is not None:
            state = state.replace(heat=state.heat + n_beads * move.settle(state, carry))
        return state.replace(momenta=state.momenta + 0.5 * dt * state.forces, step=state.step + 1)

    def conserved(state: MDState) -> jax.Array:
        potential = jnp.sum(state.potential_energy, axis=-1)
        springs = spring_energy(state.positions, masses, omega_p)
        enthalpy = 0.0 if move is None else n_beads * pressure * volume(state.cell)
        return potential + ring_kinetic(state.momenta) + springs + enthalpy + state.heat

    return Integrator(init=lambda s: s, step=step, conserved=conserved, name=f"rpmd-{thermostat}")
