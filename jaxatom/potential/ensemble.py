"""Ensembles of potentials: one architecture, ``M`` parameter sets stacked on a leading axis, evaluated with ``vmap``.

Every member sees the same padded graph; :func:`evaluate_ensemble` is :func:`~jaxatom.potential.evaluate.evaluate`
vmapped over the stacked parameters and per-output scales and offsets, so one compile serves all members.
:meth:`PotentialEnsemble.predict` returns the members' mean and spread of every output. The spread is the
*population* standard deviation over members (``numpy.std`` with ``ddof=0``): it is defined for one member (zero)
and is exactly zero for identical members. A calibrated ensemble (:attr:`PotentialEnsemble.calibration`, stored as
``calibration.json`` beside the members) also reports ``X_uncertainty = scale × X_std`` (see :meth:`predict`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms
from flax import serialization

from jaxatom.graph import Graph, HostGraph, batch_graphs
from jaxatom.nn.model import AtomisticModel
from jaxatom.nn.registry import module_config
from jaxatom.potential.calibration import CALIBRATION_FILE, Calibration
from jaxatom.potential.evaluate import evaluate
from jaxatom.potential.field import batch_fields, check_field_model, field_array
from jaxatom.potential.io import load_model
from jaxatom.potential.outputs import HOST_OFFSETS, OutputScaling, split_outputs
from jaxatom.potential.potential import Potential, _symbols, predict_structures

__all__ = ["PotentialEnsemble", "evaluate_ensemble", "evaluate_ensemble_jit", "member_path", "ensemble_members"]


def evaluate_ensemble(
    model: nn.Module,
    stacked_params,
    graph: Graph,
    scaling: dict,
    with_stress: bool = False,
    field: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """:func:`~jaxatom.potential.evaluate.evaluate` of ``M`` members that share ``model``, on one padded graph.

    Args:
        model: the members' common :class:`~jaxatom.nn.AtomisticModel`.
        stacked_params: the members' parameters stacked along a leading axis ``[M, ...]``.
        graph: the padded batch (shared by all members).
        scaling: per-output ``{"scale": [M], "offsets": [M, 100]}`` (see :meth:`PotentialEnsemble.scaling_arrays`).
        with_stress: also return ``stress [M, G, 3, 3]`` (eV/Å³).
        field: uniform electric field per structure ``[G, 3]`` (V/Å), or None (see :mod:`~jaxatom.potential.field`).

    Returns:
        Every output with a leading member axis, e.g. ``energy [M, G]`` (eV), ``forces [M, N, 3]`` (eV/Å),
        ``dipole_moment [M, G, 3]`` (e·Å); the representation's features are left out.
    """
    names = model.output_names

    def member(params, member_scaling):
        out = evaluate(model, params, graph, member_scaling, with_stress, field)
        return {key: out[key] for key in names if key in out}

    return jax.vmap(member)(stacked_params, scaling)


#: :func:`evaluate_ensemble` jitted with the model and the stress switch static (one compile per model and shape).
evaluate_ensemble_jit = jax.jit(evaluate_ensemble, static_argnames=("model", "with_stress"))


def _architecture_difference(a: AtomisticModel, b: AtomisticModel) -> str:
    """Name the first settings in which two models differ, e.g. ``representation.n_rbf: 8 != 9``."""
    parts_a = {"representation": a.representation, **{f"heads[{k}]": h for k, h in enumerate(a.heads)}}
    parts_b = {"representation": b.representation, **{f"heads[{k}]": h for k, h in enumerate(b.heads)}}
    differences = []
    for part in sorted(parts_a.keys() | parts_b.keys()):
        fields_a = module_config(parts_a[part]) if part in parts_a else {}
        fields_b = module_config(parts_b[part]) if part in parts_b else {}
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

    Build one with :meth:`from_potentials`. Each member keeps its own per-output scales and offsets.

    Attributes:
        model: the members' common :class:`~jaxatom.nn.AtomisticModel`.
        params: the members' parameters stacked along a leading axis ``[M, ...]``.
        elements: atomic numbers the members may be applied to (equal for all members).
        scalings: each member's :attr:`Potential.scaling`.
        calibration: scales of the spread and the force-uncertainty threshold
            (:class:`~jaxatom.potential.calibration.Calibration`), or None if the ensemble is not calibrated.
    """

    model: AtomisticModel
    params: Any
    elements: tuple[int, ...]
    scalings: tuple[Mapping[str, OutputScaling], ...]
    calibration: Calibration | None = None

    @classmethod
    def from_potentials(cls, members: Sequence[Potential | str | os.PathLike] | str | os.PathLike) -> PotentialEnsemble:
        """Stack potentials (or model files, read with :func:`~jaxatom.potential.io.load_model`) into an ensemble;
        a single path is an ensemble directory (see :meth:`load`).

        Raises ``ValueError`` naming the difference if the members differ in architecture or elements.
        """
        if isinstance(members, str | os.PathLike):
            return cls.load(members)
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
            scalings=tuple(dict(p.scaling) for p in potentials),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> PotentialEnsemble:
        """The ensemble in directory ``path``: one model directory per member, ``member_000``, ``member_001``, ...
        (as ensemble training writes to ``run_dir/best_ensemble``; see :func:`member_path`)."""
        members = ensemble_members(path)
        if not members:
            raise ValueError(f"{path} holds no ensemble members (model directories member_000, member_001, ...)")
        calibration_file = Path(path) / CALIBRATION_FILE
        calibration = Calibration.load(calibration_file) if calibration_file.is_file() else None
        return cls.from_potentials(members).with_calibration(calibration)

    def save(self, path: str | os.PathLike) -> None:
        """Write every member's model file into directory ``path``, and ``calibration.json`` if calibrated (read back
        with :meth:`load`)."""
        for m in range(self.size):
            member = jax.tree.map(lambda leaf, m=m: np.asarray(leaf[m]), self.params)
            potential = Potential(model=self.model, params=member, elements=self.elements, scaling=self.scalings[m])
            potential.save(member_path(path, m))
        calibration_file = Path(path) / CALIBRATION_FILE
        if self.calibration is not None:
            self.calibration.save(calibration_file)
        else:
            calibration_file.unlink(missing_ok=True)

    def with_calibration(self, calibration: Calibration | None) -> PotentialEnsemble:
        """The same ensemble with another calibration (None: uncalibrated)."""
        return dataclasses.replace(self, calibration=calibration)

    @property
    def size(self) -> int:
        """Number of members ``M``."""
        return len(self.scalings)

    @property
    def cutoff(self) -> float:
        """Cutoff radius of the representation (Å)."""
        return self.model.cutoff

    @property
    def outputs(self) -> tuple[str, ...]:
        """Every output :meth:`predict` summarises."""
        return self.model.output_names

    @property
    def energy_scales(self) -> np.ndarray:
        """``[M]`` factor on each member's model energy (float64)."""
        return np.array([s.get("energy", OutputScaling()).scale for s in self.scalings], np.float64)

    def atom_offsets(self, name: str = "energy") -> np.ndarray:
        """``[M, 100]`` offset per member and atomic number of output ``name`` (float64)."""
        return np.stack([s.get(name, OutputScaling()).table() for s in self.scalings])

    def scaling_arrays(
        self, dtype, include_offsets: bool = True, host_offsets: bool = False
    ) -> dict[str, dict[str, jax.Array]]:
        """Per-output ``{"scale": [M], "offsets": [M, 100]}`` for :func:`evaluate_ensemble` (offsets as in
        :meth:`Potential.scaling_arrays`)."""
        names = sorted({name for scaling in self.scalings for name in scaling})
        arrays = {}
        for name in names:
            tables = self.atom_offsets(name)
            if not include_offsets or (host_offsets and name == HOST_OFFSETS):
                tables = np.zeros_like(tables)
            scales = [s.get(name, OutputScaling()).scale for s in self.scalings]
            arrays[name] = {"scale": jnp.asarray(scales, dtype), "offsets": jnp.asarray(tables, dtype)}
        return arrays

    def check_elements(self, species) -> None:
        """Raise ``ValueError`` if ``species`` contains elements the members do not know."""
        Potential.check_elements(self, species)

    def evaluate(
        self, graph: Graph, stress: bool = False, include_offsets: bool = True, field: jax.Array | None = None
    ) -> dict[str, jax.Array]:
        """Jitted per-member outputs (``energy [M, G]``, ``forces [M, N, 3]``, ...) of a graph.

        With ``include_offsets=False`` the energy's offsets are left out; ``field`` ``[G, 3]`` (V/Å) as in
        :meth:`Potential.evaluate`.
        """
        scaling = self.scaling_arrays(graph.positions.dtype, host_offsets=not include_offsets)
        return evaluate_ensemble_jit(self.model, self.params, graph, scaling, with_stress=stress, field=field)

    def predict(
        self, structures: Atoms | Sequence[Atoms], batch_size: int = 32, field: Sequence[float] | None = None
    ) -> dict | list[dict]:
        """Mean and spread over members of every output (energy, forces, dipole moment, charges, ...).

        Takes one ``ase.Atoms`` (returns one dict) or a list of them (returns a list of dicts), evaluated in padded
        batches of up to ``batch_size`` structures. For each output ``X`` of the model (see :attr:`outputs`) a dict
        holds ``X`` (the members' mean), ``X_std`` (population std, ``ddof=0``, per component) and ``X_members``
        (each member's value, leading axis ``[M]``); e.g. ``energy``/``energy_std`` (eV), ``forces [n, 3]`` (eV/Å),
        and for periodic input ``stress [3, 3]`` (eV/Å³). Offsets are added and the statistics taken in float64 on
        the host. ``field`` (V/Å, ``[3]``) as in :meth:`Potential.predict`.

        A calibrated ensemble (:attr:`calibration`) adds the calibrated uncertainties (``X_std`` stays the raw
        spread): ``energy_uncertainty`` (eV, ``s_E × energy_std``), ``forces_uncertainty [n]`` (eV/Å, per atom:
        ``s_F × |forces_std|``, the norm over components) and ``forces_uncertainty_max`` (eV/Å, its largest value:
        the quantity :attr:`Calibration.forces_threshold` and the MD gate compare).
        """
        field = field_array(field)
        if field is not None:
            check_field_model(self.model)
        predict_batch = functools.partial(self.predict_graphs, field=field)
        return predict_structures(structures, self.cutoff, self.check_elements, predict_batch, batch_size)

    def predict_graphs(
        self,
        graphs: Sequence[HostGraph],
        n_node: int | None = None,
        n_edge: int | None = None,
        field: np.ndarray | None = None,
    ) -> list[dict]:
        """:meth:`predict` for structures whose graphs are built, padded as one batch to ``n_node``/``n_edge``
        (default: the bucket sizes of :func:`~jaxatom.graph.batch_graphs`), in the uniform ``field`` ``[3]`` (V/Å)
        or none."""
        batch = batch_graphs(graphs, n_node=n_node, n_edge=n_edge)
        with_stress = any(g.periodic for g in graphs)
        fields = None if field is None else batch_fields(field, batch)
        out = jax.device_get(self.evaluate(batch, stress=with_stress, include_offsets=False, field=fields))
        members = [
            split_outputs({k: v[m] for k, v in out.items()}, graphs, self.model.outputs, self.scalings[m])
            for m in range(self.size)
        ]
        summaries = [_summary([member[index] for member in members]) for index in range(len(graphs))]
        if self.calibration is not None:
            summaries = [_calibrated(summary, self.calibration) for summary in summaries]
        return summaries


