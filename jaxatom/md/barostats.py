"""Constant-pressure integrators: stochastic cell rescaling with a Langevin thermostat and a conserved effective
energy — isotropic (Bernetti & Bussi, J. Chem. Phys. 153, 114107 (2020), in its time-reversible form) or fully
flexible (anisotropic, triclinic cells: Del Tatto, Raiteri, Bernetti & Bussi, Appl. Sci. 12, 1139 (2022)).

Isotropic: the volume moves in ``λ = √V`` by a first-order stochastic equation whose stationary distribution is the
isothermal–isobaric one (``∝ V^N exp(−β(U + P₀V))``); positions and the cell scale by ``s = (V'/V)^{1/3}`` and
momenta by ``1/s``.

Fully flexible: the cell rows ``h [3, 3]`` are kept lower triangular (ASE's standard form: ``a`` along x, ``b`` in
the xy plane; cells are turned into it at the start), so the cell cannot rotate, and deform as ``h ← h (1 + dε)``
with a lower-triangular strain ``dε`` driven by the full internal pressure tensor (kinetic + virial) minus ``P₀``;
positions go with the cell (``x ← x (1 + dε)``) and momenta the other way (``p ← p (1 + dε)⁻ᵀ``).

``compressibility`` (an estimate of the isothermal compressibility β_T) and ``tau`` (the relaxation time of the
cell) set how fast the cell relaxes, not the distribution it samples. Units are ASE's inside (eV, Å, amu, ASE
time); pressure and compressibility in eV/Å³ and its inverse.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from jaxatom.md.integrators import ComputeFn, Integrator, MDState, _force_update, replica_normal, split_keys
from jaxatom.md.state import BOLTZMANN, kinetic_energy

__all__ = [
    "stochastic_cell_rescaling",
    "isotropic_move",
    "volume",
    "instantaneous_pressure",
    "instantaneous_pressure_tensor",
]

#: ``kT`` times these on the diagonal of the flexible cell's strain force (the Itô drift of the lower-triangular
#: parametrization, noise ``∝ h dξ``) make it sample Martyna–Tobias–Klein's flexible-cell measure ``V⁻² dh`` with the
#: rotations removed, ``V⁻² h₁₁² h₂₂ dh`` over the six entries of a lower-triangular ``h``; a measure
#: ``∏ h_cc^k_c dh`` would need ``(k₁ + 3, k₂ + 2, k₃ + 1)``.
_SHAPE_DRIFT = (3.0, 1.0, -1.0)


def volume(cell: jax.Array) -> jax.Array:
    """``[R]`` volumes (Å³) of cells ``[R, 3, 3]``."""
    return jnp.abs(jnp.linalg.det(cell))


def instantaneous_pressure_tensor(state: MDState, masses: jax.Array) -> jax.Array:
    """``[R, 3, 3]`` pressure tensor (eV/Å³) ``Σₙ pₙ⊗pₙ/mₙ / V − σ``: the kinetic part from the momenta and the
    virial part from the stress ``σ`` of the last force call (ASE's sign)."""
    kinetic = jnp.einsum("rni,rnj->rij", state.momenta / masses[..., None], state.momenta)
    return kinetic / volume(state.cell)[:, None, None] - state.extras["stress"]


def instantaneous_pressure(state: MDState, masses: jax.Array) -> jax.Array:
    """``[R]`` pressure (eV/Å³) ``(2K − V tr σ) / 3V``, a third of the trace of the pressure tensor."""
    return jnp.trace(instantaneous_pressure_tensor(state, masses), axis1=-2, axis2=-1) / 3.0


class _CellMove(NamedTuple):
    """A barostat step in two halves: ``propose(state, key) -> (deformation [R, 3, 3], heat [R] eV, carry)`` draws
    the lower-triangular deformation ``A`` (cell and positions ← ``· A``) and the work of the forward move;
    ``settle(state, carry) -> heat [R]`` adds the work of the reverse move, seen from the new state."""

    propose: Callable[[MDState, jax.Array], tuple[jax.Array, jax.Array, Any]]
    settle: Callable[[MDState, Any], jax.Array]


def isotropic_move(
    internal_pressure: Callable[[MDState], jax.Array],
    dt: float,
    kT: float,
    pressure: float,
    tau: float,
    compressibility: float,
) -> _CellMove:
    """Bernetti & Bussi in ``λ = √V``: ``dλ = (D/kT) f dt + √(2 D dt) ξ`` with ``D = kT β_T / 4τ`` (Å³ per ASE time)
    and ``f = −2λ (P₀ − P_int − kT/2V)`` (eV/Å^{3/2}); the deformation is ``s·1``, ``s = (V'/V)^{1/3}``.
    ``internal_pressure(state) -> [R]`` (eV/Å³) is the estimator of ``P_int`` (classical, or a ring polymer's
    centroid-virial one)."""
    diffusion = kT * compressibility / (4.0 * tau)

    def force(state: MDState) -> jax.Array:
        v = volume(state.cell)
        return -2.0 * jnp.sqrt(v) * (pressure - internal_pressure(state) - 0.5 * kT / v)

    def propose(state: MDState, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        f, v = force(state), volume(state.cell)
        d_lambda = diffusion / kT * f * dt + jnp.sqrt(2.0 * diffusion * dt) * replica_normal(key, (), v.dtype)
        s = ((jnp.sqrt(v) + d_lambda) / jnp.sqrt(v)) ** (2.0 / 3.0)
        heat = 0.5 * d_lambda * f - 0.25 * diffusion / kT * dt * f**2 + 0.5 * kT * jnp.log(v)
        return s[:, None, None] * jnp.eye(3, dtype=v.dtype), heat, d_lambda

    def settle(state: MDState, d_lambda: jax.Array) -> jax.Array:
        f = force(state)
        return 0.5 * d_lambda * f + 0.25 * diffusion / kT * dt * f**2 - 0.5 * kT * jnp.log(volume(state.cell))

    return _CellMove(propose, settle)


def _flexible_move(
    masses: jax.Array, dt: float, kT: float, pressure: float, tau: float, compressibility: float
) -> _CellMove:
    """Del Tatto et al.'s anisotropic equation for the six strain components of a lower-triangular cell (Itô,
    Euler–Maruyama): ``dε = (D/kT) (f + kT diag(3, 1, −1)) dt + √(2 D dt) ξ`` with ``D = kT β_T / τV`` (1/ASE time)
    and the mechanical strain force ``f = V tril(P_int − P₀)`` (eV); the diagonal term is the drift that makes the
    lower-triangular cell sample :data:`_SHAPE_DRIFT`'s measure.

    The heat is the work of ``f`` by the trapezoidal rule along the straight path from ``h`` to ``h (1 + dε)``:
    ``½ f·dε`` at the start and ``½ f'·(1 − (1 + dε)⁻¹)`` at the end, in each end's strain frame. The isotropic
    move's exact detailed-balance bookkeeping has no flexible counterpart here: the strain noise is multiplicative in
    every parametrization of the cell (its metric ``V |h⁻¹dh|²`` is curved), so the log ratio of forward and reverse
    Gaussian moves fluctuates by O(√dt) a step and drifts by O(1) per unit time for any ``dt``. The work
    bookkeeping instead conserves ``U + K + P₀V + heat`` up to O(dt) over a fixed time, which checks forces, stress,
    cell and particle updates, not the diagonal drift term (the volume distribution of an ideal gas checks that).
    """

    def diffusion(cell: jax.Array) -> jax.Array:
        return (kT * compressibility / tau / volume(cell))[:, None, None]

    def force(state: MDState) -> jax.Array:
        excess = instantaneous_pressure_tensor(state, masses) - pressure * jnp.eye(3, dtype=state.cell.dtype)
        return volume(state.cell)[:, None, None] * jnp.tril(excess)

    def propose(state: MDState, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        d, f = diffusion(state.cell), force(state)
        shape = kT * jnp.diag(jnp.asarray(_SHAPE_DRIFT, f.dtype))
        noise = jnp.tril(replica_normal(key, (3, 3), f.dtype))
        strain = d / kT * (f + shape) * dt + jnp.sqrt(2.0 * d * dt) * noise
        return jnp.eye(3, dtype=f.dtype) + strain, 0.5 * jnp.sum(f * strain, axis=(-2, -1)), strain

    def settle(state: MDState, strain: jax.Array) -> jax.Array:
        eye = jnp.eye(3, dtype=strain.dtype)
        return 0.5 * jnp.sum(force(state) * (eye - _inverse(eye + strain)), axis=(-2, -1))

    return _CellMove(propose, settle)


def _inverse(deformation: jax.Array) -> jax.Array:
    """``[R, 3, 3]`` inverses of lower-triangular matrices (exactly lower triangular)."""
    return solve_triangular(deformation, jnp.broadcast_to(jnp.eye(3, dtype=deformation.dtype), deformation.shape),
                            lower=True)  # fmt: skip


def _lower_triangular_frame(state: MDState) -> MDState:
    """The state turned so that its cell rows are lower triangular with a positive diagonal (ASE's standard form;
    a left-handed cell is mirrored): positions, momenta, forces, cell and stress turn together (an already
    lower-triangular cell is left exactly as it is). Other extras are recomputed by the first step."""
    q, r = jnp.linalg.qr(jnp.swapaxes(state.cell, -1, -2))
    turn = q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[:, None, :]

    def rotate(x: jax.Array) -> jax.Array:
        return jnp.einsum("rni,rij->rnj", x, turn)

    stress = jnp.einsum("rki,rkl,rlj->rij", turn, state.extras["stress"], turn)
    return state.replace(
        positions=rotate(state.positions),
        momenta=rotate(state.momenta),
        forces=rotate(state.forces),
        cell=jnp.tril(rotate(state.cell)),
        extras={**state.extras, "stress": stress},
    )


def stochastic_cell_rescaling(
    masses: jax.Array,
    dt: float,
    temperature_K: float,
    friction: float,
    pressure: float,
    tau: float,
    compressibility: float,
    flexible: bool = False,
    atom_mask: jax.Array | None = None,
) -> Integrator:
    """NPT: O(dt/2) B(dt/2) [barostat + A(dt) with the deformation] B(dt/2) O(dt/2); ``friction`` in 1/ASE time.

    The barostat draws a deformation ``A`` (isotropic ``s·1``, or with ``flexible`` a lower-triangular
    ``1 + dε``, see :func:`isotropic_move` and :func:`_flexible_move`); then the cell ``← h A``, momenta
    ``p ← p A⁻ᵀ`` and positions ``x ← (x + p dt/2m) A + p' dt/2m``. The work of barostat and thermostat enters
    ``heat``, so ``U + K + P₀V + heat`` is conserved up to the integrator's error.

    The flexible cell samples ``exp(−β(U + K + P₀V))`` times Martyna–Tobias–Klein's flexible-cell measure ``V⁻² dh``
    (rotations removed); the volume of an ideal gas then has the isotropic distribution ``∝ V^N exp(−βP₀V)``. Its
    shape has no restoring force in a fluid: use it for solids.

    ``masses`` ``[N]``, or ``[R, N]`` with ``atom_mask [R, N]`` for padded replicas of different structures (padding
    atoms get no thermostat noise).
    """
    kT = BOLTZMANN * temperature_K
    m = masses[..., None]
    c1 = jnp.exp(-0.5 * friction * dt)
    c2 = jnp.sqrt((1.0 - c1**2) * kT * m)
    if atom_mask is not None:
        c2 = c2 * atom_mask[..., None]
    if flexible:
        move = _flexible_move(masses, dt, kT, pressure, tau, compressibility)
    else:
        classical = functools.partial(instantaneous_pressure, masses=masses)
        move = isotropic_move(classical, dt, kT, pressure, tau, compressibility)

    def thermostat(state: MDState) -> MDState:
        keys, sub = split_keys(state.key)
        noise = replica_normal(sub, state.momenta.shape[1:], state.momenta.dtype)
        momenta = c1 * state.momenta + c2 * noise
        heat = state.heat - (kinetic_energy(momenta, masses) - kinetic_energy(state.momenta, masses))
        return state.replace(momenta=momenta, key=keys, heat=heat)

    def step(state: MDState, compute: ComputeFn) -> MDState:
        state = thermostat(state)
        state = state.replace(momenta=state.momenta + 0.5 * dt * state.forces)
        keys, sub = split_keys(state.key)
        deformation, heat, carry = move.propose(state, sub)
        momenta = jnp.einsum("rnk,rjk->rnj", state.momenta, _inverse(deformation))
        positions = jnp.einsum("rnk,rkj->rnj", state.positions + 0.5 * dt * state.momenta / m, deformation)
        positions = positions + 0.5 * dt * momenta / m
        cell = jnp.einsum("rik,rkj->rij", state.cell, deformation)
        state = state.replace(momenta=momenta, cell=cell, key=keys, heat=state.heat + heat)
        state = _force_update(state, compute, positions)
        heat = state.heat + move.settle(state, carry)
        state = state.replace(momenta=state.momenta + 0.5 * dt * state.forces, heat=heat)
        return thermostat(state).replace(step=state.step + 1)

    def conserved(state: MDState) -> jax.Array:
        kinetic = kinetic_energy(state.momenta, masses)
        return state.potential_energy + kinetic + pressure * volume(state.cell) + state.heat

    init = _lower_triangular_frame if flexible else (lambda s: s)
    return Integrator(init=init, step=step, conserved=conserved, name="npt_scr")
