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

The structure is the first frame of the shipped aspirin data (``jaxatom.data.load_builtin("aspirin")``) unless
``--structure`` names a file. SchNetPack runs in ``--spk-python``, by default this Python when it imports schnetpack
(``benchmarks/_common.spk_python``); without it the SchNetPack rows are skipped with a note. The steady-state rows carry
the roofline columns of ``benchmarks/_roofline.py`` (XLA's cost analysis of the jitted ``pot.evaluate``; SchNetPack's
GFLOP/s counts jaxatom's FLOPs for the same work).

Usage (from the repository root)::

    python benchmarks/bench_inference.py --repeats 20 --json out.json
    python -m benchmarks.suite --only inference
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Column,
    Timing,
    busy_warning,
    core_count,
    cpu_flags,
    cpu_model,
    environment,
    load_average,
    markdown_table,
    read_structure,
    run_spk_worker,
    schnetpack_side,
    structure_file,
    time_call,
    torch_device,
    torch_sync,
    write_json,
)

if TYPE_CHECKING:
    from ase import Atoms


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


def load_cases(structure: Path | None, batch_size: int, seed: int) -> dict[str, list[Atoms]]:
    """The benchmark inputs: ``single`` (the structure as read, or the shipped aspirin) and ``batch<B>`` (``B``
    perturbed copies)."""
    atoms = read_structure(structure)
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


def bench_spk_case(model, converter, atoms_list: list[Atoms], repeats: int, warmup: int,
                   sync: Callable[[Any], Any] = lambda x: x) -> dict[str, Timing]:  # fmt: skip
    """Time conversion, the forward + forces pass on converted inputs, and both together, for one model and case
    (``sync`` waits for the device's queued work)."""

    def forward(inputs: dict) -> dict:
        return sync(model(dict(inputs)))  # shallow copy: the model writes intermediate tensors into its input dict

    def end_to_end() -> dict:
        out = forward(converter(atoms_list))
        return {key: value.detach().cpu().numpy() for key, value in out.items()}

    host_prep = time_call(lambda: converter(atoms_list), repeats, warmup)
    inputs = converter(atoms_list)
    steady = time_call(lambda: forward(inputs), repeats, warmup)
    return {
        "first_call": Timing(steady.first_s, steady.first_s, steady.first_s, 1),
        "steady": steady,
        "host_prep": host_prep,
        "end_to_end": time_call(end_to_end, repeats, warmup),
    }


def run_spk_worker_mode(args: argparse.Namespace) -> None:
    """Worker mode: benchmark SchNetPack and write the results as JSON to ``--worker-out``."""
    import schnetpack as spk
    import torch

    torch.set_num_threads(args.threads)
    device = torch_device(args.spk_device)
    cases = load_cases(args.structure, args.batch_size, args.seed)
    converter = spk.interfaces.AtomsConverter(
        neighbor_list=spk.transform.MatScipyNeighborList(cutoff=CUTOFF), dtype=torch.float32, device=device
    )
    rows, info = [], {}
    for name in args.models:
        torch.manual_seed(args.seed)
        model = build_spk_model(name).to(device)
        info[f"{name}_params"] = sum(p.numel() for p in model.parameters())
        for case, atoms_list in cases.items():
            info[f"{case}_edges"] = int(converter(atoms_list)["_idx_i"].shape[0])
            for stage, timing in bench_spk_case(
                model, converter, atoms_list, args.repeats, args.warmup, torch_sync(device)
            ).items():
                rows.append(record("schnetpack", name, case, stage, timing))
    info.update(
        torch=torch.__version__,
        device=device,
        schnetpack=spk.__version__,
        numpy=np.__version__,
        python=platform.python_version(),
        torch_threads=torch.get_num_threads(),
        torch_interop_threads=torch.get_num_interop_threads(),
        checksum=positions_checksum(cases),
    )
    write_json(args.worker_out, {"info": info, "rows": rows})


# --------------------------------------------------------------------------------------------------- jaxatom driver


def bench_jax_case(pot, atoms_list: list[Atoms], repeats: int, warmup: int) -> tuple[dict[str, Timing], dict]:
    """Time graph building, ``pot.evaluate`` on a device-resident graph and ``pot.predict``, for one model and case.

    Returns the timings and facts about the work: the real and padded edge counts of the batched graph and XLA's
    cost analysis (``flops``, ``bytes``) of the jitted ``pot.evaluate`` the steady state times.
    """
    import jax
    from _roofline import compiled_cost

    from jaxatom.graph import batch_graphs
    from jaxatom.neighbors import graph_from_atoms

    def build_graph():
        host = batch_graphs([graph_from_atoms(a, pot.cutoff) for a in atoms_list])
        return jax.block_until_ready(jax.device_put(host))

    host_prep = time_call(build_graph, repeats, warmup)
    graph = build_graph()
    steady = time_call(lambda: pot.evaluate(graph), repeats, warmup)
    timings = {
        "first_call": Timing(steady.first_s, steady.first_s, steady.first_s, 1),
        "steady": steady,
        "host_prep": host_prep,
        "end_to_end": time_call(lambda: pot.predict(atoms_list), repeats, warmup),
    }
    work = {
        "real_edges": int(np.count_nonzero(np.asarray(graph.edge_mask))),
        "padded_edges": int(graph.senders.shape[0]),
        **compiled_cost(lambda g: pot.evaluate(g), graph),
    }
    return timings, work


