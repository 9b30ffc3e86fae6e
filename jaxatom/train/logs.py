"""The per-epoch logs of a training run, ``metrics.csv`` and TensorBoard scalars, kept consistent with its checkpoint.

An epoch is logged only after its checkpoint is written, TensorBoard first (written through, not queued), then the
CSV row; so the logs never run ahead of ``checkpoints/latest``, and a complete CSV row implies complete scalars. When
a run resumes, :meth:`RunLogs.start` makes them end exactly at the checkpoint's epoch again (a kill may have come
between the checkpoint and the log), rebuilding that epoch's row from the checkpoint's metadata.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.summary import scalar

__all__ = ["RunLogs", "epoch_row"]


def epoch_row(meta: Mapping[str, Any], step: int) -> dict[str, Any]:
    """The log row of an epoch from its checkpoint metadata (``epoch``, ``plateau``, ``train`` and ``val`` metrics,
    ``elapsed_s``: fields every checkpoint version holds) and the optimiser ``step`` after it. Columns follow the
    loss terms: ``train_X_mae``, ``val_X_mae`` and ``val_X_rmse`` for each trained property ``X``, in its unit."""
    train, val = meta["train"], meta["val"]
    row = {"epoch": meta["epoch"], "step": step, "learning_rate": meta["plateau"]["learning_rate"],
           "train_loss": train["loss"], "val_loss": val["loss"]}  # fmt: skip
    for name in (key[: -len("_mae")] for key in val if key.endswith("_mae")):
        row.update({f"train_{name}_mae": train[f"{name}_mae"], f"val_{name}_mae": val[f"{name}_mae"],
                    f"val_{name}_rmse": val[f"{name}_rmse"]})  # fmt: skip
    return {**row, "time_s": meta["elapsed_s"]}


class RunLogs:
    """``run_dir/metrics.csv`` (one row per epoch) and TensorBoard event files in ``run_dir/tensorboard`` (the same
    scalars, indexed by epoch)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.csv_path = Path(run_dir) / "metrics.csv"
        self.tensorboard = Path(run_dir) / "tensorboard"
        self.events: EventsWriter | None = None

    def __enter__(self) -> RunLogs:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self, row: Mapping[str, Any] | None) -> None:
        """Prepare to log the epochs after ``row`` (the row of the checkpoint a run resumes from; None for a new run):
        keep the CSV rows of earlier epochs and rewrite ``row`` (atomically), and begin a TensorBoard event file that
        purges the events of that epoch and later (left by a killed run) and logs ``row`` again."""
        _write_atomically(self.csv_path, self._csv_text(row))
        first = 0 if row is None else int(row["epoch"])
        self.tensorboard.mkdir(parents=True, exist_ok=True)
        # the suffix orders two event files begun in the same second (file names hold the time in whole seconds)
        self.events = EventsWriter(str(self.tensorboard / "events"), filename_suffix=f".{first:07d}")
        # TensorBoard drops the events of this epoch and later read before a session start (tensorboardX's purge_step)
        start = SessionLog(status=SessionLog.START)
        self.events.write_event(Event(wall_time=time.time(), step=first, session_log=start))
        if row is not None:
            self._scalars(row)

    def repair(self, row: Mapping[str, Any]) -> None:
        """Make the logs of a finished run end at ``row`` (its last checkpoint) if a kill cut them short; consistent
        logs are left untouched."""
        if not self.csv_path.exists() or _read(self.csv_path) != self._csv_text(row):
            self.start(row)

    def log(self, row: Mapping[str, Any]) -> None:
        """Log an epoch whose checkpoint is written: its TensorBoard scalars, then its CSV row (after the header, for
        the first epoch)."""
        self._scalars(row)
        with self.csv_path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if handle.tell() == 0:
                writer.writeheader()
            writer.writerow(row)

    def close(self) -> None:
        if self.events is not None:
            self.events.close()

    def _scalars(self, row: Mapping[str, Any]) -> None:
        """Write the scalars of ``row`` at its epoch and flush them to the file (synchronously)."""
        for key, value in row.items():
            if key not in ("epoch", "step"):
                summary = scalar(key, value)
                self.events.write_event(Event(wall_time=time.time(), step=int(row["epoch"]), summary=summary))
        self.events.flush()

    def _csv_text(self, row: Mapping[str, Any] | None) -> str:
        """The CSV as it must be when ``row`` is the last epoch: the complete rows of earlier epochs, then ``row``
        (empty for a new run: :meth:`log` writes the header with the first row)."""
        if row is None:
            return ""
        kept = []
        if self.csv_path.exists():
            with self.csv_path.open(newline="") as handle:
                kept = [r for r in csv.DictReader(handle) if None not in r.values() and int(r["epoch"]) < row["epoch"]]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(row))
        writer.writeheader()
        writer.writerows([*kept, row])
        return text.getvalue()


def _read(path: Path) -> str:
    with path.open(newline="") as handle:
        return handle.read()


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", newline="") as handle:
        handle.write(text)
    os.replace(partial, path)
