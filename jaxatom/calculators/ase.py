"""ASE calculators: one potential (:class:`JaxAtomCalculator`) or an ensemble (:class:`EnsembleCalculator`).

Each call builds the exact neighbour list on the host (:func:`~jaxatom.neighbors.graph_from_atoms`) and pads it to a
capacity the calculator keeps (:class:`Capacity`), so that an ASE MD run, where the number of neighbour pairs
fluctuates from step to step, reuses one compiled shape instead of recompiling. Energies are in eV, forces in eV/Å,
stress in eV/Å³ as ASE's Voigt 6-vector ``[xx, yy, zz, yz, xz, xy]`` with ASE's sign, ``(1/V) dE/d(strain)``.
Stress is computed with every evaluation of a periodic structure (the strain derivative shares the backward pass of
the forces), so asking for it after the forces does not evaluate again; for molecules it raises ASE's
``PropertyNotImplementedError``. Every other output of the model comes with each evaluation too: a dipole moment
(e·Å) as ASE's ``dipole`` (``atoms.get_dipole_moment()``), partial charges (e) as ``charges``
(``atoms.get_charges()``), a polarizability (Å³) as ``results["polarizability"]``, and any other output under its
name. The total charge of a structure is ``atoms.info["charge"]`` (else the sum of its initial charges).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import jax
import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from jaxatom.graph import Graph, HostGraph, batch_graphs
from jaxatom.neighbors import graph_from_atoms
from jaxatom.potential import Potential, PotentialEnsemble, load_model
from jaxatom.potential.field import batch_fields, check_field_model, field_array
from jaxatom.potential.outputs import split_outputs

__all__ = ["Capacity", "JaxAtomCalculator", "EnsembleCalculator"]


@dataclasses.dataclass
class Capacity:
    """Padded size of one axis (nodes or edges) with hysteresis.

    Grows to ``headroom × need`` (rounded up to ``multiple``) when the need exceeds the size; shrinks to the same
    target only once the need has stayed below ``shrink_below × size`` for ``shrink_after`` consecutive calls, so
    fluctuations never change the size, while a calculator moved to a much smaller system stops padding it to the old
    size after a while.
    """

    multiple: int
    headroom: float = 1.25
    shrink_below: float = 0.5
    shrink_after: int = 20
    size: int = 0
    low_calls: int = 0

    def fit(self, need: int) -> int:
        """The padded size for ``need`` entries (updates the state)."""
        need = max(need, 1)
        low = need < self.shrink_below * self.size
        self.low_calls = self.low_calls + 1 if low else 0
        if need > self.size or self.low_calls >= self.shrink_after:
            self.size = self.multiple * math.ceil(self.headroom * need / self.multiple)
            self.low_calls = 0
        return self.size


#: ASE's names of model outputs that ASE knows under another name.
ASE_NAMES = {"dipole_moment": "dipole"}


def _ase_properties(outputs: Sequence[str], suffixes: Sequence[str] = ("",)) -> list[str]:
    """The ASE property names of a model's outputs (energy models also give ``free_energy``)."""
    names = [ASE_NAMES.get(name, name) + suffix for name in outputs for suffix in suffixes]
    return names + (["free_energy"] if "energy" in outputs else [])


def _ase_results(result: dict, with_stress: bool) -> dict:
    """A :meth:`Potential.predict` result as ASE results: float64 arrays, ASE's names added, Voigt stress."""
    results = {key: np.asarray(value, np.float64) if isinstance(value, np.ndarray) else value
               for key, value in result.items()}  # fmt: skip
    for ours, ase_name in ASE_NAMES.items():
        for suffix in ("", "_std", "_members"):
            if ours + suffix in results:
                results[ase_name + suffix] = results[ours + suffix]
    if "energy" in results:
        results["free_energy"] = results["energy"]
    for key in ("stress", "stress_std"):
        if with_stress and key in results:
            results[key] = full_3x3_to_voigt_6_stress(results[key])
    return results


class _PaddedCalculator(Calculator):
    """Shared machinery: input checks, capacities, the stress rule, and the record of compiled shapes."""

    def __init__(self, model: Potential | PotentialEnsemble, shrink_after: int = 20, **kwargs):
        super().__init__(**kwargs)
        self._model = model
        self.node_capacity = Capacity(multiple=8, shrink_after=shrink_after)
        self.edge_capacity = Capacity(multiple=64, shrink_after=shrink_after)
        #: Distinct ``(n_node, n_edge, with_stress, dtype)`` shapes evaluated so far (each compiled at most once).
        self.shapes: set[tuple[int, int, bool, str]] = set()

    @property
    def n_shapes(self) -> int:
        """Number of distinct padded shapes this calculator has evaluated (an upper bound on its compiles)."""
        return len(self.shapes)

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        with_stress = bool(atoms.pbc.any())
        if not with_stress and any(p.startswith("stress") for p in properties):
            raise PropertyNotImplementedError(
                "stress is defined only for periodic structures; set atoms.pbc and atoms.cell to get it"
            )
        self._model.check_elements(atoms.numbers)
        graph = graph_from_atoms(atoms, self._model.cutoff)
        n_node = self.node_capacity.fit(graph.n_node + 1)
        n_edge = self.edge_capacity.fit(graph.n_edge)
        self.shapes.add((n_node, n_edge, with_stress, graph.positions.dtype.name))
        self.results = self._results(graph, n_node, n_edge, with_stress)

    def _results(self, graph: HostGraph, n_node: int, n_edge: int, with_stress: bool) -> dict:
        raise NotImplementedError


