"""``Potential``: a model, its parameters and its energy offsets, with host-side prediction for ASE structures."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Integral
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from jaxatom.errors import ConfigError, StructureError
from jaxatom.graph import Graph, HostGraph, batch_graphs
from jaxatom.neighbors import graph_from_atoms, host_graph
from jaxatom.nn.heads import Atomwise
from jaxatom.nn.model import EnergyModel
from jaxatom.nn.schnet import MAX_Z
from jaxatom.potential.evaluate import evaluate_jit

__all__ = ["Potential", "normalise_elements"]


def _symbols(numbers: Iterable[int]) -> str:
    return ", ".join(chemical_symbols[int(z)] for z in sorted(numbers))


def example_graph(cutoff: float) -> Graph:
    """A tiny padded molecule, used to initialise parameters and to read their shapes."""
    h2o = host_graph(np.array([[0.0, 0.0, 0.0], [0.76, 0.59, 0.0], [-0.76, 0.59, 0.0]]), [8, 1, 1], cutoff)
    return batch_graphs([h2o])


@dataclasses.dataclass(frozen=True, eq=False)
class Potential:
    """A trained (or freshly initialised) interatomic potential. Energies in eV, lengths in Å.

    The total energy is ``E = energy_scale * model(graph) + sum_i (energy_shift + atomrefs[Z_i])``: the model learns
    what is left after the mean energy per atom (``energy_shift``) and per-element reference energies (``atomrefs``)
    are removed, as in SchNetPack's ``RemoveOffsets``/``AddOffsets``.

    Attributes:
        model: the :class:`~jaxatom.nn.EnergyModel` (representation + energy head).
        params: its parameters (a pytree).
        elements: atomic numbers the model may be applied to.
        energy_scale: factor on the model energy.
        energy_shift: mean energy per atom (eV).
        atomrefs: reference energy per atomic number (eV).
        metadata: free-form provenance stored with the model (e.g. the units of an imported model).
    """

    model: EnergyModel
    params: Any
    elements: tuple[int, ...]
    energy_scale: float = 1.0
    energy_shift: float = 0.0
    atomrefs: Mapping[int, float] = dataclasses.field(default_factory=dict)
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def create(
        cls,
        representation,
        elements: Sequence[int],
        seed: int = 0,
        head: Atomwise | None = None,
        energy_scale: float = 1.0,
        energy_shift: float = 0.0,
        atomrefs: Mapping[int, float] | None = None,
    ) -> Potential:
        """Initialise a potential from a representation (``SchNet``/``PaiNN``) with random parameters.

        Args:
            representation: the representation module, e.g. ``PaiNN(n_atom_basis=64, cutoff=5.0)``.
            elements: atomic numbers (or symbols) the model will see.
            seed: random seed of the initialisation.
            head: energy head; default ``Atomwise()`` (pyramidal MLP with SiLU, summed over atoms).
            energy_scale, energy_shift, atomrefs: energy offsets, see the class docstring.
        """
        elements = normalise_elements(elements)
        model = EnergyModel(representation=representation, head=head or Atomwise())
        params = model.init(jax.random.PRNGKey(seed), example_graph(representation.cutoff))
        return cls(
            model=model,
            params=params,
            elements=elements,
            energy_scale=float(energy_scale),
            energy_shift=float(energy_shift),
            atomrefs={int(z): float(e) for z, e in (atomrefs or {}).items()},
        )

    @property
    def cutoff(self) -> float:
        """Cutoff radius of the representation (Å)."""
        return float(self.model.representation.cutoff)

    def replace(self, **changes) -> Potential:
        """A copy with some attributes changed (e.g. new ``params`` after training)."""
        return dataclasses.replace(self, **changes)

    def atom_offsets(self) -> np.ndarray:
        """``[100]`` energy offset per atomic number (eV, float64): ``energy_shift + atomrefs[Z]``."""
        table = np.full(MAX_Z, self.energy_shift, np.float64)
        for z, e in self.atomrefs.items():
            table[z] += e
        return table

    def check_elements(self, species: Iterable[int]) -> None:
        """Raise :class:`StructureError` (a ``ValueError``) if ``species`` contains elements the model does not know."""
        unknown = set(np.unique(np.asarray(list(species)))) - set(self.elements) - {0}
        if unknown:
            raise StructureError(
                f"the structure contains elements the model was not built for: {_symbols(unknown)}; "
                f"this model knows {_symbols(self.elements)} (retrain or choose another model)"
            )

    def evaluate(self, graph: Graph, stress: bool = False, include_offsets: bool = True) -> dict[str, jax.Array]:
        """Jitted energy, per-atom energies, forces and optionally stress of a padded :class:`Graph` (on device).

        With ``include_offsets=False`` energies exclude the offsets, which :meth:`predict` then adds in float64 on the
        host so that large total energies keep their precision in float32 mode.
        """
        offsets = self.atom_offsets() if include_offsets else np.zeros(MAX_Z)
        return evaluate_jit(
            self.model,
            self.params,
            graph,
            jnp.asarray(self.energy_scale, graph.positions.dtype),
            jnp.asarray(offsets, graph.positions.dtype),
            with_stress=stress,
        )

    def predict(self, structures: Atoms | Sequence[Atoms], batch_size: int = 32) -> dict | list[dict]:
        """Energy (eV), per-atom energies (eV), forces (eV/Å) and, for periodic input, stress (eV/Å³, 3x3).

        Takes one ``ase.Atoms`` (returns one dict) or a list of them (returns a list of dicts), evaluated in padded
        batches of up to ``batch_size`` structures.
        """
        return predict_structures(structures, self.cutoff, self.check_elements, self._predict_batch, batch_size)

    def _predict_batch(self, graphs: list[HostGraph]) -> list[dict]:
        batch = batch_graphs(graphs)
        with_stress = any(g.periodic for g in graphs)
        out = jax.device_get(self.evaluate(batch, stress=with_stress, include_offsets=False))
        offsets = self.atom_offsets()
        results, node0 = [], 0
        for index, g in enumerate(graphs):
            nodes = slice(node0, node0 + g.n_node)
            atom_offsets = offsets[g.species]
            result = {
                "energy": float(np.float64(out["energy"][index]) + atom_offsets.sum()),
                "energies": np.asarray(out["energies"][nodes], np.float64) + atom_offsets,
                "forces": np.asarray(out["forces"][nodes]),
            }
            if g.periodic:
                result["stress"] = np.asarray(out["stress"][index])
            results.append(result)
            node0 += g.n_node
        return results

    def save(self, path) -> None:
        """Write the portable model file (a directory, or a zip if ``path`` ends in ``.zip``); see :mod:`.io`."""
        from jaxatom.potential.io import save_model

        save_model(self, path)


def predict_structures(
    structures: Atoms | Sequence[Atoms],
    cutoff: float,
    check_elements: Callable[[Iterable[int]], None],
    predict_batch: Callable[[list[HostGraph]], list[dict]],
    batch_size: int,
) -> dict | list[dict]:
    """Check each structure's elements, build its host graph and predict in batches of ``batch_size``: one dict for
    one ``ase.Atoms``, a list for a list (shared by :class:`Potential` and ensembles)."""
    single = isinstance(structures, Atoms)
    atoms_list = [structures] if single else list(structures)
    graphs = []
    for atoms in atoms_list:
        check_elements(atoms.numbers)
        graphs.append(graph_from_atoms(atoms, cutoff))
    results = []
    for start in range(0, len(graphs), batch_size):
        results.extend(predict_batch(graphs[start : start + batch_size]))
    return results[0] if single else results


def normalise_elements(elements: Sequence[int | str]) -> tuple[int, ...]:
    """Atomic numbers or symbols as sorted unique atomic numbers; a :class:`ConfigError` for anything else."""
    if isinstance(elements, str | int):
        elements = [elements]
    numbers = {_atomic_number(element) for element in elements}
    if not numbers:
        raise ConfigError("a potential needs at least one element; pass e.g. elements=['H', 'C', 'O']")
    return tuple(sorted(numbers))


def _atomic_number(element: int | str) -> int:
    if isinstance(element, str):
        if element not in chemical_symbols[1:MAX_Z]:
            raise ConfigError(f"unknown element symbol {element!r}; use symbols such as 'H', 'C', 'O' (Z < {MAX_Z})")
        return chemical_symbols.index(element)
    if isinstance(element, bool) or not isinstance(element, Integral) or not 1 <= element < MAX_Z:
        raise ConfigError(f"atomic numbers must be integers in 1..{MAX_Z - 1}, got {element!r}")
    return int(element)
