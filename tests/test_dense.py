"""The dense layout of molecules (``Graph.blocks``) gives the sparse list's energies, forces, stress and every head's
output to 1e-10 in float64, with and without padding, and the automatic choice never changes results."""

import jax
import numpy as np
import pytest
from ase.build import molecule

import jaxatom
import jaxatom.nn
from jaxatom.graph import batch_graphs
from jaxatom.neighbors import graph_from_atoms
from jaxatom.nn import DipoleMoment, Polarizability
from jaxatom.nn.heads import Atomwise

from .conftest import CUTOFF, ELEMENTS, tiny_painn, tiny_schnet, triclinic_crystal

TIGHT = dict(rtol=1e-10, atol=1e-10)
MODELS = {
    "schnet": lambda: tiny_schnet(),
    "schnet_bessel_mollifier": lambda: tiny_schnet(radial_basis="bessel", cutoff_fn="mollifier"),
    "painn": lambda: tiny_painn(),
    "painn_shared": lambda: tiny_painn(shared_filters=True, shared_interactions=True),
}


@pytest.fixture(scope="module", autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module", params=list(MODELS))
def potential64(request, float64):
    return jaxatom.Potential.create(MODELS[request.param](), elements=ELEMENTS, seed=3, energy_shift=-1.0)


@pytest.fixture(scope="module")
def molecules(float64):
    """Three molecules of different sizes in a box (not periodic, so the stress has a volume), one stretched so that
    some of its pairs lie beyond the 4 Å cutoff."""
    structures = [molecule(name) for name in ("CH3CH2OH", "H2O", "CH3COOH")]
    structures[2].positions[:2] += np.array([3.5, 0.0, 0.0])
    rng = np.random.default_rng(0)
    for atoms in structures:
        atoms.rattle(0.05, seed=int(rng.integers(100)))
        atoms.cell = np.diag([15.0, 16.0, 17.0])
    return [graph_from_atoms(atoms, CUTOFF) for atoms in structures]


def _outputs(potential, graph):
    scaling = potential.scaling_arrays(np.float64)
    out = jaxatom.potential.evaluate(potential.model, potential.params, graph, scaling, with_stress=True)
    return graph.unpad(jax.device_get(out))


def _assert_same(a, b):
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], **TIGHT, err_msg=name)


@pytest.mark.parametrize("padding", ["tight", "padded"])
def test_dense_blocks_give_the_sparse_results(potential64, molecules, padding):
    sparse = batch_graphs(molecules)
    extra = dict(block_size=12, n_graph=6, n_node=64) if padding == "padded" else dict(block_size=9)
    dense = batch_graphs(molecules, **extra)
    assert dense.dense and not sparse.dense and dense.blocks.shape == (len(dense.n_node) - 1, extra["block_size"])
    reference, result = _outputs(potential64, sparse), _outputs(potential64, dense)
    assert np.abs(reference["stress"]).max() > 1e-6 and np.abs(reference["forces"]).max() > 1e-3
    _assert_same(reference, result)


def test_the_sparse_code_path_reads_a_dense_graph_too(potential64, molecules):
    """A dense graph is a valid edge list: the sparse path on it equals the dense path."""
    dense = batch_graphs(molecules, block_size=10)
    _assert_same(_outputs(potential64, dense), _outputs(potential64, dense.replace(blocks=None)))


@pytest.mark.parametrize("head", ["dipole", "polarizability", "charges"])
def test_property_heads_agree_between_layouts(molecules, head):
    heads = {
        "dipole": DipoleMoment(predict_magnitude=False),
        "polarizability": Polarizability(),
        "charges": Atomwise(aggregation=None, output_key="charges"),
    }
    model = jaxatom.nn.AtomisticModel(tiny_painn(), heads=(heads[head],))
    params = model.init(jax.random.PRNGKey(0), batch_graphs(molecules))
    sparse, dense = batch_graphs(molecules), batch_graphs(molecules, block_size=9, n_graph=5)
    _assert_same(sparse.unpad(model.apply(params, sparse)), dense.unpad(model.apply(params, dense)))


def test_periodic_and_oversized_structures_are_refused(molecules):
    crystal = graph_from_atoms(triclinic_crystal(), CUTOFF)
    with pytest.raises(ValueError, match="periodic"):
        batch_graphs([crystal], block_size=8)
    with pytest.raises(ValueError, match="smaller than the largest"):
        batch_graphs(molecules, block_size=5)


@pytest.fixture(scope="module")
def md_molecules():
    structures = [molecule(name) for name in ("H2O", "CH3CH2OH", "CH3COOH")]
    for seed, atoms in enumerate(structures):
        atoms.set_momenta(np.random.default_rng(seed).normal(0.0, 0.3, (len(atoms), 3)))
    return structures


@pytest.mark.parametrize("model", ["schnet", "painn"])
def test_md_on_dense_blocks_follows_the_all_pairs_trajectory(model, md_molecules):
    """One molecule and a padded batch of different molecules: the same frames from both regimes, and ``auto``
    picks the dense blocks for them."""
    from jaxatom.md import simulate
    from jaxatom.md.neighbors import DENSE_MAX_ATOMS, EdgeBuilder

    potential = jaxatom.Potential.create(MODELS[model](), elements=ELEMENTS, seed=1, energy_shift=-1.0)
    atoms = md_molecules[2]
    assert EdgeBuilder.create(atoms.numbers, atoms.cell[:], atoms.pbc, CUTOFF).mode == "dense"
    assert EdgeBuilder.create(atoms.numbers, atoms.cell[:], atoms.pbc, CUTOFF, dense=False).mode == "all_pairs"
    assert potential.model.representation.md_dense_blocks == (model == "schnet")  # what `auto` follows, measured
    big = molecule("C60")
    assert EdgeBuilder.create(big.numbers, big.cell[:], big.pbc, CUTOFF).mode == "dense"
    assert EdgeBuilder.create(np.ones(DENSE_MAX_ATOMS + 1, int), np.zeros((3, 3)), False, CUTOFF).mode == "all_pairs"
    options = dict(steps=20, stride=10, timestep_fs=0.5, velocities="atoms", progress=False)
    for structures in (atoms, md_molecules):
        runs = [simulate(potential, structures, neighbors=mode, **options).frames for mode in ("all_pairs", "dense")]
        for name in ("positions", "velocities", "potential_energy"):
            np.testing.assert_allclose(runs[0][name], runs[1][name], **TIGHT, err_msg=name)
