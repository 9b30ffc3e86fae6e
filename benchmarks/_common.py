"""Scaffolding shared by every benchmark script: environment capture, timing, the SchNetPack launcher, result tables,
JSON output and the default inputs.

Importing this module starts nothing heavy (no JAX, no torch): ``jaxatom.tune_cpu_allocator()`` must run before JAX
starts, and SchNetPack workers import it from a Python that may have no JAX at all.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ase import Atoms

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
#: CPU flags that decide XLA's and torch's speed on CPU.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
#: Environment variables that change timings: printed with the command and recorded in the environment.
TIMING_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS", "XLA_PYTHON_CLIENT_MEM_FRACTION",
              "XLA_PYTHON_CLIENT_PREALLOCATE", "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES", "MALLOC_ARENA_MAX",
              "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")  # fmt: skip
VERSIONED = ("jax", "jaxlib", "jax-cuda12-plugin", "flax", "optax", "jax-md", "numpy", "ase", "torch", "schnetpack",
             "vesin")  # fmt: skip


# ------------------------------------------------------------------------------------------------------ environment


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or ``platform.processor()`` elsewhere)."""
    return _cpuinfo_field("model name") or platform.processor() or "unknown"


def cpu_flags() -> str:
    """The vector-instruction flags of this CPU that matter for XLA and torch, space-separated."""
    flags = (_cpuinfo_field("flags") or "").split()
    if not flags:
        return "unknown"
    return " ".join(flag for flag in CPU_FLAGS if flag in flags) or "none of avx2/avx512/amx"


def core_count() -> int:
    """CPU cores available to this process."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average, or ``None`` where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def busy_warning(load_before: float | None, load_after: float | None = None) -> str | None:
    """A line on the 1-minute load average around a run, with a warning when the machine was busy before it."""
    if load_before is None:
        return None
    line = f"1-min load average: {load_before:.2f} before the run"
    if load_after is not None:
        line += f", {load_after:.2f} after"
    if load_before > 0.5 * core_count():
        line += "\nWARNING: the machine was busy before the run started; timings may be inflated and noisy"
    return line


def versions() -> dict[str, str]:
    """Installed versions of the packages that run in benchmarks (those installed), and Python's."""
    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def devices() -> list[str]:
    """JAX's devices (starts JAX: call after ``tune_cpu_allocator``)."""
    import jax

    return [f"{d.platform}:{getattr(d, 'device_kind', d.platform)}" for d in jax.devices()]


def environment(with_jax: bool = True) -> dict[str, Any]:
    """Everything that decides a timing: CPU, flags, cores, devices, versions, timing variables, date."""
    env = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": core_count(),
        "versions": versions(),
        "env": {key: os.environ[key] for key in TIMING_ENV if key in os.environ},
        "load_1min": load_average(),
    }
    if with_jax:
        from jaxatom.runtime import cpu_allocator_tuned

        env["devices"] = devices()
        env["allocator_tuned"] = cpu_allocator_tuned()
    return env


def environment_line(env: Mapping[str, Any]) -> str:
    """One line describing ``environment()``."""
    v = env["versions"]
    packages = ", ".join(f"{k} {v[k]}" for k in ("jax", "jaxlib", "flax", "torch", "schnetpack") if k in v)
    variables = " ".join(f"{k}={shlex.quote(val)}" for k, val in env["env"].items()) or "no timing variables set"
    device = ", ".join(env.get("devices", [])) or "?"
    return (f"{env['date']}; CPU: {env['cpu']} ({env['cores']} cores; flags: {env['cpu_flags']}); devices: {device}; "
            f"{packages}, python {v['python']}; {variables}")  # fmt: skip


def command_line() -> str:
    """The command as run, with the environment variables that affect timings."""
    env = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in TIMING_ENV if k in os.environ)
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(Path.cwd()):
        script = script.relative_to(Path.cwd())
    program = f"-m {spec.name}" if spec is not None and spec.name else shlex.quote(str(script))
    return f"{env + ' ' if env else ''}python {program} {shlex.join(sys.argv[1:])}".rstrip()


# ----------------------------------------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """Wall-clock times (seconds) of one operation: its first call (compile), and the median/min of the repeats."""

    first_s: float
    median_s: float
    min_s: float
    repeats: int


def _ready(value: object) -> object:
    if "jax" in sys.modules:
        import jax

        return jax.block_until_ready(value)
    return value


def time_call(fn: Callable[[], object], repeats: int, warmup: int) -> Timing:
    """Time ``fn``: once cold (compile / first call), then ``warmup`` untimed calls, then ``repeats`` timed calls;
    every call waits for its JAX results (``jax.block_until_ready``) when JAX is loaded."""
    start = time.perf_counter()
    _ready(fn())
    first = time.perf_counter() - start
    for _ in range(warmup):
        _ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _ready(fn())
        times.append(time.perf_counter() - start)
    return Timing(first_s=first, median_s=statistics.median(times), min_s=min(times), repeats=repeats)


# ----------------------------------------------------------------------------------------------------------- inputs


