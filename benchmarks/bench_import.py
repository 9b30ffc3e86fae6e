"""An imported SchNetPack PaiNN: energy + forces in jaxatom vs the same model in SchNetPack, one process, one run.

Builds SchNetPack's PaiNN (128 features, 3 interactions, 5 Å cosine cutoff, 20 Gaussians; seeded random weights),
imports it with ``jaxatom.interop.schnetpack.import_model``, checks that both give the same energies and forces, and
times both on one aspirin molecule and a batch of 32 perturbed copies (same protocol as ``bench_inference.py``; the
first-call row is the first end-to-end prediction, which for jaxatom includes compiling).
Needs torch and schnetpack in the jaxatom environment (``tools/install-schnetpack.sh``).

With ``--heads`` it measures instead how closely an imported PaiNN with an energy, a ``DipoleMoment`` (vector
representation, charges returned) and a ``Polarizability`` head (same size; biases randomised too, so that every
parameter counts) reproduces SchNetPack's dipoles, charges and polarizabilities, in float64 and float32: on the
structure, the perturbed batch and the structure as a cation (total charge +1). Units: e·Å and Å³ (charged structures
agree), and Debye and Bohr³ with Bohr positions (the QM9 convention; neutral structures only, see
``jaxatom.interop.schnetpack``).

Usage (from the repository root)::

    python benchmarks/bench_import.py --repeats 20
    python benchmarks/bench_import.py --heads
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Column, core_count, cpu_model, markdown_table  # noqa: E402
from bench_inference import (  # noqa: E402
    CUTOFF,
    STAGES,
    bench_jax_case,
    bench_spk_case,
    build_spk_model,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--structure", type=Path, help="aspirin geometry (default: the shipped one)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heads", action="store_true", help="measure dipole/charge/polarizability parity instead")
    args = parser.parse_args()
    if args.heads:
        heads_parity(args.structure, args.batch_size, args.seed)
        return

    import jax
    import schnetpack as spk
    import torch
    from bench_inference import load_cases

    from jaxatom.interop.schnetpack import import_model

    torch.set_num_threads(core_count())
    torch.manual_seed(args.seed)
    model = build_spk_model("painn")
    potential = import_model(model, energy_unit="eV")
    cases = load_cases(args.structure, args.batch_size, args.seed)
    converter = spk.interfaces.AtomsConverter(
        neighbor_list=spk.transform.MatScipyNeighborList(cutoff=CUTOFF), dtype=torch.float32
    )
    print(f"CPU: {cpu_model()} ({core_count()} cores); torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"schnetpack {spk.__version__}, jax {jax.__version__}; float32, median of {args.repeats}")  # fmt: skip
    from _roofline import COLUMNS, machine_limits, with_roofline

    limits, rows = machine_limits(), []
    for case, atoms_list in cases.items():
        start = time.perf_counter()
        reference = model(converter(atoms_list))
        spk_first = time.perf_counter() - start
        start = time.perf_counter()
        ours = potential.predict(atoms_list)  # includes jax's compile for this shape
        jax_first = time.perf_counter() - start
        forces = np.concatenate([r["forces"] for r in ours])
        ref_forces = reference["forces"].detach().numpy()
        difference = np.abs(forces - ref_forces).max() / np.abs(ref_forces).max()
        jax_times, work = bench_jax_case(potential, atoms_list, args.repeats, args.warmup)
        spk_times = bench_spk_case(model, converter, atoms_list, args.repeats, args.warmup)
        for stage in ("first_call", "steady", "end_to_end"):
            jax_s = jax_first if stage == "first_call" else jax_times[stage].median_s
            spk_s = spk_first if stage == "first_call" else spk_times[stage].median_s
            row = {"case": case, "stage": STAGES[stage], "jax_ms": 1e3 * jax_s, "spk_ms": 1e3 * spk_s,
                   "ratio": f"{spk_s / jax_s:.2f}x", "difference": difference}  # fmt: skip
            rows.append(with_roofline({**row, **work}, jax_s, limits) if stage == "steady" else row)
    columns = [Column("case", "case", numeric=False), Column("stage", "stage", numeric=False),
               Column("jaxatom (ms)", "jax_ms"), Column("SchNetPack (ms)", "spk_ms"),
               Column("SchNetPack / jaxatom", "ratio"), Column("max rel. force difference", "difference", ".1e"),
               *COLUMNS]  # fmt: skip
    print()
    print(markdown_table(columns, rows))


def build_heads_model(seed: int):
    """SchNetPack's PaiNN of the benchmark's size with energy + forces, vector dipole (+ charges) and polarizability
    heads; biases drawn from N(0, 0.1) (SchNetPack initialises them to zero)."""
    import schnetpack as spk
    import torch
    from bench_inference import N_ATOM_BASIS, N_RBF

    torch.manual_seed(seed)
    representation = spk.representation.PaiNN(
        n_atom_basis=N_ATOM_BASIS, n_interactions=3, radial_basis=spk.nn.GaussianRBF(n_rbf=N_RBF, cutoff=CUTOFF),
        cutoff_fn=spk.nn.CosineCutoff(CUTOFF),
    )  # fmt: skip
    model = spk.model.NeuralNetworkPotential(
        representation=representation,
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[
            spk.atomistic.Atomwise(n_in=N_ATOM_BASIS, output_key="energy"),
            spk.atomistic.Forces(energy_key="energy", force_key="forces"),
            spk.atomistic.DipoleMoment(n_in=N_ATOM_BASIS, use_vector_representation=True, return_charges=True),
            spk.atomistic.Polarizability(n_in=N_ATOM_BASIS),
        ],
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, 0.1)
    return model.eval()


#: SchNetPack output -> (jaxatom output, label)
HEAD_OUTPUTS = {
    "energy": ("energy", "energy (eV)"),
    "forces": ("forces", "forces (eV/Å)"),
    "dipole_moment": ("dipole_moment", "μ (e·Å)"),
    "partial_charges": ("partial_charges", "q (e)"),
    "polarizability": ("polarizability", "α (Å³)"),
}


def heads_parity(structure: Path, batch_size: int, seed: int) -> None:
    """Print the largest |jaxatom − SchNetPack| of each output, float64 and float32, for two unit conventions."""
    import jax
    import schnetpack as spk
    import torch
    from bench_inference import load_cases

    from jaxatom.interop.schnetpack import import_model
    from jaxatom.units import unit_factor

    torch.set_num_threads(core_count())
    cases = load_cases(structure, batch_size, seed)
    cation = cases["single"][0].copy()
    cation.info["charge"] = 1.0
    structures = {"neutral": cases["single"] + cases[f"batch{batch_size}"], "cation": [cation]}
    model = build_heads_model(seed)
    conventions = {  # name -> (length unit, dipole unit, polarizability unit, structure sets)
        "e·Å, Å³, Å": ("Ang", "e*Ang", "Ang^3", ("neutral", "cation")),
        "Debye, Bohr³, Bohr": ("Bohr", "Debye", "Bohr^3", ("neutral",)),
    }
    n_neutral = len(structures["neutral"])
    print(f"CPU: {cpu_model()} ({core_count()} cores); torch {torch.__version__}, schnetpack {spk.__version__}, "
          f"jax {jax.__version__}; PaiNN {model.representation.n_atom_basis} features, 3 interactions, cutoff "
          f"{CUTOFF} (model unit); {n_neutral} neutral structures of {len(cation)} atoms + 1 cation")  # fmt: skip
    print("\n| model units | structures | precision | " + " | ".join(label for _, label in HEAD_OUTPUTS.values())
          + " |")  # fmt: skip
    print("|---|---|---|" + "---:|" * len(HEAD_OUTPUTS))
    largest: dict[str, float] = {}
    for convention, (length_unit, dipole_unit, alpha_unit, sets) in conventions.items():
        length = unit_factor(length_unit, "Ang")
        factors = {"energy": 1.0, "forces": 1.0 / length, "dipole_moment": unit_factor(dipole_unit, "e*Ang"),
                   "partial_charges": unit_factor(dipole_unit, "e*Ang") / length,
                   "polarizability": unit_factor(alpha_unit, "Ang^3")}  # fmt: skip
        units = {"dipole_moment": dipole_unit, "polarizability": alpha_unit}
        for x64, dtype in ((True, torch.float64), (False, torch.float32)):
            with jax.enable_x64(x64):
                with warnings.catch_warnings():  # Debye: the total-charge warning, hence no cation row
                    warnings.simplefilter("ignore", UserWarning)
                    potential = import_model(model, "eV", length_unit, units=units)
                reference_model = model.double() if x64 else model.float()
                for name in sets:
                    atoms_list = structures[name]
                    expected = _spk_outputs(reference_model, atoms_list, dtype, length, spk, torch)
                    ours = potential.predict(atoms_list)
                    cells = []
                    for key, (ours_key, _) in HEAD_OUTPUTS.items():
                        difference = max(
                            np.abs(np.asarray(o[ours_key]) - np.reshape(r[key] * factors[key], np.shape(o[ours_key])))
                            .max() for o, r in zip(ours, expected, strict=True)
                        )  # fmt: skip
                        size = max(np.abs(r[key] * factors[key]).max() for r in expected)
                        largest[key] = max(largest.get(key, 0.0), size)
                        cells.append(f"{difference:.1e}")
                    precision = "float64" if x64 else "float32"
                    print(f"| {convention} | {name} ({len(atoms_list)}) | {precision} | " + " | ".join(cells) + " |")
    print("\nlargest |value| (jaxatom units): " + ", ".join(
        f"{HEAD_OUTPUTS[key][1]} {value:.3g}" for key, value in largest.items()))  # fmt: skip


def _spk_outputs(model, atoms_list, dtype, length: float, spk, torch) -> list[dict]:
    """SchNetPack's outputs per structure (positions in the model's length unit, ``atoms.info["charge"]`` as
    ``total_charge``)."""
    converter = spk.interfaces.AtomsConverter(
        neighbor_list=spk.transform.MatScipyNeighborList(cutoff=float(model.representation.cutoff)), dtype=dtype
    )
    results = []
    for atoms in atoms_list:
        scaled = atoms.copy()
        scaled.positions = atoms.positions / length
        inputs = converter(scaled)
        if "charge" in atoms.info:
            inputs[spk.properties.total_charge] = torch.tensor([float(atoms.info["charge"])], dtype=dtype)
        out = model(inputs)
        results.append({key: out[key].detach().double().numpy() for key in HEAD_OUTPUTS})
    return results


if __name__ == "__main__":
    main()
