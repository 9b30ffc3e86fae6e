"""Multi-fidelity learning: a fidelity-input energy head with per-fidelity offsets, and Δ-learning on a frozen base."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
import yaml
from ase.build import molecule
from ase.calculators.emt import EMT

from jaxatom.calculators import JaxAtomCalculator
from jaxatom.data import Dataset, GraphLoader
from jaxatom.data.formats import write_hdf5
from jaxatom.errors import ConfigError
from jaxatom.graph import batch_graphs
from jaxatom.md.run import md_run
from jaxatom.neighbors import graph_from_atoms
from jaxatom.nn import Atomwise
from jaxatom.potential import OutputScaling, Potential, delta_potential, load_model
from jaxatom.potential.outputs import split_outputs
from jaxatom.train.fit import check_fidelities
from jaxatom.train.run import evaluate_run, load_run_config, train_run
from tests.conftest import CUTOFF, ELEMENTS, tiny_schnet

FIDELITIES = ("cheap", "expensive")
#: Per-element offsets (eV) of the two levels of theory: they differ by eV per atom, as GFN1 and GFN2 do.
OFFSETS = ({1: -10.0, 6: -1000.0, 8: -2000.0}, {1: -12.5, 6: -1004.0, 8: -2011.0})
TINY_SCHNET = {"type": "schnet", "n_atom_basis": 16, "n_interactions": 2, "n_rbf": 8, "cutoff": CUTOFF}


def _labelled(n: int, fidelity: int, seed: int) -> list:
    """Rattled ethanol labelled at ``fidelity``: EMT (cheap) or 1.2 × EMT (expensive), plus that level's offsets."""
    structures = []
    for k in range(n):
        atoms = molecule("CH3CH2OH")
        atoms.rattle(0.05, seed=seed + k)
        atoms.calc = EMT()
        factor = 1.0 if fidelity == 0 else 1.2
        offset = sum(OFFSETS[fidelity][int(z)] for z in atoms.numbers)
        atoms.info.update(energy=factor * atoms.get_potential_energy() + offset, fidelity=fidelity)
        atoms.arrays["forces"] = factor * atoms.get_forces()
        atoms.calc = None
        structures.append(atoms)
    return structures


def _dataset(structures: list) -> Dataset:
    data = Dataset.from_atoms(structures, properties=("energy", "forces", "fidelity"))
    return dataclasses.replace(data, metadata={"fidelities": list(FIDELITIES)})


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[Dataset, str]:
    """24 cheap and 12 expensive structures in one HDF5 file (fidelity per structure, names in the metadata)."""
    data = _dataset(_labelled(24, 0, seed=0) + _labelled(12, 1, seed=100))
    path = tmp_path_factory.mktemp("mf") / "mixed.h5"
    write_hdf5(data, path)
    return data, str(path)


@pytest.fixture(scope="module")
def fidelity_potential() -> Potential:
    head = Atomwise(output_key="energy", per_atom_output_key="energies", fidelities=FIDELITIES)
    scaling = {"energy": OutputScaling(1.3, 0.0, {}, OFFSETS)}
    return Potential.create(tiny_schnet(), elements=ELEMENTS, seed=2, heads=[head], scaling=scaling)


def _run_config(tmp_path, data_path: str, **model) -> dict:
    return {
        "run_dir": str(tmp_path / "run"),
        "data": {"path": data_path, "train": 0.75, "val": 0.25, "test": 0},
        "model": {"representation": TINY_SCHNET, **model},
        "training": {"batch_size": 8, "max_epochs": 2, "learning_rate": 1e-3, "seed": 0},
    }


