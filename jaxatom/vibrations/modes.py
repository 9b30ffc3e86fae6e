"""Normal modes of a Hessian: mass weighting, projection of translations and rotations (Eckart), frequencies in cm⁻¹,
and IR intensities (km/mol) and Raman activities (Å⁴/amu) of the modes. numpy only, float64.

Conventions (those of ASE's ``Vibrations``/``Infrared``, which jaxatom's MD spectra also follow):

* the mass-weighted Hessian is ``M^-1/2 H M^-1/2`` (eV/(Å² amu)); an eigenvalue λ gives the wavenumber
  ``sign(λ) sqrt(|λ|)`` converted to cm⁻¹, so imaginary frequencies are reported as negative numbers;
* a mode's Cartesian displacement is ``M^-1/2 e`` for the unit mass-weighted eigenvector ``e`` (ASE's ``get_mode``),
  i.e. the displacement (Å) per unit of the normal coordinate ``Q`` (Å·amu^½);
* IR intensity ``A = N_A π / (3 c² 4πε₀) |∂μ/∂Q|²`` (km/mol), the integrated absorption of the fundamental in the
  double-harmonic approximation; with μ in e·Å and Q in Å·amu^½ the factor is
  :data:`~jaxatom.spectra.HARMONIC_IR_KM_MOL` (= 42.255 (km/mol) / ((D/Å)²/amu), the factor ASE's ``Infrared``
  uses, times (e/D)²);
* Raman activity ``S = 45 a'² + 7 γ'²`` (Å⁴/amu) with ``a'`` the mean and ``γ'²`` the anisotropy invariant of
  ``∂α/∂Q`` (α in Å³).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import units

from jaxatom.errors import ConfigError
from jaxatom.spectra.core import HARMONIC_IR_KM_MOL

__all__ = [
    "CM1_PER_SQRT_EV_ANG2_AMU",
    "NormalModes",
    "is_linear",
    "external_basis",
    "normal_modes",
    "ir_intensities",
    "raman_activities",
    "wavenumbers_to_energies",
]

#: Wavenumber (cm⁻¹) of a mass-weighted Hessian eigenvalue of 1 eV/(Å² amu): ħ·sqrt(e/(Å² amu)) in cm⁻¹ (≈ 521.47).
CM1_PER_SQRT_EV_ANG2_AMU = units._hbar * 1e10 / np.sqrt(units._e * units._amu) / units.invcm
#: Relative size of the smallest principal moment of inertia below which a molecule counts as linear.
LINEAR_TOLERANCE = 1e-6


@dataclass(frozen=True, eq=False)
class NormalModes:
    """Eigen-decomposition of a mass-weighted Hessian of ``N`` atoms (``3N`` modes, ascending).

    Attributes:
        frequencies_cm1: ``[3N]`` wavenumbers (cm⁻¹; imaginary ones negative). With projection the first
            ``n_external`` are the translations and rotations and exactly 0.
        modes: ``[3N, N, 3]`` Cartesian displacements ``M^-1/2 e`` (Å per Å·amu^½).
        eigenvectors: ``[3N, 3N]`` orthonormal mass-weighted eigenvectors ``e`` (rows).
        n_external: number of projected translations and rotations (0 without projection).
    """

    frequencies_cm1: np.ndarray
    modes: np.ndarray
    eigenvectors: np.ndarray
    n_external: int

    @property
    def vibrational(self) -> slice:
        """The indices of the internal (vibrational) modes."""
        return slice(self.n_external, None)


def _principal_axes(positions: np.ndarray, masses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre-of-mass positions ``[N, 3]``, principal moments ``[3]`` (ascending, amu·Å²) and axes (columns)."""
    centred = positions - masses @ positions / masses.sum()
    inertia = np.einsum("i,ij,ik->jk", masses, centred, centred)
    inertia = np.trace(inertia) * np.eye(3) - inertia
    moments, axes = np.linalg.eigh(inertia)
    return centred, moments, axes


def is_linear(positions, masses) -> bool:
    """Whether a molecule is linear: two or more atoms and a smallest principal moment of inertia below
    :data:`LINEAR_TOLERANCE` of the largest (a single atom is not linear)."""
    positions, masses = np.asarray(positions, np.float64), np.asarray(masses, np.float64)
    if len(masses) < 2:
        return False
    _, moments, _ = _principal_axes(positions, masses)
    return bool(moments[0] <= LINEAR_TOLERANCE * moments[2])


def external_basis(positions, masses, periodic: bool = False, linear: bool | None = None) -> np.ndarray:
    """Orthonormal mass-weighted translations and rotations ``[3N, k]`` (the Eckart conditions' directions).

    Three translations ``sqrt(m_i) e_a``; for molecules also the rotations ``sqrt(m_i) (u × (r_i − R_com))`` about
    the principal axes ``u`` — two for a linear molecule (``linear=None`` detects it, :func:`is_linear`), none for a
    single atom; periodic structures only translate (``k = 3``).
    """
    positions, masses = np.asarray(positions, np.float64), np.asarray(masses, np.float64)
    n = len(masses)
    sqrt_m = np.sqrt(masses)
    vectors = [np.kron(sqrt_m, np.eye(3)[a]) for a in range(3)]
    if not periodic and n > 1:
        centred, _, axes = _principal_axes(positions, masses)
        linear = is_linear(positions, masses) if linear is None else linear
        for axis in axes.T[1:] if linear else axes.T:  # a linear molecule does not rotate about its axis
            vectors.append((sqrt_m[:, None] * np.cross(axis, centred)).ravel())
    basis = np.stack(vectors, axis=1)
    return basis / np.linalg.norm(basis, axis=0)


