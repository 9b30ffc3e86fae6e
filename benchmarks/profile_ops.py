"""Where the time goes: XLA's own per-operation times for the slowest cases, grouped by kind of operation.

Cases (aspirin from the shipped data, SchNetPack's sizes: SchNet 128×6, PaiNN 128×3, 5 Å, 20 Gaussians):

* ``md-schnet`` / ``md-painn``: energy and forces of ``--replicas`` copies (``vmap``, as MD's chunk runs them), on
  all-pairs edge lists (``sparse``) and on dense blocks (``dense``);
* ``train-schnet`` / ``train-painn``: one optimiser step on 32 structures with cutoff lists (``sparse``) and on dense
  blocks (``dense``).

Each case runs three times under ``jax.profiler.trace``; the trace's XLA operations are matched to the compiled HLO
and grouped: matrix multiplications, gathers and scatter-adds (including the fusions XLA builds around them),
reductions, concatenations, elementwise (with transcendental functions counted apart) and layout copies.

    python benchmarks/profile_ops.py --cases md-painn train-schnet --layouts sparse dense
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

CASES = ("md-schnet", "md-painn", "train-schnet", "train-painn")
KINDS = (
    ("scatter-add", r"\bscatter\("),
    ("matmul", r"\bdot\(|\bconvolution\("),
    ("gather", r"\bgather\("),
    ("reduction", r"\breduce(-window)?\("),
    ("concatenate/pad", r"\b(concatenate|pad)\("),
    ("elementwise (transcendental)", r"\b(exponential|log|log-plus-one|exponential-minus-one|tanh|logistic|sine|"
                                     r"cosine|sqrt|rsqrt|power)\("),
    ("elementwise", r"\b(multiply|add|subtract|select|divide|maximum|minimum|compare|negate)\("),
    ("layout copy", r"\b(copy|transpose)\("),
)  # fmt: skip


def _computations(hlo: str) -> dict[str, str]:
    """HLO computation name -> its body."""
    bodies, name, lines = {}, None, []
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if header:
            name, lines = header.group(1), []
        elif line.startswith("}") and name:
            bodies[name], name = "\n".join(lines), None
        elif name:
            lines.append(line)
    return bodies


def _instructions(hlo: str) -> dict[str, tuple[str, str, str]]:
    """Instruction name -> (result shape, opcode, called computation or '')."""
    found = {}
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ([\w\-]+)\(", line)
        if m and m.group(1) not in found:
            called = re.search(r"calls=%?([\w.\-]+)", line)
            found[m.group(1)] = (m.group(2), m.group(3), called.group(1) if called else "")
    return found


def kind_of(opcode: str, body: str) -> str:
    """The kind of an XLA operation from its opcode and (for fusions) the fused computation's body."""
    text = f" {opcode}(\n{body}"
    return next((kind for kind, pattern in KINDS if re.search(pattern, text)), "other")


def op_times(run: Callable[[], None], reps: int = 3) -> collections.Counter:
    """Microseconds per call of every XLA operation executed by ``run`` (profiled ``reps`` times)."""
    import jax

    trace_dir = tempfile.mkdtemp()
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(reps):
            run()
    (path,) = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)
    events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    times = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and "dur" in event:
            times[event["name"]] += event["dur"] / reps
    return times


def breakdown(times: collections.Counter, hlo: str) -> tuple[collections.Counter, list[tuple]]:
    """``(milliseconds per kind, the ten slowest operations as (ms, name, kind, shape))``."""
    bodies, instructions = _computations(hlo), _instructions(hlo)
    kinds, slowest = collections.Counter(), []
    for name, us in times.most_common():
        if name not in instructions:
            continue  # host-side events (Python, the executor) rather than XLA operations
        shape, opcode, called = instructions[name]
        kind = kind_of(opcode, bodies.get(called, ""))
        kinds[kind] += us / 1e3
        if len(slowest) < 10:
            slowest.append((us / 1e3, name, kind, shape))
    return kinds, slowest


def _model(name: str):
    from jaxatom.nn import PaiNN, SchNet

    if name == "schnet":
        return SchNet(n_atom_basis=128, n_interactions=6, cutoff=5.0, n_rbf=20)
    return PaiNN(n_atom_basis=128, n_interactions=3, cutoff=5.0, n_rbf=20)


