"""Second derivatives of a :class:`~jaxatom.Potential` by automatic differentiation: the energy Hessian, atomic polar
tensors (∂μ/∂R) and polarizability derivatives (∂α/∂R), for one structure or a batch of equal-sized ones.

Each structure gets a graph whose edges are fixed at its geometry: every ordered pair of atoms for a molecule (the
all-pairs regime; the model's cutoff masks distant pairs, so the energy surface is the model's own everywhere), and the
exact host neighbour list (edges and periodic image shifts) for a periodic structure. The positions are then
differentiated with ``jax.jacrev`` of the forces (reverse over reverse: PaiNN's
``split_last`` has a custom VJP, which forward mode cannot enter) — exact derivatives of the model at that
geometry; in the periodic case valid while no pair crosses the cutoff, which an infinitesimal displacement never does
(every cutoff function is zero with its first derivative at the cutoff). Several structures with the same number of
atoms are padded to one shape and evaluated in one ``vmap``.

Offsets (mean energy per atom, per-element reference energies) are constant and drop out of every derivative; the
energy returned adds them on the host in float64. The working precision is that of JAX (``jaxatom.enable_x64``): in
float32 a Hessian element carries a relative rounding error of ~1e-6 of the largest force constants, so soft modes
below ~50 cm⁻¹ and the residual translations/rotations are noisy — use float64 for vibrational analysis.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import numpy as np
from ase import Atoms

from jaxatom.errors import ConfigError
from jaxatom.graph import Graph, batch_graphs, bucket_size
from jaxatom.neighbors import graph_from_atoms
from jaxatom.potential.evaluate import evaluate

__all__ = ["Derivatives", "derivatives", "hessian", "DIPOLE_KEY", "POLARIZABILITY_KEY"]

#: Output names whose derivatives :func:`derivatives` computes when the model has them.
DIPOLE_KEY = "dipole_moment"
POLARIZABILITY_KEY = "polarizability"


@dataclass(frozen=True, eq=False)
class Derivatives:
    """Values and position derivatives of a potential at one structure of ``N`` atoms (numpy, float64).

    Attributes:
        energy: potential energy (eV), offsets included.
        forces: ``[N, 3]`` forces (eV/Å).
        hessian: ``[3N, 3N]`` ∂²E/∂Rᵢ∂Rⱼ (eV/Å²), row/column index ``3 * atom + axis``.
        dipole_derivatives: ``[3N, 3]`` atomic polar tensors ∂μ_b/∂R_i (e), or None without a dipole output.
        polarizability_derivatives: ``[3N, 3, 3]`` ∂α/∂R_i (Å²), or None without a polarizability output.
    """

    energy: float
    forces: np.ndarray
    hessian: np.ndarray
    dipole_derivatives: np.ndarray | None = None
    polarizability_derivatives: np.ndarray | None = None

    @property
    def max_force(self) -> float:
        """Largest force on an atom (eV/Å), ASE's ``fmax`` measure."""
        return float(np.max(np.linalg.norm(self.forces, axis=1))) if len(self.forces) else 0.0


def _fixed_graph(potential, atoms: Atoms):
    potential.check_elements(atoms.numbers)
    edges = "cutoff" if atoms.pbc.any() else "all_pairs"
    return graph_from_atoms(atoms, potential.cutoff, edges=edges)


def _tensor_outputs(potential) -> tuple[str, ...]:
    """The dipole and polarizability outputs the model has, with the shapes their derivatives need."""
    shapes = {spec.name: spec.shape for spec in potential.model.outputs if not spec.per_atom}
    if "energy" not in shapes:
        raise ConfigError(f"vibrational analysis needs an energy output; this model predicts {sorted(shapes)}")
    wanted = {DIPOLE_KEY: (3,), POLARIZABILITY_KEY: (3, 3)}
    return tuple(name for name, shape in wanted.items() if shapes.get(name) == shape)


def _single(model, params, graph: Graph, scaling, n_atoms: int, names: tuple[str, ...]):
    """Values and Jacobians of forces and tensor outputs w.r.t. the first ``n_atoms`` positions of one padded
    structure (graph 0)."""

    def outputs(x):
        g = graph.replace(positions=graph.positions.at[:n_atoms].set(x))
        out = evaluate(model, params, g, scaling)
        selected = {"forces": out["forces"][:n_atoms], **{name: out[name][0] for name in names}}
        return selected, {**selected, "energy": out["energy"][0]}

    jacobians, values = jax.jacrev(outputs, has_aux=True)(graph.positions[:n_atoms])
    return values, jacobians


