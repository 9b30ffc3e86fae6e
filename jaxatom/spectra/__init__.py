"""Vibrational spectra from MD time series, in absolute units consistent with harmonic analysis (numpy only).

- :func:`power_spectrum` — velocity density of states (modes per cm⁻¹ when mass weighted at a temperature);
- :func:`ir_spectrum` — IR absorption in km/mol per cm⁻¹ from the dipole moment (e·Å);
- :func:`raman_spectrum` — isotropic/anisotropic Raman activity in Å⁴/amu per cm⁻¹ from the polarizability (Å³);
- :func:`spectra_from_trajectory` — all of these from a jaxatom HDF5 trajectory;
- :func:`write_spectrum_csv`, :func:`plot_spectra`, :func:`plot_spectrum` — files.

A band of a classical harmonic mode integrates (over cm⁻¹) to the harmonic IR intensity (km/mol) and Raman activity
(Å⁴/amu) with the default ``quantum_correction="harmonic"``. Frames are first, then replicas (averaged); times in fs.
See ``docs/spectra.md`` for the formulas, quantum corrections, windows, resolution, Nyquist and stride choice.
"""

from jaxatom.spectra.core import (
    CM1_PER_THZ,
    HARMONIC_IR_KM_MOL,
    IR_KM_MOL_FACTOR,
    QUANTUM_CORRECTIONS,
    WINDOWS,
    RamanSpectrum,
    Spectrum,
    SpectrumWarning,
    ir_spectrum,
    power_spectrum,
    quantum_correction_factor,
    raman_spectrum,
    vibrational_spectrum,
)
from jaxatom.spectra.export import describe, plot_spectra, plot_spectrum, write_spectrum_csv
from jaxatom.spectra.from_trajectory import spectra_from_trajectory

__all__ = [
    "CM1_PER_THZ",
    "HARMONIC_IR_KM_MOL",
    "IR_KM_MOL_FACTOR",
    "QUANTUM_CORRECTIONS",
    "WINDOWS",
    "RamanSpectrum",
    "Spectrum",
    "SpectrumWarning",
    "describe",
    "ir_spectrum",
    "plot_spectra",
    "plot_spectrum",
    "power_spectrum",
    "quantum_correction_factor",
    "raman_spectrum",
    "spectra_from_trajectory",
    "vibrational_spectrum",
    "write_spectrum_csv",
]
