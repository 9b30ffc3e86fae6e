"""ASE calculators for the oracle tests, importable by spawned worker processes as ``tests.oracle_calculators:...``."""

from __future__ import annotations

import os
import time

from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT


class FlakyEMT(EMT):
    """EMT, except for structures whose ``info["fail"]`` says otherwise: ``"raise"`` raises, ``"nan"`` returns a NaN
    energy, ``"hang"`` sleeps for a minute first, ``"die"`` ends the worker process."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        mode = atoms.info.get("fail") if atoms is not None else None
        if mode == "raise":
            raise RuntimeError("SCF did not converge")
        if mode == "hang":
            time.sleep(60)
        if mode == "die":
            os._exit(1)
        super().calculate(atoms, properties, system_changes)
        if mode == "nan":
            self.results["energy"] = float("nan")


class Springs(Calculator):
    """Every atom on a spring to the origin (``energy = k/2 Σ r²``); takes only ``k``, so wrong arguments fail."""

    implemented_properties = ("energy", "forces")

    def __init__(self, k: float = 1.0):
        super().__init__()
        self.k = k

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": 0.5 * self.k * float((atoms.positions**2).sum()), "forces": -self.k * atoms.positions}


class EMTWithSprings(EMT):
    """EMT plus springs that pull every atom towards the centroid (``k/2 Σ |r − r̄|²``): an "expensive" level that
    differs smoothly from EMT, for multi-fidelity tests."""

    def __init__(self, k: float = 0.5):
        super().__init__()
        self.k = k

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        offsets = atoms.positions - atoms.positions.mean(axis=0)
        self.results["energy"] += 0.5 * self.k * float((offsets**2).sum())
        self.results["forces"] = self.results["forces"] - self.k * offsets
