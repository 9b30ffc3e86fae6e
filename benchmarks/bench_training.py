"""Training benchmark: jaxatom vs SchNetPack 2.x on the shipped aspirin data, same CPU, one process, one run.

Data: ``jaxatom.data.load_builtin("aspirin")`` (3000 GFN2-xTB frames, eV, Å), split at random with ``--seed``
(default 1000 train / 100 validation / 500 test). Models: SchNet (128 features, 6 interactions) and PaiNN (128
features, 3 interactions), 5 Å cosine cutoff, 20 Gaussians, Atomwise head with the default pyramidal MLP, float32.
Recipe (SchNetPack's MD17 recipe, the defaults of ``jaxatom.train.TrainConfig``, read from that one object by both
sides): MSE loss with weights energy 0.01 / forces 0.99, AdamW (lr 1e-3, no weight decay), reduce-on-plateau on the
validation loss (x0.5, patience 75, cooldown 10, min 1e-6), EMA of the weights (0.995, torch_ema's warm-up) used for
validation and test. The mean energy per atom of the training split (float64) is removed from the energy labels of
both models and added back, in float64, for the test errors.

Modes:

* ``throughput``: steady-state training steps (forward, forces by autograd / ``jax.grad``, loss, backward, AdamW
  and EMA update) on ``--batch-size`` structures; batches are built once, outside the timed loop (jaxatom:
  ``GraphLoader`` batches on the device and the jitted ``train_step``; SchNetPack: per-structure inputs from
  ``AtomsConverter`` with ``MatScipyNeighborList`` collated into the same batches, a plain torch loop). The first
  step (for jaxatom: trace + compile) is reported separately; then one untimed pass over the distinct batches (compiles
  every padded shape), then ``--steps`` timed steps (median step time reported).
* ``budget``: each framework trains for ``--minutes`` of wall clock (jaxatom: ``jaxatom.train.fit`` with
  ``max_time_s``; SchNetPack: a torch loop with the same recipe, epochs in the same shuffled order), both stopping at
  the end of the first epoch past the budget; then the EMA weights of the best validation epoch are evaluated on the
  test split (energy and force MAE in eV and kcal/mol).

The frameworks run one after the other, never concurrently.

Usage (from the repository root)::

    OMP_NUM_THREADS=2 python benchmarks/bench_training.py --mode throughput --steps 30
    OMP_NUM_THREADS=2 python benchmarks/bench_training.py --mode budget --minutes 10 --json budget.json
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
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
    spk_python,
)
from bench_inference import CUTOFF, MODELS, N_ATOM_BASIS, N_RBF, build_spk_model  # noqa: E402

if TYPE_CHECKING:
    from jaxatom.data import Dataset
    from jaxatom.potential import Potential
    from jaxatom.train import TrainConfig


# ------------------------------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Splits:
    """The train/validation/test subsets and the mean energy per atom of the training split (eV, float64)."""

    train: Dataset
    val: Dataset
    test: Dataset
    energy_shift: float


def load_splits(n_train: int, n_val: int, n_test: int, seed: int) -> Splits:
    """The shipped aspirin data, split at random with ``seed``."""
    from jaxatom.data import load_builtin, mean_energy_per_atom, random_split

    dataset = load_builtin("aspirin")
    split = random_split(len(dataset), n_train, n_val, n_test, seed=seed)
    train = dataset.subset(split["train_idx"])
    shift = mean_energy_per_atom(train, np.arange(len(train)))
    return Splits(train, dataset.subset(split["val_idx"]), dataset.subset(split["test_idx"]), shift)


def recipe(batch_size: int, seed: int, max_time_s: float | None = None) -> TrainConfig:
    """The training recipe shared by both frameworks (``TrainConfig`` defaults = SchNetPack's MD17 recipe)."""
    from jaxatom.train import TrainConfig

    return TrainConfig(batch_size=batch_size, seed=seed, max_time_s=max_time_s, max_epochs=10**6,
                       early_stopping_patience=None)  # fmt: skip


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled structure order of ``epoch``, the same as ``GraphLoader.order``."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(order: np.ndarray, batch_size: int, drop_last: bool = False) -> list[np.ndarray]:
    """``order`` cut into batches (the last one short unless ``drop_last``)."""
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    return [order[k : k + batch_size] for k in range(0, stop, batch_size)]


# ---------------------------------------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class StepTiming:
    """Training-step times (seconds) of one framework and model."""

    first_s: float
    warmup_steps: int
    median_s: float
    mean_s: float
    steps: int
    batch_size: int

    @property
    def structures_per_s(self) -> float:
        """Steady-state throughput from the median step time."""
        return self.batch_size / self.median_s


def time_steps(step: Callable[[int], None], n_distinct: int, steps: int, batch_size: int) -> StepTiming:
    """Time ``step(k)`` (``k`` indexes a prepared batch, cycled): the first call, an untimed pass over the other
    ``n_distinct - 1`` batches, then ``steps`` timed calls. ``step`` must return only when its work is done."""
    start = time.perf_counter()
    step(0)
    first = time.perf_counter() - start
    for k in range(1, n_distinct):
        step(k)
    times = []
    for k in range(steps):
        start = time.perf_counter()
        step(k % n_distinct)
        times.append(time.perf_counter() - start)
    return StepTiming(first_s=first, warmup_steps=n_distinct - 1, median_s=statistics.median(times),
                      mean_s=statistics.fmean(times), steps=steps, batch_size=batch_size)  # fmt: skip


# --------------------------------------------------------------------------------------------------------- jaxatom


def jax_potential(name: str, splits: Splits, seed: int) -> Potential:
    """A freshly initialised jaxatom potential with the benchmark architecture and the training energy shift."""
    from jaxatom import Potential
    from jaxatom.nn import PaiNN, SchNet
    from jaxatom.train import with_energy_offsets

    representation = {"schnet": SchNet, "painn": PaiNN}[name](
        n_atom_basis=N_ATOM_BASIS, n_interactions=MODELS[name], cutoff=CUTOFF, n_rbf=N_RBF
    )
    elements = sorted(set(splits.train.elements) | set(splits.val.elements) | set(splits.test.elements))
    potential = with_energy_offsets(Potential.create(representation, elements=elements, seed=seed), splits.train)
    if potential.energy_shift != splits.energy_shift:
        raise RuntimeError("jaxatom's energy shift differs from the one given to SchNetPack")
    return potential


def jax_param_count(potential: Potential) -> int:
    """Number of trainable parameters."""
    import jax

    return sum(int(np.size(p)) for p in jax.tree.leaves(potential.params))


def jax_throughput(
    name: str, splits: Splits, batch_size: int, steps: int, seed: int
) -> tuple[StepTiming, list[np.ndarray], int, dict[str, float]]:
    """Time jaxatom's jitted ``train_step`` on device-resident ``GraphLoader`` batches of the training split.

    Returns the timing, the structure indices of the batches used (for SchNetPack to use the same), the number
    of distinct padded shapes among them (each compiled once, the first in the first step, the others in warm-up)
    and XLA's cost analysis of one optimiser step on the first batch (``flops``, ``bytes``)."""
    import jax
    from _roofline import cost

    from jaxatom.data import GraphLoader
    from jaxatom.train import init_state, train_step

    potential = jax_potential(name, splits, seed)
    config = recipe(batch_size, seed)
    loader = GraphLoader(splits.train, potential.cutoff, batch_size, seed=seed, drop_last=True,
                         atom_offsets=potential.atom_offsets())  # fmt: skip
    indices = batch_indices(loader.order(0), batch_size, drop_last=True)[:steps]
    batches = [jax.device_put(loader.batch(idx)) for idx in indices]
    state = init_state(potential.params, config)
    scales = potential.scaling_arrays(np.float32, include_offsets=False)  # the labels come without offsets

    def step(k: int) -> None:
        nonlocal state
        graph, labels = batches[k]
        state, sums = train_step(state, graph, labels, potential.model, scales, config.step)
        jax.block_until_ready((state, sums))

    timing = time_steps(step, len(batches), steps, batch_size)
    if int(state.nan_step) >= 0:
        raise RuntimeError(f"jaxatom {name}: the loss became NaN at step {int(state.nan_step)}")
    shapes = {(graph.positions.shape, graph.senders.shape) for graph, _ in batches}
    graph, labels = batches[0]
    work = cost(train_step.lower(state, graph, labels, potential.model, scales, config.step).compile())
    return timing, indices, len(shapes), work


def jax_history(run_dir: Path) -> list[dict[str, float]]:
    """The per-epoch rows of ``fit``'s ``metrics.csv``."""
    with (run_dir / "metrics.csv").open() as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def jax_budget(name: str, splits: Splits, batch_size: int, seconds: float, seed: int) -> dict[str, Any]:
    """Train with ``jaxatom.train.fit`` for ``seconds`` (in a temporary run directory) and evaluate on the test set."""
    from jaxatom.train import fit
    from jaxatom.train.evaluation import error_metrics, predict_dataset

    potential = jax_potential(name, splits, seed)
    config = recipe(batch_size, seed, max_time_s=seconds)
    with tempfile.TemporaryDirectory(prefix="bench_training_") as tmp:
        start = time.perf_counter()
        trained = fit(potential, splits.train, splits.val, config, tmp, resume=False, progress=False)
        wall = time.perf_counter() - start
        history = jax_history(Path(tmp))
    metrics = error_metrics(predict_dataset(trained, splits.test, batch_size), splits.test)
    last = history[-1]
    return {"epochs": len(history), "steps": int(last["step"]), "train_s": last["time_s"], "wall_s": wall,
            "best_val_loss": min(row["val_loss"] for row in history), "test": metrics,
            "history": [{"epoch": int(r["epoch"]), "time_s": r["time_s"], "val_loss": r["val_loss"],
                         "val_forces_mae": r["val_forces_mae"]} for r in history]}  # fmt: skip


# ------------------------------------------------------------------------------------------------------ SchNetPack


class SpkStructures:
    """Per-structure SchNetPack inputs (neighbour lists computed once) with float32 labels, energies shifted in
    float64 before the cast; :meth:`batch` collates any selection with SchNetPack's own collate function."""

    def __init__(self, dataset: Dataset, energy_shift: float) -> None:
        import schnetpack as spk
        import torch

        converter = spk.interfaces.AtomsConverter(
            neighbor_list=spk.transform.MatScipyNeighborList(cutoff=CUTOFF), dtype=torch.float32
        )
        energy = dataset.properties["energy"].astype(np.float64) - energy_shift * dataset.n_atoms
        self.items: list[dict] = []
        for i in range(len(dataset)):
            inputs = converter(dataset.to_atoms(i))
            inputs["energy"] = torch.tensor([energy[i]], dtype=torch.float32)
            inputs["forces"] = torch.tensor(dataset.properties["forces"][dataset.atoms_of(i)], dtype=torch.float32)
            self.items.append(inputs)

    def batch(self, indices: Sequence[int]) -> dict:
        """The collated inputs and labels of the structures at ``indices``."""
        from schnetpack.data.loader import _atoms_collate_fn

        return _atoms_collate_fn([self.items[i] for i in indices])


def spk_model(name: str, seed: int):
    """The SchNetPack model (``build_spk_model`` of the inference benchmark), seeded, in training mode."""
    import torch

    torch.manual_seed(seed)
    return build_spk_model(name).train()


def spk_loss(model, batch: dict, config: TrainConfig) -> tuple[Any, dict]:
    """The weighted MSE loss of one batch and the model output (the model gets a shallow copy of ``batch``)."""
    import torch.nn.functional as F

    out = model(dict(batch))
    loss = sum(term.weight * F.mse_loss(out[term.name], batch[term.name]) for term in config.terms)
    return loss, out


def spk_optimizers(model, config: TrainConfig) -> tuple[Any, Any, Any]:
    """AdamW, reduce-on-plateau and EMA with the recipe's settings."""
    import torch
    from torch_ema import ExponentialMovingAverage

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience,
        cooldown=config.plateau_cooldown, min_lr=config.min_learning_rate,
    )  # fmt: skip
    return optimizer, plateau, ExponentialMovingAverage(model.parameters(), decay=config.ema_decay)


