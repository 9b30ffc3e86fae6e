"""Symmetries, padding, jit and compile behaviour of SchNet and PaiNN potentials (float32)."""

import jax
import numpy as np
import pytest
from ase.build import molecule

import jaxatom
from jaxatom.graph import batch_graphs
from jaxatom.neighbors import graph_from_atoms
from jaxatom.nn.layers import pyramid_widths
from jaxatom.potential import evaluate, evaluate_jit

from .conftest import CUTOFF, ELEMENTS, random_rotation, tiny_painn, triclinic_crystal

F32 = dict(rtol=2e-5, atol=2e-5)


def _prediction_close(a, b, tol=F32):
    np.testing.assert_allclose(a["energy"], b["energy"], rtol=1e-6)
    np.testing.assert_allclose(a["forces"], b["forces"], **tol)


def test_energy_invariant_and_forces_equivariant_under_rotation_and_translation(potential, ethanol):
    reference = potential.predict(ethanol)
    moved = ethanol.copy()
    rotation = random_rotation(3)
    moved.positions = ethanol.positions @ rotation.T + np.array([3.0, -7.5, 11.0])
    result = potential.predict(moved)
    np.testing.assert_allclose(result["energy"], reference["energy"], rtol=1e-6)
    np.testing.assert_allclose(result["forces"], reference["forces"] @ rotation.T, **F32)


def test_periodic_crystal_is_invariant_under_rotation_of_everything(potential, crystal):
    reference = potential.predict(crystal)
    rotation = random_rotation(4)
    moved = crystal.copy()
    moved.set_cell(crystal.cell[:] @ rotation.T)
    moved.positions = crystal.positions @ rotation.T
    result = potential.predict(moved)
    np.testing.assert_allclose(result["energy"], reference["energy"], rtol=1e-6)
    np.testing.assert_allclose(result["forces"], reference["forces"] @ rotation.T, **F32)
    np.testing.assert_allclose(result["stress"], rotation @ reference["stress"] @ rotation.T, **F32)
    # translation across the boundary and wrapping change nothing either
    shifted = crystal.copy()
    shifted.positions += np.array([1.7, -0.3, 2.2])
    shifted.wrap()
    _prediction_close(potential.predict(shifted), reference)


def test_energy_invariant_and_forces_equivariant_under_permutation(potential, ethanol, crystal):
    for atoms in (ethanol, crystal):
        order = np.random.default_rng(0).permutation(len(atoms))
        reference = potential.predict(atoms)
        result = potential.predict(atoms[order])
        np.testing.assert_allclose(result["energy"], reference["energy"], rtol=1e-6)
        np.testing.assert_allclose(result["forces"], reference["forces"][order], **F32)
        np.testing.assert_allclose(result["energies"], reference["energies"][order], **F32)


def test_painn_vector_features_rotate_with_the_input(ethanol):
    pot = jaxatom.Potential.create(tiny_painn(), elements=ELEMENTS)
    rotation = random_rotation(5)

    def features(positions):
        graph = batch_graphs([graph_from_atoms(ethanol, CUTOFF)])
        graph = graph.replace(positions=graph.positions.copy())
        graph.positions[: len(ethanol)] = positions
        return pot.model.apply(pot.params, graph)

    ref = features(ethanol.positions)
    rot = features(ethanol.positions @ rotation.T)
    n = len(ethanol)
    assert np.abs(ref["vector"][:n]).max() > 1e-3  # the vectors are not trivially zero
    np.testing.assert_allclose(rot["vector"][:n], np.einsum("ij,njf->nif", rotation, ref["vector"][:n]), **F32)
    np.testing.assert_allclose(rot["scalar"][:n], ref["scalar"][:n], **F32)


def test_forces_sum_to_zero_for_a_free_molecule(potential, ethanol):
    np.testing.assert_allclose(potential.predict(ethanol)["forces"].sum(axis=0), 0.0, atol=1e-4)


