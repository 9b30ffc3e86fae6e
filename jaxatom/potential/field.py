"""A molecule in a uniform electric field: the field energy of a model with dipole (and polarizability) heads, and
the response properties as derivatives of that energy.

    E(R, F) = E(R) − μ(R)·F − ½ F·α(R)·F / k_e

with ``F`` in V/Å, ``μ`` in e·Å (so ``μ·F`` is in eV), ``α`` the polarizability volume in Å³ and
``k_e = e²/(4πε₀) = 14.3996 eV·Å`` (the induced dipole of a field is ``α F / k_e`` in e·Å). Forces
``−∂E/∂R`` then include the field terms, and ``−∂E/∂F = μ + α F / k_e`` and ``−k_e ∂²E/∂F² = α`` recover the
dipole and polarizability from the energy (:func:`field_response`), one consistent route to both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms, units

from jaxatom.errors import ConfigError
from jaxatom.graph import Graph, batch_graphs
from jaxatom.neighbors import graph_from_atoms

if TYPE_CHECKING:
    from jaxatom.nn.model import AtomisticModel
    from jaxatom.potential.potential import Potential

__all__ = ["COULOMB_EV_ANG", "field_energy", "check_field_model", "field_array", "batch_fields", "field_response"]

#: e²/(4πε₀) in eV·Å (14.3996): a polarizability volume (Å³) times a field (V/Å), divided by it, is a dipole (e·Å).
COULOMB_EV_ANG = units.Hartree * units.Bohr


def field_energy(outputs: dict[str, jax.Array], field: jax.Array) -> jax.Array:
    """``[G]`` energy (eV) of the structures' dipoles ``[G, 3]`` (e·Å) and polarizabilities ``[G, 3, 3]`` (Å³) in
    the fields ``[G, 3]`` (V/Å): ``−μ·F − ½ F·α·F / k_e`` (terms of outputs the model lacks are left out)."""
    energy = -jnp.einsum("gi,gi->g", outputs["dipole_moment"], field)
    if "polarizability" in outputs:
        energy = energy - 0.5 * jnp.einsum("gi,gij,gj->g", field, outputs["polarizability"], field) / COULOMB_EV_ANG
    return energy


def check_field_model(model: AtomisticModel) -> None:
    """Refuse a field for a model without an energy or without a dipole vector, naming what it predicts."""
    specs = {spec.name: spec for spec in model.outputs}
    dipole = specs.get("dipole_moment")
    if "energy" not in specs or dipole is None or dipole.shape != (3,):
        raise ConfigError(
            "an electric field needs a model with an energy head and a DipoleMoment head predicting the dipole "
            f"vector (and optionally a Polarizability head); this one predicts {', '.join(sorted(specs))}"
        )


def field_array(field: Sequence[float] | np.ndarray | None) -> np.ndarray | None:
    """A field as a float64 ``[3]`` array in V/Å (None stays None); a :class:`ConfigError` for anything else."""
    if field is None:
        return None
    array = np.asarray(field, dtype=np.float64)
    if array.shape != (3,) or not np.all(np.isfinite(array)):
        raise ConfigError(f"an electric field is three finite numbers (Ex, Ey, Ez) in V/Å, got {field!r}")
    return array


def batch_fields(field: np.ndarray, graph: Graph) -> jax.Array:
    """The field ``[3]`` (V/Å) on every structure of a padded batch, ``[G, 3]`` (zero on padding graphs)."""
    mask = np.asarray(graph.graph_mask, bool)[:, None]
    return jnp.asarray(np.where(mask, field[None, :], 0.0), graph.positions.dtype)


def field_response(potential: Potential, atoms: Atoms, field: Sequence[float] = (0.0, 0.0, 0.0)) -> dict:
    """Energy (eV), dipole ``−∂E/∂F`` (e·Å) and polarizability ``−k_e ∂²E/∂F²`` (Å³) of ``atoms`` in the uniform
    ``field`` (V/Å), by automatic differentiation of :math:`E(R, F)` with respect to ``F``. At zero field they
    equal the model's dipole and polarizability heads (a test of the field energy); in a field the dipole includes
    the induced part ``α F / k_e``. Offsets are included (the energy's added in float64 on the host)."""
    from jaxatom.potential.evaluate import evaluate

    check_field_model(potential.model)
    potential.check_elements(atoms.numbers)
    graph = batch_graphs([graph_from_atoms(atoms, potential.cutoff)])
    dtype = graph.positions.dtype
    scaling = potential.scaling_arrays(dtype, host_offsets=True)

    def energy(f: jax.Array) -> jax.Array:
        fields = jnp.where(graph.graph_mask[:, None], f, 0.0)
        return evaluate(potential.model, potential.params, graph, scaling, field=fields)["energy"][0]

    f0 = jnp.asarray(field_array(field), dtype)
    value, gradient = jax.jit(jax.value_and_grad(energy))(f0)
    curvature = jax.jit(jax.hessian(energy))(f0)
    offset = float(np.sum(potential.atom_offsets("energy")[atoms.numbers]))
    return {
        "energy": float(value) + offset,
        "dipole_moment": -np.asarray(gradient, np.float64),
        "polarizability": -COULOMB_EV_ANG * np.asarray(curvature, np.float64),
    }
