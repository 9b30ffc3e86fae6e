"""Properties beyond the energy: dipoles, partial charges, polarizabilities and per-atom targets — physics first
(rotation, translation, charge conservation, tensor transformation, padding), then model files, calculators,
ensembles and the errors of the output contract."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule

import jaxatom
from jaxatom.calculators import JaxAtomCalculator
from jaxatom.errors import ConfigError
from jaxatom.graph import batch_graphs
from jaxatom.neighbors import graph_from_atoms
from jaxatom.nn import ENERGY_HEAD, Atomwise, DipoleMoment, Polarizability
from jaxatom.potential import PotentialEnsemble, load_model

from .conftest import ELEMENTS, random_rotation, tiny_painn, tiny_schnet

TOL = dict(rtol=1e-5, atol=2e-5)  # float32
PAINN_HEADS = (
    ENERGY_HEAD,
    DipoleMoment(use_vector_representation=True),
    Polarizability(),
    Atomwise(aggregation=None, output_key="magnetic_moments"),
)


@pytest.fixture(scope="module", params=["schnet", "painn"])
def model(request) -> jaxatom.Potential:
    """A tiny SchNet with energy and dipole heads, or a tiny PaiNN with energy, vector dipole, polarizability and a
    per-atom target."""
    if request.param == "schnet":
        return jaxatom.Potential.create(tiny_schnet(), ELEMENTS, seed=2, heads=[ENERGY_HEAD, DipoleMoment()])
    return jaxatom.Potential.create(tiny_painn(), ELEMENTS, seed=2, heads=PAINN_HEADS, energy_shift=-3.0)


@pytest.fixture(scope="module")
def painn() -> jaxatom.Potential:
    return jaxatom.Potential.create(tiny_painn(), ELEMENTS, seed=2, heads=PAINN_HEADS, energy_shift=-3.0)


def _ethanol(charge: float = 0.0, rotation: np.ndarray | None = None, shift=(0.0, 0.0, 0.0)):
    atoms = molecule("CH3CH2OH")
    atoms.positions = atoms.positions @ (np.eye(3) if rotation is None else rotation).T + np.asarray(shift)
    atoms.info["charge"] = charge
    return atoms


def test_every_declared_output_is_predicted_with_its_shape(model):
    result = model.predict(_ethanol())
    shapes = {spec.name: (9,) + spec.shape if spec.per_atom else spec.shape for spec in model.model.outputs}
    assert set(result) == {*shapes, "forces"}
    for name, shape in shapes.items():
        assert np.shape(result[name]) == shape, name


def test_dipole_rotates_with_the_molecule_and_charges_do_not(model):
    rotation = random_rotation(3)
    before, after = model.predict([_ethanol(), _ethanol(rotation=rotation)])
    np.testing.assert_allclose(after["dipole_moment"], rotation @ before["dipole_moment"], **TOL)
    np.testing.assert_allclose(after["charges"], before["charges"], **TOL)
    np.testing.assert_allclose(after["forces"], before["forces"] @ rotation.T, **TOL)


@pytest.mark.parametrize("charge", [0.0, 1.0, -2.0])
def test_charges_sum_to_the_total_charge_and_the_dipole_shifts_by_q_t(model, charge):
    shift = np.array([3.0, -2.0, 5.0])
    here, there = model.predict([_ethanol(charge), _ethanol(charge, shift=shift)])
    assert np.sum(here["charges"]) == pytest.approx(charge, abs=2e-6)
    np.testing.assert_allclose(there["charges"], here["charges"], **TOL)
    np.testing.assert_allclose(there["dipole_moment"], here["dipole_moment"] + charge * shift, rtol=1e-5, atol=1e-4)


def test_charges_of_a_batch_are_corrected_structure_by_structure(model):
    structures = [_ethanol(1.0), molecule("H2O"), _ethanol(-1.0, shift=(0.5, 0.0, 0.0))]
    structures[1].info["charge"] = 0.0
    for result, expected in zip(model.predict(structures), (1.0, 0.0, -1.0), strict=True):
        assert np.sum(result["charges"]) == pytest.approx(expected, abs=2e-6)


def test_polarizability_is_symmetric_and_transforms_as_a_tensor(painn):
    rotation = random_rotation(5)
    base, rotated, moved = painn.predict([_ethanol(), _ethanol(rotation=rotation), _ethanol(shift=(4.0, -1.0, 2.0))])
    alpha = base["polarizability"]
    np.testing.assert_allclose(alpha, alpha.T, atol=1e-6)
    np.testing.assert_allclose(rotated["polarizability"], rotation @ alpha @ rotation.T, **TOL)
    np.testing.assert_allclose(moved["polarizability"], alpha, rtol=1e-5, atol=1e-4)


def test_schnetpack_polarizability_depends_on_the_origin_unless_made_translation_invariant(painn):
    absolute = painn.replace(
        model=painn.model.clone(heads=(*PAINN_HEADS[:2], Polarizability(translation_invariant=False), PAINN_HEADS[3]))
    )
    here, there = absolute.predict([_ethanol(), _ethanol(shift=(4.0, -1.0, 2.0))])
    assert np.abs(there["polarizability"] - here["polarizability"]).max() > 1e-3
    np.testing.assert_allclose(there["polarizability"], there["polarizability"].T, atol=1e-5)


def test_padding_and_batching_change_no_output(model):
    structures = [_ethanol(), molecule("H2O"), _ethanol(1.0, rotation=random_rotation(1))]
    batched = model.predict(structures)
    alone = [model.predict(atoms) for atoms in structures]
    for together, single in zip(batched, alone, strict=True):
        for name, value in single.items():
            np.testing.assert_allclose(together[name], value, **TOL, err_msg=name)
    graphs = [graph_from_atoms(atoms, model.cutoff) for atoms in structures]
    tight = model.evaluate(batch_graphs(graphs))
    loose = model.evaluate(batch_graphs(graphs, n_node=64, n_edge=512, n_graph=7))
    for spec in model.model.outputs:
        count = 23 if spec.per_atom else 3
        np.testing.assert_allclose(loose[spec.name][:count], tight[spec.name][:count], **TOL, err_msg=spec.name)


def test_dipole_magnitude_is_the_norm_of_the_vector_head():
    vector = jaxatom.Potential.create(tiny_schnet(), ELEMENTS, seed=4, heads=[DipoleMoment()])
    magnitude = vector.replace(model=vector.model.clone(heads=(DipoleMoment(predict_magnitude=True),)))
    atoms = _ethanol()
    expected = np.linalg.norm(vector.predict(atoms)["dipole_moment"])
    assert magnitude.predict(atoms)["dipole_moment"] == pytest.approx(expected, rel=1e-5)
    assert vector.outputs == ("dipole_moment", "charges")  # no energy: no forces


def test_features_for_analysis(painn):
    atoms = _ethanol()
    features = painn.features(atoms)
    assert features["scalar"].shape == (9, 16) and features["vector"].shape == (9, 3, 16)
    assert np.sum(features["energies"]) == pytest.approx(painn.predict(atoms)["energy"], rel=1e-6)


def test_model_file_keeps_every_head_and_its_numbers(painn, tmp_path):
    scaled = painn.replace(scaling={**painn.scaling, "magnetic_moments": jaxatom.OutputScaling(2.0, 0.5, {8: 1.0})})
    scaled.save(tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    assert loaded.model == scaled.model and loaded.scaling == scaled.scaling
    atoms = _ethanol(1.0)
    expected, found = scaled.predict(atoms), loaded.predict(atoms)
    for name, value in expected.items():
        np.testing.assert_array_equal(found[name], value)
    raw = painn.predict(atoms)["magnetic_moments"]
    np.testing.assert_allclose(expected["magnetic_moments"], 2.0 * raw + 0.5 + (atoms.numbers == 8), **TOL)


def test_ase_calculator_gives_dipole_charges_and_polarizability(painn):
    atoms = _ethanol(1.0)
    expected = painn.predict(atoms)
    atoms.calc = JaxAtomCalculator(painn)
    np.testing.assert_allclose(atoms.get_dipole_moment(), expected["dipole_moment"], **TOL)
    np.testing.assert_allclose(atoms.get_charges(), expected["charges"], **TOL)
    np.testing.assert_allclose(atoms.calc.results["polarizability"], expected["polarizability"], **TOL)
    assert atoms.get_potential_energy() == pytest.approx(expected["energy"], abs=1e-4)


def test_ensemble_summarises_every_output(painn):
    other = jaxatom.Potential.create(tiny_painn(), ELEMENTS, seed=7, heads=PAINN_HEADS)
    ensemble = PotentialEnsemble.from_potentials([painn, other])
    atoms = _ethanol()
    result = ensemble.predict(atoms)
    members = [painn.predict(atoms), other.predict(atoms)]
    for name in ("dipole_moment", "charges", "polarizability", "magnetic_moments"):
        values = np.stack([m[name] for m in members])
        np.testing.assert_allclose(result[name], values.mean(axis=0), **TOL)
        np.testing.assert_allclose(result[f"{name}_std"], values.std(axis=0), **TOL)
        assert result[f"{name}_members"].shape == values.shape


def test_output_contract_errors():
    with pytest.raises(ConfigError, match="Polarizability needs vector features.*use PaiNN"):
        jaxatom.Potential.create(tiny_schnet(), ELEMENTS, heads=[Polarizability()])
    with pytest.raises(ConfigError, match="DipoleMoment needs vector features"):
        jaxatom.Potential.create(tiny_schnet(), ELEMENTS, heads=[DipoleMoment(use_vector_representation=True)])
    with pytest.raises(ConfigError, match="two heads predict energy"):
        jaxatom.Potential.create(tiny_schnet(), ELEMENTS, heads=[ENERGY_HEAD, Atomwise()])
    with pytest.raises(ConfigError, match="forces cannot be a head's output"):
        jaxatom.Potential.create(tiny_schnet(), ELEMENTS, heads=[Atomwise(output_key="forces", n_out=3)])
    with pytest.raises(ConfigError, match="at least one output head"):
        jaxatom.Potential.create(tiny_schnet(), ELEMENTS, heads=[])
    with pytest.raises(ConfigError, match="output_key and per_atom_output_key are both 'q'"):
        Atomwise(output_key="q", per_atom_output_key="q")
    with pytest.raises(ConfigError, match="charges_key must be a non-empty string"):
        DipoleMoment(charges_key="")


def test_training_on_several_properties_lowers_every_term(tmp_path):
    """Energy, forces, GFN2-xTB dipole moments (Huber) and partial charges from the shipped ethanol data."""
    import csv

    from jaxatom.data.builtin import load_builtin
    from jaxatom.train import TrainConfig, fit
    from jaxatom.train.fit import with_energy_offsets

    data = load_builtin("ethanol")
    train, val = data.subset(np.arange(0, 48)), data.subset(np.arange(2000, 2016))
    heads = [ENERGY_HEAD, DipoleMoment(use_vector_representation=True)]
    potential = with_energy_offsets(jaxatom.Potential.create(tiny_painn(), ELEMENTS, seed=0, heads=heads), train)
    loss = {"energy": 0.01, "forces": 0.99, "dipole_moment": {"weight": 1.0, "kind": "huber", "delta": 0.1},
            "charges": 1.0}  # fmt: skip
    config = TrainConfig(batch_size=8, max_epochs=8, learning_rate=5e-3, loss=loss, ema_decay=None)
    fit(potential, train, val, config, tmp_path, progress=False)
    with (tmp_path / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8
    for name in loss:
        first, last = float(rows[0][f"val_{name}_mae"]), float(rows[-1][f"val_{name}_mae"])
        assert last < first, f"{name}: validation MAE {first:.4g} -> {last:.4g}"


def test_md_refuses_a_model_without_energy():
    from jaxatom.md import simulate

    dipole_only = jaxatom.Potential.create(tiny_schnet(), ELEMENTS, heads=[DipoleMoment()])
    with pytest.raises(ConfigError, match="MD needs a model that predicts an energy.*dipole_moment, charges"):
        simulate(dipole_only, _ethanol(), ensemble="nve", timestep_fs=0.5, steps=10, stride=10)
