"""The configuration of ``jaxatom learn``: a strict pydantic schema (see :mod:`jaxatom.config`)::

    run_dir: runs/learn_ethanol
    data: {builtin: ethanol, train: 40, val: 10, test: 500}   # first labels (train + val) and the held-out test set
    model: {representation: {type: schnet, n_atom_basis: 32, n_interactions: 2, cutoff: 5.0}}
    training: {max_epochs: 300, ensemble: {size: 4}, loss: {energy: 0.01, forces: 0.99}}
    explore: {temperatures_K: [300, 600, 900], replicas: 4, steps: 2000, action: stop_replica}
    select: {budget: 20, method: fps}
    oracle: {method: GFN2-xTB, workers: 2}
    generations: 5

Each generation trains the ensemble on every label so far, explores with uncertainty-gated MD, selects a batch from
what it visited, labels it with the oracle and adds the labels (see :mod:`jaxatom.learn.loop`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from jaxatom.config import StrictModel, apply_overrides, read_yaml
from jaxatom.learn.oracle import OracleConfig
from jaxatom.learn.selection import Method
from jaxatom.train.config import TrainConfig
from jaxatom.train.run import DataConfig, ModelConfig

__all__ = ["ExploreConfig", "SelectConfig", "LearnConfig", "load_learn_config"]


class ExploreConfig(StrictModel):
    """Uncertainty-gated Langevin MD from structures drawn among the labels, every temperature in one run.

    ``replicas`` start from as many labelled structures (drawn per generation and temperature) and run ``steps``
    steps of ``timestep_fs`` (fs) at each of ``temperatures_K``, writing a frame every ``stride`` steps. The gate
    watches the ensemble's calibrated maximal force uncertainty every step: ``stop_replica`` freezes a replica that
    passes ``threshold`` (eV/Å; default the calibrated threshold stored with the ensemble), ``flag`` only records
    it, ``stop`` ends the run. ``friction_per_fs`` is the Langevin friction (1/fs).
    """

    temperatures_K: list[float] = Field(default_factory=lambda: [300.0], min_length=1)
    replicas: int = Field(4, ge=1)
    steps: int = Field(2000, ge=1)
    timestep_fs: float = Field(0.5, gt=0)
    stride: int = Field(10, ge=1)
    friction_per_fs: float = Field(0.01, gt=0)
    action: Literal["flag", "stop_replica", "stop"] = "stop_replica"
    threshold: float | None = Field(None, gt=0)

    @field_validator("temperatures_K")
    @classmethod
    def _positive(cls, values: list[float]) -> list[float]:
        if any(t <= 0 for t in values):
            raise ValueError(f"temperatures must be positive (K), got {values}")
        return values

    @model_validator(mode="after")
    def _whole_frames(self) -> ExploreConfig:
        if self.steps % self.stride:
            raise ValueError(f"steps ({self.steps}) must be a multiple of stride ({self.stride})")
        return self


class SelectConfig(StrictModel):
    """How a generation's batch is chosen from the visited structures (see :mod:`jaxatom.learn.selection`).

    ``budget`` structures per generation for the oracle; with a ``cheap_oracle`` (multi-fidelity), ``cheap_budget``
    more for it: the first ``budget`` picks (the most uncertain and diverse) go to the expensive oracle, the rest to
    the cheap one. ``method``: ``fps`` (farthest points in the models' feature space among the
    ``shortlist`` × ``budget`` most uncertain candidates, starting at the most uncertain), ``kmeans`` (the most
    uncertain of each of ``budget`` clusters of that shortlist), ``uncertainty`` (the most uncertain), ``random``
    (uniformly from every visited structure: the baseline of learning curves). ``threshold`` (eV/Å) drops
    candidates less uncertain than it before selecting (default: none, so every generation uses its budget).
    """

    budget: int = Field(20, ge=1)
    cheap_budget: int = Field(0, ge=0)
    method: Method = "fps"
    shortlist: float = Field(4.0, ge=1.0)
    threshold: float | None = Field(None, gt=0)


class LearnConfig(StrictModel):
    """A ``jaxatom learn`` run (see the module docstring). ``data``: its ``train`` + ``val`` structures are the first
    labels, its ``test`` structures the fixed held-out set every generation is scored on. ``val_fraction`` of the
    labels validate (and calibrate) each generation's ensemble. ``seed`` seeds the draws of starting structures, MD
    and random selection.

    Multi-fidelity: with ``cheap_oracle`` (e.g. GFN1-xTB beside a GFN2-xTB ``oracle``) the model must predict two
    fidelities (``model.fidelities: [cheap, expensive]``) and the data carry each structure's ``fidelity``; every
    generation labels ``select.cheap_budget`` structures cheaply and ``select.budget`` expensively, and the
    held-out set is scored at the expensive level."""

    title = "active-learning configuration"

    run_dir: str = "runs/learn"
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainConfig = Field(default_factory=lambda: TrainConfig(ensemble={"size": 4}))
    explore: ExploreConfig = Field(default_factory=ExploreConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    oracle: OracleConfig = Field(default_factory=OracleConfig)
    cheap_oracle: OracleConfig | None = None
    generations: int = Field(3, ge=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _ensemble(self) -> LearnConfig:
        ensemble = self.training.ensemble
        if ensemble is None or ensemble.size < 2:
            raise ValueError(
                "active learning needs an ensemble's spread: set training.ensemble.size to 2 or more (4 is usual)"
            )
        fidelities = self.model.fidelities
        if self.cheap_oracle is not None and (fidelities is None or len(fidelities) != 2):
            raise ValueError(
                "a cheap_oracle labels a second fidelity: set model.fidelities to the two levels, cheapest first "
                "(e.g. [gfn1, gfn2])"
            )
        if self.cheap_oracle is not None and self.select.cheap_budget == 0:
            raise ValueError("a cheap_oracle needs labels to make: set select.cheap_budget (e.g. 5 × select.budget)")
        if self.cheap_oracle is None and fidelities is not None and len(fidelities) > 1:
            raise ValueError("a multi-fidelity model learns from two oracles: add cheap_oracle (the cheaper level)")
        if self.data.test == 0:
            raise ValueError("data.test must hold structures: every generation is scored on that held-out set")
        return self


def load_learn_config(path: str | Path | None, overrides: Sequence[str] = ()) -> LearnConfig:
    """Read a YAML ``jaxatom learn`` configuration, apply ``section.key=value`` overrides and validate it all
    before any work (a :class:`~jaxatom.errors.ConfigError` names every bad key)."""
    raw = {} if path is None else read_yaml(path, "a mapping of sections (run_dir, data, model, training, ...)")
    return LearnConfig.load(apply_overrides(raw, overrides), where=None if path is None else str(path))