class JaxAtomCalculator(_PaddedCalculator):
    """ASE calculator for one :class:`~jaxatom.potential.Potential`.

    Results: every output of :meth:`Potential.predict` — ``energy`` and ``free_energy`` (eV, offsets added in float64
    on the host), per-atom ``energies`` (eV), ``forces [n, 3]`` (eV/Å), for periodic structures ``stress`` (Voigt
    6-vector, eV/Å³), and e.g. ``dipole [3]`` (e·Å), ``charges [n]`` (e), ``polarizability [3, 3]`` (Å³) for models
    with those heads. Works in float32 (default) and float64 (:func:`jaxatom.enable_x64`).

    Args:
        model: a :class:`Potential` or the path of a model directory/zip written by :meth:`Potential.save`.
        shrink_after: calls with a need below half the capacity before the padded size shrinks (see
            :class:`Capacity`).
        electric_field: a uniform electric field ``(Ex, Ey, Ez)`` in V/Å for models with a dipole head: energy and
            forces include ``−μ·F − ½ F·α·F / k_e`` (:mod:`jaxatom.potential.field`), e.g. for MD or relaxation in
            a field.
        fidelity: for a multi-fidelity model, the level of theory to predict (a name of ``Potential.fidelities``
            or an index); None: the model's target (last) fidelity.
        **kwargs: passed to ``ase.calculators.calculator.Calculator`` (e.g. ``label``).
    """

    def __init__(
        self,
        model: Potential | str | os.PathLike,
        shrink_after: int = 20,
        electric_field: Sequence[float] | None = None,
        fidelity: str | int | None = None,
        **kwargs,
    ):
        potential = model if isinstance(model, Potential) else load_model(model)
        self.potential = potential.at_fidelity(fidelity)
        self.electric_field = field_array(electric_field)
        if self.electric_field is not None:
            check_field_model(self.potential.model)
        self.implemented_properties = _ase_properties(self.potential.outputs)
        super().__init__(self.potential, shrink_after=shrink_after, **kwargs)

    def _results(self, graph: HostGraph, n_node: int, n_edge: int, with_stress: bool) -> dict:
        batch: Graph = batch_graphs([graph], n_node=n_node, n_edge=n_edge)
        field = None if self.electric_field is None else batch_fields(self.electric_field, batch)
        out = jax.device_get(self.potential.evaluate(batch, stress=with_stress, include_offsets=False, field=field))
        out = {name: out[name] for name in self.potential.outputs if name in out}
        result = split_outputs(out, [graph], self.potential.model.outputs, self.potential.scaling)[0]
        return _ase_results(result, with_stress)


class EnsembleCalculator(_PaddedCalculator):
    """ASE calculator for a :class:`~jaxatom.potential.PotentialEnsemble`: the members' mean and spread.

    Results: for every output ``X`` of the members (see :meth:`PotentialEnsemble.predict`), the members' mean ``X``,
    population standard deviation ``X_std`` (``ddof=0``, per component) and each member's values ``X_members``
    (leading axis ``[M]``): e.g. ``energy``/``free_energy`` (eV), ``energy_std``, ``energy_members [M]``,
    ``forces [n, 3]`` (eV/Å), ``forces_std``, ``forces_members [M, n, 3]``, for periodic structures ``stress`` and
    ``stress_std`` (Voigt, eV/Å³), and ``dipole``/``charges``/``polarizability`` for models with those heads. The
    ``*_std`` values are also available through ``calc.get_property("energy_std", atoms)``.

    Args:
        models: a :class:`PotentialEnsemble`, or a list of :class:`Potential` objects or model paths.
        shrink_after, electric_field: see :class:`JaxAtomCalculator`.
        **kwargs: passed to ``ase.calculators.calculator.Calculator``.
    """

    def __init__(
        self,
        models: PotentialEnsemble | Sequence[Potential | str | os.PathLike],
        shrink_after: int = 20,
        electric_field: Sequence[float] | None = None,
        **kwargs,
    ):
        self.ensemble = models if isinstance(models, PotentialEnsemble) else PotentialEnsemble.from_potentials(models)
        self.electric_field = field_array(electric_field)
        if self.electric_field is not None:
            check_field_model(self.ensemble.model)
        self.implemented_properties = _ase_properties(self.ensemble.outputs, ("", "_std", "_members"))
        super().__init__(self.ensemble, shrink_after=shrink_after, **kwargs)

    def _results(self, graph: HostGraph, n_node: int, n_edge: int, with_stress: bool) -> dict:
        result = self.ensemble.predict_graphs([graph], n_node=n_node, n_edge=n_edge, field=self.electric_field)[0]
        return _ase_results(result, with_stress)
