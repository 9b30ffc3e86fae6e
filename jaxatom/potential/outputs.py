"""Per-output scale and offsets (SchNetPack's ``ScaleProperty``/``AddOffsets``) and the host-side split of a
batch's outputs into one result per structure, offsets added in float64."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from jaxatom.graph import HostGraph
from jaxatom.nn.heads import OutputSpec
from jaxatom.nn.schnet import MAX_Z

__all__ = ["OutputScaling", "split_outputs", "PER_ATOM_DERIVED", "HOST_OFFSETS"]

#: Derived outputs with one value per atom.
PER_ATOM_DERIVED = ("forces",)
#: The scaling whose offsets predictions add on the host in float64 (total energies of ~10⁴ eV need more than
#: float32's 7 digits); every other output's offsets are small and added on the device.
HOST_OFFSETS = "energy"


@dataclasses.dataclass(frozen=True)
class OutputScaling:
    """``output = scale * model_output + offsets``, offsets per atom ``shift + atomrefs[Z]`` (summed over a
    structure for extensive outputs, averaged for intensive ones; added per atom to per-atom outputs).

    Units are the output's: for the energy ``scale`` is dimensionless, ``shift`` the mean energy per atom (eV) and
    ``atomrefs`` the reference energy per atomic number (eV).

    A multi-fidelity output (levels of theory differ by eV per atom) has ``fidelity_atomrefs``: one ``{Z: value}``
    per fidelity, added per atom on top of ``shift + atomrefs[Z]`` for structures of that fidelity; empty otherwise.
    """

    scale: float = 1.0
    shift: float = 0.0
    atomrefs: Mapping[int, float] = dataclasses.field(default_factory=dict)
    fidelity_atomrefs: tuple[Mapping[int, float], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "shift", float(self.shift))
        object.__setattr__(self, "atomrefs", _refs(self.atomrefs))
        object.__setattr__(self, "fidelity_atomrefs", tuple(_refs(refs) for refs in self.fidelity_atomrefs))

    @property
    def n_fidelities(self) -> int:
        """Number of fidelities with their own offsets (0: one set of offsets for all)."""
        return len(self.fidelity_atomrefs)

    def table(self, fidelity: int | None = None) -> np.ndarray:
        """``[100]`` offset per atomic number (float64), at fidelity index ``fidelity`` (None: the target, the
        last) for multi-fidelity outputs."""
        table = np.full(MAX_Z, self.shift, np.float64)
        for z, value in self.atomrefs.items():
            table[z] += value
        if self.fidelity_atomrefs:
            for z, value in self.fidelity_atomrefs[-1 if fidelity is None else fidelity].items():
                table[z] += value
        return table

    def tables(self) -> np.ndarray:
        """``[fidelities, 100]`` offsets per fidelity index and atomic number (float64); ``[100]`` (:meth:`table`)
        for single-fidelity outputs."""
        if not self.fidelity_atomrefs:
            return self.table()
        return np.stack([self.table(k) for k in range(self.n_fidelities)])

    def at_fidelity(self, fidelity: int | None = None) -> OutputScaling:
        """The single-fidelity scaling of fidelity index ``fidelity`` (None: the target): the same offsets for
        structures of that fidelity."""
        if not self.fidelity_atomrefs:
            return self
        extra = self.fidelity_atomrefs[-1 if fidelity is None else fidelity]
        refs = {z: self.atomrefs.get(z, 0.0) + extra.get(z, 0.0) for z in {*self.atomrefs, *extra}}
        return OutputScaling(self.scale, self.shift, refs)

    def to_dict(self) -> dict:
        """JSON form (``config.json`` of a model file); ``fidelity_atomrefs`` only when there are some."""
        values = {
            "scale": self.scale,
            "shift": self.shift,
            "atomrefs": _json_refs(self.atomrefs),
        }
        if self.fidelity_atomrefs:
            values["fidelity_atomrefs"] = [_json_refs(refs) for refs in self.fidelity_atomrefs]
        return values

    @classmethod
    def from_dict(cls, values: Mapping) -> OutputScaling:
        """Inverse of :meth:`to_dict`."""
        return cls(float(values.get("scale", 1.0)), float(values.get("shift", 0.0)), values.get("atomrefs", {}),
                   tuple(values.get("fidelity_atomrefs", ())))  # fmt: skip


def _refs(refs: Mapping) -> dict[int, float]:
    return {int(z): float(v) for z, v in refs.items()}


def _json_refs(refs: Mapping[int, float]) -> dict[str, float]:
    return {str(z): v for z, v in sorted(refs.items())}


def _offset(spec: OutputSpec, table: np.ndarray, species: np.ndarray) -> np.ndarray | float:
    per_atom = table[species]
    if spec.per_atom:
        return per_atom
    return per_atom.mean() if spec.aggregation == "avg" else per_atom.sum()


def split_outputs(
    out: Mapping[str, np.ndarray],
    graphs: Sequence[HostGraph],
    specs: Sequence[OutputSpec],
    scaling: Mapping[str, OutputScaling],
    per_atom: Collection[str] = (),
) -> list[dict]:
    """One dict per structure of a batch's outputs (``[G, ...]`` per structure, ``[N, ...]`` per atom, as numpy
    arrays on the host, the energy's offsets left out), with the energy's offsets (:data:`HOST_OFFSETS`) added in
    float64, at each structure's ``fidelity`` (None: the target) for multi-fidelity outputs. Per-structure scalars
    become Python floats. ``per_atom`` names further per-atom entries (e.g. features) beside the specs' and
    ``forces``."""
    by_name = {spec.name: spec for spec in specs}
    host = {name: values for name, values in scaling.items() if name == HOST_OFFSETS}
    atom_keys = {*per_atom, *PER_ATOM_DERIVED, *(spec.name for spec in specs if spec.per_atom)}
    results, node0 = [], 0
    for index, graph in enumerate(graphs):
        nodes = slice(node0, node0 + graph.n_node)
        result = {}
        for name, values in out.items():
            if name == "stress" and not graph.periodic:
                continue
            value = values[nodes] if name in atom_keys else values[index]
            spec = by_name.get(name)
            if spec is not None and spec.scaling in host:
                offset = _offset(spec, host[spec.scaling].table(graph.fidelity), graph.species)
                value = np.asarray(value, np.float64) + np.reshape(
                    offset, np.shape(offset) + (1,) * (value.ndim - np.ndim(offset))
                )
            result[name] = float(value) if np.ndim(value) == 0 else np.asarray(value)
        results.append(result)
        node0 += graph.n_node
    return results
