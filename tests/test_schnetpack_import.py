"""SchNetPack models imported into jaxatom give SchNetPack's energies, forces and stress (float64 and float32), in the
units of the training data given or read from the run's config.yaml."""

import warnings

import jax
import numpy as np
import pytest
from ase.build import molecule

import jaxatom
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
):
    """A randomly initialised SchNetPack NeuralNetworkPotential; biases randomised too so that every weight counts."""
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
    postprocessors = []
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
    model = spk.model.NeuralNetworkPotential(
        representation=rep,
        input_modules=inputs,
        output_modules=[
            spk.atomistic.Atomwise(n_in=n_atom_basis, output_key="energy", **(head or {})),
            spk.atomistic.Forces(energy_key="energy", force_key="forces", calc_stress=stress),
        ],
        postprocessors=postprocessors,
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
    """Within 1e-6 eV and eV/Å: the Gaussian bases take SchNetPack's stored float32 centres and widths. jaxatom's
    Bessel basis computes its frequencies in float64 where SchNetPack stores float32 ones: 1e-5 there."""
    tolerance = 1e-5 if CASES[name].get("rbf") == "bessel" else 1e-6
    with jax.enable_x64(True):
        model = build_spk_model(**CASES[name])
        potential = import_model(model, energy_unit="eV")
        _compare(model.double(), potential, tolerance, stress=CASES[name].get("stress", False), absolute=True)


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
        _compare(model, potential, 1e-5, energy_unit="kcal/mol", position_unit="Bohr", stress=True)
        bessel = build_spk_model("schnet", rbf="bessel", cutoff=7.5)
        _compare(bessel, import_model(bessel, "eV", "Bohr"), 1e-5, position_unit="Bohr")


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
    model.output_modules.append(spk.atomistic.DipoleMoment(n_in=12))
    with pytest.raises(UnsupportedModelError, match="cannot import the output module DipoleMoment.*jaxatom imports"):
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
