"""``jaxatom quickstart``: train PaiNN on the shipped aspirin data, evaluate it, equilibrate at 300 K and run NVE MD.

Every stage is recorded in ``run_dir/quickstart_stages.json`` with the model it used; run again, a stage done with
the same model is reported from its files and skipped, and training goes on only if its budget was raised.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from ase import units

from jaxatom.files import write_atomically

__all__ = ["QUICKSTART", "EQUILIBRATION_PS", "run_quickstart"]

#: The quickstart run: PaiNN on the shipped GFN2-xTB aspirin data, sized for about 10 minutes on 2 CPU cores.
QUICKSTART = {
    "data": {"builtin": "aspirin", "train": 1000, "val": 100, "test": None, "seed": 0},
    "model": {"representation": {"type": "painn", "n_atom_basis": 64, "n_interactions": 3, "cutoff": 5.0,
                                 "n_rbf": 20}},
    "training": {"batch_size": 32, "learning_rate": 1e-3, "max_epochs": 10000, "plateau_patience": 10,
                 "plateau_cooldown": 2, "early_stopping_patience": 40},
}  # fmt: skip
#: Langevin at the NVE temperature before NVE starts (ps): the shipped frames are 500 K MD, not 300 K.
EQUILIBRATION_PS = 1.0
_TIMESTEP_FS = 0.5
_TEMPERATURE_K = 300.0
_STAGES_FILE = "quickstart_stages.json"


def _model_hash(run_dir: Path) -> str:
    return hashlib.sha256((run_dir / "best_model" / "params.msgpack").read_bytes()).hexdigest()


def _stages(run_dir: Path) -> dict[str, Any]:
    path = run_dir / _STAGES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _done(run_dir: Path, stage: str, settings: dict[str, Any]) -> bool:
    """Whether ``stage`` was completed with this model and these settings."""
    return _stages(run_dir).get(stage) == {"model": _model_hash(run_dir), **settings}


def _record(run_dir: Path, stage: str, settings: dict[str, Any]) -> None:
    stages = {**_stages(run_dir), stage: {"model": _model_hash(run_dir), **settings}}
    write_atomically(run_dir / _STAGES_FILE, json.dumps(stages, indent=2))


def _train(run_dir: Path, minutes: float, progress: bool) -> None:
    from jaxatom.train.run import load_run_config, train_run

    settings = {**QUICKSTART, "run_dir": str(run_dir)}
    settings["training"] = {**QUICKSTART["training"], "max_time_s": 60.0 * minutes}
    config_path = run_dir / "quickstart.yaml"
    config_path.write_text(yaml.safe_dump(settings, sort_keys=False))
    print(f"jaxatom quickstart: training PaiNN on 1000 GFN2-xTB aspirin frames for up to {minutes:g} min")
    train_run(load_run_config(config_path), progress=progress)


def _evaluate(run_dir: Path) -> dict:
    from jaxatom.train.run import evaluate_run

    if _done(run_dir, "evaluate", {}):
        print("jaxatom quickstart: this model was evaluated before; its test errors:")
        return json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    metrics = evaluate_run(run_dir)
    _record(run_dir, "evaluate", {})
    return metrics


def _md_config(run_dir: Path, name: str, steps: int, **settings) -> dict[str, Any]:
    return {"model": str(run_dir / "best_model"), "timestep_fs": _TIMESTEP_FS, "steps": max(steps, 20),
            "stride": 20, "frames_per_chunk": 100, "temperature_K": _TEMPERATURE_K, "precision": "float32",
            "output": str(run_dir / "md" / f"{name}.h5"), **settings}  # fmt: skip


def _steps(ps: float) -> int:
    return 20 * round(ps * 1000 / _TIMESTEP_FS / 20)


def _md_run(config: dict[str, Any], progress: bool):
    """Run (or continue) an MD stage; its trajectory of an earlier model is replaced."""
    from jaxatom.md.driver import CheckpointMismatch
    from jaxatom.md.run import md_run

    try:
        return md_run(config, progress=progress)
    except CheckpointMismatch:
        print(f"jaxatom quickstart: the model changed since {config['output']} was written; running it afresh")
        return md_run({**config, "overwrite": True}, progress=progress)


def _typical_frame(path: Path):
    """The frame of the equilibration's second half whose total energy is closest to the canonical mean at 300 K
    (its mean potential energy plus 3/2 N kT), as ``Atoms`` with momenta: NVE keeps the energy it starts with, and a
    21-atom molecule's energy fluctuates so much at 300 K that the last frame could start NVE tens of kelvin away."""
    from jaxatom.md import read_trajectory, trajectory_atoms

    data = read_trajectory(path)
    potential, kinetic = data["potential_energy"][:, 0], data["kinetic_energy"][:, 0]
    second_half = np.arange(len(potential) // 2, len(potential))
    n_atoms = len(data["species"])
    target = potential[second_half].mean() + 1.5 * n_atoms * units.kB * _TEMPERATURE_K  # canonical mean energy
    total = potential[second_half] + kinetic[second_half]
    chosen = second_half[np.argmin(np.abs(total - target))]
    return trajectory_atoms(path, frames=slice(chosen, chosen + 1))[0]


def _md(run_dir: Path, md_ps: float, progress: bool):
    """Langevin at 300 K for :data:`EQUILIBRATION_PS`, then NVE from a frame of typical energy (positions and
    velocities)."""
    from jaxatom.data.builtin import load_builtin

    start = load_builtin("aspirin").to_atoms(0)
    print(f"jaxatom quickstart: {EQUILIBRATION_PS:g} ps of Langevin MD at 300 K to equilibrate the 500 K start, "
          f"then {md_ps:g} ps of NVE MD (0.5 fs) with the trained model")  # fmt: skip
    _md_run(_md_config(run_dir, "equilibrate", _steps(EQUILIBRATION_PS), structure=start, ensemble="langevin",
                      friction_per_fs=0.01), progress=progress)  # fmt: skip
    equilibrated = _typical_frame(run_dir / "md" / "equilibrate.h5")
    return _md_run(_md_config(run_dir, "nve", _steps(md_ps), structure=equilibrated, ensemble="nve",
                             velocities="atoms"), progress=progress)  # fmt: skip


def run_quickstart(
    run_dir: str | Path,
    minutes: float,
    md_ps: float,
    progress: bool,
    print_evaluation: Callable[[Path, dict], None],
    print_md: Callable[[Any, dict], None],
) -> None:
    """Train (or continue training), evaluate and run MD in ``run_dir``, skipping stages already done with the
    current model; results are printed with ``print_evaluation`` and ``print_md`` (the CLI's)."""
    from jaxatom.md.run import report

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _train(run_dir, minutes, progress)
    print_evaluation(run_dir, _evaluate(run_dir))
    if md_ps <= 0:
        return
    nve = run_dir / "md" / "nve.h5"
    if _done(run_dir, "md", {"md_ps": md_ps}):
        print(f"jaxatom quickstart: the MD of this model was run before ({nve}); its report:")
        print_md(None, json.loads(nve.with_name(nve.name + ".report.json").read_text()), nve)
        return
    run = _md(run_dir, md_ps, progress)
    print_md(run, report(run.output, title="NVE MD of aspirin after 300 K Langevin, quickstart PaiNN 64×3"), nve)
    _record(run_dir, "md", {"md_ps": md_ps})
