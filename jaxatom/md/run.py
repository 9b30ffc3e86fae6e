"""MD runs from a YAML configuration (what ``jaxatom md`` executes), with a short report: speed, energy drift,
temperature, and energy/temperature plots."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.io import read
from pydantic import ConfigDict, Field, field_validator, model_validator

from jaxatom.config import StrictModel
from jaxatom.errors import ConfigError, DataError
from jaxatom.graph import enable_x64
from jaxatom.inputs import read_md_settings
from jaxatom.md import analysis
from jaxatom.md.driver import simulate
from jaxatom.md.ensembles import ENSEMBLES, Ensemble, ensemble_from_settings
from jaxatom.md.trajectory import read_trajectory, require_equal_atoms
from jaxatom.potential import Potential, load_model
from jaxatom.potential.ensemble import ensemble_members

__all__ = ["MDConfig", "DEFAULT_MD", "MDConfigError", "SIMULATE_OPTIONS", "load_md_config", "md_run", "report"]


class MDConfigError(ConfigError):
    """An MD configuration is incomplete or names unknown settings."""


class MDConfig(StrictModel):
    """Settings of an MD run (``jaxatom md CONFIG.yaml``): the model, the starting structure, where the trajectory
    goes, the precision, and every argument of :func:`~jaxatom.md.simulate` with its default (see there for the
    meaning of each). Relative paths in a YAML file are relative to that file. ``fidelity`` runs a multi-fidelity
    model at that level (a name or index; default: its target, see :meth:`~jaxatom.potential.Potential.at_fidelity`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    title = "MD configuration"

    model: Any = Field(None, validate_default=True)
    structure: Any = Field(None, validate_default=True)
    structure_index: int | str = -1
    output: str | None = "md/trajectory.h5"
    precision: str = "float32"
    fidelity: str | int | None = None
    steps: int = 2000
    timestep_fs: float = 0.5
    ensemble: str = "nve"
    temperature_K: float | tuple[float, ...] = 300.0
    friction_per_fs: float = 0.01
    tau_fs: float = 100.0
    n_replicas: int | None = None
    n_beads: int = 8
    rpmd_thermostat: str = "pile_l"
    centroid_tau_fs: float = 100.0
    pile_lambda: float = 1.0
    pressure: float = 0.0
    pressure_unit: str = "GPa"
    barostat_tau_fs: float = 1000.0
    compressibility_per_GPa: float = 0.01
    cell_flexibility: str = "isotropic"
    stride: int | None = None
    frames_per_chunk: int | None = None
    overwrite: bool = False
    seed: int = 0
    velocities: str = "maxwell_boltzmann"
    remove_rotation: bool = False
    neighbors: str = "auto"
    skin: float = 1.0
    write_forces: bool = False
    observables: tuple[str, ...] = ()
    write_beads: bool = False
    electric_field: tuple[float, float, float] | None = None
    uncertainty_threshold: float | str | None = None
    uncertainty_action: str | None = None
    shard_replicas: bool | None = None
    progress: bool = True

    @field_validator("model", "structure", mode="before")
    @classmethod
    def _required(cls, value: Any, info) -> Any:
        if value is None or (isinstance(value, str | list | tuple) and not value):
            raise ValueError(f"the MD configuration needs '{info.field_name}' (a model directory and a structure file)")
        return value

    @field_validator("uncertainty_action")
    @classmethod
    def _uncertainty_action(cls, value: str | None) -> str | None:
        from jaxatom.md.gate import ACTIONS

        if value is not None and value not in ACTIONS:
            raise ValueError(f"must be one of {', '.join(ACTIONS)} (or null for no gate), got {value!r}")
        return value

    @field_validator("velocities")
    @classmethod
    def _velocities(cls, value: str) -> str:
        if value not in ("maxwell_boltzmann", "atoms"):
            raise ValueError(f"velocities must be 'maxwell_boltzmann' or 'atoms', got {value!r}")
        return value

    @field_validator("precision")
    @classmethod
    def _precision(cls, value: str) -> str:
        if value not in ("float32", "float64"):
            raise ValueError(f"precision must be float32 or float64, got {value!r}")
        return value

    @field_validator("ensemble")
    @classmethod
    def _ensemble(cls, value: str) -> str:
        if value not in ENSEMBLES:
            raise ValueError(f"unknown ensemble {value!r}; choose one of {', '.join(ENSEMBLES)}")
        return value

    @field_validator("rpmd_thermostat")
    @classmethod
    def _thermostat(cls, value: str) -> str:
        from jaxatom.md.rpmd import THERMOSTATS

        if value not in THERMOSTATS:
            raise ValueError(f"unknown ring-polymer thermostat {value!r}; choose one of {', '.join(THERMOSTATS)}")
        return value

    @field_validator("neighbors")
    @classmethod
    def _neighbors(cls, value: str) -> str:
        from jaxatom.md.neighbors import MODES

        if value not in MODES:
            raise ValueError(f"neighbors must be one of {', '.join(MODES)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _ensemble_settings(self) -> MDConfig:
        """Settings given for another ensemble than the chosen one are a mistake worth naming."""
        ensemble = self.ensemble_spec()
        fields = {f.name for f in dataclasses.fields(ensemble)}
        given = {"thermostat" if key == "rpmd_thermostat" else key: key for key in self.model_fields_set}
        unused = sorted(key for name, key in given.items() if key in ENSEMBLE_SETTINGS and name not in fields)
        if unused:
            raise ValueError(f"{', '.join(unused)} do not apply to the {self.ensemble} ensemble; remove them")
        return self

    def ensemble_spec(self) -> Ensemble:
        """The :class:`~jaxatom.md.ensembles.Ensemble` the flat ensemble settings describe."""
        return ensemble_from_settings(self.ensemble, {k: getattr(self, k) for k in ENSEMBLE_SETTINGS}, strict=False)

    def simulate_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~jaxatom.md.simulate` (all but ``model`` and ``atoms``), the ensemble as an
        object."""
        return {"ensemble": self.ensemble_spec(), **{name: getattr(self, name) for name in SIMULATE_OPTIONS}}


#: The flat settings that configure the ensemble (each applies to the ensembles that have it).
ENSEMBLE_SETTINGS = ("temperature_K", "friction_per_fs", "tau_fs", "n_beads", "rpmd_thermostat", "centroid_tau_fs",
                     "pile_lambda", "remove_rotation", "pressure", "pressure_unit", "barostat_tau_fs",
                     "compressibility_per_GPa", "cell_flexibility")  # fmt: skip
#: The settings that are :func:`~jaxatom.md.simulate`'s keyword arguments; the rest say what to simulate and how.
_NOT_OPTIONS = ("model", "structure", "structure_index", "precision", "fidelity", "ensemble", *ENSEMBLE_SETTINGS)
SIMULATE_OPTIONS = tuple(name for name in MDConfig.model_fields if name not in _NOT_OPTIONS)
#: Defaults of an MD run (the schema's), for reference.
DEFAULT_MD: dict[str, Any] = {name: field.default for name, field in MDConfig.model_fields.items()}


def load_md_config(path: str | Path | None, overrides: Sequence[str] = ()) -> MDConfig:
    """Read a YAML MD configuration, apply ``key=value`` overrides (values parsed as YAML) and validate it: unknown
    settings, missing model or structure, and wrong types or choices raise an :class:`MDConfigError` (``jaxatom md``
    also checks that the files exist first: :func:`~jaxatom.inputs.check_md_files`)."""
    try:
        config = read_md_settings(path, overrides)
    except ConfigError as err:
        raise MDConfigError(str(err)) from None
    unknown = sorted(set(config) - set(MDConfig.model_fields))
    if unknown:
        known = ", ".join(sorted(MDConfig.model_fields))
        raise MDConfigError(f"unknown MD setting(s) {', '.join(unknown)}; known: {known}")
    return MDConfig.load(config, where=None if path is None else str(path), error=MDConfigError)


def _at_fidelity(model, fidelity: str | int) -> Potential:
    """The single model (a :class:`Potential` or its file) at ``fidelity`` (see :meth:`Potential.at_fidelity`)."""
    if isinstance(model, str | os.PathLike):
        if ensemble_members(model):
            raise MDConfigError("fidelity applies to one multi-fidelity model, not to an ensemble; remove fidelity")
        model = load_model(model)
    if not isinstance(model, Potential):
        raise MDConfigError(f"fidelity needs a model file or a Potential, got {type(model).__name__}")
    try:
        return model.at_fidelity(fidelity)
    except ConfigError as err:
        raise MDConfigError(str(err)) from None


def md_run(config: MDConfig | Mapping, progress: bool = True):
    """Run the MD a configuration describes (an :class:`MDConfig`, or a mapping of its settings, where
    ``structure`` may be an ``ase.Atoms``); returns the :class:`~jaxatom.md.MDRun`."""
    if not isinstance(config, MDConfig):
        config = MDConfig.load(config, error=MDConfigError)
    structure = config.structure
    atoms = structure if isinstance(structure, Atoms) else read(structure, index=config.structure_index)
    options = config.simulate_options()
    options["progress"] = progress and options["progress"]
    model = config.model if config.fidelity is None else _at_fidelity(config.model, config.fidelity)
    enable_x64(config.precision == "float64")
    try:
        return simulate(model, atoms, **options)
    finally:
        if config.precision == "float64":
            enable_x64(False)


def report(output: str | Path, title: str | None = None) -> dict:
    """Summarise a trajectory: simulated time (``time_ps``, from the file's times: the run starts at t = 0), energy
    drift (eV/atom/ps) of the conserved quantity, its fluctuation, mean temperature, per replica; writes
    ``<output>.energies.png`` and ``<output>.temperature.png`` (replica 0), titled with ``title`` (e.g. the model and
    the structure: ``"PaiNN on aspirin"``) and the run's ensemble, atoms and time step."""
    output = Path(output)
    data = read_trajectory(output)
    require_equal_atoms(data, "the MD report (energy drift per atom)")
    n_atoms = len(data["species"])
    time_fs = data["time"]
    if len(time_fs) < 2:
        raise DataError(f"{output} has fewer than two frames; nothing to report")
    conserved = data["conserved_energy"]
    summary = {
        "frames": len(time_fs),
        "time_ps": float(time_fs[-1]) / 1000.0,
        "energy_drift_eV_per_atom_per_ps": np.atleast_1d(analysis.energy_drift(time_fs, conserved, n_atoms)).tolist(),
        "conserved_fluctuation_eV_per_atom": np.atleast_1d(analysis.energy_fluctuation(conserved, n_atoms)).tolist(),
        "max_conserved_change_eV_per_atom": (np.abs(conserved - conserved[0]).max(axis=0) / n_atoms).tolist(),
        "mean_temperature_K": data["temperature"].mean(axis=0).tolist(),
    }
    heading = _report_title(data["attrs"], n_atoms, title)
    analysis.plot_energies(time_fs, data["potential_energy"][:, 0], data["kinetic_energy"][:, 0], conserved[:, 0],
                           output.with_name(output.name + ".energies.png"), heading)  # fmt: skip
    analysis.plot_temperature(time_fs, data["temperature"][:, 0], output.with_name(output.name + ".temperature.png"),
                              _target_temperature(data["attrs"]), heading)  # fmt: skip
    output.with_name(output.name + ".report.json").write_text(json.dumps(summary, indent=2))
    return summary


def _report_title(attrs: dict, n_atoms: int, title: str | None) -> str:
    """``title`` (if any) and the run: ensemble, atoms, time step, and the replica shown."""
    replicas = int(attrs.get("n_replicas", 1))
    run = f"{str(attrs.get('ensemble', 'MD')).upper()}, {n_atoms} atoms, {attrs.get('timestep_fs', '?')} fs steps"
    run += f", replica 0 of {replicas}" if replicas > 1 else ""
    return f"{title} — {run}" if title else run


def _target_temperature(attrs: dict) -> float | None:
    """The thermostat's target temperature of replica 0 (K), or None for NVE (its temperature only starts it)."""
    target = attrs.get("temperature_K")
    if attrs.get("ensemble") == "nve" or target is None:
        return None
    return float(target[0] if np.ndim(target) else target)
