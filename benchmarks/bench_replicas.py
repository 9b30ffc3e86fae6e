"""Replica throughput: atom-steps per second of jaxatom's MD as the number of independent replicas grows.

Work: NVE (velocity Verlet, 0.5 fs, Maxwell-Boltzmann 300 K) of ``R`` copies of aspirin (the shipped structure, as in
``bench_md.py``) advanced together by ``jaxatom.md.simulate(n_replicas=R)``, PaiNN (128 features, 3 interactions) with
fresh weights, float32. ``R`` grows by ``--factor`` (2) from ``--start`` until ``--cap`` or until the chunk no longer
fits in the device's memory (the driver refuses it before it runs, or XLA runs out): the largest ``R`` that ran and the
first that did not are reported. Steps/s are the driver's own (compilation excluded); atom-steps/s = steps/s × R ×
atoms. The roofline columns are per step of all replicas (XLA's cost analysis of the compiled chunk,
``benchmarks/_roofline.py``).

Usage (from the repository root)::

    python benchmarks/bench_replicas.py --cap 64 --steps 50
    python -m benchmarks.suite --only replicas --device gpu
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Column, busy_warning, command_line, environment, load_average, markdown_table  # noqa: E402
from bench_md import STRIDE, TEMPERATURE_K, TIMESTEP_FS, jaxatom_potential, load_structure  # noqa: E402

MEMORY_WORDS = ("RESOURCE_EXHAUSTED", "out of memory", "does not fit", "would not fit", "free memory")


def run_replicas(potential, atoms, replicas: int, steps: int, seed: int) -> dict[str, Any]:
    """One ``simulate`` run of ``replicas`` copies; its timing and the per-step cost of its chunk."""
    from _roofline import capture_md_chunks, md_step_cost

    from jaxatom.md import simulate

    with capture_md_chunks() as chunks:
        run = simulate(potential, atoms, steps=steps, timestep_fs=TIMESTEP_FS, temperature_K=TEMPERATURE_K,
                       stride=STRIDE, output=None, seed=seed, progress=False, ensemble="nve",
                       n_replicas=replicas)  # fmt: skip
    rate = run.timing["steps_per_s"]
    return {"replicas": replicas, "atoms": replicas * len(atoms), "status": "ok", "compile_s": run.timing["compile_s"],
            "steps": steps, "steps_per_s": rate, "atom_steps_per_s": rate * replicas * len(atoms),
            **(md_step_cost(chunks) or {})}  # fmt: skip


def run(args: argparse.Namespace, limits: dict | None = None) -> dict[str, Any]:
    """Double the replicas until the cap or the memory limit; returns ``{"meta", "rows", "header", "markdown"}``."""
    from _roofline import COLUMNS, with_roofline

    load_start = load_average()
    atoms = load_structure(args.structure)
    potential = jaxatom_potential(args.model, atoms, args.seed, "fresh")
    rows, replicas = [], args.start
    while replicas <= args.cap:
        print(f"[replicas] {replicas}", file=sys.stderr, flush=True)
        try:
            row = run_replicas(potential, atoms, replicas, args.steps, args.seed)
        except Exception as err:  # noqa: BLE001  (out of memory has several types: XLA's, jaxatom's check, numpy's)
            text = f"{type(err).__name__}: {err}"
            if not any(word.lower() in text.lower() for word in MEMORY_WORDS):
                raise
            rows.append(
                {"replicas": replicas, "atoms": replicas * len(atoms), "status": "out of memory: " + text[:160]}
            )
            break
        rows.append(with_roofline(row, 1.0 / row["steps_per_s"], limits) if limits else row)
        replicas *= args.factor
    done = [r for r in rows if r["status"] == "ok"]
    best = max(done, key=lambda r: r["atom_steps_per_s"]) if done else None
    columns = [
        Column("replicas", "replicas", "d"),
        Column("atoms", "atoms", "d"),
        Column("compile (s)", "compile_s"),
        Column("steps/s", "steps_per_s", ".3g"),
        Column("atom-steps/s", "atom_steps_per_s", ".3g"),
        Column("ns per atom-step", lambda r: r.get("atom_steps_per_s") and 1e9 / r["atom_steps_per_s"], ".3g"),
        *(COLUMNS if limits else ()),
        Column("status", "status", numeric=False),
    ]
    stop = "the cap" if rows and rows[-1]["status"] == "ok" else "memory"
    lines = [
        f"command: {command_line()}",
        f"aspirin ({len(atoms)} atoms) x R replicas, NVE {TIMESTEP_FS} fs, {args.model} (fresh weights), float32, "
        f"{args.steps} steps per size (stride {STRIDE}); R x {args.factor} from {args.start} up to {args.cap} or the "
        f"memory limit (stopped by {stop})",
    ]
    if best:
        lines.append(f"best: {best['atom_steps_per_s']:.3g} atom-steps/s at {best['replicas']} replicas")
    load = busy_warning(load_start, load_average())
    if load:
        lines.append(load)
    meta = {"command": command_line(), "environment": environment(), **{k: str(v) for k, v in vars(args).items()}}
    return {"meta": meta, "rows": rows, "header": "\n".join(lines), "markdown": markdown_table(columns, rows)}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--structure", type=Path, help="molecule (any ASE format; default: the shipped aspirin)")
    parser.add_argument("--model", choices=["painn", "schnet"], default="painn", help="architecture")
    parser.add_argument("--start", type=int, default=1, help="first replica count")
    parser.add_argument("--cap", type=int, default=64, help="largest replica count tried")
    parser.add_argument("--factor", type=int, default=2, help="replica count growth per size")
    parser.add_argument("--steps", type=int, default=50, help="steps per size (rounded up to whole strides)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the velocities")
    parser.add_argument("--no-roofline", action="store_true", help="leave out the roofline columns")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    if min(args.start, args.cap, args.steps) < 1 or args.factor < 2:
        parser.error("--start, --cap and --steps must be positive, --factor at least 2")
    args.steps = STRIDE * -(-args.steps // STRIDE)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run, print the header and the table, optionally write JSON."""
    args = parse_args(argv)
    from _roofline import run_and_report

    run_and_report(run, args, not args.no_roofline, args.json)


if __name__ == "__main__":
    main()
