"""Training configuration: SchNetPack's MD17 recipe as defaults, validated before any compute (a pydantic schema,
see :mod:`jaxatom.config`); the loss as a set of weighted terms, one per trained property."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Any

import pydantic
from pydantic import ConfigDict, ValidationError, field_validator

from jaxatom.config import config_error
from jaxatom.errors import ConfigError

__all__ = [
    "TrainConfig",
    "EnsembleConfig",
    "StepConfig",
    "LossTerm",
    "LOSS_KINDS",
    "ConfigError",
    "DEFAULT_LOSS",
    "LEGACY_WEIGHTS",
]

#: Per-element losses a term may use: squared error, absolute error, Huber (quadratic below ``delta``).
LOSS_KINDS = ("mse", "mae", "huber")
#: SchNetPack's MD17 recipe.
DEFAULT_LOSS = {"energy": 0.01, "forces": 0.99}
#: Settings of older configurations read as ``loss`` entries: ``energy_weight`` -> ``loss.energy``, ...
LEGACY_WEIGHTS = {"energy_weight": "energy", "forces_weight": "forces"}
_TERM_SETTINGS = ("weight", "kind", "delta")


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
            unknown = sorted(set(value) - set(_TERM_SETTINGS))
            if unknown:
                raise ConfigError(
                    f"unknown settings {unknown} of loss term {name!r}; known: {', '.join(_TERM_SETTINGS)}"
                )
            if "weight" not in value:
                raise ConfigError(f"loss term {name!r} needs a weight, e.g. {{weight: 1.0, kind: {LOSS_KINDS[0]}}}")
            return cls(name, **value)
        return cls(name, value)

    def problems(self) -> list[str]:
        problems = []
        if not _is_real(self.weight) or self.weight < 0:
            problems.append(f"the weight of loss term {self.name!r} must be a non-negative number, got {self.weight!r}")
        if self.kind not in LOSS_KINDS:
            problems.append(f"loss term {self.name!r} has kind {self.kind!r}; choose one of {', '.join(LOSS_KINDS)}")
        if not (_is_real(self.delta) and self.delta > 0):
            problems.append(f"the Huber delta of loss term {self.name!r} must be positive, got {self.delta!r}")
        return problems


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The settings a compiled training step depends on (a static, hashable argument of the jitted step).

    ``frozen`` names top-level parameters (``params["params"][name]``) that the step leaves exactly as they are
    (no update, no weight decay, EMA equal to them): a Δ-model's ``base`` (:attr:`AtomisticModel.frozen`).
    """

    terms: tuple[LossTerm, ...]
    weight_decay: float
    warmup_steps: int
    clip_norm: float | None
    ema_decay: float | None
    frozen: tuple[str, ...] = ()


def _positive(value):
    if not value > 0:
        raise ValueError(f"must be positive, got {value}")
    return value