def builtin_structure(name: str = "aspirin", index: int = 0) -> Atoms:
    """Frame ``index`` of a data set shipped in the package (``jaxatom.data.load_builtin``), as ``ase.Atoms``
    without cell or periodicity for the molecules."""
    from jaxatom.data import load_builtin

    atoms = load_builtin(name).to_atoms(index)
    if name in ("aspirin", "ethanol"):
        atoms.pbc = False
        atoms.cell = None
    atoms.calc = None
    return atoms


def read_structure(path: Path | None, name: str = "aspirin") -> Atoms:
    """``path`` read with ASE, or the shipped ``name`` structure when ``path`` is ``None``."""
    if path is None:
        return builtin_structure(name)
    from ase.io import read

    if not Path(path).is_file():
        raise SystemExit(f"structure file not found: {path} (leave out --structure for the shipped {name})")
    return read(path)


# ------------------------------------------------------------------------------------------------ SchNetPack launcher


def spk_python(requested: Path | str | None = None) -> tuple[str | None, str]:
    """The Python that runs SchNetPack and a note on why: ``requested`` when given, else ``sys.executable`` when
    ``import schnetpack`` works there (CI installs torch + schnetpack into the same Python with
    ``tools/install-schnetpack.sh``), else ``(None, reason)``: SchNetPack rows are then skipped."""
    if requested is not None:
        if not Path(requested).exists():
            return None, f"SchNetPack python not found: {requested}"
        return str(requested), f"SchNetPack from {requested}"
    try:
        import importlib.util

        found = importlib.util.find_spec("schnetpack") is not None and importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return sys.executable, "SchNetPack from this Python"
    return None, ("SchNetPack rows skipped: schnetpack/torch are not importable here (install them with "
                  "tools/install-schnetpack.sh, or pass --spk-python PATH)")  # fmt: skip


def run_spk_worker(script: Path | str, python: str, arguments: Sequence[str], threads: int,
                   timeout_s: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Run ``script`` in worker mode (``--worker schnetpack --worker-out FILE``) with ``python`` and ``threads`` torch
    threads, and return the JSON the worker wrote. Raises ``SystemExit`` with the command when the worker fails."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "schnetpack.json"
        command = [python, str(Path(script).resolve()), "--worker", "schnetpack", "--worker-out", str(out),
                   "--threads", str(threads), *arguments]  # fmt: skip
        result = subprocess.run(command, env=env, check=False, timeout=timeout_s)
        if result.returncode != 0:
            raise SystemExit(f"SchNetPack worker failed with exit code {result.returncode}: {shlex.join(command)}")
        return json.loads(out.read_text())


def torch_device(requested: str = "auto") -> str:
    """torch's device for SchNetPack: ``requested``, or with ``"auto"`` CUDA where torch sees a GPU, else the CPU."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def torch_sync(device: str) -> Callable[[Any], Any]:
    """A function that waits for torch's queued work on ``device`` (CUDA runs asynchronously) and returns its
    argument, for timing."""
    import torch

    def sync(value: Any) -> Any:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return value

    return sync


def schnetpack_side(skip: str | None, requested: Path | str | None, launch: Callable[[str], tuple[list, dict]],
                    checksum: float) -> tuple[list[dict], dict | None, str]:  # fmt: skip
    """SchNetPack's rows of a benchmark, from a worker that ``launch(python)`` runs: ``(rows, info, note)``, with no
    rows and a note saying why when ``skip`` (a reason) is given, no Python with schnetpack is found
    (:func:`spk_python`) or the worker fails (the jaxatom rows are still worth having). The worker must see the
    driver's inputs: its ``info["checksum"]`` (sum of positions) must match ``checksum``."""
    if skip is not None:
        return [], None, skip
    python, note = spk_python(requested)
    if python is None:
        return [], None, note
    try:
        rows, info = launch(python)
    except SystemExit as err:
        return [], None, f"SchNetPack rows missing: {err}"
    if abs(info["checksum"] - checksum) > 1e-5:
        raise SystemExit("the SchNetPack worker saw different input positions than the driver")
    return rows, info, note


def structure_file(atoms: Atoms, directory: Path | str) -> Path:
    """``atoms`` written as extended XYZ in ``directory``, for a worker that reads its input from a file."""
    from ase.io import write

    path = Path(directory) / "structure.xyz"
    write(path, atoms, format="extxyz")
    return path


# ----------------------------------------------------------------------------------------------------------- output


def fmt(value: Any, spec: str = ".2f") -> str:
    """A table cell: ``—`` for missing values, numbers with ``spec``."""
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


@dataclass(frozen=True)
class Column:
    """A table column: header, row key (or a function of the row), format spec, right-aligned when numeric."""

    title: str
    key: str | Callable[[Mapping[str, Any]], Any]
    spec: str = ".2f"
    numeric: bool = True

    def cell(self, row: Mapping[str, Any]) -> str:
        value = self.key(row) if callable(self.key) else row.get(self.key)
        return fmt(value, self.spec)


def markdown_table(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> str:
    """The one markdown-table writer of the benchmarks."""
    lines = [
        "| " + " | ".join(c.title for c in columns) + " |",
        "|" + "|".join("---:" if c.numeric else "---" for c in columns) + "|",
    ]
    lines += ["| " + " | ".join(c.cell(row) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def write_json(path: Path | str, payload: Mapping[str, Any]) -> Path:
    """``payload`` as indented JSON at ``path`` (parents created; numpy values converted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    return path
