"""Process settings that make XLA on CPU faster: applied by ``import jaxatom`` unless
``JAXATOM_TUNE_CPU_ALLOCATOR=0`` (:func:`tune_cpu_allocator_on_import`)."""

from __future__ import annotations

import ctypes
import os
import platform
import warnings

__all__ = [
    "tune_cpu_allocator",
    "tune_cpu_allocator_on_import",
    "cpu_allocator_tuned",
    "CPU_ALLOCATOR_ENV",
    "OPT_OUT_ENV",
]

#: ``JAXATOM_TUNE_CPU_ALLOCATOR=0`` keeps glibc's default allocator settings when jaxatom is imported.
OPT_OUT_ENV = "JAXATOM_TUNE_CPU_ALLOCATOR"
_applied = False

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_TRIM_THRESHOLD = 2**31 - 1

#: The environment variables with the same effect as :func:`tune_cpu_allocator`, for launchers and shells.
CPU_ALLOCATOR_ENV = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(_TRIM_THRESHOLD),
}


def _jax_backend_started() -> bool:
    try:
        from jax._src import xla_bridge
    except ImportError:  # private module moved: cannot tell, assume not started
        return False
    return bool(xla_bridge.backends_are_initialized())


def tune_cpu_allocator() -> bool:
    """Let glibc reuse XLA's per-call scratch memory instead of mapping fresh pages on every call.

    XLA on CPU allocates one scratch buffer per executable call (about 230 MB for energy and forces of 32 aspirin
    molecules with PaiNN); allocated from an XLA worker thread, glibc serves it with a fresh ``mmap`` each time, and
    the page faults cost about half the run time. This keeps all threads on one heap, never ``mmap``s, and keeps freed
    memory (up to 2 GiB) for reuse — the resident size stays at its peak. Process-wide; it only helps when called
    before JAX starts its backend (before the first array is created). ``import jaxatom`` calls it
    (:func:`tune_cpu_allocator_on_import`); call it yourself only where JAX started before jaxatom was imported. The
    environment variables in :data:`CPU_ALLOCATOR_ENV` do the same from a shell.

    Returns True when applied; False on non-glibc systems, or (with a warning) when JAX has already started.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if _jax_backend_started():
        warnings.warn(
            "tune_cpu_allocator() was called after JAX started; call it before creating any JAX array "
            "(or set MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 in the environment)",
            stacklevel=2,
        )
        return False
    global _applied
    libc = ctypes.CDLL("libc.so.6")
    _applied = all(
        libc.mallopt(option, value)
        for option, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    )
    return _applied


def tune_cpu_allocator_on_import() -> bool:
    """What ``import jaxatom`` does, so that scripts, notebooks and the CLI are equally fast without knowing about
    it: :func:`tune_cpu_allocator`, unless the environment sets ``JAXATOM_TUNE_CPU_ALLOCATOR=0`` or JAX has already
    started (jax imported and used before jaxatom: then nothing, silently; call :func:`tune_cpu_allocator` before
    the first JAX array, or set :data:`CPU_ALLOCATOR_ENV`, to get it there). Returns whether it was applied."""
    if os.environ.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if _jax_backend_started():
        return False
    return tune_cpu_allocator()


def cpu_allocator_tuned() -> bool:
    """Whether this process runs with :func:`tune_cpu_allocator`'s settings (applied by jaxatom)."""
    return _applied
