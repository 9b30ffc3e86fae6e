import numpy as np
import pytest
from ase.build import molecule

from jaxatom.graph import PADDING_DISTANCE, batch_graphs, bucket_size
from jaxatom.neighbors import graph_from_atoms

from .conftest import triclinic_crystal


def test_bucket_size_is_an_upper_bound_with_few_distinct_values():
    sizes = [bucket_size(n, 8) for n in range(1, 2001)]
    assert all(s >= n for n, s in zip(range(1, 2001), sizes, strict=True))
    assert all(s % 8 == 0 for s in sizes)
    assert sizes == sorted(sizes)
    assert len(set(sizes)) < 35
    # padding overhead stays bounded (growth factor 1.25 plus rounding)
    assert max(s / n for n, s in zip(range(64, 2001), sizes[63:], strict=True)) < 1.35


def test_batch_follows_the_padding_contract():
    structures = [molecule("CH3CH2OH"), molecule("H2O"), triclinic_crystal()]
    graphs = [graph_from_atoms(a, 4.0) for a in structures]
    batch = batch_graphs(graphs)
    n_real = sum(len(a) for a in structures)
    n_graph = batch.n_graph
    assert n_graph == 4
    assert batch.positions.shape[0] >= n_real + 1 and batch.positions.shape[0] % 8 == 0
    assert batch.senders.shape[0] % 64 == 0
    np.testing.assert_array_equal(batch.n_node, [9, 3, 6, 0])
    np.testing.assert_array_equal(batch.graph_mask, [True, True, True, False])
    # padding nodes: species 0, dummy last graph
    assert np.all(batch.species[n_real:] == 0)
    assert np.all(batch.node_graph[n_real:] == n_graph - 1)
    assert batch.node_mask.sum() == n_real
    # padding edges join padding nodes and are longer than any cutoff
    pad = ~np.asarray(batch.edge_mask)
    assert pad.sum() == batch.senders.shape[0] - sum(g.n_edge for g in graphs)
    assert np.all(batch.species[batch.senders[pad]] == 0) and np.all(batch.species[batch.receivers[pad]] == 0)
    lengths = np.linalg.norm(np.asarray(batch.edge_vectors())[pad], axis=1)
    assert np.all(lengths >= PADDING_DISTANCE)
    # real edges keep their structure's offsets; each structure's reversed half sits in the batch's second half
    assert batch.reverse_halves
    half = batch.senders.shape[0] // 2
    first_water_node = 9
    water, m = graphs[1], graphs[1].n_edge // 2
    start = graphs[0].n_edge // 2
    np.testing.assert_array_equal(batch.senders[start : start + m], water.senders[:m] + first_water_node)
    np.testing.assert_array_equal(batch.senders[half + start : half + start + m], water.senders[m:] + first_water_node)
    vectors = np.asarray(batch.edge_vectors())
    np.testing.assert_allclose(vectors[half:], -vectors[:half])
    assert batch.pbc[2].all() and not batch.pbc[0].any()
    # an odd edge count cannot be halved: the plain layout is used
    assert not batch_graphs(graphs, n_edge=batch.senders.shape[0] + 1).reverse_halves


def test_batch_with_explicit_sizes_and_errors():
    graphs = [graph_from_atoms(molecule("H2O"), 4.0)]
    batch = batch_graphs(graphs, n_node=16, n_edge=128, n_graph=5)
    assert batch.positions.shape == (16, 3) and batch.senders.shape == (128,) and batch.cell.shape == (5, 3, 3)
    with pytest.raises(ValueError, match="one padding node"):
        batch_graphs(graphs, n_node=3)
    with pytest.raises(ValueError, match="at least one structure"):
        batch_graphs([])


def test_unpad_keeps_the_real_structures_and_atoms(ethanol):
    structures = [ethanol, molecule("H2O")]
    graph = batch_graphs([graph_from_atoms(a, 4.0) for a in structures])
    padded = {"energy": np.arange(graph.n_graph, dtype=float), "forces": np.ones((graph.positions.shape[0], 3)),
              "stress": np.zeros((graph.n_graph, 3, 3)), "scalar": np.float64(1.0)}  # fmt: skip
    out = graph.unpad(padded)
    assert graph.n_graph > 2 and graph.positions.shape[0] > 12
    assert out["energy"].tolist() == [0.0, 1.0] and out["forces"].shape == (12, 3) and out["stress"].shape == (2, 3, 3)
    assert out["scalar"] == 1.0
