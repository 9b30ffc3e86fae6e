"""The ``jaxatom`` command line: ``quickstart``, ``train``, ``evaluate``, ``md``, ``spectrum``,
``vibrations`` and ``import-schnetpack``."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path


def _import_schnetpack(args: argparse.Namespace) -> int:
    from jaxatom.interop.schnetpack import UnsupportedModelError, import_model

    try:
        with warnings.catch_warnings(record=True) as caught:  # printed below, one line each
            try:
                units = _unit_options(args.unit)
                potential = import_model(
                    args.model_file, args.energy_unit, args.position_unit, elements=args.elements, units=units
                )
            finally:
                for warning in caught:
                    print(f"jaxatom import-schnetpack: warning: {warning.message}", file=sys.stderr)
    except (UnsupportedModelError, FileNotFoundError, ImportError, ValueError) as err:
        print(f"jaxatom import-schnetpack: {err}", file=sys.stderr)
        return 2
    potential.save(args.out_dir)
    representation, units = potential.model.representation, potential.metadata["source_units"]
    outputs = ", ".join(f"{spec.name} in {spec.unit} (model unit {units.get(spec.name, spec.unit)})"
                        for spec in potential.model.outputs if not spec.per_atom)  # fmt: skip
    print(
        f"wrote {args.out_dir}: {type(representation).__name__} ({representation.n_atom_basis} features, "
        f"{representation.n_interactions} interactions, cutoff {potential.cutoff:.4g} Å); {outputs}; positions in "
        f"Å (model unit {units['length']})"
    )
    return 0


def _unit_options(items: Sequence[str] | None) -> dict[str, str]:
    """``--unit NAME=UNIT`` options as a mapping; a malformed one is a :class:`ConfigError` naming the form."""
    from jaxatom.errors import ConfigError

    units = {}
    for item in items or ():
        name, _, unit = item.partition("=")
        if not name or not unit:
            raise ConfigError(f"--unit takes NAME=UNIT (e.g. dipole_moment=Debye), got {item!r}")
        units[name] = unit
    return units


#: Units with a second spelling in the printed summary (kcal/mol for energies and forces, as MD17 papers report).
_KCAL_MOL = {"eV": "kcal/mol", "eV/Ang": "kcal/mol/Å"}


def _print_calibration(run_dir: Path, report: dict) -> None:
    """The test-set check of an ensemble's calibration: scales fitted on the test set relative to the stored ones."""
    ratios = [f"{name} x{report[f'{name}_scale_ratio']:.3g}" for name in ("energy", "forces")
              if f"{name}_scale_ratio" in report]  # fmt: skip
    line = "  calibration:  test-optimal / stored scale: " + (", ".join(ratios) or "n/a")
    if "fraction_above_threshold" in report:
        threshold = report["stored"]["forces_threshold"]
        line += f"; {report['fraction_above_threshold']:.1%} of structures above {threshold:.3g} eV/Å"
    print(line)
    print(f"                {run_dir / 'evaluation' / 'calibration.png'}")


def _print_evaluation(run_dir: Path, metrics: dict, after_training: bool = True) -> None:
    from jaxatom.units import kcal_mol

    units = metrics.get("units", {})
    names = sorted({key[: -len("_mae")] for key in metrics if key.endswith("_mae")},
                   key=lambda name: (name not in ("energy", "forces"), name))  # fmt: skip
    print(f"test set ({metrics['structures']} structures):")
    width = max((len(name) for name in names), default=0)
    for name in names:
        unit = units.get(name, "")
        line = f"  {name:<{width}}  MAE {metrics[f'{name}_mae']:.4g} {unit}, RMSE {metrics[f'{name}_rmse']:.4g} {unit}"
        if unit in _KCAL_MOL and name in ("energy", "forces"):
            line += f"  ({metrics[f'{name}_mae'] / kcal_mol:.4g} {_KCAL_MOL[unit]} MAE)"
        if "stress_mae_GPa" in metrics and name == "stress":
            line += f"  ({metrics['stress_mae_GPa']:.4g} GPa MAE, {metrics['stress_rmse_GPa']:.4g} GPa RMSE)"
        print(line.replace("Ang", "Å"))
    if "calibration" in metrics:
        _print_calibration(run_dir, metrics["calibration"])
    if (run_dir / "best_model").exists():
        print(f"  model:        {run_dir / 'best_model'}  (jaxatom.load_model)")
    else:
        print(f"  ensemble:     {run_dir / 'best_ensemble'}  (jaxatom.PotentialEnsemble.load)")
    print(f"  metrics:      {run_dir / 'metrics.csv'}, {run_dir / 'evaluation' / 'metrics.json'}")
    print(f"  plots:        {run_dir / 'evaluation' / 'parity.png'}")
    print(f"  predictions:  {run_dir / 'evaluation' / 'predictions.npz'}")
    if after_training:
        print(f"  checkpoints:  {run_dir / 'checkpoints'}  (the same command continues a stopped run)")
        print(f'  tensorboard:  tensorboard --logdir {run_dir / "tensorboard"}  (pip install "jaxatom[tensorboard]")')