def test_the_fidelity_head_picks_each_structures_column(fidelity_potential, ethanol):
    low, high = (fidelity_potential.at_fidelity(k) for k in FIDELITIES)
    assert low.fidelities == high.fidelities == ()
    graph = graph_from_atoms(ethanol, CUTOFF)
    graphs = [dataclasses.replace(graph, fidelity=0), dataclasses.replace(graph, fidelity=1)]
    mixed = fidelity_potential.evaluate(batch_graphs(graphs), include_offsets=False)
    single = [p.evaluate(batch_graphs([graph]), include_offsets=False) for p in (low, high)]
    n = len(ethanol)
    for k, out in enumerate(single):
        np.testing.assert_allclose(mixed["energy"][k], out["energy"][0], rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(mixed["forces"][k * n : (k + 1) * n], out["forces"][:n], atol=1e-5)
    # the two levels differ by the head's columns and by their offsets
    at = [fidelity_potential.predict(ethanol, fidelity=k)["energy"] for k in range(2)]
    offsets = [sum(OFFSETS[k][int(z)] for z in ethanol.numbers) for k in range(2)]
    raw_difference = float(single[1]["energy"][0] - single[0]["energy"][0])
    np.testing.assert_allclose(at[1] - at[0], offsets[1] - offsets[0] + raw_difference, atol=1e-4)
    assert fidelity_potential.predict(ethanol)["energy"] == pytest.approx(at[1], abs=1e-6)  # default: the target


def test_fidelity_padding_invariance(fidelity_potential, ethanol):
    graph = dataclasses.replace(graph_from_atoms(ethanol, CUTOFF), fidelity=0)
    tight = fidelity_potential.evaluate(batch_graphs([graph]))
    padded = fidelity_potential.evaluate(batch_graphs([graph], n_node=64, n_edge=1024, n_graph=5))
    np.testing.assert_allclose(padded["energy"][0], tight["energy"][0], rtol=1e-6)
    np.testing.assert_allclose(padded["forces"][: len(ethanol)], tight["forces"][: len(ethanol)], atol=1e-5)


def test_per_fidelity_offsets_are_removed_and_added_back_exactly_in_float64(fidelity_potential, mixed):
    data, _ = mixed
    tables = fidelity_potential.scaling["energy"].tables()
    assert tables.shape == (2, 100)
    loader = GraphLoader(data, CUTOFF, 4, properties=("energy",), offsets={"energy": tables})
    fidelity = data.properties["fidelity"].astype(int)
    counts = [{z: int(np.sum(data.numbers[data.atoms_of(i)] == z)) for z in ELEMENTS} for i in range(len(data))]
    expected = np.array([data.properties["energy"][i] - sum(c * OFFSETS[fidelity[i]][z] for z, c in counts[i].items())
                         for i in range(len(data))])  # fmt: skip
    assert loader.labels["energy"].dtype == np.float64
    np.testing.assert_allclose(loader.labels["energy"], expected, rtol=0, atol=1e-9)
    graph, labels = loader.batch([0, 30])
    assert graph.fidelity.tolist()[:2] == [0, 1]
    # back on the host: zero raw energy gives each structure its own fidelity's offsets, in float64
    graphs = [loader.graphs[0], loader.graphs[30]]
    specs = fidelity_potential.model.outputs
    results = split_outputs({"energy": np.zeros(3, np.float32)}, graphs, specs, fidelity_potential.scaling)
    for result, index in zip(results, (0, 30), strict=True):
        assert result["energy"] == sum(c * OFFSETS[fidelity[index]][z] for z, c in counts[index].items())


def test_fidelity_checks(fidelity_potential, mixed, ethanol):
    data, _ = mixed
    with pytest.raises(ConfigError, match="unknown fidelity"):
        fidelity_potential.predict(ethanol, fidelity="dft")
    with pytest.raises(ConfigError, match="single-fidelity"):
        fidelity_potential.at_fidelity().predict(ethanol, fidelity=0)
    with pytest.raises(ConfigError, match="fidelities must name two"):
        Atomwise(fidelities=("one",))
    with pytest.raises(ConfigError, match="mixes fidelities"):
        check_fidelities((), data)
    with pytest.raises(ConfigError, match="names its fidelities"):
        check_fidelities(("gfn1", "gfn2"), data)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mixed) -> tuple[Potential, dict]:
    """A fidelity-input model trained from a YAML run configuration on the mixed data."""
    _, path = mixed
    tmp_path = tmp_path_factory.mktemp("mf_run")
    config = _run_config(tmp_path, path, fidelities=list(FIDELITIES))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    potential = train_run(load_run_config(tmp_path / "run.yaml"), progress=False)
    return potential, config


def test_training_on_mixed_data_from_yaml_round_trips(trained, mixed, ethanol):
    potential, config = trained
    data, _ = mixed
    run_dir = config["run_dir"]
    assert potential.fidelities == FIDELITIES
    energy = potential.scaling["energy"]
    assert energy.n_fidelities == 2 and energy.atomrefs == {}
    split = np.load(f"{run_dir}/split.npz")["train_idx"]
    for k in range(2):  # offsets fitted per fidelity on the training split: the mean energy per atom of that level
        chosen = split[data.properties["fidelity"][split] == k]
        mean = np.mean(data.properties["energy"][chosen] / data.n_atoms[chosen])
        np.testing.assert_allclose(list(energy.fidelity_atomrefs[k].values()), mean, rtol=0, atol=1e-9)
    saved = json.loads(open(f"{run_dir}/best_model/config.json").read())
    assert saved["format_version"] == 3 and saved["heads"][0]["fidelities"] == list(FIDELITIES)
    loaded = load_model(f"{run_dir}/best_model")
    for k in FIDELITIES:
        assert loaded.predict(ethanol, fidelity=k)["energy"] == pytest.approx(
            potential.predict(ethanol, fidelity=k)["energy"], abs=1e-5
        )
        calculator = JaxAtomCalculator(f"{run_dir}/best_model", fidelity=k)
        assert calculator.get_potential_energy(ethanol.copy()) == pytest.approx(
            loaded.predict(ethanol, fidelity=k)["energy"], abs=1e-4
        )
    metrics = evaluate_run(run_dir, data_path=mixed[1])  # each structure at its own fidelity
    assert metrics["energy_mae"] < 5.0


