"""Energy + forces inference benchmark: jaxatom vs SchNetPack on the same CPU, in one run.

Cases: one aspirin molecule, and a batch of aspirin molecules (default 32) whose positions carry seeded Gaussian noise
(0.05 Å) so that they differ. Models: SchNet (128 features, 6 interactions) and PaiNN (128 features, 3 interactions),
both with a 5 Å cosine cutoff and 20 Gaussian radial basis functions, randomly initialised (timings do not depend on
the weights).

The driver (run with the jaxatom environment) times jaxatom in-process and SchNetPack in a subprocess, this same file
in worker mode run with the SchNetPack environment (``--spk-python``; see ``setup_schnetpack_env.sh``). The worker
imports only torch, schnetpack, ase and numpy. The two sides run one after the other, never concurrently.

Per model and case, the rows are:

* compile / first call: jaxatom ``pot.evaluate`` (trace + XLA compile + run); SchNetPack ``model(inputs)``;
* steady state: median over ``--repeats`` calls after ``--warmup`` calls, on inputs prepared once (jaxatom: a
  device-resident graph, with ``block_until_ready``);
* host graph build: jaxatom ``graph_from_atoms`` + ``batch_graphs`` + ``device_put``; SchNetPack ``AtomsConverter``
  with ``MatScipyNeighborList`` (median);
* end-to-end: jaxatom ``pot.predict(atoms_list)``; SchNetPack conversion + model + forces to numpy (median).

Usage (from the repository root)::

    python benchmarks/bench_inference.py --spk-python .venv-schnetpack/bin/python --repeats 20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ase import Atoms

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STRUCTURE = REPO_ROOT / ".." / "shared" / "structures" / "aspirin.xyz"
DEFAULT_SPK_PYTHON = REPO_ROOT / ".venv-schnetpack" / "bin" / "python"

CUTOFF = 5.0
N_RBF = 20
N_ATOM_BASIS = 128
#: Number of interaction blocks per model.
MODELS: dict[str, int] = {"schnet": 6, "painn": 3}
NOISE = 0.05  # Å, standard deviation of the batch perturbation

STAGES: dict[str, str] = {
    "first_call": "compile / first call",
    "steady": "steady state (median)",
    "host_prep": "host graph build",
    "end_to_end": "end-to-end predict",
}


# ----------------------------------------------------------------------------------------------------------- shared


@dataclass(frozen=True)
class Timing:
    """Wall-clock times (seconds) of one operation: its first call, and the median/min of the timed repeats."""

    first_s: float
    median_s: float
    min_s: float
    repeats: int


def time_call(fn: Callable[[], object], repeats: int, warmup: int) -> Timing:
    """Time ``fn``: once cold, then ``warmup`` untimed calls, then ``repeats`` timed calls."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return Timing(first_s=first, median_s=statistics.median(times), min_s=min(times), repeats=repeats)


def load_cases(structure: Path, batch_size: int, seed: int) -> dict[str, list[Atoms]]:
    """The benchmark inputs: ``single`` (the structure as read) and ``batch<B>`` (``B`` perturbed copies)."""
    from ase.io import read

    if not structure.is_file():
        raise SystemExit(
            f"structure file not found: {structure}\n"
            "pass --structure PATH to an aspirin geometry (e.g. shared/structures/aspirin.xyz); no fallback is used"
        )
    atoms = read(structure)
    rng = np.random.default_rng(seed)
    batch = []
    for _ in range(batch_size):
        copy = atoms.copy()
        copy.positions = atoms.positions + rng.normal(scale=NOISE, size=atoms.positions.shape)
        batch.append(copy)
    return {"single": [atoms], f"batch{batch_size}": batch}


def positions_checksum(cases: dict[str, list[Atoms]]) -> float:
    """Sum of all positions, so the driver can check that both processes benchmark identical inputs."""
    return float(sum(np.sum(a.positions) for atoms_list in cases.values() for a in atoms_list))


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def core_count() -> int:
    """CPU cores available to this process."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average, or ``None`` where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def record(framework: str, model: str, case: str, stage: str, timing: Timing) -> dict[str, Any]:
    """One result row."""
    return {"framework": framework, "model": model, "case": case, "stage": stage, **asdict(timing)}


# ------------------------------------------------------------------------------------------------ SchNetPack worker


def build_spk_model(name: str):
    """A SchNetPack ``NeuralNetworkPotential`` (energy + forces) with the benchmark's architecture, in eval mode."""
    import schnetpack as spk

    radial_basis = spk.nn.GaussianRBF(n_rbf=N_RBF, cutoff=CUTOFF)
    cutoff_fn = spk.nn.CosineCutoff(CUTOFF)
    representations = {"schnet": spk.representation.SchNet, "painn": spk.representation.PaiNN}
    representation = representations[name](
        n_atom_basis=N_ATOM_BASIS, n_interactions=MODELS[name], radial_basis=radial_basis, cutoff_fn=cutoff_fn
    )
    model = spk.model.NeuralNetworkPotential(
        representation=representation,
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[
            spk.atomistic.Atomwise(n_in=N_ATOM_BASIS, output_key="energy"),
            spk.atomistic.Forces(energy_key="energy", force_key="forces"),
        ],
    )
    return model.eval()


