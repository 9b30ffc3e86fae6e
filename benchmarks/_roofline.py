"""Rooflines for benchmark rows: the machine's measured limits, XLA's cost analysis of the compiled function a row
times, and the columns that put the two together.

* :func:`machine_limits` measures, once per CPU model and device, the float32 (and float64) matrix-multiply rate of a
  jitted ``jnp.dot`` on large square matrices (all cores) and the memory bandwidth of STREAM-like copy and triad
  kernels on arrays much larger than the caches (jitted, and numpy as a cross-check); it caches them in
  ``benchmarks/out/machine.json``.
* :func:`cost` reads ``compiled.cost_analysis()`` (a dict, or a list of dicts in some jax versions) as
  ``{"flops", "bytes"}``. :func:`loops_counted_once` checks on a toy ``lax.scan`` whether XLA counts a loop body once
  or times its trip count; :func:`per_step` normalises an MD chunk's cost to one step with the answer.
* :func:`capture_md_chunks` records the cost of every MD chunk ``jaxatom.md.simulate`` compiles (it wraps the
  driver's chunk factory for the duration of a ``with`` block; nothing in jaxatom changes).
* :func:`roofline` turns (flops, bytes, seconds) and the limits into the table columns of :data:`COLUMNS`.

XLA's "bytes accessed" sums the operands and results of every HLO operation: it counts traffic that stays in the
caches, so it is an upper bound on memory traffic and the arithmetic intensity derived from it a lower bound.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from _common import OUT_DIR, Column, cpu_model

MACHINE_FILE = OUT_DIR / "machine.json"
#: A file with the limits to use instead of the cache (the suite measures them once and hands them to every script).
LIMITS_ENV = "JAXATOM_BENCH_LIMITS"


# ---------------------------------------------------------------------------------------------------- machine limits


def device_key() -> str:
    """The cache key of the limits: the CPU model and JAX's default device."""
    import jax

    device = jax.devices()[0]
    return f"{cpu_model()} | {device.platform}:{getattr(device, 'device_kind', device.platform)} x{jax.device_count()}"


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    import jax

    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(size: int, dtype: str = "float32", repeats: int = 5) -> float:
    """GFLOP/s of a jitted ``jnp.dot`` of two ``size x size`` matrices (2 size³ flops); float64 under a local
    ``jax.enable_x64`` (the global setting is left alone)."""
    import jax
    import jax.numpy as jnp

    context = jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()
    with context:
        key_a, key_b = jax.random.split(jax.random.key(0))
        a = jax.random.normal(key_a, (size, size), dtype=dtype)
        b = jax.random.normal(key_b, (size, size), dtype=dtype)
        dot = jax.jit(jnp.dot)
        seconds = _median_time(lambda: dot(a, b), repeats)
    return 2.0 * size**3 / seconds / 1e9


def bandwidth_gbs(n: int, repeats: int = 5) -> dict[str, float]:
    """GB/s of STREAM-like kernels on float32 arrays of ``n`` elements: jitted copy (2 n × 4 bytes moved) and triad
    ``a = b + s c`` (3 n × 4 bytes), and numpy's copy and triad (the triad with ``out=``: 3 n × 4 nominal bytes)."""
    import jax
    import jax.numpy as jnp

    b = jnp.arange(n, dtype=jnp.float32)
    c = jnp.ones(n, dtype=jnp.float32)
    copy = jax.jit(lambda x: x + 0.0)  # a plain identity would be elided
    triad = jax.jit(lambda x, y: x + 3.0 * y)
    nbytes = 4 * n
    result = {
        "jax_copy": 2 * nbytes / _median_time(lambda: copy(b), repeats) / 1e9,
        "jax_triad": 3 * nbytes / _median_time(lambda: triad(b, c), repeats) / 1e9,
    }
    nb, nc, na = np.arange(n, dtype=np.float32), np.ones(n, dtype=np.float32), np.empty(n, dtype=np.float32)
    result["numpy_copy"] = 2 * nbytes / _median_time(lambda: np.copyto(na, nb), repeats) / 1e9

    def numpy_triad() -> None:
        np.multiply(nc, 3.0, out=na)
        np.add(na, nb, out=na)

    result["numpy_triad"] = 3 * nbytes / _median_time(numpy_triad, repeats) / 1e9
    return result


