"""The training progress bar: an honest total under a time budget, and a line saying why training stopped."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tqdm import tqdm  # text bars: tqdm.auto needs ipywidgets in notebooks

from jaxatom.train.config import TrainConfig

__all__ = ["epoch_bar", "expected_epochs", "update_total", "stopped_line"]


def epoch_bar(start: int, config: TrainConfig, desc: str, progress: bool) -> tqdm:
    """A bar over epochs ``start .. max_epochs`` (its total shrinks to what the time budget allows as epochs pass)."""
    return tqdm(range(start, config.max_epochs), initial=start, total=config.max_epochs, desc=desc, unit="epoch",
                disable=not progress)  # fmt: skip


def expected_epochs(config: TrainConfig, epochs_done: int, elapsed_s: float, epoch_s: float) -> int:
    """The epoch count a run ends at if nothing else stops it: ``max_epochs``, or fewer where ``max_time_s`` ends it
    first at ``epoch_s`` seconds per epoch (``epochs_done`` epochs took ``elapsed_s`` so far). Early stopping
    cannot be foreseen and is not counted."""
    if config.max_time_s is None or epoch_s <= 0:
        return config.max_epochs
    left = max(config.max_time_s - elapsed_s, 0.0)
    return min(config.max_epochs, epochs_done + math.ceil(left / epoch_s))


def update_total(bar: tqdm, config: TrainConfig, meta: Mapping[str, Any], epoch_s: float) -> None:
    """Shrink ``bar``'s total (and so its ETA) to :func:`expected_epochs` after the epoch of ``meta``, which took
    ``epoch_s`` seconds."""
    total = expected_epochs(config, meta["epoch"] + 1, meta["elapsed_s"], epoch_s)
    if total != bar.total:
        bar.total = total
        bar.refresh()


def stopped_line(reason: str, description: str) -> str:
    """The line printed when training ends: which limit ended it (``reason`` a :func:`stop_reason`)."""
    what = {"max_epochs": "reached max_epochs", "early_stopping": "early stopping",
            "max_time_s": "time budget used"}[reason]  # fmt: skip
    return f"jaxatom: training stopped, {what}: {description}"
