"""Validate MD IR spectra against harmonic analysis and measure the TRPMD shift of the X–H stretches, on ethanol with
a PaiNN model (energy + dipole + polarizability heads) trained on the shipped GFN2-xTB data.

Usage::

    OMP_NUM_THREADS=1 python experiments/validate_spectra.py --model /tmp/vib_ethanol/best_model --run-dir runs/spectra
    OMP_NUM_THREADS=1 python experiments/validate_spectra.py --run-dir runs/spectra --minutes 12 --n-train 1000

Without ``--model`` the model is trained first by ``experiments/validate_vibrations.py``'s ``train_model`` (same data,
heads and loss) into ``RUN_DIR/model`` (resumable). Then:

1. the model relaxes ethanol and gives harmonic frequencies, IR intensities and Raman activities (float64);
2. classical MD at 300 K (float32): ``--replicas`` replicas, Langevin (γ = 0.01/fs) for ``--equil-ps``, then NVE for
   ``--classical-ps`` from the equilibrated positions and momenta; 0.5 fs steps, frames every 2 steps (1 fs);
3. TRPMD at 300 K: ``--beads`` beads, ``--trpmd-replicas`` replicas started from the equilibrated classical
   structures (fresh Maxwell–Boltzmann bead momenta; TRPMD leaves the centroid unthermostatted), the first
   ``--trpmd-equil-ps`` dropped, ``--trpmd-ps`` of production; dipoles are bead averages (centroid estimator);
4. IR spectra with the harmonic quantum correction at ``--resolution`` cm⁻¹ (Welch segments), a band table (harmonic
   modes above ``--threshold`` km/mol, ±``--half-width`` cm⁻¹ windows merged where they overlap: MD band maximum,
   intensity-weighted MD centre, shift of that centre from the intensity-weighted harmonic frequency, MD integral
   against the summed harmonic km/mol of every mode inside the window) and the C–H (2800–3150 cm⁻¹) and O–H
   (3400–3800 cm⁻¹) stretch centres, classical against TRPMD;
5. a figure ``RUN_DIR/ir_spectra.png`` (IR and Raman panels) and the report ``RUN_DIR/spectra_validation.md``.

Trajectories are HDF5 files in ``RUN_DIR`` with checkpoints, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np

STRETCHES = {"C–H stretch": (2800.0, 3150.0), "O–H stretch": (3400.0, 3800.0)}


def harmonic(model_path: Path, fmax: float):
    """The model's harmonic analysis of ethanol in float64 (x64 switched back off afterwards)."""
    from ase.build import molecule

    import jaxatom
    from jaxatom.vibrations import harmonic_analysis

    jaxatom.enable_x64(True)
    try:
        potential = jaxatom.load_model(model_path)
        return harmonic_analysis(potential, molecule("CH3CH2OH"), fmax=fmax)
    finally:
        jaxatom.enable_x64(False)


def run_md(model, atoms, args, run_dir: Path) -> dict:
    """Classical (Langevin → NVE) and TRPMD runs; their trajectory paths and timings."""
    from ase import Atoms

    from jaxatom.md import simulate

    observables = ["dipole_moment", "polarizability"]
    common = dict(timestep_fs=0.5, temperature_K=args.temperature, stride=2, frames_per_chunk=250,
                  observables=observables, progress=False)  # fmt: skip
    steps = lambda ps: int(round(ps * 1000 / 0.5 / 2)) * 2  # noqa: E731 - steps of 0.5 fs, a multiple of the stride
    timings = {}
    started = time.perf_counter()
    equil = simulate(model, atoms, steps(args.equil_ps), ensemble="langevin", friction_per_fs=0.01,
                     n_replicas=args.replicas, output=run_dir / "classical_equil.h5", seed=1, **common)  # fmt: skip
    timings["classical equilibration (Langevin)"] = (equil.timing, time.perf_counter() - started)
    positions, momenta = np.asarray(equil.state.positions), np.asarray(equil.state.momenta)
    starts = [Atoms(atoms.numbers, positions=p, momenta=m) for p, m in zip(positions, momenta, strict=True)]

    started = time.perf_counter()
    nve = simulate(model, starts, steps(args.classical_ps), ensemble="nve", velocities="atoms",
                   output=run_dir / "classical_nve.h5", seed=2, **common)  # fmt: skip
    timings["classical production (NVE)"] = (nve.timing, time.perf_counter() - started)

    started = time.perf_counter()
    trpmd = simulate(model, starts[: args.trpmd_replicas], steps(args.trpmd_equil_ps + args.trpmd_ps),
                     ensemble="rpmd", n_beads=args.beads, rpmd_thermostat="trpmd",
                     output=run_dir / "trpmd.h5", seed=3, **common)  # fmt: skip
    timings[f"TRPMD ({args.beads} beads, equilibration + production)"] = (trpmd.timing, time.perf_counter() - started)
    return {"classical": nve.output, "trpmd": trpmd.output, "timings": timings}


