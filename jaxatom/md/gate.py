"""The uncertainty gate of MD with an ensemble: inside the compiled chunk every step compares each replica's
calibrated largest per-atom force uncertainty ``scale × forces_std_max`` (eV/Å) with a threshold, and flags, freezes
or stops replicas without a host round trip.

Actions: ``"flag"`` keeps running; ``"stop_replica"`` freezes a replica at the step its uncertainty crosses the
threshold (its state no longer changes, the others go on); ``"stop"`` ends the whole run after the chunk in which
any replica crossed. Each frame records per replica the largest uncertainty of the steps taken in its stride
interval (``uncertainty``, NaN for a frozen replica), whether any exceeded the threshold (``flagged``), and the
structure at the most uncertain step (``candidate_positions``, ``candidate_step``, ``candidate_cell``), so no
flagged structure between frames is lost. Frame 0, the starting state, records its uncertainty only (not flagged,
no candidate).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxatom.errors import ConfigError
from jaxatom.md.forces import ForceField
from jaxatom.md.integrators import MDState
from jaxatom.potential import Potential, PotentialEnsemble

__all__ = ["ACTIONS", "SPREAD", "UncertaintyGate", "uncertainty_gate"]

#: What a replica whose uncertainty crosses the threshold does.
ACTIONS = ("flag", "stop_replica", "stop")
#: The force field's output the gate reads: the largest per-atom norm of the members' force std (eV/Å).
SPREAD = "forces_std_max"
#: Fields of :class:`MDState` that a frozen replica keeps (each leaf with a leading replica axis).
_REPLICA_FIELDS = ("positions", "momenta", "forces", "potential_energy", "extras", "key", "thermostat", "heat", "cell")


@dataclasses.dataclass(frozen=True)
class UncertaintyGate:
    """Gate of ``action`` at ``threshold`` (eV/Å) on ``scale × forces_std_max`` (``scale``: the calibration's
    force scale, 1 for an uncalibrated ensemble)."""

    action: str
    threshold: float
    scale: float = 1.0

    @property
    def units(self) -> dict[str, str]:
        """Units of the per-frame datasets."""
        return {"uncertainty": "eV/Ang", "flagged": "1", "candidate_positions": "Ang", "candidate_step": "1",
                "candidate_cell": "Ang"}  # fmt: skip

    def initial(self, n_replicas: int) -> dict | None:
        """The gate's part of the MD state: ``stopped [R]`` (sticky: crossed the threshold) for the stopping
        actions, None for ``flag``."""
        return None if self.action == "flag" else {"stopped": jnp.zeros(n_replicas, bool)}

    def uncertainty(self, state: MDState) -> jax.Array:
        """``[R]`` calibrated largest per-atom force uncertainty of each replica (largest over beads), eV/Å."""
        spread = state.extras[SPREAD]
        return self.scale * spread.reshape(spread.shape[0], -1).max(axis=1)

    def start(self, state: MDState) -> dict:
        """The tracking of a stride interval starting at ``state``: nothing seen yet."""
        n_replicas = state.positions.shape[0]
        track = {
            "uncertainty": jnp.full(n_replicas, -jnp.inf, state.positions.dtype),
            "flagged": jnp.zeros(n_replicas, bool),
            "candidate_positions": _structure(state.positions),
            "candidate_step": jnp.full(n_replicas, -1, state.step.dtype),
        }
        if state.cell is not None:
            track["candidate_cell"] = state.cell
        return track

    def initial_frame(self, state: MDState) -> dict:
        """The record of the starting state (frame 0 of a trajectory): its uncertainty, not flagged and no candidate
        (``candidate_step`` −1), as the gate judges the steps taken, not the structure it was given."""
        track = self.start(state)
        return {**track, "uncertainty": self.uncertainty(state).astype(track["uncertainty"].dtype)}

    def step(self, old: MDState, new: MDState, track: dict) -> tuple[MDState, dict]:
        """Apply the gate to the step ``old → new``: freeze stopped replicas, mark crossings, track the interval."""
        active = jnp.ones(old.positions.shape[0], bool)
        if self.action == "stop_replica":
            active = ~old.gate["stopped"]
            new = _freeze(new, old, active)
        uncertainty = self.uncertainty(new)
        crossed = active & (uncertainty > self.threshold)
        if old.gate is not None:
            new = new.replace(gate={"stopped": old.gate["stopped"] | crossed})
        return new, _tracked(track, new, uncertainty, active, crossed)

    def frame(self, track: dict) -> dict:
        """The per-frame datasets of an interval (``uncertainty`` NaN where no step was taken)."""
        seen = jnp.isfinite(track["uncertainty"])
        return {**track, "uncertainty": jnp.where(seen, track["uncertainty"], jnp.nan)}

    def halted(self, state: MDState) -> bool:
        """Whether the run ends here (host side): any replica crossed (``stop``) or all did (``stop_replica``)."""
        if state.gate is None:
            return False
        stopped = np.asarray(state.gate["stopped"])
        return bool(stopped.any() if self.action == "stop" else stopped.all())


def _structure(positions: jax.Array) -> jax.Array:
    """``[R, N, 3]`` positions of each replica (ring-polymer centroids for ``[R, P, N, 3]``)."""
    return positions.mean(axis=1) if positions.ndim == 4 else positions


def _tracked(track: dict, state: MDState, uncertainty: jax.Array, active: jax.Array, crossed: jax.Array) -> dict:
    """``track`` updated with the step to ``state``: the first most uncertain step of each active replica."""
    better = active & (uncertainty > track["uncertainty"])

    def pick(value, kept):
        return jnp.where(better.reshape((-1,) + (1,) * (value.ndim - 1)), value, kept)

    updated = {
        "uncertainty": pick(uncertainty, track["uncertainty"]),
        "flagged": track["flagged"] | crossed,
        "candidate_positions": pick(_structure(state.positions), track["candidate_positions"]),
        "candidate_step": pick(jnp.broadcast_to(state.step, better.shape), track["candidate_step"]),
    }
    if "candidate_cell" in track:
        updated["candidate_cell"] = pick(state.cell, track["candidate_cell"])
    return updated


def _freeze(new: MDState, old: MDState, active: jax.Array) -> MDState:
    """``new`` with every per-replica leaf of inactive replicas taken from ``old`` (step, overflow flag and the
    shared neighbour list go on)."""
    n_replicas = active.shape[0]

    def pick(value, kept):
        if jnp.ndim(value) == 0 or value.shape[0] != n_replicas:
            return value
        return jnp.where(active.reshape((-1,) + (1,) * (value.ndim - 1)), value, kept)

    return new.replace(**{name: jax.tree.map(pick, getattr(new, name), getattr(old, name)) for name in _REPLICA_FIELDS})


def uncertainty_gate(model, threshold: float | str | None, action: str | None) -> UncertaintyGate | None:
    """The gate of :func:`~jaxatom.md.simulate`'s ``uncertainty_threshold``/``uncertainty_action`` for ``model``
    (loaded), or None without an action. ``threshold`` None or ``"calibrated"`` takes the ensemble's calibrated
    ``forces_threshold``; a number is in eV/Å of the calibrated uncertainty (the raw spread if uncalibrated)."""
    if action is None:
        if threshold is not None:
            raise ConfigError(
                "uncertainty_threshold is set but uncertainty_action is not; set uncertainty_action to "
                f"{', '.join(repr(a) for a in ACTIONS)}"
            )
        return None
    if action not in ACTIONS:
        raise ConfigError(f"uncertainty_action must be one of {', '.join(repr(a) for a in ACTIONS)}, got {action!r}")
    _require_spread(model)
    calibration = model.calibration if isinstance(model, PotentialEnsemble) else None
    if threshold is None or threshold == "calibrated":
        if calibration is None or calibration.forces_threshold is None:
            raise ConfigError(
                "uncertainty gating needs a threshold: this ensemble has no calibration (calibration.json beside its "
                "members); pass uncertainty_threshold=<eV/Å> or calibrate it (jaxatom.train.calibration.calibrate, "
                "then ensemble.with_calibration(calibration).save(directory); ensemble training does it)"
            )
        threshold = calibration.forces_threshold
    if isinstance(threshold, str) or not float(threshold) > 0:
        raise ConfigError(f"uncertainty_threshold must be a positive number (eV/Å) or 'calibrated', got {threshold!r}")
    scale = calibration.forces_scale if calibration is not None and calibration.forces_scale is not None else 1.0
    return UncertaintyGate(action, float(threshold), float(scale))


def _require_spread(model) -> None:
    """Refuse a model without an ensemble spread of the forces."""
    if isinstance(model, PotentialEnsemble):
        return
    if isinstance(model, ForceField):
        if SPREAD in model.units:
            return
        what = "a ForceField that does not return forces_std_max"
    else:
        what = "a single Potential" if isinstance(model, Potential) else type(model).__name__
    raise ConfigError(
        f"uncertainty gating needs an ensemble's force spread, but the model is {what}; pass a PotentialEnsemble "
        "(or its directory, e.g. run_dir/best_ensemble, or a list of model files), or a ForceField whose apply "
        "returns forces_std_max (eV/Å) declared in its units"
    )
