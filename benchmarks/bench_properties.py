"""Dipole-moment (+ energy/forces) training benchmark: jaxatom vs SchNetPack 2.x, same CPU, same data, one process.

Data: ``jaxatom.data.load_builtin(name)`` (``aspirin``, optionally ``ethanol``: 3000 GFN2-xTB frames each with
energy (eV), forces (eV/Å) and the dipole moment ``[S, 3]`` (e·Å)), split at random with ``--seed`` (default 1000
train / 100 validation / 500 test). Model: PaiNN (128 features, 3 interactions, 5 Å cosine cutoff, 20 Gaussians,
float32; the sizes of ``bench_training.py``) with two heads on both sides:

* the energy ``Atomwise`` (pyramidal MLP, SiLU, summed), forces by autograd / ``jax.grad``;
* ``DipoleMoment``: latent partial charges from the scalar features, corrected to sum to zero (no total charge is
  given to either framework: neutral), μ = Σ qᵢ rᵢ with absolute positions (case ``dipole``); with
  ``use_vector_representation=True`` also atomic dipoles from PaiNN's vector features through a gated equivariant
  MLP (case ``dipole_vec``). Case ``energy`` (the energy head alone, energy/forces loss) is the reference that
  shows what the dipole head adds to a step.

Recipe: ``bench_training.recipe`` (SchNetPack's MD17 recipe: AdamW 1e-3 without weight decay, plateau ×0.5 with
patience 75 and cooldown 10, EMA 0.995 with torch_ema's warm-up, used for validation and evaluation) with the loss
energy 0.01 / forces 0.99 / dipole_moment ``--dipole-weight`` (default 0.1), every term the MSE averaged over its
components (jaxatom: ``TrainConfig.loss``; SchNetPack: ``spk.task.ModelOutput(loss_fn=torch.nn.MSELoss(),
loss_weight=w)`` per property, summed as ``AtomisticTask.loss_fn`` does). The mean energy per atom of the training
split (float64) is removed from the energy labels of both and added back, in float64, for the errors; dipoles are
trained raw (no scale or offset on either side).

Modes (``--mode both`` runs them in this order, in one process):

* ``throughput``: per data set and case, both frameworks are prepared (jaxatom: ``GraphLoader`` batches on the
  device and the jitted ``train_step``; SchNetPack: ``AtomsConverter`` + ``MatScipyNeighborList`` inputs collated
  once into the same batches, a plain torch loop), each times its first step (jaxatom: trace + compile) and runs
  one untimed pass over the distinct batches (compiling every padded shape); then ``--rounds`` rounds alternate
  jaxatom and SchNetPack, ``--steps`` timed steps each. Median step → structures/s and steps/s. Work per step:
  XLA's cost analysis of jaxatom's step (all operations, padded shapes) and torch's FLOP formulas
  (``flop_registry``) over one SchNetPack step (matrix products only, forward + double backward), each divided by
  the step time and compared with the measured float32 matmul rate of the same threads (``torch.mm`` and a jitted
  ``jnp.dot`` on 2048² matrices): "how far from the hardware limit".
* ``budget``: per data set and case in ``--budget-cases``, each framework trains for ``--minutes`` of wall clock
  (jaxatom: ``jaxatom.train.fit`` with ``max_time_s``; SchNetPack: a torch loop with the same recipe and the same
  shuffled epochs), both stopping at the end of the first epoch past the budget; the EMA weights of the best
  validation epoch (lowest validation loss, as ``fit``) of each are then evaluated by the same function
  (``jaxatom.train.evaluation.error_metrics``) on the same validation and test structures: dipole MAE (e·Å and
  Debye), energy MAE (eV, kcal/mol), force MAE (eV/Å, kcal/mol/Å).

Usage (from the repository root)::

    OMP_NUM_THREADS=2 python benchmarks/bench_properties.py --mode throughput --steps 20 --rounds 2
    OMP_NUM_THREADS=2 python benchmarks/bench_properties.py --mode both --minutes 5 --tune-allocator --json p.json
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
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
)
from bench_inference import (  # noqa: E402
    CUTOFF,
    MODELS,
    N_ATOM_BASIS,
    N_RBF,
    build_spk_model,
)
from bench_training import (  # noqa: E402
    SpkStructures,
    Splits,
    StepTiming,
    batch_indices,
    jax_history,
    recipe,
    spk_epochs,
    spk_optimizers,
    versions,
)

if TYPE_CHECKING:
    from jaxatom.data import Dataset
    from jaxatom.potential import Potential
    from jaxatom.train import TrainConfig

MODEL = "painn"
#: Case -> DipoleMoment's ``use_vector_representation`` (None: no dipole head, energy and forces only).
CASES: dict[str, bool | None] = {"energy": None, "dipole": False, "dipole_vec": True}
CASE_LABELS = {"energy": "energy only", "dipole": "+ dipole (charges)", "dipole_vec": "+ dipole (charges + vectors)"}
DIPOLE = "dipole_moment"


# ------------------------------------------------------------------------------------------------------------ data


def load_splits(name: str, n_train: int, n_val: int, n_test: int, seed: int) -> Splits:
    """A shipped data set split at random with ``seed`` (``bench_training.load_splits`` for any built-in set)."""
    from jaxatom.data import load_builtin, mean_energy_per_atom, random_split

    dataset = load_builtin(name)
    split = random_split(len(dataset), n_train, n_val, n_test, seed=seed)
    train = dataset.subset(split["train_idx"])
    shift = mean_energy_per_atom(train, np.arange(len(train)))
    return Splits(train, dataset.subset(split["val_idx"]), dataset.subset(split["test_idx"]), shift)


def loss_weights(case: str, dipole_weight: float) -> dict[str, float]:
    """The loss of ``case``: SchNetPack's MD17 weights, plus the dipole term for the dipole cases."""
    from jaxatom.train.config import DEFAULT_LOSS

    return {**DEFAULT_LOSS, **({DIPOLE: dipole_weight} if CASES[case] is not None else {})}