def test_padded_batch_equals_each_structure_alone(potential, ethanol, crystal):
    structures = [ethanol, molecule("H2O"), crystal, molecule("CH4"), triclinic_crystal(seed=7)]
    together = potential.predict(structures)
    for atoms, result in zip(structures, together, strict=True):
        alone = potential.predict(atoms)
        _prediction_close(result, alone)
        if "stress" in alone:
            np.testing.assert_allclose(result["stress"], alone["stress"], **F32)
    assert "stress" in together[2] and "stress" not in together[0]


def test_extra_padding_changes_nothing(potential, ethanol, crystal):
    graphs = [graph_from_atoms(ethanol, potential.cutoff), graph_from_atoms(crystal, potential.cutoff)]
    tight = jax.device_get(potential.evaluate(batch_graphs(graphs), stress=True))
    loose = jax.device_get(potential.evaluate(batch_graphs(graphs, n_node=64, n_edge=1024, n_graph=6), stress=True))
    n = len(ethanol) + len(crystal)
    np.testing.assert_allclose(loose["energy"][:2], tight["energy"][:2], rtol=1e-6)
    np.testing.assert_allclose(loose["forces"][:n], tight["forces"][:n], **F32)
    np.testing.assert_allclose(loose["stress"][:2], tight["stress"][:2], **F32)
    assert np.all(loose["forces"][n:] == 0)


def test_jit_and_eager_agree(potential, ethanol, crystal):
    graph = batch_graphs([graph_from_atoms(ethanol, potential.cutoff), graph_from_atoms(crystal, potential.cutoff)])
    args = (potential.params, graph, potential.scaling_arrays(np.float32))
    jitted = jax.device_get(evaluate_jit(potential.model, *args, with_stress=True))
    with jax.disable_jit():
        eager = jax.device_get(evaluate(potential.model, *args, with_stress=True))
    for key in ("energy", "forces", "stress"):
        np.testing.assert_allclose(jitted[key], eager[key], rtol=1e-5, atol=1e-5)


def test_a_pass_over_bucketed_batches_compiles_once_per_bucket():
    pot = jaxatom.Potential.create(tiny_painn(n_atom_basis=8, n_interactions=1), elements=ELEMENTS, seed=2)
    names = ["H2O", "CH4", "CH3OH", "CH3CH2OH", "C2H4", "HCOOH", "CH3CHO", "C2H6", "H2CO", "CO2", "C3H8", "CH3COOH"]
    structures = [molecule(n) for n in names]
    rng = np.random.default_rng(0)
    batches = [[structures[k] for k in rng.choice(len(names), size=4)] for _ in range(12)]
    before = evaluate_jit._cache_size()
    shapes = set()
    for batch in batches:
        graph = batch_graphs([graph_from_atoms(a, pot.cutoff) for a in batch], n_graph=5)
        shapes.add((graph.positions.shape[0], graph.senders.shape[0]))
        jax.block_until_ready(pot.evaluate(graph))
    compiles = evaluate_jit._cache_size() - before
    assert compiles == len(shapes)
    assert len(shapes) < len(batches)  # bucketing merged different batch sizes into shared shapes
    for batch in batches:  # a second epoch, through the public predict, compiles nothing
        pot.predict(batch, batch_size=4)
    assert evaluate_jit._cache_size() - before == len(shapes)


def test_average_aggregation_divides_by_the_number_of_atoms(ethanol):
    from jaxatom.nn import Atomwise

    sum_pot = jaxatom.Potential.create(tiny_painn(), elements=ELEMENTS, seed=0)
    avg_pot = jaxatom.Potential.create(tiny_painn(), elements=ELEMENTS, seed=0, head=Atomwise(aggregation="avg"))
    np.testing.assert_allclose(
        avg_pot.predict(ethanol)["energy"] * len(ethanol), sum_pot.predict(ethanol)["energy"], rtol=1e-5
    )


