"""The chunked MD driver: ``simulate`` runs compiled chunks of ``lax.scan`` over frames (``fori_loop`` over the
stride inside), and between chunks checks neighbour-list overflow, appends frames to HDF5, checkpoints the full state
and reports progress. A restart truncates the trajectory to the checkpoint and continues bit-identically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms

from jaxatom import distributed
from jaxatom.errors import ConfigError, DiskFullError, JaxAtomError, OutputExistsError, StructureError
from jaxatom.files import exclusive_lock, require_free_space
from jaxatom.graph import float_dtype
from jaxatom.md import checkpoint
from jaxatom.md.checkpoint import CheckpointMismatch
from jaxatom.md.ensembles import Ensemble, ensemble_from_settings, json_values
from jaxatom.md.forces import ForceField, from_ensemble, from_potential
from jaxatom.md.gate import UncertaintyGate, uncertainty_gate
from jaxatom.md.integrators import Integrator, MDState
from jaxatom.md.neighbors import EdgeBuilder, bead_cells
from jaxatom.md.padding import ReplicaAtoms, is_heterogeneous, pad_atoms
from jaxatom.md.state import (
    FS,
    masses_of,
)
from jaxatom.md.trajectory import FORMAT as TRAJECTORY_FORMAT
from jaxatom.md.trajectory import TrajectoryWriter, flagged_structures
from jaxatom.memory import check_fits
from jaxatom.neighbors import check_structure, total_charge_of
from jaxatom.potential import Potential, PotentialEnsemble, load_model
from jaxatom.potential.ensemble import ensemble_members
from jaxatom.potential.field import field_array

__all__ = ["MDRun", "simulate", "default_stride", "CheckpointMismatch", "SimulationFailed", "SimulationBlewUp"]

#: Reruns of one chunk with growing neighbour-list capacity before the run is stopped.
MAX_RERUNS = 8


class SimulationFailed(JaxAtomError, RuntimeError):
    """The simulation cannot go on (e.g. its neighbour list keeps overflowing); what was written is kept."""


class SimulationBlewUp(SimulationFailed, FloatingPointError):
    """Positions or energies became NaN or infinite; the chunk was not written."""


@dataclass
class MDRun:
    """What :func:`simulate` returns.

    Attributes:
        state: the final :class:`MDState` (on the device).
        frames: per-frame arrays ``{name: [F, R, ...]}`` when no output file is written (the starting state as frame 0,
            then every ``stride`` steps: ``F = steps / stride + 1``), else ``None``.
        output: the HDF5 trajectory path, or ``None``.
        timing: ``compile_s`` (XLA compile of the chunk functions, and the starting frame), ``steps_per_s`` (MD
            steps of the whole system per second after compilation, writing frames and checkpoints included),
            ``ns_per_day``, ``wall_s``, ``reruns`` (chunks rerun after a neighbour-list overflow).
        settings: the run settings.
        stopped: ``[R]`` bool, the replicas whose uncertainty crossed the threshold under ``uncertainty_action``
            ``"stop"`` or ``"stop_replica"`` (the run ended early if any, or all, did), else ``None``.
    """

    state: MDState
    frames: dict | None
    output: Path | None
    timing: dict
    settings: dict = field(default_factory=dict)
    stopped: np.ndarray | None = None

    def flagged_structures(self) -> list[Atoms]:
        """The structures the uncertainty gate flagged, read from the trajectory
        (:func:`~jaxatom.md.trajectory.flagged_structures`)."""
        if self.output is None:
            raise ConfigError("flagged_structures reads the trajectory file; run simulate with output=...")
        return flagged_structures(self.output)


def _load_force_field(
    model,
    atoms: Atoms,
    neighbors: str,
    skin: float,
    observables: tuple[str, ...],
    field: tuple | None,
    variable_cell: bool = False,
) -> ForceField:
    if isinstance(model, ForceField):
        if variable_cell and not model.variable_cell:
            raise ConfigError("this ensemble changes the cell: the ForceField must take the cell and return stress "
                              "(ForceField(..., variable_cell=True))")  # fmt: skip
        return _checked_force_field(model, observables, field)
    model = _potential(model)
    model.check_elements(atoms.numbers)
    cell = np.asarray(atoms.cell[:])
    edges = EdgeBuilder.create(
        atoms.numbers,
        cell,
        atoms.pbc,
        model.cutoff,
        skin,
        neighbors,
        total_charge=total_charge_of(atoms),
        cell_margin=CELL_MARGIN if variable_cell else 1.0,
        dense=_dense_blocks_faster(model),
    )
    if isinstance(model, PotentialEnsemble):
        return from_ensemble(model, edges, observables, field, variable_cell)
    return from_potential(model, edges, observables, field, variable_cell)


def _potential(model) -> Potential | PotentialEnsemble:
    """The potential (or ensemble) of ``simulate``'s ``model`` argument, loaded from disk where needed (a directory
    of member model directories is an ensemble)."""
    if isinstance(model, list | tuple):
        model = model[0] if len(model) == 1 else PotentialEnsemble.from_potentials(model)
    if not isinstance(model, Potential | PotentialEnsemble):
        model = PotentialEnsemble.load(model) if ensemble_members(model) else load_model(model)
    return model


def _load_batch_force_field(
    model,
    structures: Sequence[Atoms],
    replicas: ReplicaAtoms,
    neighbors: str,
    skin: float,
    observables: tuple[str, ...],
    field: tuple | None,
    variable_cell: bool = False,
) -> ForceField:
    """The force field of replicas that are different structures (padded atoms ``replicas``, one edge builder)."""
    if isinstance(model, ForceField):
        raise ConfigError(
            "replicas of different structures need a model (a Potential or a model directory), not a ForceField: "
            "their edges and reference energies are made per replica; run each structure separately"
        )
    model = _potential(model)
    if any(not np.array_equal(s.pbc, structures[0].pbc) for s in structures):
        raise ConfigError("replicas of different structures must share their periodicity (all molecules, or all "
                          "periodic along the same directions)")  # fmt: skip
    model.check_elements(np.concatenate([s.numbers for s in structures]))
    margin = CELL_MARGIN if variable_cell else 1.0
    edges = EdgeBuilder.create_batch(
        replicas, structures[0].pbc, model.cutoff, skin, neighbors, margin, dense=_dense_blocks_faster(model)
    )
    if isinstance(model, PotentialEnsemble):
        return from_ensemble(model, edges, observables, field, variable_cell)
    return from_potential(model, edges, observables, field, variable_cell)


def _dense_blocks_faster(model: Potential | PotentialEnsemble) -> bool:
    """Whether the model's representation runs molecules faster on dense blocks than on all-pairs lists (its
    ``md_dense_blocks``, measured per architecture)."""
    return model.model.representation.md_dense_blocks


def _checked_force_field(force_field: ForceField, observables: tuple[str, ...], field: tuple | None) -> ForceField:
    """A user's :class:`ForceField` can record the entries it declares in ``units``; a field is a model's matter."""
    missing = [name for name in observables if name not in force_field.units]
    if missing:
        raise ConfigError(
            f"this ForceField does not declare observables {', '.join(missing)}; its apply must return them and its "
            f"units name them (declared: {', '.join(force_field.units) or 'none'})"
        )
    if field is not None:
        raise ConfigError("electric_field needs a model with a dipole head, not a ForceField; build the field in")
    return force_field


def _check_atoms(structures: Sequence[Atoms]) -> None:
    for atoms in structures:
        if not isinstance(atoms, Atoms):
            raise TypeError(f"expected ase.Atoms, got {type(atoms).__name__}")
        check_structure(atoms.positions, atoms.numbers, np.asarray(atoms.cell[:]), atoms.pbc)


def _check_batch_ensemble(ensemble: Ensemble) -> None:
    """Refuse an ensemble that cannot run replicas of different structures padded to one atom count."""
    if not ensemble.supports_padding:
        raise ConfigError(
            f"the {ensemble.name} ensemble cannot run replicas that are different structures (other atoms or cells) "
            "in one batch; nve, langevin and nose_hoover can. Run each structure separately"
        )


@dataclass(frozen=True)
class _Plan:
    """The static description of a run (what a checkpoint must agree with)."""

    ensemble: Ensemble
    timestep_fs: float
    n_replicas: int
    stride: int
    frames_per_chunk: int
    write_forces: bool
    seed: int
    n_atoms: int
    dtype: str
    observables: tuple[str, ...] = ()
    write_beads: bool = False
    electric_field: tuple[float, float, float] | None = None
    #: The atomic numbers of each replica when the replicas are different structures (``n_atoms`` is the largest).
    replica_species: tuple[tuple[int, ...], ...] | None = None
    #: The uncertainty gate (:mod:`jaxatom.md.gate`): action, threshold (eV/Å) and calibration scale, or None.
    uncertainty_action: str | None = None
    uncertainty_threshold: float | None = None
    uncertainty_scale: float | None = None

    @property
    def gate(self) -> UncertaintyGate | None:
        if self.uncertainty_action is None:
            return None
        return UncertaintyGate(self.uncertainty_action, self.uncertainty_threshold, self.uncertainty_scale)


#: Settings added after jaxatom 0.1, with the value that reproduces a run made before them.
_LATER_SETTINGS = {"observables": [], "write_beads": False, "electric_field": None}
#: Settings recorded only when used (a run without them records what it recorded before they existed).
_GATE_SETTINGS = ("uncertainty_action", "uncertainty_threshold", "uncertainty_scale")


def _momenta(ensemble: Ensemble, keys, masses, positions, structures, velocities: str, periodic: bool) -> jax.Array:
    """Initial momenta ``[R, N, 3]`` (``[R, P, N, 3]`` drawn for ring polymers) of replicas with ``keys [R, 2]``,
    ``masses [N]`` (amu) and ``positions [R, N, 3]`` (Å): the ``structures``' own or drawn."""
    if velocities == "atoms":
        given = jnp.asarray(np.stack([s.get_momenta() for s in structures]), positions.dtype)
        return jax.vmap(lambda p, x: ensemble.constrain_momenta(p, masses, x, periodic))(given, positions)
    if isinstance(ensemble.temperature_K, tuple):  # one temperature per replica: each drawn at its own
        draws = [_momenta(ensemble.replica(r), keys[r : r + 1], masses, positions[r : r + 1], structures, velocities,
                          periodic) for r in range(len(keys))]  # fmt: skip
        return jnp.concatenate(draws)
    draw = jax.vmap(lambda k, x: ensemble.initial_momenta(jax.random.fold_in(k, 1), masses, x, periodic))
    return draw(keys, positions)