def case_recipe(case: str, batch_size: int, seed: int, dipole_weight: float, max_time_s: float | None = None):
    """``bench_training.recipe`` with the loss of ``case``."""
    return dataclasses.replace(recipe(batch_size, seed, max_time_s), loss=loss_weights(case, dipole_weight))


# ------------------------------------------------------------------------------------------------------ timing


def timed_steps(step: Callable[[int], None], n_distinct: int, steps: int, start: int = 0) -> list[float]:
    """Wall-clock seconds of ``steps`` calls of ``step(k)`` (``k`` cycles over the prepared batches)."""
    times = []
    for k in range(start, start + steps):
        begin = time.perf_counter()
        step(k % n_distinct)
        times.append(time.perf_counter() - begin)
    return times


def matmul_rates(size: int = 2048, repeats: int = 10) -> dict[str, float]:
    """Measured float32 matmul GFLOP/s of torch (its threads) and of XLA (a jitted ``jnp.dot``) on this CPU."""
    import jax
    import jax.numpy as jnp
    import torch

    flops = 2.0 * size**3
    a = torch.randn(size, size)
    torch.mm(a, a)
    torch_times = timed_steps(lambda _: torch.mm(a, a), 1, repeats)
    x = jnp.asarray(a.numpy())
    dot = jax.jit(jnp.dot)
    dot(x, x).block_until_ready()
    jax_times = timed_steps(lambda _: dot(x, x).block_until_ready(), 1, repeats)
    return {"torch_mm_gflops": flops / min(torch_times) / 1e9, "xla_dot_gflops": flops / min(jax_times) / 1e9,
            "size": size}  # fmt: skip


# --------------------------------------------------------------------------------------------------------- jaxatom


def jax_potential(case: str, splits: Splits, seed: int) -> Potential:
    """A freshly initialised jaxatom PaiNN with the heads of ``case`` and the training energy shift."""
    from jaxatom import Potential
    from jaxatom.nn import ENERGY_HEAD, DipoleMoment, PaiNN
    from jaxatom.train import with_energy_offsets

    representation = PaiNN(n_atom_basis=N_ATOM_BASIS, n_interactions=MODELS[MODEL], cutoff=CUTOFF, n_rbf=N_RBF)
    heads = [ENERGY_HEAD]
    if CASES[case] is not None:
        heads.append(DipoleMoment(use_vector_representation=CASES[case]))
    elements = sorted(set(splits.train.elements) | set(splits.val.elements) | set(splits.test.elements))
    potential = Potential.create(representation, elements=elements, seed=seed, heads=heads)
    potential = with_energy_offsets(potential, splits.train)
    if potential.energy_shift != splits.energy_shift:
        raise RuntimeError("jaxatom's energy shift differs from the one given to SchNetPack")
    return potential


def jax_param_count(potential: Potential) -> int:
    """Number of trainable parameters."""
    import jax

    return sum(int(np.size(p)) for p in jax.tree.leaves(potential.params))