def member_path(directory: str | os.PathLike, m: int) -> Path:
    """Where member ``m`` of the ensemble in ``directory`` is kept."""
    return Path(directory) / f"member_{m:03d}"


def ensemble_members(directory: str | os.PathLike) -> list[Path]:
    """The member model directories of the ensemble in ``directory``, in member order (empty if it holds none)."""
    paths = []
    while member_path(directory, len(paths)).is_dir():
        paths.append(member_path(directory, len(paths)))
    return paths


def _summary(members: Sequence[dict]) -> dict:
    """Mean, population std and the members' values of every output, in float64."""
    summary = {}
    for key in members[0]:
        values = np.stack([np.asarray(member[key], np.float64) for member in members])
        mean, std = values.mean(axis=0), values.std(axis=0)
        scalar = values.ndim == 1
        summary[key] = float(mean) if scalar else mean
        summary[f"{key}_std"] = float(std) if scalar else std
        summary[f"{key}_members"] = values
    return summary


def _calibrated(summary: dict, calibration: Calibration) -> dict:
    """``summary`` with the calibrated uncertainties of energy and forces (see :meth:`PotentialEnsemble.predict`)."""
    if calibration.energy_scale is not None and "energy_std" in summary:
        summary["energy_uncertainty"] = calibration.energy_scale * summary["energy_std"]
    if calibration.forces_scale is not None and "forces_std" in summary:
        per_atom = calibration.forces_scale * np.linalg.norm(summary["forces_std"], axis=-1)
        summary["forces_uncertainty"] = per_atom
        summary["forces_uncertainty_max"] = float(per_atom.max(initial=0.0))
    return summary