def spk_train_step(model, batch: dict, optimizer, ema, config: TrainConfig) -> float:
    """One optimiser step (forward, forces, loss, backward, AdamW, EMA); returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss, _ = spk_loss(model, batch, config)
    loss.backward()
    optimizer.step()
    ema.update()
    return float(loss.detach())


def spk_throughput(name: str, splits: Splits, indices: list, steps: int, batch_size: int, seed: int) -> StepTiming:
    """Time the SchNetPack training step on the same batches as jaxatom (collated once, outside the loop)."""
    model = spk_model(name, seed)
    config = recipe(batch_size, seed)
    structures = SpkStructures(splits.train, splits.energy_shift)
    batches = [structures.batch(idx) for idx in indices]
    optimizer, _, ema = spk_optimizers(model, config)
    return time_steps(lambda k: spk_train_step(model, batches[k], optimizer, ema, config), len(batches), steps,
                      batch_size)  # fmt: skip


def spk_validate(model, batches: list[dict], config: TrainConfig) -> dict[str, float]:
    """Validation loss (mean over batches, as jaxatom's ``fit``) and force MAE (eV/Å), in eval mode."""
    model.eval()
    losses, force_abs, force_count = [], 0.0, 0
    for batch in batches:
        loss, out = spk_loss(model, batch, config)
        losses.append(float(loss.detach()))
        force_abs += float((out["forces"].detach() - batch["forces"]).abs().sum())
        force_count += batch["forces"].numel()
    model.train()
    return {"val_loss": float(np.mean(losses)), "val_forces_mae": force_abs / force_count}


def spk_predict(model, structures: SpkStructures, dataset: Dataset, energy_shift: float, batch_size: int) -> dict:
    """Energies ``[S]`` (eV, mean energy per atom added back in float64) and forces ``[A, 3]`` (eV/Å)."""
    model.eval()
    energy, forces = np.zeros(len(dataset)), np.zeros_like(dataset.positions)
    offsets = dataset.atom_offsets
    for start in range(0, len(dataset), batch_size):
        stop = min(start + batch_size, len(dataset))
        out = model(structures.batch(range(start, stop)))
        energy[start:stop] = out["energy"].detach().double().numpy() + energy_shift * dataset.n_atoms[start:stop]
        forces[offsets[start] : offsets[stop]] = out["forces"].detach().double().numpy()
    return {"energy": energy, "forces": forces}


def spk_epochs(model, train, val_batches: list, config: TrainConfig, seconds: float, name: str, step, validate):
    """SchNetPack's epochs for ``seconds`` (in ``GraphLoader``'s shuffled order, batches of ``config.batch_size``):
    ``step(model, batch, optimizer, ema)`` per batch, ``validate(model, val_batches)`` with the EMA weights after
    every epoch, plateau on the validation loss; leaves the best epoch's EMA weights in ``model`` and returns
    ``(history, best validation loss, steps)``."""
    from jaxatom.train.schedule import THRESHOLD

    optimizer, plateau, ema = spk_optimizers(model, config)
    history, best_loss, best_state, steps = [], float("inf"), None, 0
    started = time.perf_counter()
    for epoch in range(config.max_epochs):
        for idx in batch_indices(epoch_order(len(train.items), config.seed, epoch), config.batch_size):
            step(model, train.batch(idx), optimizer, ema)
            steps += 1
        with ema.average_parameters():
            val_metrics = validate(model, val_batches)
            if val_metrics["val_loss"] < best_loss * (1 - THRESHOLD):
                best_loss, best_state = val_metrics["val_loss"], copy.deepcopy(model.state_dict())
        plateau.step(val_metrics["val_loss"])
        elapsed = time.perf_counter() - started
        history.append({"epoch": epoch, "time_s": elapsed, **val_metrics})
        if not np.isfinite(val_metrics["val_loss"]):
            raise RuntimeError(f"SchNetPack {name}: the validation loss became {val_metrics['val_loss']}")
        if elapsed > seconds:
            break
    model.load_state_dict(best_state)
    return history, best_loss, steps


def spk_budget(name: str, splits: Splits, batch_size: int, seconds: float, seed: int) -> dict[str, Any]:
    """Train SchNetPack with the recipe for ``seconds`` (epochs in ``GraphLoader``'s shuffled order, validation with
    the EMA weights after every epoch, plateau on the validation loss); evaluate the best epoch's EMA weights."""
    from jaxatom.train.evaluation import error_metrics

    wall_start = time.perf_counter()
    model = spk_model(name, seed)
    config = recipe(batch_size, seed, max_time_s=seconds)
    train = SpkStructures(splits.train, splits.energy_shift)
    val = SpkStructures(splits.val, splits.energy_shift)
    val_batches = [val.batch(idx) for idx in batch_indices(np.arange(len(splits.val)), batch_size)]
    history, best_loss, steps = spk_epochs(
        model, train, val_batches, config, seconds, name, lambda *a: spk_train_step(*a, config),
        lambda m, b: spk_validate(m, b, config),
    )  # fmt: skip
    wall = time.perf_counter() - wall_start
    test = SpkStructures(splits.test, splits.energy_shift)
    metrics = error_metrics(spk_predict(model, test, splits.test, splits.energy_shift, batch_size), splits.test)
    return {"epochs": len(history), "steps": steps, "train_s": history[-1]["time_s"], "wall_s": wall,
            "best_val_loss": best_loss, "test": metrics, "history": history}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------- report


def versions() -> dict[str, str]:
    """Versions of everything that runs, and the thread settings."""
    import flax
    import jax

    import jaxatom

    found = {"jaxatom": jaxatom.__version__, "jax": jax.__version__, "jaxlib": metadata.version("jaxlib"),
             "flax": flax.__version__, "numpy": np.__version__, "python": platform.python_version(),
             "backend": f"{jax.default_backend()} ({jax.device_count()} device)", "schnetpack": "—", "torch": "—",
             "torch_ema": "—", "torch_threads": "—", "torch_interop_threads": "—"}  # fmt: skip
    try:
        import schnetpack as spk
        import torch
    except ImportError:
        return found
    return {**found, "schnetpack": spk.__version__, "torch": torch.__version__,
            "torch_ema": metadata.version("torch_ema"), "torch_threads": str(torch.get_num_threads()),
            "torch_interop_threads": str(torch.get_num_interop_threads())}  # fmt: skip


def header(args: argparse.Namespace, info: dict[str, Any], splits: Splits) -> str:
    """Environment, command and data description printed above the tables."""
    v = info["versions"]
    lines = [
        f"CPU: {cpu_model()} ({core_count()} cores available; flags: {cpu_flags()}); "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
        f"torch threads {v['torch_threads']} (interop {v['torch_interop_threads']}), XLA's own CPU thread pool; "
        f"allocator tuned: {info['allocator_tuned']}",
        f"jaxatom {v['jaxatom']}, jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']} ({v['backend']}); "
        f"schnetpack {v['schnetpack']}, torch {v['torch']}, torch_ema {v['torch_ema']}; numpy {v['numpy']}, "
        f"python {v['python']}",
        f"command: {command_line()}",
        f"data: built-in aspirin (GFN2-xTB), split seed {args.seed}: train {len(splits.train)}, val {len(splits.val)}, "
        f"test {len(splits.test)}; mean energy per atom removed: {splits.energy_shift:.6f} eV (float64, train)",
        f"batch {args.batch_size}, float32; recipe: MSE energy 0.01 / forces 0.99, AdamW 1e-3 (wd 0), "
        "plateau x0.5 (patience 75, cooldown 10), EMA 0.995",
    ]
    for name, counts in info["params"].items():
        lines.append(f"{name} ({N_ATOM_BASIS} features, {MODELS[name]} interactions) parameters: "
                     f"jaxatom {counts['jaxatom']}, SchNetPack {counts.get('schnetpack', '—')}")  # fmt: skip
    if not info.get("spk"):
        lines.append(info.get("spk_note", "SchNetPack not run"))
    load = busy_warning(info["load"]["start"], info["load"].get("end"))
    if load:
        lines.append(load)
        if "WARNING" in load:
            lines.append("(torch's OpenMP threads slow down far more than XLA's when cores are shared: do not compare "
                         "such numbers)")  # fmt: skip
    return "\n".join(lines)


def throughput_table(rows: Sequence[dict[str, Any]], limits: dict | None = None) -> str:
    """Per model: first step, median steady step and structures per second of both frameworks; with ``limits`` the
    roofline of one optimiser step (XLA's cost analysis of jaxatom's ``train_step``, also the work count of
    SchNetPack's row)."""
    from _roofline import COLUMNS, with_roofline

    by_model: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_model.setdefault(row["model"], {})[row["framework"]] = row
    table = []
    for frameworks in by_model.values():
        jax_row, spk_row = frameworks.get("jaxatom"), frameworks.get("schnetpack")
        work = {k: jax_row.get(k) for k in ("flops", "bytes")} if jax_row else {}
        for framework, row in frameworks.items():
            # SchNetPack's rows count jaxatom's FLOPs as their work; XLA's bytes say nothing about torch's traffic
            out = {**row, **work, "ratio": None} if framework == "jaxatom" else {**row, "flops": work.get("flops")}
            out.setdefault("ratio", None)
            if framework == "jaxatom" and spk_row:
                out["ratio"] = f"{jax_row['structures_per_s'] / spk_row['structures_per_s']:.2f}x"
            table.append(with_roofline(out, row["median_s"], limits) if limits else out)
    columns = [
        Column("model", "model", numeric=False),
        Column("framework", "framework", numeric=False),
        Column("first step (s)", "first_s"),
        Column("steady step, median (ms)", lambda r: 1e3 * r["median_s"], ".1f"),
        Column("mean (ms)", lambda r: 1e3 * r["mean_s"], ".1f"),
        Column("structures/s", "structures_per_s", ".1f"),
        Column("jaxatom / SchNetPack throughput", "ratio"),
    ]
    first = rows[0]
    return "\n".join([
        markdown_table([*columns, *(COLUMNS if limits else ())], table),
        "",
        f"Steady state: {first['steps']} timed steps (median) after the first step and {first['warmup_steps']} "
        "untimed warm-up steps over the distinct batches; jaxatom compiled "
        + ", ".join(f"{r['padded_shapes']} padded shape(s) for {r['model']}" for r in rows if r["padded_shapes"])
        + " (the first in the first step, any others during warm-up). FLOPs and bytes per optimiser step: XLA's "
        "cost analysis of jaxatom's compiled train_step (used as the work count of SchNetPack's rows too).",
    ])  # fmt: skip


def budget_table(rows: Sequence[dict[str, Any]], minutes: float) -> str:
    """Per model and framework: epochs in the budget and the test errors of the best validation epoch."""
    lines = [
        f"Budget {minutes:g} min per framework and model; test errors of the EMA weights of the best validation epoch.",
        "",
        "| model | framework | epochs | steps | training time (s) | energy MAE (eV) | energy MAE (kcal/mol) | "
        "force MAE (eV/Å) | force MAE (kcal/mol/Å) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t = r["test"]
        lines.append(
            f"| {r['model']} | {r['framework']} | {r['epochs']} | {r['steps']} | {r['train_s']:.0f} | "
            f"{t['energy_mae_eV']:.4f} | {t['energy_mae_kcal_mol']:.3f} | {t['forces_mae_eV_per_A']:.4f} | "
            f"{t['forces_mae_kcal_mol_per_A']:.3f} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------ main


def run_throughput(args: argparse.Namespace, splits: Splits, with_spk: bool = True) -> list[dict[str, Any]]:
    """Throughput rows for every model: jaxatom, then SchNetPack on the same batches (``with_spk``)."""
    rows = []
    for name in args.models:
        jax_timing, indices, shapes, work = jax_throughput(name, splits, args.batch_size, args.steps, args.seed)
        timings = [("jaxatom", jax_timing)]
        if with_spk:
            timings.append(
                ("schnetpack", spk_throughput(name, splits, indices, args.steps, args.batch_size, args.seed))
            )
        for framework, timing in timings:
            rows.append({"framework": framework, "model": name, **asdict(timing),
                         "structures_per_s": timing.structures_per_s,
                         "padded_shapes": shapes if framework == "jaxatom" else None,
                         **(work if framework == "jaxatom" else {})})  # fmt: skip
    return rows


def run_budget(args: argparse.Namespace, splits: Splits) -> list[dict[str, Any]]:
    """Budget rows for every model: jaxatom, then SchNetPack, each for ``--minutes``."""
    rows = []
    for name in args.models:
        for framework, train in (("jaxatom", jax_budget), ("schnetpack", spk_budget)):
            result = train(name, splits, args.batch_size, 60.0 * args.minutes, args.seed)
            rows.append({"framework": framework, "model": name, **result})
    return rows


def param_counts(models: Sequence[str], splits: Splits, seed: int, with_spk: bool = True) -> dict[str, dict]:
    """Parameter counts of both frameworks' models (they should agree)."""
    counts = {name: {"jaxatom": jax_param_count(jax_potential(name, splits, seed))} for name in models}
    if with_spk:
        for name in models:
            counts[name]["schnetpack"] = sum(p.numel() for p in spk_model(name, seed).parameters())
    return counts


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--mode", choices=["throughput", "budget"], default="throughput", help="what to measure")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS), help="models to run")
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget per framework/model")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per framework/model (throughput)")
    parser.add_argument("--batch-size", type=int, default=32, help="structures per training batch")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the weights and the shuffling")
    parser.add_argument("--train", type=int, default=1000, help="training structures")
    parser.add_argument("--val", type=int, default=100, help="validation structures")
    parser.add_argument("--test", type=int, default=500, help="test structures")
    parser.add_argument("--threads", type=int, default=core_count(), help="torch threads (default: all cores)")
    parser.add_argument("--tune-allocator", action="store_true", help="call jaxatom.tune_cpu_allocator() first")
    parser.add_argument("--no-schnetpack", action="store_true", help="benchmark jaxatom only")
    parser.add_argument("--no-roofline", action="store_true", help="leave out the roofline columns")
    parser.add_argument("--json", type=Path, help="also write all results and environment info to this file")
    args = parser.parse_args(argv)
    if min(args.steps, args.batch_size, args.train, args.val, args.test, args.threads) < 1 or args.minutes <= 0:
        parser.error("--steps, --batch-size, --train, --val, --test, --threads and --minutes must be positive")
    if args.mode == "throughput" and args.train < args.batch_size:
        parser.error("throughput mode needs at least one full batch: --train must be at least --batch-size")
    return args


def run(args: argparse.Namespace, limits: dict | None = None) -> dict[str, Any]:
    """Run the chosen mode (SchNetPack in this process, when it imports here); returns ``{"meta", "info", "rows",
    "header", "markdown"}``. ``limits``: the machine's roofline limits (throughput mode)."""
    from jaxatom.runtime import cpu_allocator_tuned, tune_cpu_allocator

    tuned = cpu_allocator_tuned() or (args.tune_allocator and tune_cpu_allocator())
    python, note = (None, "SchNetPack rows skipped (--no-schnetpack)") if args.no_schnetpack else spk_python()
    with_spk = python == sys.executable
    if with_spk:
        import torch

        torch.set_num_threads(args.threads)
    elif python is not None:
        note = "SchNetPack rows skipped: this benchmark runs SchNetPack in its own process, which lacks it"
    info: dict[str, Any] = {"load": {"start": load_average()}, "allocator_tuned": tuned, "versions": versions(),
                            "spk": with_spk, "spk_note": note}  # fmt: skip
    splits = load_splits(args.train, args.val, args.test, args.seed)
    info["params"] = param_counts(args.models, splits, args.seed, with_spk)
    if args.mode == "throughput":
        rows = run_throughput(args, splits, with_spk)
        table = throughput_table(rows, limits)
    else:
        if not with_spk:
            raise SystemExit(f"budget mode compares with SchNetPack: {note}")
        rows = run_budget(args, splits)
        table = budget_table(rows, args.minutes)
    info["load"]["end"] = load_average()
    meta = {"mode": args.mode, "command": command_line(), "environment": environment(), "threads": args.threads,
            "batch_size": args.batch_size, "seed": args.seed, "steps": args.steps, "minutes": args.minutes,
            "sizes": {"train": args.train, "val": args.val, "test": args.test},
            "energy_shift_eV_per_atom": splits.energy_shift}  # fmt: skip
    return {"meta": meta, "info": info, "rows": rows, "header": header(args, info, splits), "markdown": table}


def main(argv: Sequence[str] | None = None) -> None:
    """Run the chosen mode, print the header and the markdown table, optionally write JSON."""
    args = parse_args(argv)
    from _roofline import run_and_report

    import jaxatom  # noqa: F401  (tunes the CPU allocator before JAX starts)

    run_and_report(run, args, args.mode == "throughput" and not args.no_roofline, args.json)


if __name__ == "__main__":
    main()
