"""SchNetPack models imported into jaxatom give SchNetPack's energies, forces and stress (float64 and float32)."""

import jax
import numpy as np
import pytest
from ase.build import molecule

import jaxatom
from jaxatom.units import unit_factor

from .conftest import triclinic_crystal

torch = pytest.importorskip("torch", reason="torch is not installed (tools/install-schnetpack.sh installs it)")
spk = pytest.importorskip("schnetpack", reason="schnetpack is not installed (tools/install-schnetpack.sh)")

from jaxatom.interop.schnetpack import UnsupportedModelError, import_model  # noqa: E402

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
    seed: int = 0,
):
    """A randomly initialised SchNetPack NeuralNetworkPotential; biases randomised too so that every weight counts."""
    torch.manual_seed(seed)
    radial = _radial(rbf, 7, cutoff * (0.9 if rbf == "gaussian" else 1.0))
    cut = spk.nn.CosineCutoff(cutoff) if cutoff_fn == "cosine" else spk.nn.MollifierCutoff(cutoff)
    extra = {} if activation is None else {"activation": activation}
    if kind == "schnet":
        rep = spk.representation.SchNet(
            n_atom_basis=12, n_interactions=2, radial_basis=radial, cutoff_fn=cut, n_filters=n_filters,
            shared_interactions=shared_interactions, **extra,
        )  # fmt: skip
    else:
        rep = spk.representation.PaiNN(
            n_atom_basis=12, n_interactions=2, radial_basis=radial, cutoff_fn=cut,
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
            spk.atomistic.Atomwise(n_in=12, output_key="energy", **(head or {})),
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


def _compare(model, potential, tolerance, energy_unit="eV", position_unit="Ang", stress=False):
    energy, length = unit_factor(energy_unit, "eV"), unit_factor(position_unit, "Ang")
    dtype = torch.float64 if jax.config.jax_enable_x64 else torch.float32
    model = model.double() if dtype == torch.float64 else model.float()
    structures = _structures()
    expected = spk_predict(model, structures, dtype, length)
    ours = potential.predict(structures)
    for reference, result in zip(expected, ours, strict=True):
        e_ref = reference["energy"][0] * energy
        assert abs(result["energy"] - e_ref) <= tolerance * max(abs(e_ref), 1.0)
        f_ref = reference["forces"] * energy / length
        np.testing.assert_allclose(result["forces"], f_ref, rtol=0, atol=tolerance * np.abs(f_ref).max())
        if stress and "stress" in result:
            s_ref = reference["stress"] * energy / length**3
            np.testing.assert_allclose(result["stress"], s_ref, rtol=0, atol=tolerance * np.abs(s_ref).max())


CASES = {
    "schnet": dict(kind="schnet", n_filters=9, offsets=True, stress=True),
    "schnet_shared_bessel_mollifier": dict(
        kind="schnet", rbf="bessel", cutoff_fn="mollifier", shared_interactions=True, head=dict(aggregation_mode="avg")
    ),
    "schnet_tanh_deep_head": dict(kind="schnet", activation=torch.tanh, head=dict(n_hidden=(7, 5), n_layers=3)),
    "painn": dict(kind="painn", offsets=True, stress=True),
    "painn_shared_bessel": dict(kind="painn", rbf="bessel", shared_interactions=True, shared_filters=True),
    "painn_shared_filters_trainable_rbf": dict(kind="painn", rbf="trainable", shared_filters=True, stress=True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_import_reproduces_schnetpack_in_float64(name):
    with jax.enable_x64(True):
        model = build_spk_model(**CASES[name])
        potential = import_model(model)
        _compare(model.double(), potential, 1e-5, stress=CASES[name].get("stress", False))


@pytest.mark.parametrize("name", ["schnet", "painn"])
def test_import_reproduces_schnetpack_in_float32(name):
    model = build_spk_model(**CASES[name])
    _compare(model, import_model(model), 1e-4, stress=True)


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
        _compare(bessel, import_model(bessel, position_unit="Bohr"), 1e-5, position_unit="Bohr")


def test_offsets_become_elements_and_energy_offsets():
    potential = import_model(build_spk_model("schnet", offsets=True))
    assert potential.elements == (1, 6, 8)
    assert potential.energy_shift == pytest.approx(-0.37)
    assert potential.atomrefs == pytest.approx(ATOMREFS)
    assert len(import_model(build_spk_model("schnet")).elements) == 99


def test_cli_writes_a_model_directory_that_runs_without_torch(tmp_path, capsys):
    from jaxatom.cli import main

    model = build_spk_model("painn", offsets=True)
    torch.save(model, tmp_path / "best_model")
    assert main(["import-schnetpack", str(tmp_path / "best_model"), str(tmp_path / "imported")]) == 0
    assert "PaiNN" in capsys.readouterr().out
    loaded = jaxatom.load_model(tmp_path / "imported")
    assert loaded.metadata["imported_from"] == "schnetpack"
    _compare(model, loaded, 1e-4)
    assert main(["import-schnetpack", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "no SchNetPack model file" in capsys.readouterr().err


def test_unsupported_modules_are_refused_by_name():
    model = build_spk_model("schnet")
    model.output_modules.append(spk.atomistic.DipoleMoment(n_in=12))
    with pytest.raises(UnsupportedModelError, match="cannot import the output module DipoleMoment.*jaxatom imports"):
        import_model(model)

    model = build_spk_model("schnet")
    model.representation.radial_basis = spk.nn.GaussianRBFCentered(n_rbf=7, cutoff=CUTOFF)
    with pytest.raises(UnsupportedModelError, match="radial basis GaussianRBFCentered"):
        import_model(model)

    model = build_spk_model("painn")
    model.representation = spk.representation.SO3net(
        n_atom_basis=8, n_interactions=1, lmax=1, radial_basis=_radial("gaussian", 7, CUTOFF),
        cutoff_fn=spk.nn.CosineCutoff(CUTOFF),
    )  # fmt: skip
    with pytest.raises(UnsupportedModelError, match="the representation SO3net"):
        import_model(model)

    model = build_spk_model("painn", activation=torch.nn.functional.gelu)
    with pytest.raises(UnsupportedModelError, match="activation"):
        import_model(model)

    with pytest.raises(UnsupportedModelError, match="not a schnetpack AtomisticModel"):
        import_model(torch.nn.Linear(2, 2))