def internal_temperature(path: Path) -> float:
    """Mean temperature (K) of the internal (vibrational) kinetic energy of a molecule's trajectory: the centre-of-mass
    and rigid-rotation parts of each frame's kinetic energy removed, 3N − 6 degrees of freedom. An NVE run started
    from Langevin states keeps their drift and spin, which the stored ``temperature`` (3N − 3) counts."""
    from ase.data import atomic_masses

    from jaxatom.md import read_trajectory

    frames = read_trajectory(path)
    x, v = frames["positions"].astype(np.float64), frames["velocities"].astype(np.float64)  # [F, R, N, 3], Å/fs
    m = atomic_masses[np.asarray(frames["species"])][:, None]
    total = m.sum()
    v = v - np.sum(m * v, axis=-2, keepdims=True) / total
    r = x - np.sum(m * x, axis=-2, keepdims=True) / total
    angular = np.sum(m * np.cross(r, v), axis=-2)  # [F, R, 3]
    inertia = np.sum(
        m[..., None] * (np.sum(r * r, -1)[..., None, None] * np.eye(3) - r[..., :, None] * r[..., None, :]), -3
    )
    omega = np.linalg.solve(inertia, angular[..., None])[..., 0]
    kinetic = 0.5 * np.sum(m * v * v, axis=(-2, -1)) - 0.5 * np.sum(omega * angular, -1)  # amu·Å²/fs²
    return float(np.mean(kinetic) * 103.6427 * 2 / ((3 * len(m) - 6) * 8.617333e-5))


def spectra(paths: dict, args) -> dict:
    from jaxatom.spectra import SpectrumWarning, spectra_from_trajectory

    out, caught = {"temperatures": {}}, []
    for name, skip in (("classical", 0.0), ("trpmd", 1000.0 * args.trpmd_equil_ps)):
        # NVE: β of the band integrals from the internal kinetic energy; TRPMD: the physical (thermostat) temperature
        temperature = internal_temperature(paths[name]) if name == "classical" else args.temperature
        out["temperatures"][name] = temperature
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always", SpectrumWarning)
            out[name] = spectra_from_trajectory(paths[name], ir=True, raman=True, power=False,
                                                resolution_cm1=args.resolution, skip_fs=skip,
                                                temperature_K=temperature)  # fmt: skip
        caught += [f"{name}: {w.message}" for w in record]
    out["warnings"] = caught
    return out


def band_groups(frequencies: np.ndarray, intensities: np.ndarray, threshold: float, half_width: float) -> list:
    """Windows [low, high] around modes above ``threshold``, merged where they overlap; each with its modes."""
    strong = sorted(float(f) for f, i in zip(frequencies, intensities, strict=True) if i >= threshold and f > 0)
    windows: list[list[float]] = []
    for f in strong:
        if windows and f - half_width <= windows[-1][1]:
            windows[-1][1] = f + half_width
        else:
            windows.append([f - half_width, f + half_width])
    groups = []
    for low, high in windows:
        inside = (frequencies >= low) & (frequencies <= high)
        groups.append((low, high, frequencies[inside], intensities[inside]))
    return groups


def centre(spectrum, low: float, high: float) -> tuple[float, float, float]:
    """(band maximum, intensity-weighted centre, integral) of ``spectrum`` in [low, high] cm⁻¹."""
    nu, y = spectrum.frequency_cm1, spectrum.intensity
    inside = (nu >= low) & (nu <= high)
    if not np.any(inside):
        return float("nan"), float("nan"), float("nan")
    weights = np.clip(y[inside], 0.0, None)
    return (
        float(nu[inside][np.argmax(y[inside])]),
        float(np.sum(nu[inside] * weights) / np.sum(weights)),
        float(spectrum.integral(low, high)),
    )