def _train(args: argparse.Namespace) -> int:
    from jaxatom.errors import JaxAtomError
    from jaxatom.train.run import evaluate_run, load_run_config, train_run

    try:
        from jaxatom.distributed import is_main_process, sync

        config = load_run_config(args.config, args.overrides)
        train_run(config, progress=not args.quiet)
        # in a multi-process run process 0 evaluates (and writes the evaluation); the others are done
        metrics = evaluate_run(config.run_dir) if config.data.test != 0 and is_main_process() else None
        sync("jaxatom.train.evaluated")
    except (JaxAtomError, FileNotFoundError, KeyError) as err:
        print(f"jaxatom train: {err}", file=sys.stderr)
        return 2
    if metrics is not None:
        _print_evaluation(Path(config.run_dir), metrics)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from jaxatom.errors import JaxAtomError
    from jaxatom.train.run import evaluate_run

    try:
        metrics = evaluate_run(args.run_dir, args.data, args.batch_size)
    except (JaxAtomError, FileNotFoundError, KeyError) as err:
        print(f"jaxatom evaluate: {err}", file=sys.stderr)
        return 2
    _print_evaluation(Path(args.run_dir), metrics, after_training=False)
    return 0


def _md_speed(run) -> str:
    timing = None if run is None else run.timing
    if timing is None or timing["steps_per_s"] != timing["steps_per_s"]:  # NaN: no step ran in this call
        return "done earlier (nothing to run)"
    rate, per_day, compile_s = timing["steps_per_s"], timing["ns_per_day"], timing["compile_s"]
    return f"{rate:.0f} steps/s ({per_day:.3g} ns/day; compile {compile_s:.1f} s)"


def _print_md(run, summary: dict, output: Path | None = None) -> None:
    """The MD report; ``run`` None for a run done earlier, whose trajectory is ``output``."""
    output = run.output if output is None else output
    drift = ", ".join(f"{d:.2e}" for d in summary["energy_drift_eV_per_atom_per_ps"])
    ensemble = "" if run is None else f"{run.settings['ensemble']}, "
    print(f"MD: {ensemble}{summary['time_ps']:.3g} ps, {_md_speed(run)}")
    print(f"  energy drift: {drift} eV/atom/ps (conserved quantity, per replica)")
    temperatures = ", ".join(f"{t:.0f}" for t in summary["mean_temperature_K"])
    print(f"  mean temperature: {temperatures} K")
    print(f"  trajectory:   {output}  (jaxatom.md.read_trajectory, export_trajectory)")
    print(f"  plots:        {output}.energies.png, {output}.temperature.png")
    if run is not None and run.settings.get("observables"):
        print(f"  observables:  {', '.join(run.settings['observables'])}  (spectra: jaxatom spectrum {run.output})")


def _md(args: argparse.Namespace) -> int:
    from jaxatom.inputs import check_md_files, read_md_settings

    check_md_files(read_md_settings(args.config, args.overrides))  # named before the MD code is imported
    from jaxatom.distributed import is_main_process
    from jaxatom.md.run import load_md_config, md_run, report

    config = load_md_config(args.config, args.overrides)
    run = md_run(config, progress=not args.quiet)
    if is_main_process():  # the one that wrote the trajectory reports it
        _print_md(run, report(run.output, title=f"{run.settings['ensemble']} MD with {config.model}"))
    return 0


