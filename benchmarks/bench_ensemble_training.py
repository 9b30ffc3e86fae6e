"""Ensemble training benchmark: N members trained together (one vmapped step) vs one after the other.

Data and recipe as ``bench_training.py`` (shipped aspirin, GFN2-xTB; SchNetPack's MD17 recipe, float32). For each
ensemble size N (default 1, 2, 4, 8) and model, steady-state training steps are timed two ways, on the same batches
(member m: seed ``seed + m``, its own shuffled order of the training split, batches built once, outside the timed
loop):

* ``together``: ``jaxatom.train.step.ensemble_train_step``, one compiled step for all N members (stacked states,
  each member its own batch, padded to common shapes), as ``fit`` runs with ``training.ensemble.size: N``;
* ``one after the other``: N calls of the single-model ``train_step``, one per member (each on its own batch and
  state), as N separate runs would do.

Reported: median time of one round (every member one step), structures/s per member (``batch_size / round time``) and
the speed-up of training together. The first round (trace + compile) is reported separately.

Usage (from the repository root)::

    OMP_NUM_THREADS=2 python benchmarks/bench_ensemble_training.py --steps 20 --spk
    python benchmarks/bench_ensemble_training.py --members 1 2 --models schnet --features 16 --interactions 1 \\
        --steps 2 --batch-size 4 --train 16   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Column,
    command_line,
    core_count,
    cpu_flags,
    cpu_model,
    load_average,
    markdown_table,
)
from bench_inference import CUTOFF, MODELS, N_ATOM_BASIS, N_RBF  # noqa: E402
from bench_training import (  # noqa: E402
    Splits,
    StepTiming,
    batch_indices,
    epoch_order,
    load_splits,
    recipe,
    spk_throughput,
    time_steps,
)

if TYPE_CHECKING:
    from jaxatom.data import GraphLoader
    from jaxatom.potential import Potential


def bench_potential(name: str, splits: Splits, seed: int, features: int, interactions: int | None) -> Potential:
    """A freshly initialised potential (``features`` features, ``interactions`` interactions, default the benchmark
    architecture's) with the training split's energy shift."""
    from jaxatom import Potential
    from jaxatom.nn import PaiNN, SchNet
    from jaxatom.train import with_energy_offsets

    representation = {"schnet": SchNet, "painn": PaiNN}[name](
        n_atom_basis=features, n_interactions=interactions or MODELS[name], cutoff=CUTOFF, n_rbf=N_RBF
    )
    elements = sorted(set(splits.train.elements))
    return with_energy_offsets(Potential.create(representation, elements=elements, seed=seed), splits.train)


def member_batches(loader: GraphLoader, n_members: int, seed: int, steps: int) -> list[list[np.ndarray]]:
    """``[step][member]`` structure indices: member m's first ``steps`` full batches of its epoch-0 order."""
    size = loader.batch_size
    orders = [
        batch_indices(epoch_order(len(loader.dataset), seed + m, 0), size, True)[:steps] for m in range(n_members)
    ]
    return [list(batches) for batches in zip(*orders, strict=True)]


def member_states(potential: Potential, n_members: int, seed: int, config: Any) -> list:
    """The training states of members initialised with seeds ``seed``, ``seed + 1``, ..."""
    import jax

    from jaxatom.potential.potential import example_graph
    from jaxatom.train.step import init_state

    graph = example_graph(potential.cutoff)
    return [init_state(potential.model.init(jax.random.PRNGKey(seed + m), graph), config) for m in range(n_members)]


def time_together(potential: Potential, loader: GraphLoader, indices: list, seed: int, steps: int) -> tuple:
    """Rounds of the vmapped ensemble step on stacked batches; the timing and XLA's cost of one round."""
    import jax
    import jax.numpy as jnp
    from _roofline import cost

    from jaxatom.train.step import ensemble_train_step

    n_members, config = len(indices[0]), recipe(loader.batch_size, seed)
    batches = [jax.device_put(loader.stacked(chunks, loader.batch_size + 1)) for chunks in indices]
    state = jax.tree.map(lambda *leaves: jnp.stack(leaves), *member_states(potential, n_members, seed, config))
    active = jnp.ones(n_members, bool)
    scales = potential.scaling_arrays(np.float32, include_offsets=False)

    def step(k: int) -> None:
        nonlocal state
        graph, labels = batches[k]
        state, sums = ensemble_train_step(state, graph, labels, active, potential.model, scales, config.step)
        jax.block_until_ready((state, sums))

    timing = time_steps(step, len(batches), steps, loader.batch_size)
    graph, labels = batches[0]
    lowered = ensemble_train_step.lower(state, graph, labels, active, potential.model, scales, config.step)
    return timing, cost(lowered.compile())


def time_one_after_another(potential: Potential, loader: GraphLoader, indices: list, seed: int, steps: int) -> tuple:
    """Rounds of N single-model steps, one per member (each its own state and batch); the timing and XLA's cost of
    one round (N single steps)."""
    import jax
    from _roofline import cost

    from jaxatom.train.step import train_step

    n_members, config = len(indices[0]), recipe(loader.batch_size, seed)
    batches = [[jax.device_put(loader.batch(chunk)) for chunk in chunks] for chunks in indices]
    states = member_states(potential, n_members, seed, config)
    scales = potential.scaling_arrays(np.float32, include_offsets=False)

    def step(k: int) -> None:
        for m in range(n_members):
            graph, labels = batches[k][m]
            states[m], sums = train_step(states[m], graph, labels, potential.model, scales, config.step)
        jax.block_until_ready((states, sums))

    timing = time_steps(step, len(batches), steps, loader.batch_size)
    graph, labels = batches[0][0]
    one = cost(train_step.lower(states[0], graph, labels, potential.model, scales, config.step).compile())
    return timing, {key: n_members * value for key, value in one.items()}


def bench_model(name: str, args: argparse.Namespace, splits: Splits) -> list[dict[str, Any]]:
    """Rows for one model: every ensemble size, both ways."""
    from jaxatom.data import GraphLoader

    potential = bench_potential(name, splits, args.seed, args.features, args.interactions)
    loader = GraphLoader(splits.train, potential.cutoff, args.batch_size, shuffle=False,
                         atom_offsets=potential.atom_offsets())  # fmt: skip
    rows = []
    ways: dict[str, Callable] = {"together": time_together, "one after the other": time_one_after_another}
    spk = spk_single(name, args, splits, member_batches(loader, 1, args.seed, args.steps)) if args.spk else None
    for n_members in args.members:
        indices = member_batches(loader, n_members, args.seed, args.steps)
        for way, timer in ways.items():
            timing, work = timer(potential, loader, indices, args.seed, args.steps)
            rows.append({"model": name, "members": n_members, "way": way, **asdict(timing),
                         "structures_per_s_per_member": timing.structures_per_s, **work})  # fmt: skip
        if spk is not None:  # the work of N single jaxatom steps is the round's work count (FLOPs only)
            rows.append({"model": name, "members": n_members, "way": "SchNetPack, one after the other",
                         "first_s": spk.first_s, "median_s": n_members * spk.median_s,
                         "structures_per_s_per_member": spk.structures_per_s / n_members,
                         "flops": rows[-1]["flops"]})  # fmt: skip
    return rows


def spk_single(name: str, args: argparse.Namespace, splits: Splits, indices: list) -> StepTiming:
    """SchNetPack's training step of one model (its benchmark architecture) on member 0's batches; N models one
    after the other take N of these per round."""
    if args.features != N_ATOM_BASIS or args.interactions is not None:
        raise SystemExit("--spk compares the benchmark architecture: leave --features and --interactions at defaults")
    return spk_throughput(name, splits, [chunks[0] for chunks in indices], args.steps, args.batch_size, args.seed)


def table(rows: Sequence[dict[str, Any]], limits: dict | None = None) -> str:
    """Markdown: per model and N, round times, throughput per member and the speed-up of training together; with
    ``limits`` the roofline of one round (XLA's cost of the compiled vmapped step, or of N single steps)."""
    from _roofline import COLUMNS, with_roofline

    by_key = {(r["model"], r["members"], r["way"]): r for r in rows}
    table_rows = []
    for row in rows:
        together = by_key[(row["model"], row["members"], "together")]
        speedup = f"{row['median_s'] / together['median_s']:.2f}x" if row["way"] != "together" else None
        out = {**row, "speedup": speedup}
        table_rows.append(with_roofline(out, row["median_s"], limits) if limits else out)
    columns = [
        Column("model", "model", numeric=False),
        Column("members", "members", "d"),
        Column("way", "way", numeric=False),
        Column("first round (s)", "first_s", ".1f"),
        Column("round, median (ms)", lambda r: 1e3 * r["median_s"], ".1f"),
        Column("structures/s per member", "structures_per_s_per_member", ".1f"),
        Column("together is faster by", "speedup"),
    ]
    return markdown_table([*columns, *(COLUMNS if limits else ())], table_rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--members", nargs="+", type=int, default=[1, 2, 4, 8], help="ensemble sizes")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS), help="models to run")
    parser.add_argument("--features", type=int, default=N_ATOM_BASIS, help="features per atom")
    parser.add_argument("--interactions", type=int, help="interaction blocks (default: the model's benchmark value)")
    parser.add_argument("--steps", type=int, default=20, help="timed rounds per model, size and way")
    parser.add_argument("--batch-size", type=int, default=32, help="structures per member and batch")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the weights and the shuffling")
    parser.add_argument("--train", type=int, default=1000, help="training structures")
    parser.add_argument("--spk", action="store_true", help="also time SchNetPack (N models one after the other)")
    parser.add_argument("--no-roofline", action="store_true", help="leave out the roofline columns")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    if min(*args.members, args.steps, args.batch_size, args.features) < 1 or args.train < args.batch_size:
        parser.error("--members, --steps, --batch-size and --features must be positive, --train >= --batch-size")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Time every model and ensemble size both ways; print the environment and a markdown table."""
    args = parse_args(argv)
    limits = None
    if not args.no_roofline:
        from _roofline import machine_limits

        import jaxatom  # noqa: F401  (tunes the CPU allocator before JAX starts)

        limits = machine_limits()
    load_start = load_average()
    splits = load_splits(args.train, 1, 1, args.seed)
    rows = [row for name in args.models for row in bench_model(name, args, splits)]
    print(f"CPU: {cpu_model()} ({core_count()} cores, {cpu_flags()}); "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
          f"1-min load average {load_start} before, {load_average()} after")  # fmt: skip
    print(f"command: {command_line()}")
    print(f"data: built-in aspirin, {args.train} training structures; batch {args.batch_size} per member; "
          f"{args.features} features; float32")  # fmt: skip
    print()
    print(table(rows, limits))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
