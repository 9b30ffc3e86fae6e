"""Force fields for MD: a pure ``apply(params, positions [N, 3], neighbors) -> {"energy", "forces", ...}`` for one
structure plus its parameters. Replicas and beads are ``vmap``s of it; ensembles ``vmap`` over stacked parameters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxatom.errors import ConfigError
from jaxatom.graph import float_dtype
from jaxatom.md.neighbors import EdgeBuilder
from jaxatom.nn.heads import OutputSpec
from jaxatom.nn.model import AtomisticModel
from jaxatom.potential import Potential, PotentialEnsemble
from jaxatom.potential.evaluate import cast_params, evaluate
from jaxatom.potential.field import check_field_model, field_array

__all__ = ["ForceField", "from_energy", "from_potential", "from_ensemble", "observable_specs"]


@dataclasses.dataclass(frozen=True, eq=False)
class ForceField:
    """``apply(params, positions [N, 3] Å, neighbors) -> {"energy": [] eV, "forces": [N, 3] eV/Å, ...}``.

    With ``variable_cell`` the call is ``apply(params, positions, neighbors, cell [3, 3])`` and the result also
    holds ``stress [3, 3]`` (eV/Å³, ``(1/V) ∂E/∂ε``), for ensembles that change the cell. Further entries
    (observables such as ``dipole_moment [3]``, or the ensemble spread ``energy_std``) are written to the trajectory
    per frame, each with its unit from ``units``. ``edges`` says how neighbours are made (``None``
    for functions that need none, e.g. analytic test potentials). ``energy_offset`` (eV) is a constant left out of
    the device energies (a model's per-atom reference energies, often -10⁴ eV) and added in float64 on the host when
    energies are written, so float32 runs keep their energy resolution; ``[R]`` per replica for a heterogeneous
    batch, whose ``apply`` also takes the replica's padded atoms (``atoms=``, :class:`~jaxatom.md.padding.ReplicaAtoms`
    of one replica). ``per_atom`` names the further entries that are per atom (``[N, ...]``).
    """

    apply: Callable[[Any, jax.Array, Any], dict]
    params: Any
    edges: EdgeBuilder | None = None
    energy_offset: float | np.ndarray = 0.0
    units: Mapping[str, str] = dataclasses.field(default_factory=dict)
    variable_cell: bool = False
    per_atom: tuple[str, ...] = ()


def from_energy(energy_fn: Callable[[jax.Array], jax.Array], params: Any = None) -> ForceField:
    """A force field from an energy function of positions ``[N, 3]`` (``energy_fn(positions)`` or, with ``params``,
    ``energy_fn(params, positions)``); forces by ``jax.grad``."""

    def apply(p, positions, neighbors):
        fn = energy_fn if params is None else (lambda x: energy_fn(p, x))
        energy, grad = jax.value_and_grad(fn)(positions)
        return {"energy": energy, "forces": -grad}

    return ForceField(apply=apply, params=params)


def _require_energy(outputs: tuple[str, ...]) -> None:
    if "energy" not in outputs:
        raise ConfigError(
            f"MD needs a model that predicts an energy; this one predicts {', '.join(outputs)}. Use a model with an "
            "energy head (Atomwise(output_key='energy'))"
        )


def observable_specs(model: AtomisticModel, observables: Sequence[str]) -> tuple[OutputSpec, ...]:
    """The output specs of the ``observables`` named, refusing names the model does not predict per structure or
    per atom (the energy and its derivatives are written anyway)."""
    allowed = {spec.name: spec for spec in model.outputs if spec.scaling != "energy"}
    unknown = [name for name in observables if name not in allowed]
    if unknown:
        offer = ", ".join(sorted(allowed)) or "none besides the energy"
        raise ConfigError(
            f"observables {', '.join(unknown)} are not outputs of this model; it can record: {offer} (the energy and, "
            "with write_forces, forces are always written)"
        )
    return tuple(allowed[name] for name in dict.fromkeys(observables))


def _model_apply(model: AtomisticModel, edges: EdgeBuilder, specs: tuple[OutputSpec, ...]):
    """One member's ``(params, scaling, field, positions, neighbors, cell, atoms) -> (energy, forces,
    observables)``, all from one evaluation of the model (one representation pass feeds every head); with a ``cell``
    the observables include ``stress``; ``atoms`` are a heterogeneous batch's replica (see :class:`EdgeBuilder`)."""
    n = edges.n_atoms

    def member(params, scaling, field, positions, neighbors, cell=None, atoms=None):
        graph = edges.graph(positions, neighbors, cell, atoms)
        fields = None if field is None else jnp.stack([field, jnp.zeros_like(field)])
        out = evaluate(model, params, graph, scaling, with_stress=cell is not None, field=fields)
        observed = {spec.name: out[spec.name][:n] if spec.per_atom else out[spec.name][0] for spec in specs}
        if cell is not None:
            observed["stress"] = out["stress"][0]
        return out["energy"][0], out["forces"][:n], observed

    return member


def _device_scaling(params: dict, dtype) -> dict:
    """The ``evaluate`` scaling of a force field's parameters: the energy's scale without offsets (added on the
    host), each observable's scale and offsets."""
    scaling = {"energy": {"scale": params["scale"].astype(dtype), "offsets": params["offsets"].astype(dtype)}}
    for name, values in params.get("observable_scaling", {}).items():
        scaling[name] = jax.tree.map(lambda x: x.astype(dtype), values)
    return scaling


