"""Geometry optimisation to a minimum before a harmonic analysis: ASE's optimisers (BFGS by default) driven by
jaxatom's ASE calculator, which builds the exact neighbour list at every step (molecules and periodic cells alike).

Convergence is ASE's: the largest force on any atom below ``fmax`` (eV/Å) within ``steps`` steps. In float32 the
forces carry rounding noise of ~1e-5 eV/Å times the force scale; ``fmax`` much below 1e-4 eV/Å needs float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from jaxatom.errors import ConfigError, JaxAtomError

__all__ = ["Relaxation", "NotConvergedError", "relax"]


class NotConvergedError(JaxAtomError, RuntimeError):
    """A geometry optimisation ended above its force threshold (the structure is not a minimum)."""


@dataclass(frozen=True, eq=False)
class Relaxation:
    """The outcome of :func:`relax`.

    Attributes:
        atoms: the optimised structure (a copy, without calculator).
        converged: whether the largest force fell below ``fmax``.
        steps: optimiser steps taken.
        max_force: largest force on an atom at the end (eV/Å).
        fmax: the threshold (eV/Å).
    """

    atoms: Atoms
    converged: bool
    steps: int
    max_force: float
    fmax: float

    def message(self) -> str:
        """One line describing the outcome, with the fix when it did not converge."""
        if self.converged:
            return f"optimisation converged in {self.steps} steps (largest force {self.max_force:.2g} eV/Å)"
        return (
            f"geometry optimisation did not converge in {self.steps} steps: largest residual force "
            f"{self.max_force:.3g} eV/Å > fmax {self.fmax:g} eV/Å; allow more steps, loosen fmax, or start from a "
            "better structure (a harmonic analysis of a non-minimum gives meaningless frequencies)"
        )


def relax(
    potential, atoms: Atoms, fmax: float = 1e-3, steps: int = 1000, optimizer=None, logfile: str | None = None
) -> Relaxation:
    """Optimise ``atoms`` (not modified) to a minimum of ``potential`` with an ASE optimiser.

    Args:
        potential: a :class:`~jaxatom.Potential` with an energy output.
        atoms: the starting structure; constraints set on it are kept.
        fmax: force threshold (eV/Å) on the largest atomic force.
        steps: most optimiser steps.
        optimizer: an ASE optimiser class (default ``ase.optimize.BFGS``), e.g. ``ase.optimize.FIRE``.
        logfile: the optimiser's log (``"-"`` for stdout; default silent).

    Returns:
        A :class:`Relaxation`; it does not raise when the optimisation fails to converge (check ``converged``).
    """
    from ase.optimize import BFGS

    from jaxatom.calculators import JaxAtomCalculator

    if not fmax > 0 or not np.isfinite(fmax):
        raise ConfigError(f"fmax must be a positive force in eV/Å, got {fmax!r}")
    if int(steps) < 0:
        raise ConfigError(f"steps must be a non-negative integer, got {steps!r}")
    work = atoms.copy()
    work.calc = JaxAtomCalculator(potential)
    optimizer = (optimizer or BFGS)(work, logfile=logfile)
    converged = bool(optimizer.run(fmax=fmax, steps=int(steps)))
    max_force = float(np.max(np.linalg.norm(work.get_forces(), axis=1)))
    work.calc = None
    return Relaxation(atoms=work, converged=converged, steps=int(optimizer.nsteps), max_force=max_force, fmax=fmax)
