"""The same training from Python (``fit``) and from the CLI (``jaxatom train``), each in a fresh process, and from
Python with the allocator setting turned off (``JAXATOM_TUNE_CPU_ALLOCATOR=0``, what every script got before
``import jaxatom`` applied it): seconds per epoch after the first (compile) epoch, from each run's ``metrics.csv``.

Usage (from the repository root, on a quiet machine)::

    python benchmarks/bench_entry_points.py --epochs 4 --rounds 2
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_flags, cpu_model  # noqa: E402

SETTINGS = {"train": 512, "val": 64, "batch_size": 32, "n_atom_basis": 64, "n_interactions": 3}

PYTHON = """
import sys
from jaxatom import Potential, data
from jaxatom.nn import PaiNN
from jaxatom.train import TrainConfig, fit, with_energy_offsets

run_dir, epochs = sys.argv[1], int(sys.argv[2])
ds = data.load_builtin("aspirin")
split = data.load_or_create_split(run_dir + ".split.npz", len(ds), train={train}, val={val})
train, val = ds.subset(split["train_idx"]), ds.subset(split["val_idx"])
model = PaiNN(n_atom_basis={n_atom_basis}, n_interactions={n_interactions}, cutoff=5.0, n_rbf=20)
pot = with_energy_offsets(Potential.create(model, elements=ds.elements), train)
fit(pot, train, val, TrainConfig(max_epochs=epochs, batch_size={batch_size}), run_dir, progress=False)
""".format(**SETTINGS)


def cli_command(run_dir: Path, epochs: int) -> list[str]:
    """``jaxatom train`` on a configuration file with the same settings as :data:`PYTHON`."""
    s = SETTINGS
    config = {
        "run_dir": str(run_dir),
        "data": {"builtin": "aspirin", "train": s["train"], "val": s["val"], "test": 0},
        "model": {"representation": {"type": "painn", "n_atom_basis": s["n_atom_basis"],
                                     "n_interactions": s["n_interactions"], "cutoff": 5.0, "n_rbf": 20}},
        "training": {"max_epochs": epochs, "batch_size": s["batch_size"]},
    }  # fmt: skip
    path = run_dir.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    return [sys.executable, "-m", "jaxatom.cli", "train", str(path), "--quiet"]


def epoch_seconds(run_dir: Path) -> list[float]:
    """Seconds per epoch after the first, from ``time_s`` (cumulative) in ``metrics.csv``."""
    with open(run_dir / "metrics.csv") as file:
        times = [float(row["time_s"]) for row in csv.DictReader(file)]
    return list(np.diff(times))


def run(path: str, epochs: int, work: Path, index: int) -> list[float]:
    run_dir = work / f"{path}_{index}"
    env = dict(os.environ)
    if path == "python_untuned":
        env["JAXATOM_TUNE_CPU_ALLOCATOR"] = "0"
    command = cli_command(run_dir, epochs) if path == "cli" else [sys.executable, "-c", PYTHON, str(run_dir),
                                                                  str(epochs)]  # fmt: skip
    subprocess.run(command, check=True, env=env, capture_output=True)
    return epoch_seconds(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each path, interleaved")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jaxatom_entry_"))
    paths = ("python", "cli", "python_untuned")
    times: dict[str, list[float]] = {path: [] for path in paths}
    try:
        for index in range(args.rounds):
            for path in paths:
                times[path] += run(path, args.epochs, work, index)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, flags: {cpu_flags()}")
    print(f"PaiNN {SETTINGS['n_atom_basis']}x{SETTINGS['n_interactions']}, aspirin, {SETTINGS['train']} training "
          f"+ {SETTINGS['val']} validation structures, batch {SETTINGS['batch_size']}")  # fmt: skip
    print("| entry point | s per epoch, median | min | epochs timed | vs CLI |")
    print("|---|---:|---:|---:|---:|")
    cli = float(np.median(times["cli"]))
    for path in paths:
        median = float(np.median(times[path]))
        print(f"| {path} | {median:.2f} | {min(times[path]):.2f} | {len(times[path])} | {cli / median:.2f}x |")


if __name__ == "__main__":
    main()
