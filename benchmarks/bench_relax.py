"""Batched geometry optimisation on the device vs ASE's FIRE one structure at a time, same model, one process.

Work: 64 different molecules — 32 aspirin and 32 ethanol frames of the shipped GFN2-xTB MD at 500 K
(``jaxatom.data.load_builtin``, frames spread evenly over the 3000) — relaxed to ``--fmax`` (default 0.05 eV/Å) within
``--steps`` FIRE steps each. Model: PaiNN (``--features`` 64, ``--interactions`` 3, 5 Å cosine cutoff, 20 Gaussians)
with random weights (seed 0) and an energy head with a physical minimum (``BondedEnergy``: Morse wells per
element pair + 0.1 × a random PaiNN atomwise energy); the cost per step is PaiNN's, and both sides follow the
same FIRE (ASE's defaults) on the same potential, so they take the same number of steps per structure up to float32
rounding. float32.

* *batched*: ``jaxatom.relax.relax_batch(potential, structures, fmax, steps)`` — one padded batch, compiled
  ``while_loop`` chunks of ``--chunk`` steps, neighbour lists with ``cutoff + --skin`` rebuilt on the host per
  structure when needed. Wall time of the whole call; compile time (``timing["compile_s"]``, ahead-of-time XLA
  compile of the chunk) reported separately and subtracted in the "run" column.
* *ASE*: for each structure ``ase.optimize.FIRE(atoms).run(fmax, steps)`` with ``jaxatom.calculators.JaxAtomCalculator``
  (one jitted energy + forces call per step, exact neighbour list per step on the host). The first structure's
  compile is counted separately (warm-up on structure 0, then every structure is timed).

Reported: wall time, compile time, total and per-structure steps, steps per second (structure-steps / run time),
converged counts, the speed-up (ASE run time / batched run time), and the largest difference of final energies and
positions between the two sides; with the CPU's vector flags and the load (``uptime``) before and after.

Usage (from the repository root)::

    python benchmarks/bench_relax.py --json benchmarks/out/relax.json
    python benchmarks/bench_relax.py --structures 8 --steps 50   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import cpu_flags  # noqa: E402


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def structures(n: int, seed: int = 0):
    """``n`` different molecules: alternating aspirin and ethanol frames spread over the shipped trajectories."""
    from jaxatom.data import load_builtin

    sets = [load_builtin("aspirin"), load_builtin("ethanol")]
    picks = [np.linspace(0, len(s) - 1, (n + 1 - k) // 2).astype(int) for k, s in enumerate(sets)]
    out = []
    for k in range(n):
        data, frame = sets[k % 2], picks[k % 2][k // 2]
        atoms = data.to_atoms(int(frame))
        atoms.calc = None
        out.append(atoms)
    return out


#: Morse well (depth eV, width 1/Å, r0 Å) per element pair of the benchmark's energy; bonds by covalent length.
WELLS = {(1, 1): (0.2, 1.5, 2.4), (1, 6): (4.0, 1.8, 1.09), (1, 8): (4.5, 2.2, 0.97), (6, 6): (3.6, 2.0, 1.45),
         (6, 8): (3.7, 2.0, 1.3), (8, 8): (0.5, 2.0, 2.6)}  # fmt: skip


def BondedEnergy():  # noqa: N802 (a module factory, named like the module it returns)
    """An energy head with a physical minimum on top of PaiNN's features: Morse wells per pair within 2 Å of
    their ``r0`` plus 0.1 × a random PaiNN atomwise energy (random weights alone have no minimum: molecules
    collapse). The representation runs in full every step, so the cost is PaiNN's."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from jaxatom.nn import Atomwise
    from jaxatom.nn.heads import OutputSpec
    from jaxatom.nn.layers import safe_norm

    table = np.zeros((3, 10, 10))
    table[0], table[1], table[2] = 0.1, 1.5, 3.0
    for (a, b), well in WELLS.items():
        table[:, a, b] = table[:, b, a] = well

    class Bonded(nn.Module):
        @property
        def key(self) -> str:
            return "energy"

        @property
        def outputs(self):
            return (OutputSpec("energy", False, (), "eV", "sum", "energy"),)

        @nn.compact
        def __call__(self, features, graph):
            d = safe_norm(graph.edge_vectors())
            depth, width, r0 = jnp.asarray(table)[:, graph.species[graph.receivers], graph.species[graph.senders]]
            envelope = jnp.where(d < 4.5, 0.5 * (jnp.cos(jnp.pi * d / 4.5) + 1.0), 0.0)
            morse = depth * ((1.0 - jnp.exp(-width * (d - r0))) ** 2 - 1.0) * envelope * graph.edge_mask
            pairs = 0.5 * jax.ops.segment_sum(morse, graph.node_graph[graph.receivers], num_segments=graph.n_graph)
            return {"energy": pairs + 0.1 * Atomwise(name="neural")(features, graph)["energy"]}

    return Bonded()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--structures", type=int, default=64)
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=50)
    parser.add_argument("--skin", type=float, default=1.0)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--interactions", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    load_before = uptime()

    from ase.optimize import FIRE

    import jaxatom
    from jaxatom.calculators import JaxAtomCalculator
    from jaxatom.nn import PaiNN
    from jaxatom.relax import relax_batch

    painn = PaiNN(n_atom_basis=args.features, n_interactions=args.interactions, cutoff=5.0, n_rbf=20)
    potential = jaxatom.Potential.create(painn, elements=[1, 6, 8], seed=0, heads=[BondedEnergy()])
    mols = structures(args.structures)

    timing: dict = {}
    batched = relax_batch(potential, mols, fmax=args.fmax, steps=args.steps, chunk=args.chunk, skin=args.skin,
                          timing=timing)  # fmt: skip
    batch_run = timing["wall_s"] - timing["compile_s"]

    calc = JaxAtomCalculator(potential)
    tic = time.perf_counter()
    warm = mols[0].copy()
    warm.calc = calc
    warm.get_forces()
    ase_compile = time.perf_counter() - tic
    ase_steps, ase_converged, ase_results = [], 0, []
    tic = time.perf_counter()
    for atoms in mols:
        work = atoms.copy()
        work.calc = calc
        optimiser = FIRE(work, logfile=None)
        ase_converged += bool(optimiser.run(fmax=args.fmax, steps=args.steps))
        ase_steps.append(int(optimiser.nsteps))
        ase_results.append((work.get_potential_energy(), work.positions.copy()))
    ase_run = time.perf_counter() - tic

    steps = [r.steps for r in batched]
    energy_diff = max(abs(r.energy - e) for r, (e, _) in zip(batched, ase_results, strict=True))
    position_diff = max(np.abs(r.atoms.positions - p).max() for r, (_, p) in zip(batched, ase_results, strict=True))
    report = {
        "structures": len(mols),
        "atoms": int(sum(len(a) for a in mols)),
        "model": f"PaiNN {args.features}x{args.interactions}, 5 A, 20 Gaussians, Morse + 0.1 PaiNN energy, float32",
        "fmax": args.fmax,
        "max_steps": args.steps,
        "batched": {
            "wall_s": timing["wall_s"], "compile_s": timing["compile_s"], "run_s": batch_run,
            "compiles": timing["compiles"], "chunks": timing["chunks"], "rebuilds": timing["rebuilds"],
            "steps_total": int(sum(steps)), "steps_max": int(max(steps)),
            "converged": sum(r.converged for r in batched), "stopped": sum(r.error is not None for r in batched),
            "structure_steps_per_s": sum(steps) / batch_run,
        },
        "ase": {
            "wall_s": ase_compile + ase_run, "compile_s": ase_compile, "run_s": ase_run, "steps_total": sum(ase_steps),
            "steps_max": max(ase_steps), "converged": ase_converged, "structure_steps_per_s": sum(ase_steps) / ase_run,
        },
        "speedup_run": ase_run / batch_run,
        "speedup_wall": (ase_compile + ase_run) / timing["wall_s"],
        "same_steps": int(sum(a == b for a, b in zip(steps, ase_steps, strict=True))),
        "max_energy_diff_eV": energy_diff,
        "max_position_diff_A": float(position_diff),
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "uptime_before": load_before,
        "uptime_after": uptime(),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return report


if __name__ == "__main__":
    main()
