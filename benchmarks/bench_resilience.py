"""What the safety of MD output costs: steps/s with and without a trajectory, the host time spent per chunk on the
write protocol, and how long a resume after ``kill -9`` takes to reopen the trajectory.

Work: NVE of aspirin (the shipped GFN2-xTB data's first frame) with PaiNN (64 features, 3 interactions, 5 Å, 20
radial functions; the quickstart model size, random weights), float32, 0.5 fs, 300 K, for 1 molecule and 64
replicas. Each case runs ``jaxatom.md.simulate`` twice with the same settings: frames kept in memory (``output=None``)
and written to HDF5 with a checkpoint after every chunk (``frames_per_chunk`` 10 at stride 10, i.e. a checkpoint
every 100 steps: ten times more often than the default, to make the protocol's cost visible); steps/s is wall-clock
(the whole loop, host work included) without compilation. The protocol's host
operations (disk reservation, free-space checks, append, checkpoint with ``fsync``) are timed directly by wrapping
them. Recovery: a trajectory of the given size is written by a SWMR writer that is then SIGKILLed, and
``open_for_append`` is timed on it (clearing HDF5's consistency flags) and on the fallback route (rewriting it).

With ``--baseline-tree`` (e.g. ``git worktree add /tmp/base d2a624b``, the commit before the write protocol) the
one-replica run with output is also timed in subprocesses against that tree and this one, alternating, best of three.
This measures jaxatom's own write protocol; no SchNetPack run is part of it.

Usage (from the repository root, on a quiet machine)::

    python benchmarks/bench_resilience.py --steps 1000 --recovery-mb 200 --baseline-tree /tmp/base
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import core_count, cpu_flags, cpu_model, load_average  # noqa: E402

import jaxatom  # noqa: E402
from jaxatom.data import load_builtin  # noqa: E402
from jaxatom.md import driver, hdf5_files, simulate, trajectory  # noqa: E402
from jaxatom.nn import PaiNN  # noqa: E402

PROTOCOL = {
    "reserve": (driver, "_reserve"),
    "append": (trajectory.TrajectoryWriter, "append"),
    "checkpoint": (driver, "_save_checkpoint"),
    "space checks": (driver, "_require_space"),
}


def timed_protocol() -> dict[str, float]:
    """Wrap the protocol's host operations so their total wall time is recorded; returns the running totals."""
    totals = dict.fromkeys(PROTOCOL, 0.0)
    for name, (owner, attribute) in PROTOCOL.items():
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def wrapper(*args, _original=original, _name=name, **kwargs):
            tic = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                totals[_name] += time.perf_counter() - tic

        setattr(owner, attribute, wrapper)
    return totals


def md_case(potential, atoms, replicas: int, steps: int, directory: Path, totals: dict) -> list[str]:
    settings = dict(steps=steps, timestep_fs=0.5, n_replicas=replicas, stride=10, frames_per_chunk=10, progress=False)
    memory = simulate(potential, atoms, **settings)
    for key in totals:
        totals[key] = 0.0
    written = simulate(potential, atoms, output=directory / f"md{replicas}.h5", **settings)
    chunks = steps // 100
    host = sum(totals.values())
    per_chunk = ", ".join(f"{k} {1e3 * v / chunks:.2f}" for k, v in totals.items())
    rates = [steps / (run.timing["wall_s"] - run.timing["compile_s"]) for run in (memory, written)]
    return [
        f"| {replicas} | {rates[0]:.0f} | {rates[1]:.0f} | {rates[0] / rates[1]:.3f} "
        f"| {1e3 * host / chunks:.2f} ({per_chunk}) | {memory.timing['compile_s']:.1f} |"
    ]


#: Run in a subprocess against a source tree: wall-clock steps/s (without compilation) of aspirin NVE with output.
WRITTEN_RUN = """
import sys, tempfile, jaxatom
from jaxatom.data import load_builtin
from jaxatom.md import simulate
from jaxatom.nn import PaiNN
model = PaiNN(n_atom_basis=64, n_interactions=3, cutoff=5.0, n_rbf=20)
potential = jaxatom.Potential.create(model, elements=[1, 6, 8], seed=0)
steps = int(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    run = simulate(potential, load_builtin("aspirin").to_atoms(0), steps=steps, timestep_fs=0.5, stride=10,
                   frames_per_chunk=10, output=tmp + "/md.h5", progress=False)
print(steps / (run.timing["wall_s"] - run.timing["compile_s"]))
"""


