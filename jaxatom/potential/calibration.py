"""The calibration of an ensemble's spread: per-output scales that turn the members' standard deviation into a
calibrated uncertainty (``uncertainty = scale × std``), and a threshold on the per-structure largest calibrated force
uncertainty, stored as ``calibration.json`` beside the members of an ensemble artifact.

Fitted by :func:`jaxatom.train.calibration.calibrate`; read by :class:`~jaxatom.potential.PotentialEnsemble` and the
uncertainty gate of MD (:func:`jaxatom.md.simulate`, ``uncertainty_action``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from jaxatom.errors import ConfigError

__all__ = ["Calibration", "CALIBRATION_FILE"]

#: File name of the calibration inside an ensemble directory.
CALIBRATION_FILE = "calibration.json"


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Scales of an ensemble's spread, fitted on ``n_structures`` validation structures.

    Attributes:
        energy_scale: ``s_E`` with energy uncertainty ``s_E × energy_std`` (per structure, eV); None without energies.
        forces_scale: ``s_F`` with force uncertainty ``s_F × forces_std`` (per component, eV/Å; the per-atom norm
            scales alike); None without forces.
        forces_max_scale: the same fit for the per-structure largest per-atom force error and spread (informative;
            the gate uses ``forces_scale``).
        forces_threshold: threshold (eV/Å) on a structure's largest calibrated per-atom force uncertainty
            ``s_F × max_atoms |σ_F|``, above which a structure counts as uncertain.
        threshold_quantile: the quantile of the validation structures' largest calibrated force uncertainty the
            threshold was set to, or None when it was given as a number.
        n_structures: validation structures.
        n_force_components: force components used for ``forces_scale``.
    """

    energy_scale: float | None
    forces_scale: float | None
    forces_max_scale: float | None
    forces_threshold: float | None
    threshold_quantile: float | None
    n_structures: int
    n_force_components: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Calibration:
        """The calibration :meth:`to_dict` wrote; unknown or missing keys raise :class:`ConfigError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        if set(values) != names:
            unknown, missing = sorted(set(values) - names), sorted(names - set(values))
            raise ConfigError(f"not a calibration: unknown keys {unknown}, missing keys {missing}")
        return cls(**values)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON file ``path`` (atomically: temporary file + rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        """Read a file :meth:`save` wrote."""
        return cls.from_dict(json.loads(Path(path).read_text()))
