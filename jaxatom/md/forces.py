"""Force fields for MD: a pure ``apply(params, positions [N, 3], neighbors) -> {"energy", "forces", ...}`` for one
structure plus its parameters. Replicas and beads are ``vmap``s of it; ensembles ``vmap`` over stacked parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxatom.errors import ConfigError
from jaxatom.md.neighbors import EdgeBuilder
from jaxatom.nn.model import AtomisticModel
from jaxatom.potential import Potential, PotentialEnsemble
from jaxatom.potential.evaluate import cast_params, evaluate

__all__ = ["ForceField", "from_energy", "from_potential", "from_ensemble"]


@dataclass(frozen=True, eq=False)
class ForceField:
    """``apply(params, positions [N, 3] Å, neighbors) -> {"energy": [] eV, "forces": [N, 3] eV/Å, ...}``.

    Extra scalar entries (e.g. ``energy_std``) are written to the trajectory. ``edges`` says how neighbours are made
    (``None`` for functions that need none, e.g. analytic test potentials). ``energy_offset`` (eV) is a constant
    left out of the device energies (a model's per-atom reference energies, often -10⁴ eV) and added in float64 on
    the host when energies are written, so float32 runs keep their energy resolution.
    """

    apply: Callable[[Any, jax.Array, Any], dict]
    params: Any
    edges: EdgeBuilder | None = None
    energy_offset: float = 0.0


def from_energy(energy_fn: Callable[[jax.Array], jax.Array], params: Any = None) -> ForceField:
    """A force field from an energy function of positions ``[N, 3]`` (``energy_fn(positions)`` or, with ``params``,
    ``energy_fn(params, positions)``); forces by ``jax.grad``."""

    def apply(p, positions, neighbors):
        fn = energy_fn if params is None else (lambda x: energy_fn(p, x))
        energy, grad = jax.value_and_grad(fn)(positions)
        return {"energy": energy, "forces": -grad}

    return ForceField(apply=apply, params=params)


def _model_apply(model: AtomisticModel, edges: EdgeBuilder):
    def member(params, scale, offsets, positions, neighbors):
        graph = edges.graph(positions, neighbors)
        out = evaluate(model, params, graph, {"energy": {"scale": scale, "offsets": offsets}})
        return out["energy"][0], out["forces"][: edges.n_atoms]

    return member


def _require_energy(outputs: tuple[str, ...]) -> None:
    if "energy" not in outputs:
        raise ConfigError(
            f"MD needs a model that predicts an energy; this one predicts {', '.join(outputs)}. Use a model with an "
            "energy head (Atomwise(output_key='energy'))"
        )


def from_potential(potential: Potential, edges: EdgeBuilder) -> ForceField:
    """The MD force field of a :class:`Potential`; its offsets become ``energy_offset``."""
    _require_energy(potential.outputs)
    member = _model_apply(potential.model, edges)

    def apply(p, positions, neighbors):
        dtype = positions.dtype
        energy, forces = member(
            cast_params(p["model"], dtype), p["scale"].astype(dtype), p["offsets"].astype(dtype), positions, neighbors
        )
        return {"energy": energy, "forces": forces}

    params = {
        "model": potential.params,
        "scale": jnp.asarray(potential.energy_scale),
        "offsets": jnp.zeros(len(potential.atom_offsets())),
    }
    offset = float(np.sum(potential.atom_offsets()[edges.species]))
    return ForceField(apply=apply, params=params, edges=edges, energy_offset=offset)


def from_ensemble(ensemble: PotentialEnsemble, edges: EdgeBuilder) -> ForceField:
    """The mean force field of a :class:`~jaxatom.potential.PotentialEnsemble` (members ``vmap``ped over their
    stacked parameters). The dynamics follow the mean forces; ``energy_std`` (eV, population std across members) and
    ``forces_std_max`` (eV/Å, the largest per-atom norm of the force standard deviation) are reported per frame."""
    _require_energy(ensemble.outputs)
    member = jax.vmap(_model_apply(ensemble.model, edges), in_axes=(0, 0, 0, None, None))

    def apply(p, positions, neighbors):
        dtype = positions.dtype
        energy, forces = member(
            cast_params(p["model"], dtype), p["scale"].astype(dtype), p["offsets"].astype(dtype), positions, neighbors
        )
        force_std = jnp.sqrt(jnp.sum(jnp.var(forces, axis=0), axis=-1))
        return {
            "energy": jnp.mean(energy),
            "forces": jnp.mean(forces, axis=0),
            "energy_std": jnp.std(energy),
            "forces_std_max": jnp.max(force_std),
        }

    tables = ensemble.atom_offsets()  # [M, 100]
    params = {
        "model": ensemble.params,
        "scale": jnp.asarray(ensemble.energy_scales),
        "offsets": jnp.asarray(tables - tables.mean(axis=0)),  # member differences stay on the device
    }
    offset = float(np.mean(np.sum(tables[:, edges.species], axis=1)))
    return ForceField(apply=apply, params=params, edges=edges, energy_offset=offset)
