"""Harmonic vibrational analysis with a :class:`~jaxatom.Potential`: Hessians, dipole and polarizability derivatives
by autodiff, geometry optimisation, normal modes with translations and rotations projected out, IR intensities
(km/mol), Raman activities (Å⁴/amu), broadened spectra and ASE thermochemistry. See ``docs/vibrations.md``.

Layering: this package sits beside :mod:`jaxatom.md`, above :mod:`jaxatom.calculators` (ASE's optimisers drive
jaxatom's calculator); it never imports ``jax_md``.
"""

from jaxatom.vibrations.analysis import HarmonicAnalysis, NotStationaryWarning, harmonic_analysis
from jaxatom.vibrations.derivatives import Derivatives, derivatives, hessian
from jaxatom.vibrations.modes import (
    CM1_PER_SQRT_EV_ANG2_AMU,
    NormalModes,
    external_basis,
    ir_intensities,
    is_linear,
    normal_modes,
    raman_activities,
)
from jaxatom.vibrations.optimize import NotConvergedError, Relaxation, relax
from jaxatom.vibrations.report import BroadenedSpectrum, broaden

__all__ = [
    "CM1_PER_SQRT_EV_ANG2_AMU",
    "BroadenedSpectrum",
    "Derivatives",
    "HarmonicAnalysis",
    "NormalModes",
    "NotConvergedError",
    "NotStationaryWarning",
    "Relaxation",
    "broaden",
    "derivatives",
    "external_basis",
    "harmonic_analysis",
    "hessian",
    "ir_intensities",
    "is_linear",
    "normal_modes",
    "raman_activities",
    "relax",
]
