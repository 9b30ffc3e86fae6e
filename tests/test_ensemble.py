"""Ensembles: members vmapped over stacked parameters equal the single potentials; mean/std; architecture checks."""

import numpy as np
import pytest
from ase.build import molecule

import jaxatom
from jaxatom.graph import batch_graphs
from jaxatom.neighbors import graph_from_atoms
from jaxatom.nn import AtomisticModel, PaiNN
from jaxatom.potential import PotentialEnsemble

from .conftest import CUTOFF, ELEMENTS, tiny_schnet


def _member(seed: int) -> jaxatom.Potential:
    return jaxatom.Potential.create(
        tiny_schnet(),
        elements=ELEMENTS,
        seed=seed,
        energy_scale=1.0 + 0.1 * seed,
        energy_shift=-1.0 - seed,
        atomrefs={1: -13.6 + seed, 8: -2040.0},
    )


@pytest.fixture(scope="module")
def members():
    return [_member(seed) for seed in range(3)]


@pytest.fixture(scope="module")
def ensemble(members):
    return PotentialEnsemble.from_potentials(members)


@pytest.fixture(scope="module")
def predictions(ensemble, ethanol, crystal):
    return ensemble.predict([ethanol, crystal])


def test_ensemble_stacks_parameters_and_offsets(ensemble, members):
    assert ensemble.size == 3 and ensemble.cutoff == CUTOFF and ensemble.elements == tuple(ELEMENTS)
    np.testing.assert_array_equal(ensemble.energy_scales, [1.0, 1.1, 1.2])
    assert ensemble.atom_offsets().shape == (3, 100) and ensemble.atom_offsets().dtype == np.float64
    np.testing.assert_array_equal(ensemble.atom_offsets()[2], members[2].atom_offsets())
    kernel = ensemble.params["params"]["representation"]["embedding"]["embedding"]
    assert kernel.shape == (3, 100, 16)
    np.testing.assert_array_equal(kernel[1], members[1].params["params"]["representation"]["embedding"]["embedding"])


def test_members_equal_the_single_potentials(members, predictions, ethanol, crystal):
    for index, member in enumerate(members):
        for result, single in zip(predictions, member.predict([ethanol, crystal]), strict=True):
            assert result["energy_members"][index] == pytest.approx(single["energy"], abs=1e-5)
            np.testing.assert_allclose(result["forces_members"][index], single["forces"], rtol=1e-5, atol=1e-5)
            if "stress" in single:
                np.testing.assert_allclose(result["stress_members"][index], single["stress"], rtol=1e-5, atol=1e-6)


def test_mean_and_population_std_over_members(predictions):
    for result in predictions:
        energies, forces = result["energy_members"], result["forces_members"]
        assert energies.shape == (3,) and forces.shape[0] == 3
        assert result["energy"] == pytest.approx(np.mean(energies), rel=1e-15)
        assert result["energy_std"] == pytest.approx(np.std(energies, ddof=0), rel=1e-12)
        np.testing.assert_allclose(result["forces"], forces.astype(np.float64).mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(result["forces_std"], forces.astype(np.float64).std(axis=0), rtol=1e-12)
        assert result["forces_std"].shape == forces.shape[1:] and result["energy_std"] > 0
        assert np.sum(result["energies"]) == pytest.approx(result["energy"], abs=1e-3)
    molecule, periodic = predictions
    assert "stress" not in molecule and "stress_std" not in molecule
    np.testing.assert_allclose(periodic["stress_std"], periodic["stress_members"].std(axis=0), rtol=1e-6, atol=1e-12)
    assert periodic["stress"].shape == (3, 3)


def test_evaluate_returns_stacked_member_outputs(ensemble, predictions, ethanol, crystal):
    graphs = [graph_from_atoms(atoms, CUTOFF) for atoms in (ethanol, crystal)]
    batch = batch_graphs(graphs)
    out = ensemble.evaluate(batch, stress=True)
    n_node = batch.positions.shape[0]
    assert out["energy"].shape == (3, 3) and out["forces"].shape == (3, n_node, 3)
    assert out["stress"].shape == (3, 3, 3, 3) and out["energies"].shape == (3, n_node)
    np.testing.assert_allclose(out["energy"][:, 0], predictions[0]["energy_members"], rtol=1e-6)


def test_ensemble_from_model_files(tmp_path, members, predictions, ethanol, crystal):
    paths = []
    for index, member in enumerate(members):
        paths.append(tmp_path / f"member_{index}")
        member.save(paths[-1])
    loaded = PotentialEnsemble.from_potentials([paths[0], paths[1], members[2]]).predict([ethanol, crystal])[0]
    np.testing.assert_array_equal(loaded["energy_members"], predictions[0]["energy_members"])
    np.testing.assert_array_equal(loaded["forces_members"], predictions[0]["forces_members"])


def test_mismatched_members_are_refused(members):
    def other(representation):  # the check compares architectures before it looks at parameters
        return members[1].replace(model=AtomisticModel(representation=representation))

    with pytest.raises(ValueError, match=r"architecture.*representation\.n_rbf: 8 != 9"):
        PotentialEnsemble.from_potentials([members[0], other(tiny_schnet(n_rbf=9))])
    painn = PaiNN(n_atom_basis=16, n_interactions=2, cutoff=CUTOFF, n_rbf=8)
    with pytest.raises(ValueError, match=r"member 1 has another architecture.*type: 'SchNet' != 'PaiNN'"):
        PotentialEnsemble.from_potentials([members[0], other(painn)])
    with pytest.raises(ValueError, match=r"elements \[H, C\], member 0 for \[H, C, O\]"):
        PotentialEnsemble.from_potentials([members[0], members[1].replace(elements=(1, 6))])
    with pytest.raises(ValueError, match="at least one"):
        PotentialEnsemble.from_potentials([])


def test_unknown_elements_are_refused(ensemble):
    with pytest.raises(ValueError, match="Cl"):
        ensemble.predict(molecule("CH3Cl"))