@dataclasses.dataclass
class JaxStepper:
    """jaxatom's jitted ``train_step`` on device-resident batches of the training split."""

    step: Callable[[int], None]
    indices: list[np.ndarray]
    n_distinct: int
    padded_shapes: int
    work: Callable[[], dict[str, float]]


def jax_stepper(case: str, splits: Splits, batch_size: int, n_batches: int, seed: int, dipole_weight: float):
    """Batches, state and step function for timing jaxatom (``bench_training.jax_throughput``'s setup, with the
    loss terms' labels and the potential's scaling arrays, as ``fit`` passes them)."""
    import jax

    from jaxatom.data import GraphLoader
    from jaxatom.train import init_state, train_step

    potential = jax_potential(case, splits, seed)
    config = case_recipe(case, batch_size, seed, dipole_weight)
    names = [term.name for term in config.terms]
    loader = GraphLoader(splits.train, potential.cutoff, batch_size, properties=names, seed=seed, drop_last=True,
                         offsets={"energy": potential.atom_offsets()})  # fmt: skip
    indices = batch_indices(loader.order(0), batch_size, drop_last=True)[:n_batches]
    batches = [jax.device_put(loader.batch(idx)) for idx in indices]
    scales = potential.scaling_arrays(np.float32, include_offsets=False)
    state = init_state(potential.params, config)

    def step(k: int) -> None:
        nonlocal state
        graph, labels = batches[k]
        state, sums = train_step(state, graph, labels, potential.model, scales, config.step)
        jax.block_until_ready((state, sums))

    def work() -> dict[str, float]:
        """XLA's cost analysis (``flops``, ``bytes``) of the compiled step on the first batch; raises if a timed step
        was not finite."""
        from _roofline import cost

        if int(state.nan_step) >= 0:
            raise RuntimeError(f"jaxatom {case}: the loss became NaN at step {int(state.nan_step)}")
        graph, labels = batches[0]
        lowered = train_step.lower(state, graph, labels, model=potential.model, scaling=scales, config=config.step)
        return cost(lowered.compile())

    shapes = {(graph.positions.shape, graph.senders.shape) for graph, _ in batches}
    return JaxStepper(step, indices, len(batches), len(shapes), work)


def jax_budget(case: str, splits: Splits, batch_size: int, seconds: float, seed: int, dipole_weight: float):
    """Train with ``jaxatom.train.fit`` for ``seconds``; evaluate the returned (best-epoch EMA) potential."""
    from jaxatom.train import fit
    from jaxatom.train.evaluation import predict_dataset

    potential = jax_potential(case, splits, seed)
    config = case_recipe(case, batch_size, seed, dipole_weight, max_time_s=seconds)
    with tempfile.TemporaryDirectory(prefix="bench_properties_") as tmp:
        start = time.perf_counter()
        trained = fit(potential, splits.train, splits.val, config, tmp, resume=False, progress=False)
        wall = time.perf_counter() - start
        history = jax_history(Path(tmp))
    errors = {split: errors_of(predict_dataset(trained, getattr(splits, split), batch_size), getattr(splits, split))
              for split in ("val", "test")}  # fmt: skip
    last = history[-1]
    keys = ("epoch", "time_s", "val_loss", "val_forces_mae", f"val_{DIPOLE}_mae")
    return {"epochs": len(history), "steps": int(last["step"]), "train_s": last["time_s"], "wall_s": wall,
            "best_val_loss": min(row["val_loss"] for row in history), "errors": errors,
            "history": [{k: row[k] for k in keys if k in row} for row in history]}  # fmt: skip


# ------------------------------------------------------------------------------------------------------ SchNetPack


def spk_structures(dataset: Dataset, energy_shift: float) -> SpkStructures:
    """``bench_training.SpkStructures`` with the dipole label ``[1, 3]`` (e·Å, float32) added to every structure."""
    import torch

    structures = SpkStructures(dataset, energy_shift)
    for i, item in enumerate(structures.items):
        item[DIPOLE] = torch.tensor(dataset.properties[DIPOLE][i][None], dtype=torch.float32)
    return structures


def spk_model(case: str, seed: int):
    """SchNetPack's PaiNN (``build_spk_model``'s representation) with ``Atomwise`` energy, ``DipoleMoment`` for the
    dipole cases (neutral: no ``total_charge`` in the inputs) and ``Forces``; seeded, in training mode."""
    import schnetpack as spk
    import torch

    torch.manual_seed(seed)
    representation = build_spk_model(MODEL).representation
    outputs = [spk.atomistic.Atomwise(n_in=N_ATOM_BASIS, output_key="energy")]
    if CASES[case] is not None:
        outputs.append(spk.atomistic.DipoleMoment(n_in=N_ATOM_BASIS, return_charges=True, dipole_key=DIPOLE,
                                                  use_vector_representation=CASES[case]))  # fmt: skip
    outputs.append(spk.atomistic.Forces(energy_key="energy", force_key="forces"))
    model = spk.model.NeuralNetworkPotential(
        representation=representation, input_modules=[spk.atomistic.PairwiseDistances()], output_modules=outputs
    )
    return model.train()