def test_offsets_are_added_per_atom_in_float64(potential, ethanol):
    plain = potential.replace(energy_shift=0.0, atomrefs={})
    difference = potential.predict(ethanol)["energy"] - plain.predict(ethanol)["energy"]
    expected = sum(-2.5 + {1: -13.6, 6: -1030.0, 8: -2040.0}[z] for z in ethanol.numbers)
    assert difference == pytest.approx(expected, abs=1e-9)
    assert isinstance(potential.predict(ethanol)["energy"], float)


def test_unknown_elements_are_refused(potential):
    with pytest.raises(ValueError, match="elements the model was not built for: N.*knows H, C, O"):
        potential.predict(molecule("NH3"))


def test_pyramid_widths_follow_schnetpack_build_mlp():
    assert pyramid_widths(128, 1, None, 2) == [64, 1]
    assert pyramid_widths(128, 1, None, 4) == [64, 32, 16, 1]
    assert pyramid_widths(30, 1, 20, 3) == [20, 20, 1]
    assert pyramid_widths(30, 2, (7, 5), 3) == [7, 5, 2]


def test_initialisation_matches_schnetpack():
    pot = jaxatom.Potential.create(tiny_painn(n_atom_basis=64, n_interactions=1), elements=ELEMENTS, seed=0)
    params = pot.params["params"]["representation"]
    embedding = np.asarray(params["embedding"]["embedding"])
    assert embedding.shape == (100, 64)
    assert embedding.std() == pytest.approx(1.0, rel=0.05)  # torch.nn.Embedding: N(0, 1)
    kernel = np.asarray(params["interactions_0"]["context_1"]["kernel"])  # 64 -> 192, Xavier uniform
    limit = np.sqrt(6.0 / (64 + 192))
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.95 * limit
    assert kernel.std() == pytest.approx(limit / np.sqrt(3), rel=0.05)
    assert np.all(np.asarray(params["interactions_0"]["context_1"]["bias"]) == 0)
    assert "bias" not in params["mixing_0"]["mu_channel_mix"]


def test_float32_is_the_default_and_enable_x64_switches(ethanol):
    from jaxatom.graph import float_dtype

    assert float_dtype() == np.float32
    assert graph_from_atoms(ethanol, CUTOFF).positions.dtype == np.float32
    jaxatom.enable_x64(True)
    try:
        assert float_dtype() == np.float64
        assert graph_from_atoms(ethanol, CUTOFF).positions.dtype == np.float64
    finally:
        jaxatom.enable_x64(False)
    assert float_dtype() == np.float32


def test_all_pairs_edges_and_cutoff_lists_give_the_same_results(potential):
    atoms = molecule("CH3CH2OH")
    atoms.positions[:3] += np.array([4.0, 0.0, 0.0])  # some pairs now lie beyond the 4 Å cutoff
    results = []
    for edges in ("cutoff", "all_pairs"):
        graph = batch_graphs([graph_from_atoms(atoms, potential.cutoff, edges=edges)])
        results.append(jax.device_get(potential.evaluate(graph)))
    assert batch_graphs([graph_from_atoms(atoms, potential.cutoff)]).senders.shape[0] >= 64
    np.testing.assert_allclose(results[0]["energy"][0], results[1]["energy"][0], rtol=1e-6)
    np.testing.assert_allclose(results[0]["forces"][:9], results[1]["forces"][:9], **F32)


def test_activations_match_their_definitions():
    from jaxatom.nn.activations import shifted_softplus, softplus

    x = np.linspace(-40, 40, 2001, dtype=np.float32)
    np.testing.assert_allclose(softplus(x), jax.nn.softplus(x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(shifted_softplus(x), np.logaddexp(0, x.astype(np.float64)) - np.log(2), atol=1e-6)
    assert float(shifted_softplus(np.float32(0.0))) == 0.0
    np.testing.assert_allclose(jax.vmap(jax.grad(softplus))(x), jax.nn.sigmoid(x), rtol=1e-6, atol=1e-7)