def _padded_start(ensemble: Ensemble, keys, structures, velocities: str, dtype) -> tuple[jax.Array, jax.Array]:
    """Positions and momenta ``[R, N, 3]`` of replicas that are different structures, padded with zeros: each
    replica's momenta are those a run of its structure alone with the same key would start from."""
    periodic = bool(np.any(structures[0].pbc))
    momenta = []
    for r, atoms in enumerate(structures):
        masses = jnp.asarray(masses_of(atoms.numbers), dtype)
        positions = jnp.asarray(atoms.positions[None], dtype)
        momenta.append(np.asarray(_momenta(ensemble.replica(r), keys[r : r + 1], masses, positions, [atoms], velocities,
                                           periodic))[0])  # fmt: skip
    padded = pad_atoms([atoms.positions for atoms in structures])
    return jnp.asarray(padded, dtype), jnp.asarray(pad_atoms(momenta), dtype)


def _initial_state(plan, structures, masses, force_field, compute, integrator, velocities: str) -> MDState:
    dtype = jnp.dtype(plan.dtype)
    ensemble = plan.ensemble
    keys = jax.random.split(jax.random.PRNGKey(plan.seed), plan.n_replicas)
    beads = (ensemble.n_beads,) if ensemble.ring_polymer else ()
    periodic = bool(np.any(structures[0].pbc))
    if plan.replica_species is not None:
        positions, momenta = _padded_start(ensemble, keys, structures, velocities, dtype)
    else:
        positions = jnp.asarray(np.stack([s.positions for s in structures]), dtype)
        momenta = _momenta(ensemble, keys, masses, positions, structures, velocities, periodic)
    if beads and velocities == "atoms":
        momenta = jnp.broadcast_to(momenta[:, None], (plan.n_replicas, *beads, plan.n_atoms, 3))
    if beads:
        positions = jnp.broadcast_to(positions[:, None], momenta.shape)
    flat = np.asarray(positions).reshape(-1, plan.n_atoms, 3)
    cell = jnp.asarray(np.stack([s.cell[:] for s in structures]), dtype) if ensemble.variable_cell else None
    cells = None if cell is None else bead_cells(cell, len(flat))
    neighbors = force_field.edges.allocate(flat, cells=cells) if force_field.edges is not None else None
    results, neighbors = jax.jit(compute)(force_field.params, positions, neighbors, cell)
    extras = {k: v for k, v in results.items() if k not in ("energy", "forces")}
    state = MDState(
        positions=positions,
        momenta=momenta.astype(dtype),
        forces=results["forces"],
        potential_energy=results["energy"],
        extras=extras,
        key=keys,
        thermostat=None,
        heat=jnp.zeros(plan.n_replicas, dtype),
        neighbors=neighbors,
        overflow=jnp.zeros((), bool),
        step=jnp.zeros((), jnp.int32),
        cell=cell,
    )
    state = integrator.init(state)
    return state if plan.gate is None else state.replace(gate=plan.gate.initial(plan.n_replicas))


def _compute_fn(force_field: ForceField, n_atoms: int):
    edges = force_field.edges

    def compute(params, positions, neighbors, cell=None):
        lead = positions.shape[:-2]
        flat = positions.reshape(-1, n_atoms, 3)
        cells = None if cell is None else bead_cells(cell, len(flat))
        if edges is not None:
            neighbors = edges.update(flat, neighbors, cells)
        axes = 0 if neighbors is not None else None
        if cell is None:
            out = jax.vmap(force_field.apply, in_axes=(None, 0, axes))(params, flat, neighbors)
        else:
            out = jax.vmap(force_field.apply, in_axes=(None, 0, axes, 0))(params, flat, neighbors, cells)
        return jax.tree.map(lambda x: x.reshape(lead + x.shape[1:]), out), neighbors

    return compute