def spk_outputs(config: TrainConfig) -> list:
    """One ``spk.task.ModelOutput`` per loss term: MSE (``torch.nn.MSELoss``, mean over components) with its weight."""
    import schnetpack as spk
    import torch

    return [spk.task.ModelOutput(name=term.name, loss_fn=torch.nn.MSELoss(), loss_weight=term.weight, metrics={})
            for term in config.terms]  # fmt: skip


def spk_loss(model, batch: dict, outputs: list) -> tuple[Any, dict]:
    """``AtomisticTask.loss_fn``: the sum of the outputs' weighted losses (the model gets a shallow copy)."""
    out = model(dict(batch))
    loss = 0.0
    for output in outputs:
        loss = loss + output.calculate_loss(out, batch)
    return loss, out


def spk_train_step(model, batch: dict, optimizer, ema, outputs: list) -> float:
    """One optimiser step (forward, forces, loss, backward, AdamW, EMA); returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss, _ = spk_loss(model, batch, outputs)
    loss.backward()
    optimizer.step()
    ema.update()
    return float(loss.detach())


@dataclasses.dataclass
class SpkStepper:
    """A SchNetPack training loop on the same batches as jaxatom (collated once)."""

    step: Callable[[int], None]
    matmul_flops: Callable[[], float]


def spk_stepper(case: str, splits: Splits, indices: list, batch_size: int, seed: int, dipole_weight: float):
    """Model, optimiser, batches and step function for timing SchNetPack; counts one step's matmul FLOPs."""
    model = spk_model(case, seed)
    config = case_recipe(case, batch_size, seed, dipole_weight)
    outputs = spk_outputs(config)
    structures = spk_structures(splits.train, splits.energy_shift)
    batches = [structures.batch(idx) for idx in indices]
    optimizer, _, ema = spk_optimizers(model, config)

    def step(k: int) -> None:
        loss = spk_train_step(model, batches[k], optimizer, ema, outputs)
        if not np.isfinite(loss):
            raise RuntimeError(f"SchNetPack {case}: the loss became {loss}")

    return SpkStepper(step, lambda: count_torch_flops(lambda: step(0)))


def count_torch_flops(fn: Callable[[], None]) -> float:
    """FLOPs of the operations ``fn`` dispatches that torch's ``flop_registry`` knows (matrix products), backward
    passes included. (``FlopCounterMode`` itself tracks modules with hooks that ``torch.autograd.grad``, which
    SchNetPack's ``Forces`` calls, refuses.)"""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                Counter.total += formula(*args, **kwargs, out_val=out)
            return out

    with Counter():
        fn()
    return float(Counter.total)


def spk_validate(model, batches: list[dict], outputs: list) -> dict[str, float]:
    """Validation loss (mean over batches, as ``fit``) and the MAE of every loss term, in eval mode."""
    model.eval()
    losses, sums, counts = [], {o.name: 0.0 for o in outputs}, {o.name: 0 for o in outputs}
    for batch in batches:
        loss, out = spk_loss(model, batch, outputs)
        losses.append(float(loss.detach()))
        for o in outputs:
            sums[o.name] += float((out[o.name].detach() - batch[o.name]).abs().sum())
            counts[o.name] += batch[o.name].numel()
    model.train()
    return {"val_loss": float(np.mean(losses)), **{f"val_{n}_mae": sums[n] / counts[n] for n in sums}}


def spk_predict(model, structures: SpkStructures, dataset: Dataset, energy_shift: float, batch_size: int) -> dict:
    """Energies ``[S]`` (eV, mean energy per atom added back in float64), forces ``[A, 3]`` (eV/Å) and, when the
    model has them, dipole moments ``[S, 3]`` (e·Å)."""
    model.eval()
    energy, forces = np.zeros(len(dataset)), np.zeros_like(dataset.positions)
    dipole = np.zeros((len(dataset), 3))
    offsets = dataset.atom_offsets
    for start in range(0, len(dataset), batch_size):
        stop = min(start + batch_size, len(dataset))
        out = model(structures.batch(range(start, stop)))
        energy[start:stop] = out["energy"].detach().double().numpy() + energy_shift * dataset.n_atoms[start:stop]
        forces[offsets[start] : offsets[stop]] = out["forces"].detach().double().numpy()
        if DIPOLE in out:
            dipole[start:stop] = out[DIPOLE].detach().double().numpy()
    model.train()
    return {"energy": energy, "forces": forces, **({DIPOLE: dipole} if DIPOLE in model.model_outputs else {})}