def run_jaxatom(args: argparse.Namespace, cases: dict[str, list[Atoms]]) -> tuple[list[dict[str, Any]], dict]:
    """Benchmark jaxatom in-process; returns result rows and environment info (with each case's cost analysis)."""
    import flax
    import jax

    import jaxatom
    from jaxatom.nn import PaiNN, SchNet

    representations = {"schnet": SchNet, "painn": PaiNN}
    elements = sorted({int(z) for atoms_list in cases.values() for a in atoms_list for z in a.numbers})
    rows, info = [], {"cost": {}}
    for name in args.models:
        representation = representations[name](
            n_atom_basis=N_ATOM_BASIS, n_interactions=MODELS[name], cutoff=CUTOFF, n_rbf=N_RBF
        )
        pot = jaxatom.Potential.create(representation, elements=elements, seed=args.seed)
        info[f"{name}_params"] = sum(int(np.size(p)) for p in jax.tree.leaves(pot.params))
        for case, atoms_list in cases.items():
            timings, work = bench_jax_case(pot, atoms_list, args.repeats, args.warmup)
            info[f"{case}_edges"] = f"{work['real_edges']} ({work['padded_edges']} padded)"
            info["cost"][f"{name}/{case}"] = {"flops": work["flops"], "bytes": work["bytes"]}
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


def run_spk_subprocess(args: argparse.Namespace, python: str, cases: dict[str, list[Atoms]]):
    """Run this file in SchNetPack worker mode with ``python`` on the driver's own structure; its rows and info."""
    with tempfile.TemporaryDirectory() as tmp:
        structure = args.structure or structure_file(cases["single"][0], tmp)
        data = run_spk_worker(__file__, python, [
            "--structure", str(structure), "--batch-size", str(args.batch_size), "--seed", str(args.seed),
            "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--models", *args.models,
            "--spk-device", args.spk_device,
        ], args.threads)  # fmt: skip
    return data["rows"], data["info"]


# ---------------------------------------------------------------------------------------------------------- report


def lookup(rows: Sequence[dict[str, Any]], framework: str, model: str, case: str, stage: str) -> float | None:
    """The reported time of one row: the first-call time for ``first_call``, the median otherwise."""
    for row in rows:
        if (row["framework"], row["model"], row["case"], row["stage"]) == (framework, model, case, stage):
            return row["first_s"] if stage == "first_call" else row["median_s"]
    return None


