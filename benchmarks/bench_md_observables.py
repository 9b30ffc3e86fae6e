"""What recording the dipole moment and the polarizability along MD costs: jaxatom vs SchNetPack's MD, one process.

Work: NVE (velocity Verlet) of aspirin (the shipped structure, frame 0, as ``bench_md.py`` uses) in
vacuum, 0.5 fs, float32, Maxwell-Boltzmann velocities at 300 K (seed 0), 1 molecule and ``--replicas`` independent
copies advanced together. Model: PaiNN with ``bench_md``'s sizes (128 features, 3 interactions, 5 Å cosine cutoff, 20
Gaussians), random weights, in two variants built from the same seed, so that the representation and the energy head
are identical in both:

* *energy*: an ``Atomwise`` energy head (forces by autograd / ``jax.grad``);
* *3 heads*: the same + ``DipoleMoment(use_vector_representation=True)`` (latent charges and atomic dipoles from the
  vector features, μ = Σ qᵢ rᵢ + Σ μᵢ) + ``Polarizability`` (SchNetPack's direct tensor head: α from the scalar and
  vector features and the positions, no response derivative).

SchNetPack builds both (``schnetpack.atomistic``); by default jaxatom runs the very same weights, imported with
``jaxatom.interop.schnetpack.import_model`` (as ``bench_md.py``: random weights heat the molecule and change the number
of pairs within the cutoff, so both sides should integrate one potential); ``--jaxatom-weights fresh`` builds
jaxatom's own with ``jaxatom.Potential.create(PaiNN(...), heads=[ENERGY_HEAD, DipoleMoment(True), Polarizability()])``.
Before timing, the starting geometry's energy, dipole and polarizability of both frameworks are compared.

Rows (every jaxatom row keeps a frame every ``--stride`` steps, ``frames_per_chunk`` 100):

* ``a``  jaxatom, energy model, frames in memory;
* ``b``  jaxatom, 3-head model, ``observables=[]``, frames in memory;
* ``c0`` jaxatom, 3-head model, ``observables=["dipole_moment", "polarizability"]``, frames in memory;
* ``c``  jaxatom, the same written to an HDF5 trajectory (``output=``; with its checkpoint after every chunk);
* ``d``  SchNetPack MD, 3-head model, ``SchNetPackCalculator(required_properties=["energy", "forces",
  "dipole_moment", "polarizability"])`` and a ``FileLogger`` (buffer 100 frames, every ``--stride`` steps) with
  ``MoleculeStream(store_velocities=True)`` + ``PropertyStream(["energy", "dipole_moment", "polarizability"])``: the
  file ``schnetpack.md.data.HDF5Loader`` / ``IRSpectrum`` / ``RamanSpectrum`` read;
* ``d0`` SchNetPack MD, 3-head model, the same calculator, no file hook;
* ``e``  SchNetPack MD, energy model, energy + forces only, no file hook.

SchNetPack's MD is ``bench_md.py``'s: one ``System`` with ``n_molecules`` copies, ``MaxwellBoltzmannInit``,
``VelocityVerlet``, ``NeighborListMD`` (vesin, 1 Å shell), ``Simulator.to(torch.float32)``. jaxatom:
``jaxatom.md.simulate`` with all-pairs edges (``neighbors="all_pairs"``).

Timing: steps/s is wall clock *with everything the run does between compiled chunks or steps* (frame collection,
HDF5 writes, checkpoints, SchNetPack's buffer flushes and its final flush and close), without compilation and warm-up:
jaxatom: ``total steps / (timing["wall_s"] - timing["compile_s"])`` (``wall_s`` starts after the initial state);
SchNetPack: a hook stamps the wall clock after every step (placed after the ``FileLogger``), steps/s = timed steps /
(end of the ``simulate`` call - stamp after the warm-up). jaxatom's own ``timing["steps_per_s"]`` (chunk compute and
device-to-host copy only, writes excluded) is kept in the JSON as ``chunk_steps_per_s``. *Compile / first step*:
jaxatom's ``compile_s`` (XLA compile of the chunk; every ``simulate`` call compiles anew), SchNetPack's time to the end
of step 1. Rounds alternate the rows (``a e b d0 c0 c d``) ``--rounds`` times per replica count; the table gives the
mean over rounds and the spread (max/min - 1).

Hardware limit: FLOPs of one force (+ heads) evaluation, jaxatom from XLA's cost analysis of its compute function
(every operation, all pairs), SchNetPack from torch's FLOP formulas over one ``calculator.calculate`` (matrix products
only), times steps/s, over the measured float32 matmul rate of the same library (``bench_properties.matmul_rates``).

Usage (from the repository root)::

    python benchmarks/bench_md_observables.py --replicas 1 16 --json benchmarks/out/md_observables.json
    python benchmarks/bench_md_observables.py --replicas 1 --steps 40 --rounds 1   # smoke run
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Column, command_line, core_count, cpu_flags, cpu_model, markdown_table  # noqa: E402
from bench_inference import (  # noqa: E402
    CUTOFF,
    MODELS,
    N_ATOM_BASIS,
    N_RBF,
)
from bench_md import (  # noqa: E402
    TEMPERATURE_K,
    TIMESTEP_FS,
    load_structure,
    pairs_within_cutoff,
    spk_neighbor_list,
)
from bench_training import versions  # noqa: E402

if TYPE_CHECKING:
    from ase import Atoms

MODEL = "painn"
OBSERVABLES = ["dipole_moment", "polarizability"]
#: SchNetPack's properties written by PropertyStream in row d (jaxatom's trajectory holds energies and observables).
LOGGED = ["energy", *OBSERVABLES]
BUFFER = 100  # FileLogger buffer (frames) = jaxatom's frames_per_chunk

#: row -> (framework, model, what the row records); the order is the order of the rounds.
ROWS: dict[str, tuple[str, str, str]] = {
    "a": ("jaxatom", "energy", "energy + forces, frames in memory"),
    "e": ("SchNetPack MD", "energy", "energy + forces, no file hook"),
    "b": ("jaxatom", "3 heads", "observables=[], frames in memory"),
    "d0": ("SchNetPack MD", "3 heads", "required_properties μ, α; no file hook"),
    "c0": ("jaxatom", "3 heads", "observables μ, α, frames in memory"),
    "c": ("jaxatom", "3 heads", "observables μ, α -> HDF5 (+ checkpoint per chunk)"),
    "d": ("SchNetPack MD", "3 heads", "required_properties μ, α; FileLogger (Molecule + PropertyStream)"),
}
TABLE_ORDER = ["a", "b", "c0", "c", "e", "d0", "d"]
#: row -> the row of the other framework that does the same work
COUNTERPART = {"a": "e", "b": "d0", "c0": "d0", "c": "d", "e": "a", "d0": "b", "d": "c"}
#: row -> the energy-only row of its own framework
BASELINE = {row: ("a" if framework == "jaxatom" else "e") for row, (framework, _, _) in ROWS.items()}


# ------------------------------------------------------------------------------------------------------------ models


def build_spk(heads: bool, seed: int):
    """SchNetPack's PaiNN with an ``Atomwise`` energy (+ ``DipoleMoment`` with vector features and charges, +
    ``Polarizability``) and ``Forces``; the representation and the energy head are drawn first, so both variants of
    one seed share them."""
    import schnetpack as spk
    import torch

    torch.manual_seed(seed)
    representation = spk.representation.PaiNN(
        n_atom_basis=N_ATOM_BASIS, n_interactions=MODELS[MODEL], radial_basis=spk.nn.GaussianRBF(n_rbf=N_RBF,
        cutoff=CUTOFF), cutoff_fn=spk.nn.CosineCutoff(CUTOFF),
    )  # fmt: skip
    outputs = [spk.atomistic.Atomwise(n_in=N_ATOM_BASIS, output_key="energy")]
    if heads:
        outputs += [
            spk.atomistic.DipoleMoment(n_in=N_ATOM_BASIS, use_vector_representation=True, return_charges=True),
            spk.atomistic.Polarizability(n_in=N_ATOM_BASIS),
        ]
    outputs.append(spk.atomistic.Forces(energy_key="energy", force_key="forces"))
    model = spk.model.NeuralNetworkPotential(
        representation=representation, input_modules=[spk.atomistic.PairwiseDistances()], output_modules=outputs
    )
    return model.eval()


def jax_model(spk_model, heads: bool, atoms: Atoms, seed: int, weights: str):
    """jaxatom's potential: ``spk_model`` imported, or a fresh ``Potential.create`` of the same architecture."""
    elements = sorted({int(z) for z in atoms.numbers})
    if weights == "schnetpack":
        from jaxatom.interop.schnetpack import import_model

        units = {"dipole_moment": "e*Ang", "polarizability": "Ang^3"} if heads else None
        return import_model(spk_model, energy_unit="eV", position_unit="Ang", elements=elements, units=units)
    import jaxatom
    from jaxatom.nn import ENERGY_HEAD, DipoleMoment, PaiNN, Polarizability

    representation = PaiNN(n_atom_basis=N_ATOM_BASIS, n_interactions=MODELS[MODEL], cutoff=CUTOFF, n_rbf=N_RBF)
    head_list = [ENERGY_HEAD, DipoleMoment(use_vector_representation=True), Polarizability()] if heads else None
    return jaxatom.Potential.create(representation, elements=elements, seed=seed, heads=head_list)