def spk_budget(case: str, splits: Splits, batch_size: int, seconds: float, seed: int, dipole_weight: float):
    """``bench_training.spk_budget`` with the loss of ``case``: train for ``seconds`` (epochs in ``GraphLoader``'s
    shuffled order, EMA-weight validation after every epoch, plateau on the validation loss), then evaluate the best
    epoch's EMA weights."""
    wall_start = time.perf_counter()
    model = spk_model(case, seed)
    config = case_recipe(case, batch_size, seed, dipole_weight, max_time_s=seconds)
    outputs = spk_outputs(config)
    train = spk_structures(splits.train, splits.energy_shift)
    val = spk_structures(splits.val, splits.energy_shift)
    val_batches = [val.batch(idx) for idx in batch_indices(np.arange(len(splits.val)), batch_size)]
    history, best_loss, steps = spk_epochs(
        model, train, val_batches, config, seconds, case, lambda *a: spk_train_step(*a, outputs),
        lambda m, b: spk_validate(m, b, outputs),
    )  # fmt: skip
    wall = time.perf_counter() - wall_start
    errors = {}
    for split in ("val", "test"):
        dataset = getattr(splits, split)
        structures = val if split == "val" else spk_structures(dataset, splits.energy_shift)
        errors[split] = errors_of(spk_predict(model, structures, dataset, splits.energy_shift, batch_size), dataset)
    return {"epochs": len(history), "steps": steps, "train_s": history[-1]["time_s"], "wall_s": wall,
            "best_val_loss": best_loss, "errors": errors, "history": history}  # fmt: skip


# ----------------------------------------------------------------------------------------------------- evaluation


def errors_of(predictions: dict[str, np.ndarray], dataset: Dataset) -> dict[str, float]:
    """``jaxatom.train.evaluation.error_metrics`` of energy, forces and dipole (the same function for both
    frameworks), with the dipole MAE also in Debye."""
    from jaxatom.train.evaluation import error_metrics
    from jaxatom.units import Debye

    wanted = {k: v for k, v in predictions.items() if k in ("energy", "forces", DIPOLE)}
    metrics = error_metrics(wanted, dataset)
    if f"{DIPOLE}_mae" in metrics:
        metrics[f"{DIPOLE}_mae_D"] = metrics[f"{DIPOLE}_mae"] / Debye
        metrics[f"{DIPOLE}_rmse_D"] = metrics[f"{DIPOLE}_rmse"] / Debye
    return metrics


# ---------------------------------------------------------------------------------------------------------- modes


def run_throughput(args: argparse.Namespace, name: str, splits: Splits, peaks: dict) -> list[dict[str, Any]]:
    """Per case: both frameworks prepared and warmed up, then ``--rounds`` alternating rounds of ``--steps``."""
    rows = []
    for case in args.cases:
        jax_run = jax_stepper(case, splits, args.batch_size, args.steps, args.seed, args.dipole_weight)
        spk_run = spk_stepper(case, splits, jax_run.indices, args.batch_size, args.seed, args.dipole_weight)
        steppers = {"jaxatom": jax_run.step, "schnetpack": spk_run.step}
        first, times = {}, {fw: [] for fw in steppers}
        for framework, step in steppers.items():
            begin = time.perf_counter()
            step(0)
            first[framework] = time.perf_counter() - begin
            timed_steps(step, jax_run.n_distinct, jax_run.n_distinct - 1, start=1)  # warm-up, compiles every shape
        load = load_average()
        for r in range(args.rounds):
            for framework, step in steppers.items():
                times[framework] += timed_steps(step, jax_run.n_distinct, args.steps, start=r * args.steps)
        work = jax_run.work()  # after the timings
        counted = {"jaxatom": work["flops"], "schnetpack": spk_run.matmul_flops()}
        for framework, peak in (("jaxatom", peaks["xla_dot_gflops"]), ("schnetpack", peaks["torch_mm_gflops"])):
            flops = counted[framework]
            timing = StepTiming(first_s=first[framework], warmup_steps=jax_run.n_distinct - 1,
                                median_s=statistics.median(times[framework]),
                                mean_s=statistics.fmean(times[framework]), steps=len(times[framework]),
                                batch_size=args.batch_size)  # fmt: skip
            rows.append({"data": name, "case": case, "framework": framework, **dataclasses.asdict(timing),
                         "structures_per_s": timing.structures_per_s, "steps_per_s": 1.0 / timing.median_s,
                         "padded_shapes": jax_run.padded_shapes if framework == "jaxatom" else None,
                         "flops_per_step": flops, "flops_counted": "XLA cost analysis (all ops)"
                         if framework == "jaxatom" else "torch flop_registry (matmuls)",
                         "gflops_per_s": flops / timing.median_s / 1e9,
                         "peak_fraction": flops / timing.median_s / 1e9 / peak, "load_1min": load,
                         "flops": work["flops"],
                         "bytes": work["bytes"] if framework == "jaxatom" else None})  # fmt: skip
        print(f"[throughput] {name} {case}: " + ", ".join(
            f"{r['framework']} {1e3 * r['median_s']:.1f} ms" for r in rows[-2:]), flush=True)  # fmt: skip
    return rows


