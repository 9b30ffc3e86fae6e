"""``Potential``: a model, its parameters and its per-output scales and offsets, with host-side prediction for ASE
structures."""

from __future__ import annotations

import dataclasses
import functools
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
from jaxatom.nn.model import ENERGY_HEAD, AtomisticModel
from jaxatom.nn.schnet import MAX_Z
from jaxatom.potential.evaluate import evaluate_jit
from jaxatom.potential.field import batch_fields, check_field_model, field_array
from jaxatom.potential.outputs import HOST_OFFSETS, OutputScaling, split_outputs

__all__ = ["Potential", "OutputScaling", "normalise_elements"]


def _symbols(numbers: Iterable[int]) -> str:
    return ", ".join(chemical_symbols[int(z)] for z in sorted(numbers))


def example_graph(cutoff: float) -> Graph:
    """A tiny padded molecule, used to initialise parameters and to read their shapes."""
    h2o = host_graph(np.array([[0.0, 0.0, 0.0], [0.76, 0.59, 0.0], [-0.76, 0.59, 0.0]]), [8, 1, 1], cutoff)
    return batch_graphs([h2o])


@dataclasses.dataclass(frozen=True, eq=False)
class Potential:
    """A trained (or freshly initialised) model of named outputs. Energies in eV, lengths in Å.

    Each output is ``scale * model_output + offsets``, with a scale and offsets per output name (``scaling``), as
    SchNetPack's ``ScaleProperty``/``AddOffsets``: for the energy ``E = scale * model(graph) + sum_i (shift +
    atomrefs[Z_i])``, so the model learns what is left after the mean energy per atom and per-element reference
    energies are removed. Offsets are added on the host in float64 by :meth:`predict`. A multi-fidelity model
    (:attr:`fidelities`) has offsets per fidelity and predicts at a chosen one (:meth:`predict`, :meth:`at_fidelity`).

    Attributes:
        model: the :class:`~jaxatom.nn.AtomisticModel` (representation + output heads).
        params: its parameters (a pytree).
        elements: atomic numbers the model may be applied to.
        scaling: :class:`OutputScaling` per output name (absent: the raw output).
        metadata: free-form provenance stored with the model (e.g. the units of an imported model).
    """

    model: AtomisticModel
    params: Any
    elements: tuple[int, ...]
    scaling: Mapping[str, OutputScaling] = dataclasses.field(default_factory=dict)
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def create(
        cls,
        representation,
        elements: Sequence[int],
        seed: int = 0,
        heads: Sequence | None = None,
        scaling: Mapping[str, OutputScaling] | None = None,
        head=None,
        energy_scale: float = 1.0,
        energy_shift: float = 0.0,
        atomrefs: Mapping[int, float] | None = None,
    ) -> Potential:
        """Initialise a potential from a representation (``SchNet``/``PaiNN``) and heads with random parameters.

        Args:
            representation: the representation module, e.g. ``PaiNN(n_atom_basis=64, cutoff=5.0)``.
            elements: atomic numbers (or symbols) the model will see.
            seed: random seed of the initialisation.
            heads: output heads; default the energy ``Atomwise`` with per-atom energies (:data:`ENERGY_HEAD`).
            scaling: scale and offsets per output name.
            head: one head instead of ``heads`` (``heads=[head]``).
            energy_scale, energy_shift, atomrefs: shorthand for ``scaling["energy"]`` (scale, mean energy per atom in
                eV, reference energy per atomic number in eV).
        """
        elements = normalise_elements(elements)
        heads = tuple(heads) if heads is not None else (head,) if head is not None else (ENERGY_HEAD,)
        model = AtomisticModel(representation=representation, heads=heads)
        params = model.init(jax.random.PRNGKey(seed), example_graph(representation.cutoff))
        scaling = dict(scaling or {})
        if (energy_scale, energy_shift, atomrefs) != (1.0, 0.0, None):
            scaling["energy"] = OutputScaling(energy_scale, energy_shift, atomrefs or {})
        return cls(model=model, params=params, elements=elements, scaling=scaling)

    @property
    def cutoff(self) -> float:
        """Cutoff radius of the representation (Å); a Δ-model's largest (base or own)."""
        return self.model.cutoff

    @property
    def fidelities(self) -> tuple[str, ...]:
        """Levels of theory of a multi-fidelity model, cheapest first; the last is the target, at which predictions,
        calculators and MD evaluate by default. Empty for single-fidelity models."""
        return self.model.fidelities

    def fidelity_index(self, fidelity: str | int | None) -> int | None:
        """The index of ``fidelity`` (a name of :attr:`fidelities` or an index; None: None, the target)."""
        if fidelity is None:
            return None
        names = self.fidelities
        if not names:
            raise ConfigError(f"fidelity {fidelity!r} asked of a single-fidelity model; leave fidelity unset")
        if isinstance(fidelity, str) and fidelity in names:
            return names.index(fidelity)
        if isinstance(fidelity, Integral) and not isinstance(fidelity, bool) and 0 <= fidelity < len(names):
            return int(fidelity)
        raise ConfigError(f"unknown fidelity {fidelity!r}; this model has {', '.join(names)} (or 0..{len(names) - 1})")

    def at_fidelity(self, fidelity: str | int | None = None) -> Potential:
        """The single-fidelity potential that predicts what this one predicts at ``fidelity`` (a name or index;
        None: the target): each multi-fidelity head cut to that fidelity's columns, its offsets to that fidelity's.
        A single-fidelity potential is returned as it is (``fidelity`` must then be None)."""
        index = self.fidelity_index(fidelity)
        if not self.fidelities:
            return self
        index = len(self.fidelities) - 1 if index is None else index
        heads, inner = [], dict(self.params["params"])
        for head in self.model.heads:
            if getattr(head, "fidelities", ()):
                head, inner[head.key] = head.single_fidelity(inner[head.key], index)
            heads.append(head)
        names = {spec.scaling for spec in self.model.outputs if spec.fidelities}
        scaling = {name: s.at_fidelity(index) if name in names else s for name, s in self.scaling.items()}
        model = self.model.clone(heads=tuple(heads))
        metadata = {**self.metadata, "fidelity": self.fidelities[index]}
        return self.replace(model=model, params={**self.params, "params": inner}, scaling=scaling, metadata=metadata)

    @property
    def outputs(self) -> tuple[str, ...]:
        """Every output :meth:`predict` returns (the heads' outputs, then ``forces``/``stress`` from the energy)."""
        return self.model.output_names

    @property
    def energy_scale(self) -> float:
        """Factor on the model energy (``scaling["energy"].scale``)."""
        return self.scaling.get("energy", OutputScaling()).scale

    @property
    def energy_shift(self) -> float:
        """Mean energy per atom (eV) added to the model energy (``scaling["energy"].shift``)."""
        return self.scaling.get("energy", OutputScaling()).shift

    @property
    def atomrefs(self) -> Mapping[int, float]:
        """Reference energy per atomic number (eV) added to the model energy (``scaling["energy"].atomrefs``)."""
        return self.scaling.get("energy", OutputScaling()).atomrefs

    def replace(self, **changes) -> Potential:
        """A copy with some attributes changed (e.g. new ``params`` after training); ``energy_scale``,
        ``energy_shift`` and ``atomrefs`` change ``scaling["energy"]``."""
        energy = {k: changes.pop(k) for k in ("energy_scale", "energy_shift", "atomrefs") if k in changes}
        if energy:
            old = self.scaling.get("energy", OutputScaling())
            new = OutputScaling(energy.get("energy_scale", old.scale), energy.get("energy_shift", old.shift),
                                energy.get("atomrefs", old.atomrefs))  # fmt: skip
            changes["scaling"] = {**changes.get("scaling", self.scaling), "energy": new}
        return dataclasses.replace(self, **changes)

    def atom_offsets(self, name: str = "energy") -> np.ndarray:
        """``[100]`` offset per atomic number of output ``name`` (float64): ``shift + atomrefs[Z]`` (zeros if none)."""
        return self.scaling.get(name, OutputScaling()).table()

    def scaling_arrays(
        self, dtype, include_offsets: bool = True, host_offsets: bool = False
    ) -> dict[str, dict[str, jax.Array]]:
        """The device form of :attr:`scaling` for :func:`~jaxatom.potential.evaluate.evaluate`: offsets zero when
        not ``include_offsets`` (training labels come without them), and the energy's zero with ``host_offsets``
        (the host adds them in float64, see :data:`~jaxatom.potential.outputs.HOST_OFFSETS`)."""

        def offsets(name: str, scaling: OutputScaling) -> np.ndarray:
            on_device = include_offsets and not (host_offsets and name == HOST_OFFSETS)
            return scaling.tables() if on_device else np.zeros(MAX_Z)

        return {
            name: {"scale": jnp.asarray(scaling.scale, dtype), "offsets": jnp.asarray(offsets(name, scaling), dtype)}
            for name, scaling in self.scaling.items()
        }

    def check_elements(self, species: Iterable[int]) -> None:
        """Raise :class:`StructureError` (a ``ValueError``) if ``species`` contains elements the model does not know."""
        unknown = set(np.unique(np.asarray(list(species)))) - set(self.elements) - {0}
        if unknown:
            raise StructureError(
                f"the structure contains elements the model was not built for: {_symbols(unknown)}; "
                f"this model knows {_symbols(self.elements)} (retrain or choose another model)"
            )

    def evaluate(
        self, graph: Graph, stress: bool = False, include_offsets: bool = True, field: jax.Array | None = None
    ) -> dict[str, jax.Array]:
        """Jitted outputs, forces and optionally stress of a padded :class:`Graph` (on device).

        With ``include_offsets=False`` the energy's offsets are left out, which :meth:`predict` then adds in float64
        on the host so that large total energies keep their precision in float32 mode (other outputs carry theirs).
        ``field`` ``[G, 3]`` (V/Å) puts the structures in a uniform electric field (:mod:`~jaxatom.potential.field`).
        """
        scaling = self.scaling_arrays(graph.positions.dtype, host_offsets=not include_offsets)
        return evaluate_jit(self.model, self.params, graph, scaling, with_stress=stress, field=field)

    def predict(
        self,
        structures: Atoms | Sequence[Atoms],
        batch_size: int = 32,
        field: Sequence[float] | None = None,
        fidelity: str | int | None = None,
    ) -> dict | list[dict]:
        """Every output of the model for ASE structures, in jaxatom units: e.g. ``energy`` (eV), ``energies [n]``
        (eV), ``forces [n, 3]`` (eV/Å), ``dipole_moment [3]`` (e·Å), ``charges [n]`` (e), ``polarizability
        [3, 3]`` (Å³) and, for periodic input, ``stress`` (eV/Å³, 3x3).

        Takes one ``ase.Atoms`` (returns one dict) or a list of them (returns a list of dicts), evaluated in padded
        batches of up to ``batch_size`` structures. The total charge of each structure is ``atoms.info["charge"]``
        (else the sum of its initial charges). ``field`` (V/Å, ``[3]``) puts every structure in that uniform
        electric field: ``energy`` and ``forces`` then include the field terms (:mod:`~jaxatom.potential.field`).
        A multi-fidelity model predicts at ``fidelity`` (a name of :attr:`fidelities` or an index; None: the target).
        """
        field = field_array(field)
        if field is not None:
            check_field_model(self.model)
        predict_batch = functools.partial(self._predict_batch, field=field, fidelity=self.fidelity_index(fidelity))
        return predict_structures(structures, self.cutoff, self.check_elements, predict_batch, batch_size)

    def _predict_batch(
        self, graphs: list[HostGraph], field: np.ndarray | None = None, fidelity: int | None = None
    ) -> list[dict]:
        if fidelity is not None:
            graphs = [dataclasses.replace(graph, fidelity=fidelity) for graph in graphs]
        batch = batch_graphs(graphs)
        with_stress = any(g.periodic for g in graphs)
        fields = None if field is None else batch_fields(field, batch)
        out = jax.device_get(self.evaluate(batch, stress=with_stress, include_offsets=False, field=fields))
        out = {name: out[name] for name in self.outputs if name in out}
        return split_outputs(out, graphs, self.model.outputs, self.scaling)

    def features(self, structures: Atoms | Sequence[Atoms], batch_size: int = 32) -> dict | list[dict]:
        """Per-atom features of the representation, for analysis (e.g. clustering chemical environments).

        Returns for each structure of ``n`` atoms: ``scalar [n, F]`` (invariant features), ``vector [n, 3, F]``
        (equivariant features; PaiNN only) and, for energy models, ``energies [n]`` (each atom's energy
        contribution, eV, offsets included).
        """
        return predict_structures(structures, self.cutoff, self.check_elements, self._features_batch, batch_size)

    def _features_batch(self, graphs: list[HostGraph]) -> list[dict]:
        out = jax.device_get(self.evaluate(batch_graphs(graphs), include_offsets=False))
        results = split_outputs(
            {k: out[k] for k in ("scalar", "vector", "energies") if k in out}, graphs, self.model.outputs,
            self.scaling, per_atom=("scalar", "vector"),
        )  # fmt: skip
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