def test_md_runs_a_multi_fidelity_model_at_the_chosen_fidelity(trained, ethanol):
    potential, config = trained
    path = f"{config['run_dir']}/best_model"
    settings = {"model": path, "structure": ethanol, "steps": 2, "stride": 1, "frames_per_chunk": 2, "output": None,
                "temperature_K": 1.0, "progress": False}  # fmt: skip
    for fidelity in (None, "cheap"):
        run = md_run({**settings, "fidelity": fidelity})
        expected = potential.predict(ethanol, fidelity=fidelity)["energy"]
        assert run.frames["potential_energy"][0, 0] == pytest.approx(expected, abs=5e-3)  # 1 K: barely moves
    with pytest.raises(ConfigError, match="unknown fidelity"):
        md_run({**settings, "fidelity": "dft"})


def test_a_single_fidelity_model_refuses_mixed_data(tmp_path, mixed):
    with pytest.raises(ConfigError, match="mixes fidelities"):
        train_run(_run_config(tmp_path, mixed[1]), progress=False)


# -- Δ-learning ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def delta_run(tmp_path_factory, trained) -> tuple[Potential, Potential, str]:
    """A Δ-model trained (YAML, ``model.delta_from``) on the expensive structures over the cheap level of the
    fidelity-input model."""
    base_model, config = trained
    tmp_path = tmp_path_factory.mktemp("delta")
    base = base_model.at_fidelity("cheap")
    base.save(tmp_path / "base")
    expensive = _dataset(_labelled(16, 1, seed=200))
    expensive = dataclasses.replace(expensive, properties={k: v for k, v in expensive.properties.items()
                                                           if k != "fidelity"}, metadata={})  # fmt: skip
    write_hdf5(expensive, tmp_path / "expensive.h5")
    run = _run_config(tmp_path, str(tmp_path / "expensive.h5"), delta_from=str(tmp_path / "base"))
    run["model"]["representation"] = {**TINY_SCHNET, "cutoff": 3.5}
    (tmp_path / "delta.yaml").write_text(yaml.safe_dump(run))
    potential = train_run(load_run_config(tmp_path / "delta.yaml"), progress=False)
    return potential, load_model(tmp_path / "base"), run["run_dir"]


def test_delta_model_keeps_its_base_frozen_and_loads_in_ase(delta_run, ethanol):
    potential, base, run_dir = delta_run
    assert potential.model.base is not None and potential.model.frozen == ("base",)
    assert potential.cutoff == CUTOFF  # the larger of base (4.0) and Δ (3.5)
    trained_base = jax.tree.leaves(potential.params["params"]["base"])
    for found, expected in zip(trained_base, jax.tree.leaves(base.params["params"]), strict=True):
        np.testing.assert_array_equal(found, expected)
    loaded = load_model(f"{run_dir}/best_model")
    assert json.loads(open(f"{run_dir}/best_model/config.json").read())["base"]["scale"] == 1.0
    calculator = JaxAtomCalculator(f"{run_dir}/best_model")
    atoms = ethanol.copy()
    atoms.calc = calculator
    assert atoms.get_potential_energy() == pytest.approx(loaded.predict(ethanol)["energy"], abs=1e-4)
    np.testing.assert_allclose(atoms.get_forces(), loaded.predict(ethanol)["forces"], atol=1e-4)


def test_delta_energy_is_base_plus_delta_and_forces_are_its_gradient(ethanol):
    with jax.enable_x64(True):
        base = Potential.create(tiny_schnet(), ELEMENTS, seed=3, energy_scale=0.7, atomrefs={1: -13.0, 6: -1030.0})
        delta = Potential.create(tiny_schnet(cutoff=3.0), ELEMENTS, seed=4, energy_scale=1.5, energy_shift=0.2,
                                 atomrefs={8: -0.5})  # fmt: skip
        both = delta_potential(base, delta)
        atoms = ethanol.copy()
        atoms.rattle(0.02, seed=1)
        total, parts = both.predict(atoms), [p.predict(atoms) for p in (base, delta)]
        assert total["energy"] == pytest.approx(parts[0]["energy"] + parts[1]["energy"], rel=1e-12, abs=1e-9)
        np.testing.assert_allclose(total["forces"], parts[0]["forces"] + parts[1]["forces"], atol=1e-10)
        step, atom = 1e-5, 3
        for axis in range(3):
            shifted = [atoms.copy(), atoms.copy()]
            shifted[0].positions[atom, axis] += step
            shifted[1].positions[atom, axis] -= step
            up, down = (both.predict(a)["energy"] for a in shifted)
            assert -(up - down) / (2 * step) == pytest.approx(total["forces"][atom, axis], abs=1e-6)


def test_delta_from_needs_an_existing_base(tmp_path, mixed):
    config = _run_config(tmp_path, mixed[1], delta_from=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="delta_from"):
        train_run(config, progress=False)