def run_budget(args: argparse.Namespace, name: str, splits: Splits) -> list[dict[str, Any]]:
    """Per case in ``--budget-cases``: jaxatom, then SchNetPack, each for ``--minutes``."""
    rows = []
    for case in args.budget_cases:
        for framework, train in (("jaxatom", jax_budget), ("schnetpack", spk_budget)):
            load = load_average()
            result = train(case, splits, args.batch_size, 60.0 * args.minutes, args.seed, args.dipole_weight)
            rows.append({"data": name, "case": case, "framework": framework, "load_1min_before": load, **result})
            print(f"[budget] {name} {case} {framework}: {result['epochs']} epochs, val dipole MAE "
                  f"{result['errors']['val'].get(f'{DIPOLE}_mae', float('nan')):.4f} e*Ang", flush=True)  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------------------- report


def param_counts(cases: Sequence[str], splits: Splits, seed: int) -> dict[str, dict[str, int]]:
    """Parameter counts of both frameworks' models per case (they should agree)."""
    return {case: {"jaxatom": jax_param_count(jax_potential(case, splits, seed)),
                   "schnetpack": sum(p.numel() for p in spk_model(case, seed).parameters())}
            for case in cases}  # fmt: skip


def header(args: argparse.Namespace, info: dict[str, Any], data: dict[str, Splits]) -> str:
    """Environment, command, data and recipe, printed above the tables."""
    v = info["versions"]
    lines = [
        f"CPU: {cpu_model()} ({core_count()} cores available; flags: {cpu_flags()}); "
        f"OMP_NUM_THREADS={info['omp']}; torch threads {v['torch_threads']} (interop {v['torch_interop_threads']}), "
        f"XLA's own CPU thread pool; allocator tuned: {info['allocator_tuned']}",
        f"jaxatom {v['jaxatom']}, jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']} ({v['backend']}); "
        f"schnetpack {v['schnetpack']}, torch {v['torch']}, torch_ema {v['torch_ema']}; numpy {v['numpy']}, "
        f"python {v['python']}",
        f"command: {command_line()}",
    ]
    for name, splits in data.items():
        lines.append(f"data: built-in {name} (GFN2-xTB), split seed {args.seed}: train {len(splits.train)}, val "
                     f"{len(splits.val)}, test {len(splits.test)}; mean energy per atom removed: "
                     f"{splits.energy_shift:.6f} eV (float64, train)")  # fmt: skip
    lines.append(
        f"PaiNN ({N_ATOM_BASIS} features, {MODELS[MODEL]} interactions, {CUTOFF:g} Å cosine cutoff, {N_RBF} "
        f"Gaussians), batch {args.batch_size}, float32; loss MSE energy 0.01 / forces 0.99 / dipole_moment "
        f"{args.dipole_weight:g} (dipole cases); AdamW 1e-3 (wd 0), plateau x0.5 (patience 75, cooldown 10), EMA 0.995"
    )
    for case, counts in info["params"].items():
        lines.append(f"parameters, {case}: jaxatom {counts['jaxatom']}, SchNetPack {counts['schnetpack']}")
    peaks = info.get("matmul")
    if peaks:
        lines.append(
            f"measured float32 matmul ({peaks['size']}², best of 10): torch.mm {peaks['torch_mm_gflops']:.1f} "
            f"GFLOP/s, XLA jnp.dot {peaks['xla_dot_gflops']:.1f} GFLOP/s"
        )
    load = busy_warning(info["load"]["start"], info["load"].get("end"))
    return "\n".join([*lines, load] if load else lines)