@functools.partial(jax.jit, static_argnames=("model", "n_atoms", "names"))
def _batched(model, params, graphs: Graph, scaling, n_atoms: int, names: tuple[str, ...]):
    return jax.vmap(lambda g: _single(model, params, g, scaling, n_atoms, names))(graphs)


def _stack(graphs: Sequence) -> Graph:
    n_node = bucket_size(graphs[0].n_node + 1, 8)
    n_edge = bucket_size(max(max(g.n_edge for g in graphs), 1), 64)
    padded = [batch_graphs([g], n_node=n_node, n_edge=n_edge, n_graph=2) for g in graphs]
    return jax.tree.map(lambda *leaves: np.stack(leaves), *padded)


def derivatives(
    potential, structures: Atoms | Sequence[Atoms], tensors: bool = True
) -> Derivatives | list[Derivatives]:
    """Energy, forces, Hessian and — when the model has them — dipole and polarizability derivatives.

    Args:
        potential: a :class:`~jaxatom.Potential` with an energy output (and optionally ``dipole_moment [3]``,
            ``polarizability [3, 3]``).
        structures: one ``ase.Atoms`` or a list of them, all with the same number of atoms (e.g. conformers or
            displaced copies of one molecule), evaluated together in one ``vmap``.
        tensors: also differentiate the dipole and polarizability outputs (when the model has them).

    Returns:
        One :class:`Derivatives` for one structure, a list for a list.
    """
    single = isinstance(structures, Atoms)
    atoms_list = [structures] if single else list(structures)
    if not atoms_list:
        raise ConfigError("derivatives needs at least one structure")
    sizes = sorted({len(atoms) for atoms in atoms_list})
    if len(sizes) > 1:
        raise ConfigError(f"batched derivatives need structures of one size, got {sizes} atoms; call once per size")
    names = _tensor_outputs(potential)  # refuses a model without an energy
    names = names if tensors else ()
    graphs = [_fixed_graph(potential, atoms) for atoms in atoms_list]
    batch = _stack(graphs)
    scaling = potential.scaling_arrays(batch.positions.dtype, include_offsets=False)
    values, jacobians = jax.device_get(_batched(potential.model, potential.params, batch, scaling, sizes[0], names))
    offsets = potential.atom_offsets("energy")
    results = [_unpack(values, jacobians, k, float(np.sum(offsets[atoms.numbers])))
               for k, atoms in enumerate(atoms_list)]  # fmt: skip
    return results[0] if single else results


def _unpack(values: dict, jacobians: dict, k: int, energy_offset: float) -> Derivatives:
    as64 = lambda a: np.asarray(a[k], np.float64)  # noqa: E731
    n = values["forces"].shape[1]
    tensors = {}
    if DIPOLE_KEY in jacobians:  # [3 (μ), n, 3] -> [3n, 3]
        tensors["dipole_derivatives"] = np.moveaxis(as64(jacobians[DIPOLE_KEY]), 0, -1).reshape(3 * n, 3)
    if POLARIZABILITY_KEY in jacobians:  # [3, 3, n, 3] -> [3n, 3, 3]
        tensors["polarizability_derivatives"] = np.moveaxis(as64(jacobians[POLARIZABILITY_KEY]), (0, 1), (-2, -1))
        tensors["polarizability_derivatives"] = tensors["polarizability_derivatives"].reshape(3 * n, 3, 3)
    return Derivatives(
        energy=float(values["energy"][k]) + energy_offset,
        forces=as64(values["forces"]),
        hessian=-as64(jacobians["forces"]).reshape(3 * n, 3 * n),
        **tensors,
    )


def hessian(potential, structures: Atoms | Sequence[Atoms]) -> np.ndarray:
    """The energy Hessian ∂²E/∂Rᵢ∂Rⱼ (eV/Å², float64) of a potential at one structure (``[3N, 3N]``) or at a list of
    structures with the same number of atoms (``[B, 3N, 3N]``, one ``vmap``); index ``3 * atom + axis``. See
    :func:`derivatives` for the graph used and the precision."""
    result = derivatives(potential, structures, tensors=False)
    if isinstance(result, Derivatives):
        return result.hessian
    return np.stack([r.hessian for r in result])
