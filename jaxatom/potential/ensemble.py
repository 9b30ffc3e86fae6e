"""Ensembles of potentials: one architecture, ``M`` parameter sets stacked on a leading axis, evaluated with ``vmap``.

Every member sees the same padded graph; :func:`evaluate_ensemble` is :func:`~jaxatom.potential.evaluate.evaluate`
vmapped over the stacked parameters, energy scales and offsets, so one compile serves all members.
:meth:`PotentialEnsemble.predict` returns the members' mean and spread. The spread is the *population* standard
deviation over members (``numpy.std`` with ``ddof=0``): it is defined for one member (zero) and is exactly zero for
identical members.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms
from flax import serialization

from jaxatom.graph import Graph, HostGraph, batch_graphs
from jaxatom.nn.model import EnergyModel
from jaxatom.potential.evaluate import evaluate
from jaxatom.potential.io import load_model
from jaxatom.potential.potential import Potential, _symbols, predict_structures

__all__ = ["PotentialEnsemble", "evaluate_ensemble", "evaluate_ensemble_jit"]


def evaluate_ensemble(
    model: nn.Module,
    stacked_params,
    graph: Graph,
    energy_scales: jax.Array,
    atom_offsets: jax.Array,
    with_stress: bool = False,
) -> dict[str, jax.Array]:
    """:func:`~jaxatom.potential.evaluate.evaluate` of ``M`` members that share ``model``, on one padded graph.

    Args:
        model: the members' common :class:`~jaxatom.nn.EnergyModel`.
        stacked_params: the members' parameters stacked along a leading axis ``[M, ...]``.
        graph: the padded batch (shared by all members).
        energy_scales: ``[M]`` factor on each member's model energy.
        atom_offsets: ``[M, 100]`` energy offset (eV) per member and atomic number; zeros to leave them out.
        with_stress: also return ``stress [M, G, 3, 3]`` (eV/Å³).

    Returns:
        ``energy [M, G]`` (eV), ``energies [M, N]`` (eV), ``forces [M, N, 3]`` (eV/Å) and optionally ``stress``.
    """
    keys = ("energy", "energies", "forces", "stress") if with_stress else ("energy", "energies", "forces")

    def member(params, energy_scale, offsets):
        out = evaluate(model, params, graph, energy_scale, offsets, with_stress)
        return {key: out[key] for key in keys}

    return jax.vmap(member)(stacked_params, energy_scales, atom_offsets)


#: :func:`evaluate_ensemble` jitted with the model and the stress switch static (one compile per model and shape).
evaluate_ensemble_jit = jax.jit(evaluate_ensemble, static_argnames=("model", "with_stress"))


def _module_fields(module: nn.Module) -> dict[str, Any]:
    fields = {f.name: getattr(module, f.name) for f in dataclasses.fields(module) if f.name not in ("parent", "name")}
    return {"type": type(module).__name__, **fields}


def _architecture_difference(a: EnergyModel, b: EnergyModel) -> str:
    """Name the first settings in which two models differ, e.g. ``representation.n_rbf: 8 != 9``."""
    differences = []
    for part in ("representation", "head"):
        fields_a, fields_b = _module_fields(getattr(a, part)), _module_fields(getattr(b, part))
        for key in sorted(fields_a.keys() | fields_b.keys()):
            if fields_a.get(key) != fields_b.get(key):
                differences.append(f"{part}.{key}: {fields_a.get(key)!r} != {fields_b.get(key)!r}")
    return "; ".join(differences) or "the models differ"


def _stack_params(potentials: Sequence[Potential]):
    trees = [serialization.to_state_dict(p.params) for p in potentials]
    structure = jax.tree.structure(trees[0])
    shapes = jax.tree.map(np.shape, trees[0])
    for index, tree in enumerate(trees[1:], start=1):
        if jax.tree.structure(tree) != structure or jax.tree.map(np.shape, tree) != shapes:
            raise ValueError(f"the parameters of ensemble member {index} do not match those of member 0 in layout")
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


@dataclasses.dataclass(frozen=True, eq=False)
class PotentialEnsemble:
    """``M`` potentials of one architecture, evaluated together (energies in eV, lengths in Å).

    Build one with :meth:`from_potentials`. Each member keeps its own energy scale and offsets.

    Attributes:
        model: the members' common :class:`~jaxatom.nn.EnergyModel`.
        params: the members' parameters stacked along a leading axis ``[M, ...]``.
        elements: atomic numbers the members may be applied to (equal for all members).
        energy_scales: ``[M]`` factor on each member's model energy (float64).
        atom_offsets: ``[M, 100]`` energy offset per member and atomic number (eV, float64), see
            :meth:`Potential.atom_offsets`.
    """

    model: EnergyModel
    params: Any
    elements: tuple[int, ...]
    energy_scales: np.ndarray
    atom_offsets: np.ndarray

    @classmethod
    def from_potentials(cls, members: Sequence[Potential | str | os.PathLike]) -> PotentialEnsemble:
        """Stack potentials (or model files, read with :func:`~jaxatom.potential.io.load_model`) into an ensemble.

        Raises ``ValueError`` naming the difference if the members differ in architecture or elements.
        """
        potentials = [m if isinstance(m, Potential) else load_model(m) for m in members]
        if not potentials:
            raise ValueError("an ensemble needs at least one potential")
        first = potentials[0]
        for index, other in enumerate(potentials[1:], start=1):
            if other.model != first.model:
                raise ValueError(
                    f"ensemble member {index} has another architecture than member 0 "
                    f"({_architecture_difference(first.model, other.model)}); all members must share one architecture"
                )
            if other.elements != first.elements:
                raise ValueError(
                    f"ensemble member {index} is built for the elements [{_symbols(other.elements)}], member 0 for "
                    f"[{_symbols(first.elements)}]; all members must know the same elements"
                )
        return cls(
            model=first.model,
            params=_stack_params(potentials),
            elements=first.elements,
            energy_scales=np.array([p.energy_scale for p in potentials], np.float64),
            atom_offsets=np.stack([p.atom_offsets() for p in potentials]),
        )

    @property
    def size(self) -> int:
        """Number of members ``M``."""
        return len(self.energy_scales)

    @property
    def cutoff(self) -> float:
        """Cutoff radius of the representation (Å)."""
        return float(self.model.representation.cutoff)

    def check_elements(self, species) -> None:
        """Raise ``ValueError`` if ``species`` contains elements the members do not know."""
        Potential.check_elements(self, species)

    def evaluate(self, graph: Graph, stress: bool = False, include_offsets: bool = True) -> dict[str, jax.Array]:
        """Jitted per-member ``energy [M, G]``, ``energies [M, N]``, ``forces [M, N, 3]`` (and ``stress``) of a graph.

        With ``include_offsets=False`` energies exclude the offsets (see :meth:`Potential.evaluate`).
        """
        dtype = graph.positions.dtype
        offsets = self.atom_offsets if include_offsets else np.zeros_like(self.atom_offsets)
        return evaluate_ensemble_jit(
            self.model,
            self.params,
            graph,
            jnp.asarray(self.energy_scales, dtype),
            jnp.asarray(offsets, dtype),
            with_stress=stress,
        )

    def predict(self, structures: Atoms | Sequence[Atoms], batch_size: int = 32) -> dict | list[dict]:
        """Mean and spread over members of energy, forces and, for periodic input, stress.

        Takes one ``ase.Atoms`` (returns one dict) or a list of them (returns a list of dicts), evaluated in padded
        batches of up to ``batch_size`` structures. Each dict holds, for a structure of ``n`` atoms:

        * ``energy``, ``energy_std`` (eV): mean and population std (``ddof=0``) of the members' total energies;
        * ``energies [n]`` (eV): the members' mean per-atom energies;
        * ``forces [n, 3]``, ``forces_std [n, 3]`` (eV/Å): mean and std per atom and Cartesian component;
        * ``energies_members [M]`` (eV) and ``forces_members [M, n, 3]`` (eV/Å): each member's values;
        * periodic input only: ``stress``, ``stress_std`` ``[3, 3]`` and ``stress_members [M, 3, 3]`` (eV/Å³).

        Offsets are added and the statistics taken in float64 on the host.
        """
        return predict_structures(structures, self.cutoff, self.check_elements, self.predict_graphs, batch_size)

    def predict_graphs(
        self, graphs: Sequence[HostGraph], n_node: int | None = None, n_edge: int | None = None
    ) -> list[dict]:
        """:meth:`predict` for structures whose graphs are built, padded as one batch to ``n_node``/``n_edge``
        (default: the bucket sizes of :func:`~jaxatom.graph.batch_graphs`)."""
        batch = batch_graphs(graphs, n_node=n_node, n_edge=n_edge)
        with_stress = any(g.periodic for g in graphs)
        out = jax.device_get(self.evaluate(batch, stress=with_stress, include_offsets=False))
        results, node0 = [], 0
        for index, g in enumerate(graphs):
            nodes = slice(node0, node0 + g.n_node)
            offsets = self.atom_offsets[:, g.species]  # [M, n]
            energies = np.asarray(out["energies"][:, nodes], np.float64) + offsets
            members = {
                "energies_members": np.asarray(out["energy"][:, index], np.float64) + offsets.sum(axis=1),
                "forces_members": np.asarray(out["forces"][:, nodes]),
            }
            if g.periodic:
                members["stress_members"] = np.asarray(out["stress"][:, index])
            results.append({**_summary(members), "energies": energies.mean(axis=0), **members})
            node0 += g.n_node
        return results


def _summary(members: dict[str, np.ndarray]) -> dict:
    """Mean and population std over the leading member axis, in float64."""
    names = {"energies_members": "energy", "forces_members": "forces", "stress_members": "stress"}
    summary = {}
    for key, values in members.items():
        values = np.asarray(values, np.float64)
        summary[names[key]] = values.mean(axis=0)
        summary[f"{names[key]}_std"] = values.std(axis=0)
    summary["energy"], summary["energy_std"] = float(summary["energy"]), float(summary["energy_std"])
    return summary
