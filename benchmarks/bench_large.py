"""Large periodic MD benchmark: time and memory per atom-step from 10² to 10⁵ atoms, jaxatom vs SchNetPack vs ASE.

System: fcc copper, ``ase.build.bulk("Cu", cubic=True).repeat(n)`` (4 n³ atoms; each requested size is rounded to the
nearest cube), positions with seeded Gaussian noise (0.05 Å), Maxwell-Boltzmann velocities at 300 K, time step 1 fs,
float32, CPU. Model: SchNetPack's PaiNN (or SchNet) with a small width (default 32 features, 2 interactions, 5 Å
cosine cutoff, 20 Gaussians), randomly initialised with ``--seed``; jaxatom runs the very same weights, converted by
``jaxatom.interop.schnetpack.import_model``. No trained model is needed: the timings do not depend on the weights
(random weights heat the crystal by a few hundred K within the few tens of fs run, too short to change its structure,
so the pairs within the cutoff stay those of fcc copper; the end temperatures are in the JSON).

Codes, each size of each in a fresh process (so that the peak resident memory, ``VmHWM``, is that size's):

* ``jaxatom``: ``jaxatom.md.simulate(..., ensemble="nve", neighbors="list")`` (a jax-md list with a 1 Å skin; cells
  narrower than 2 × (cutoff + skin) use ``neighbors="images"``, as ``"auto"`` does); *compile* is
  ``run.timing["compile_s"]``, steps/s is ``run.timing["steps_per_s"]`` (compiled chunks, compilation excluded);
  work per step is XLA's cost analysis of the force evaluation (every operation, padded edges, the list update
  excluded: its rebuild branch would be counted as if taken every step), put on the roofline of the machine's
  measured limits (``benchmarks/_roofline.py``);
* ``schnetpack``: ``schnetpack.md.Simulator`` with ``VelocityVerlet`` and ``SchNetPackCalculator`` with
  ``NeighborListMD`` (``bench_md.spk_neighbor_list``: vesin by default, 1 Å shell), ``Simulator.to(torch.float32)``,
  run in ``--spk-python`` (default: this Python when it imports schnetpack; else SchNetPack is left out with a note,
  and jaxatom runs a fresh ``Potential.create`` model of the same architecture);
* ``ase``: ``ase.md.verlet.VelocityVerlet`` with ``jaxatom.calculators.JaxAtomCalculator`` (host neighbour list every
  step; the calculator also computes the stress of a periodic cell with every evaluation).

Steps: ``--steps`` timed steps, fewer for large systems so that a size costs about ``--atom-steps`` atom-steps (at
least 3). SchNetPack and ASE run ``1 + --warmup`` + timed steps, a hook stamping the wall clock after each; *first
step* is the time to the end of step 1 (model load, first neighbour list, jaxatom's compilation for ASE), steps/s is
over the timed steps. jaxatom runs the same total as one output stride (one frame). A code stops at the first size whose
process runs longer than ``--budget-s`` or grows beyond ``--max-rss-gib`` (or is killed, or runs out of memory);
larger sizes of that code are not run. Memory per atom is (peak RSS - RSS after the imports and the model) / atoms.

NPT vs NVT: jaxatom ``ensemble="npt_scr"`` (pressure 0) vs ``ensemble="langevin"`` at ``--npt-sizes``, both with
``neighbors="list"``. With random weights the crystal collapses within ~60 steps (the list then overflows and the
chunk reruns), so time NPT with ``--steps 20`` (as benchmarks/RESULTS.md does).

Usage (from the repository root)::

    python benchmarks/bench_large.py --quick          # smoke test: 32 and 256 atoms, NPT at 256 (about 5 minutes)
    python benchmarks/bench_large.py --budget-s 300
    python -m benchmarks.suite --only large
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    REPO_ROOT,
    Column,
    busy_warning,
    command_line,
    core_count,
    environment,
    environment_line,
    load_average,
    markdown_table,
    spk_python,
    write_json,
)
from bench_inference import CUTOFF, N_RBF  # noqa: E402
from bench_md import TEMPERATURE_K, spk_neighbor_list, thermalize  # noqa: E402

if TYPE_CHECKING:
    from ase import Atoms

TIMESTEP_FS = 1.0
POSITION_NOISE = 0.05  # Å, standard deviation of the thermal noise on the lattice positions
SKIN = 1.0  # Å, jaxatom's list skin and SchNetPack's NeighborListMD shell
MIN_STEPS = 3  # fewest timed steps of a size
ATOMS_PER_CELL = 4  # conventional fcc cell
DEFAULT_SIZES = (100, 1_000, 10_000, 30_000, 100_000)
DEFAULT_NPT_SIZES = (500, 4_000)
QUICK_SIZES = (32, 256)
QUICK_NPT_SIZES = (256,)
CODES: dict[str, str] = {
    "jaxatom": "jaxatom simulate",
    "schnetpack": "SchNetPack MD",
    "ase": "ASE VelocityVerlet + JaxAtomCalculator",
}
NPT_ENSEMBLES = ("langevin", "npt_scr")
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "out" / "bench_large.md"


# ----------------------------------------------------------------------------------------------------------- shared


def timed_steps(args: argparse.Namespace, n_atoms: int) -> int:
    """Timed steps at ``n_atoms``: ``--steps``, fewer where that exceeds ``--atom-steps`` atom-steps (at least 3)."""
    return max(MIN_STEPS, min(args.steps, math.ceil(args.atom_steps / n_atoms)))


def cubic_repeat(n_atoms: int) -> int:
    """Repeats ``n`` of the cubic cell whose 4 n³ atoms come closest to ``n_atoms``."""
    return max(1, round((n_atoms / ATOMS_PER_CELL) ** (1 / 3)))


def copper(repeat: int, seed: int) -> Atoms:
    """The fcc copper supercell of ``repeat`` cubic cells per side, positions with seeded Gaussian noise."""
    from ase.build import bulk

    atoms = bulk("Cu", cubic=True).repeat(repeat)
    atoms.positions += np.random.default_rng(seed).normal(scale=POSITION_NOISE, size=atoms.positions.shape)
    return atoms


def build_spk_model(name: str, features: int, interactions: int):
    """SchNetPack's ``NeuralNetworkPotential`` (energy + forces) of the benchmark, in eval mode: ``bench_inference``'s
    architecture (5 Å cosine cutoff, 20 Gaussians) with ``features`` and ``interactions`` of one's choice."""
    import schnetpack as spk

    representation = {"schnet": spk.representation.SchNet, "painn": spk.representation.PaiNN}[name](
        n_atom_basis=features,
        n_interactions=interactions,
        radial_basis=spk.nn.GaussianRBF(n_rbf=N_RBF, cutoff=CUTOFF),
        cutoff_fn=spk.nn.CosineCutoff(CUTOFF),
    )
    model = spk.model.NeuralNetworkPotential(
        representation=representation,
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[
            spk.atomistic.Atomwise(n_in=features, output_key="energy"),
            spk.atomistic.Forces(energy_key="energy", force_key="forces"),
        ],
    )
    return model.eval()


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (MiB): ``VmHWM`` of ``/proc/self/status``, which starts afresh with
    the process image. Linux's ``ru_maxrss`` would not do: it keeps the peak of the parent that forked the worker (the
    driver, with jax and torch loaded) across ``exec``; it is the fallback (KiB on Linux) where there is no /proc."""
    try:
        status = Path("/proc/self/status").read_text().splitlines()
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stamped_rates(start: float, stamps: Sequence[float], warmup: int) -> dict[str, float]:
    """First-step time and steady steps/s from the wall-clock ``start`` and the ``stamps`` after every step."""
    ends = np.asarray(stamps)
    steps = len(ends) - 1 - warmup
    return {"first_s": float(ends[0] - start), "steps_per_s": steps / float(ends[-1] - ends[warmup]),
            "median_step_s": float(np.median(np.diff(ends[warmup:]))), "timed_steps": steps}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------- workers


def model_flops_spy() -> dict[str, float]:
    """Wrap ``jaxatom.md.driver._initial_state`` (run before ``simulate``'s clock starts) to record XLA's FLOP and
    byte counts of one force evaluation (energy + forces of the model on the run's edges). Unlike
    ``bench_md_observables``'s spy it leaves out the neighbour list update: its rebuild branch, taken only every few
    tens of steps, would be counted as if taken every step (a total of 9 times the model's FLOPs at 256 atoms)."""
    import jax
    from _roofline import cost

    from jaxatom.md import driver

    record: dict[str, float] = {}
    original = driver._initial_state

    @functools.wraps(original)
    def spy(plan, structures, masses, force_field, compute, integrator, velocities):
        state = original(plan, structures, masses, force_field, compute, integrator, velocities)
        apply = jax.vmap(force_field.apply, in_axes=(None, 0, None if state.neighbors is None else 0))
        lowered = jax.jit(apply).lower(force_field.params, state.positions, state.neighbors)
        record.update(cost(lowered))
        return state

    driver._initial_state = spy
    return record


def jaxatom_worker(args: argparse.Namespace, atoms: Atoms) -> dict[str, Any]:
    """One ``simulate`` run (``--ensemble``) of the structure; its timing, memory and FLOPs per force evaluation."""
    from jaxatom.md import simulate
    from jaxatom.md.neighbors import perpendicular_widths
    from jaxatom.potential import load_model

    potential = load_model(args.model_dir)
    baseline = peak_rss_mib()
    npt = args.ensemble == "npt_scr"
    list_fits = 2 * (CUTOFF + SKIN) <= perpendicular_widths(np.asarray(atoms.cell[:])).min()
    neighbors = "list" if list_fits or npt else "images"
    spy = {} if npt else model_flops_spy()  # the spy lowers the force function without a cell
    steps = 1 + args.warmup + args.steps
    settings = {"pressure": 0.0} if npt else {}
    start = time.perf_counter()
    run = simulate(potential, atoms, steps, timestep_fs=TIMESTEP_FS, ensemble=args.ensemble,
                   temperature_K=TEMPERATURE_K, neighbors=neighbors, skin=SKIN, stride=steps, output=None,
                   seed=args.seed, progress=False, **settings)  # fmt: skip
    timing = dict(run.timing)
    return {
        "status": "ok",
        "neighbors": neighbors,
        "steps": steps,
        "first_s": timing["compile_s"],
        "steps_per_s": timing["steps_per_s"],
        "call_s": time.perf_counter() - start,
        "timing": timing,
        "flops_per_step": spy.get("flops"),
        "bytes_per_step": spy.get("bytes"),
        "temperature_end_K": float(run.frames["temperature"][-1, 0]),
        "baseline_rss_mib": baseline,
    }


def spk_worker(args: argparse.Namespace, atoms: Atoms) -> dict[str, Any]:
    """SchNetPack's MD (``VelocityVerlet``, ``SchNetPackCalculator`` with ``NeighborListMD``) of the structure."""
    import ase
    import schnetpack as spk
    import schnetpack.md as md
    import torch
    from schnetpack import units as spk_units
    from schnetpack.md.calculators import SchNetPackCalculator
    from schnetpack.md.simulation_hooks import SimulationHook

    class StepClock(SimulationHook):
        """Stamps the wall clock after every step; keeps the potential energy (eV) of the starting structure."""

        def __init__(self) -> None:
            super().__init__()
            self.stamps: list[float] = []
            self.energy_start = float("nan")

        def on_simulation_start(self, simulator) -> None:
            self.energy_start = float(simulator.system.energy.sum()) / spk_units.unit2internal("eV")

        def on_step_finalize(self, simulator) -> None:
            self.stamps.append(time.perf_counter())

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model_file = Path(args.worker_out).with_suffix(".pt")
    torch.save(build_spk_model(args.model, args.features, args.interactions), model_file)
    baseline = peak_rss_mib()
    system = md.System()
    system.load_molecules([atoms], position_unit_input="Angstrom")
    initializer = md.MaxwellBoltzmannInit(TEMPERATURE_K, remove_center_of_mass=True, remove_translation=True)
    initializer.initialize_system(system)
    calculator = SchNetPackCalculator(str(model_file), force_key="forces", energy_unit="eV", position_unit="Angstrom",
                                      neighbor_list=spk_neighbor_list(args.spk_neighbor_list, SKIN),
                                      energy_key="energy")  # fmt: skip
    clock = StepClock()
    simulator = md.Simulator(system, md.integrators.VelocityVerlet(TIMESTEP_FS), calculator,
                             simulator_hooks=[clock], progress=False).to(torch.float32)  # fmt: skip
    start = time.perf_counter()
    simulator.simulate(1 + args.warmup + args.steps)
    return {
        "status": "ok",
        "neighbors": f"NeighborListMD({args.spk_neighbor_list})",
        "steps": 1 + args.warmup + args.steps,
        **stamped_rates(start, clock.stamps, args.warmup),
        "energy_start_eV": clock.energy_start,
        "temperature_end_K": float(system.temperature.mean()),
        "baseline_rss_mib": baseline,
        "versions": {"schnetpack": spk.__version__, "torch": torch.__version__, "ase": ase.__version__,
                     "python": platform.python_version(), "torch_threads": torch.get_num_threads()},
    }  # fmt: skip


def ase_worker(args: argparse.Namespace, atoms: Atoms) -> dict[str, Any]:
    """ASE's ``VelocityVerlet`` with jaxatom's ASE calculator (``JaxAtomCalculator``) on the structure."""
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from jaxatom.calculators import JaxAtomCalculator

    atoms.calc = JaxAtomCalculator(args.model_dir)
    baseline = peak_rss_mib()
    thermalize(atoms, args.seed)
    dynamics = VelocityVerlet(atoms, timestep=TIMESTEP_FS * units.fs)
    stamps: list[float] = []
    energy_start: list[float] = []

    def observe() -> None:  # called once after the initial force evaluation and then after every step
        stamps.append(time.perf_counter())
        if len(stamps) == 1:
            energy_start.append(atoms.get_potential_energy())

    dynamics.attach(observe, interval=1)
    start = time.perf_counter()
    dynamics.run(1 + args.warmup + args.steps)
    return {
        "status": "ok",
        "neighbors": "host graph every step",
        "steps": 1 + args.warmup + args.steps,
        **stamped_rates(start, stamps[1:], args.warmup),
        "energy_start_eV": energy_start[0],
        "temperature_end_K": float(atoms.get_temperature()),
        "baseline_rss_mib": baseline,
    }


WORKERS = {"jaxatom": jaxatom_worker, "schnetpack": spk_worker, "ase": ase_worker}


def run_worker_mode(args: argparse.Namespace) -> None:
    """Worker mode: one code on one size; writes its row (with the peak RSS) as JSON to ``--worker-out``."""
    atoms = copper(args.repeat, args.seed)
    row = WORKERS[args.worker](args, atoms)
    row.update(peak_rss_mib=peak_rss_mib(), checksum=float(np.sum(atoms.positions)))
    Path(args.worker_out).write_text(json.dumps(row))


# ----------------------------------------------------------------------------------------------------------- driver


def worker_command(args: argparse.Namespace, code: str, repeat: int, out: Path, ensemble: str) -> list[str]:
    """The command line of one worker process (with the timed steps of its size)."""
    steps = timed_steps(args, ATOMS_PER_CELL * repeat**3)
    python = args.spk_python if code == "schnetpack" else sys.executable
    return [str(python), str(Path(__file__).resolve()), "--worker", code, "--worker-out", str(out),
            "--repeat", str(repeat), "--ensemble", ensemble, "--model-dir", str(args.model_dir),
            "--model", args.model, "--features", str(args.features), "--interactions", str(args.interactions),
            "--steps", str(steps), "--warmup", str(args.warmup), "--seed", str(args.seed),
            "--threads", str(args.threads), "--spk-neighbor-list", args.spk_neighbor_list]  # fmt: skip


def failure(returncode: int, stderr: str) -> str:
    """What ended a worker that wrote no result, from its exit code and the end of its error output."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1][:200] if lines else f"exit code {returncode}"
    if any(word in stderr for word in ("RESOURCE_EXHAUSTED", "MemoryError", "out of memory", "std::bad_alloc")):
        return f"out of memory ({last})"
    if returncode == -9:
        return "killed by SIGKILL (the kernel's out-of-memory killer?)"
    return f"error: {last}"


def run_worker(args: argparse.Namespace, code: str, n_atoms: int, ensemble: str = "nve") -> dict[str, Any]:
    """Run one worker process under the time and memory limits; return its row (``status`` says how it ended)."""
    import psutil

    repeat = cubic_repeat(n_atoms)
    row: dict[str, Any] = {"code": code, "requested": n_atoms, "repeat": repeat,
                           "n_atoms": ATOMS_PER_CELL * repeat**3, "ensemble": ensemble}  # fmt: skip
    print(f"[bench_large] {code} {ensemble} {row['n_atoms']} atoms", file=sys.stderr, flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    limit = args.max_rss_gib * 2**30
    with tempfile.TemporaryDirectory(prefix="bench_large_") as tmp:
        out, err_file = Path(tmp) / "row.json", Path(tmp) / "stderr.txt"
        with err_file.open("w") as stderr:
            start = time.perf_counter()
            process = subprocess.Popen(worker_command(args, code, repeat, out, ensemble), env=env, stderr=stderr)
            monitor, peak, reason = psutil.Process(process.pid), 0, None
            while process.poll() is None:
                try:
                    peak = max(peak, monitor.memory_info().rss)
                except psutil.NoSuchProcess:
                    break
                elapsed = time.perf_counter() - start
                if elapsed > args.budget_s or peak > limit:
                    reason = (f"over the time budget (> {args.budget_s:g} s)" if elapsed > args.budget_s else
                              f"over the memory limit (> {args.max_rss_gib:g} GiB)")  # fmt: skip
                    process.kill()
                    process.wait()
                    break
                time.sleep(0.2)
            row["process_s"] = time.perf_counter() - start
        if reason is None and process.returncode == 0 and out.is_file():
            return {**row, **json.loads(out.read_text())}
        error = err_file.read_text()
    if reason is None:
        sys.stderr.write(error[-3000:])
    return {**row, "status": reason or failure(process.returncode, error), "peak_rss_mib": peak / 2**20}


def prepare_model(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """SchNetPack's model of ``--seed`` converted to jaxatom and saved for the jaxatom and ASE workers (a fresh
    jaxatom model of the same architecture where torch and schnetpack do not import here)."""
    args.model_dir = tmp / "jaxatom_model"
    try:
        import torch

        from jaxatom.interop.schnetpack import import_model
    except ImportError:
        import jax

        from jaxatom import Potential
        from jaxatom.nn import PaiNN, SchNet

        representation = {"painn": PaiNN, "schnet": SchNet}[args.model](
            n_atom_basis=args.features, n_interactions=args.interactions, cutoff=CUTOFF, n_rbf=N_RBF
        )
        potential = Potential.create(representation, elements=[29], seed=args.seed)
        potential.save(args.model_dir)
        return {"spk_params": sum(int(np.size(p)) for p in jax.tree.leaves(potential.params)), "weights": "fresh"}

    torch.manual_seed(args.seed)
    spk_model = build_spk_model(args.model, args.features, args.interactions)
    potential = import_model(spk_model, energy_unit="eV", position_unit="Ang", elements=[29])
    potential.save(args.model_dir)
    return {"spk_params": sum(p.numel() for p in spk_model.parameters()), "weights": "schnetpack"}


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Every code at every size (ascending, each code until its first failure), then the NPT vs NVT rows."""
    rows: list[dict[str, Any]] = []
    stopped: dict[str, int] = {}
    for n_atoms in args.sizes:
        for code in args.codes:
            if code in stopped:
                rows.append({"code": code, "requested": n_atoms, "n_atoms": ATOMS_PER_CELL * cubic_repeat(n_atoms)**3,
                             "status": f"not run (stopped at {stopped[code]} atoms)"})  # fmt: skip
                continue
            rows.append(run_worker(args, code, n_atoms))
            if rows[-1]["status"] != "ok":
                stopped[code] = rows[-1]["n_atoms"]
    npt_rows = []
    if "jaxatom" in args.codes:
        npt_rows = [run_worker(args, "jaxatom", n, ensemble) for n in args.npt_sizes for ensemble in NPT_ENSEMBLES]
    return {"rows": rows, "npt": npt_rows}


# ----------------------------------------------------------------------------------------------------------- report


def cell(value: float | None, spec: str) -> str:
    """A table cell: the formatted number, or a dash."""
    return "—" if value is None or not math.isfinite(value) else format(value, spec)


def md_rows(rows: Sequence[dict[str, Any]], limits: dict | None) -> list[dict[str, Any]]:
    """The per-size rows with their derived columns and, with ``limits``, the roofline of one step (jaxatom's FLOPs
    per step at that size are the work count of every code; its bytes only of its own rows)."""
    from _roofline import with_roofline

    work = {row["n_atoms"]: row for row in rows if row["code"] == "jaxatom" and row["status"] == "ok"}
    table = []
    for row in rows:
        ok = row["status"] == "ok"
        rate = row.get("steps_per_s") if ok else None
        peak = row.get("peak_rss_mib")
        jax_row = work.get(row["n_atoms"], {})
        out = {**row, "title": CODES[row["code"]], "rate": rate,
               "us_per_atom_step": 1e6 / (rate * row["n_atoms"]) if rate else None,
               "peak_gib": peak and peak / 1024,
               "kib_per_atom": (peak - row["baseline_rss_mib"]) * 1024 / row["n_atoms"] if ok else None,
               "flops": jax_row.get("flops_per_step"),
               "bytes": row.get("bytes_per_step") if row["code"] == "jaxatom" else None}  # fmt: skip
        table.append(with_roofline(out, 1.0 / rate, limits) if limits and rate else out)
    return table


def md_table(rows: Sequence[dict[str, Any]], limits: dict | None) -> str:
    """The per-size table of the three codes."""
    from _roofline import COLUMNS

    columns = [
        Column("atoms", "n_atoms", "d"),
        Column("code", "title", numeric=False),
        Column("neighbours", "neighbors", numeric=False),
        Column("steps run", "steps", "d"),
        Column("compile / first step (s)", "first_s"),
        Column("steps/s", "rate", ".3g"),
        Column("µs per atom-step", "us_per_atom_step", ".3g"),
        Column("peak RSS (GiB)", "peak_gib"),
        Column("KiB per atom", "kib_per_atom", ".1f"),
    ]
    return markdown_table([*columns, *(COLUMNS if limits else ()), Column("status", "status", numeric=False)],
                          md_rows(rows, limits))  # fmt: skip


def npt_table(rows: Sequence[dict[str, Any]]) -> str:
    """NPT (stochastic cell rescaling) vs NVT (Langevin) per size: steps/s and the cost ratio."""
    lines = ["| atoms | ensemble | compile (s) | steps/s | µs per atom-step | peak RSS (GiB) | cost vs Langevin |",
             "|---:|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    nvt = {row["n_atoms"]: row.get("steps_per_s") for row in rows if row["ensemble"] == "langevin"}
    for row in rows:
        rate = row.get("steps_per_s") if row["status"] == "ok" else None
        if rate is None:
            lines.append(f"| {row['n_atoms']} | {row['ensemble']} | {row['status']} | | | | |")
            continue
        reference = nvt.get(row["n_atoms"])
        lines.append(
            f"| {row['n_atoms']} | {row['ensemble']} | {row['first_s']:.2f} | {rate:.3g} | "
            f"{1e6 / (rate * row['n_atoms']):.3g} | {row['peak_rss_mib'] / 1024:.2f} | "
            f"{cell(reference and reference / rate, '.2f')}{'x' if reference else ''} |"
        )
    return "\n".join(lines)


def reach(rows: Sequence[dict[str, Any]], codes: Sequence[str]) -> list[str]:
    """Per code: the largest size that ran, and the first that did not and why."""
    lines = []
    for code in codes:
        done = [row["n_atoms"] for row in rows if row["code"] == code and row["status"] == "ok"]
        failed = next((row for row in rows if row["code"] == code and row["status"] not in ("ok",)
                       and not row["status"].startswith("not run")), None)  # fmt: skip
        text = f"largest size run {max(done)} atoms" if done else "no size ran"
        if failed:
            text += f"; {failed['n_atoms']} atoms: {failed['status']}"
        lines.append(f"{CODES[code]}: {text}")
    return lines


def energy_check(rows: Sequence[dict[str, Any]]) -> str | None:
    """The starting potential energy of SchNetPack and of jaxatom's calculator on the same structure, if both ran."""
    by_size: dict[int, dict[str, float]] = {}
    for row in rows:
        if row.get("energy_start_eV") is not None:
            by_size.setdefault(row["n_atoms"], {})[row["code"]] = row["energy_start_eV"]
    both = [(n, e) for n, e in sorted(by_size.items()) if {"schnetpack", "ase"} <= set(e)]
    if not both:
        return None
    n, energies = both[0]
    difference = abs(energies["schnetpack"] - energies["ase"]) / n
    return (f"same weights: starting energy of {n} atoms SchNetPack {energies['schnetpack']:.5f} eV, jaxatom "
            f"{energies['ase']:.5f} eV (|difference| {difference:.2e} eV/atom)")  # fmt: skip


def header(args: argparse.Namespace, info: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """Environment, command and set-up printed above the tables."""
    spk_versions = next((row["versions"] for row in rows if "versions" in row), None)
    lines = [
        f"environment: {environment_line(info['environment'])}",
        f"command: {info['command']}",
    ]
    if spk_versions:
        lines.append(f"SchNetPack env: schnetpack {spk_versions['schnetpack']}, torch {spk_versions['torch']}, ase "
                     f"{spk_versions['ase']}, python {spk_versions['python']}; torch threads "
                     f"{spk_versions['torch_threads']}")  # fmt: skip
    lines += [
        f"system: fcc Cu, bulk('Cu', cubic=True).repeat(n), positions + N(0, {POSITION_NOISE} Å) (seed {args.seed}); "
        f"NVE velocity Verlet, {TIMESTEP_FS:g} fs, Maxwell-Boltzmann {TEMPERATURE_K:g} K; float32, "
        f"{', '.join(info['environment'].get('devices', []))}",
        f"model: {args.model} ({args.features} features, {args.interactions} interactions, {CUTOFF:g} Å cosine cutoff, "
        f"{N_RBF} Gaussians; {info['spk_params']} parameters) with random weights — timing only, no trained model "
        "needed: "
        + (
            "SchNetPack's initialisation (seed) imported into jaxatom by jaxatom.interop.schnetpack.import_model"
            if info.get("weights") == "schnetpack"
            else "jaxatom's Potential.create (seed); SchNetPack not here"
        ),
        f"steps run: 1 + {args.warmup} warm-up + {args.steps} timed, fewer timed above {args.atom_steps:g} atom-steps "
        f"(at least {MIN_STEPS}); jaxatom the same total as one stride, compilation timed apart; neighbour skin / "
        f"shell {SKIN:g} Å",
        f"limits per size and code: {args.budget_s:g} s wall clock, {args.max_rss_gib:g} GiB resident memory "
        f"(machine: {info['memory_gib']:.1f} GiB); each size in a fresh process",
        "work per step = XLA cost analysis of jaxatom's force evaluation (padded edges; the list update not "
        "counted), also the work count of the other codes' rows",
    ]
    if info.get("spk_note"):
        lines.append(info["spk_note"])
    check = energy_check(rows)
    if check:
        lines.append(check)
    load = busy_warning(info["load"]["start"], info["load"].get("end"))
    return "\n".join([*lines, load] if load else lines)


def tables(args: argparse.Namespace, results: dict[str, Any], limits: dict | None) -> str:
    """The tables: MD per size (with how far each code got) and NPT vs NVT."""
    rows = results["rows"]
    parts = [md_table(rows, limits), "", *reach(rows, args.codes)]
    if results["npt"]:
        parts += ["", "NPT (stochastic cell rescaling, 0 GPa) vs NVT (Langevin), jaxatom, neighbors='list':", "",
                  npt_table(results["npt"])]  # fmt: skip
    return "\n".join(parts)


def report(args: argparse.Namespace, info: dict[str, Any], results: dict[str, Any], limits: dict | None) -> str:
    """The whole markdown report."""
    rows = results["rows"]
    parts = [header(args, info, rows), "", "## MD per size", "", md_table(rows, limits), "",
             *reach(rows, args.codes)]  # fmt: skip
    if results["npt"]:
        parts += ["", "## NPT (stochastic cell rescaling, 0 GPa) vs NVT (Langevin), jaxatom, neighbors='list'", "",
                  npt_table(results["npt"])]  # fmt: skip
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (shared by the driver and the workers)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", help=f"atom counts (default {DEFAULT_SIZES})")
    parser.add_argument("--npt-sizes", type=int, nargs="*", help=f"NPT vs NVT sizes (default {DEFAULT_NPT_SIZES})")
    parser.add_argument("--codes", default=",".join(CODES), help="comma-separated subset of " + ",".join(CODES))
    parser.add_argument("--steps", type=int, default=100, help="timed steps (fewer for large sizes: --atom-steps)")
    parser.add_argument("--atom-steps", type=float, default=2e5, help="atom-steps above which a size gets fewer steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after the first")
    parser.add_argument("--quick", action="store_true", help="smoke test: sizes 32 and 256, 8 steps, NPT at 256")
    parser.add_argument("--model", choices=["painn", "schnet"], default="painn", help="architecture")
    parser.add_argument("--features", type=int, default=32, help="atom features")
    parser.add_argument("--interactions", type=int, default=2, help="interaction blocks")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, the noise and the velocities")
    parser.add_argument("--budget-s", type=float, default=120.0, help="wall-clock limit of one code at one size")
    parser.add_argument(
        "--max-rss-gib",
        type=float,
        help="resident memory limit of one code at one size (default: 90%% of the machine's memory)",
    )
    parser.add_argument("--threads", type=int, default=core_count(), help="torch threads (default: all cores)")
    parser.add_argument("--spk-python", type=Path, help="python with schnetpack (default: this one, if it has it)")
    parser.add_argument("--no-roofline", action="store_true", help="leave out the roofline columns")
    parser.add_argument("--spk-neighbor-list", choices=["matscipy", "ase", "torch", "vesin"], default="vesin",
                        help="SchNetPack's neighbour list transform inside NeighborListMD")  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown output (JSON beside it)")
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ensemble", default="nve", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = min(args.steps, 8), min(args.warmup, 1)
    args.sizes = args.sizes or list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    args.npt_sizes = list(QUICK_NPT_SIZES if args.quick else DEFAULT_NPT_SIZES) if args.npt_sizes is None else \
        args.npt_sizes  # fmt: skip
    args.codes = [code.strip() for code in args.codes.split(",") if code.strip()]
    unknown = sorted(set(args.codes) - set(CODES))
    if unknown or not args.codes:
        parser.error(f"--codes: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(CODES)}")
    if args.steps < 1 or args.warmup < 0 or min(args.sizes + args.npt_sizes, default=1) < 1:
        parser.error("--steps and the sizes must be positive, --warmup non-negative")
    return args


def run(args: argparse.Namespace, limits: dict | None = None) -> dict[str, Any]:
    """Every code and size in its own process; returns ``{"meta", "info", "rows", "npt", "header", "markdown"}``
    (``markdown``: the tables only; ``report``: the whole text). ``limits``: the machine's roofline limits."""
    import psutil

    info: dict[str, Any] = {"load": {"start": load_average()}, "environment": environment(),
                            "command": command_line(), "memory_gib": psutil.virtual_memory().total / 2**30}  # fmt: skip
    args.max_rss_gib = args.max_rss_gib or round(0.9 * info["memory_gib"], 1)
    if "schnetpack" in args.codes:
        args.spk_python, note = spk_python(args.spk_python)
        if args.spk_python is None:
            args.codes = [code for code in args.codes if code != "schnetpack"]
            info["spk_note"] = note
    with tempfile.TemporaryDirectory(prefix="bench_large_model_") as tmp:
        info.update(prepare_model(args, Path(tmp)))
        results = run_all(args)
    info["load"]["end"] = load_average()
    hidden = {"worker", "worker_out", "repeat", "ensemble", "model_dir"}
    meta = json.loads(json.dumps({k: v for k, v in vars(args).items() if k not in hidden}, default=str))
    return {"meta": meta, "info": info, **results, "header": header(args, info, results["rows"]),
            "markdown": tables(args, results, limits), "report": report(args, info, results, limits)}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    """Run every code and size in its own process, print the markdown report and write it with the JSON."""
    args = parse_args(argv)
    if args.worker:
        run_worker_mode(args)
        return
    limits = None
    if not args.no_roofline:
        from _roofline import machine_limits

        limits = machine_limits()
    result = run(args, limits)
    print(result["report"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(result["report"])
    write_json(args.out.with_suffix(".json"), {**result, "limits": limits})
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
