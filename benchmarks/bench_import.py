"""An imported SchNetPack PaiNN: energy + forces in jaxatom vs the same model in SchNetPack, one process, one run.

Builds SchNetPack's PaiNN (128 features, 3 interactions, 5 Å cosine cutoff, 20 Gaussians; seeded random weights),
imports it with ``jaxatom.interop.schnetpack.import_model``, checks that both give the same energies and forces, and
times both on one aspirin molecule and a batch of 32 perturbed copies (same protocol as ``bench_inference.py``; the
first-call row is the first end-to-end prediction, which for jaxatom includes compiling).
Needs torch and schnetpack in the jaxatom environment (``tools/install-schnetpack.sh``).

Usage (from the repository root)::

    python benchmarks/bench_import.py --repeats 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import (  # noqa: E402
    CUTOFF,
    DEFAULT_STRUCTURE,
    STAGES,
    bench_jax_case,
    bench_spk_case,
    build_spk_model,
    core_count,
    cpu_model,
    fmt_ms,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--structure", type=Path, default=DEFAULT_STRUCTURE)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import jax
    import schnetpack as spk
    import torch
    from bench_inference import load_cases

    from jaxatom.interop.schnetpack import import_model

    torch.set_num_threads(core_count())
    torch.manual_seed(args.seed)
    model = build_spk_model("painn")
    potential = import_model(model)
    cases = load_cases(args.structure, args.batch_size, args.seed)
    converter = spk.interfaces.AtomsConverter(
        neighbor_list=spk.transform.MatScipyNeighborList(cutoff=CUTOFF), dtype=torch.float32
    )
    print(f"CPU: {cpu_model()} ({core_count()} cores); torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"schnetpack {spk.__version__}, jax {jax.__version__}; float32, median of {args.repeats}")  # fmt: skip
    print("\n| case | stage | jaxatom (ms) | SchNetPack (ms) | SchNetPack / jaxatom | max rel. force difference |")
    print("|---|---|---:|---:|---:|---:|")
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
        jax_times, _, _ = bench_jax_case(potential, atoms_list, args.repeats, args.warmup)
        spk_times = bench_spk_case(model, converter, atoms_list, args.repeats, args.warmup)
        for stage in ("first_call", "steady", "end_to_end"):
            jax_s = jax_first if stage == "first_call" else jax_times[stage].median_s
            spk_s = spk_first if stage == "first_call" else spk_times[stage].median_s
            print(f"| {case} | {STAGES[stage]} | {fmt_ms(jax_s)} | {fmt_ms(spk_s)} | {spk_s / jax_s:.2f}x | "
                  f"{difference:.1e} |")  # fmt: skip


if __name__ == "__main__":
    main()
