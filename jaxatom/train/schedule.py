"""Reduce-on-plateau between epochs, with torch's ``ReduceLROnPlateau`` semantics (relative threshold 1e-4)."""

from __future__ import annotations

import dataclasses

__all__ = ["PlateauState", "plateau_update"]

THRESHOLD = 1e-4


@dataclasses.dataclass(frozen=True)
class PlateauState:
    """Current rate, best monitored value, epochs without improvement, cooldown epochs left."""

    learning_rate: float
    best: float = float("inf")
    bad_epochs: int = 0
    cooldown: int = 0


def plateau_update(
    state: PlateauState, value: float, factor: float, patience: int, cooldown: int, min_lr: float
) -> PlateauState:
    """The state after an epoch whose validation loss is ``value``: after more than ``patience`` epochs without a
    relative improvement of 1e-4 the rate is multiplied by ``factor`` (not below ``min_lr``), then ``cooldown``
    epochs pass before counting again."""
    improved = value < state.best * (1 - THRESHOLD) if state.best > 0 else value < state.best * (1 + THRESHOLD)
    best, bad = (value, 0) if improved else (state.best, state.bad_epochs + 1)
    wait = state.cooldown
    if wait > 0:
        wait, bad = wait - 1, 0
    learning_rate = state.learning_rate
    if bad > patience:
        learning_rate, wait, bad = max(learning_rate * factor, min_lr), cooldown, 0
    return PlateauState(learning_rate=learning_rate, best=best, bad_epochs=bad, cooldown=wait)
