"""``relax_batch``: many structures relaxed at once on the device, with host checks between compiled chunks.

The host validates every input before anything is compiled, builds each structure's neighbour list with
``cutoff + skin`` (vesin, :func:`~jaxatom.neighbors.graph_from_atoms`), pads the batch into one :class:`Graph` and runs
:func:`~jaxatom.relax.batch.run_chunk` until every structure is done. Between chunks it rebuilds the lists of the
structures that moved too far (the others keep theirs; the edge capacity only grows, so a run compiles once or a few
times), then adds the energy's per-atom offsets in float64 and returns one :class:`RelaxResult` per structure.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from jaxatom.errors import ConfigError, StructureError
from jaxatom.graph import HostGraph, batch_graphs, bucket_size, float_dtype
from jaxatom.neighbors import graph_from_atoms
from jaxatom.potential.ensemble import PotentialEnsemble
from jaxatom.potential.potential import Potential
from jaxatom.relax.batch import ChunkLimits, ChunkSettings, RelaxState, run_chunk_jit, split_dof
from jaxatom.relax.cell import CELL_MODES
from jaxatom.relax.fire import fire
from jaxatom.units import GPa

__all__ = ["RelaxResult", "relax_batch"]

_FIRE_OPTIONS = ("dt_start", "dt_max", "n_min", "f_inc", "f_dec", "alpha_start", "f_alpha", "max_step")


@dataclasses.dataclass(frozen=True, eq=False)
class RelaxResult:
    """One relaxed structure.

    Attributes:
        atoms: the relaxed structure (a copy: positions and, with cell relaxation, cell), with a
            ``SinglePointCalculator`` holding its energy, forces and (periodic) stress.
        energy: potential energy (eV, offsets included; without the ``P V`` term).
        forces: ``[n, 3]`` atomic forces (eV/Å).
        stress: ``[3, 3]`` stress (eV/Å³, ASE's sign) with cell relaxation, else None.
        max_force: largest atomic force (eV/Å).
        converged: whether every generalised force (atoms and, with cell relaxation, cell) fell below ``fmax``.
        steps: FIRE steps taken.
        error: why the structure was stopped early (e.g. atoms that collapsed onto each other), else None; the
            others of the batch go on.
    """

    atoms: Atoms
    energy: float
    forces: np.ndarray
    stress: np.ndarray | None
    max_force: float
    converged: bool
    steps: int
    error: str | None = None


def relax_batch(
    potential: Potential | PotentialEnsemble,
    structures: Sequence[Atoms],
    fmax: float = 0.01,
    steps: int = 1000,
    cell: str = "fixed",
    pressure_GPa: float = 0.0,
    skin: float = 1.0,
    chunk: int = 50,
    fire_options: Mapping[str, float] | None = None,
    timing: dict | None = None,
) -> list[RelaxResult]:
    """Relax many structures (of any sizes, molecules and crystals) in one padded batch with FIRE on the device.

    Each structure converges on its own: its own FIRE time step, mixing factor and velocity, its own convergence
    test, and it stops moving once converged while the others go on. Convergence is ASE's with a cell filter:
    every generalised force row below ``fmax`` — the atomic forces (mapped to the reference cell) and, with cell
    relaxation, ``−V (σ + P) F⁻ᵀ / n_atoms`` on the deformation gradient (:mod:`jaxatom.relax.cell`).

    Args:
        potential: a :class:`~jaxatom.Potential` or :class:`~jaxatom.PotentialEnsemble` (relaxed on the mean) with
            an energy output.
        structures: a non-empty list of ``ase.Atoms`` (not modified); constraints are not supported.
        fmax: force threshold (eV/Å).
        steps: most FIRE steps per structure.
        cell: ``"fixed"``, ``"isotropic"`` (uniform scaling) or ``"full"`` (all nine components of the deformation
            gradient); cell relaxation needs fully periodic structures.
        pressure_GPa: target pressure (GPa) for cell relaxation.
        skin: extra radius (Å) of the neighbour lists; a structure's list is rebuilt on the host once its pairs may
            have moved by more than the skin.
        chunk: most FIRE steps per compiled chunk between host checks.
        fire_options: FIRE settings other than ASE's defaults, named as in :func:`~jaxatom.relax.fire.fire`.
        timing: a dict to fill with ``compile_s``, ``wall_s``, ``chunks``, ``rebuilds`` and ``compiles``.

    Returns:
        One :class:`RelaxResult` per structure, in order. Not converging within ``steps`` is reported, not raised.
    """
    fire_options = _check_settings(potential, structures, fmax, steps, cell, pressure_GPa, skin, chunk, fire_options)
    start = time.perf_counter()
    stats = {"compile_s": 0.0, "chunks": 0, "rebuilds": 0, "compiles": 0}
    radius = potential.cutoff + skin
    atoms_list = list(structures)
    hosts = [_host_graph(atoms, radius, k) for k, atoms in enumerate(atoms_list)]
    n_struct = len(hosts)
    n_node = bucket_size(sum(g.n_node for g in hosts) + 1, 8)
    n_edge = bucket_size(max(int(1.2 * sum(g.n_edge for g in hosts)), 1), 64)  # headroom: lists grow as atoms move
    reference = batch_graphs(hosts, n_node=n_node, n_edge=n_edge)
    dtype = float_dtype()
    n_graph = n_struct + 1
    cell_factor = np.ones(n_graph, dtype)
    cell_factor[:n_struct] = [len(atoms) for atoms in atoms_list]
    identity = np.broadcast_to(np.eye(3, dtype=dtype), (n_graph, 3, 3))
    rows = np.concatenate([reference.positions, (cell_factor[:, None, None] * identity).reshape(-1, 3)])
    segments = np.concatenate([reference.node_graph, np.repeat(np.arange(n_graph, dtype=np.int32), 3)])
    settings = ChunkSettings(potential.model, isinstance(potential, PotentialEnsemble), cell, fire_options)
    limits = ChunkLimits(
        fmax=np.asarray(fmax, dtype), max_steps=np.asarray(steps, np.int32), cutoff=np.asarray(potential.cutoff, dtype),
        skin=np.asarray(skin, dtype), chunk=np.asarray(chunk, np.int32),
    )  # fmt: skip
    state = _initial_state(settings, rows, segments, n_node, n_graph)
    built_positions, built_deformation = np.asarray(reference.positions), np.array(identity)
    pressure = np.full(n_graph, pressure_GPa * GPa, dtype)
    scaling = potential.scaling_arrays(dtype, host_offsets=True)
    errors: dict[int, tuple[str, int]] = {}
    while True:
        args = (state, reference, built_positions, built_deformation, potential.params, scaling, pressure, cell_factor)
        state = _compiled_chunk(args + (limits,), settings, stats)(*args, limits)
        stats["chunks"] += 1
        done, rebuild = jax.device_get((state.done, state.rebuild))
        if done.all():
            break
        if rebuild.any():
            positions, deformation = split_dof(np.asarray(jax.device_get(state.fire.positions)), n_node, cell_factor)
            n_steps = np.array(state.fire.n_steps)
            for k in np.nonzero(rebuild)[0]:
                nodes = reference.node_graph == k
                try:
                    hosts[k] = _rebuilt_graph(hosts[k], positions[nodes], deformation[k], radius, k)
                except StructureError as error:  # stop this one where it is (at its step limit); the others go on
                    errors[k] = (str(error), int(n_steps[k]))
                    n_steps[k] = steps
                    continue
                built_positions = np.where(nodes[:, None], positions, built_positions)
                built_deformation[k] = deformation[k]
                stats["rebuilds"] += 1
            n_edge = max(n_edge, bucket_size(sum(g.n_edge for g in hosts), 64))
            reference = batch_graphs(hosts, n_node=n_node, n_edge=n_edge)
            state = state.replace(rebuild=np.zeros(n_graph, bool), fire=state.fire.replace(n_steps=n_steps))
    results = _results(potential, atoms_list, reference, jax.device_get(state), cell_factor, cell != "fixed")
    for k, (message, taken) in errors.items():
        results[k] = dataclasses.replace(results[k], error=message, steps=taken, converged=False)
    if timing is not None:
        timing.update(stats, wall_s=time.perf_counter() - start)
    return results


#: Compiled chunks by settings and argument shapes, so that repeated calls of the same shapes compile once.
_COMPILED: OrderedDict = OrderedDict()
_COMPILED_KEEP = 8


def _compiled_chunk(args: tuple, settings: ChunkSettings, stats: dict):
    """The compiled chunk for these settings and argument shapes (ahead of time, so compile time is measured)."""
    leaves, tree = jax.tree.flatten(args)
    key = (settings, tree, tuple((np.shape(x), getattr(x, "dtype", type(x))) for x in leaves))
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key]
    tic = time.perf_counter()
    _COMPILED[key] = run_chunk_jit.lower(*args, settings=settings).compile()
    stats["compile_s"] += time.perf_counter() - tic
    stats["compiles"] += 1
    while len(_COMPILED) > _COMPILED_KEEP:
        _COMPILED.popitem(last=False)
    return _COMPILED[key]


def _initial_state(settings, rows, segments, n_node, n_graph) -> RelaxState:
    dtype = rows.dtype
    real = np.arange(n_graph) < n_graph - 1
    return RelaxState(
        fire=fire(**dict(settings.fire_options)).init(rows, segments, n_graph),
        energy=np.zeros(n_graph, dtype),
        forces=np.zeros((n_node, 3), dtype),
        stress=np.zeros((n_graph, 3, 3), dtype),
        max_force=np.zeros(n_graph, dtype),
        converged=np.zeros(n_graph, bool),
        done=~real,
        rebuild=np.zeros(n_graph, bool),
    )


def _host_graph(atoms: Atoms, radius: float, index: int) -> HostGraph:
    try:
        return graph_from_atoms(atoms, radius)
    except StructureError as error:
        raise StructureError(f"structure {index}: {error}") from None


def _rebuilt_graph(old: HostGraph, positions: np.ndarray, deformation: np.ndarray, radius: float, index: int):
    """The list of structure ``index`` rebuilt at its current deformed geometry, stored in the reference frame
    (positions ``u``, shifts ``s F⁻ᵀ``, the starting cell)."""
    deformation = deformation.astype(np.float64)
    actual = Atoms(
        numbers=old.species,
        positions=positions.astype(np.float64) @ deformation.T,
        cell=old.cell.astype(np.float64) @ deformation.T,
        pbc=old.pbc,
    )
    new = _host_graph(actual, radius, index)
    shifts = new.shifts.astype(np.float64) @ np.linalg.inv(deformation).T
    return dataclasses.replace(
        new, positions=positions, cell=old.cell, shifts=shifts.astype(old.shifts.dtype), total_charge=old.total_charge
    )


def _results(potential, atoms_list, reference, state, cell_factor, with_cell) -> list[RelaxResult]:
    n_node = reference.positions.shape[0]
    positions, deformation = split_dof(np.asarray(state.fire.positions, np.float64), n_node, cell_factor)
    offsets = potential.atom_offsets("energy")
    offsets = offsets.mean(axis=0) if offsets.ndim == 2 else offsets
    results = []
    for k, atoms in enumerate(atoms_list):
        nodes = reference.node_graph == k
        f = deformation[k]
        relaxed = atoms.copy()
        relaxed.set_constraint()
        if with_cell:
            relaxed.set_cell(np.asarray(atoms.cell[:]) @ f.T, scale_atoms=False)
        relaxed.positions = positions[nodes] @ f.T
        energy = float(state.energy[k]) + float(offsets[atoms.numbers].sum())
        forces = np.asarray(state.forces[nodes], np.float64)
        stress = np.asarray(state.stress[k], np.float64) if with_cell else None
        calc_results = {"energy": energy, "forces": forces}
        if stress is not None:
            calc_results["stress"] = stress
        relaxed.calc = SinglePointCalculator(relaxed, **calc_results)
        results.append(
            RelaxResult(
                atoms=relaxed,
                energy=energy,
                forces=forces,
                stress=stress,
                max_force=float(np.max(np.linalg.norm(forces, axis=1))),
                converged=bool(state.converged[k]),
                steps=int(state.fire.n_steps[k]),
            )
        )
    return results


def _check_settings(potential, structures, fmax, steps, cell, pressure_GPa, skin, chunk, fire_options):
    """Refuse bad settings and structures before anything is compiled; return the FIRE options as a sorted tuple."""
    if not isinstance(potential, Potential | PotentialEnsemble):
        raise ConfigError(f"relax_batch needs a jaxatom Potential or PotentialEnsemble, got {type(potential).__name__}")
    if "energy" not in potential.outputs:
        raise ConfigError("the potential has no energy output to relax; use a model with an energy head")
    if isinstance(structures, Atoms) or not isinstance(structures, Sequence):
        raise ConfigError("structures must be a list of ase.Atoms (pass [atoms] for one structure)")
    if len(structures) == 0:
        raise ConfigError("relax_batch needs at least one structure; got an empty list")
    if cell not in CELL_MODES:
        raise ConfigError(f"cell must be one of {', '.join(map(repr, CELL_MODES))}, got {cell!r}")
    if not (isinstance(fmax, int | float) and np.isfinite(fmax) and fmax > 0):
        raise ConfigError(f"fmax must be a positive force in eV/Å, got {fmax!r}")
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
        raise ConfigError(f"steps must be a non-negative integer, got {steps!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int | np.integer) or chunk < 1:
        raise ConfigError(f"chunk must be a positive integer number of steps, got {chunk!r}")
    if not (isinstance(skin, int | float) and np.isfinite(skin) and skin > 0):
        raise ConfigError(f"skin must be a positive distance in Å, got {skin!r}")
    if not np.isfinite(pressure_GPa):
        raise ConfigError(f"pressure_GPa must be finite, got {pressure_GPa!r}")
    if cell == "fixed" and pressure_GPa != 0:
        raise ConfigError("a target pressure needs cell relaxation: pass cell='isotropic' or cell='full'")
    unknown = set(fire_options or {}) - set(_FIRE_OPTIONS)
    if unknown:
        raise ConfigError(f"unknown FIRE options {sorted(unknown)}; known: {', '.join(_FIRE_OPTIONS)}")
    for k, atoms in enumerate(structures):
        if not isinstance(atoms, Atoms):
            raise ConfigError(f"structure {k} is a {type(atoms).__name__}, not an ase.Atoms")
        if atoms.constraints:
            raise ConfigError(
                f"structure {k} has ASE constraints, which relax_batch does not apply; remove them or relax it with "
                "an ASE optimiser (jaxatom.vibrations.relax)"
            )
        try:
            potential.check_elements(atoms.numbers)
        except StructureError as error:
            raise StructureError(f"structure {k}: {error}") from None
        if cell != "fixed" and not np.all(atoms.pbc):
            raise StructureError(
                f"structure {k} is not periodic in all three directions (pbc={atoms.pbc.tolist()}); cell relaxation "
                "needs a full 3D cell: use cell='fixed' for molecules and slabs"
            )
    return tuple(sorted((name, float(value)) for name, value in (fire_options or {}).items()))
