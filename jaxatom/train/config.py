"""Training configuration: SchNetPack's MD17 recipe as defaults, validated before any compute."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxatom.errors import ConfigError

__all__ = ["TrainConfig", "StepConfig", "ConfigError"]


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The settings a compiled training step depends on (a static, hashable argument of the jitted step)."""

    energy_weight: float
    forces_weight: float
    weight_decay: float
    warmup_steps: int
    clip_norm: float | None
    ema_decay: float | None


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Defaults follow SchNetPack's MD17 recipe (loss weights energy 0.01 / forces 0.99,
    AdamW 1e-3 without weight decay, reduce-on-plateau ×0.5 with patience 75 and cooldown 10, EMA 0.995)."""

    batch_size: int = 32
    max_epochs: int = 1000
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    clip_norm: float | None = None
    energy_weight: float = 0.01
    forces_weight: float = 0.99
    plateau_factor: float = 0.5
    plateau_patience: int = 75
    plateau_cooldown: int = 10
    min_learning_rate: float = 1e-6
    ema_decay: float | None = 0.995
    early_stopping_patience: int | None = 200
    max_time_s: float | None = None
    seed: int = 0
    data_parallel: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.batch_size < 1:
            problems.append(f"batch_size must be positive, got {self.batch_size}")
        if self.max_epochs < 1:
            problems.append(f"max_epochs must be positive, got {self.max_epochs}")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be positive, got {self.learning_rate}")
        if self.energy_weight < 0 or self.forces_weight < 0 or self.energy_weight + self.forces_weight == 0:
            problems.append("energy_weight and forces_weight must be non-negative and not both zero")
        if not 0 < self.plateau_factor < 1:
            problems.append(f"plateau_factor must lie in (0, 1), got {self.plateau_factor}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            problems.append(f"ema_decay must lie in (0, 1) or be None, got {self.ema_decay}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            problems.append(f"clip_norm must be positive or None, got {self.clip_norm}")
        if self.warmup_steps < 0 or self.plateau_patience < 0 or self.plateau_cooldown < 0:
            problems.append("warmup_steps, plateau_patience and plateau_cooldown must not be negative")
        if problems:
            raise ConfigError("invalid training configuration: " + "; ".join(problems))

    @property
    def step(self) -> StepConfig:
        """The part of the configuration that the compiled step depends on."""
        return StepConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(StepConfig)})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping (e.g. YAML), refusing unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training settings {unknown}; known: {sorted(known)}")
        return cls(**values)
