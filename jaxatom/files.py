"""Safe writing of run outputs: an exclusive lock per output so two live processes never write the same run, and
free-space checks that stop a run with a clear message before a write could fail on a full disk.

The lock is an advisory ``flock`` on a small ``<path>.lock`` file (``<output>.lock`` beside an MD trajectory,
``train.lock`` in a training run directory). The operating system releases it when the process ends in any way
(``kill -9``, a segmentation fault), so a crashed run never blocks its own restart.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jaxatom.errors import DiskFullError, RunInUseError

__all__ = ["write_atomically", "exclusive_lock", "free_bytes", "require_free_space", "is_disk_full", "format_bytes"]


_held: set[Path] = set()  # lock files this process holds


@contextmanager
def exclusive_lock(path: str | os.PathLike, what: str, alternative: str = "choose another output") -> Iterator[Path]:
    """Hold an exclusive lock on ``<path>.lock`` for the ``with`` block; raise :class:`RunInUseError` naming ``what``
    and the holder's process id while another live process holds it. Nested use within one process is allowed.

    The lock file stays when the block ends: deleting it would let a process that opened the old file and a process
    that creates a new one both believe they hold the lock.
    """
    lock_path = Path(path).absolute().with_name(Path(path).name + ".lock")
    if lock_path in _held:
        yield lock_path
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RunInUseError(
                f"{what} is in use by another running process (pid {holder}, lock {lock_path}); wait for it to "
                f"finish or stop it, or {alternative}"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        _held.add(lock_path)
        try:
            yield lock_path
        finally:
            _held.discard(lock_path)


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes available to this user on the file system holding ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def format_bytes(count: float) -> str:
    """``count`` bytes in a human unit (B, kB, MB, GB; powers of 1000)."""
    for unit in ("B", "kB", "MB"):
        if abs(count) < 1000:
            return f"{count:.3g} {unit}"
        count /= 1000
    return f"{count:.3g} GB"


def require_free_space(path: str | os.PathLike, needed: int, what: str) -> None:
    """Raise :class:`DiskFullError` if fewer than ``needed`` bytes are free where ``path`` lives; the message names
    ``what`` needs the space, how much and where (callers add what is kept and how to continue)."""
    available = free_bytes(path)
    if needed > available:
        raise DiskFullError(
            f"not enough disk space for {what}: it needs about {format_bytes(needed)}, only "
            f"{format_bytes(available)} are free on {Path(path).absolute().parent}"
        )


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (an ``OSError``, or an h5py error whose message carries the errno) means a full disk or a
    file-size limit."""
    codes = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    if isinstance(error, OSError) and error.errno in codes:
        return True
    text = str(error)
    return any(f"errno = {code}," in text for code in codes) or "No space left on device" in text


def write_atomically(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (text or bytes) to ``path`` through a temporary file in the same directory, flushed and renamed
    into place, so ``path`` holds either the old or the new contents whenever the process dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb" if isinstance(data, bytes) else "w") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
