"""Shared fixtures: tiny models (compiles are slow on CPU) and small test structures."""

from __future__ import annotations

import gc

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

import jaxatom
from jaxatom.nn import Atomwise, PaiNN, SchNet
from jaxatom.nn.heads import OutputSpec
from jaxatom.nn.layers import safe_norm

CUTOFF = 4.0
ELEMENTS = [1, 6, 8]


def tiny_schnet(**changes) -> SchNet:
    settings = dict(n_atom_basis=16, n_interactions=2, cutoff=CUTOFF, n_rbf=8)
    return SchNet(**{**settings, **changes})


def tiny_painn(**changes) -> PaiNN:
    settings = dict(n_atom_basis=16, n_interactions=2, cutoff=CUTOFF, n_rbf=8)
    return PaiNN(**{**settings, **changes})


def triclinic_crystal(seed: int = 0) -> Atoms:
    """A periodic triclinic cell of 6 H/C/O atoms, no two closer than 0.9 Å (also across the boundary)."""
    rng = np.random.default_rng(seed)
    cell = np.array([[4.2, 0.0, 0.0], [0.9, 3.9, 0.0], [-0.6, 0.7, 4.4]])
    while True:
        atoms = Atoms(numbers=rng.choice(ELEMENTS, 6), scaled_positions=rng.random((6, 3)), cell=cell, pbc=True)
        distances = atoms.get_all_distances(mic=True)[np.triu_indices(6, 1)]
        if distances.min() > 0.9:
            return atoms


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_code():
    """Drop every compiled function after each test module: the suite compiles thousands of executables, and a
    single process that keeps them all grows until XLA's compiler fails late in the run (seen twice as a segfault in
    ``backend_compile``). Modules reuse their own compilations through module-scoped fixtures."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def ethanol() -> Atoms:
    return molecule("CH3CH2OH")


@pytest.fixture(scope="session")
def crystal() -> Atoms:
    return triclinic_crystal()


@pytest.fixture(scope="session", params=["schnet", "painn"])
def potential(request) -> jaxatom.Potential:
    """A tiny SchNet or PaiNN potential with non-trivial offsets."""
    representation = tiny_schnet() if request.param == "schnet" else tiny_painn()
    return jaxatom.Potential.create(
        representation, elements=ELEMENTS, seed=1, energy_shift=-2.5, atomrefs={1: -13.6, 6: -1030.0, 8: -2040.0}
    )


def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


class MorseEnergy(nn.Module):
    """A test energy head: ``E = ½ Σ_pairs D (1 − exp(−a (d − r0)))² fc(d)`` with ``r0`` per element pair
    (``pairs``: ``(Z1, Z2, r0)``, others ``default_r0``), plus ``neural`` × a random Atomwise energy: bounded below,
    with known minima, which the neural term turns into a generic model."""

    depth: float = 2.0
    alpha: float = 1.5
    neural: float = 0.0
    pairs: tuple = ()
    default_r0: float = 1.5

    @property
    def key(self) -> str:
        return "energy"

    @property
    def outputs(self):
        return (OutputSpec("energy", False, (), "eV", "sum", "energy"),)

    @nn.compact
    def __call__(self, features, graph):
        table = np.full((10, 10), self.default_r0)
        for a, b, r0 in self.pairs:
            table[a, b] = table[b, a] = r0
        d = safe_norm(graph.edge_vectors())
        r0 = jnp.asarray(table)[graph.species[graph.receivers], graph.species[graph.senders]]
        cutoff = jnp.where(d < CUTOFF, 0.5 * (jnp.cos(jnp.pi * d / CUTOFF) + 1.0), 0.0)
        morse = self.depth * (1.0 - jnp.exp(-self.alpha * (d - r0))) ** 2 * cutoff * graph.edge_mask
        energy = 0.5 * jax.ops.segment_sum(morse, graph.node_graph[graph.receivers], num_segments=graph.n_graph)
        if self.neural:
            energy = energy + self.neural * Atomwise(name="neural")(features, graph)["energy"]
        return {"energy": energy}
