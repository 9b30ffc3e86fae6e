"""Training configuration: SchNetPack's MD17 recipe as defaults, validated before any compute; the loss as a set of
weighted terms, one per trained property."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxatom.errors import ConfigError

__all__ = ["TrainConfig", "StepConfig", "LossTerm", "LOSS_KINDS", "ConfigError", "DEFAULT_LOSS"]

#: Per-element losses a term may use: squared error, absolute error, Huber (quadratic below ``delta``).
LOSS_KINDS = ("mse", "mae", "huber")
#: SchNetPack's MD17 recipe.
DEFAULT_LOSS = {"energy": 0.01, "forces": 0.99}


@dataclasses.dataclass(frozen=True)
class LossTerm:
    """One trained property: ``weight × mean over its components of loss(prediction − label)`` (units: the
    property's, squared for ``mse``)."""

    name: str
    weight: float
    kind: str = "mse"
    delta: float = 1.0

    @classmethod
    def parse(cls, name: str, value: float | Mapping[str, Any]) -> LossTerm:
        """From a YAML entry: a weight (``forces: 0.99``) or ``{weight, kind, delta}`` (``dipole_moment: {weight:
        0.1, kind: huber, delta: 0.05}``)."""
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"weight", "kind", "delta"})
            if unknown:
                raise ConfigError(f"unknown settings {unknown} of loss term {name!r}; known: weight, kind, delta")
            return cls(name, **value)
        return cls(name, value)

    def problems(self) -> list[str]:
        problems = []
        if not isinstance(self.weight, int | float) or isinstance(self.weight, bool) or self.weight < 0:
            problems.append(f"the weight of loss term {self.name!r} must be a non-negative number, got {self.weight!r}")
        if self.kind not in LOSS_KINDS:
            problems.append(f"loss term {self.name!r} has kind {self.kind!r}; choose one of {', '.join(LOSS_KINDS)}")
        if not (isinstance(self.delta, int | float) and self.delta > 0):
            problems.append(f"the Huber delta of loss term {self.name!r} must be positive, got {self.delta!r}")
        return problems


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The settings a compiled training step depends on (a static, hashable argument of the jitted step)."""

    terms: tuple[LossTerm, ...]
    weight_decay: float
    warmup_steps: int
    clip_norm: float | None
    ema_decay: float | None


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Defaults follow SchNetPack's MD17 recipe (loss weights energy 0.01 / forces 0.99,
    AdamW 1e-3 without weight decay, reduce-on-plateau ×0.5 with patience 75 and cooldown 10, EMA 0.995).

    ``loss`` maps each trained property to its weight or ``{weight, kind, delta}`` (see :class:`LossTerm`); terms
    of weight 0 are reported as metrics but not trained on. ``energy_weight``/``forces_weight`` of older
    configurations are read as ``loss`` entries by :meth:`from_mapping`.
    """

    batch_size: int = 32
    max_epochs: int = 1000
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    clip_norm: float | None = None
    loss: Mapping[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_LOSS))
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
        problems += self._loss_problems()
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

    def _loss_problems(self) -> list[str]:
        if not isinstance(self.loss, Mapping) or not self.loss:
            return [f"loss must map trained properties to weights, e.g. {DEFAULT_LOSS}, got {self.loss!r}"]
        try:
            terms = self.terms
        except (ConfigError, TypeError) as err:
            return [str(err)]
        problems = [problem for term in terms for problem in term.problems()]
        if not problems and not any(term.weight > 0 for term in terms):
            problems.append("every loss weight is zero; give at least one trained property a positive weight")
        return problems

    @property
    def terms(self) -> tuple[LossTerm, ...]:
        """The loss terms, in the order of ``loss``."""
        return tuple(LossTerm.parse(name, value) for name, value in self.loss.items())

    @property
    def step(self) -> StepConfig:
        """The part of the configuration that the compiled step depends on."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(StepConfig) if f.name != "terms"}
        return StepConfig(terms=self.terms, **fields)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping (e.g. YAML), refusing unknown keys by name; ``energy_weight``/``forces_weight``
        (older configurations) become ``loss`` entries."""
        values = dict(values)
        legacy = {name: values.pop(f"{name}_weight") for name in ("energy", "forces") if f"{name}_weight" in values}
        if legacy:
            if "loss" in values:
                raise ConfigError("give either loss or energy_weight/forces_weight, not both")
            values["loss"] = {**DEFAULT_LOSS, **legacy}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training settings {unknown}; known: {sorted(known)}")
        return cls(**values)