def model_check(spk_model, potential, atoms: Atoms) -> dict[str, float]:
    """Largest |jaxatom - SchNetPack| of energy, forces, dipole and polarizability at ``atoms`` (float32)."""
    import schnetpack as spk
    import torch

    converter = spk.interfaces.AtomsConverter(
        neighbor_list=spk.transform.MatScipyNeighborList(cutoff=CUTOFF), dtype=torch.float32
    )
    reference = spk_model.float()(converter(atoms))
    ours = potential.predict(atoms)
    result = {}
    for key in ("energy", "forces", *OBSERVABLES):
        if key in reference and key in ours:
            expected = reference[key].detach().double().numpy().reshape(np.shape(ours[key]))
            result[key] = float(np.max(np.abs(np.asarray(ours[key]) - expected)))
            result[f"{key}_max_abs"] = float(np.max(np.abs(expected)))
    return result


# ------------------------------------------------------------------------------------------------------------ jaxatom


def force_flops_spy() -> dict[str, float]:
    """Wrap ``jaxatom.md.driver._initial_state`` (run before ``simulate``'s clock starts) to record XLA's FLOP count of
    the run's force + observable function on the starting state, once per run; returns the record."""
    import jax

    from jaxatom.md import driver

    record: dict[str, float] = {}
    original = driver._initial_state

    @functools.wraps(original)
    def spy(plan, structures, masses, force_field, compute, integrator, velocities):
        state = original(plan, structures, masses, force_field, compute, integrator, velocities)
        lowered = jax.jit(compute).lower(force_field.params, state.positions, state.neighbors)
        record["flops"] = float(lowered.cost_analysis().get("flops", float("nan")))
        return state

    driver._initial_state = spy
    return record