def bench_spk_case(model, converter, atoms_list: list[Atoms], repeats: int, warmup: int) -> dict[str, Timing]:
    """Time conversion, the forward + forces pass on converted inputs, and both together, for one model and case."""

    def forward(inputs: dict) -> dict:
        return model(dict(inputs))  # shallow copy: the model writes intermediate tensors into its input dict

    def end_to_end() -> dict:
        out = forward(converter(atoms_list))
        return {key: value.detach().numpy() for key, value in out.items()}

    host_prep = time_call(lambda: converter(atoms_list), repeats, warmup)
    inputs = converter(atoms_list)
    steady = time_call(lambda: forward(inputs), repeats, warmup)
    return {
        "first_call": Timing(steady.first_s, steady.first_s, steady.first_s, 1),
        "steady": steady,
        "host_prep": host_prep,
        "end_to_end": time_call(end_to_end, repeats, warmup),
    }


def run_spk_worker(args: argparse.Namespace) -> None:
    """Worker mode: benchmark SchNetPack and write the results as JSON to ``--worker-out``."""
    import schnetpack as spk
    import torch

    torch.set_num_threads(args.threads)
    cases = load_cases(args.structure, args.batch_size, args.seed)
    converter = spk.interfaces.AtomsConverter(
        neighbor_list=spk.transform.MatScipyNeighborList(cutoff=CUTOFF), dtype=torch.float32
    )
    rows, info = [], {}
    for name in args.models:
        torch.manual_seed(args.seed)
        model = build_spk_model(name)
        info[f"{name}_params"] = sum(p.numel() for p in model.parameters())
        for case, atoms_list in cases.items():
            info[f"{case}_edges"] = int(converter(atoms_list)["_idx_i"].shape[0])
            for stage, timing in bench_spk_case(model, converter, atoms_list, args.repeats, args.warmup).items():
                rows.append(record("schnetpack", name, case, stage, timing))
    info.update(
        torch=torch.__version__,
        schnetpack=spk.__version__,
        numpy=np.__version__,
        python=platform.python_version(),
        torch_threads=torch.get_num_threads(),
        torch_interop_threads=torch.get_num_interop_threads(),
        checksum=positions_checksum(cases),
    )
    Path(args.worker_out).write_text(json.dumps({"info": info, "rows": rows}))


# --------------------------------------------------------------------------------------------------- jaxatom driver


def bench_jax_case(pot, atoms_list: list[Atoms], repeats: int, warmup: int) -> tuple[dict[str, Timing], int, int]:
    """Time graph building, ``pot.evaluate`` on a device-resident graph and ``pot.predict``, for one model and case.

    Returns the timings and the real and padded edge counts of the batched graph.
    """
    import jax

    from jaxatom.graph import batch_graphs
    from jaxatom.neighbors import graph_from_atoms

    def build_graph():
        host = batch_graphs([graph_from_atoms(a, pot.cutoff) for a in atoms_list])
        return jax.block_until_ready(jax.device_put(host))

    host_prep = time_call(build_graph, repeats, warmup)
    graph = build_graph()
    steady = time_call(lambda: jax.block_until_ready(pot.evaluate(graph)), repeats, warmup)
    real_edges = int(np.count_nonzero(np.asarray(graph.edge_mask)))
    timings = {
        "first_call": Timing(steady.first_s, steady.first_s, steady.first_s, 1),
        "steady": steady,
        "host_prep": host_prep,
        "end_to_end": time_call(lambda: pot.predict(atoms_list), repeats, warmup),
    }
    return timings, real_edges, int(graph.senders.shape[0])


