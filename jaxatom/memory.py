"""Memory a compiled computation needs against what its device has free, checked before it runs so that a run
that cannot fit stops with the size it would need instead of crashing out of memory."""

from __future__ import annotations

import jax
import psutil

from jaxatom.errors import OutOfMemoryError
from jaxatom.files import format_bytes

__all__ = ["required_bytes", "available_bytes", "check_fits"]

#: Share of the free memory a computation may plan to use (XLA, the host process and fragmentation need the rest).
USABLE_FRACTION = 0.9


def required_bytes(compiled: jax.stages.Compiled) -> int:
    """Bytes a compiled call allocates beyond its arguments (outputs and XLA's scratch), from XLA's own analysis."""
    stats = compiled.memory_analysis()
    if stats is None:
        return 0
    return int(stats.output_size_in_bytes + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def available_bytes(device: jax.Device | None = None) -> int:
    """Free bytes on ``device`` (default: JAX's first): the accelerator's unallocated memory, else the host's
    available memory."""
    device = device or jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return int(psutil.virtual_memory().available)


def check_fits(compiled: jax.stages.Compiled, what: str, advice: str) -> None:
    """Raise :class:`~jaxatom.errors.OutOfMemoryError` naming ``what``, the bytes it needs and ``advice`` when the
    compiled call would not fit in the free memory of the default device."""
    needed, free = required_bytes(compiled), available_bytes()
    if needed > USABLE_FRACTION * free:
        raise OutOfMemoryError(
            f"{what} needs {format_bytes(needed)} of memory on {jax.devices()[0].platform.upper()}, but only "
            f"{format_bytes(free)} are free; {advice}"
        )