def _learn(args: argparse.Namespace) -> int:
    from jaxatom.learn import learn, load_learn_config

    config = load_learn_config(args.config, args.overrides)
    report = learn(config, progress=not args.quiet)
    print(f"active learning: {config.generations} generations in {config.run_dir}\n  report: {report}\n"
          f"  plots:  {report.with_suffix('.png')}")  # fmt: skip
    print(report.read_text().rstrip())
    return 0


def _spectrum(args: argparse.Namespace) -> int:
    from jaxatom.spectra import describe, plot_spectra, spectra_from_trajectory, write_spectrum_csv

    chosen = args.ir or args.raman or args.power  # no flag: every spectrum the file allows
    window = None if args.window == "none" else args.window
    correction = None if args.quantum_correction == "none" else args.quantum_correction
    out = Path(args.out) if args.out else Path(args.trajectory).with_name(Path(args.trajectory).stem + "_spectra")
    with warnings.catch_warnings(record=True) as caught:  # printed one line each
        warnings.simplefilter("always")
        try:
            spectra = spectra_from_trajectory(
                args.trajectory,
                ir=args.ir if chosen else None,
                raman=args.raman if chosen else None,
                power=args.power if chosen else None,
                max_frequency_cm1=args.max_frequency,
                window=window,
                temperature_K=args.temperature,
                quantum_correction=correction,
                resolution_cm1=args.resolution,
                skip_fs=args.skip_fs,
            )
        finally:
            for warning in caught:
                print(f"jaxatom spectrum: warning: {warning.message}", file=sys.stderr)
    for kind, spectrum in spectra.items():
        csv = write_spectrum_csv(spectrum, out / f"{kind}.csv")
        png = plot_spectra([spectrum], out / f"{kind}.png", title=f"{kind} spectrum of {Path(args.trajectory).name}")
        print(f"{describe(spectrum)}\n  wrote {csv} and {png}")
    return 0