def run_jaxatom(args: argparse.Namespace, cases: dict[str, list[Atoms]]) -> tuple[list[dict[str, Any]], dict]:
    """Benchmark jaxatom in-process; returns result rows and environment info."""
    import flax
    import jax

    import jaxatom
    from jaxatom.nn import PaiNN, SchNet

    representations = {"schnet": SchNet, "painn": PaiNN}
    elements = sorted({int(z) for atoms_list in cases.values() for a in atoms_list for z in a.numbers})
    rows, info = [], {}
    for name in args.models:
        representation = representations[name](
            n_atom_basis=N_ATOM_BASIS, n_interactions=MODELS[name], cutoff=CUTOFF, n_rbf=N_RBF
        )
        pot = jaxatom.Potential.create(representation, elements=elements, seed=args.seed)
        info[f"{name}_params"] = sum(int(np.size(p)) for p in jax.tree.leaves(pot.params))
        for case, atoms_list in cases.items():
            timings, real, padded = bench_jax_case(pot, atoms_list, args.repeats, args.warmup)
            info[f"{case}_edges"] = f"{real} ({padded} padded)"
            rows.extend(record("jaxatom", name, case, stage, t) for stage, t in timings.items())
    info.update(
        jax=jax.__version__,
        jaxlib=metadata.version("jaxlib"),
        flax=flax.__version__,
        jaxatom=jaxatom.__version__,
        numpy=np.__version__,
        python=platform.python_version(),
        backend=f"{jax.default_backend()} ({jax.device_count()} device)",
    )
    return rows, info


def run_spk_subprocess(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict]:
    """Run this file in SchNetPack worker mode with ``--spk-python`` and return its rows and info."""
    if not Path(args.spk_python).exists():
        raise SystemExit(
            f"SchNetPack python not found: {args.spk_python}\n"
            "create it with benchmarks/setup_schnetpack_env.sh, pass --spk-python PATH, or use --no-schnetpack"
        )
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "schnetpack.json"
        command = [
            str(args.spk_python), str(Path(__file__).resolve()), "--worker", "schnetpack", "--worker-out", str(out),
            "--structure", str(args.structure), "--batch-size", str(args.batch_size), "--seed", str(args.seed),
            "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--threads", str(args.threads),
            "--models", *args.models,
        ]  # fmt: skip
        result = subprocess.run(command, env=env, check=False)
        if result.returncode != 0:
            raise SystemExit(f"SchNetPack worker failed with exit code {result.returncode}: {' '.join(command)}")
        data = json.loads(out.read_text())
    return data["rows"], data["info"]


# ---------------------------------------------------------------------------------------------------------- report


def fmt_ms(seconds: float | None) -> str:
    """Seconds as milliseconds for the table."""
    return "—" if seconds is None else f"{1e3 * seconds:.2f}"


def lookup(rows: Sequence[dict[str, Any]], framework: str, model: str, case: str, stage: str) -> float | None:
    """The reported time of one row: the first-call time for ``first_call``, the median otherwise."""
    for row in rows:
        if (row["framework"], row["model"], row["case"], row["stage"]) == (framework, model, case, stage):
            return row["first_s"] if stage == "first_call" else row["median_s"]
    return None


def ratio_table(rows: Sequence[dict[str, Any]], models: Sequence[str], cases: Sequence[str]) -> list[dict[str, Any]]:
    """Per model, case and stage: jaxatom and SchNetPack times and the ratio schnetpack / jaxatom."""
    table = []
    for model in models:
        for case in cases:
            for stage in STAGES:
                jax_s = lookup(rows, "jaxatom", model, case, stage)
                spk_s = lookup(rows, "schnetpack", model, case, stage)
                ratio = spk_s / jax_s if jax_s and spk_s is not None else None
                table.append({"model": model, "case": case, "stage": stage, "jaxatom_s": jax_s,
                              "schnetpack_s": spk_s, "spk_over_jaxatom": ratio})  # fmt: skip
    return table