def jax_run(row: str, potential, atoms: Atoms, replicas: int, steps: int, args, tmp: Path, spy: dict) -> dict:
    """One jaxatom row: ``simulate`` of ``steps`` (a multiple of the stride); returns its measurements (with XLA's
    cost of one step of the compiled chunk, ``step_cost``)."""
    from _roofline import capture_md_chunks, md_step_cost

    from jaxatom.md import read_trajectory, simulate

    observables = OBSERVABLES if row in ("c0", "c") else []
    output = tmp / f"{row}_{replicas}.h5" if row == "c" else None
    spy.clear()
    with capture_md_chunks() as chunks:
        run = simulate(potential, atoms, steps=steps, timestep_fs=TIMESTEP_FS, ensemble="nve",
                       temperature_K=TEMPERATURE_K, n_replicas=replicas, stride=args.stride, frames_per_chunk=BUFFER,
                       output=output, overwrite=True, seed=args.seed, neighbors="all_pairs", observables=observables,
                       progress=False)  # fmt: skip
    timing = dict(run.timing)
    frames = read_trajectory(output) if output is not None else run.frames
    recorded = {name: list(np.shape(frames[name])) for name in OBSERVABLES if name in frames}
    if row in ("c0", "c") and len(recorded) != len(OBSERVABLES):
        raise RuntimeError(f"row {row}: the trajectory lacks {OBSERVABLES}: {sorted(frames)}")
    positions = np.asarray(run.state.positions).reshape(replicas, len(atoms), 3)
    result = {
        "steps": steps,
        "first_s": timing["compile_s"],
        "steps_per_s": steps / (timing["wall_s"] - timing["compile_s"]),
        "chunk_steps_per_s": timing["steps_per_s"],
        "timing": timing,
        "recorded": recorded,
        "file_bytes": output.stat().st_size if output is not None else None,
        "pairs_end_mean": float(np.mean([pairs_within_cutoff(p) for p in positions])),
        "flops_per_step": spy.get("flops"),
        "step_cost": md_step_cost(chunks),
    }
    if output is not None:
        output.unlink()
        output.with_name(output.name + ".ckpt.npz").unlink(missing_ok=True)
    return result


