import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list

from jaxatom.neighbors import all_pairs, graph_from_atoms, host_graph, neighbor_list

from .conftest import triclinic_crystal


def _as_set(i, j, shifts, cell):
    """Pairs as a set of (i, j, integer image) for exact comparison."""
    if np.abs(cell).sum() > 0:
        images = np.rint(np.asarray(shifts) @ np.linalg.pinv(cell)).astype(int)
    else:
        images = np.zeros((len(i), 3), int)
    return {(int(a), int(b), *map(int, s)) for a, b, s in zip(i, j, images, strict=True)}


def _structures():
    rattled = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    rattled.rattle(0.05, seed=1)
    slab = fcc111("Al", size=(2, 2, 3), vacuum=5.0)
    slab.pbc = (True, True, False)
    wire = bulk("Si", "diamond", a=5.43, cubic=True)
    wire.pbc = (False, True, False)
    return {
        "molecule": (molecule("CH3CH2OH"), 3.0),
        "cubic": (rattled, 4.0),
        "triclinic": (triclinic_crystal(), 4.0),
        "mixed_pbc_slab": (slab, 5.0),
        "mixed_pbc_wire": (wire, 4.5),
        "small_cell": (bulk("Si", "diamond", a=5.43), 6.5),  # primitive cell, cutoff > twice the cell heights
        "tiny_cell_one_atom": (bulk("Cu", "fcc", a=3.6), 5.0),
    }


@pytest.mark.parametrize("name", list(_structures()))
def test_neighbor_list_matches_ase(name):
    atoms, cutoff = _structures()[name]
    i, j, shifts, d = neighbor_list(atoms.positions, atoms.cell[:], atoms.pbc, cutoff)
    ai, aj, a_shift_int, ad = ase_neighbor_list("ijSd", atoms, cutoff)
    cell = np.asarray(atoms.cell[:])
    ours = _as_set(i, j, shifts, cell)
    reference = {(int(a), int(b), *map(int, s)) for a, b, s in zip(ai, aj, a_shift_int, strict=True)}
    assert ours == reference
    assert len(i) == len(ai)
    vectors = atoms.positions[j] - atoms.positions[i] + shifts
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), d, atol=1e-10)
    assert np.all(d < cutoff)


def test_small_cell_has_several_images_of_the_same_atom():
    atoms = bulk("Cu", "fcc", a=3.6)
    i, j, shifts, _ = neighbor_list(atoms.positions, atoms.cell[:], atoms.pbc, 5.0)
    assert np.all(i == 0) and np.all(j == 0)
    assert len(i) == 42  # 12 + 6 + 24 neighbours of fcc within 5 Å


def _assert_reverse_halves(graph):
    """The second half of the edges reverses the first, edge for edge."""
    assert graph.reverse_halves and graph.n_edge % 2 == 0
    half = graph.n_edge // 2
    np.testing.assert_array_equal(graph.receivers[half:], graph.senders[:half])
    np.testing.assert_array_equal(graph.senders[half:], graph.receivers[:half])
    np.testing.assert_array_equal(graph.shifts[half:], -graph.shifts[:half])


def test_periodic_lists_come_in_reverse_halves():
    for atoms, cutoff in _structures().values():
        _assert_reverse_halves(graph_from_atoms(atoms, cutoff))


def test_molecules_get_cutoff_lists_or_all_pairs():
    atoms = molecule("CH3CH2OH")
    cutoff_graph = graph_from_atoms(atoms, cutoff=1.5)
    assert 0 < cutoff_graph.n_edge < 9 * 8
    _assert_reverse_halves(cutoff_graph)
    graph = graph_from_atoms(atoms, cutoff=1.0, edges="all_pairs")
    assert graph.n_edge == 9 * 8
    assert not np.any(graph.senders == graph.receivers)
    assert np.all(graph.shifts == 0)
    _assert_reverse_halves(graph)
    receivers, senders = all_pairs(3)
    assert sorted(zip(receivers.tolist(), senders.tolist(), strict=True)) == [
        (0, 1),
        (0, 2),
        (1, 0),
        (1, 2),
        (2, 0),
        (2, 1),
    ]


def test_periodic_graph_uses_exact_list_with_cartesian_shifts():
    atoms = triclinic_crystal()
    graph = graph_from_atoms(atoms, cutoff=4.0)
    vectors = graph.positions[graph.senders] - graph.positions[graph.receivers] + graph.shifts
    assert np.linalg.norm(vectors, axis=1).max() < 4.0
    assert graph.periodic


def test_nan_positions_are_refused():
    positions = np.zeros((2, 3))
    positions[1] = [np.nan, 0, 0]
    with pytest.raises(ValueError, match=r"atoms \[1\] are NaN"):
        host_graph(positions, [1, 1], 3.0)


def test_overlapping_atoms_are_refused():
    with pytest.raises(ValueError, match="overlap"):
        host_graph([[0, 0, 0], [0, 0, 0.01]], [1, 1], 3.0)
    crystal = Atoms("H2", positions=[[0, 0, 0], [2.0, 0, 0]], cell=np.eye(3) * 2.0, pbc=True)
    with pytest.raises(ValueError, match="overlap"):
        graph_from_atoms(crystal, 3.0)


@pytest.mark.parametrize(
    ("positions", "species", "match"),
    [
        (np.zeros((2, 2)), [1, 1], "shape"),
        (np.zeros((3, 3)), [1, 1], "shape"),
        (np.zeros((0, 3)), [], "at least one atom"),
        ([[0, 0, 0], [1, 0, 0]], [1, 0], "atomic numbers"),
        ([[0, 0, 0], [1, 0, 0]], [1, 120], "atomic numbers"),
    ],
)
def test_malformed_structures_are_refused(positions, species, match):
    with pytest.raises(ValueError, match=match):
        host_graph(positions, species, 3.0)


def test_periodic_structure_without_cell_is_refused():
    atoms = Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]], pbc=True)
    with pytest.raises(ValueError, match="non-zero volume"):
        graph_from_atoms(atoms, 3.0)


def test_all_pairs_edges_are_for_molecules_only():
    with pytest.raises(ValueError, match="non-periodic molecules"):
        graph_from_atoms(triclinic_crystal(), 3.0, edges="all_pairs")
    with pytest.raises(ValueError, match="edges must be"):
        graph_from_atoms(molecule("H2O"), 3.0, edges="some")


def test_graph_from_atoms_rejects_other_types():
    with pytest.raises(TypeError, match="ase.Atoms"):
        graph_from_atoms(np.zeros((2, 3)), 3.0)
