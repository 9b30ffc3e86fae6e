"""MD benchmark: steps per second of jaxatom's MD driver vs SchNetPack's own MD vs ASE with SchNetPack's calculator.

Work: molecular dynamics of aspirin (21 atoms, ``bench_inference.DEFAULT_STRUCTURE``) with randomly initialised
SchNet (128 features, 6 interactions) and PaiNN (128 features, 3 interactions), 5 Å cosine cutoff, 20 Gaussian radial
basis functions (the models of ``bench_inference.py``), float32, time step 0.5 fs, initial velocities drawn from the
Maxwell-Boltzmann distribution at 300 K (centre-of-mass momentum removed, rotation kept). Cases:

* ``md1``: one molecule, NVE (velocity Verlet);
* ``md64``: 64 independent copies of the molecule (same positions, different velocities) advanced together, NVE;
* ``rpmd8``: ring-polymer MD of one molecule with 8 beads at 300 K, PILE-L thermostat (centroid time constant
  100 fs; ``--rpmd-thermostat none`` for plain RPMD).

By default jaxatom runs the very weights SchNetPack runs (``build_spk_model`` with the same seed, converted by
``jaxatom.interop.schnetpack.import_model``): random weights do not hold the molecule together (it heats to about
1000 K and expands within a few hundred steps, which lowers the number of pairs within the cutoff and so SchNetPack's
cost per step), so both sides should integrate the same potential. ``--jaxatom-weights fresh`` uses
``Potential.create`` instead. The rows record the pairs within the cutoff at the end of each SchNetPack run.

Frameworks:

* ``jaxatom``: ``jaxatom.md.simulate`` (the ``lax.scan`` driver), whose own timing separates compilation from the
  steady-state steps per second (see :func:`run_jaxatom_case`, the only function that calls it);
* ``schnetpack.md``: SchNetPack's own MD, ``schnetpack.md.Simulator`` with a ``System`` (64 copies are
  ``n_molecules=64`` in one ``System``; ``n_replicas`` are ring-polymer beads), ``MaxwellBoltzmannInit``,
  ``VelocityVerlet`` or ``RingPolymer`` integrator (+ ``PILELocalThermostat`` hook), ``SchNetPackCalculator`` with a
  ``NeighborListMD``: a Verlet list around ``--spk-neighbor-list`` (default vesin, the fastest rebuild of the four;
  all four give identical pairs) built with ``cutoff + --cutoff-shell`` (1 Å) and rebuilt for a molecule only when one
  of its atoms has moved more than half the shell, filtered to the cutoff every step; no file-writing hooks, and
  ``Simulator.to(torch.float32)``;
* ``ase``: ``ase.md.VelocityVerlet`` driving SchNetPack's ASE calculator ``SpkCalculator`` with the same neighbour
  list transform, rebuilt every step (no skin). ASE advances one ``Atoms`` object, so it has no batched mode: its
  ``md64`` row is *extrapolated* from the measured ``md1`` run as 64 x the step time and says so; it has no RPMD.

Timing: every SchNetPack run is one ``simulate`` / ``run`` call of ``1 + warm-up + timed`` steps, with a hook (an ASE
observer) stamping the wall clock after every step. *First step* is the time from the call to the end of step 1: it
includes the initial force evaluation, the first neighbour list and the first step (torch compiles nothing).
*Steady steps/s* is the number of timed steps over their wall time (the median step time is in the JSON). For jaxatom,
*first step / compile* is ``run.timing["compile_s"]`` and steady steps/s is ``run.timing["steps_per_s"]`` of a run of
the same total number of steps, rounded up to whole output strides. *Replica-steps/s* is steps/s times the number of
copies advanced per step (molecules, or beads for RPMD). The ratio is steps/s over SchNetPack MD's steps/s.

The driver (run with the jaxatom environment) times jaxatom in-process and SchNetPack in a subprocess, this same file
in worker mode run with the SchNetPack environment (``--spk-python``; see ``setup_schnetpack_env.sh``); the two run one
after the other, never concurrently. The worker imports only torch, schnetpack, ase and numpy (and vesin/matscipy
through SchNetPack).

The energy drift of a long NVE run is not measured here for SchNetPack; its NVE rows only report the largest change
of the total energy over the short run, as a check of the set-up (units, float32).

The structure is the first frame of the shipped aspirin data unless ``--structure`` names a file; SchNetPack runs in
``--spk-python``, by default this Python when it imports schnetpack (else its rows are skipped with a note). jaxatom's
rows carry the roofline columns of ``benchmarks/_roofline.py`` per MD step (XLA's cost analysis of the compiled chunk,
read where the driver compiles it); SchNetPack's and ASE's GFLOP/s count jaxatom's FLOPs per step for the same work.

Usage (from the repository root)::

    python benchmarks/bench_md.py --json benchmarks/out/md.json
    python benchmarks/bench_md.py --skip-jaxatom --models schnet --cases md1 rpmd8
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Column,
    busy_warning,
    command_line,
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
    torch_device,
    torch_sync,
    write_json,
)
from bench_inference import CUTOFF, MODELS, N_ATOM_BASIS, N_RBF, build_spk_model  # noqa: E402

if TYPE_CHECKING:
    from ase import Atoms

TIMESTEP_FS = 0.5
TEMPERATURE_K = 300.0
N_COPIES = 64
N_BEADS = 8
STRIDE = 10  # steps between the frames jaxatom's driver keeps
#: Copies advanced per step (molecules, or ring-polymer beads), per case.
CASES: dict[str, int] = {"md1": 1, f"md{N_COPIES}": N_COPIES, f"rpmd{N_BEADS}": N_BEADS}
CASE_TITLES: dict[str, str] = {
    "md1": "1 aspirin, NVE",
    f"md{N_COPIES}": f"{N_COPIES} aspirin, NVE",
    f"rpmd{N_BEADS}": f"RPMD, {N_BEADS} beads",
}
FRAMEWORKS: dict[str, str] = {
    "jaxatom": "jaxatom (neighbors=auto)",
    "jaxatom:dense": "jaxatom, dense blocks",
    "jaxatom:all_pairs": "jaxatom, all-pairs edges",
    "schnetpack.md": "SchNetPack MD",
    "ase": "ASE + SpkCalculator",
}


# ----------------------------------------------------------------------------------------------------------- shared


def thermalize(atoms, seed: int) -> None:
    """Maxwell–Boltzmann momenta at :data:`TEMPERATURE_K` from ``seed``, total momentum removed (ASE's tools)."""
    from ase.md import velocitydistribution

    rng = np.random.default_rng(seed)
    if hasattr(velocitydistribution, "thermalize_momenta"):  # ASE >= 3.29
        velocitydistribution.thermalize_momenta(atoms, TEMPERATURE_K, rng=rng)
    else:
        velocitydistribution.MaxwellBoltzmannDistribution(atoms, temperature_K=TEMPERATURE_K, rng=rng)
    velocitydistribution.Stationary(atoms)


def load_structure(structure: Path | None) -> Atoms:
    """The benchmark molecule (``structure``, or the shipped aspirin), without cell or periodicity."""
    atoms = read_structure(structure)
    atoms.pbc = False
    atoms.cell = None
    return atoms


def case_steps(args: argparse.Namespace, case: str) -> tuple[int, int]:
    """(warm-up steps, timed steps) of ``case``: the batch options for the 64-copy case, the plain ones otherwise."""
    if case == f"md{N_COPIES}":
        return args.warmup_batch, args.steps_batch
    return args.warmup, args.steps


def pairs_within_cutoff(positions: np.ndarray) -> int:
    """Ordered atom pairs closer than the cutoff in one molecule (the edges of the model's graph)."""
    distances = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
    return int(np.count_nonzero(distances < CUTOFF) - len(positions))


def step_row(framework: str, model: str, case: str, start: float, stamps: Sequence[float], warmup: int,
             **extra: Any) -> dict[str, Any]:  # fmt: skip
    """A result row from the wall-clock ``start`` of a run and the ``stamps`` taken after each of its steps."""
    ends = np.asarray(stamps)
    steps = len(ends) - 1 - warmup
    durations = np.diff(ends[warmup:])
    wall = float(ends[-1] - ends[warmup])
    copies = CASES[case]
    return {"framework": framework, "model": model, "case": case, "copies": copies,
            "first_s": float(ends[0] - start), "warmup_steps": warmup, "steps": steps, "wall_s": wall,
            "steps_per_s": steps / wall, "replica_steps_per_s": copies * steps / wall,
            "median_step_s": float(statistics.median(durations)), "extrapolated": False, **extra}  # fmt: skip


# ------------------------------------------------------------------------------------------------ SchNetPack worker


def spk_neighbor_transform(name: str):
    """One of SchNetPack's neighbour list transforms (a class taking the cutoff)."""
    import schnetpack as spk

    return {"matscipy": spk.transform.MatScipyNeighborList, "ase": spk.transform.ASENeighborList,
            "torch": spk.transform.TorchNeighborList, "vesin": spk.transform.VesinNeighborList}[name]  # fmt: skip


def spk_neighbor_list(name: str, cutoff_shell: float):
    """SchNetPack's MD neighbour list: a Verlet list around one of SchNetPack's neighbour list transforms."""
    from schnetpack.md.neighborlist_md import NeighborListMD

    return NeighborListMD(cutoff=CUTOFF, cutoff_shell=cutoff_shell, base_nbl=spk_neighbor_transform(name))


def spk_md_case(model_file: Path, atoms: Atoms, model: str, case: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one case with ``schnetpack.md.Simulator`` and return its timing row."""
    import schnetpack.md as md
    import torch
    from schnetpack import units as spk_units
    from schnetpack.md.calculators import SchNetPackCalculator
    from schnetpack.md.simulation_hooks import PILELocalThermostat, SimulationHook

    sync = torch_sync(torch_device(args.spk_device))

    def total_energy(system) -> np.ndarray:
        """Kinetic + potential energy (eV) of every molecule (and bead)."""
        etot = system.kinetic_energy + system.energy
        return etot.detach().double().cpu().numpy().ravel() / spk_units.unit2internal("eV")

    class StepClock(SimulationHook):
        """Stamps the wall clock at the end of every step (after the thermostat, before the next step); keeps the
        total energy after the initial force evaluation."""

        def __init__(self) -> None:
            super().__init__()
            self.stamps: list[float] = []
            self.energy_start: np.ndarray | None = None

        def on_simulation_start(self, simulator) -> None:
            self.energy_start = total_energy(simulator.system)

        def on_step_finalize(self, simulator) -> None:
            sync(None)  # CUDA runs asynchronously: the step is done when its queued work is
            self.stamps.append(time.perf_counter())

    rpmd = case.startswith("rpmd")
    n_molecules, n_beads = (1, CASES[case]) if rpmd else (CASES[case], 1)
    warmup, steps = case_steps(args, case)
    system = md.System()
    molecules = [atoms.copy() for _ in range(n_molecules)]
    system.load_molecules(molecules, n_replicas=n_beads, position_unit_input="Angstrom")
    torch.manual_seed(args.seed)
    initializer = md.MaxwellBoltzmannInit(TEMPERATURE_K, remove_center_of_mass=True, remove_translation=True)
    initializer.initialize_system(system)
    # The calculator loads the model from a file (its only option) and casts it to float64; Simulator.to casts back.
    calculator = SchNetPackCalculator(str(model_file), force_key="forces", energy_unit="eV", position_unit="Angstrom",
                                      neighbor_list=spk_neighbor_list(args.spk_neighbor_list, args.cutoff_shell),
                                      energy_key="energy")  # fmt: skip
    hooks: list = []
    if rpmd:
        integrator = md.integrators.RingPolymer(TIMESTEP_FS, n_beads=n_beads, temperature=TEMPERATURE_K)
        if args.rpmd_thermostat == "pile-l":
            hooks.append(PILELocalThermostat(TEMPERATURE_K, time_constant=args.pile_time_constant_fs))
    else:
        integrator = md.integrators.VelocityVerlet(TIMESTEP_FS)
    clock = StepClock()
    simulator = md.Simulator(system, integrator, calculator, simulator_hooks=[*hooks, clock], progress=False)
    simulator = simulator.to(torch.float32).to(torch_device(args.spk_device))

    start = time.perf_counter()
    simulator.simulate(1 + warmup + steps)
    energy_change = total_energy(system) - clock.energy_start
    molecules = system.get_ase_atoms(position_unit_output="Angstrom")
    extra = {
        "dtype": str(system.positions.dtype),
        "pairs_end_mean": float(np.mean([pairs_within_cutoff(m.positions) for m in molecules])),
        "temperature_end_K": float(system.temperature.mean()),
    }
    if rpmd:
        extra["thermostat"] = args.rpmd_thermostat
        extra["centroid_temperature_end_K"] = float(system.centroid_temperature.mean())
    else:
        extra["max_abs_energy_change_eV"] = float(np.max(np.abs(energy_change)))
    return step_row("schnetpack.md", model, case, start, clock.stamps, warmup, **extra)


def ase_case(model_module, atoms: Atoms, model: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``md1`` with ASE's ``VelocityVerlet`` and SchNetPack's ``SpkCalculator``; return its timing row."""
    import torch
    from ase import units
    from ase.md.verlet import VelocityVerlet
    from schnetpack.interfaces import SpkCalculator

    warmup, steps = case_steps(args, "md1")
    atoms = atoms.copy()
    neighbor_list = spk_neighbor_transform(args.spk_neighbor_list)(cutoff=CUTOFF)
    atoms.calc = SpkCalculator(model_module, neighbor_list=neighbor_list, energy_unit="eV", position_unit="Angstrom",
                               dtype=torch.float32)  # fmt: skip
    thermalize(atoms, args.seed)
    dynamics = VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs)
    stamps: list[float] = []
    energy: dict[str, float] = {}

    def observe() -> None:  # called once after the initial force evaluation and then after every step
        stamps.append(time.perf_counter())
        if len(stamps) == 1:
            energy["start"] = atoms.get_total_energy()

    dynamics.attach(observe, interval=1)
    start = time.perf_counter()
    dynamics.run(1 + warmup + steps)
    return step_row("ase", model, "md1", start, stamps[1:], warmup, dtype="torch.float32",
                    pairs_end_mean=float(pairs_within_cutoff(atoms.positions)),
                    temperature_end_K=float(atoms.get_temperature()),
                    max_abs_energy_change_eV=abs(atoms.get_total_energy() - energy["start"]))  # fmt: skip


def ase_extrapolated(row: dict[str, Any]) -> dict[str, Any]:
    """The ``md64`` row of ASE: 64 molecules advanced one after the other, 64 x the measured ``md1`` step time."""
    copies = CASES[f"md{N_COPIES}"]
    return {**row, "case": f"md{N_COPIES}", "copies": copies, "first_s": None, "wall_s": None,
            "steps_per_s": row["steps_per_s"] / copies, "replica_steps_per_s": row["steps_per_s"],
            "median_step_s": row["median_step_s"] * copies, "extrapolated": True}  # fmt: skip


def run_spk_worker_mode(args: argparse.Namespace) -> None:
    """Worker mode: benchmark SchNetPack's MD and ASE + ``SpkCalculator``, write the results as JSON."""
    import ase
    import schnetpack as spk
    import torch

    torch.set_num_threads(args.threads)
    atoms = load_structure(args.structure)
    rows, info = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_md_") as tmp:
        for name in args.models:
            torch.manual_seed(args.seed)
            model = build_spk_model(name)
            info[f"{name}_params"] = sum(p.numel() for p in model.parameters())
            model_file = Path(tmp) / f"{name}.pt"
            torch.save(model, model_file)
            for case in args.cases:
                print(f"[schnetpack worker] {name} {case}: schnetpack.md", file=sys.stderr, flush=True)
                rows.append(spk_md_case(model_file, atoms, name, case, args))
                if case == "md1" and not args.skip_ase:
                    print(f"[schnetpack worker] {name} {case}: ase", file=sys.stderr, flush=True)
                    ase_row = ase_case(model, atoms, name, args)
                    rows.append(ase_row)
                    if f"md{N_COPIES}" in args.cases:
                        rows.append(ase_extrapolated(ase_row))
    try:
        matscipy = metadata.version("matscipy")
    except metadata.PackageNotFoundError:
        matscipy = "not installed"
    info.update(
        torch=torch.__version__,
        schnetpack=spk.__version__,
        ase=ase.__version__,
        matscipy=matscipy,
        numpy=np.__version__,
        python=platform.python_version(),
        torch_threads=torch.get_num_threads(),
        device=torch_device(args.spk_device),
        torch_interop_threads=torch.get_num_interop_threads(),
        pairs_start=pairs_within_cutoff(atoms.positions),
        checksum=float(np.sum(atoms.positions)),
    )
    write_json(args.worker_out, {"info": info, "rows": rows})


def run_spk_subprocess(args: argparse.Namespace, python: str, atoms: Atoms) -> tuple[list[dict[str, Any]], dict]:
    """Run this file in SchNetPack worker mode with ``python`` on the driver's structure; its rows and info."""
    with tempfile.TemporaryDirectory() as tmp:
        structure = args.structure or structure_file(atoms, tmp)
        data = run_spk_worker(__file__, python, [
            "--structure", str(structure), "--seed", str(args.seed),
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--steps-batch", str(args.steps_batch),
            "--warmup-batch", str(args.warmup_batch), "--spk-neighbor-list", args.spk_neighbor_list,
            "--cutoff-shell", str(args.cutoff_shell), "--rpmd-thermostat", args.rpmd_thermostat,
            "--pile-time-constant-fs", str(args.pile_time_constant_fs), "--models", *args.models,
            "--cases", *args.cases, *(["--skip-ase"] if args.skip_ase else []), "--spk-device", args.spk_device,
        ], args.threads)  # fmt: skip
    return data["rows"], data["info"]


# --------------------------------------------------------------------------------------------------- jaxatom driver


def jaxatom_potential(name: str, atoms: Atoms, seed: int, weights: str):
    """The jaxatom potential of the benchmark architecture: with ``weights="schnetpack"`` the very model the
    SchNetPack worker runs (``build_spk_model`` with the same seed, converted by ``jaxatom.interop.schnetpack``), else
    a fresh ``jaxatom.Potential.create``. Random weights do not hold the molecule together (it heats up and expands,
    which changes the number of pairs within the cutoff and so SchNetPack's cost per step): the same weights make both
    sides integrate the same potential."""
    elements = sorted({int(z) for z in atoms.numbers})
    if weights == "schnetpack":
        try:
            import torch

            from jaxatom.interop.schnetpack import import_model
        except ImportError as err:
            raise SystemExit(f"--jaxatom-weights schnetpack needs torch and schnetpack ({err}); or pass fresh") from err

        torch.manual_seed(seed)
        return import_model(build_spk_model(name), energy_unit="eV", position_unit="Ang", elements=elements)
    import jaxatom
    from jaxatom.nn import PaiNN, SchNet

    representation = {"schnet": SchNet, "painn": PaiNN}[name](
        n_atom_basis=N_ATOM_BASIS, n_interactions=MODELS[name], cutoff=CUTOFF, n_rbf=N_RBF
    )
    return jaxatom.Potential.create(representation, elements=elements, seed=seed)


def run_jaxatom_case(potential, atoms: Atoms, case: str, steps: int, args: argparse.Namespace,
                     neighbors: str = "auto") -> dict[str, float]:  # fmt: skip
    """Run ``case`` with ``jaxatom.md.simulate``; return its ``timing`` dict (``compile_s``, ``steps_per_s``,
    ``wall_s``, ...) with XLA's cost of one step (``flops``, ``bytes``) from the compiled chunk. The only place that
    calls the MD API: adjust here if it changes."""
    from _roofline import capture_md_chunks, md_step_cost

    from jaxatom.md import simulate

    if case.startswith("rpmd"):
        options = {"ensemble": "rpmd", "n_replicas": 1, "n_beads": CASES[case],
                   "rpmd_thermostat": args.rpmd_thermostat.replace("-", "_"),
                   "centroid_tau_fs": args.pile_time_constant_fs}  # fmt: skip
    else:
        options = {"ensemble": "nve", "n_replicas": CASES[case]}
    with capture_md_chunks() as chunks:
        run = simulate(potential, atoms, steps=stride_steps(steps), timestep_fs=TIMESTEP_FS,
                       temperature_K=TEMPERATURE_K, stride=STRIDE, output=None, seed=args.seed, progress=False,
                       neighbors=neighbors, **options)  # fmt: skip
    return {**run.timing, **(md_step_cost(chunks) or {})}


def stride_steps(steps: int) -> int:
    """``steps`` rounded up to whole output strides, as passed to ``simulate``."""
    return STRIDE * math.ceil(steps / STRIDE)


def run_jaxatom(args: argparse.Namespace, atoms: Atoms, weights: str) -> tuple[list[dict[str, Any]], dict]:
    """Benchmark jaxatom in-process; returns result rows and environment info."""
    import flax
    import jax

    import jaxatom

    rows, info = [], {}
    for name in args.models:
        potential = jaxatom_potential(name, atoms, args.seed, weights)
        info[f"{name}_params"] = sum(int(np.size(p)) for p in jax.tree.leaves(potential.params))
        for case, neighbors in itertools.product(args.cases, args.neighbors):
            print(f"[jaxatom] {name} {case} {neighbors}", file=sys.stderr, flush=True)
            warmup, steps = case_steps(args, case)
            timing = run_jaxatom_case(potential, atoms, case, 1 + warmup + steps, args, neighbors)
            copies = CASES[case]
            rows.append(
                {
                    "framework": "jaxatom" if neighbors == "auto" else f"jaxatom:{neighbors}",
                    "model": name,
                    "case": case,
                    "copies": copies,
                    "first_s": timing["compile_s"],
                    "steps": stride_steps(1 + warmup + steps),
                    "wall_s": timing.get("wall_s"),
                    "steps_per_s": timing["steps_per_s"],
                    "replica_steps_per_s": copies * timing["steps_per_s"],
                    "extrapolated": False,
                    "flops": timing.get("flops"),
                    "bytes": timing.get("bytes"),
                    "timing": timing,
                }
            )
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


# ---------------------------------------------------------------------------------------------------------- report


def find_row(rows: Sequence[dict[str, Any]], framework: str, model: str, case: str) -> dict[str, Any] | None:
    """The row of one framework, model and case, if measured."""
    for row in rows:
        if (row["framework"], row["model"], row["case"]) == (framework, model, case):
            return row
    return None


def table_rows(rows: Sequence[dict[str, Any]], models: Sequence[str], cases: Sequence[str],
               limits: dict | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The rows of the table in order, each with its ratio to SchNetPack MD and, with ``limits``, the roofline of
    one MD step (jaxatom's FLOPs and bytes per step, also as the work count of the other frameworks' rows)."""
    from _roofline import with_roofline

    table = []
    for model in models:
        for case in cases:
            reference = find_row(rows, "schnetpack.md", model, case)
            jaxatom_rows = [find_row(rows, key, model, case) for key in FRAMEWORKS if key.startswith("jaxatom")]
            work = next((row for row in jaxatom_rows if row), {})  # its FLOPs count the other frameworks' work
            for framework, title in FRAMEWORKS.items():
                row = find_row(rows, framework, model, case)
                if row is None:
                    continue
                mark = " (extrapolated: 64 x 1 copy)" if row["extrapolated"] else ""
                out = {**row, "case_title": CASE_TITLES[case], "title": title + mark,
                       "ratio": row["steps_per_s"] / reference["steps_per_s"] if reference else None,
                       # each jaxatom row's own FLOPs per step; the default's are the other frameworks' work count
                       "flops": (row if framework.startswith("jaxatom") else work).get("flops"),
                       "bytes": row.get("bytes") if framework.startswith("jaxatom") else None}  # fmt: skip
                table.append(with_roofline(out, 1.0 / row["steps_per_s"], limits) if limits else out)
    return table


def markdown(table: Sequence[dict[str, Any]], roofline: bool = False) -> str:
    """The results table; the ratio is steps/s over SchNetPack MD's steps/s for the same model and case."""
    from _roofline import COLUMNS

    columns = [
        Column("model", "model", numeric=False),
        Column("case", "case_title", numeric=False),
        Column("framework", "title", numeric=False),
        Column("first step / compile (s)", "first_s", ".3f"),
        Column("steady steps/s", "steps_per_s", ".2f"),
        Column("replica-steps/s", "replica_steps_per_s", ".1f"),
        Column("vs SchNetPack MD", lambda r: r["ratio"] and f"{r['ratio']:.2f}x"),
    ]
    return markdown_table([*columns, *(COLUMNS if roofline else ())], table)


def header(args: argparse.Namespace, info: dict[str, Any]) -> str:
    """Environment, command and set-up printed above the table."""
    jax_info, spk_info = info.get("jaxatom", {}), info.get("schnetpack", {})
    lines = [
        f"CPU: {cpu_model()} ({core_count()} cores available; flags: {cpu_flags()}); "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
        f"command: {command_line()}",
    ]
    if jax_info:
        lines.append(
            f"jaxatom {jax_info['jaxatom']}, jax {jax_info['jax']}, jaxlib {jax_info['jaxlib']}, flax "
            f"{jax_info['flax']}, numpy {jax_info['numpy']}, python {jax_info['python']}; backend "
            f"{jax_info['backend']}, XLA's own CPU thread pool"
        )
    if spk_info:
        lines.append(
            f"schnetpack {spk_info['schnetpack']}, torch {spk_info['torch']}, ase {spk_info['ase']}, matscipy "
            f"{spk_info['matscipy']}, numpy {spk_info['numpy']}, python {spk_info['python']}; torch threads "
            f"{spk_info['torch_threads']} (--threads {args.threads}), interop {spk_info['torch_interop_threads']}"
        )
    else:
        lines.append(info.get("spk_note", "SchNetPack not run"))
    shell = f"{args.cutoff_shell:g} Å shell"
    source = args.structure.resolve() if args.structure else 'jaxatom.data.load_builtin("aspirin"), frame 0'
    thermostat = (f"PILE-L (centroid time constant {args.pile_time_constant_fs:g} fs)"
                  if args.rpmd_thermostat == "pile-l" else "none (plain RPMD)")  # fmt: skip
    lines += [
        f"structure: {source}; float32; time step {TIMESTEP_FS} fs; Maxwell-Boltzmann "
        f"{TEMPERATURE_K:g} K (seed {args.seed}); {N_COPIES} copies = same positions, different velocities",
        f"steps: {args.steps} timed after 1 + {args.warmup} warm-up (md1, rpmd{N_BEADS}), {args.steps_batch} timed "
        f"after 1 + {args.warmup_batch} (md{N_COPIES}); jaxatom: the same totals rounded up to multiples of 10",
        f"SchNetPack MD: NeighborListMD({args.spk_neighbor_list}, {shell}); RPMD thermostat: {thermostat}; "
        f"ASE: SpkCalculator with {args.spk_neighbor_list} rebuilt every step",
    ]
    if jax_info:
        weights = {"schnetpack": "SchNetPack's model, same seed, imported", "fresh": "Potential.create, own init"}
        lines.append(f"jaxatom weights: {weights[info['weights']]}")
    for name in args.models:
        counts = [f"{framework} {side[f'{name}_params']}" for framework, side in (("jaxatom", jax_info),
                  ("SchNetPack", spk_info)) if side]  # fmt: skip
        if counts:
            lines.append(
                f"{name} ({N_ATOM_BASIS} features, {MODELS[name]} interactions) parameters: {', '.join(counts)}"
            )
    load = busy_warning(info["load"]["start"], info["load"].get("end"))
    return "\n".join([*lines, load] if load else lines)


# ------------------------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (shared by the driver and the worker)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--structure", type=Path, help="aspirin geometry (any ASE format; default: the shipped one)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS), help="models to run")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="cases to run")
    parser.add_argument("--steps", type=int, default=300, help=f"timed steps of md1 and rpmd{N_BEADS}")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps after the first (md1, rpmd)")
    parser.add_argument("--steps-batch", type=int, default=20, help=f"timed steps of md{N_COPIES}")
    parser.add_argument("--warmup-batch", type=int, default=2, help=f"untimed steps after the first (md{N_COPIES})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model weights and the initial velocities")
    parser.add_argument("--threads", type=int, default=core_count(), help="torch threads (default: all cores)")
    parser.add_argument("--spk-python", type=Path, help="python with schnetpack (default: this one, if it has it)")
    parser.add_argument("--spk-neighbor-list", choices=["matscipy", "ase", "torch", "vesin"], default="vesin",
                        help="SchNetPack neighbour list transform (NeighborListMD base, SpkCalculator)")  # fmt: skip
    parser.add_argument("--cutoff-shell", type=float, default=1.0, help="NeighborListMD buffer (Å)")
    parser.add_argument("--rpmd-thermostat", choices=["pile-l", "none"], default="pile-l", help="SchNetPack RPMD")
    parser.add_argument("--pile-time-constant-fs", type=float, default=100.0, help="PILE-L centroid time constant")
    parser.add_argument(
        "--jaxatom-weights",
        choices=["auto", "schnetpack", "fresh"],
        default="auto",
        help="jaxatom model: SchNetPack's (same seed, imported) or a fresh Potential.create (auto: SchNetPack's "
        "where torch and schnetpack import here)",
    )
    parser.add_argument("--skip-spk", action="store_true", help="do not run the SchNetPack worker")
    parser.add_argument("--spk-device", default="auto", help="torch device of SchNetPack MD (auto: cuda if available)")
    parser.add_argument("--skip-ase", action="store_true", help="do not run ASE + SpkCalculator")
    parser.add_argument("--skip-jaxatom", action="store_true", help="do not run jaxatom")
    parser.add_argument(
        "--neighbors",
        nargs="+",
        choices=["auto", "dense", "all_pairs"],
        default=["dense", "all_pairs"],
        help="jaxatom's MD neighbour regimes to time (auto: dense blocks for SchNet, all-pairs lists for PaiNN)",
    )
    parser.add_argument("--no-roofline", action="store_true", help="leave out the roofline columns")
    parser.add_argument("--json", type=Path, help="also write all results and environment info to this file")
    parser.add_argument("--worker", choices=["schnetpack"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.steps, args.steps_batch, args.threads) < 1 or min(args.warmup, args.warmup_batch) < 0:
        parser.error("--steps, --steps-batch and --threads must be positive, the warm-ups non-negative")
    if args.skip_spk and args.skip_jaxatom:
        parser.error("nothing to run: --skip-spk and --skip-jaxatom")
    return args


def run(args: argparse.Namespace, limits: dict | None = None) -> dict[str, Any]:
    """Run the SchNetPack worker (subprocess, when a Python with schnetpack is found) and then jaxatom; returns
    ``{"meta", "info", "rows", "table", "header", "markdown"}``. ``limits``: the machine's roofline limits."""
    import importlib.util

    atoms = load_structure(args.structure)
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"load": {"start": load_average()}}
    info["weights"] = args.jaxatom_weights
    if args.jaxatom_weights == "auto":
        local = all(importlib.util.find_spec(m) is not None for m in ("torch", "schnetpack"))
        info["weights"] = "schnetpack" if local else "fresh"
    skip = "SchNetPack rows skipped (--skip-spk)" if args.skip_spk else None
    rows, spk_info, info["spk_note"] = schnetpack_side(
        skip, args.spk_python, lambda python: run_spk_subprocess(args, python, atoms), float(np.sum(atoms.positions))
    )
    if spk_info is not None:
        info["schnetpack"] = spk_info
    if not args.skip_jaxatom:
        jax_rows, info["jaxatom"] = run_jaxatom(args, atoms, info["weights"])
        rows.extend(jax_rows)
    info["load"]["end"] = load_average()
    table = table_rows(rows, args.models, args.cases, limits)
    meta = {
        "command": command_line(),
        "environment": environment(with_jax=not args.skip_jaxatom),
        "structure": str(args.structure or "builtin:aspirin[0]"),
        "timestep_fs": TIMESTEP_FS,
        "temperature_K": TEMPERATURE_K,
        "cutoff_shell_angstrom": args.cutoff_shell,
        **{key: getattr(args, key) for key in ("threads", "seed", "steps", "warmup", "steps_batch",
           "warmup_batch", "spk_neighbor_list", "rpmd_thermostat", "pile_time_constant_fs")},
    }  # fmt: skip
    return {"meta": meta, "info": info, "rows": rows, "table": table, "header": header(args, info),
            "markdown": markdown(table, roofline=limits is not None)}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark, print the header and the markdown table, optionally write JSON."""
    args = parse_args(argv)
    if args.worker == "schnetpack":
        run_spk_worker_mode(args)
        return
    from _roofline import run_and_report

    run_and_report(run, args, not args.no_roofline and not args.skip_jaxatom, args.json)


if __name__ == "__main__":
    main()