@pydantic.dataclasses.dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class EnsembleConfig:
    """``size`` members trained as one (seeds ``seed``, ``seed + 1``, ...), each on its own order of the training set;
    with ``bootstrap`` each on its own sample of it, drawn with replacement once per run (as many structures).

    After training, the spread is calibrated on the validation split (:func:`jaxatom.train.calibration.calibrate`):
    the force-uncertainty threshold is ``forces_threshold`` (eV/Å) if given, else the ``calibration_quantile`` of
    the validation structures' largest calibrated per-atom force uncertainty."""

    title = "training.ensemble"  # not a field: names the schema in errors

    size: int
    bootstrap: bool = False
    calibration_quantile: float = 0.99
    forces_threshold: float | None = None

    @field_validator("size")
    @classmethod
    def _members(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be a positive number of members, got {value}")
        return value

    @field_validator("calibration_quantile")
    @classmethod
    def _quantile(cls, value: float) -> float:
        if not 0.0 < value <= 1.0:
            raise ValueError(f"must be a quantile in (0, 1], got {value}")
        return value

    @field_validator("forces_threshold")
    @classmethod
    def _threshold(cls, value: float | None) -> float | None:
        if value is not None and not value > 0:
            raise ValueError(f"must be a positive force uncertainty in eV/Å (or null), got {value}")
        return value


@pydantic.dataclasses.dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TrainConfig:
    """Optimisation settings. Defaults follow SchNetPack's MD17 recipe (loss weights energy 0.01 / forces 0.99,
    AdamW 1e-3 without weight decay, reduce-on-plateau ×0.5 with patience 75 and cooldown 10, EMA 0.995).

    ``loss`` maps each trained property to its weight or ``{weight, kind, delta}`` (see :class:`LossTerm`); terms
    of weight 0 are reported as metrics but not trained on. ``energy_weight``/``forces_weight`` of older
    configurations are read as ``loss`` entries by :meth:`from_mapping`.

    A validated, immutable pydantic dataclass: bad values raise a :class:`ConfigError` naming each setting; it is a
    real dataclass too (``dataclasses.asdict``/``replace`` work), and :meth:`to_dict` gives its plain form.

    ``ensemble: {size: N, bootstrap: false}`` trains ``N`` members in one compiled step (see
    :mod:`jaxatom.train.ensemble`); null (default) trains one model.
    """

    title = "training configuration"  # not a field (no annotation): names the schema in errors

    batch_size: int = 32
    max_epochs: int = 1000
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    clip_norm: float | None = None
    loss: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_LOSS))
    plateau_factor: float = 0.5
    plateau_patience: int = 75
    plateau_cooldown: int = 10
    min_learning_rate: float = 1e-6
    ema_decay: float | None = 0.995
    early_stopping_patience: int | None = 200
    max_time_s: float | None = None
    seed: int = 0
    data_parallel: bool = True
    ensemble: EnsembleConfig | None = None

    @field_validator("batch_size", "max_epochs")
    @classmethod
    def _positive_count(cls, value: int) -> int:
        return _positive(value)

    @field_validator("learning_rate")
    @classmethod
    def _positive_rate(cls, value: float) -> float:
        return _positive(value)

    @field_validator("weight_decay", "min_learning_rate")
    @classmethod
    def _not_negative(cls, value: float, info) -> float:
        if not value >= 0:
            raise ValueError(f"must not be negative, got {value}")
        return value

    @field_validator("warmup_steps", "plateau_patience", "plateau_cooldown")
    @classmethod
    def _not_negative_count(cls, value: int, info) -> int:
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        return value

    @field_validator("clip_norm", "max_time_s")
    @classmethod
    def _positive_or_none(cls, value: float | None, info) -> float | None:
        if value is not None and not (value >= 0 if info.field_name == "max_time_s" else value > 0):
            kind = "positive" if info.field_name == "clip_norm" else "non-negative"
            raise ValueError(f"must be {kind} or null (none), got {value}")
        return value

    @field_validator("early_stopping_patience")
    @classmethod
    def _patience(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError(f"must not be negative (or null: never stop early), got {value}")
        return value

    @field_validator("plateau_factor")
    @classmethod
    def _factor(cls, value: float) -> float:
        if not 0 < value < 1:
            raise ValueError(f"must lie in (0, 1), got {value}")
        return value

    @field_validator("ema_decay")
    @classmethod
    def _ema(cls, value: float | None) -> float | None:
        if value is not None and not 0 < value < 1:
            raise ValueError(f"must lie in (0, 1), or be null (no EMA), got {value}")
        return value

    @field_validator("loss")
    @classmethod
    def _loss(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError(f"must map trained properties to weights, e.g. {DEFAULT_LOSS}")
        problems = []
        terms = []
        for name, setting in value.items():
            try:
                term = LossTerm.parse(name, setting)
            except (ConfigError, TypeError) as err:
                problems.append(str(err))
                continue
            problems += term.problems()
            terms.append(term)
        if not problems and not any(term.weight > 0 for term in terms):
            problems.append("every loss weight is zero; give at least one trained property a positive weight")
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @property
    def terms(self) -> tuple[LossTerm, ...]:
        """The loss terms, in the order of ``loss``."""
        return tuple(LossTerm.parse(name, value) for name, value in self.loss.items())

    @property
    def step(self) -> StepConfig:
        """The part of the configuration that the compiled step depends on."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(StepConfig)
                  if f.name not in ("terms", "frozen")}  # fmt: skip
        return StepConfig(terms=self.terms, **fields)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values (JSON/YAML ready; ``TrainConfig(**config.to_dict()) == config``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str | None = None) -> TrainConfig:
        """Build from a mapping (e.g. YAML), refusing unknown keys by name; ``energy_weight``/``forces_weight``
        (older configurations) become ``loss`` entries. ``where`` (e.g. the file) is named in errors."""
        values = translate_legacy(values)
        try:
            return cls.__pydantic_validator__.validate_python(values)
        except ValidationError as err:
            raise config_error(err, cls, where=where) from None


def translate_legacy(values: Mapping[str, Any]) -> dict[str, Any]:
    """Training settings of older configurations in today's form: ``energy_weight``/``forces_weight`` become
    ``loss`` entries (the other weight keeps its default)."""
    if not isinstance(values, Mapping):
        return values
    values = dict(values)
    legacy = {LEGACY_WEIGHTS[key]: values.pop(key) for key in LEGACY_WEIGHTS if key in values}
    if legacy:
        if "loss" in values:
            raise ConfigError("give either training.loss or energy_weight/forces_weight (older form), not both")
        values["loss"] = {**DEFAULT_LOSS, **legacy}
    return values


_validated_init = TrainConfig.__init__


def _init(self, *args, **kwargs) -> None:
    try:
        _validated_init(self, *args, **kwargs)
    except ValidationError as err:
        raise config_error(err, TrainConfig) from None


TrainConfig.__init__ = _init  # the same validation, with jaxatom's error
