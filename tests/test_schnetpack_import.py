"""SchNetPack models imported into jaxatom give SchNetPack's energies, forces and stress (float64 and float32), in the
units of the training data given or read from the run's config.yaml."""

import warnings

import jax
import numpy as np
import pytest
from ase.build import molecule

import jaxatom
from jaxatom import units
from jaxatom.units import unit_factor

from .conftest import triclinic_crystal

torch = pytest.importorskip("torch", reason="torch is not installed (tools/install-schnetpack.sh installs it)")
spk = pytest.importorskip("schnetpack", reason="schnetpack is not installed (tools/install-schnetpack.sh)")

from jaxatom.errors import ConfigError  # noqa: E402
from jaxatom.interop.schnetpack import UnsupportedModelError, import_model  # noqa: E402
from jaxatom.units import UnitError  # noqa: E402

CUTOFF = 4.0
ATOMREFS = {1: -13.6, 6: -1029.8, 8: -2041.3}


def _radial(kind, n_rbf, cutoff):
    if kind == "bessel":
        return spk.nn.BesselRBF(n_rbf=n_rbf, cutoff=cutoff)
    if kind == "trainable":
        return spk.nn.GaussianRBF(n_rbf=n_rbf, cutoff=cutoff, start=0.3, trainable=True)
    return spk.nn.GaussianRBF(n_rbf=n_rbf, cutoff=cutoff)


def build_spk_model(
    kind: str,
    *,
    rbf: str = "gaussian",
    cutoff_fn: str = "cosine",
    shared_interactions: bool = False,
    shared_filters: bool = False,
    n_filters: int | None = None,
    activation=None,
    head: dict | None = None,
    offsets: bool = False,
    stress: bool = False,
    cutoff: float = CUTOFF,
    n_atom_basis: int = 12,
    n_interactions: int = 2,
    n_rbf: int = 7,
    seed: int = 0,
    energy: bool = True,
    outputs=(),
    postprocessors=(),
):
    """A randomly initialised SchNetPack NeuralNetworkPotential; biases randomised too so that every weight counts.

    ``energy``: an Atomwise energy head and Forces; ``outputs``: further output modules, each made by a function of
    ``n_atom_basis``, after them; ``postprocessors``: appended to the AddOffsets of ``offsets``."""
    torch.manual_seed(seed)
    radial = _radial(rbf, n_rbf, cutoff * (0.9 if rbf == "gaussian" else 1.0))
    cut = spk.nn.CosineCutoff(cutoff) if cutoff_fn == "cosine" else spk.nn.MollifierCutoff(cutoff)
    extra = {} if activation is None else {"activation": activation}
    if kind == "schnet":
        rep = spk.representation.SchNet(
            n_atom_basis=n_atom_basis, n_interactions=n_interactions, radial_basis=radial, cutoff_fn=cut,
            n_filters=n_filters,
            shared_interactions=shared_interactions, **extra,
        )  # fmt: skip
    else:
        rep = spk.representation.PaiNN(
            n_atom_basis=n_atom_basis, n_interactions=n_interactions, radial_basis=radial, cutoff_fn=cut,
            shared_interactions=shared_interactions, shared_filters=shared_filters, **extra,
        )  # fmt: skip
    inputs = (
        [spk.atomistic.Strain(), spk.atomistic.PairwiseDistances()] if stress else [spk.atomistic.PairwiseDistances()]
    )
    extra_postprocessors, postprocessors = list(postprocessors), []
    if offsets:
        atomrefs = torch.zeros(100)
        for z, e in ATOMREFS.items():
            atomrefs[z] = e
        postprocessors = [
            spk.transform.CastTo64(),
            spk.transform.AddOffsets(
                "energy", add_mean=True, add_atomrefs=True, atomrefs=atomrefs, property_mean=torch.tensor([-0.37])
            ),
        ]
    output_modules = []
    if energy:
        output_modules = [
            spk.atomistic.Atomwise(n_in=n_atom_basis, output_key="energy", **(head or {})),
            spk.atomistic.Forces(energy_key="energy", force_key="forces", calc_stress=stress),
        ]
    model = spk.model.NeuralNetworkPotential(
        representation=rep,
        input_modules=inputs,
        output_modules=output_modules + [make(n_atom_basis) for make in outputs],
        postprocessors=postprocessors + extra_postprocessors,
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.3)
    return model.eval()