def markdown(table: Sequence[dict[str, Any]]) -> str:
    """The ratio table as markdown (times in ms)."""
    lines = [
        "| model | case | stage | jaxatom (ms) | SchNetPack (ms) | SchNetPack / jaxatom |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in table:
        ratio = "—" if r["spk_over_jaxatom"] is None else f"{r['spk_over_jaxatom']:.2f}x"
        lines.append(
            f"| {r['model']} | {r['case']} | {STAGES[r['stage']]} | {fmt_ms(r['jaxatom_s'])} | "
            f"{fmt_ms(r['schnetpack_s'])} | {ratio} |"
        )
    return "\n".join(lines)


def header(args: argparse.Namespace, info: dict[str, dict], cases: dict[str, list[Atoms]]) -> str:
    """Environment and input description printed above the table."""
    jax_info, spk_info = info["jaxatom"], info.get("schnetpack", {})
    sizes = ", ".join(f"{case}: {sum(len(a) for a in atoms_list)} atoms" for case, atoms_list in cases.items())
    lines = [
        f"CPU: {cpu_model()} ({core_count()} cores available); OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
        f"jaxatom {jax_info['jaxatom']}, jax {jax_info['jax']}, jaxlib {jax_info['jaxlib']}, flax {jax_info['flax']}, "
        f"numpy {jax_info['numpy']}, python {jax_info['python']}; backend {jax_info['backend']}, "
        "XLA's own CPU thread pool (not set by --threads)",
    ]
    if spk_info:
        lines.append(
            f"schnetpack {spk_info['schnetpack']}, torch {spk_info['torch']}, numpy {spk_info['numpy']}, python "
            f"{spk_info['python']}; torch threads {spk_info['torch_threads']} (set to --threads {args.threads}), "
            f"interop {spk_info['torch_interop_threads']}"
        )
    lines.append(f"structure: {args.structure.resolve()} ({sizes}; batch noise {NOISE} Å, seed {args.seed})")
    lines.append(f"float32; repeats {args.repeats} after {args.warmup} warm-up calls; steady = median")
    start, end = info["load"]["start"], info["load"]["end"]
    if start is not None:
        lines.append(f"1-min load average: {start:.2f} before the run, {end:.2f} after")
        if start > 0.5 * core_count():
            lines.append("WARNING: the machine was busy before the run started; timings may be inflated and noisy")
    for name in args.models:
        counts = f"jaxatom {jax_info[f'{name}_params']}"
        if spk_info:
            counts += f", SchNetPack {spk_info[f'{name}_params']}"
        lines.append(f"{name} (n_interactions={MODELS[name]}) parameters: {counts}")
    for case in cases:
        edges = f"jaxatom {jax_info[f'{case}_edges']} (within cutoff)"
        if spk_info:
            edges += f", SchNetPack {spk_info[f'{case}_edges']} (within cutoff)"
        lines.append(f"{case} edges: {edges}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (shared by the driver and the worker)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--structure", type=Path, default=DEFAULT_STRUCTURE, help="aspirin geometry (any ASE format)")
    parser.add_argument("--batch-size", type=int, default=32, help="molecules in the batch case")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls after the first call")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch noise and of the model weights")
    parser.add_argument("--threads", type=int, default=core_count(), help="torch threads (default: all cores)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS), help="models to run")
    parser.add_argument("--spk-python", type=Path, default=DEFAULT_SPK_PYTHON, help="python of the SchNetPack env")
    parser.add_argument("--no-schnetpack", action="store_true", help="benchmark jaxatom only")
    parser.add_argument("--json", type=Path, help="also write all timings and environment info to this file")
    parser.add_argument("--worker", choices=["schnetpack"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.batch_size < 1 or args.threads < 1:
        parser.error("--repeats, --batch-size and --threads must be positive and --warmup non-negative")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the SchNetPack worker (subprocess) and then jaxatom, print the markdown table, optionally write JSON."""
    args = parse_args(argv)
    if args.worker == "schnetpack":
        run_spk_worker(args)
        return
    cases = load_cases(args.structure, args.batch_size, args.seed)
    rows: list[dict[str, Any]] = []
    info: dict[str, dict] = {"load": {"start": load_average()}}
    if not args.no_schnetpack:
        rows, info["schnetpack"] = run_spk_subprocess(args)
        if not np.isclose(info["schnetpack"]["checksum"], positions_checksum(cases), rtol=0, atol=1e-6):
            raise SystemExit("the SchNetPack worker saw different input positions than the driver")
    jax_rows, info["jaxatom"] = run_jaxatom(args, cases)
    rows.extend(jax_rows)
    info["load"]["end"] = load_average()
    table = ratio_table(rows, args.models, list(cases))
    print(header(args, info, cases))
    print()
    print(markdown(table))
    if args.json:
        meta = {"cpu": cpu_model(), "cores": core_count(), "threads": args.threads, "repeats": args.repeats,
                "warmup": args.warmup, "structure": str(args.structure.resolve()), "noise_angstrom": NOISE}  # fmt: skip
        args.json.write_text(json.dumps({"meta": meta, "info": info, "rows": rows, "table": table}, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
