"""Harmonic vibrational analysis of a structure with a :class:`~jaxatom.Potential`: optimise to a minimum, take the
Hessian and the dipole/polarizability derivatives by autodiff, project out translations and rotations, and report
frequencies, normal modes, IR intensities, Raman activities and ASE thermochemistry."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from jaxatom.errors import ConfigError
from jaxatom.md.state import masses_of
from jaxatom.vibrations.derivatives import derivatives
from jaxatom.vibrations.modes import (
    ir_intensities,
    is_linear,
    normal_modes,
    raman_activities,
    wavenumbers_to_energies,
)
from jaxatom.vibrations.optimize import NotConvergedError, relax
from jaxatom.vibrations.report import INTENSITY_UNITS, BroadenedSpectrum, broaden, mode_table, plot_sticks, write_csv

__all__ = ["HarmonicAnalysis", "harmonic_analysis", "NotStationaryWarning"]


class NotStationaryWarning(UserWarning):
    """The analysed structure has residual forces above the threshold: its frequencies are not those of a minimum."""


@dataclass(frozen=True, eq=False)
class HarmonicAnalysis:
    """Harmonic vibrations of one structure of ``N`` atoms, ``M`` internal modes (``3N − 6``; linear ``3N − 5``;
    periodic ``3N − 3``), ascending.

    Attributes:
        atoms: the analysed (optimised) structure.
        energy: its potential energy (eV).
        hessian: ``[3N, 3N]`` energy Hessian (eV/Å²), index ``3 * atom + axis``.
        frequencies_cm1: ``[M]`` wavenumbers (cm⁻¹), imaginary ones negative.
        modes: ``[M, N, 3]`` Cartesian displacements ``M^-1/2 e`` of the modes (Å per Å·amu^½).
        ir_intensities_km_mol: ``[M]`` IR intensities (km/mol), or None without a dipole output.
        raman_activities: ``[M]`` Raman activities (Å⁴/amu), or None without a polarizability output.
        dipole_derivatives: ``[3N, 3]`` atomic polar tensors ∂μ/∂R (e), or None.
        polarizability_derivatives: ``[3N, 3, 3]`` ∂α/∂R (Å²), or None.
        linear: whether the molecule was treated as linear.
        max_force: largest residual force (eV/Å) at the analysed structure.
        fmax: the force threshold (eV/Å) of a stationary point.
        optimization_steps: optimiser steps taken, or None without optimisation.
    """

    atoms: Atoms
    energy: float
    hessian: np.ndarray
    frequencies_cm1: np.ndarray
    modes: np.ndarray
    ir_intensities_km_mol: np.ndarray | None
    raman_activities: np.ndarray | None
    dipole_derivatives: np.ndarray | None
    polarizability_derivatives: np.ndarray | None
    linear: bool
    max_force: float
    fmax: float
    optimization_steps: int | None = None

    @property
    def converged(self) -> bool:
        """Whether the structure is a stationary point (largest force below ``fmax``)."""
        return self.max_force <= self.fmax

    @property
    def periodic(self) -> bool:
        return bool(self.atoms.pbc.any())

    @property
    def n_imaginary(self) -> int:
        """Number of imaginary (negative) frequencies; a minimum has none."""
        return int(np.sum(self.frequencies_cm1 < 0))

    @property
    def vibrational_energies(self) -> np.ndarray:
        """``[M]`` quanta hν (eV), complex ``1j·|hν|`` for imaginary modes (ASE's convention)."""
        return wavenumbers_to_energies(self.frequencies_cm1)

    @property
    def zero_point_energy(self) -> float:
        """Harmonic zero-point energy ½ Σ hν over the real modes (eV)."""
        return 0.5 * float(np.sum(self.vibrational_energies.real))

    def _columns(self) -> dict[str, np.ndarray | None]:
        return {"ir_intensity_km_mol": self.ir_intensities_km_mol, "raman_activity_A4_amu": self.raman_activities}

    def summary(self) -> str:
        """A text table of the modes (frequency, IR intensity, Raman activity) with the energy, residual force and
        zero-point energy."""
        labels = {"IR km/mol": self.ir_intensities_km_mol, "Raman Å⁴/amu": self.raman_activities}
        header = ["mode", "cm⁻¹", *(label for label, values in labels.items() if values is not None)]
        rows = [header, *mode_table(self.frequencies_cm1, self._columns())]
        widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
        lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
        lines.insert(1, "  ".join("-" * width for width in widths))
        kind = "periodic" if self.periodic else "linear molecule" if self.linear else "molecule"
        state = "stationary" if self.converged else "NOT A STATIONARY POINT"
        notes = [
            f"{self.atoms.get_chemical_formula()} ({kind}), {len(self.frequencies_cm1)} modes; energy "
            f"{self.energy:.6f} eV; largest force {self.max_force:.2g} eV/Å (fmax {self.fmax:g}, {state})",
            f"zero-point energy {self.zero_point_energy:.4f} eV; imaginary modes: {self.n_imaginary} "
            "(listed as negative numbers in the CSV, with 'i' here)",
        ]
        return "\n".join(notes + lines)

    def spectrum(
        self, width_cm1: float = 10.0, kind: str = "ir", shape: str = "lorentzian", grid_cm1=None
    ) -> BroadenedSpectrum:
        """The ``"ir"`` (km/mol) or ``"raman"`` (Å⁴/amu) sticks broadened with unit-area line shapes of full width
        ``width_cm1`` (``shape`` ``"lorentzian"`` or ``"gaussian"``) on ``grid_cm1``; see :func:`.report.broaden`."""
        sticks = self._sticks(kind)
        grid, intensity = broaden(self.frequencies_cm1, sticks, width_cm1, shape, grid_cm1)
        return BroadenedSpectrum(grid, intensity, kind, INTENSITY_UNITS[kind])

    def _sticks(self, kind: str) -> np.ndarray:
        sticks = {"ir": self.ir_intensities_km_mol, "raman": self.raman_activities}
        if kind not in sticks:
            raise ConfigError(f"kind must be 'ir' or 'raman', got {kind!r}")
        if sticks[kind] is None:
            needs = "a dipole_moment" if kind == "ir" else "a polarizability"
            raise ConfigError(f"a {kind} spectrum needs {needs} output, which this model has not")
        return sticks[kind]

    def plot(self, path, width_cm1: float = 10.0, shape: str = "lorentzian", title: str | None = None) -> Path:
        """Stick and broadened spectra (IR and/or Raman; frequencies alone for energy-only models) as a PNG, titled
        ``title`` (e.g. ``"PaiNN, ethanol"``)."""
        panels = [(f"{kind.upper() if kind == 'ir' else 'Raman'} ({INTENSITY_UNITS[kind]})", self._sticks(kind),
                   self.spectrum(width_cm1, kind, shape)) for kind in ("ir", "raman")
                  if (self.ir_intensities_km_mol if kind == "ir" else self.raman_activities) is not None]  # fmt: skip
        if not panels:
            grid, curve = broaden(self.frequencies_cm1, np.ones_like(self.frequencies_cm1), width_cm1, shape)
            panels = [("modes", np.ones_like(self.frequencies_cm1), BroadenedSpectrum(grid, curve, "modes", "modes"))]
        return plot_sticks(self.frequencies_cm1, panels, path, title)

    def to_csv(self, path) -> Path:
        """Write ``mode, frequency_cm1, ir_intensity_km_mol, raman_activity_A4_amu`` (those present) to ``path``."""
        return write_csv(path, self.frequencies_cm1, self._columns())

    def ideal_gas_thermo(self, symmetry_number: int = 1, spin: float = 0.0, ignore_imaginary: bool = False):
        """ASE's ``IdealGasThermo`` for this molecule (geometry linear/nonlinear from the analysis, the potential
        energy, the vibrational energies). ``symmetry_number`` is the rotational σ (e.g. 2 for water), ``spin`` the
        total electronic spin (0 for singlets). E.g. ``.get_gibbs_energy(temperature=298.15, pressure=101325)``."""
        from ase.thermochemistry import IdealGasThermo

        if self.periodic:
            raise ConfigError("an ideal-gas treatment needs a molecule; use harmonic_thermo() for periodic structures")
        geometry = "monatomic" if len(self.atoms) == 1 else "linear" if self.linear else "nonlinear"
        return IdealGasThermo(
            vib_energies=list(self.vibrational_energies), geometry=geometry, potentialenergy=self.energy,
            atoms=self.atoms, symmetrynumber=symmetry_number, spin=spin, vib_selection="exact",
            ignore_imag_modes=ignore_imaginary,
        )  # fmt: skip

    def harmonic_thermo(self, ignore_imaginary: bool = False):
        """ASE's ``HarmonicThermo`` (all internal modes treated as harmonic vibrations, e.g. an adsorbate or a
        crystal at the Γ point) with this structure's potential energy. E.g. ``.get_helmholtz_energy(300.0)``."""
        from ase.thermochemistry import HarmonicThermo

        return HarmonicThermo(list(self.vibrational_energies), potentialenergy=self.energy,
                              ignore_imag_modes=ignore_imaginary)  # fmt: skip


def harmonic_analysis(
    potential,
    atoms: Atoms,
    optimize: bool = True,
    fmax: float = 1e-3,
    steps: int = 1000,
    optimizer=None,
    linear: bool | None = None,
    allow_unconverged: bool = False,
    logfile: str | None = None,
) -> HarmonicAnalysis:
    """Harmonic frequencies, normal modes, IR intensities and Raman activities of ``atoms`` with ``potential``.

    Args:
        potential: a :class:`~jaxatom.Potential` with an energy output; IR intensities need a ``dipole_moment`` and
            Raman activities a ``polarizability`` output.
        atoms: the structure (a molecule, or a periodic cell analysed at the Γ point); not modified.
        optimize: first optimise to a minimum (ASE's BFGS with jaxatom's calculator; :func:`.optimize.relax`).
        fmax: force threshold (eV/Å) of the optimisation and of the stationary-point check.
        steps: most optimisation steps.
        optimizer: an ASE optimiser class instead of BFGS.
        linear: treat a molecule as linear (five zero modes) or not; default detected from the moments of inertia.
        allow_unconverged: analyse anyway (with a :class:`NotStationaryWarning`) when the optimisation does not
            converge, instead of raising :class:`NotConvergedError`.
        logfile: the optimiser's log (``"-"`` for stdout).

    Without ``optimize`` the structure is analysed as given; a residual force above ``fmax`` gives a
    :class:`NotStationaryWarning` naming it. Run in float64 (``jaxatom.enable_x64(True)``) for clean low frequencies.
    """
    steps_taken = None
    if optimize:
        relaxation = relax(potential, atoms, fmax=fmax, steps=steps, optimizer=optimizer, logfile=logfile)
        if not relaxation.converged and not allow_unconverged:
            raise NotConvergedError(relaxation.message())
        atoms, steps_taken = relaxation.atoms, relaxation.steps
    else:
        atoms = atoms.copy()
        atoms.calc = None
    result = derivatives(potential, atoms)
    if result.max_force > fmax:
        worst = int(np.argmax(np.linalg.norm(result.forces, axis=1)))
        warnings.warn(
            f"the analysed structure is not a stationary point: largest residual force {result.max_force:.3g} eV/Å "
            f"(atom {worst}) > fmax {fmax:g} eV/Å; its frequencies are not those of a minimum (optimise first)",
            NotStationaryWarning,
            stacklevel=2,
        )
    return _analyse(atoms, result, linear, fmax, steps_taken)


def _analyse(atoms: Atoms, result, linear: bool | None, fmax: float, steps: int | None) -> HarmonicAnalysis:
    masses = masses_of(atoms.numbers)
    periodic = bool(atoms.pbc.any())
    linear = (not periodic and is_linear(atoms.positions, masses)) if linear is None else bool(linear)
    modes = normal_modes(result.hessian, masses, atoms.positions, project=True, periodic=periodic, linear=linear)
    internal_frequencies, internal_modes = modes.frequencies_cm1[modes.vibrational], modes.modes[modes.vibrational]
    apt, dalpha = result.dipole_derivatives, result.polarizability_derivatives
    return HarmonicAnalysis(
        atoms=atoms,
        energy=result.energy,
        hessian=result.hessian,
        frequencies_cm1=internal_frequencies,
        modes=internal_modes,
        ir_intensities_km_mol=None if apt is None else ir_intensities(apt, internal_modes),
        raman_activities=None if dalpha is None else raman_activities(dalpha, internal_modes),
        dipole_derivatives=apt,
        polarizability_derivatives=dalpha,
        linear=linear,
        max_force=result.max_force,
        fmax=float(fmax),
        optimization_steps=steps,
    )