# --------------------------------------------------------------------------------------------------------- SchNetPack


def spk_run(row: str, model_file: Path, atoms: Atoms, replicas: int, warmup: int, steps: int, args, tmp: Path,
            count_flops: bool) -> dict:  # fmt: skip
    """One SchNetPack MD row: ``simulate(1 + warmup + steps)``; returns its measurements."""
    import schnetpack.md as md
    import torch
    from schnetpack.md.calculators import SchNetPackCalculator
    from schnetpack.md.simulation_hooks import FileLogger, MoleculeStream, PropertyStream, SimulationHook

    class StepClock(SimulationHook):
        """Stamps the wall clock at the end of every step, after the hooks before it (the FileLogger)."""

        def __init__(self) -> None:
            super().__init__()
            self.stamps: list[float] = []

        def on_step_finalize(self, simulator) -> None:
            self.stamps.append(time.perf_counter())

    system = md.System()
    system.load_molecules([atoms.copy() for _ in range(replicas)], n_replicas=1, position_unit_input="Angstrom")
    torch.manual_seed(args.seed)
    initializer = md.MaxwellBoltzmannInit(TEMPERATURE_K, remove_center_of_mass=True, remove_translation=True)
    initializer.initialize_system(system)
    required = ["energy", "forces", *OBSERVABLES] if row in ("d", "d0") else []
    calculator = SchNetPackCalculator(str(model_file), force_key="forces", energy_unit="eV", position_unit="Angstrom",
                                      neighbor_list=spk_neighbor_list(args.spk_neighbor_list, 1.0),
                                      energy_key="energy", required_properties=required)  # fmt: skip
    hooks: list = []
    log_file = tmp / f"{row}_{replicas}.hdf5"
    if row == "d":
        streams = [MoleculeStream(store_velocities=True), PropertyStream(target_properties=LOGGED)]
        hooks.append(FileLogger(str(log_file), buffer_size=BUFFER, data_streams=streams, every_n_steps=args.stride))
    clock = StepClock()
    simulator = md.Simulator(system, md.integrators.VelocityVerlet(TIMESTEP_FS), calculator,
                             simulator_hooks=[*hooks, clock], progress=False).to(torch.float32)  # fmt: skip
    start = time.perf_counter()
    simulator.simulate(1 + warmup + steps)
    end = time.perf_counter()
    stamps = np.asarray(clock.stamps)
    result = {
        "steps": steps,
        "warmup_steps": warmup,
        "first_s": float(stamps[0] - start),
        "steps_per_s": steps / float(end - stamps[warmup]),
        "stamped_steps_per_s": steps / float(stamps[-1] - stamps[warmup]),
        "median_step_s": float(statistics.median(np.diff(stamps[warmup:]))),
        "dtype": str(system.positions.dtype),
        "pairs_end_mean": float(np.mean([pairs_within_cutoff(m.positions)
                                         for m in system.get_ase_atoms(position_unit_output="Angstrom")])),
        "recorded": sorted(calculator.required_properties),
    }  # fmt: skip
    if row == "d":
        import h5py

        with h5py.File(log_file) as file:
            result["logged_frames"] = int(file["properties"].attrs["entries"])
            result["file_bytes"] = log_file.stat().st_size
        log_file.unlink()
    if count_flops:
        from bench_properties import count_torch_flops

        result["flops_per_step"] = count_torch_flops(lambda: calculator.calculate(system))
    return result