def throughput_table(rows: Sequence[dict[str, Any]], limits: dict | None = None) -> str:
    """Per data set and case: first step, steady step, throughput, ratio, cost over energy-only and FLOP rates; with
    ``limits`` the roofline of one optimiser step (XLA's cost of jaxatom's step, the work count of both rows)."""
    from _roofline import COLUMNS, with_roofline

    index = {(r["data"], r["case"], r["framework"]): r for r in rows}
    table = []
    for r in rows:
        other = index.get((r["data"], r["case"], "schnetpack"))
        base = index.get((r["data"], "energy", r["framework"]))
        jax_ratio, vs_energy = r["framework"] == "jaxatom" and other, base and r["case"] != "energy"
        out = {**r, "label": CASE_LABELS[r["case"]],
               "ratio": f"{r['structures_per_s'] / other['structures_per_s']:.2f}x" if jax_ratio else None,
               "vs": f"{r['median_s'] / base['median_s']:.2f}x" if vs_energy else None}  # fmt: skip
        table.append(with_roofline(out, r["median_s"], limits) if limits else out)
    columns = [
        Column("data", "data", numeric=False),
        Column("case", "label", numeric=False),
        Column("framework", "framework", numeric=False),
        Column("first step (s)", "first_s"),
        Column("steady step, median (ms)", lambda r: 1e3 * r["median_s"], ".1f"),
        Column("mean (ms)", lambda r: 1e3 * r["mean_s"], ".1f"),
        Column("structures/s", "structures_per_s", ".1f"),
        Column("steps/s", "steps_per_s"),
        Column("jaxatom / SchNetPack", "ratio"),
        Column("step vs energy only", "vs"),
        Column("own GFLOP per step", lambda r: r["flops_per_step"] / 1e9),
        Column("own GFLOP/s", "gflops_per_s", ".1f"),
        Column("of own matmul peak", lambda r: f"{100 * r['peak_fraction']:.0f} %"),
    ]
    first, shapes = rows[0], [r for r in rows if r["padded_shapes"]]
    return "\n".join([
        markdown_table([*columns, *(COLUMNS if limits else ())], table),
        "",
        f"Steady state: median of {first['steps']} timed steps per framework (alternating rounds) after the first "
        f"step and {first['warmup_steps']} untimed warm-up steps; jaxatom compiled "
        + ", ".join(f"{r['padded_shapes']} padded shape(s) for {r['data']}/{r['case']}" for r in shapes)
        + ". Own GFLOP per step: jaxatom = XLA's cost analysis of its step (every operation, padded edges); "
        "SchNetPack = torch's FLOP formulas (matrix products only); own matmul peak: the measured rate of the same "
        "library (XLA dot / torch.mm) on 2048² matrices. The roofline columns count XLA's FLOPs of jaxatom's step "
        "for both rows (its bytes for jaxatom's only).",
    ])  # fmt: skip