def compare_rows(baseline: Path, steps: int, repeats: int = 3) -> list[str]:
    """Steps/s with output of the code in ``baseline`` (e.g. a worktree of the commit before the write protocol)
    and of this tree, alternating runs, best of ``repeats`` each."""
    trees = {"baseline": baseline.resolve(), "this tree": Path(__file__).resolve().parents[1]}
    best = dict.fromkeys(trees, 0.0)
    for _ in range(repeats):
        for name, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": str(tree)}
            done = subprocess.run([sys.executable, "-c", WRITTEN_RUN, str(steps)], env=env, capture_output=True,
                                  text=True, check=True)  # fmt: skip
            best[name] = max(best[name], float(done.stdout.split()[-1]))
    ratio = best["baseline"] / best["this tree"]
    return [f"| {baseline} | {best['baseline']:.0f} | {best['this tree']:.0f} | {ratio:.3f} |"]


def killed_trajectory(path: Path, megabytes: int) -> None:
    """A trajectory-like file of ``megabytes`` written in SWMR mode by a process that is then SIGKILLed."""
    code = (
        "import h5py, numpy as np, os, signal, sys\n"
        f"f = h5py.File(r'{path}', 'w', libver='latest')\n"
        "d = f.create_dataset('positions', (0, 64, 21, 3), 'f4', maxshape=(None, 64, 21, 3), chunks=(64, 64, 21, 3))\n"
        "f.swmr_mode = True\n"
        f"frames = {megabytes} * 2**20 // (64 * 21 * 3 * 4)\n"
        "for start in range(0, frames, 100):\n"
        "    d.resize(start + 100, axis=0); d[start:] = np.random.rand(100, 64, 21, 3); f.flush()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False)


def recovery_rows(directory: Path, megabytes: int) -> list[str]:
    rows = []
    for route in ("clear flags", "rewrite"):
        path = directory / f"killed_{route.replace(' ', '_')}.h5"
        killed_trajectory(path, megabytes)
        size = path.stat().st_size / 1e6
        if route == "rewrite":  # as on an HDF5 build without the clear_status_flags property
            hdf5_files._open_clearing_status_flags = _refuse
        tic = time.perf_counter()
        hdf5_files.open_for_append(path).close()
        rows.append(f"| {route} | {size:.0f} | {time.perf_counter() - tic:.3f} |")
    return rows


def _refuse(path):
    raise OSError("benchmark: take the rewrite route")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--steps", type=int, default=2000, help="MD steps per run (multiple of 100)")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--recovery-mb", type=int, default=200, help="size of the killed trajectory (MB)")
    parser.add_argument("--baseline-tree", type=Path, help="a source tree to compare steps/s with output against")
    args = parser.parse_args()
    load_before = load_average()
    atoms = load_builtin("aspirin").to_atoms(0)
    potential = jaxatom.Potential.create(
        PaiNN(n_atom_basis=64, n_interactions=3, cutoff=5.0, n_rbf=20), elements=[1, 6, 8], seed=0
    )
    totals = timed_protocol()
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        directory = Path(tmp)
        md = [
            row
            for replicas in args.replicas
            for row in md_case(potential, atoms, replicas, args.steps, directory, totals)
        ]
        recovery = recovery_rows(directory, args.recovery_mb)
    print(f"CPU: {cpu_model()} ({core_count()} cores; flags: {cpu_flags()}); jaxatom {jaxatom.__version__}")
    print(f"command: python {shlex.join(sys.argv)}; 1-min load {load_before:.2f} before, {load_average():.2f} after")
    print(
        "\n| replicas | steps/s in memory | steps/s with HDF5 + checkpoints | ratio | host ms per chunk | compile s |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(md))
    print("\n| reopen after kill -9 | file MB | seconds |\n|---|---|---|")
    print("\n".join(recovery))
    if args.baseline_tree is not None:
        print("\n| baseline tree | baseline steps/s with output | this tree | ratio |\n|---|---|---|---|")
        print("\n".join(compare_rows(args.baseline_tree, args.steps)))


if __name__ == "__main__":
    main()