def spk_predict(model, atoms_list, dtype, length: float):
    """SchNetPack's energies, forces and stress, with positions converted to the model's length unit."""
    converter = spk.interfaces.AtomsConverter(
        neighbor_list=spk.transform.ASENeighborList(cutoff=float(model.representation.cutoff)), dtype=dtype
    )
    results = []
    for atoms in atoms_list:
        scaled = atoms.copy()
        scaled.positions = atoms.positions / length
        scaled.set_cell(atoms.cell[:] / length)
        out = model(converter(scaled))
        result = {key: out[key].detach().double().numpy() for key in ("energy", "forces")}
        if "stress" in out:
            result["stress"] = out["stress"].detach().double().numpy()[0]
        results.append(result)
    return results


def _structures():
    crystal = triclinic_crystal(seed=5)
    crystal.rattle(0.03, seed=1)
    return [molecule("CH3CH2OH"), molecule("H2O"), molecule("CH3COOH"), crystal]


def _compare(model, potential, tolerance, energy_unit="eV", position_unit="Ang", stress=False, absolute=False):
    """Energies (eV), forces (eV/Å) and stress agree within ``tolerance``: absolute, or relative to the largest."""
    energy, length = unit_factor(energy_unit, "eV"), unit_factor(position_unit, "Ang")
    dtype = torch.float64 if jax.config.jax_enable_x64 else torch.float32
    model = model.double() if dtype == torch.float64 else model.float()
    structures = _structures()
    expected = spk_predict(model, structures, dtype, length)
    ours = potential.predict(structures)
    for reference, result in zip(expected, ours, strict=True):
        e_ref = reference["energy"][0] * energy
        assert abs(result["energy"] - e_ref) <= tolerance * (1.0 if absolute else max(abs(e_ref), 1.0))
        f_ref = reference["forces"] * energy / length
        atol = tolerance * (1.0 if absolute else np.abs(f_ref).max())
        np.testing.assert_allclose(result["forces"], f_ref, rtol=0, atol=atol)
        if stress and "stress" in result:
            s_ref = reference["stress"] * energy / length**3
            atol = tolerance * (1.0 if absolute else np.abs(s_ref).max())
            np.testing.assert_allclose(result["stress"], s_ref, rtol=0, atol=atol)