def md_case(model: str, layout: str, replicas: int) -> tuple[Callable[[], None], str]:
    """Energy and forces of ``replicas`` aspirin copies on one structure's graph, ``vmap``ped as in MD."""
    import jax
    import jax.numpy as jnp

    import jaxatom
    from jaxatom.data import load_builtin
    from jaxatom.graph import batch_graphs
    from jaxatom.neighbors import graph_from_atoms
    from jaxatom.potential.evaluate import evaluate

    atoms = load_builtin("aspirin").to_atoms(0)
    potential = jaxatom.Potential.create(_model(model), elements=[1, 6, 8])
    host = graph_from_atoms(atoms, 5.0, edges="all_pairs")
    graph = batch_graphs([host], block_size=len(atoms) if layout == "dense" else None)
    graph = jax.tree.map(jnp.asarray, graph)
    scaling = potential.scaling_arrays(np.float32)

    def one(params, positions):
        out = evaluate(potential.model, params, graph.replace(positions=positions), scaling)
        return out["energy"][0], out["forces"]

    fn = jax.jit(jax.vmap(one, in_axes=(None, 0)))
    positions = jnp.broadcast_to(graph.positions, (replicas,) + graph.positions.shape)
    jax.block_until_ready(fn(potential.params, positions))
    return (lambda: jax.block_until_ready(fn(potential.params, positions))), fn.lower(
        potential.params, positions
    ).compile().as_text()


def train_case(model: str, layout: str, batch_size: int = 32) -> tuple[Callable[[], None], str]:
    """One optimiser step (energy, forces, loss, backward, AdamW, EMA) on ``batch_size`` aspirin structures."""
    import jax

    import jaxatom
    from jaxatom.data import GraphLoader, load_builtin
    from jaxatom.graph import batch_graphs
    from jaxatom.train import TrainConfig, init_state, train_step, with_energy_offsets

    data = load_builtin("aspirin").subset(np.arange(batch_size))
    potential = with_energy_offsets(jaxatom.Potential.create(_model(model), elements=[1, 6, 8]), data)
    loader = GraphLoader(data, 5.0, batch_size, atom_offsets=potential.atom_offsets())
    graph, labels = loader.batch(np.arange(batch_size))
    if layout == "dense":
        graph = batch_graphs(loader.graphs, n_graph=batch_size + 1, block_size=max(g.n_node for g in loader.graphs))
    graph, labels = jax.device_put((graph, labels))
    config = TrainConfig(batch_size=batch_size)
    scales = potential.scaling_arrays(np.float32, include_offsets=False)
    state = [init_state(potential.params, config)]

    def step() -> None:
        state[0], _ = jax.block_until_ready(train_step(state[0], graph, labels, potential.model, scales, config.step))

    step()
    hlo = train_step.lower(state[0], graph, labels, potential.model, scales, config.step).compile().as_text()
    return step, hlo


def profile(case: str, layout: str, replicas: int) -> dict:
    kind, model = case.split("-")
    run, hlo = md_case(model, layout, replicas) if kind == "md" else train_case(model, layout)
    kinds, slowest = breakdown(op_times(run), hlo)
    return {"case": case, "layout": layout, "kinds_ms": dict(kinds), "slowest": slowest}


def report(result: dict) -> str:
    total = sum(result["kinds_ms"].values())
    title = f"{result['case']} ({result['layout']}): {total:.1f} ms of XLA operations per call"
    lines = [title, "", "| kind | ms | % |", "|---|---:|---:|"]
    for kind, ms in sorted(result["kinds_ms"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {kind} | {ms:.1f} | {100 * ms / total:.0f} |")
    lines += ["", "slowest operations: " + "; ".join(f"{n} ({k}, {s}) {ms:.1f} ms" for ms, n, k, s in
                                                    result["slowest"][:5])]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--layouts", nargs="+", choices=("sparse", "dense"), default=["sparse", "dense"])
    parser.add_argument("--replicas", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results = [profile(case, layout, args.replicas) for case in args.cases for layout in args.layouts]
    for result in results:
        print(report(result) + "\n", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