def measure_limits(quick: bool = False) -> dict[str, Any]:
    """Measure the limits now (seconds to a minute on a CPU; sized for a GPU there)."""
    import jax

    gpu = jax.default_backend() != "cpu"
    size = (8192 if gpu else 2048) // (2 if quick else 1)
    n = (1 << 28 if gpu else 1 << 25) >> (1 if quick else 0)  # 1 GiB / 128 MiB float32 arrays: far beyond caches
    limits: dict[str, Any] = {
        "matmul_size": size,
        "stream_elements": n,
        "matmul_f32_gflops": matmul_gflops(size, "float32"),
        "matmul_f64_gflops": matmul_gflops(size // 2, "float64"),
        "bandwidth": bandwidth_gbs(n),
        "quick": quick,
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    # The roofs: the float32 matmul rate, and the best bandwidth any of the kernels reached (a jitted kernel writes a
    # fresh output buffer each call, whose first-touch page faults numpy's in-place kernels do not pay).
    limits["peak_gflops"] = limits["matmul_f32_gflops"]
    limits["bandwidth_gbs"] = max(limits["bandwidth"].values())
    return limits


def machine_limits(path: Path = MACHINE_FILE, refresh: bool = False, quick: bool = False) -> dict[str, Any]:
    """The cached limits of this CPU model and device (measured and stored on first use or with ``refresh``; a
    quick measurement is not reused by a full run), or those in the file that ``$JAXATOM_BENCH_LIMITS`` names."""
    if os.environ.get(LIMITS_ENV):
        return json.loads(Path(os.environ[LIMITS_ENV]).read_text())
    key = device_key()
    cache = json.loads(path.read_text()) if path.is_file() else {}
    entry = cache.get(key)
    if entry is not None and not refresh and (quick or not entry.get("quick")):
        return entry
    entry = measure_limits(quick)
    cache[key] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cache, indent=2) + "\n")
    return entry


def limits_line(limits: Mapping[str, Any]) -> str:
    """One line describing the limits."""
    bw = limits["bandwidth"]
    return (
        f"matmul float32 {limits['matmul_f32_gflops']:.1f} GFLOP/s (n={limits['matmul_size']}), float64 "
        f"{limits['matmul_f64_gflops']:.1f} GFLOP/s; bandwidth (jit) copy {bw['jax_copy']:.1f} GB/s, triad "
        f"{bw['jax_triad']:.1f} GB/s; numpy copy {bw['numpy_copy']:.1f} GB/s, triad {bw['numpy_triad']:.1f} GB/s "
        f"({limits['stream_elements'] * 4 / 2**20:.0f} MiB arrays); measured {limits['measured']}"
        + (" (quick)" if limits.get("quick") else "")
    )


# ----------------------------------------------------------------------------------------------------- cost analysis


def cost(compiled: Any) -> dict[str, float]:
    """``{"flops", "bytes"}`` of a compiled (or lowered) computation from XLA's ``cost_analysis()``: a dict in jax
    0.10.1, a list of per-module dicts in some other versions (summed)."""
    analysis = compiled.cost_analysis()
    if analysis is None:
        return {"flops": float("nan"), "bytes": float("nan")}
    if isinstance(analysis, Mapping):
        analysis = [analysis]
    return {
        "flops": float(sum(a.get("flops", 0.0) for a in analysis)),
        "bytes": float(sum(a.get("bytes accessed", 0.0) for a in analysis)),
    }


def compiled_cost(fn: Callable, *args: Any, **kwargs: Any) -> dict[str, float]:
    """The cost of ``jax.jit(fn)(*args, **kwargs)`` (lowered and compiled, not run)."""
    import jax

    return cost(jax.jit(fn).lower(*args, **kwargs).compile())


@functools.cache
def loops_counted_once() -> bool:
    """Whether XLA's cost analysis counts a loop body once (not times its trip count): a ``lax.scan`` of 4 and of
    16 matrix products of known FLOPs are compared. True for jax 0.10.1 on CPU (both give one product's FLOPs)."""
    import jax.numpy as jnp
    from jax import lax

    a = jnp.ones((32, 32), jnp.float32)

    def scan(x, length):
        return lax.scan(lambda c, _: (a @ c, None), x, None, length=length)[0]

    short = compiled_cost(functools.partial(scan, length=4), a)["flops"]
    long = compiled_cost(functools.partial(scan, length=16), a)["flops"]
    one = 2.0 * 32**3
    if abs(short - long) <= 0.01 * one:
        return True
    if abs(long - 4 * short) <= 0.05 * long:
        return False
    raise RuntimeError(f"cost analysis of a toy scan is neither once nor per trip: {short} vs {long} ({one} each)")


def per_step(chunk_cost: Mapping[str, float], steps_in_chunk: int) -> dict[str, float]:
    """One MD step's cost from its chunk's (a ``lax.scan`` over frames around a ``fori_loop`` over the stride).
    When bodies are counted once the chunk's numbers already are one step (plus one frame's observation, a small
    overcount); otherwise they are divided by the steps in the chunk."""
    divisor = 1 if loops_counted_once() else steps_in_chunk
    return {key: value / divisor for key, value in chunk_cost.items()}