def _vibrations(args: argparse.Namespace) -> int:
    for label, path in (("structure file", args.structure), ("model", args.model)):
        if not Path(path).exists():  # named before the slow imports
            print(f"jaxatom vibrations: {label} {path} does not exist", file=sys.stderr)
            return 2
    import jax
    from ase.io import read

    import jaxatom
    from jaxatom.vibrations import NotStationaryWarning, harmonic_analysis

    if jax.config.jax_enable_x64 != (args.precision == "float64"):
        jaxatom.enable_x64(args.precision == "float64")
    try:
        atoms = read(args.structure)
    except Exception as err:  # ASE raises many kinds for an unreadable file
        print(f"jaxatom vibrations: cannot read structure file {args.structure}: {err}", file=sys.stderr)
        return 2
    potential = jaxatom.load_model(args.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NotStationaryWarning)
        try:
            result = harmonic_analysis(potential, atoms, optimize=not args.no_optimize, fmax=args.fmax,
                                       steps=args.steps)  # fmt: skip
        finally:
            for warning in caught:
                if issubclass(warning.category, NotStationaryWarning):
                    print(f"jaxatom vibrations: warning: {warning.message}", file=sys.stderr)
                else:
                    warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    (out / "summary.txt").write_text(summary + "\n")
    result.to_csv(out / "frequencies.csv")
    result.plot(out / "spectrum.png", width_cm1=args.width,
                title=f"{result.atoms.get_chemical_formula()}, harmonic, {args.model}")  # fmt: skip
    result.atoms.write(out / "structure.xyz")
    print(summary)
    print(f"wrote {out / 'frequencies.csv'}, {out / 'summary.txt'}, {out / 'spectrum.png'} and the analysed "
          f"structure {out / 'structure.xyz'}")  # fmt: skip
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from jaxatom.quickstart import run_quickstart

    run_quickstart(args.out, args.minutes, args.md_ps, not args.quiet, _print_evaluation, _print_md)
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
    spk.add_argument(
        "--energy-unit",
        help="energy unit of the model's training data, e.g. eV or kcal/mol (default: data.property_units of the "
        "run's config.yaml beside the model file or in its parent; required without one)",
    )
    spk.add_argument(
        "--position-unit",
        help="length unit the model expects, e.g. Ang or Bohr (default: data.distance_unit of that config.yaml, "
        "else Ang)",
    )
    spk.add_argument(
        "--unit",
        action="append",
        metavar="NAME=UNIT",
        help="unit of another output of the model, e.g. dipole_moment=Debye or polarizability=Bohr^3 (repeatable; "
        "default: data.property_units of that config.yaml)",
    )
    spk.add_argument(
        "--elements", nargs="+", help="element symbols the model may be used for (default: from its atomrefs, or all)"
    )
    spk.set_defaults(run=_import_schnetpack)

    quick = commands.add_parser(
        "quickstart", help="train PaiNN on the shipped aspirin data, evaluate, write model and plots"
    )
    quick.add_argument("--out", default="runs/quickstart", help="run directory (default runs/quickstart)")
    quick.add_argument("--minutes", type=float, default=8.0, help="training time budget (default 8)")
    quick.add_argument("--md-ps", type=float, default=10.0, help="ps of NVE MD after training (default 10; 0 skips)")
    quick.add_argument("--quiet", action="store_true", help="no progress bar")
    quick.set_defaults(run=_quickstart)

    md = commands.add_parser(
        "md",
        help="run molecular dynamics from a YAML configuration",
        description="Run MD (nve, langevin, nose_hoover, rpmd) with a jaxatom model on a structure file. The YAML "
        "holds model, structure, ensemble, timestep_fs, steps, temperature_K, output and any other argument of "
        "jaxatom.md.simulate; rerunning the same command continues from the checkpoint beside the output.",
    )
    md.add_argument("config", nargs="?", help="YAML configuration")
    md.add_argument("overrides", nargs="*", help="key=value settings, e.g. steps=20000 ensemble=langevin")
    md.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_distributed_options(md)
    md.set_defaults(run=_md)

    spectrum = commands.add_parser(
        "spectrum",
        help="IR, Raman and power spectra (absolute units) of an MD trajectory: CSV and PNG",
        description="IR absorption (km/mol per cm⁻¹) from dipole_moment, Raman activity (Å⁴/amu per cm⁻¹) from "
        "polarizability and the power spectrum (modes per cm⁻¹) from velocities of a jaxatom HDF5 trajectory, "
        "replicas averaged. Without --ir/--raman/--power, every spectrum the file allows. See docs/spectra.md.",
    )
    spectrum.add_argument("trajectory", help="HDF5 trajectory written by jaxatom md / simulate")
    spectrum.add_argument("--ir", action="store_true", help="IR from dipole_moment (error if missing)")
    spectrum.add_argument("--raman", action="store_true", help="Raman from polarizability (error if missing)")
    spectrum.add_argument("--power", action="store_true", help="power spectrum from velocities")
    spectrum.add_argument(
        "--max-frequency",
        type=float,
        default=4000.0,
        metavar="CM1",
        help="highest wavenumber in cm⁻¹ (default 4000; warns above the Nyquist limit)",
    )
    spectrum.add_argument(
        "--window",
        default="hann",
        choices=["hann", "hamming", "blackman", "none"],
        help="taper on the time series (default hann)",
    )
    spectrum.add_argument(
        "--quantum-correction",
        default="harmonic",
        choices=["harmonic", "standard", "schofield", "classical", "none"],
        help="quantum correction factor (default harmonic)",
    )
    spectrum.add_argument(
        "--temperature",
        type=float,
        metavar="K",
        help="temperature in K (default: the run's temperature_K; NVE: its mean temperature)",
    )
    spectrum.add_argument(
        "--resolution",
        type=float,
        metavar="CM1",
        help="resolution in cm⁻¹ by averaging segments of 1/(c·CM1) fs (default: the whole run)",
    )
    spectrum.add_argument("--skip-fs", type=float, default=0.0, help="drop the first fs of the run (equilibration)")
    spectrum.add_argument("--out", help="output directory (default: TRAJECTORY_spectra beside the file)")
    spectrum.set_defaults(run=_spectrum)

    train = commands.add_parser("train", help="train from a YAML configuration, then evaluate on the test split")
    train.add_argument("config", nargs="?", help="YAML with sections run_dir, data, model, training")
    train.add_argument("overrides", nargs="*", help="section.key=value settings, e.g. training.max_epochs=50")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_distributed_options(train)
    train.set_defaults(run=_train)

    learn = commands.add_parser(
        "learn",
        help="active learning: train an ensemble, explore with gated MD, select, label, add; per generation",
        description="Run (or continue after a stop) the active-learning loop of a YAML configuration; see "
        "docs/active-learning.md.",
    )
    learn.add_argument("config", nargs="?", help="YAML with sections run_dir, data, model, training, explore, "
                       "select, oracle, generations")  # fmt: skip
    learn.add_argument("overrides", nargs="*", help="section.key=value settings, e.g. generations=5")
    learn.add_argument("--quiet", action="store_true", help="no progress bars")
    learn.set_defaults(run=_learn)

    evaluate = commands.add_parser("evaluate", help="evaluate a run's best model on its test split or a data file")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--data", help="data file to evaluate on instead of the run's test split")
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.set_defaults(run=_evaluate)

    vib = commands.add_parser(
        "vibrations",
        help="harmonic frequencies, IR intensities and Raman activities of a structure",
        description="Optimise a structure to a minimum (ASE BFGS), then compute harmonic frequencies (cm^-1), IR "
        "intensities (km/mol, models with a dipole_moment output) and Raman activities (A^4/amu, models with a "
        "polarizability output) from the autodiff Hessian; writes frequencies.csv, summary.txt, spectrum.png and "
        "structure.xyz (the analysed structure) to --out.",
    )
    vib.add_argument("model", help="jaxatom model directory or zip")
    vib.add_argument("structure", help="structure file ase.io.read reads (the last frame is used)")
    vib.add_argument("--no-optimize", action="store_true", help="analyse the structure as given (no optimisation)")
    vib.add_argument("--fmax", type=float, default=1e-3, help="force threshold in eV/Å (default 1e-3)")
    vib.add_argument("--steps", type=int, default=1000, help="most optimisation steps (default 1000)")
    vib.add_argument("--width", type=float, default=10.0, help="line width (FWHM) of the plotted spectrum, cm^-1")
    vib.add_argument("--precision", choices=("float64", "float32"), default="float64",
                     help="JAX precision (default float64; float32 makes low frequencies noisy)")  # fmt: skip
    vib.add_argument("--out", default="vibrations", help="output directory (default ./vibrations)")
    vib.set_defaults(run=_vibrations)
    return parser