def budget_table(rows: Sequence[dict[str, Any]], minutes: float) -> str:
    """Per data set, case and framework: epochs in the budget and the errors of the best validation epoch."""
    lines = [
        f"Budget {minutes:g} min per framework and case; errors of the EMA weights of the best validation epoch.",
        "",
        "| data | case | framework | epochs | steps | training time (s) | split | dipole MAE (e·Å) | dipole MAE (D) | "
        "energy MAE (eV) | energy MAE (kcal/mol) | force MAE (eV/Å) | force MAE (kcal/mol/Å) |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for split, e in r["errors"].items():
            lines.append(
                f"| {r['data']} | {CASE_LABELS[r['case']]} | {r['framework']} | {r['epochs']} | {r['steps']} | "
                f"{r['train_s']:.0f} | {split} | {e.get(f'{DIPOLE}_mae', float('nan')):.4f} | "
                f"{e.get(f'{DIPOLE}_mae_D', float('nan')):.4f} | {e['energy_mae_eV']:.4f} | "
                f"{e['energy_mae_kcal_mol']:.3f} | {e['forces_mae_eV_per_A']:.4f} | "
                f"{e['forces_mae_kcal_mol_per_A']:.3f} |"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--mode", choices=["throughput", "budget", "both"], default="both", help="what to measure")
    parser.add_argument("--datasets", nargs="+", choices=["aspirin", "ethanol"], default=["aspirin"],
                        help="built-in data sets")  # fmt: skip
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="throughput cases")
    parser.add_argument("--budget-cases", nargs="+", choices=list(CASES), default=["dipole", "dipole_vec"],
                        help="cases trained for --minutes each")  # fmt: skip
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-clock training budget per framework/case")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per framework, case and round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating timing rounds (throughput)")
    parser.add_argument("--batch-size", type=int, default=32, help="structures per training batch")
    parser.add_argument("--dipole-weight", type=float, default=0.1, help="loss weight of the dipole MSE ((e·Å)²)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the weights and the shuffling")
    parser.add_argument("--train", type=int, default=1000, help="training structures")
    parser.add_argument("--val", type=int, default=100, help="validation structures")
    parser.add_argument("--test", type=int, default=500, help="test structures")
    parser.add_argument("--threads", type=int, default=core_count(), help="torch threads (default: all cores)")
    parser.add_argument("--tune-allocator", action="store_true", help="call jaxatom.tune_cpu_allocator() first")
    parser.add_argument("--no-roofline", action="store_true", help="leave out the roofline columns")
    parser.add_argument("--json", type=Path, help="also write all results and environment info to this file")
    args = parser.parse_args(argv)
    if min(args.steps, args.rounds, args.batch_size, args.train, args.val, args.test, args.threads) < 1:
        parser.error("--steps, --rounds, --batch-size, --train, --val, --test and --threads must be positive")
    if args.minutes <= 0 or args.dipole_weight < 0:
        parser.error("--minutes must be positive and --dipole-weight not negative")
    if args.mode != "budget" and args.train < args.batch_size:
        parser.error("throughput needs at least one full batch: --train must be at least --batch-size")
    return args


def run(args: argparse.Namespace, limits: dict | None = None) -> dict[str, Any]:
    """Run the chosen modes (both frameworks in this process); returns ``{"meta", "info", "throughput", "budget",
    "header", "markdown"}``. ``limits``: the machine's roofline limits (throughput tables)."""
    import importlib.util
    import os

    from jaxatom.runtime import cpu_allocator_tuned, tune_cpu_allocator

    if not all(importlib.util.find_spec(m) is not None for m in ("torch", "schnetpack")):
        raise SystemExit("skipped: this benchmark compares with SchNetPack in its own process, which lacks it")
    import torch

    tuned = cpu_allocator_tuned() or (args.tune_allocator and tune_cpu_allocator())
    torch.set_num_threads(args.threads)
    info: dict[str, Any] = {"load": {"start": load_average()}, "allocator_tuned": tuned, "versions": versions(),
                            "omp": os.environ.get("OMP_NUM_THREADS"), "cpu_flags": cpu_flags()}  # fmt: skip
    data = {name: load_splits(name, args.train, args.val, args.test, args.seed) for name in args.datasets}
    cases = list(dict.fromkeys([*args.cases, *args.budget_cases]))
    info["params"] = param_counts(cases, next(iter(data.values())), args.seed)
    results: dict[str, list] = {"throughput": [], "budget": []}
    if args.mode in ("throughput", "both"):
        info["matmul"] = matmul_rates()
        for name, splits in data.items():
            results["throughput"] += run_throughput(args, name, splits, info["matmul"])
    if args.mode in ("budget", "both"):
        for name, splits in data.items():
            results["budget"] += run_budget(args, name, splits)
    info["load"]["end"] = load_average()
    tables = []
    if results["throughput"]:
        tables.append(throughput_table(results["throughput"], limits))
    if results["budget"]:
        tables.append(budget_table(results["budget"], args.minutes))
    meta = {"mode": args.mode, "command": command_line(), "environment": environment(), "threads": args.threads,
            "batch_size": args.batch_size, "seed": args.seed, "steps": args.steps, "rounds": args.rounds,
            "minutes": args.minutes, "dipole_weight": args.dipole_weight,
            "sizes": {"train": args.train, "val": args.val, "test": args.test},
            "energy_shift_eV_per_atom": {name: s.energy_shift for name, s in data.items()}}  # fmt: skip
    return {"meta": meta, "info": info, **results, "header": header(args, info, data), "markdown": "\n\n".join(tables)}


def main(argv: Sequence[str] | None = None) -> None:
    """Run the chosen modes, print the header and the markdown tables, optionally write JSON."""
    args = parse_args(argv)
    from _roofline import run_and_report

    import jaxatom  # noqa: F401  (tunes the CPU allocator before JAX starts)

    run_and_report(run, args, args.mode != "budget" and not args.no_roofline, args.json)


if __name__ == "__main__":
    main()