def normal_modes(
    hessian, masses, positions=None, project: bool = True, periodic: bool = False, linear: bool | None = None
) -> NormalModes:
    """Frequencies and normal modes of a Hessian ``[3N, 3N]`` (eV/Å², symmetrised here) for masses ``[N]`` (amu).

    With ``project`` (needs ``positions [N, 3]``, Å) translations and rotations are removed exactly: the mass-weighted
    Hessian is diagonalised in the orthonormal complement of :func:`external_basis`, and the external directions are
    returned first as modes of frequency exactly 0. Without projection the plain eigenvectors are returned; at a
    minimum of a translation- and rotation-invariant energy the six (linear: five) lowest are then close to zero.
    """
    masses = np.asarray(masses, np.float64)
    n = len(masses)
    hessian = np.asarray(hessian, np.float64)
    if hessian.shape != (3 * n, 3 * n):
        raise ConfigError(f"the Hessian of {n} atoms must have shape {(3 * n, 3 * n)}, got {hessian.shape}")
    inv_sqrt_m = np.repeat(masses**-0.5, 3)
    weighted = inv_sqrt_m[:, None] * 0.5 * (hessian + hessian.T) * inv_sqrt_m[None, :]
    if project:
        if positions is None:
            raise ConfigError("projecting out translations and rotations needs the positions")
        external = external_basis(positions, masses, periodic, linear)
        k = external.shape[1]
        internal = np.linalg.svd(external, full_matrices=True)[0][:, k:]  # orthonormal complement
        eigenvalues, coefficients = np.linalg.eigh(internal.T @ weighted @ internal)
        eigenvalues = np.concatenate([np.zeros(k), eigenvalues])
        vectors = np.concatenate([external, internal @ coefficients], axis=1)
    else:
        k = 0
        eigenvalues, vectors = np.linalg.eigh(weighted)
    frequencies = np.sign(eigenvalues) * np.sqrt(np.abs(eigenvalues)) * CM1_PER_SQRT_EV_ANG2_AMU
    modes = (inv_sqrt_m[:, None] * vectors).T.reshape(3 * n, n, 3)
    return NormalModes(frequencies_cm1=frequencies, modes=modes, eigenvectors=vectors.T, n_external=k)


def _mode_derivatives(derivatives: np.ndarray, modes: np.ndarray) -> np.ndarray:
    """∂X/∂Q ``[M, ...]`` from ∂X/∂R ``[3N, ...]`` and Cartesian mode displacements ``[M, N, 3]``."""
    modes = np.asarray(modes, np.float64)
    return np.tensordot(modes.reshape(len(modes), -1), np.asarray(derivatives, np.float64), axes=1)


def ir_intensities(dipole_derivatives, modes) -> np.ndarray:
    """IR intensities ``[M]`` (km/mol) of modes ``[M, N, 3]`` (Cartesian displacements ``M^-1/2 e``) from atomic
    polar tensors ∂μ/∂R ``[3N, 3]`` (e): ``A = N_A π/(3 c² 4πε₀) |∂μ/∂Q|²``."""
    dmu_dq = _mode_derivatives(dipole_derivatives, modes)
    return HARMONIC_IR_KM_MOL * np.sum(dmu_dq**2, axis=-1)


def raman_activities(polarizability_derivatives, modes) -> np.ndarray:
    """Raman activities ``[M]`` (Å⁴/amu) of modes ``[M, N, 3]`` from ∂α/∂R ``[3N, 3, 3]`` (Å²):
    ``S = 45 a'² + 7 γ'²``, ``a' = tr(∂α/∂Q)/3``, ``γ'² = ½[(xx−yy)² + (yy−zz)² + (zz−xx)²] + 3(xy² + yz² + zx²)``
    of the symmetrised ∂α/∂Q."""
    d = _mode_derivatives(polarizability_derivatives, modes)
    d = 0.5 * (d + np.swapaxes(d, -1, -2))
    xx, yy, zz = d[:, 0, 0], d[:, 1, 1], d[:, 2, 2]
    mean = (xx + yy + zz) / 3.0
    anisotropy = 0.5 * ((xx - yy) ** 2 + (yy - zz) ** 2 + (zz - xx) ** 2)
    anisotropy += 3.0 * (d[:, 0, 1] ** 2 + d[:, 1, 2] ** 2 + d[:, 2, 0] ** 2)
    return 45.0 * mean**2 + 7.0 * anisotropy


def wavenumbers_to_energies(frequencies_cm1) -> np.ndarray:
    """Vibrational quanta ``hν`` (eV) of wavenumbers (cm⁻¹), complex with imaginary ones ``1j·|hν|`` (negative
    wavenumbers), as ASE's thermochemistry classes take them."""
    frequencies = np.asarray(frequencies_cm1, np.float64)
    energies = np.abs(frequencies) * units.invcm
    return np.where(frequencies < 0, 1j * energies, energies + 0j)