def figure(result, ir: dict, raman: dict, path: Path, width: float) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 7), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    for ax, kind, md, unit in ((axes[0], "ir", ir, "km/mol/cm⁻¹"), (axes[1], "raman", raman, "Å⁴/amu/cm⁻¹")):
        broadened = result.spectrum(width_cm1=width, kind=kind, grid_cm1=md["classical"].frequency_cm1)
        ax.fill_between(
            broadened.wavenumbers_cm1,
            broadened.intensity,
            color="0.8",
            label=f"harmonic ({width:g} cm⁻¹ FWHM Lorentzian)",
        )
        ax.plot(
            md["classical"].frequency_cm1,
            md["classical"].intensity,
            lw=1,
            label="classical MD (NVE after 300 K Langevin)",
        )
        ax.plot(md["trpmd"].frequency_cm1, md["trpmd"].intensity, lw=1, label="TRPMD centroid (300 K)")
        ax.set_ylabel(f"{'IR absorption' if kind == 'ir' else 'Raman activity'} ({unit})")
        ax.legend(loc="upper left", fontsize=8)
    axes[1].set_xlabel("wavenumber (cm⁻¹)")
    axes[1].set_xlim(0, 4000)
    axes[0].set_title("ethanol, PaiNN trained on GFN2-xTB: harmonic vs MD (harmonic quantum correction)")
    fig.savefig(path, dpi=130)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a trained model (directory or zip) instead of training one")
    parser.add_argument("--run-dir", default="runs/spectra_ethanol", help="output directory (trajectories, report)")
    parser.add_argument("--minutes", type=float, default=12.0, help="training time budget without --model")
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--interactions", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("--replicas", type=int, default=8, help="classical replicas")
    parser.add_argument("--equil-ps", type=float, default=1.0, help="classical Langevin equilibration (ps)")
    parser.add_argument("--classical-ps", type=float, default=10.0, help="classical NVE production per replica (ps)")
    parser.add_argument("--beads", type=int, default=16)
    parser.add_argument("--trpmd-replicas", type=int, default=4)
    parser.add_argument("--trpmd-equil-ps", type=float, default=0.5, help="TRPMD frames dropped (ps)")
    parser.add_argument("--trpmd-ps", type=float, default=3.0, help="TRPMD production per replica (ps)")
    parser.add_argument("--resolution", type=float, default=12.0, help="spectral resolution (cm⁻¹, Welch segments)")
    parser.add_argument("--threshold", type=float, default=5.0, help="harmonic IR intensity of a tabulated band")
    parser.add_argument("--half-width", type=float, default=40.0, help="half width of the band windows (cm⁻¹)")
    parser.add_argument("--fmax", type=float, default=1e-4, help="relaxation force threshold (eV/Å)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    command = "OMP_NUM_THREADS=1 python " + shlex.join(sys.argv)
    started = time.perf_counter()

    if args.model:
        model_path = Path(args.model)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from validate_vibrations import train_model

        model_path = train_model(run_dir / "model", args.minutes, args.n_train, args.features, args.interactions)

    import jaxatom

    result = harmonic(model_path, args.fmax)
    harmonic_s = time.perf_counter() - started
    model = jaxatom.load_model(model_path)  # float32 for MD
    minimum = result.atoms.copy()
    minimum.calc = None
    md = run_md(model, minimum, args, run_dir)
    sp = spectra(md, args)
    ir = {k: sp[k]["ir"] for k in ("classical", "trpmd")}
    raman = {k: sp[k]["raman"] for k in ("classical", "trpmd")}

    nu, km = result.frequencies_cm1, result.ir_intensities_km_mol
    lines = [
        "| harmonic cm⁻¹ (km/mol) | window cm⁻¹ | MD max cm⁻¹ | MD centre cm⁻¹ | shift cm⁻¹ | MD ∫ km/mol | "
        "harmonic ∑ km/mol |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for low, high, freqs, ints in band_groups(nu, km, args.threshold, args.half_width):
        peak, mid, integral = centre(ir["classical"], low, high)
        harmonic_centre = float(np.sum(freqs * ints) / np.sum(ints))
        modes = ", ".join(f"{f:.0f} ({i:.1f})" for f, i in zip(freqs, ints, strict=True))
        lines.append(f"| {modes} | {low:.0f}–{high:.0f} | {peak:.0f} | {mid:.0f} | {mid - harmonic_centre:+.0f} | "
                     f"{integral:.1f} | {np.sum(ints):.1f} |")  # fmt: skip
    lines += [
        "",
        "| region | harmonic centre cm⁻¹ | classical centre cm⁻¹ | TRPMD centre cm⁻¹ | TRPMD − classical cm⁻¹ | "
        "classical max | TRPMD max | harmonic ∑ km/mol | classical ∫ | TRPMD ∫ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (low, high) in STRETCHES.items():
        inside = (nu >= low) & (nu <= high)
        h = float(np.sum(nu[inside] * km[inside]) / np.sum(km[inside]))
        cp, cc, ci = centre(ir["classical"], low, high)
        tp, tc, ti = centre(ir["trpmd"], low, high)
        lines.append(f"| {name} ({low:.0f}–{high:.0f}) | {h:.0f} | {cc:.0f} | {tc:.0f} | {tc - cc:+.0f} | {cp:.0f} | "
                     f"{tp:.0f} | {np.sum(km[inside]):.1f} | {ci:.1f} | {ti:.1f} |")  # fmt: skip

    from jaxatom.md import read_trajectory

    stored_nve_temperature = float(np.mean(read_trajectory(md["classical"])["temperature"]))
    figure(result, ir, raman, run_dir / "ir_spectra.png", args.resolution)
    c, t = ir["classical"], ir["trpmd"]
    notes = [
        "",
        f"command: `{command}`",
        f"model: {model_path}; relaxed in {result.optimization_steps} BFGS steps (float64), largest force "
        f"{result.max_force:.2g} eV/Å; {int(np.sum(nu > 0))} modes, total harmonic IR {np.sum(km):.1f} km/mol; "
        f"harmonic analysis {harmonic_s:.0f} s",
        f"classical: {args.replicas} replicas, Langevin γ 0.01/fs {args.equil_ps:g} ps, "
        f"then NVE {args.classical_ps:g} ps "
        f"(dt 0.5 fs, frames 1 fs); spectrum T {c.temperature_K:.1f} K (internal kinetic temperature, 3N − 6; "
        f"the stored 3N − 3 temperature would say {stored_nve_temperature:.1f} K), "
        f"resolution {c.resolution_cm1:.1f} cm⁻¹, {c.n_segments} Welch segments × {c.n_replicas} replicas",
        f"TRPMD: {args.beads} beads, {args.trpmd_replicas} replicas, {args.trpmd_equil_ps:g} ps dropped + "
        f"{args.trpmd_ps:g} ps; spectrum T {t.temperature_K:.1f} K, resolution {t.resolution_cm1:.1f} cm⁻¹, "
        f"{t.n_segments} segments × {t.n_replicas} replicas",
        f"band centre: intensity-weighted mean wavenumber of the MD IR spectrum in the window; shift = MD centre − "
        f"intensity-weighted harmonic frequency of the modes in the window; threshold {args.threshold:g} km/mol, "
        f"windows ±{args.half_width:g} cm⁻¹ merged where they overlap",
        f"whole-spectrum MD IR ∫(0–4000): classical {c.integral(0, 4000):.1f}, TRPMD {t.integral(0, 4000):.1f} km/mol",
    ]
    for name, (timing, wall) in md["timings"].items():
        notes.append(f"{name}: {timing['steps_per_s']:.1f} steps/s after {timing['compile_s']:.0f} s compile, "
                     f"wall {wall:.0f} s")  # fmt: skip
    notes += [f"warning: {w}" for w in sp["warnings"]]
    notes.append(f"total wall time {time.perf_counter() - started:.0f} s; figure {run_dir / 'ir_spectra.png'}")
    text = "\n".join(lines + notes)
    print(text)
    (run_dir / "spectra_validation.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