def _add_distributed_options(parser: argparse.ArgumentParser) -> None:
    """``--coordinator HOST:PORT --num-processes N --process-id I`` (or ``--distributed`` under SLURM/Open MPI):
    one process of a run over several processes or hosts (docs/distributed.md)."""
    group = parser.add_argument_group(
        "distributed (several processes or hosts; also JAXATOM_COORDINATOR, JAXATOM_NUM_PROCESSES, JAXATOM_PROCESS_ID)"
    )
    group.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0, reachable from every process")
    group.add_argument("--num-processes", type=int, metavar="N", help="number of processes in the run")
    group.add_argument("--process-id", type=int, metavar="I", help="this process's id, 0..N-1 (0 is the coordinator)")
    group.add_argument("--distributed", action="store_true",
                       help="join a distributed run whose settings JAX detects (srun under SLURM, mpirun)")  # fmt: skip


def _start_distributed(args: argparse.Namespace) -> None:
    """Start JAX's distributed runtime if the command line or the environment asks for it (before any JAX work)."""
    import os

    from jaxatom import distributed

    if not hasattr(args, "coordinator"):
        return
    coordinator = args.coordinator or os.environ.get(distributed.ENV_COORDINATOR)
    count = args.num_processes if args.num_processes is not None else os.environ.get(distributed.ENV_NUM_PROCESSES)
    index = args.process_id if args.process_id is not None else os.environ.get(distributed.ENV_PROCESS_ID)
    if coordinator is None and count is None and index is None and not args.distributed:
        return
    try:
        count, index = (None if v is None else int(v) for v in (count, index))
    except ValueError as err:
        from jaxatom.errors import ConfigError

        raise ConfigError(f"the number of processes and the process id must be integers: {err}") from None
    distributed.initialize(coordinator, count, index)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; ``key=value`` overrides may also follow options (``md run.yaml --quiet steps=10``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [item for item in extra if "=" in item and not item.startswith("-")]
    unknown = [item for item in extra if item not in overrides]
    if unknown or (overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)  # importing jaxatom tuned the CPU allocator (jaxatom.runtime)
    from jaxatom.errors import JaxAtomError

    try:
        _start_distributed(args)
        return args.run(args)
    except (JaxAtomError, FileNotFoundError, FileExistsError, PermissionError) as err:
        print(f"jaxatom {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
