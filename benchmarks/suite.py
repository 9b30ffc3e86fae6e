"""Run the benchmark suite and regenerate the tables of ``benchmarks/RESULTS.md``.

    python -m benchmarks.suite                      # every benchmark, full settings, on the CPU
    python -m benchmarks.suite --quick              # smoke run: tiny settings, nothing written to RESULTS.md
    python -m benchmarks.suite --only inference md  # some benchmarks
    python -m benchmarks.suite --device gpu         # the same suite on an NVIDIA GPU (its own RESULTS.md section)

Each benchmark is a script of this folder that writes ``{"header", "markdown", ...}`` as JSON (``--json``, or
``--out`` beside for ``bench_large``); the suite runs them one after the other, each in a fresh process (its own
compile caches and device memory, as when it runs alone), with the arguments of :data:`BENCHMARKS` and the machine
limits it measured once (``$JAXATOM_BENCH_LIMITS``). Every result lands as JSON in
``benchmarks/out/suite-<device>[-quick]/<name>.json``, the whole report in ``benchmarks/out/suite-<device>[-quick].md``.
A full run (not ``--quick``) also rewrites the generated parts of ``RESULTS.md``: the text between
``<!-- suite:<device>:<name> -->`` and ``<!-- /suite:<device>:<name> -->`` (``environment`` for the command, date,
environment and machine limits; one per benchmark). A benchmark that fails is reported as failed (the end of its error
output in the report) and the others still run; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
RESULTS = BENCH_DIR / "RESULTS.md"
PLACEHOLDER = "not yet run on a quiet machine"


@dataclass(frozen=True)
class Benchmark:
    """One suite entry: the script (module) and its arguments per mode (split at spaces)."""

    title: str
    module: str
    full: str
    quick: str
    gpu: str | None = None  # full arguments on a GPU (default: ``full``)

    def argv(self, quick: bool, device: str) -> list[str]:
        if quick:
            return self.quick.split()
        return (self.gpu if device == "gpu" and self.gpu is not None else self.full).split()


#: The suite, in running order (arguments as one string each). GPU sizes keep the GPU run within about ten minutes.
BENCHMARKS: dict[str, Benchmark] = {
    "inference": Benchmark(
        "Inference: energy + forces of aspirin (1 and 32 molecules), SchNet and PaiNN",
        "bench_inference",
        full="--repeats 20",
        quick="--repeats 3 --warmup 1 --batch-size 4",
    ),
    "training": Benchmark(
        "Training throughput: one optimiser step on 32 aspirin structures",
        "bench_training",
        full="--mode throughput --steps 30",
        gpu="--mode throughput --steps 15 --train 480",
        quick="--mode throughput --steps 2 --batch-size 4 --train 8 --val 4 --test 4 --models painn",
    ),
    "properties": Benchmark(
        "Training with a dipole head: one optimiser step on 32 aspirin structures, energy / + dipole / + vector dipole",
        "bench_properties",
        full="--mode throughput --steps 20 --rounds 2",
        quick="--mode throughput --steps 2 --rounds 1 --batch-size 4 --train 8 --val 4 --test 4 --cases energy dipole",
        gpu="--mode throughput --steps 5 --rounds 1 --train 160",
    ),
    "md": Benchmark(
        "Molecular dynamics of aspirin: 1 molecule, 64 replicas, RPMD with 8 beads",
        "bench_md",
        full="",
        quick="--steps 10 --warmup 1 --steps-batch 2 --warmup-batch 1 --models painn",
    ),
    "replicas": Benchmark(
        "Replica throughput: aspirin replicas until the memory limit or the cap",
        "bench_replicas",
        full="--cap 64 --steps 50",
        quick="--cap 2 --steps 10",
        gpu="--cap 16384 --factor 4 --steps 50",
    ),
    "large": Benchmark(
        "Large periodic copper: time per atom-step from 10² to 10⁵ atoms",
        "bench_large",
        full="--budget-s 60",
        quick="--sizes 32 --npt-sizes --steps 3 --warmup 1 --codes jaxatom,schnetpack",
        gpu="--sizes 1000 10000 100000 --npt-sizes --codes jaxatom,schnetpack --budget-s 45 --steps 100 "
        "--atom-steps 1e6",
    ),
}


# ---------------------------------------------------------------------------------------------------------- markers


def marker(device: str, name: str) -> tuple[str, str]:
    """The opening and closing markers of one generated section."""
    return f"<!-- suite:{device}:{name} -->", f"<!-- /suite:{device}:{name} -->"


def replace_section(text: str, device: str, name: str, content: str) -> str:
    """``text`` with the part between the markers of ``device``/``name`` replaced by ``content``. Raises
    ``KeyError`` when the markers are missing (RESULTS.md's "Current suite" section names every one)."""
    start, end = marker(device, name)
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise KeyError(f"no {start} … {end} section in RESULTS.md")
    return pattern.sub(lambda _: f"{start}\n{content.strip()}\n{end}", text, count=1)


def rewrite_results(path: Path, device: str, sections: Mapping[str, str]) -> None:
    """Rewrite the generated sections of ``path`` (``RESULTS.md``); everything outside the markers stays."""
    text = path.read_text()
    for name, content in sections.items():
        text = replace_section(text, device, name, content)
    path.write_text(text)


# ------------------------------------------------------------------------------------------------------------- run


def section(bench: Benchmark, result: Mapping[str, Any] | None, error: str | None, seconds: float) -> str:
    """The markdown of one benchmark: its header lines (as text), its table, or why it was skipped, or the failure."""
    lines = [f"**{bench.title}** (`{bench.module}.py`, {seconds:.0f} s)", ""]
    if error is not None and error.startswith("skipped:"):
        return "\n".join([*lines, error])
    if error is not None:
        return "\n".join([*lines, "FAILED:", "", "```text", error.strip()[-3000:], "```"])
    return "\n".join([*lines, "```text", result["header"].strip(), "```", "", result["markdown"].strip()])


def run_one(name: str, bench: Benchmark, args: argparse.Namespace, out: Path) -> tuple[str, bool]:
    """Run one benchmark script in a fresh process (its own compile caches and device memory, as when it runs
    alone), its output passed through; it writes its JSON to ``out/<name>.json``. Returns the markdown section and
    whether it succeeded (or was skipped)."""
    import json
    import subprocess
    from collections import deque

    argv = bench.argv(args.quick, args.device)
    result_file = out / f"{name}.json"
    result_file.unlink(missing_ok=True)
    output = ["--out", str(result_file.with_suffix(".md"))] if bench.module == "bench_large" else \
        ["--json", str(result_file)]  # fmt: skip
    command = [sys.executable, str(BENCH_DIR / f"{bench.module}.py"), *argv, *output]
    print(f"\n=== {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    tail: deque[str] = deque(maxlen=40)
    # the script's own printout goes to stderr with its progress: stdout is the suite's report
    with subprocess.Popen(command, stdout=sys.stderr, stderr=subprocess.PIPE, text=True) as process:
        for line in process.stderr:
            sys.stderr.write(line)
            tail.append(line)
    seconds = time.perf_counter() - start
    error = None
    if process.returncode != 0 or not result_file.is_file():
        last = tail[-1].strip() if tail else ""
        error = last if last.startswith("skipped:") else f"exit code {process.returncode}\n" + "".join(tail)
    result = json.loads(result_file.read_text()) if error is None else None
    return section(bench, result, error, seconds), error is None or error.startswith("skipped:")


def environment_section(args: argparse.Namespace, env: Mapping[str, Any], limits: Mapping[str, Any]) -> str:
    """Command, date, environment line (CPU flags, devices, versions, timing variables) and machine limits."""
    from _common import busy_warning, command_line, environment_line
    from _roofline import limits_line

    load = busy_warning(env.get("load_1min"))
    return "\n".join([
        f"Command: `{command_line()}`",
        "",
        f"Environment: {environment_line(env)}",
        "",
        f"Machine limits (`benchmarks/out/machine.json`): {limits_line(limits)}",
        *(["", load.replace("\n", "  \n")] if load else []),
    ])  # fmt: skip


def rerun_note(path: Path, device: str, names: Sequence[str], env: Mapping[str, Any]) -> str:
    """The environment section of ``path`` as it is, plus a line saying which benchmarks ``--only`` reran, when and
    with which command (a section still without a full run gets this run's environment instead)."""
    from _common import command_line, environment_line

    start, end = marker(device, "environment")
    text = path.read_text()
    current = text.split(start, 1)[1].split(end, 1)[0].strip() if start in text else PLACEHOLDER
    if current == PLACEHOLDER:
        current = f"Environment: {environment_line(env)}"
    return f"{current}\n\nRerun of {', '.join(names)}: `{command_line()}` ({env.get('date', 'now')})"


def set_device(device: str) -> None:
    """Make JAX use ``device`` (before it starts): ``JAX_PLATFORMS=cpu`` or ``cuda``."""
    os.environ["JAX_PLATFORMS"] = "cuda" if device == "gpu" else "cpu"


def check_device(device: str) -> str:
    """JAX's default device, checked against ``device``."""
    import jax

    try:
        found = jax.devices()[0]
    except (RuntimeError, AssertionError) as err:  # JAX_PLATFORMS=cuda without a CUDA backend
        raise SystemExit(f"--device {device}: JAX has no such device here ({type(err).__name__}: {err}); install "
                         "jax[cuda12] on a machine with an NVIDIA GPU (benchmarks/gpu.sh does)") from None  # fmt: skip
    if (device == "gpu") != (found.platform == "gpu"):
        raise SystemExit(f"--device {device}: JAX's device is {found} (install jax[cuda12] for a GPU)")
    return str(found)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny settings; RESULTS.md left as it is")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME",
                        help=f"run only these ({', '.join(BENCHMARKS)})")  # fmt: skip
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where JAX runs (default cpu)")
    parser.add_argument(
        "--cached-limits", action="store_true", help="reuse the cached machine limits (a full run measures them anew)"
    )
    parser.add_argument("--write-results", action="store_true", help="rewrite RESULTS.md even with --quick")
    parser.add_argument("--no-results", action="store_true", help="leave RESULTS.md alone even in a full run")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results file to rewrite")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "out", help="folder of the JSON and the report")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; returns the exit code (1 when a benchmark failed)."""
    args = parse_args(argv)
    set_device(args.device)
    from _common import environment, write_json
    from _roofline import LIMITS_ENV, loops_counted_once, machine_limits

    import jaxatom  # noqa: F401  (tunes the CPU allocator before JAX starts)

    device = check_device(args.device)
    tag = f"suite-{args.device}" + ("-quick" if args.quick else "")
    out = args.out / tag
    print(f"suite on {device}; results in {out}", file=sys.stderr, flush=True)
    limits = machine_limits(refresh=not (args.quick or args.cached_limits), quick=args.quick)
    env = environment()
    env["cost_analysis_loops"] = "body counted once" if loops_counted_once() else "body times trip count"
    write_json(out / "environment.json", {"environment": env, "limits": limits, "argv": sys.argv})
    os.environ[LIMITS_ENV] = str(write_json(out / "limits.json", limits))  # every script uses these limits
    rewrite = (not args.quick or args.write_results) and not args.no_results
    sections = {"environment": environment_section(args, env, limits)}
    if args.only and rewrite:  # the other tables keep the environment of the run that made them
        sections["environment"] = rerun_note(args.results, args.device, args.only, env)
    ok = True
    for name in args.only or list(BENCHMARKS):
        sections[name], passed = run_one(name, BENCHMARKS[name], args, out)
        ok &= passed
        report = "\n\n".join(f"{marker(args.device, key)[0]}\n{text}\n{marker(args.device, key)[1]}"
                             for key, text in sections.items())  # fmt: skip
        (args.out / f"{tag}.md").write_text(report + "\n")  # after every benchmark: a run cut short keeps its part
        if rewrite:
            rewrite_results(args.results, args.device, {"environment": sections["environment"], name: sections[name]})
    print(report)
    if rewrite:
        print(f"\nrewrote the suite:{args.device} sections of {args.results}", file=sys.stderr)
    print(f"\nwrote {args.out / f'{tag}.md'} and {out}/*.json", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