def _replica_compute_fn(force_field: ForceField, replicas: ReplicaAtoms, dtype):
    """The ``compute`` of replicas that are different structures: each replica's force call gets its own padded
    atoms (species, mask, cell, charge) and, when the cell changes, its current cell."""
    atoms = jax.tree.map(jnp.asarray, replicas)
    atoms = atoms.replace(cell=atoms.cell.astype(dtype), total_charge=atoms.total_charge.astype(dtype))

    def compute(params, positions, neighbors, cell=None):
        apply = jax.vmap(force_field.apply, in_axes=(None, 0, None, None if cell is None else 0, 0))
        return apply(params, positions, None, cell, atoms), neighbors

    return compute


def _observe_fn(plan: _Plan, integrator: Integrator, masses: jax.Array, dof: int):
    ensemble = plan.ensemble

    def observe(state: MDState) -> dict:
        frame = ensemble.observe(state, masses, integrator, dof)
        if plan.write_beads:
            frame.update({f"{name}_beads": state.extras[name] for name in plan.observables})
        if plan.write_forces:
            frame["forces"] = ensemble.frame_forces(state)
        return frame

    return observe


def _chunk_fn(integrator: Integrator, compute, observe, stride: int, n_frames: int, gate: UncertaintyGate | None,
              placement: tuple | None = None):  # fmt: skip
    """The jitted chunk ``(params, state) -> (state, frames)``: ``n_frames`` frames of ``stride`` steps, with the
    uncertainty ``gate`` applied after every step and its interval record added to every frame. ``placement``
    ``(mesh, n_replicas, params, state)``: the replicas are sharded over the mesh, and the chunk returns its state
    and frames sharded alike (so the next chunk takes them as they are)."""

    def chunk(params, state: MDState):
        def step(_, s):
            return integrator.step(s, lambda x, n, cell=None: compute(params, x, n, cell))

        def gated_step(_, carry):
            s, track = carry
            return gate.step(s, step(_, s), track)

        def frame(s, _):
            if gate is None:
                s = jax.lax.fori_loop(0, stride, step, s)
                return s, observe(s)
            s, track = jax.lax.fori_loop(0, stride, gated_step, (s, gate.start(s)))
            return s, {**observe(s), **gate.frame(track)}

        return jax.lax.scan(frame, state.replace(overflow=jnp.zeros((), bool)), None, length=n_frames)

    if placement is None:
        return jax.jit(chunk)
    mesh, n_replicas, params, state = placement
    new_state, frames = jax.eval_shape(chunk, params, state)
    state_shardings = jax.tree.map(lambda x: distributed.leading_sharding(x.shape, mesh, n_replicas), new_state)
    frame_shardings = jax.tree.map(lambda x: distributed.leading_sharding(x.shape, mesh, n_replicas, 1), frames)
    return jax.jit(chunk, out_shardings=(state_shardings, frame_shardings))


def _settings_dict(plan: _Plan) -> dict:
    """The plan as flat JSON values (the ensemble's name and settings first), as trajectories and checkpoints store
    it."""
    values = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan) if f.name != "ensemble"}
    if plan.replica_species is None:  # replicas of one structure: recorded as before heterogeneous batches existed
        del values["replica_species"]
    else:
        values["replica_species"] = [list(species) for species in plan.replica_species]
    if plan.uncertainty_action is None:  # no gate: recorded as before the gate existed
        for name in _GATE_SETTINGS:
            del values[name]
    return {**plan.ensemble.settings(), **json_values(values)}


def _comparable_settings(settings: dict) -> dict:
    """Settings a checkpoint recorded, in today's form: settings added later at the values that reproduce the old
    run, and the flat ensemble settings of jaxatom 0.1 (every ensemble's, e.g. ``friction_per_fs`` for NVE) reduced
    to those of its ensemble."""
    settings = {**_LATER_SETTINGS, **settings}
    plan_keys = {f.name for f in dataclasses.fields(_Plan)} - {"ensemble"}
    ensemble_values = {k: v for k, v in settings.items() if k not in plan_keys and k != "ensemble"}
    ensemble = ensemble_from_settings(settings["ensemble"], ensemble_values, strict=False)
    return {**ensemble.settings(), **{k: v for k, v in settings.items() if k in plan_keys}}


def _check_arguments(velocities: str, counts: dict[str, int | None], timestep_fs: float) -> None:
    """Refuse settings that cannot work, naming the setting, before anything is loaded or compiled (``None``: a
    default still to be chosen)."""
    for name, value in counts.items():
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise ConfigError(f"{name} must be a positive integer, got {value}")
    if counts["stride"] is not None and counts["steps"] % counts["stride"]:
        raise ConfigError(f"steps ({counts['steps']}) must be a multiple of stride ({counts['stride']})")
    if not timestep_fs > 0 or not math.isfinite(timestep_fs):
        raise ConfigError(f"timestep_fs must be positive, got {timestep_fs}")
    if velocities not in ("maxwell_boltzmann", "atoms"):
        raise ConfigError(f"velocities must be 'maxwell_boltzmann' or 'atoms', got {velocities!r}")


#: Largest time between frames (fs) of the default stride: its Nyquist limit, 16678 cm⁻¹, keeps every vibration.
DEFAULT_FRAME_INTERVAL_FS = 1.0
#: MD steps per compiled chunk that the default ``frames_per_chunk`` aims at (the host writes and checkpoints between).
DEFAULT_CHUNK_STEPS = 1000
#: Wavenumber (cm⁻¹) that runs recording observables for spectra should resolve (O–H stretches reach ~3700 cm⁻¹).
SPECTRUM_CM1 = 4000.0
#: Observables whose time series are spectra (IR, Raman).
SPECTRAL_OBSERVABLES = ("dipole_moment", "polarizability")


def default_stride(steps: int, timestep_fs: float) -> int:
    """The default stride: the largest that divides ``steps`` and keeps frames at most
    :data:`DEFAULT_FRAME_INTERVAL_FS` apart (2 at 0.5 fs; 1 for time steps of 1 fs and more)."""
    limit = max(1, math.floor(DEFAULT_FRAME_INTERVAL_FS / timestep_fs + 1e-9))
    return max(s for s in range(1, limit + 1) if steps % s == 0)


