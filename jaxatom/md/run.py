"""MD runs from a YAML configuration (what ``jaxatom md`` executes), with a short report: speed, energy drift,
temperature, and energy/temperature plots."""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from ase import Atoms
from ase.io import read

from jaxatom.errors import ConfigError, DataError
from jaxatom.graph import enable_x64
from jaxatom.md import analysis
from jaxatom.md.driver import simulate
from jaxatom.md.trajectory import read_trajectory

__all__ = ["DEFAULT_MD", "MDConfigError", "load_md_config", "md_run", "report"]

#: Settings of an MD run; every key of :func:`~jaxatom.md.simulate` may be given, plus these.
DEFAULT_MD: dict[str, Any] = {
    "model": None,
    "structure": None,
    "structure_index": -1,
    "output": "md/trajectory.h5",
    "precision": "float32",
    "steps": 2000,
}


class MDConfigError(ConfigError):
    """An MD configuration is incomplete or names unknown settings."""


def _simulate_options() -> set[str]:
    return {name for name in inspect.signature(simulate).parameters if name not in ("model", "atoms")}


def load_md_config(path: str | Path | None, overrides: Sequence[str] = ()) -> dict:
    """Read a YAML MD configuration, apply ``key=value`` overrides and validate names and required settings."""
    config: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"MD configuration {path} not found")
        config = yaml.safe_load(path.read_text()) or {}
        if not isinstance(config, Mapping):
            raise MDConfigError(f"{path} must hold a mapping of settings, got {type(config).__name__}")
        base = path.parent
        for key in ("model", "structure", "output"):  # relative paths are relative to the configuration file
            if isinstance(config.get(key), str) and not Path(config[key]).is_absolute():
                config[key] = str(base / config[key])
    config = {**copy.deepcopy(DEFAULT_MD), **config}
    for item in overrides:
        if "=" not in item:
            raise MDConfigError(f"an override must look like key=value, got {item!r}")
        key, raw = item.split("=", 1)
        config[key] = yaml.safe_load(raw)
    known = set(DEFAULT_MD) | _simulate_options()
    unknown = sorted(set(config) - known)
    if unknown:
        raise MDConfigError(f"unknown MD setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for key in ("model", "structure"):
        if not config[key]:
            raise MDConfigError(f"the MD configuration needs '{key}' (a model directory and a structure file)")
    if config["precision"] not in ("float32", "float64"):
        raise MDConfigError(f"precision must be float32 or float64, got {config['precision']!r}")
    return config


def md_run(config: Mapping, progress: bool = True):
    """Run the MD a configuration describes; returns the :class:`~jaxatom.md.MDRun`."""
    structure = config["structure"]
    atoms = structure if isinstance(structure, Atoms) else read(structure, index=config["structure_index"])
    options = {k: v for k, v in config.items() if k in _simulate_options()}
    options["progress"] = progress and options.get("progress", True)
    enable_x64(config["precision"] == "float64")
    try:
        return simulate(config["model"], atoms, **options)
    finally:
        if config["precision"] == "float64":
            enable_x64(False)


def report(output: str | Path) -> dict:
    """Summarise a trajectory: energy drift (eV/atom/ps) of the conserved quantity, its fluctuation, mean
    temperature, per replica; writes ``<output>.energies.png`` and ``<output>.temperature.png``."""
    output = Path(output)
    data = read_trajectory(output)
    n_atoms = len(data["species"])
    time_fs = data["time"]
    if len(time_fs) < 2:
        raise DataError(f"{output} has fewer than two frames; nothing to report")
    conserved = data["conserved_energy"]
    summary = {
        "frames": len(time_fs),
        "time_ps": float(time_fs[-1] - time_fs[0]) / 1000.0,
        "energy_drift_eV_per_atom_per_ps": np.atleast_1d(analysis.energy_drift(time_fs, conserved, n_atoms)).tolist(),
        "conserved_fluctuation_eV_per_atom": np.atleast_1d(analysis.energy_fluctuation(conserved, n_atoms)).tolist(),
        "max_conserved_change_eV_per_atom": (np.abs(conserved - conserved[0]).max(axis=0) / n_atoms).tolist(),
        "mean_temperature_K": data["temperature"].mean(axis=0).tolist(),
    }
    analysis.plot_energies(time_fs, data["potential_energy"][:, 0], data["kinetic_energy"][:, 0], conserved[:, 0],
                           output.with_name(output.name + ".energies.png"))  # fmt: skip
    analysis.plot_temperature(time_fs, data["temperature"][:, 0], output.with_name(output.name + ".temperature.png"))
    output.with_name(output.name + ".report.json").write_text(json.dumps(summary, indent=2))
    return summary