@contextlib.contextmanager
def capture_md_chunks() -> Iterator[list[dict[str, Any]]]:
    """Record the cost of every chunk ``jaxatom.md.simulate`` compiles inside the ``with`` block: yields a list that
    gets ``{"flops", "bytes", "stride", "n_frames", "steps", "per_step": {...}}`` per compiled chunk.

    It wraps ``jaxatom.md.driver._chunk_fn`` (the factory of the jitted chunk, whose ``lower(params, state)
    .compile()`` the driver calls) so the compiled object's cost is read where the driver compiles it: no second
    compilation, no change in jaxatom."""
    from jaxatom.md import driver

    records: list[dict[str, Any]] = []
    original = driver._chunk_fn

    class _Compiling:
        def __init__(self, lowered, meta):
            self._lowered, self._meta = lowered, meta

        def compile(self, *args, **kwargs):
            compiled = self._lowered.compile(*args, **kwargs)
            found = cost(compiled)
            steps = self._meta["stride"] * self._meta["n_frames"]
            records.append({**found, **self._meta, "steps": steps, "per_step": per_step(found, steps)})
            return compiled

        def __getattr__(self, name):
            return getattr(self._lowered, name)

    class _Lowering:
        def __init__(self, function, meta):
            self._function, self._meta = function, meta

        def lower(self, *args, **kwargs):
            return _Compiling(self._function.lower(*args, **kwargs), self._meta)

        def __call__(self, *args, **kwargs):
            return self._function(*args, **kwargs)

    @functools.wraps(original)
    def chunk_fn(*args, **kwargs):
        settings = inspect.signature(original).bind(*args, **kwargs).arguments  # whatever else the driver passes
        meta = {"stride": int(settings["stride"]), "n_frames": int(settings["n_frames"])}
        return _Lowering(original(*args, **kwargs), meta)

    driver._chunk_fn = chunk_fn
    try:
        yield records
    finally:
        driver._chunk_fn = original


def md_step_cost(records: list[dict[str, Any]]) -> dict[str, float] | None:
    """The per-step cost of the chunk that ran most steps (the steady-state one)."""
    if not records:
        return None
    return max(records, key=lambda r: r["steps"])["per_step"]


# ----------------------------------------------------------------------------------------------------------- columns


def run_and_report(run: Callable[[Any, dict | None], dict], args: Any, roofline: bool, json_path: Path | None) -> dict:
    """What a benchmark script's ``main`` does: the machine limits (when ``roofline``), ``run(args, limits)``, its
    header and table printed, and the result with the limits written as JSON to ``json_path`` (if given)."""
    from _common import write_json

    limits = machine_limits() if roofline else None
    result = run(args, limits)
    print(result["header"])
    print()
    print(result["markdown"])
    if json_path:
        write_json(json_path, {**result, "limits": limits})
        print(f"\nwrote {json_path}")
    return result


def roofline(flops: float | None, nbytes: float | None, seconds: float | None, limits: Mapping[str, Any]) -> dict:
    """Roofline numbers of one unit of work (``flops``, ``nbytes``) that took ``seconds``: achieved GFLOP/s and %
    of the matmul peak, GB/s and % of the bandwidth, arithmetic intensity (flop/byte), the attainable GFLOP/s
    ``min(peak, intensity × bandwidth)``, which roof bounds it, and % of attainable.

    ``bound`` is ``compute`` or ``memory`` by the intensity, or ``cache`` where the row moved XLA's byte count
    faster than the memory bandwidth allows: those bytes came (partly) from the caches, so the memory roof does not
    bind and the attainable rate is the peak."""
    if not flops or not seconds or flops != flops:
        return {}
    peak, bandwidth = limits["peak_gflops"], limits["bandwidth_gbs"]
    gflops = flops / seconds / 1e9
    out = {"gflops": gflops, "pct_peak": 100 * gflops / peak}
    if nbytes and nbytes == nbytes:
        intensity, gbs = flops / nbytes, nbytes / seconds / 1e9
        bound = "compute" if intensity * bandwidth >= peak else "memory" if gbs <= bandwidth else "cache"
        attainable = min(peak, intensity * bandwidth) if bound != "cache" else peak
        out.update(
            gbs=gbs,
            pct_bandwidth=100 * gbs / bandwidth,
            intensity=intensity,
            attainable_gflops=attainable,
            bound=bound,
            pct_attainable=100 * gflops / attainable,
        )
    return out


def with_roofline(row: dict[str, Any], seconds: float | None, limits: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with its roofline columns, from its ``flops`` and ``bytes`` (per unit of work) and ``seconds``."""
    return {**row, **roofline(row.get("flops"), row.get("bytes"), seconds, limits)}


#: The roofline columns every benchmark table carries.
COLUMNS = (
    Column("MFLOP/unit", lambda r: r.get("flops") and r["flops"] / 1e6, ".1f"),
    Column("GFLOP/s", "gflops", ".1f"),
    Column("% peak", "pct_peak", ".1f"),
    Column("GB/s", "gbs", ".1f"),
    Column("% BW", "pct_bandwidth", ".1f"),
    Column("flop/byte", "intensity", ".2f"),
    Column("bound", "bound", "", numeric=False),
    Column("% attainable", "pct_attainable", ".1f"),
)
