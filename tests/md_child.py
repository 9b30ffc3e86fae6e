"""Runs ``jaxatom md CONFIG --quiet`` in this process and SIGKILLs it at a chosen moment, or fills its disk: the hard
stops of tests/test_md_resilience.py. Usage: ``python md_child.py POINT NTH CONFIG`` (POINT ``none`` runs normally).
"""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path

import numpy as np


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _fill_disk(directory: Path) -> None:
    """Write a file next to the output until the file system is full."""
    with open(directory / "filler", "wb", buffering=0) as handle:
        for block in (2**20, 4096, 1):
            try:
                while True:
                    handle.write(b"\0" * block)
            except OSError:
                pass


def _install(point: str, nth: int) -> None:
    from jaxatom.md import checkpoint
    from jaxatom.md.trajectory import TrajectoryWriter

    calls = {"count": 0}

    def nth_call() -> bool:
        calls["count"] += 1
        return calls["count"] == nth

    save, append, savez = checkpoint.save_checkpoint, TrajectoryWriter.append, np.savez

    def save_checkpoint(path, state, n_frames, setup):
        if point == "first_checkpoint" and n_frames == 0:
            _die()  # the trajectory exists, its first checkpoint does not
        save(path, state, n_frames, setup)
        if n_frames > 0 and point == "between_chunks" and nth_call():
            _die()
        if n_frames > 0 and point == "fill_disk" and nth_call():
            _fill_disk(path.parent)

    def half_append(self, frames):
        if not nth_call():
            return append(self, frames)
        self.reserve(len(frames["time"]))
        n = self.n_frames
        for name in sorted(frames)[: len(frames) // 2]:  # some datasets grown and written, the others not
            self.file[name].resize(n + len(frames["time"]), axis=0)
            self.file[name][n:] = frames[name]
        self.file.flush()
        _die()

    def half_savez(handle, **arrays):
        if not nth_call():  # counts every checkpoint, the one at frame 0 too
            return savez(handle, **arrays)
        buffer = io.BytesIO()
        savez(buffer, **arrays)
        handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        handle.flush()
        os.fsync(handle.fileno())
        _die()

    checkpoint.save_checkpoint = save_checkpoint
    TrajectoryWriter.append = half_append if point == "append" else append
    if point == "checkpoint_write":
        checkpoint.np.savez = half_savez


if __name__ == "__main__":
    point, nth, config = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if point != "none":
        _install(point, nth)
    from jaxatom.cli import main

    sys.exit(main(["md", config, "--quiet"]))