CASES = {
    "schnet": dict(kind="schnet", n_filters=9, offsets=True, stress=True),
    "schnet_shared_bessel_mollifier": dict(
        kind="schnet", rbf="bessel", cutoff_fn="mollifier", shared_interactions=True, head=dict(aggregation_mode="avg")
    ),
    "schnet_tanh_deep_head": dict(kind="schnet", activation=torch.tanh, head=dict(n_hidden=(7, 5), n_layers=3)),
    "painn": dict(kind="painn", offsets=True, stress=True),
    "painn_shared_bessel": dict(kind="painn", rbf="bessel", shared_interactions=True, shared_filters=True),
    "painn_shared_filters_trainable_rbf": dict(kind="painn", rbf="trainable", shared_filters=True, stress=True),
    "schnet_128_features": dict(kind="schnet", n_atom_basis=128, n_interactions=3, n_rbf=20, cutoff=5.0),
    "painn_128_features": dict(kind="painn", n_atom_basis=128, n_interactions=3, n_rbf=20, cutoff=5.0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_import_reproduces_schnetpack_in_float64(name):
    """Within 1e-6 eV and eV/Å: the radial bases take SchNetPack's stored float32 centres and widths (Gaussian) or
    frequencies (Bessel)."""
    with jax.enable_x64(True):
        model = build_spk_model(**CASES[name])
        potential = import_model(model, energy_unit="eV")
        _compare(model.double(), potential, 1e-6, stress=CASES[name].get("stress", False), absolute=True)


@pytest.mark.parametrize("name", ["schnet", "painn"])
def test_import_reproduces_schnetpack_in_float32(name):
    model = build_spk_model(**CASES[name])
    _compare(model, import_model(model, energy_unit="eV"), 1e-4, stress=True)


def test_units_are_converted_and_recorded():
    """A model trained on kcal/mol and Bohr gives eV and Å; its offsets are converted too."""
    with jax.enable_x64(True):
        model = build_spk_model("painn", offsets=True, stress=True, cutoff=7.5)
        potential = import_model(model, energy_unit="kcal/mol", position_unit="Bohr")
        assert potential.cutoff == pytest.approx(7.5 * unit_factor("Bohr", "Ang"))
        assert potential.atomrefs[8] == pytest.approx(-2041.3 * unit_factor("kcal/mol", "eV"), rel=1e-6)
        assert potential.metadata["source_units"] == {"energy": "kcal/mol", "length": "Bohr"}
        _compare(model, potential, 1e-6, energy_unit="kcal/mol", position_unit="Bohr", stress=True, absolute=True)
        bessel = build_spk_model("schnet", rbf="bessel", cutoff=7.5)
        imported = import_model(bessel, "eV", "Bohr")
        freqs = imported.params["params"]["representation"]["radial_basis"]["freqs"]
        np.testing.assert_array_equal(freqs, bessel.representation.radial_basis.freqs.double().numpy() / units.Bohr)
        _compare(bessel, imported, 1e-6, position_unit="Bohr", absolute=True)


def test_offsets_become_elements_and_energy_offsets():
    potential = import_model(build_spk_model("schnet", offsets=True), energy_unit="eV")
    assert potential.elements == (1, 6, 8)
    assert potential.energy_shift == pytest.approx(-0.37)
    assert potential.atomrefs == pytest.approx(ATOMREFS)
    assert len(import_model(build_spk_model("schnet"), energy_unit="eV").elements) == 99


#: the parts of the config.yaml spktrain writes into a run directory (unresolved) that matter here
RUN_CONFIG = """\
run:
  work_dir: ${hydra:runtime.cwd}
  id: ${uuid:1}
globals:
  cutoff: 7.5
  energy_unit: kcal/mol
data:
  _target_: schnetpack.data.AtomsDataModule
  datapath: ${run.work_dir}/data.db
  batch_size: 10
  distance_unit: Bohr
  property_units:
    energy: ${globals.energy_unit}
    forces: kcal/mol/Bohr
  transforms:
  - _target_: schnetpack.transform.MatScipyNeighborList
    cutoff: ${globals.cutoff}
"""


def _run_dir(tmp_path, model, config: str | None = RUN_CONFIG, subdir: str = "."):
    """A SchNetPack run directory holding ``config.yaml`` (unless None) and the model file, in ``subdir``."""
    run = tmp_path / "run"
    (run / subdir).mkdir(parents=True, exist_ok=True)
    if config is not None:
        (run / "config.yaml").write_text(config)
    torch.save(model, run / subdir / "best_model")
    return run / subdir / "best_model"


def test_units_come_from_the_runs_config_yaml(tmp_path):
    """config.yaml beside the model file, or in its parent, names the units; the result equals an explicit import."""
    model = build_spk_model("painn", offsets=True, cutoff=7.5)
    explicit = import_model(model, energy_unit="kcal/mol", position_unit="Bohr")
    for subdir in (".", "checkpoints"):
        potential = import_model(_run_dir(tmp_path, model, subdir=subdir))
        assert potential.metadata["source_units"] == {"energy": "kcal/mol", "length": "Bohr"}
        assert potential.energy_scale == explicit.energy_scale and potential.cutoff == explicit.cutoff
        assert potential.atomrefs == explicit.atomrefs


def test_given_units_win_over_config_yaml(tmp_path):
    path = _run_dir(tmp_path, build_spk_model("schnet"))
    with pytest.warns(UserWarning, match=r"using energy_unit 'eV' as given, not 'kcal/mol' from .*config\.yaml"):
        potential = import_model(path, energy_unit="eV")
    assert potential.metadata["source_units"] == {"energy": "eV", "length": "Bohr"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import_model(path, energy_unit="kcal/mol", position_unit="Bohr")  # agrees with config.yaml
    assert not [w for w in caught if "config.yaml" in str(w.message)]


def test_an_unknown_energy_unit_is_refused_naming_the_option(tmp_path):
    model = build_spk_model("schnet")
    with pytest.raises(UnitError, match="energy unit of the model is unknown.*--energy-unit.*eV or kcal/mol"):
        import_model(model)
    with pytest.raises(UnitError, match="no config.yaml of the run was found.*--energy-unit"):
        import_model(_run_dir(tmp_path, model, config=None))
    no_energy = "data:\n  distance_unit: Ang\n  property_units:\n    forces: eV/Ang\n"
    with pytest.raises(UnitError, match=r"config\.yaml has no data\.property_units\.energy.*--energy-unit"):
        import_model(_run_dir(tmp_path, model, config=no_energy))
    assert import_model(_run_dir(tmp_path, model, config=no_energy), "eV").metadata["source_units"]["length"] == "Ang"


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ("data: {property_units: [\n", "while parsing"),
        ("- data\n", "no data section"),
        ("model:\n  cutoff: 5.0\n", "no data section"),
        ("data:\n  property_units: [eV]\n", "data.property_units is \\['eV'\\], not a mapping"),
        ("data:\n  distance_unit: 5\n  property_units: {energy: eV}\n", "data.distance_unit is 5, not a unit"),
        ("data:\n  property_units: {energy: parsec}\n", "energy_unit 'parsec' cannot be used"),
        ("data:\n  property_units:\n    energy: ${globals.unit}\n", "Interpolation key 'globals.unit' not found"),
    ],
)
def test_a_malformed_config_yaml_is_an_error(tmp_path, config, words):
    """... unless both units are given: then it is only a warning."""
    path = _run_dir(tmp_path, build_spk_model("schnet"), config=config)
    message = r"cannot read the units of the training data from .*config\.yaml: .*" + words + ".*pass both --energy"
    with pytest.raises(ConfigError, match=message):
        import_model(path, energy_unit="eV")
    with pytest.warns(UserWarning, match=r"config\.yaml: .*" + words + ".*; using the units given"):
        assert import_model(path, "eV", "Ang").metadata["source_units"] == {"energy": "eV", "length": "Ang"}


def test_cli_writes_a_model_directory_that_runs_without_torch(tmp_path, capsys):
    from jaxatom.cli import main

    model = build_spk_model("painn", offsets=True, cutoff=7.5)
    path = _run_dir(tmp_path, model)
    assert main(["import-schnetpack", str(path), str(tmp_path / "imported")]) == 0
    out = capsys.readouterr().out
    assert "PaiNN" in out and "(model unit kcal/mol)" in out and "(model unit Bohr)" in out
    loaded = jaxatom.load_model(tmp_path / "imported")
    assert loaded.metadata["imported_from"] == "schnetpack"
    _compare(model, loaded, 1e-4, energy_unit="kcal/mol", position_unit="Bohr")
    assert main(["import-schnetpack", str(path), str(tmp_path / "out"), "--energy-unit", "Ha"]) == 0
    assert "warning: using energy_unit 'Ha' as given, not 'kcal/mol'" in capsys.readouterr().err
    (tmp_path / "run" / "config.yaml").unlink()
    assert main(["import-schnetpack", str(path), str(tmp_path / "out2")]) == 2
    assert "--energy-unit" in capsys.readouterr().err
    assert main(["import-schnetpack", str(tmp_path / "missing"), str(tmp_path / "out3"), "--energy-unit", "eV"]) == 2
    assert "no SchNetPack model file" in capsys.readouterr().err


def test_unsupported_modules_are_refused_by_name():
    model = build_spk_model("schnet")
    model.output_modules.append(spk.atomistic.Response(energy_key="energy", response_properties=["forces"]))
    with pytest.raises(UnsupportedModelError, match="cannot import the output module Response.*jaxatom imports"):
        import_model(model, energy_unit="eV")

    model = build_spk_model("schnet")
    model.representation.radial_basis = spk.nn.GaussianRBFCentered(n_rbf=7, cutoff=CUTOFF)
    with pytest.raises(UnsupportedModelError, match="radial basis GaussianRBFCentered"):
        import_model(model, energy_unit="eV")

    model = build_spk_model("painn")
    model.representation = spk.representation.SO3net(
        n_atom_basis=8, n_interactions=1, lmax=1, radial_basis=_radial("gaussian", 7, CUTOFF),
        cutoff_fn=spk.nn.CosineCutoff(CUTOFF),
    )  # fmt: skip
    with pytest.raises(UnsupportedModelError, match="the representation SO3net"):
        import_model(model, energy_unit="eV")

    model = build_spk_model("painn", activation=torch.nn.functional.gelu)
    with pytest.raises(UnsupportedModelError, match="activation"):
        import_model(model, energy_unit="eV")

    with pytest.raises(UnsupportedModelError, match="not a schnetpack AtomisticModel"):
        import_model(torch.nn.Linear(2, 2), energy_unit="eV")


# --- output heads: dipole moments, charges, polarizabilities and further Atomwise outputs


def dipole(**settings):
    return lambda n_in: spk.atomistic.DipoleMoment(n_in=n_in, **settings)


def polarizability(**settings):
    return lambda n_in: spk.atomistic.Polarizability(n_in=n_in, **settings)


def atomwise(**settings):
    return lambda n_in: spk.atomistic.Atomwise(n_in=n_in, **settings)


def _head_keys(model) -> list[str]:
    """SchNetPack's output keys of the model's heads (the energy's as ``energy`` and ``forces``)."""
    keys = []
    for module in model.output_modules:
        if type(module) is spk.atomistic.Forces:
            keys += ["forces"] + (["stress"] if module.calc_stress else [])
        elif type(module) is spk.atomistic.Atomwise:
            keys.append(module.output_key)
            if module.aggregation_mode is not None and module.per_atom_output_key not in (None, module.output_key):
                keys.append(module.per_atom_output_key)
        elif type(module) is spk.atomistic.DipoleMoment:
            keys += [module.dipole_key] + ([module.charges_key] if module.return_charges else [])
        elif type(module) is spk.atomistic.Polarizability:
            keys.append(module.polarizability_key)
    return keys


def spk_outputs(model, atoms_list, dtype, length: float = 1.0) -> list[dict]:
    """SchNetPack's outputs per structure, positions converted to the model's length unit; a structure's
    ``atoms.info["charge"]`` becomes SchNetPack's ``total_charge`` input."""
    converter = spk.interfaces.AtomsConverter(
        neighbor_list=spk.transform.ASENeighborList(cutoff=float(model.representation.cutoff)), dtype=dtype
    )
    keys, results = _head_keys(model), []
    for atoms in atoms_list:
        scaled = atoms.copy()
        scaled.positions = atoms.positions / length
        scaled.set_cell(atoms.cell[:] / length)
        inputs = converter(scaled)
        if "charge" in atoms.info:
            inputs[spk.properties.total_charge] = torch.tensor([float(atoms.info["charge"])], dtype=dtype)
        out = model(inputs)
        results.append({key: out[key].detach().double().numpy() for key in keys if key in out})
    return results


def _molecules(charged: bool = True):
    """Molecules, one translated away from the origin (SchNetPack's dipoles and polarizabilities use absolute
    positions) and, with ``charged``, a cation (total charge +1, from ``atoms.info["charge"]``)."""
    water = molecule("H2O")
    water.translate([3.0, -2.0, 1.5])
    structures = [molecule("CH3CH2OH"), water, molecule("CH3COOH")]
    if charged:
        cation = molecule("CH3CH2OH")
        cation.translate([-1.0, 2.0, 0.5])
        cation.info["charge"] = 1.0
        structures.append(cation)
    return structures


def _compare_outputs(model, potential, tolerance, structures, length=1.0, factors=None, absolute=True, names=None):
    """Every SchNetPack output equals jaxatom's within ``tolerance`` (absolute, or relative to the largest value of
    that output); ``factors`` converts SchNetPack's units to jaxatom's by key, ``names`` renames keys. Returns the
    largest absolute difference per key."""
    factors, names = factors or {}, names or {}
    dtype = torch.float64 if jax.config.jax_enable_x64 else torch.float32
    model = model.double() if dtype == torch.float64 else model.float()
    expected = spk_outputs(model, structures, dtype, length)
    ours = potential.predict(structures)
    worst: dict[str, float] = {}
    for key in expected[0]:
        reference = [np.reshape(r[key] * factors.get(key, 1.0), np.shape(o[names.get(key, key)]))
                     for r, o in zip(expected, ours, strict=True)]  # fmt: skip
        result = [np.asarray(o[names.get(key, key)]) for o in ours]
        scale = 1.0 if absolute else max(np.abs(r).max() for r in reference)
        worst[key] = max(np.abs(a - b).max() for a, b in zip(result, reference, strict=True))
        assert worst[key] <= tolerance * scale, (key, worst[key], tolerance * scale)
    return worst


HEAD_CASES = {
    "painn_energy_vector_dipole_charges_polarizability": dict(
        kind="painn", offsets=True, outputs=[dipole(use_vector_representation=True, return_charges=True),
                                             polarizability()],
    ),
    "painn_dipole_magnitude_only": dict(kind="painn", energy=False, outputs=[dipole(predict_magnitude=True)]),
    "painn_bessel_deep_polarizability_only": dict(
        kind="painn", rbf="bessel", energy=False, outputs=[polarizability(n_layers=3, activation=torch.tanh)]
    ),
    "painn_vector_dipole_uncorrected_magnitude": dict(
        kind="painn", shared_interactions=True, outputs=[dipole(
            use_vector_representation=True, predict_magnitude=True, correct_charges=False, return_charges=True,
            n_hidden=5, dipole_key="mu", charges_key="q",
        )],
    ),
    "schnet_energy_dipole_charges": dict(kind="schnet", outputs=[dipole(return_charges=True, n_hidden=(6, 4),
                                                                        n_layers=3)]),
    "schnet_atomwise_outputs": dict(
        kind="schnet", rbf="bessel", outputs=[
            atomwise(output_key="partial_charges", aggregation_mode=None, per_atom_output_key="partial_charges"),
            atomwise(output_key="gap", aggregation_mode="avg"),
            atomwise(output_key="vec", n_out=3, per_atom_output_key="vec_atoms"),
        ],
    ),
}  # fmt: skip
#: units of the heads' outputs in HEAD_CASES (jaxatom's, so that numbers compare directly)
HEAD_UNITS = {"dipole_moment": "e*Ang", "mu": "e*Ang", "polarizability": "Ang^3", "partial_charges": "e", "gap": "eV",
              "vec": "1"}  # fmt: skip


def _import_heads(model, energy_unit="eV"):
    keys = {key for key in _head_keys(model) if key in HEAD_UNITS}
    energy = energy_unit if any(type(m) is spk.atomistic.Forces for m in model.output_modules) else None
    return import_model(model, energy_unit=energy, units={key: HEAD_UNITS[key] for key in keys})


@pytest.mark.parametrize("name", list(HEAD_CASES))
def test_output_heads_reproduce_schnetpack_in_float64(name):
    """Dipoles (e·Å), charges (e), polarizabilities (Å³), other Atomwise outputs, energies and forces within 1e-6,
    for a charged molecule too."""
    with jax.enable_x64(True):
        model = build_spk_model(**HEAD_CASES[name])
        potential = _import_heads(model)
        worst = _compare_outputs(model, potential, 1e-6, _molecules())
        assert set(worst) == set(_head_keys(model))


@pytest.mark.parametrize("name", ["painn_energy_vector_dipole_charges_polarizability", "schnet_atomwise_outputs"])
def test_output_heads_reproduce_schnetpack_in_float32(name):
    model = build_spk_model(**HEAD_CASES[name])
    _compare_outputs(model, _import_heads(model), 1e-4, _molecules(), absolute=False)


def test_imported_heads_are_named_and_saved(tmp_path):
    """SchNetPack's keys become the outputs' names; the energy is ``energy`` whatever its key; the model file keeps
    the heads (absolute positions for the polarizability) and gives the same numbers."""
    model = build_spk_model(**HEAD_CASES["painn_energy_vector_dipole_charges_polarizability"])
    potential = _import_heads(model)
    assert potential.outputs == ("energy", "energies", "dipole_moment", "partial_charges", "polarizability", "forces",
                                 "stress")  # fmt: skip
    heads = {type(head).__name__: head for head in potential.model.heads}
    assert heads["Polarizability"].translation_invariant is False
    assert heads["DipoleMoment"].use_vector_representation and heads["DipoleMoment"].charges_key == "partial_charges"
    assert potential.metadata["source_units"] == {"energy": "eV", "length": "Ang", "dipole_moment": "e*Ang",
                                                  "polarizability": "Ang^3"}  # fmt: skip
    potential.save(tmp_path / "model")
    loaded = jaxatom.load_model(tmp_path / "model")
    for ours, theirs in zip(potential.predict(_molecules()), loaded.predict(_molecules()), strict=True):
        for key, value in ours.items():
            np.testing.assert_array_equal(theirs[key], value)
    energy_u0 = build_spk_model("schnet", energy=False, outputs=[atomwise(output_key="energy_U0")])
    imported = import_model(energy_u0, energy_unit="eV")
    assert "forces" in imported.outputs and imported.metadata["source_outputs"] == {"energy": "energy_U0"}
    gap = build_spk_model("schnet", energy=False, outputs=[atomwise(output_key="gap"), dipole()])
    imported = import_model(gap, units={"gap": "Ha", "dipole_moment": "Debye"})
    assert imported.outputs == ("gap", "dipole_moment") and imported.model.heads[0].unit == "eV"
    assert imported.scaling["gap"].scale == units.Hartree
    assert imported.metadata["source_units"]["energy"] is None


#: a SchNetPack run on QM9-like units: Bohr positions, dipoles in Debye, polarizabilities in Bohr³, energies in Ha
HEADS_CONFIG = """\
data:
  distance_unit: Bohr
  property_units:
    energy: Ha
    dipole_moment: Debye
    polarizability: Bohr^3
"""


def test_head_units_come_from_config_yaml_and_are_converted(tmp_path):
    """Dipoles (Debye), charges (Debye/Bohr) and polarizabilities (Bohr³) come out in e·Å, e and Å³. SchNetPack adds
    the total charge to charges in Debye/Bohr: charged molecules differ, with a warning; neutral ones agree."""
    model = build_spk_model("painn", cutoff=7.5, outputs=HEAD_CASES[
        "painn_energy_vector_dipole_charges_polarizability"]["outputs"])  # fmt: skip
    path = _run_dir(tmp_path, model, config=HEADS_CONFIG)
    with pytest.warns(UserWarning, match=r"adds each structure's total charge to charges in units of 0\.3934\d* e"):
        potential = import_model(path)
    assert potential.metadata["source_units"] == {"energy": "Ha", "length": "Bohr", "dipole_moment": "Debye",
                                                  "polarizability": "Bohr^3"}  # fmt: skip
    dipole_factor = unit_factor("Debye", "e*Ang")
    factors = {"energy": unit_factor("Ha", "eV"), "forces": unit_factor("Ha/Bohr", "eV/Ang"),
               "dipole_moment": dipole_factor, "partial_charges": dipole_factor / units.Bohr,
               "polarizability": unit_factor("Bohr^3", "Ang^3")}  # fmt: skip
    with jax.enable_x64(True):
        potential = import_model(path)
        _compare_outputs(model, potential, 1e-6, _molecules(charged=False), units.Bohr, factors)
        with pytest.raises(AssertionError, match="dipole_moment"):
            _compare_outputs(model, potential, 1e-6, _molecules()[3:], units.Bohr, factors)


def test_charged_molecules_agree_where_charges_are_in_e(tmp_path):
    """Dipoles in e·Bohr with Bohr positions: SchNetPack's charges are in e, and charged molecules agree too."""
    model = build_spk_model("schnet", cutoff=7.5, outputs=[dipole(return_charges=True)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no warning about the total charge
        with jax.enable_x64(True):
            potential = import_model(model, "kcal/mol", "Bohr", units={"dipole_moment": "e*Bohr"})
            factors = {"energy": units.kcal_mol, "forces": units.kcal_mol / units.Bohr, "dipole_moment": units.Bohr}
            _compare_outputs(model, potential, 1e-6, _molecules(), units.Bohr, factors)
    from_charges = import_model(model, "kcal/mol", "Bohr", units={"partial_charges": "e"})
    assert from_charges.metadata["source_units"]["dipole_moment"] == "e*Bohr"


def test_postprocessors_become_output_scaling_or_fold_into_heads():
    """ScaleProperty on a dipole and a polarizability (folded into the head), ScaleProperty and intensive AddOffsets
    on an averaged Atomwise output (its OutputScaling) and ScaleProperty on the energy before Forces."""
    atomrefs = torch.zeros(100)
    atomrefs[[1, 6, 8]] = torch.tensor([0.1, -0.4, 0.7])
    model = build_spk_model("painn", offsets=True, outputs=[
        dipole(use_vector_representation=True, return_charges=True), polarizability(),
        atomwise(output_key="gap", aggregation_mode="avg", per_atom_output_key="gaps"),
    ], postprocessors=[
        spk.transform.ScaleProperty("dipole_moment", scale=torch.tensor([2.5])),
        spk.transform.ScaleProperty("polarizability", scale=torch.tensor([0.7])),
        spk.transform.ScaleProperty("gap", scale=torch.tensor([1.7])),
        spk.transform.AddOffsets("gap", add_mean=True, add_atomrefs=True, is_extensive=False, atomrefs=atomrefs,
                                 property_mean=torch.tensor([0.3])),
    ])  # fmt: skip
    model.output_modules.insert(1, spk.transform.ScaleProperty("energy", scale=torch.tensor([1.3])))
    with jax.enable_x64(True):
        potential = _import_heads(model)
        assert potential.scaling["gap"].scale == pytest.approx(1.7)
        assert potential.scaling["gap"].shift == pytest.approx(0.3, rel=1e-6)  # SchNetPack's float32 buffers
        assert potential.scaling["energy"].scale == pytest.approx(1.3, rel=1e-6)
        model.double()
        expected = spk_outputs(model, _molecules(charged=False), torch.float64)
        ours = potential.predict(_molecules(charged=False))
        for reference, result in zip(expected, ours, strict=True):
            # SchNetPack's charges are not scaled with the dipole, jaxatom's are (they make it)
            np.testing.assert_allclose(result["partial_charges"], 2.5 * reference["partial_charges"][:, 0], atol=1e-6)
            for key in ("energy", "forces", "dipole_moment", "polarizability", "gap"):
                np.testing.assert_allclose(result[key], np.reshape(reference[key], np.shape(result[key])), atol=1e-6)


def _refused(model, match):
    with pytest.raises(UnsupportedModelError, match=match):
        _import_heads(model)


def test_what_cannot_be_reproduced_is_refused():
    scale = torch.tensor([2.0])
    model = build_spk_model("schnet", postprocessors=[spk.transform.ScaleProperty("energy", scale=scale)])
    _refused(model, "ScaleProperty on the energy 'energy' after Forces: SchNetPack's forces are then not the gradient")
    model = build_spk_model("schnet", outputs=[dipole()], postprocessors=[spk.transform.AddOffsets(
        "dipole_moment", add_mean=True, property_mean=torch.tensor([0.1]))])  # fmt: skip
    _refused(model, "AddOffsets on 'dipole_moment' \\(only on scalar per-structure Atomwise outputs")
    model = build_spk_model("schnet", postprocessors=[spk.transform.AddOffsets(
        "energy", add_mean=True, is_extensive=False, property_mean=torch.tensor([0.1]))])  # fmt: skip
    _refused(model, "AddOffsets with is_extensive=False on 'energy', aggregated by 'sum'")
    model = build_spk_model("schnet", outputs=[dipole(return_charges=True)], postprocessors=[
        spk.transform.ScaleProperty("partial_charges", scale=scale)])  # fmt: skip
    _refused(model, "ScaleProperty on 'partial_charges', the per-atom values or charges of 'dipole_moment'")
    _refused(build_spk_model("schnet", outputs=[polarizability()]), "Polarizability needs vector features")
    model = build_spk_model("painn", energy=False, outputs=[dipole(), polarizability()])
    with pytest.raises(
        UnitError, match=r"output 'dipole_moment', 'polarizability' is unknown .*units=\{'dipole_moment"
    ):
        import_model(model)
    with pytest.raises(ConfigError, match="units names 'dipole', which the model does not predict"):
        import_model(model, units={"dipole": "Debye", "polarizability": "Bohr^3"})
    with pytest.raises(UnitError, match="the unit 'eV' of the output 'dipole_moment' cannot be used"):
        import_model(model, units={"dipole_moment": "eV", "polarizability": "Bohr^3"})


def test_cli_takes_the_units_of_further_outputs(tmp_path, capsys):
    """``--unit NAME=UNIT`` gives the units of outputs a run directory would otherwise name (no config.yaml here)."""
    from jaxatom.cli import main

    model = build_spk_model("painn", energy=False, outputs=[dipole(), polarizability()])
    path = tmp_path / "best_model"
    torch.save(model, path)
    out = tmp_path / "imported"
    argv = [
        "import-schnetpack",
        str(path),
        str(out),
        "--unit",
        "dipole_moment=Debye",
        "--unit",
        "polarizability=Bohr^3",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "dipole_moment in e*Ang (model unit Debye)" in printed and "polarizability in Ang^3" in printed
    assert jaxatom.load_model(out).metadata["source_units"]["dipole_moment"] == "Debye"
    assert main([*argv[:2], str(tmp_path / "again"), "--unit", "dipole_moment"]) == 2
    assert "--unit takes NAME=UNIT" in capsys.readouterr().err