def ratio_table(rows: Sequence[dict[str, Any]], models: Sequence[str], cases: Sequence[str],
                cost: dict | None = None, limits: dict | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Per model, case and stage: jaxatom and SchNetPack times and the ratio schnetpack / jaxatom; the steady rows
    with the roofline of jaxatom's evaluation (``cost`` per ``model/case``, machine ``limits``) and SchNetPack's
    GFLOP/s on the same FLOP count."""
    from _roofline import with_roofline

    table = []
    for model in models:
        for case in cases:
            for stage in STAGES:
                jax_s = lookup(rows, "jaxatom", model, case, stage)
                spk_s = lookup(rows, "schnetpack", model, case, stage)
                ratio = spk_s / jax_s if jax_s and spk_s is not None else None
                row = {"model": model, "case": case, "stage": stage, "jaxatom_s": jax_s, "schnetpack_s": spk_s,
                       "spk_over_jaxatom": ratio}  # fmt: skip
                work = (cost or {}).get(f"{model}/{case}")
                if stage == "steady" and work and limits:
                    row = with_roofline({**row, **work}, jax_s, limits)
                    row["spk_gflops"] = work["flops"] / spk_s / 1e9 if spk_s else None
                table.append(row)
    return table


def ms(key: str):
    """A column value: seconds at ``key`` in milliseconds."""
    return lambda r: None if r.get(key) is None else 1e3 * r[key]


def columns(roofline: bool) -> list[Column]:
    """The table's columns (times in ms), with the roofline columns when ``roofline``."""
    from _roofline import COLUMNS

    cols = [
        Column("model", "model", numeric=False),
        Column("case", "case", numeric=False),
        Column("stage", lambda r: STAGES[r["stage"]], numeric=False),
        Column("jaxatom (ms)", ms("jaxatom_s")),
        Column("SchNetPack (ms)", ms("schnetpack_s")),
        Column("SchNetPack / jaxatom", lambda r: r["spk_over_jaxatom"] and f"{r['spk_over_jaxatom']:.2f}x"),
    ]
    if roofline:
        cols += [*COLUMNS, Column("SchNetPack GFLOP/s", "spk_gflops", ".1f")]
    return cols


def markdown(table: Sequence[dict[str, Any]], roofline: bool = False) -> str:
    """The ratio table as markdown (times in ms)."""
    return markdown_table(columns(roofline), table)


def header(args: argparse.Namespace, info: dict[str, dict], cases: dict[str, list[Atoms]]) -> str:
    """Environment and input description printed above the table."""
    jax_info, spk_info = info["jaxatom"], info.get("schnetpack", {})
    sizes = ", ".join(f"{case}: {sum(len(a) for a in atoms_list)} atoms" for case, atoms_list in cases.items())
    lines = [
        f"CPU: {cpu_model()} ({core_count()} cores available; flags: {cpu_flags()}); "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
        f"jaxatom {jax_info['jaxatom']}, jax {jax_info['jax']}, jaxlib {jax_info['jaxlib']}, flax {jax_info['flax']}, "
        f"numpy {jax_info['numpy']}, python {jax_info['python']}; backend {jax_info['backend']}, "
        "XLA's own CPU thread pool (not set by --threads)",
    ]
    if spk_info:
        lines.append(
            f"schnetpack {spk_info['schnetpack']}, torch {spk_info['torch']} ({spk_info.get('device', 'cpu')}), "
            f"numpy {spk_info['numpy']}, python "
            f"{spk_info['python']}; torch threads {spk_info['torch_threads']} (set to --threads {args.threads}), "
            f"interop {spk_info['torch_interop_threads']}"
        )
    else:
        lines.append(info.get("spk_note", "SchNetPack not run"))
    source = args.structure.resolve() if args.structure else 'jaxatom.data.load_builtin("aspirin"), frame 0'
    lines.append(f"structure: {source} ({sizes}; batch noise {NOISE} Å, seed {args.seed})")
    lines.append(f"float32; repeats {args.repeats} after {args.warmup} warm-up calls; steady = median")
    load = busy_warning(info["load"]["start"], info["load"]["end"])
    if load:
        lines.append(load)
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
    parser.add_argument("--structure", type=Path, help="aspirin geometry (any ASE format; default: the shipped one)")
    parser.add_argument("--batch-size", type=int, default=32, help="molecules in the batch case")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls after the first call")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch noise and of the model weights")
    parser.add_argument("--threads", type=int, default=core_count(), help="torch threads (default: all cores)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS), help="models to run")
    parser.add_argument("--spk-python", type=Path, help="python with schnetpack (default: this one, if it has it)")
    parser.add_argument("--no-schnetpack", action="store_true", help="benchmark jaxatom only")
    parser.add_argument("--spk-device", default="auto", help="torch device of SchNetPack (auto: cuda if available)")
    parser.add_argument("--no-roofline", action="store_true", help="leave out the roofline columns")
    parser.add_argument("--json", type=Path, help="also write all timings and environment info to this file")
    parser.add_argument("--worker", choices=["schnetpack"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.batch_size < 1 or args.threads < 1:
        parser.error("--repeats, --batch-size and --threads must be positive and --warmup non-negative")
    return args


def run(args: argparse.Namespace, limits: dict | None = None) -> dict[str, Any]:
    """Run the SchNetPack worker (subprocess, when a Python with schnetpack is found) and then jaxatom; returns
    ``{"meta", "info", "rows", "table", "header", "markdown"}``. ``limits``: the machine's roofline limits."""
    cases = load_cases(args.structure, args.batch_size, args.seed)
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"load": {"start": load_average()}}
    skip = "SchNetPack rows skipped (--no-schnetpack)" if args.no_schnetpack else None
    rows, spk_info, info["spk_note"] = schnetpack_side(
        skip, args.spk_python, lambda python: run_spk_subprocess(args, python, cases), positions_checksum(cases)
    )
    if spk_info is not None:
        info["schnetpack"] = spk_info
    jax_rows, info["jaxatom"] = run_jaxatom(args, cases)
    rows.extend(jax_rows)
    info["load"]["end"] = load_average()
    table = ratio_table(rows, args.models, list(cases), info["jaxatom"]["cost"], limits)
    meta = {"threads": args.threads, "repeats": args.repeats, "warmup": args.warmup, "noise_angstrom": NOISE,
            "structure": str(args.structure or "builtin:aspirin[0]"), "environment": environment()}  # fmt: skip
    return {"meta": meta, "info": info, "rows": rows, "table": table, "header": header(args, info, cases),
            "markdown": markdown(table, roofline=limits is not None)}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark, print the header and the markdown table, optionally write JSON."""
    args = parse_args(argv)
    if args.worker == "schnetpack":
        run_spk_worker_mode(args)
        return
    from _roofline import run_and_report

    run_and_report(run, args, not args.no_roofline, args.json)


if __name__ == "__main__":
    main()
