"""Masses, Maxwell–Boltzmann momenta, centre-of-mass and rotation removal, kinetic energy and temperature.

Units inside MD are ASE's: eV, Å, amu, and time in ASE units (``ase.units.fs`` = 1 fs); momenta are amu·Å per ASE
time unit, so ``p²/2m`` is in eV. Arrays may carry leading batch axes (replicas, beads) before ``[N, 3]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from ase import units
from ase.data import atomic_masses

__all__ = [
    "BOLTZMANN",
    "masses_of",
    "maxwell_boltzmann",
    "remove_com_momentum",
    "remove_rotation",
    "kinetic_energy",
    "degrees_of_freedom",
    "temperature",
]

#: Boltzmann constant in eV/K.
BOLTZMANN = units.kB


def masses_of(species: np.ndarray) -> np.ndarray:
    """``[N]`` standard atomic masses (amu) of the atomic numbers ``species``, as ASE tabulates them."""
    return np.asarray(atomic_masses[np.asarray(species)], np.float64)


def maxwell_boltzmann(
    key: jax.Array, masses: jax.Array, temperature_K: float, shape: tuple[int, ...] = ()
) -> jax.Array:
    """Momenta ``[*shape, N, 3]`` drawn from the Maxwell–Boltzmann distribution at ``temperature_K``."""
    masses = jnp.asarray(masses)
    sigma = jnp.sqrt(masses * BOLTZMANN * temperature_K)[:, None]
    return sigma * jax.random.normal(key, (*shape, masses.shape[0], 3), masses.dtype)


def remove_com_momentum(momenta: jax.Array, masses: jax.Array) -> jax.Array:
    """Momenta ``[..., N, 3]`` with the total momentum of each structure removed (mass-weighted, so COM is at rest)."""
    total = jnp.sum(momenta, axis=-2, keepdims=True)
    return momenta - total * (masses / jnp.sum(masses))[:, None]


def remove_rotation(positions: jax.Array, momenta: jax.Array, masses: jax.Array) -> jax.Array:
    """Momenta ``[..., N, 3]`` with the angular momentum about the centre of mass removed (rigid rotation)."""
    m = masses[:, None]
    com = jnp.sum(m * positions, axis=-2, keepdims=True) / jnp.sum(masses)
    r = positions - com
    angular = jnp.sum(jnp.cross(r, momenta), axis=-2)
    eye = jnp.eye(3, dtype=positions.dtype)
    inertia = jnp.sum(
        masses[:, None, None] * (jnp.sum(r * r, -1)[..., None, None] * eye - r[..., :, None] * r[..., None, :]), -3
    )
    # Linear molecules have a singular inertia tensor: the pseudo-inverse removes rotation about the other axes.
    omega = jnp.einsum("...ij,...j->...i", jnp.linalg.pinv(inertia, hermitian=True), angular)
    return momenta - m * jnp.cross(omega[..., None, :], r)


def kinetic_energy(momenta: jax.Array, masses: jax.Array) -> jax.Array:
    """Kinetic energy (eV) of each structure, ``[...]`` for momenta ``[..., N, 3]`` and masses ``[N]`` (or ``[R, N]``
    per replica)."""
    return 0.5 * jnp.sum(momenta**2 / masses[..., None], axis=(-2, -1))


def degrees_of_freedom(n_atoms: int, com_fixed: bool, rotation_fixed: bool = False) -> int:
    """Number of kinetic degrees of freedom: ``3N``, minus 3 when the total momentum is fixed at zero (NVE,
    Nosé–Hoover), minus 3 more when the angular momentum is too (molecules only)."""
    dof = 3 * n_atoms - (3 if com_fixed else 0) - (3 if rotation_fixed else 0)
    return max(dof, 1)


def temperature(kinetic: jax.Array, dof: int | jax.Array) -> jax.Array:
    """Kinetic temperature (K) from the kinetic energy (eV): ``T = 2 K / (dof k_B)`` (``dof`` may be ``[R]``)."""
    return 2.0 * kinetic / (dof * BOLTZMANN)


#: One femtosecond in ASE time units.
FS = units.fs