# ------------------------------------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> tuple[list[dict], dict]:
    """Build the models, check they agree, then alternate the rows ``--rounds`` times per replica count."""
    import jax
    import torch
    from bench_properties import matmul_rates

    torch.set_num_threads(args.threads)
    atoms = load_structure(args.structure)
    info: dict[str, Any] = {"versions": versions(), "load": {"start": os.getloadavg()}}
    spy = force_flops_spy()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_md_observables_", dir=args.tmpdir) as directory:
        tmp = Path(directory)
        spk_models = {name: build_spk(name == "3 heads", args.seed) for name in ("energy", "3 heads")}
        files = {}
        for name, model in spk_models.items():
            files[name] = tmp / f"{name.replace(' ', '_')}.pt"
            torch.save(model, files[name])
        potentials = {name: jax_model(model, name == "3 heads", atoms, args.seed, args.jaxatom_weights)
                      for name, model in spk_models.items()}  # fmt: skip
        info["params"] = {name: {"jaxatom": sum(int(np.size(p)) for p in jax.tree.leaves(potentials[name].params)),
                                 "schnetpack": sum(p.numel() for p in spk_models[name].parameters())}
                          for name in spk_models}  # fmt: skip
        info["model_check"] = {name: model_check(spk_models[name], potentials[name], atoms) for name in spk_models}
        info["matmul"] = matmul_rates()
        for replicas in args.replicas:
            warmup, steps = (args.warmup, args.steps) if replicas == 1 else (args.warmup_batch, args.steps_batch)
            jax_steps = args.stride * -(-(1 + warmup + steps) // args.stride)
            for r in range(args.rounds):
                for row, (framework, model, _) in ROWS.items():
                    load = os.getloadavg()
                    print(f"[round {r + 1}/{args.rounds}] {replicas} replica(s), row {row}", file=sys.stderr,
                          flush=True)  # fmt: skip
                    if framework == "jaxatom":
                        result = jax_run(row, potentials[model], atoms, replicas, jax_steps, args, tmp, spy)
                    else:
                        result = spk_run(row, files[model], atoms, replicas, warmup, steps, args, tmp, r == 0)
                    rows.append({"row": row, "framework": framework, "model": model, "replicas": replicas,
                                 "round": r, "load_before": load, **result})  # fmt: skip
    info["load"]["end"] = os.getloadavg()
    return rows, info


# ---------------------------------------------------------------------------------------------------------- report


def summary(rows: Sequence[dict], replicas: int, row: str) -> dict[str, float] | None:
    """Mean steps/s over the rounds of one row, the spread, the mean first step / compile and the FLOPs per step."""
    found = [r for r in rows if r["replicas"] == replicas and r["row"] == row]
    if not found:
        return None
    rates = [r["steps_per_s"] for r in found]
    flops = [r["flops_per_step"] for r in found if r.get("flops_per_step")]
    cost = next((r["step_cost"] for r in found if r.get("step_cost")), {})
    return {"steps_per_s": statistics.fmean(rates), "spread": max(rates) / min(rates) - 1,
            "first_s": statistics.fmean(r["first_s"] for r in found), "flops": flops[0] if flops else None,
            "rounds": len(found), "step_cost": cost}  # fmt: skip


def markdown(rows: Sequence[dict], replica_counts: Sequence[int], peaks: dict[str, float],
             limits: dict | None = None) -> str:  # fmt: skip
    """The results table; with ``limits`` the roofline of one MD step (XLA's cost of jaxatom's compiled chunk, for
    SchNetPack's rows that of the jaxatom row doing the same work, FLOPs only)."""
    from _roofline import COLUMNS, with_roofline

    table = []
    for replicas in replica_counts:
        for row in TABLE_ORDER:
            s = summary(rows, replicas, row)
            if s is None:
                continue
            framework, model, records = ROWS[row]
            base, other = summary(rows, replicas, BASELINE[row]), summary(rows, replicas, COUNTERPART[row])
            peak = peaks["xla_dot_gflops"] if framework == "jaxatom" else peaks["torch_mm_gflops"]
            cost = (
                s["step_cost"] if framework == "jaxatom" else {"flops": (other or {}).get("step_cost", {}).get("flops")}
            )
            out = {"replicas": replicas, "row": row, "framework": framework, "model": model, "records": records,
                   "first_s": s["first_s"], "steps_per_s": s["steps_per_s"],
                   "molecule_steps": replicas * s["steps_per_s"], "spread": f"{100 * s['spread']:.0f} %",
                   "own": f"{s['steps_per_s'] / base['steps_per_s']:.2f}" if base and row != BASELINE[row] else "1",
                   "versus": f"{s['steps_per_s'] / other['steps_per_s']:.2f}x ({COUNTERPART[row]})" if other else None,
                   "gflop": s["flops"] and f"{s['flops'] / 1e9:.3f}" + ("" if framework == "jaxatom" else " (matmuls)"),
                   "fraction": s["flops"] and f"{100 * s['flops'] * s['steps_per_s'] / 1e9 / peak:.1f} %",
                   **cost}  # fmt: skip
            table.append(with_roofline(out, 1.0 / s["steps_per_s"], limits) if limits else out)
    columns = [
        Column("replicas", "replicas", "d"),
        Column("row", "row", numeric=False),
        Column("framework", "framework", numeric=False),
        Column("model", "model", numeric=False),
        Column("records", "records", numeric=False),
        Column("compile / first step (s)", "first_s"),
        Column("steps/s", "steps_per_s", ".1f"),
        Column("molecule-steps/s", "molecule_steps", ".0f"),
        Column("round spread", "spread"),
        Column("vs own energy-only", "own"),
        Column("vs other framework", "versus"),
        Column("force GFLOP/step", "gflop"),
        Column("of own matmul peak", "fraction"),
    ]
    return markdown_table([*columns, *(COLUMNS if limits else ())], table)


def header(args: argparse.Namespace, info: dict[str, Any]) -> str:
    """Environment, command and set-up printed above the table."""
    v = info["versions"]
    start, end = info["load"]["start"], info["load"]["end"]
    peaks = info["matmul"]
    lines = [
        f"CPU: {cpu_model()} ({core_count()} cores available; flags: {cpu_flags()}); OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS')}; torch threads {v['torch_threads']} (interop "
        f"{v['torch_interop_threads']}), XLA's own CPU thread pool; both frameworks in one process, never concurrent",
        f"jaxatom {v['jaxatom']}, jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']} ({v['backend']}); "
        f"schnetpack {v['schnetpack']}, torch {v['torch']}; numpy {v['numpy']}, python {v['python']}",
        f"command: {command_line()}",
        f"load averages (1/5/15 min): {' / '.join(f'{x:.2f}' for x in start)} before, "
        f"{' / '.join(f'{x:.2f}' for x in end)} after",
        f"structure: {args.structure.resolve() if args.structure else 'shipped aspirin, frame 0'}; NVE {TIMESTEP_FS} "
        f"fs, float32, Maxwell-Boltzmann {TEMPERATURE_K:g} "
        f"K (seed {args.seed}); PaiNN {N_ATOM_BASIS} features, {MODELS[MODEL]} interactions, {CUTOFF:g} Å, {N_RBF} "
        f"Gaussians; jaxatom weights: {args.jaxatom_weights}; frames every {args.stride} steps",
        f"steps: 1 replica {args.steps} timed after 1 + {args.warmup} warm-up; more replicas {args.steps_batch} "
        f"after 1 + {args.warmup_batch} (jaxatom: the total rounded up to the stride, compile excluded); "
        f"{args.rounds} alternating round(s)",
        f"measured float32 matmul (2048², best of 10): torch.mm {peaks['torch_mm_gflops']:.1f} GFLOP/s, XLA jnp.dot "
        f"{peaks['xla_dot_gflops']:.1f} GFLOP/s",
    ]
    for name, counts in info["params"].items():
        check = info["model_check"][name]
        diffs = ", ".join(f"{k} {check[k]:.1e} (of {check[k + '_max_abs']:.3g})" for k in check
                          if not k.endswith("_max_abs"))  # fmt: skip
        lines.append(f"{name} model: parameters jaxatom {counts['jaxatom']}, SchNetPack {counts['schnetpack']}; "
                     f"max |jaxatom - SchNetPack| at the start (float32): {diffs}")  # fmt: skip
    if start[0] > 0.5 * core_count():
        lines.append("WARNING: the machine was busy before the run started; timings may be inflated and noisy")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--structure", type=Path, help="aspirin geometry (any ASE format; default: the shipped one)")
    parser.add_argument("--replicas", nargs="+", type=int, default=[1, 16], help="replica counts to run")
    parser.add_argument("--stride", type=int, default=2, help="steps between recorded frames (both frameworks)")
    parser.add_argument("--steps", type=int, default=600, help="timed steps with 1 replica")
    parser.add_argument("--warmup", type=int, default=10, help="untimed SchNetPack steps after the first (1 replica)")
    parser.add_argument("--steps-batch", type=int, default=100, help="timed steps with more replicas")
    parser.add_argument("--warmup-batch", type=int, default=4, help="untimed SchNetPack steps (more replicas)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of all rows")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the velocities")
    parser.add_argument("--threads", type=int, default=core_count(), help="torch threads (default: all cores)")
    parser.add_argument("--spk-neighbor-list", choices=["matscipy", "ase", "torch", "vesin"], default="vesin",
                        help="SchNetPack's NeighborListMD base (1 Å shell)")  # fmt: skip
    parser.add_argument("--jaxatom-weights", choices=["schnetpack", "fresh"], default="schnetpack",
                        help="jaxatom model: SchNetPack's (imported) or a fresh Potential.create")  # fmt: skip
    parser.add_argument("--tmpdir", type=Path, help="where the trajectories are written (default: the system's)")
    parser.add_argument("--no-roofline", action="store_true", help="leave out the roofline columns")
    parser.add_argument("--json", type=Path, help="also write all results and environment info to this file")
    args = parser.parse_args(argv)
    if min(args.steps, args.steps_batch, args.rounds, args.stride, args.threads, *args.replicas) < 1:
        parser.error("--steps, --steps-batch, --rounds, --stride, --threads and --replicas must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run, print the header and the table, optionally write JSON."""
    args = parse_args(argv)
    limits = None
    if not args.no_roofline:
        from _roofline import machine_limits

        import jaxatom  # noqa: F401  (tunes the CPU allocator before JAX starts)

        limits = machine_limits()
    rows, info = run(args)
    print(header(args, info))
    print()
    print(markdown(rows, args.replicas, info["matmul"], limits))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"command": command_line(), "cpu": cpu_model(), "cores": core_count(), **{k: str(v) if isinstance(
            v, Path) else v for k, v in vars(args).items()}}  # fmt: skip
        args.json.write_text(json.dumps({"meta": meta, "info": info, "rows": rows}, indent=2, default=str))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
