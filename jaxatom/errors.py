"""The errors jaxatom raises for bad input and failed runs. Every one derives from :class:`JaxAtomError`, so a script
can catch them all at once and the CLI prints each as a single line naming the problem and the fix.

Each class also derives from the built-in exception it refines (``ValueError``, ``OSError``, ``RuntimeError``), so
code written against the built-in types keeps working.
"""

from __future__ import annotations

__all__ = [
    "JaxAtomError",
    "ConfigError",
    "StructureError",
    "DataError",
    "DiskFullError",
    "OutputExistsError",
    "RunInUseError",
    "OutOfMemoryError",
]


class JaxAtomError(Exception):
    """Base of every error jaxatom raises on purpose: bad input, or a run that cannot go on."""


class ConfigError(JaxAtomError, ValueError):
    """A configuration (training, model, MD run) that cannot work; raised before anything is computed."""


class StructureError(JaxAtomError, ValueError):
    """A structure that cannot be evaluated: wrong shapes, NaN positions, unknown or invalid elements, overlapping
    atoms, a periodic structure without a cell."""


class DataError(JaxAtomError, ValueError):
    """A data file or data set that cannot be used: empty, unreadable, missing a property, non-finite values."""


class DiskFullError(JaxAtomError, OSError):
    """There is not enough free space to write a result; what was written before is kept."""


class OutputExistsError(JaxAtomError, FileExistsError):
    """An output file exists that the run cannot continue from; choose another output or overwrite it."""


class RunInUseError(JaxAtomError, RuntimeError):
    """Another live process is writing the same run (MD output or training directory)."""


class OutOfMemoryError(JaxAtomError, MemoryError):
    """A compiled computation needs more memory than the device has free; raised before it runs."""
