"""The ``jaxatom`` command line: ``jaxatom import-schnetpack MODEL_FILE OUT_DIR`` (more commands with later layers)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _import_schnetpack(args: argparse.Namespace) -> int:
    from jaxatom.interop.schnetpack import UnsupportedModelError, import_model

    try:
        potential = import_model(
            args.model_file, energy_unit=args.energy_unit, position_unit=args.position_unit, elements=args.elements
        )
    except (UnsupportedModelError, FileNotFoundError, ImportError, ValueError) as err:
        print(f"jaxatom import-schnetpack: {err}", file=sys.stderr)
        return 2
    potential.save(args.out_dir)
    representation = potential.model.representation
    print(
        f"wrote {args.out_dir}: {type(representation).__name__} ({representation.n_atom_basis} features, "
        f"{representation.n_interactions} interactions, cutoff {potential.cutoff:.4g} Å), energies in eV "
        f"(model unit {args.energy_unit}), positions in Å (model unit {args.position_unit})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxatom", description="JAX-native machine-learned interatomic potentials")
    commands = parser.add_subparsers(dest="command", required=True)
    spk = commands.add_parser(
        "import-schnetpack",
        help="convert a SchNetPack 2.x model file into a jaxatom model directory",
        description="Convert a SchNetPack 2.x model (SchNet or PaiNN) into a jaxatom model directory. Needs torch "
        "and schnetpack for the conversion only. The file is unpickled: import only files you trust.",
    )
    spk.add_argument("model_file", help="SchNetPack model file written by torch.save (e.g. best_model)")
    spk.add_argument("out_dir", help="directory (or .zip) to write the jaxatom model to")
    spk.add_argument("--energy-unit", default="eV", help="energy unit of the model's training data (default eV)")
    spk.add_argument("--position-unit", default="Ang", help="length unit the model expects (default Ang)")
    spk.add_argument(
        "--elements", nargs="+", help="element symbols the model may be used for (default: from its atomrefs, or all)"
    )
    spk.set_defaults(run=_import_schnetpack)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