def default_frames_per_chunk(stride: int) -> int:
    """The default frames per chunk: :data:`DEFAULT_CHUNK_STEPS` steps per chunk (at least one frame)."""
    return max(1, DEFAULT_CHUNK_STEPS // stride)


def _warn_spectral_stride(observables: Sequence[str], stride: int, timestep_fs: float) -> None:
    """Warn when observables recorded for spectra are stored too far apart to resolve X–H stretches."""
    from jaxatom.spectra.core import C_CM_PER_FS, SpectrumWarning

    spectral = [name for name in observables if name in SPECTRAL_OBSERVABLES]
    interval = stride * timestep_fs
    nyquist = 1.0 / (2.0 * interval * C_CM_PER_FS)
    if spectral and nyquist < SPECTRUM_CM1:
        largest = max(1, math.floor(1.0 / (2.0 * SPECTRUM_CM1 * C_CM_PER_FS) / timestep_fs))
        warnings.warn(
            f"frames {interval:g} fs apart (stride {stride} × {timestep_fs:g} fs) resolve wavenumbers only up to "
            f"{nyquist:.0f} cm⁻¹: spectra of the recorded {' and '.join(spectral)} lose the O–H, N–H and C–H "
            f"stretches (2800–3700 cm⁻¹) or alias them to lower wavenumbers. Use stride ≤ {largest} (Nyquist "
            f"≥ {SPECTRUM_CM1:.0f} cm⁻¹), or leave stride at its default (frames ≤ {DEFAULT_FRAME_INTERVAL_FS:g} fs "
            "apart)",
            SpectrumWarning,
            stacklevel=3,
        )


#: Linear compression of the cell (relative to the start) that the edges of constant-pressure runs are built for.
CELL_MARGIN = 0.85


def _check_temperatures(ensemble: Ensemble, n_replicas: int) -> None:
    """Refuse per-replica temperatures whose count is not the number of replicas."""
    if isinstance(ensemble.temperature_K, tuple) and len(ensemble.temperature_K) != n_replicas:
        raise ConfigError(
            f"temperature_K lists {len(ensemble.temperature_K)} temperatures for {n_replicas} replicas; give one per "
            "replica (or set n_replicas to their number)"
        )


def _check_ensemble_fits(ensemble: Ensemble, atoms: Atoms) -> None:
    """Refuse a cell-changing ensemble for a structure without a fully periodic cell, or with ring polymers."""
    if ensemble.variable_cell and not np.all(atoms.pbc):
        raise StructureError(
            f"the {ensemble.name} ensemble changes the cell of a periodic structure; this one has pbc="
            f"{np.asarray(atoms.pbc).tolist()} (set atoms.pbc = True and a cell, or use an NVT ensemble)"
        )


def _ensemble(ensemble: Ensemble | str, settings: dict) -> Ensemble:
    """The ensemble object of ``simulate(ensemble=..., **settings)``."""
    if isinstance(ensemble, Ensemble):
        if settings:
            raise ConfigError(
                f"ensemble settings {', '.join(sorted(settings))} go into the ensemble object "
                f"(e.g. {type(ensemble).__name__}(...)), not into simulate"
            )
        return ensemble
    if not isinstance(ensemble, str):
        raise ConfigError(f"ensemble must be an Ensemble (e.g. NVE(), Langevin(...)) or a name, got {ensemble!r}")
    return ensemble_from_settings(ensemble, settings)


def simulate(
    model,
    atoms: Atoms | Sequence[Atoms],
    steps: int,
    timestep_fs: float = 0.5,
    ensemble: Ensemble | str = "nve",
    *,
    n_replicas: int | None = None,
    stride: int | None = None,
    frames_per_chunk: int | None = None,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    seed: int = 0,
    velocities: str = "maxwell_boltzmann",
    neighbors: str = "auto",
    skin: float = 1.0,
    write_forces: bool = False,
    observables: Sequence[str] = (),
    write_beads: bool = False,
    electric_field: Sequence[float] | None = None,
    uncertainty_threshold: float | str | None = None,
    uncertainty_action: str | None = None,
    shard_replicas: bool | None = None,
    progress: bool = True,
    **ensemble_settings,
) -> MDRun:
    """Run molecular dynamics on the device in compiled chunks.

    Args:
        model: a :class:`~jaxatom.Potential`, a model directory/zip, a list of them or a
            :class:`~jaxatom.potential.PotentialEnsemble` (mean forces drive the dynamics, the spread is written), or
            a :class:`~jaxatom.md.forces.ForceField`.
        atoms: the starting structure, or one per replica (may differ in atoms and cells). Replicas that are
            different structures run in one compiled batch padded to the largest atom count (``nve``,
            ``langevin``, ``nose_hoover``, ``npt_scr``; all-pairs or lattice-image edges; not with a ForceField), each
            with its own degrees of freedom, thermostat and random stream; their trajectory holds ``n_atoms [R]``
            and per-replica ``species``, ``masses`` and ``cell`` (see :func:`~jaxatom.md.read_trajectory`).
        steps: number of MD steps (a multiple of ``stride``). The trajectory holds the starting state (time 0) and a
            frame every ``stride`` steps after it: ``steps / stride + 1`` frames.
        timestep_fs: time step (fs).
        ensemble: an :class:`~jaxatom.md.ensembles.Ensemble` — ``NVE(temperature_K, remove_rotation)``,
            ``Langevin(temperature_K, friction_per_fs)``, ``NoseHoover(temperature_K, tau_fs)``,
            ``RPMD(temperature_K, n_beads, thermostat, centroid_tau_fs, pile_lambda)`` or one of your own — or its
            name (``"nve"``, ``"langevin"``, ``"nose_hoover"``, ``"rpmd"``) with its settings as further keywords
            (``temperature_K=``, ``friction_per_fs=``, ``tau_fs=``, ``n_beads=``, ``rpmd_thermostat=``, ...; a
            setting the ensemble does not have is refused). ``langevin`` also takes ``temperature_K`` as a list of one
            temperature per replica (a temperature ladder).
        n_replicas: independent copies run at once (own velocities and random streams); default: one per structure.
        stride: steps between written frames; default: the largest that divides ``steps`` with frames at most 1 fs
            apart (2 at 0.5 fs), so spectra resolve every vibration (Nyquist ≥ 16678 cm⁻¹). A stride whose frames
            are too far apart for the O–H stretch (Nyquist below 4000 cm⁻¹, more than 4.2 fs) warns
            (:class:`~jaxatom.spectra.SpectrumWarning`) when ``observables`` records a dipole or polarizability.
        frames_per_chunk: frames per compiled chunk (the host checks, writes and checkpoints between chunks);
            default: 1000 steps per chunk.
        output: HDF5 trajectory path; a checkpoint ``<output>.ckpt.npz`` is kept beside it. If both exist, the run
            continues from the checkpoint, also after ``kill -9`` (``overwrite=True`` starts afresh); a checkpoint
            of other settings or another model raises :class:`CheckpointMismatch`, an output that is not this run's
            :class:`~jaxatom.errors.OutputExistsError`, a second live writer
            :class:`~jaxatom.errors.RunInUseError`, too little disk space :class:`~jaxatom.errors.DiskFullError`
            (before the run, or before the chunk that would not fit). ``None`` keeps frames in memory.
        seed: random seed (velocities and thermostat noise; replica ``r`` uses key ``split(seed)[r]``).
        velocities: ``"maxwell_boltzmann"`` or ``"atoms"`` (the structures' own momenta, with the total momentum
            removed for ensembles that conserve it, and the rotation where the ensemble removes it).
        neighbors: ``"auto"`` (dense blocks for molecules up to 64 atoms where the model runs faster on them,
            i.e. SchNet; all-pairs edges up to 256, else a jax-md list; lattice images for narrow cells, slabs and
            wires), ``"dense"``, ``"all_pairs"``, ``"list"`` or
            ``"images"``.
        skin: neighbour-list skin (Å).
        write_forces: also write forces.
        observables: further model outputs to write per frame with their units, e.g. ``["dipole_moment",
            "polarizability"]`` for IR and Raman spectra (:mod:`jaxatom.spectra`) or ``["charges"]``; computed in
            the same model evaluation as the forces (one representation pass per step feeds every head). Ensembles
            write the members' mean; ring polymers the bead average (the estimator of RPMD/TRPMD spectra).
        write_beads: for ``ensemble="rpmd"``, also write every bead's observables as ``<name>_beads`` ``[F, R, P,
            ...]``.
        electric_field: a uniform electric field ``(Ex, Ey, Ez)`` in V/Å acting on a model with a dipole head (and
            optionally a polarizability head): the energy gains ``−μ·F − ½ F·α·F / k_e`` and the forces its
            gradient (:mod:`jaxatom.potential.field`).
        uncertainty_threshold: for an ensemble model, the threshold (eV/Å) on each replica's calibrated largest
            per-atom force uncertainty ``s_F × forces_std_max`` (``s_F`` of the ensemble's calibration, 1 if it has
            none); ``None`` or ``"calibrated"``: the calibration's ``forces_threshold``.
        uncertainty_action: ``None`` (no gate), ``"flag"`` (record), ``"stop_replica"`` (freeze a replica at the
            step it crosses the threshold; the run ends when all have) or ``"stop"`` (end the run after the chunk in
            which any replica crossed). Checked after every step inside the compiled chunk; frames gain
            ``uncertainty``, ``flagged``, ``candidate_positions``, ``candidate_step`` (and ``candidate_cell``), see
            :mod:`jaxatom.md.gate` and :meth:`MDRun.flagged_structures`.
        shard_replicas: split the replicas (with their beads) over every device of every process, each device
            computing its block of them; ``None``: when several processes run (:mod:`jaxatom.distributed`), as they
            must then. ``n_replicas`` must be a multiple of the number of devices. Every process calls ``simulate``
            with the same arguments; process 0 alone writes the trajectory and the checkpoint (``output`` on a file
            system it sees) and every process gets the same frames and the sharded final state. See
            ``docs/distributed.md``.
        progress: show a progress bar with steps/s and ns/day.
        **ensemble_settings: the settings of a named ``ensemble`` (see above).
    """
    structures = [atoms] if isinstance(atoms, Atoms) else list(atoms)
    if not structures:
        raise ConfigError("simulate needs a starting structure")
    _check_atoms(structures)
    n_replicas = len(structures) if n_replicas is None else int(n_replicas)
    if len(structures) not in (1, n_replicas):
        raise ConfigError(f"got {len(structures)} structures for {n_replicas} replicas; give one or one per replica")
    structures = structures * n_replicas if len(structures) == 1 else structures
    counts = dict(steps=steps, stride=stride, frames_per_chunk=frames_per_chunk, n_replicas=n_replicas)
    _check_arguments(velocities, counts, timestep_fs)
    stride = default_stride(int(steps), timestep_fs) if stride is None else int(stride)
    frames_per_chunk = default_frames_per_chunk(stride) if frames_per_chunk is None else int(frames_per_chunk)
    ensemble = _ensemble(ensemble, ensemble_settings)
    _check_temperatures(ensemble, n_replicas)
    observables = tuple(dict.fromkeys(observables))
    _warn_spectral_stride(observables, stride, timestep_fs)
    field = None if electric_field is None else tuple(float(x) for x in field_array(electric_field))
    _check_ensemble_fits(ensemble, structures[0])
    mesh = _replica_mesh(n_replicas, shard_replicas)
    model = model if isinstance(model, ForceField) else _potential(model)
    gate = uncertainty_gate(model, uncertainty_threshold, uncertainty_action)
    replicas = ReplicaAtoms.from_structures(structures) if is_heterogeneous(structures) else None
    if replicas is None:
        force_field = _load_force_field(model, structures[0], neighbors, skin, observables, field,
                                        ensemble.variable_cell)  # fmt: skip
    else:
        _check_batch_ensemble(ensemble)
        force_field = _load_batch_force_field(model, structures, replicas, neighbors, skin, observables, field,
                                              ensemble.variable_cell)  # fmt: skip
    plan = _Plan(
        ensemble=ensemble,
        timestep_fs=float(timestep_fs),
        n_replicas=n_replicas,
        stride=int(stride),
        frames_per_chunk=int(frames_per_chunk),
        write_forces=bool(write_forces),
        seed=int(seed),
        n_atoms=max(len(s) for s in structures),
        dtype=float_dtype().name,
        observables=observables,
        write_beads=bool(write_beads) and ensemble.ring_polymer,
        electric_field=field,
        replica_species=None if replicas is None else tuple(tuple(int(z) for z in s.numbers) for s in structures),
        uncertainty_action=None if gate is None else gate.action,
        uncertainty_threshold=None if gate is None else gate.threshold,
        uncertainty_scale=None if gate is None else gate.scale,
    )
    dtype = jnp.dtype(plan.dtype)
    periodic = bool(np.any(structures[0].pbc))
    if replicas is None:
        masses = jnp.asarray(masses_of(structures[0].numbers), dtype)
        dof = ensemble.degrees_of_freedom(plan.n_atoms, periodic)
        integrator = ensemble.integrator(masses, plan.timestep_fs * FS, dof)
        compute = _compute_fn(force_field, plan.n_atoms)
    else:
        masses = jnp.asarray(replicas.masses(), dtype)
        dof = np.asarray([ensemble.degrees_of_freedom(int(n), periodic) for n in replicas.n_atoms])
        integrator = ensemble.padded_integrator(masses, plan.timestep_fs * FS, dof, jnp.asarray(replicas.mask))
        compute = _replica_compute_fn(force_field, replicas, dtype)
    observe = _observe_fn(plan, integrator, masses, dof)
    params = jax.device_put(force_field.params) if mesh is None else distributed.replicated(force_field.params, mesh)

    setup = _Setup(plan, structures, masses, force_field, integrator, dof, compute, observe, params, velocities, mesh)
    output = None if output is None else Path(output)
    with contextlib.ExitStack() as stack:
        if output is not None and setup.writes:
            stack.enter_context(exclusive_lock(output, f"the MD trajectory {output}"))
        return _drive(setup, steps // stride, output, overwrite, progress and setup.writes)


def _replica_mesh(n_replicas: int, shard_replicas: bool | None):
    """The mesh ``"replicas"`` over every device of every process that the replicas are split over, or None (one
    device). Several processes need it; ``n_replicas`` must split evenly over the devices."""
    n_processes, n_devices = distributed.process_count(), jax.device_count()
    if shard_replicas is None:
        shard_replicas = n_processes > 1
    if not shard_replicas:
        if n_processes > 1:
            raise ConfigError(f"{n_processes} processes run MD together only with the replicas split over them: leave "
                              "shard_replicas at None (or True), or run one process")  # fmt: skip
        return None
    if n_replicas % n_devices:
        where = f"{n_devices} devices" + (f" in {n_processes} processes" if n_processes > 1 else "")
        raise ConfigError(
            f"{n_replicas} replicas do not split evenly over the {where}; run a multiple of {n_devices} replicas "
            "(n_replicas)"
        )
    return distributed.global_mesh("replicas")


@dataclass(frozen=True)
class _Setup:
    """Everything a run needs besides its output: the plan and the compiled-to-be functions."""

    plan: _Plan
    structures: list[Atoms]
    masses: jax.Array
    force_field: ForceField
    integrator: Integrator
    dof: int | np.ndarray
    compute: Any
    observe: Any
    params: Any
    velocities: str
    #: The mesh the replicas are split over (``simulate(shard_replicas=...)``), or None.
    mesh: Any = None

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files (process 0, or the only one)."""
        return self.mesh is None or distributed.is_main_process()

    def placed(self, state: MDState) -> MDState:
        """``state`` with its replicas split over the mesh (as it is without one)."""
        return state if self.mesh is None else distributed.shard_leading(state, self.mesh, self.plan.n_replicas)

    def host(self, tree: Any) -> Any:
        """``tree`` as numpy arrays on every process (all-gathered across processes: every process must call it)."""
        return distributed.gather(tree) if self.mesh is not None else jax.device_get(tree)

    @functools.cached_property
    def model_fingerprint(self) -> str:
        return checkpoint.model_fingerprint(self.force_field.params)

    @functools.cached_property
    def legacy_fingerprint(self) -> str:
        """The fingerprint jaxatom 0.1 gave the same model (its energy head's parameters were named ``head``)."""
        return checkpoint.model_fingerprint(self.force_field.params, {"['energy']": "['head']"})

    @functools.cached_property
    def settings(self) -> dict:
        """The run's settings as recorded in trajectories and checkpoints."""
        return _settings_dict(self.plan)

    @staticmethod
    def comparable_settings(settings: dict) -> dict:
        """A checkpoint's recorded settings in today's form (see :func:`_comparable_settings`)."""
        return _comparable_settings(settings)

    def initial_state(self) -> MDState:
        return _initial_state(
            self.plan, self.structures, self.masses, self.force_field, self.compute, self.integrator, self.velocities
        )


def _drive(setup: _Setup, total_frames: int, output: Path | None, overwrite: bool, progress: bool) -> MDRun:
    """Write the starting frame, then run chunks until ``total_frames`` strided frames exist, writing and
    checkpointing each (or collecting them in memory). A trajectory of format version 1 (no starting frame) is
    continued in its own layout."""
    plan = setup.plan
    if output is not None and setup.mesh is not None:
        state, writer, written, initial = _open_shared_output(setup, output, overwrite)
    elif output is not None:
        state, writer, written = _open_output(setup, output, overwrite)
        initial = int(writer.initial_frame)
    else:
        state, writer, written, initial = setup.initial_state(), None, 0, 1
    state = setup.placed(state)
    done_frames = max(written - initial, 0)  # strided frames, those after the starting frame
    compiled: dict[int, Any] = {}
    timing = {"compile_s": 0.0, "run_s": 0.0, "reruns": 0}
    collected: list[dict] = []
    first_frame = done_frames
    bar = _progress_bar(plan.stride * total_frames, done_frames * plan.stride, progress)
    start = time.perf_counter()
    try:
        needs_start = initial and written == 0
        if writer is not None:
            _require_space(writer, output, total_frames - done_frames + needs_start, int(state.step))
        if needs_start:
            _start_frame(setup, state, timing, writer, output, collected)
        while done_frames < total_frames and not _halted(setup, state):
            n_frames = min(plan.frames_per_chunk - done_frames % plan.frames_per_chunk, total_frames - done_frames)
            tic, compile_before = time.perf_counter(), timing["compile_s"]
            if writer is not None:
                _reserve(writer, output, n_frames, int(state.step))
            state, frames = _run_chunk(compiled, timing, setup, state, n_frames)
            frames = _host_frames(frames, state, setup.force_field, plan, n_frames)
            _check_finite(frames, done_frames * plan.stride, output)
            _check_cell(state, setup, done_frames * plan.stride, output)
            if writer is not None:
                kept = int(frames["step"][0]) - plan.stride
                _write(writer, output, frames, _saved(setup, state), initial + done_frames + n_frames, setup, kept)
            elif output is None:
                collected.append(frames)
            else:  # another process writes: it gathers the state for its checkpoint with this one
                _saved(setup, state)
            done_frames += n_frames
            timing["run_s"] += time.perf_counter() - tic - (timing["compile_s"] - compile_before)
            _advance(bar, n_frames * plan.stride, timing, plan.timestep_fs)
    finally:
        if writer is not None:
            writer.close()
        if bar is not None:
            bar.close()
    timing["wall_s"] = time.perf_counter() - start
    run_steps = (done_frames - first_frame) * plan.stride
    timing["steps_per_s"] = run_steps / timing["run_s"] if timing["run_s"] > 0 else float("nan")
    timing["ns_per_day"] = timing["steps_per_s"] * plan.timestep_fs * 86400e-6
    frames = None
    if writer is None:
        frames = {k: np.concatenate([c[k] for c in collected]) for k in collected[0]} if collected else {}
    stopped = None if state.gate is None else np.asarray(setup.host(state.gate["stopped"]))
    return MDRun(state=state, frames=frames, output=output, timing=timing, settings=_settings_dict(plan),
                 stopped=stopped)  # fmt: skip


def _halted(setup: _Setup, state: MDState) -> bool:
    """Whether the uncertainty gate ends the run here (its record gathered to every process)."""
    gate = setup.plan.gate
    return gate is not None and gate.halted(state.replace(gate=setup.host(state.gate)))


def _start_frame(setup: _Setup, state: MDState, timing: dict, writer, output: Path | None, collected: list) -> None:
    """Record the starting state as frame 0 (written and checkpointed, or collected); its one-off compilation and
    evaluation count as ``compile_s``, not as MD speed."""
    tic = time.perf_counter()
    frame = _initial_frame(setup, state)
    timing["compile_s"] += time.perf_counter() - tic
    if writer is not None:
        _write(writer, output, frame, _saved(setup, state), 1, setup, int(state.step))
    elif output is None:
        collected.append(frame)
    else:
        _saved(setup, state)


def _saved(setup: _Setup, state: MDState) -> MDState:
    """The state a checkpoint saves: as it is in one process, gathered to the host across processes (every
    process calls this for every checkpoint, since gathering is collective)."""
    return state if setup.mesh is None else setup.host(state)


def _initial_frame(setup: _Setup, state: MDState) -> dict:
    """Frame 0 ``{name: [1, R, ...]}``: the starting state observed as every later frame is, with the uncertainty
    gate's record of it (:meth:`~jaxatom.md.gate.UncertaintyGate.initial_frame`)."""
    plan = setup.plan

    def observe(s: MDState) -> dict:
        frame = setup.observe(s)
        if plan.gate is not None:
            frame.update(plan.gate.initial_frame(s))
        return jax.tree.map(lambda x: x[None], frame)

    frame = setup.host(jax.jit(observe)(state))
    return _host_frames(frame, state, setup.force_field, plan, 1)


def _advance(bar, steps: int, timing: dict, timestep_fs: float) -> None:
    if bar is not None:
        bar.update(steps)
        rate = bar.n / max(timing["run_s"], 1e-9)
        bar.set_postfix_str(f"{rate:.0f} steps/s, {rate * timestep_fs * 86400e-6:.3g} ns/day")


# ---- output: open, resume, write ---------------------------------------------------------------------------------
def _checkpoint_path(output: Path) -> Path:
    return output.with_name(output.name + ".ckpt.npz")


def _open_output(setup: _Setup, output: Path, overwrite: bool) -> tuple[MDState, TrajectoryWriter, int]:
    """Continue the run ``output`` holds (from its checkpoint) or start a new trajectory with a checkpoint at 0."""
    checkpoint_file = _checkpoint_path(output)
    if output.exists() and not overwrite:
        if checkpoint_file.exists():
            state, done_frames = checkpoint.load_checkpoint(checkpoint_file, setup.initial_state(), setup)
            return state, TrajectoryWriter.resume(output, done_frames), done_frames
        if _written_frames(output) != 0:
            raise OutputExistsError(
                f"{output} exists without a checkpoint to continue from; choose another output or pass overwrite=True"
            )  # a file with no frames and no checkpoint is a run killed before it started: start it again
    checkpoint_file.unlink(missing_ok=True)  # never pair a new trajectory with an old checkpoint, even after a kill
    output.parent.mkdir(parents=True, exist_ok=True)
    state = setup.initial_state()
    plan = setup.plan
    frame_shapes = {k: (v.shape, v.dtype) for k, v in jax.eval_shape(setup.observe, state).items()}
    if plan.gate is not None:
        gate_frame = jax.eval_shape(lambda s: plan.gate.frame(plan.gate.start(s)), state)
        frame_shapes.update({k: (v.shape, v.dtype) for k, v in gate_frame.items()})
    frame_shapes.update(time=((), np.float64), step=((), np.int64))
    constants = _constants(setup)
    if "cell" in frame_shapes:  # the ensemble changes the cell: written per frame instead
        del constants["cell"]
    attributes = {
        **_settings_dict(plan),
        "degrees_of_freedom": np.asarray(setup.dof).tolist(),
        "energy_offset_eV": np.asarray(setup.force_field.energy_offset).tolist(),
    }
    units = {**plan.ensemble.units, **setup.force_field.units, **(plan.gate.units if plan.gate else {})}
    units.update({f"{name}_beads": units[name] for name in plan.observables if plan.write_beads})
    per_atom = ()
    if plan.replica_species is not None:
        per_atom = ("positions", "velocities", "forces", "candidate_positions", *setup.force_field.per_atom)
    writer = TrajectoryWriter.create(output, constants, attributes, frame_shapes, units, per_atom)
    checkpoint.save_checkpoint(checkpoint_file, state, 0, setup)
    return state, writer, 0


def _open_shared_output(setup: _Setup, output: Path, overwrite: bool):
    """:func:`_open_output` for replicas split over several processes: process 0 opens (or continues) the
    trajectory and checkpoint and sends the state to the others, which write nothing. Returns ``(state, writer,
    written, initial)``, ``writer`` None except on process 0."""
    state, writer, counts = setup.initial_state(), None, np.zeros(2, np.int64)
    if setup.writes:
        try:
            state, writer, written = _open_output(setup, output, overwrite)
            counts = np.array([written, int(writer.initial_frame)], np.int64)
        except BaseException:  # tell the others, which would otherwise wait for the state
            distributed.broadcast({"failed": np.ones((), bool), "capacity": _capacities(state)})
            raise
    shared = distributed.broadcast({"failed": np.zeros((), bool), "capacity": _capacities(state)})
    if bool(shared["failed"]):
        raise SimulationFailed(f"process 0 could not open {output} (see its error); nothing was written here")
    if not setup.writes and not np.array_equal(shared["capacity"], _capacities(state)):
        # the checkpoint's neighbour lists grew: receive them into lists of its capacity
        edges, (capacity, cell_capacity) = setup.force_field.edges, (int(x) for x in shared["capacity"])
        flat = np.asarray(state.positions).reshape(-1, setup.plan.n_atoms, 3)
        cells = None if state.cell is None else bead_cells(state.cell, len(flat))
        state = state.replace(neighbors=edges.allocate(flat, capacity, max(cell_capacity, 0), cells))
    leaves, treedef = jax.tree.flatten(distributed.gather(state))
    shared = distributed.broadcast({"counts": counts, "leaves": leaves})
    state = jax.tree.unflatten(treedef, [jnp.asarray(x) for x in shared["leaves"]])
    written, initial = (int(x) for x in shared["counts"])
    return state, writer, written, initial


def _capacities(state: MDState) -> np.ndarray:
    """The edge and cell-list capacities of the state's neighbour lists (-1: none)."""
    neighbors = state.neighbors
    if neighbors is None:
        return np.full(2, -1, np.int64)
    cells = -1 if neighbors.cell_list_capacity is None else neighbors.cell_list_capacity
    return np.array([neighbors.max_occupancy, cells], np.int64)


def _constants(setup: _Setup) -> dict[str, np.ndarray]:
    """The constant datasets of a trajectory: ``species``, ``masses`` (amu), ``cell`` (Å) and ``pbc`` of the
    structure, or for replicas that are different structures ``species``/``masses`` ``[R, N]`` (0 for padding
    atoms), ``cell [R, 3, 3]`` and ``n_atoms [R]``."""
    first = setup.structures[0]
    if setup.plan.replica_species is None:
        return {
            "species": np.asarray(first.numbers),
            "masses": np.asarray(setup.masses, np.float64),
            "cell": np.asarray(first.cell[:]),
            "pbc": np.asarray(first.pbc),
        }
    replicas = setup.force_field.edges.replicas
    return {
        "species": np.asarray(replicas.species),
        "masses": np.where(replicas.mask, np.asarray(setup.masses, np.float64), 0.0),
        "n_atoms": replicas.n_atoms,
        "cell": np.asarray(replicas.cell),
        "pbc": np.asarray(first.pbc),
    }


def _written_frames(output: Path) -> int | None:
    """Frames in a jaxatom trajectory (readable even if its writer was killed), or ``None`` for any other file."""
    try:
        with h5py.File(output, "r", libver="latest", swmr=True) as file:
            if file.attrs.get("format") != TRAJECTORY_FORMAT:
                return None
            return int(file["time"].shape[0])
    except (OSError, KeyError):
        return None


def _kept_until(output: Path, step: int) -> str:
    return (
        f"{output} and its checkpoint keep the run up to step {step}; free space and rerun the same command to continue"
    )


def _require_space(writer: TrajectoryWriter, output: Path, frames: int, step: int) -> None:
    """Refuse to start if the rest of the run would not fit on the disk (checked again before every chunk)."""
    needed = writer.append_bytes(frames) + 2 * _checkpoint_path(output).stat().st_size
    try:
        require_free_space(output, needed, f"the {frames} frames still to write to {output}")
    except DiskFullError as err:
        raise DiskFullError(
            f"{err}; {_kept_until(output, step)} (or raise stride, set write_forces=False, or write elsewhere)"
        ) from None


def _reserve(writer: TrajectoryWriter, output: Path, frames: int, step: int) -> None:
    """Allocate the next chunk's disk blocks and check room for its checkpoint before computing it."""
    try:
        writer.reserve(frames)
        require_free_space(output, 2 * _checkpoint_path(output).stat().st_size, f"the checkpoint of {output}")
    except DiskFullError as err:
        raise DiskFullError(f"{err}; {_kept_until(output, step)}") from None


def _write(writer: TrajectoryWriter, output: Path, frames: dict, state: MDState, n_frames: int, setup,
           kept_step: int) -> None:  # fmt: skip
    """Append frames, then checkpoint the state after them with the trajectory's frame count ``n_frames`` (a kill in
    between is undone by the next resume); ``kept_step`` is the step the file keeps if the disk is full."""
    try:
        writer.append(frames)
        checkpoint.save_checkpoint(_checkpoint_path(output), state, n_frames, setup)
    except DiskFullError as err:
        raise DiskFullError(f"{err}; {_kept_until(output, kept_step)}") from None


def _run_chunk(compiled: dict, timing: dict, setup: _Setup, state: MDState, n_frames: int):
    """Run one chunk; on a neighbour-list overflow grow the capacity and rerun it from the same state and keys."""
    plan, params = setup.plan, setup.params
    for _attempt in range(MAX_RERUNS + 1):
        capacity = None if state.neighbors is None else state.neighbors.max_occupancy
        key = (n_frames, capacity)
        if key not in compiled:
            tic = time.perf_counter()
            placement = None if setup.mesh is None else (setup.mesh, plan.n_replicas, params, state)
            function = _chunk_fn(setup.integrator, setup.compute, setup.observe, plan.stride, n_frames, plan.gate,
                                 placement)  # fmt: skip
            compiled[key] = function.lower(params, state).compile()
            timing["compile_s"] += time.perf_counter() - tic
            _check_memory(compiled[key], plan, n_frames)
        new_state, frames = compiled[key](params, state)
        overflow = bool(new_state.overflow)
        frames = setup.host(frames)
        if not overflow:
            return new_state, frames
        timing["reruns"] += 1
        host = state if setup.mesh is None else setup.host(state)
        flat = np.asarray(host.positions).reshape(-1, plan.n_atoms, 3)
        cells = None if host.cell is None else bead_cells(host.cell, len(flat))
        grown = setup.force_field.edges.grow(host.neighbors, flat, cells)
        if setup.writes:
            print(
                f"jaxatom md: neighbour list overflow at step {int(state.step)}; capacity {capacity} -> "
                f"{grown.max_occupancy}, rerunning the chunk",
                file=sys.stderr,
            )
        state = setup.placed(host.replace(neighbors=grown))
    raise SimulationFailed(
        f"the neighbour list still overflowed after {MAX_RERUNS} reruns of the chunk at step {int(state.step)} "
        f"(capacity {state.neighbors.max_occupancy}); the system is probably collapsing or exploding: check the "
        "structure, the time step and the model"
    )


def linear_scales(start: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """``[R]`` smallest linear scale of ``cells [R, 3, 3]`` relative to the ``start [3, 3]`` cell (or each
    replica's, ``[R, 3, 3]``): the smallest singular value of ``start⁻¹ cell``, the factor by which some distance has
    shrunk at most."""
    return np.linalg.svd(np.linalg.solve(start, cells), compute_uv=False)[..., -1]


def _check_memory(compiled, plan: _Plan, n_frames: int) -> None:
    """Refuse a chunk that would not fit in the device's free memory, with the size it needs, before it runs."""
    size = f"{plan.n_replicas} replica(s) x {plan.ensemble.n_beads} bead(s) x {plan.n_atoms} atoms"
    check_fits(
        compiled,
        f"an MD chunk of {n_frames} frames for {size}",
        "write fewer frames per chunk (frames_per_chunk), run fewer replicas or beads, use float32, a smaller "
        "neighbour-list skin, or a device with more memory",
    )


def _check_cell(state: MDState, setup: _Setup, first_step: int, output: Path | None) -> None:
    """Stop a constant-pressure run whose cell shrank beyond what its edges were built for."""
    edges = setup.force_field.edges
    if state.cell is None or edges is None:
        return
    start = edges.cell if edges.replicas is None else edges.replicas.cell
    smallest = float(np.min(linear_scales(start, np.asarray(setup.host(state.cell)))))
    if smallest < CELL_MARGIN:
        kept = f"; {output} and its checkpoint keep everything up to step {first_step}" if output is not None else ""
        raise SimulationFailed(
            f"the cell shrank to {smallest:.3f} of its starting size, below the {CELL_MARGIN} its edges were built "
            f"for{kept}. Start from a structure nearer the target pressure (relax it first, jaxatom.relax)"
        )


def _check_finite(frames: dict, first_step: int, output: Path | None) -> None:
    """Stop before writing a chunk whose energies or positions are not finite (an exploding simulation)."""
    checked = ("positions", "potential_energy", "kinetic_energy")
    bad = [name for name in checked if not np.all(np.isfinite(frames[name]))]
    if bad:
        kept = f"; {output} and its checkpoint keep everything up to step {first_step}" if output is not None else ""
        raise SimulationBlewUp(
            f"the simulation blew up between steps {first_step} and {int(frames['step'][-1])}: {', '.join(bad)} "
            f"became NaN or infinite{kept}. Use a smaller time step, check the starting structure (overlapping "
            "atoms, wrong units) and whether the model was trained on such configurations"
        )


def _host_frames(frames: dict, state: MDState, force_field: ForceField, plan: _Plan, n_frames: int) -> dict:
    frames = {k: np.asarray(v) for k, v in frames.items()}
    offset = force_field.energy_offset
    if np.any(offset):
        frames["potential_energy"] = frames["potential_energy"].astype(np.float64) + offset
        frames["conserved_energy"] = frames["conserved_energy"].astype(np.float64) + offset * plan.ensemble.n_beads
    last = int(state.step)
    steps = last - plan.stride * np.arange(n_frames - 1, -1, -1)
    frames["step"] = steps.astype(np.int64)
    frames["time"] = steps * plan.timestep_fs
    return frames


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm  # text bars: tqdm.auto needs ipywidgets in notebooks

    return tqdm(total=total, initial=initial, unit="step", desc="md", dynamic_ncols=True)