def _extra_params(scaling_arrays: dict, specs: tuple[OutputSpec, ...], field: np.ndarray | None) -> dict:
    """Parameters beyond the energy's (absent when unused, so a plain energy run's parameters keep their names)."""
    extra = {}
    names = {spec.scaling for spec in specs} & set(scaling_arrays)
    if names:
        extra["observable_scaling"] = {name: scaling_arrays[name] for name in sorted(names)}
    if field is not None:
        extra["field"] = jnp.asarray(field)
    return extra


def from_potential(
    potential: Potential,
    edges: EdgeBuilder,
    observables: Sequence[str] = (),
    field: Sequence[float] | None = None,
    variable_cell: bool = False,
) -> ForceField:
    """The MD force field of a :class:`Potential`; its energy offsets become ``energy_offset``.

    ``observables`` names further outputs (e.g. ``dipole_moment``, ``polarizability``, ``charges``) computed in the
    same model evaluation as the forces and returned under their names; ``field`` ``[3]`` (V/Å) puts the molecule in
    a uniform electric field (energy and forces include the field terms, :mod:`jaxatom.potential.field`);
    ``variable_cell`` makes it take the current cell and return the stress (constant-pressure MD). A multi-fidelity
    potential runs at its target fidelity (pass ``potential.at_fidelity(name)`` for another).
    """
    potential = potential.at_fidelity()
    _require_energy(potential.outputs)
    field = field_array(field)
    if field is not None:
        check_field_model(potential.model)
    specs = observable_specs(potential.model, observables)
    member = _model_apply(potential.model, edges, specs)

    def apply(p, positions, neighbors, cell=None, atoms=None):
        dtype = positions.dtype
        field_value = p["field"].astype(dtype) if "field" in p else None
        model_params = cast_params(p["model"], dtype)
        scaling = _device_scaling(p, dtype)
        energy, forces, observed = member(model_params, scaling, field_value, positions, neighbors, cell, atoms)
        return {"energy": energy, "forces": forces, **observed}

    params = {
        "model": potential.params,
        "scale": jnp.asarray(potential.energy_scale),
        "offsets": jnp.zeros(len(potential.atom_offsets())),
        **_extra_params(potential.scaling_arrays(float_dtype()), specs, field),
    }
    units = {spec.name: spec.unit for spec in specs}
    per_atom = tuple(spec.name for spec in specs if spec.per_atom)
    return ForceField(apply, params, edges, _energy_offset(potential.atom_offsets(), edges), units, variable_cell,
                      per_atom)  # fmt: skip


def _energy_offset(table: np.ndarray, edges: EdgeBuilder) -> float | np.ndarray:
    """The sum of the per-atom reference energies ``table [Z]`` (eV) of the structure, or ``[R]`` of each replica
    of a heterogeneous batch."""
    if edges.replicas is None:
        return float(np.sum(table[edges.species]))
    return np.sum(np.where(edges.replicas.mask, table[edges.replicas.species], 0.0), axis=1)


def from_ensemble(
    ensemble: PotentialEnsemble,
    edges: EdgeBuilder,
    observables: Sequence[str] = (),
    field: Sequence[float] | None = None,
    variable_cell: bool = False,
) -> ForceField:
    """The mean force field of a :class:`~jaxatom.potential.PotentialEnsemble` (members ``vmap``ped over their
    stacked parameters). The dynamics follow the mean forces; ``energy_std`` (eV, population std across members) and
    ``forces_std_max`` (eV/Å, the largest per-atom norm of the force standard deviation) are reported per frame,
    and each of the ``observables`` (and with ``variable_cell`` the stress) as the members' mean (``field`` and
    ``variable_cell`` as in :func:`from_potential`)."""
    _require_energy(ensemble.outputs)
    field = field_array(field)
    if field is not None:
        check_field_model(ensemble.model)
    specs = observable_specs(ensemble.model, observables)
    member = jax.vmap(_model_apply(ensemble.model, edges, specs), in_axes=(0, 0) + (None,) * 5)

    def apply(p, positions, neighbors, cell=None, atoms=None):
        dtype = positions.dtype
        field_value = p["field"].astype(dtype) if "field" in p else None
        model_params = cast_params(p["model"], dtype)
        scaling = _device_scaling(p, dtype)
        energy, forces, observed = member(model_params, scaling, field_value, positions, neighbors, cell, atoms)
        force_std = jnp.sqrt(jnp.sum(jnp.var(forces, axis=0), axis=-1))
        return {
            "energy": jnp.mean(energy),
            "forces": jnp.mean(forces, axis=0),
            "energy_std": jnp.std(energy),
            "forces_std_max": jnp.max(force_std),
            **{name: jnp.mean(value, axis=0) for name, value in observed.items()},
        }

    tables = ensemble.atom_offsets()  # [M, 100]
    params = {
        "model": ensemble.params,
        "scale": jnp.asarray(ensemble.energy_scales),
        "offsets": jnp.asarray(tables - tables.mean(axis=0)),  # member differences stay on the device
        **_extra_params(ensemble.scaling_arrays(float_dtype()), specs, field),
    }
    if edges.replicas is None:
        offset = float(np.mean(np.sum(tables[:, edges.species], axis=1)))
    else:
        offset = np.mean([_energy_offset(table, edges) for table in tables], axis=0)
    units = {"energy_std": "eV", "forces_std_max": "eV/Ang", **{spec.name: spec.unit for spec in specs}}
    per_atom = tuple(spec.name for spec in specs if spec.per_atom)
    return ForceField(apply, params, edges, offset, units, variable_cell, per_atom)
