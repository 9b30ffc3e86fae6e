"""Whole runs from a configuration (YAML): data, split, model, training, evaluation — what ``jaxatom train`` executes.

The configuration is :class:`RunConfig`, a strict pydantic schema (see :mod:`jaxatom.config`)::

    run_dir: runs/qm9_u0
    data: {source: qm9, data_dir: ~/data, train: 110000, val: 10000}
    model:
      representation: {type: painn, n_atom_basis: 128, n_interactions: 3, cutoff: 5.0}
      heads: [{type: atomwise, output_key: energy_U0}]
      atomrefs: [energy_U0]
    training: {learning_rate: 5.0e-4, loss: {energy_U0: 1.0}}

Multi-fidelity data (a per-structure ``fidelity`` index) trains a model with ``model.fidelities: [gfn1, gfn2]``
(cheapest first; the energy head gets one output per fidelity, offsets are fitted per fidelity); ``model.delta_from:
path/to/base_model`` trains a Δ-model on top of a frozen base (:func:`~jaxatom.potential.delta_potential`).

The layout of earlier versions (``model: {type: painn, n_atom_basis: ...}``, ``data.atomrefs``,
``training.energy_weight``) is read and translated, so old run directories resume.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import flax.linen as nn
import numpy as np
import yaml
from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from jaxatom.config import StrictModel, apply_overrides, read_yaml
from jaxatom.data.builtin import BUILTIN_DATASETS, load_builtin
from jaxatom.data.dataset import Dataset, internal_unit
from jaxatom.data.formats import read_dataset
from jaxatom.data.loader import fidelity_of
from jaxatom.data.splits import load_or_create_split
from jaxatom.data.statistics import fit_standardisation
from jaxatom.distributed import is_main_process, main_process_only, sync
from jaxatom.errors import ConfigError
from jaxatom.nn.heads import Atomwise, OutputSpec
from jaxatom.nn.model import DERIVED_OUTPUTS, ENERGY_HEAD, AtomisticModel, check_model
from jaxatom.nn.registry import HEADS, REPRESENTATIONS, module_config, module_from_config
from jaxatom.potential import Potential, PotentialEnsemble, delta_potential, load_model
from jaxatom.potential.calibration import CALIBRATION_FILE
from jaxatom.potential.outputs import OutputScaling
from jaxatom.properties import property_unit
from jaxatom.train.assessment import evaluate_run
from jaxatom.train.calibration import (
    ensemble_residuals,
    fit_calibration,
    plot_calibration,
    reliability_table,
    write_reliability_csv,
)
from jaxatom.train.checkpoint import run_lock
from jaxatom.train.config import TrainConfig, translate_legacy
from jaxatom.train.ensemble import ENSEMBLE_DIR
from jaxatom.train.evaluation import (
    predict_dataset,
)
from jaxatom.train.fit import check_fidelities, check_training_data, fit, run_stop_reason
from jaxatom.units import UnitError

__all__ = [
    "RunConfig",
    "DataConfig",
    "ModelConfig",
    "OutputConfig",
    "SOURCES",
    "load_run_config",
    "load_data",
    "output_scaling",
    "train_run",
    "evaluate_run",
]

#: Benchmark sources of :mod:`jaxatom.data.sources` reachable as ``data.source``, with the setting each needs.
SOURCES = {"qm9": None, "md17": "molecule", "rmd17": "molecule", "md22": "molecule", "iso17": "fold"}


# -- data ------------------------------------------------------------------------------------------------------------


def _split_size(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a count (integer) or a fraction (number in [0, 1]), got {value!r}")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"must not be negative, got {value}")
    if isinstance(value, float) and not 0.0 <= value <= 1.0:
        raise ValueError(f"a fraction must lie in [0, 1] (or give a count as an integer), got {value}")
    return value


SplitSize = Annotated[Any, AfterValidator(_split_size)]


def _source_options(source: str) -> tuple[str, ...]:
    from jaxatom.data import sources

    return {"md17": tuple(sources.MD17_MOLECULES), "rmd17": tuple(sources.RMD17_MOLECULES),
            "md22": tuple(sources.MD22_MOLECULES), "iso17": tuple(sources.ISO17_FOLDS)}[source]  # fmt: skip


class DataConfig(StrictModel):
    """Where the structures come from (exactly one of ``builtin``, ``path``, ``source``) and how they are split.

    ``source`` reaches :mod:`jaxatom.data.sources` (downloaded once into ``data_dir``, default ``$JAXATOM_DATA`` or
    ``~/.cache/jaxatom``): ``qm9`` (``remove_uncharacterized``, default true), ``md17``/``rmd17``/``md22`` (with
    ``molecule``), ``iso17`` (with ``fold``, default ``reference``). Split sizes are counts (integers) or fractions
    (numbers in [0, 1]); ``test: null`` takes the rest. The split is kept in ``run_dir/split.npz``.
    """

    builtin: Literal[tuple(BUILTIN_DATASETS)] | None = Field(None, description="a shipped data set")
    path: str | None = Field(None, description="a data file (.db, .xyz/.extxyz, .npz, .h5)")
    source: Literal[tuple(SOURCES)] | None = Field(None, description="a benchmark downloaded by jaxatom")
    molecule: str | None = Field(None, validate_default=True)
    fold: str | None = Field(None, validate_default=True)
    data_dir: str | None = Field(None, validate_default=True)
    remove_uncharacterized: bool | None = Field(None, validate_default=True)
    units: dict[str, str] | None = Field(
        None, description="units the data file stores properties in, e.g. {stress: GPa} (only with data.path)"
    )
    train: SplitSize = 1000
    val: SplitSize = 100
    test: SplitSize | None = None
    seed: int = 0

    @field_validator("molecule", "fold")
    @classmethod
    def _source_setting(cls, value: str | None, info: ValidationInfo) -> str | None:
        source, name = info.data.get("source"), info.field_name
        if source is None or SOURCES.get(source) != name:
            if value is not None:
                takes = [s for s, setting in SOURCES.items() if setting == name]
                raise ValueError(f"only data.source {' or '.join(takes)} takes a {name}")
            return value
        options = _source_options(source)
        if value is None and name == "fold":
            return "reference"
        if value not in options:
            got = "" if value is None else f"; got {value!r}"
            raise ValueError(f"data.source {source} needs a {name}: one of {', '.join(options)}{got}")
        return value

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("source") is None:
            raise ValueError("only a data.source is downloaded into a data_dir; remove it or set data.source")
        return value

    @field_validator("units")
    @classmethod
    def _units(cls, value: dict[str, str] | None, info: ValidationInfo) -> dict[str, str] | None:
        if value is None:
            return value
        if info.data.get("path") is None:
            raise ValueError("only a data file (data.path) takes units; built-in data and sources carry their own")
        for name, unit in value.items():
            try:
                internal_unit(name, unit)
            except UnitError as err:
                raise ValueError(f"{name}: {err}") from None
        return value

    @field_validator("remove_uncharacterized")
    @classmethod
    def _uncharacterized(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        if info.data.get("source") == "qm9":
            return True if value is None else value
        if value is not None:
            raise ValueError("only data.source qm9 has uncharacterized molecules to remove")
        return value

    @model_validator(mode="after")
    def _one_origin(self) -> DataConfig:
        given = [name for name in ("builtin", "path", "source") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"set exactly one of data.builtin ({', '.join(BUILTIN_DATASETS)}), data.path (a data file) and "
                f"data.source ({', '.join(SOURCES)})" + (f"; got {' and '.join(given)}" if given else "")
            )
        return self


def load_data(data: DataConfig) -> Dataset:
    """The data set a :class:`DataConfig` names (a source downloads into its data directory once)."""
    if data.builtin is not None:
        return load_builtin(data.builtin)
    if data.path is not None:
        return read_dataset(data.path, **({} if data.units is None else {"units": data.units}))
    from jaxatom.data import sources

    data_dir = None if data.data_dir is None else Path(data.data_dir).expanduser()
    origin = data.model_dump(include={"source", "molecule", "fold", "data_dir", "remove_uncharacterized"},
                             exclude_none=True)  # fmt: skip
    if data.source == "qm9":
        dataset = sources.load_qm9(data_dir, remove_uncharacterized=data.remove_uncharacterized)
    elif data.source == "iso17":
        dataset = sources.load_iso17(data.fold, data_dir)
    else:
        loader = {"md17": sources.load_md17, "rmd17": sources.load_rmd17, "md22": sources.load_md22}[data.source]
        dataset = loader(data.molecule, data_dir)
    return dataset.with_origin(origin)


# -- model -----------------------------------------------------------------------------------------------------------


class OutputConfig(StrictModel):
    """How one per-structure scalar output of an ``atomwise`` head is scaled (fitted on the training split in
    float64, SchNetPack's ``RemoveOffsets``/``ScaleProperty``): ``output = scale · model + Σ_atoms (shift +
    atomrefs[Z])`` (averaged over atoms for ``aggregation: avg``).

    ``atomrefs``: per-element references, the data set's own (QM9's free-atom energies) when it has them for this
    output, else fitted by least squares. ``shift``: the mean (per atom for summed outputs) of what is left.
    ``scale``: its standard deviation; default (null) on for every output except the energy and outputs with
    atomrefs (SchNetPack's QM9 and MD17 recipes).
    """

    atomrefs: bool = False
    shift: bool = True
    scale: bool | None = None

    def scaled(self, name: str) -> bool:
        """Whether output ``name`` is divided by its standard deviation."""
        return self.scale if self.scale is not None else not (name == "energy" or self.atomrefs)


def _module_problem(config: Any, registry: Mapping[str, type], what: str) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise ValueError(f"must be a mapping {{type: {' | '.join(registry)}, <setting>: <value>, ...}}")
    kind = config.get("type")
    names = {name: name for name in registry} | {cls.__name__.lower(): name for name, cls in registry.items()}
    if kind is None:
        raise ValueError(f"needs a type: one of {', '.join(registry)}")
    if not isinstance(kind, str) or kind.lower() not in names:
        raise ValueError(f"unknown {what} type {kind!r}; choose one of {', '.join(registry)}")
    config = {**config, "type": names[kind.lower()]}
    try:
        module_from_config(config, registry)
    except ConfigError as err:
        raise ValueError(str(err)) from None
    return config


def _representation(config: Any) -> dict[str, Any]:
    return _module_problem(config, REPRESENTATIONS, "model")


def _head(config: Any) -> dict[str, Any]:
    return _module_problem(config, HEADS, "head")


def _energy_head() -> dict[str, Any]:
    config = module_config(ENERGY_HEAD)
    defaults = module_config(type(ENERGY_HEAD)())
    return {"type": "atomwise", **{k: v for k, v in config.items() if k != "type" and v != defaults[k]}}


def _energy(head: nn.Module) -> bool:
    return isinstance(head, Atomwise) and head.output_key == "energy"


def _scalable(spec: OutputSpec) -> bool:
    """Whether ``spec`` is a per-structure scalar of an ``atomwise`` head (may get a shift, scale and atomrefs)."""
    return spec.scaling == spec.name and not spec.per_atom and spec.shape == () and spec.aggregation is not None


class ModelConfig(StrictModel):
    """The model: a representation and output heads, each ``{type: <registered name>, <field>: <value>, ...}``
    (:mod:`jaxatom.nn.registry`; unknown fields are refused by name), and how the outputs are scaled.

    ``atomrefs: [energy_U0]`` is short for ``outputs: {energy_U0: {atomrefs: true}}``.

    ``fidelities`` (level-of-theory names, cheapest first, the last the target) makes the ``energy`` head predict one
    energy per fidelity from the shared representation; the data's ``fidelity`` property (an index into this list)
    picks each structure's, and the energy's offsets are fitted per fidelity. ``delta_from`` (a model file) makes this
    a Δ-model: the file's model is the frozen base, this model learns what the data's energies add to it.
    """

    representation: Annotated[dict[str, Any], AfterValidator(_representation)] = Field(
        default_factory=lambda: {"type": "painn"}
    )
    heads: list[Annotated[dict[str, Any], AfterValidator(_head)]] = Field(
        default_factory=lambda: [_energy_head()], min_length=1
    )
    atomrefs: list[str] = Field(default_factory=list)
    outputs: dict[str, OutputConfig] = Field(default_factory=dict)
    fidelities: list[str] | None = None
    delta_from: str | None = Field(None, description="the model file of a frozen base model (Δ-learning)")

    def _heads(self) -> list[nn.Module]:
        """The heads built through the registry, the energy head with :attr:`fidelities`."""
        heads = [module_from_config(head, HEADS) for head in self.heads]
        if self.fidelities is None:
            return heads
        return [head.clone(fidelities=tuple(self.fidelities)) if _energy(head) else head for head in heads]

    def build(self) -> AtomisticModel:
        """The (unbound) flax model: the representation and heads built through the registry (without the base of
        a Δ-model, which :func:`train_run` loads)."""
        representation = module_from_config(self.representation, REPRESENTATIONS)
        return AtomisticModel(representation, tuple(self._heads()))

    def output(self, name: str) -> OutputConfig:
        """The scaling settings of output ``name`` (``atomrefs`` list included)."""
        settings = self.outputs.get(name, OutputConfig())
        if name in self.atomrefs and not settings.atomrefs:
            settings = settings.model_copy(update={"atomrefs": True})
        return settings

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        representation = module_from_config(self.representation, REPRESENTATIONS)
        if self.fidelities is not None and not any(_energy(module_from_config(h, HEADS)) for h in self.heads):
            raise ValueError("fidelities apply to the energy head; add an atomwise head with output_key: energy")
        if self.fidelities is not None and self.delta_from is not None:
            raise ValueError("a Δ-model (delta_from) has one fidelity; train it on the target fidelity's data only")
        try:
            heads = self._heads()
            check_model(representation, heads)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        specs = [spec for head in heads for spec in head.outputs]
        scalable = [spec.name for spec in specs if _scalable(spec)]
        for where, names in (("atomrefs", self.atomrefs), ("outputs", list(self.outputs))):
            for name in names:
                if name not in scalable:
                    raise ValueError(
                        f"{where} names {name!r}, but only per-structure scalar outputs of atomwise heads are "
                        f"scaled (here: {', '.join(scalable) or 'none'}); remove it or add such a head"
                    )
        for name in self.atomrefs:
            explicit = self.outputs.get(name)
            if explicit is not None and "atomrefs" in explicit.model_fields_set and not explicit.atomrefs:
                raise ValueError(f"atomrefs lists {name!r} but outputs.{name}.atomrefs is false; keep one of them")
        return self


# -- the run ---------------------------------------------------------------------------------------------------------


_REPRESENTATION_FIELDS = {"type"} | {
    field.name
    for cls in REPRESENTATIONS.values()
    for field in dataclasses.fields(cls)
    if field.name not in ("parent", "name")
}


def _translate_legacy(values: Any) -> Any:
    """A run configuration of an earlier version in today's layout: ``model: {type, <representation settings>}`` ->
    ``model.representation``; ``data.atomrefs: true`` -> ``model.atomrefs: [energy]``; ``training.energy_weight`` /
    ``forces_weight`` -> ``training.loss``."""
    if not isinstance(values, Mapping):
        return values
    values = dict(values)
    model = values.get("model")
    if isinstance(model, Mapping):
        model = dict(model)
        # the old layout held the representation's settings directly (with its type); a key that no representation
        # has stays where it is, so that a misspelt section (``heds``) is named as such
        old_layout = "type" in model and "representation" not in model
        keep = ModelConfig.model_fields
        moved = [key for key in model if key not in keep and (old_layout or key in _REPRESENTATION_FIELDS)]
        legacy = {key: model.pop(key) for key in moved}
        if legacy:
            representation = model.get("representation")
            representation = dict(representation) if isinstance(representation, Mapping) else {"type": "painn"}
            model["representation"] = {**representation, **legacy}
        values["model"] = model
    data = values.get("data")
    if isinstance(data, Mapping) and "atomrefs" in data:
        data = dict(data)
        if data.pop("atomrefs"):
            model = dict(values.get("model") or {})
            listed = list(model.get("atomrefs") or [])
            model["atomrefs"] = listed if "energy" in listed else [*listed, "energy"]
            values["model"] = model
        values["data"] = data
    if isinstance(values.get("training"), Mapping):
        values["training"] = translate_legacy(values["training"])
    return values


class RunConfig(StrictModel):
    """A ``jaxatom train`` run: where it writes (``run_dir``), its data, model and training settings
    (:class:`~jaxatom.train.TrainConfig`, SchNetPack's MD17 recipe by default)."""

    title = "run configuration"

    run_dir: str = "runs/run"
    data: DataConfig = Field(
        description=f"set data.builtin ({', '.join(BUILTIN_DATASETS)}), data.path (a data file) or data.source (qm9, "
        "md17, rmd17, md22, iso17)"
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, values: Any) -> Any:
        return _translate_legacy(values)

    @model_validator(mode="after")
    def _loss_outputs(self) -> RunConfig:
        outputs = self.model.build().output_names
        for term in self.training.terms:
            if term.name not in outputs:
                raise ValueError(
                    f"training.loss trains {term.name!r}, but the model predicts only {', '.join(outputs)}; add a "
                    f"head for {term.name} to model.heads or remove it from training.loss"
                )
        return self


def load_run_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML run configuration (or none: everything from ``overrides``), apply ``section.key=value`` overrides
    (values parsed as YAML) and validate it all without computing; a :class:`ConfigError` names every bad key."""
    raw = {} if path is None else read_yaml(path, "a mapping of sections (run_dir, data, model, training)")
    return RunConfig.load(apply_overrides(raw, overrides), where=None if path is None else str(path))


def _as_run_config(config: RunConfig | Mapping) -> RunConfig:
    return config if isinstance(config, RunConfig) else RunConfig.load(config)


def run_split(config: RunConfig, dataset: Dataset) -> dict:
    """The run's split of ``dataset`` (``train_idx``, ``val_idx``, ``test_idx``), kept in ``run_dir/split.npz``."""
    data = config.data
    path = Path(config.run_dir) / "split.npz"
    try:
        return load_or_create_split(path, len(dataset), data.train, data.val, data.test, data.seed)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _data_atomrefs(dataset: Dataset, name: str) -> dict[int, float] | None:
    """The data set's own references of ``name`` (QM9's free atoms), if it has them."""
    refs = dict(dataset.metadata.get("atomrefs_all", {}) or {}).get(name)
    if refs is None and name == "energy":
        refs = dataset.metadata.get("atomrefs")
    return {int(z): float(v) for z, v in refs.items()} if refs else None


def output_scaling(
    model: ModelConfig, specs: Sequence[OutputSpec], train: Dataset, names: Collection[str]
) -> dict[str, OutputScaling]:
    """Scale, shift and atomrefs of every output among ``names`` that may have them (per-structure scalars of atomwise
    heads), from the training set ``train`` in float64 (:func:`~jaxatom.data.statistics.fit_standardisation`)."""
    scaling = {}
    for spec in specs:
        if spec.name not in names or not _scalable(spec):
            continue
        settings = model.output(spec.name)
        if spec.fidelities:
            scaling[spec.name] = _fidelity_scaling(settings, spec, train)
            continue
        refs = (_data_atomrefs(train, spec.name) or True) if settings.atomrefs else False
        stats = fit_standardisation(train, np.arange(len(train)), spec.name, spec.aggregation == "sum", refs)
        scale = _checked_scale(stats["scale"] if settings.scaled(spec.name) else 1.0, spec.name, len(train))
        scaling[spec.name] = OutputScaling(scale, stats["shift"] if settings.shift else 0.0, stats["atomrefs"])
    return scaling


def _checked_scale(scale: float, name: str, n_structures: int) -> float:
    if not scale > 0:
        raise ConfigError(
            f"{name} cannot be standardised: its spread over the {n_structures} training structures is "
            f"{scale:g}; use more training data or set model.outputs.{name}.scale: false"
        )
    return scale


def _fidelity_scaling(settings: OutputConfig, spec: OutputSpec, train: Dataset) -> OutputScaling:
    """Offsets fitted per fidelity (on that fidelity's training structures, float64) as ``fidelity_atomrefs``: each
    fidelity's shift plus its least-squares references (``atomrefs``) per element; the scale is the spread pooled
    over the fidelities (each about its own mean)."""
    fidelity = fidelity_of(train)
    refs_per_fidelity, variances, counts = [], [], []
    for k, name in enumerate(spec.fidelities):
        indices = np.flatnonzero(fidelity == k) if fidelity is not None else np.array([], np.int64)
        if indices.size == 0:
            raise ConfigError(
                f"no training structure has fidelity {k} ({name}), so its {spec.name} offsets cannot be fitted; "
                "put structures of every fidelity into the training split (data.train) or drop that fidelity"
            )
        stats = fit_standardisation(train, indices, spec.name, spec.aggregation == "sum", settings.atomrefs)
        shift = stats["shift"] if settings.shift else 0.0
        refs_per_fidelity.append({z: shift + stats["atomrefs"].get(z, 0.0) for z in train.elements})
        variances.append(stats["scale"] ** 2)
        counts.append(indices.size)
    pooled = float(np.sqrt(np.average(variances, weights=counts)))
    scale = _checked_scale(pooled if settings.scaled(spec.name) else 1.0, spec.name, len(train))
    return OutputScaling(scale, 0.0, {}, tuple(refs_per_fidelity))


def _with_data_units(model: AtomisticModel, dataset: Dataset) -> AtomisticModel:
    """``model`` with the data's unit on atomwise heads that give none and whose output jaxatom does not know
    (QM9's ``energy_U0``, ``gap``, ...: eV), so that the model file and predictions carry it."""
    heads = []
    for head in model.heads:
        unit = dataset.units.get(getattr(head, "output_key", None), "1")
        if isinstance(head, Atomwise) and head.unit is None and property_unit(head.output_key) == "1" and unit != "1":
            head = head.clone(unit=unit)
        heads.append(head)
    return model.clone(heads=tuple(heads))


def _scaled_outputs(training: TrainConfig, train: Dataset) -> set[str]:
    """The outputs whose statistics are fitted: the loss terms, and the energy behind trained forces or stress."""
    names = {term.name for term in training.terms}
    if names & set(DERIVED_OUTPUTS) and "energy" in train.properties:
        names.add("energy")
    return names


def _base_model(path: str) -> Potential:
    """The frozen base of a Δ-model (``model.delta_from``), at its target fidelity."""
    if not Path(path).exists():
        raise ConfigError(f"model.delta_from: no model at {path}; train the base model first (its best_model)")
    return load_model(path).at_fidelity()


def _residual(train: Dataset, base: Potential) -> Dataset:
    """``train`` with its energies less the base's predictions (float64 on the host): what a Δ-model's energy
    offsets are fitted to."""
    if "energy" not in train.properties:
        return train
    predicted = predict_dataset(base, train)["energy"]
    return dataclasses.replace(train, properties={**train.properties, "energy": train.properties["energy"] - predicted})


def train_run(config: RunConfig | Mapping, progress: bool = True) -> Potential | PotentialEnsemble:
    """Load the data, split it (reusing ``run_dir/split.npz``), check that it has every property the loss trains,
    fit the output scaling on the training split, build the model, write ``run_config.yaml`` and train with
    checkpoints (resuming a previous run in ``run_dir``). A run that is already finished under ``config`` is
    reported and keeps its files (see :func:`~jaxatom.train.fit`). Returns the trained potential (an ensemble with
    ``training.ensemble``, calibrated on the validation split: :func:`calibrate_run`)."""
    config = _as_run_config(config)
    run_dir, training = Path(config.run_dir), config.training
    dataset = load_data(config.data)
    split = run_split(config, dataset) if is_main_process() else None  # in a multi-process run process 0 writes it
    sync("jaxatom.train_run.split")
    split = run_split(config, dataset) if split is None else split  # ... and the others read it
    train, val = dataset.subset(split["train_idx"]), dataset.subset(split["val_idx"])
    indices = {"training": split["train_idx"], "validation": split["val_idx"]}
    check_training_data({"training": train, "validation": val}, training, indices)  # before neighbour lists, compiles
    model = _with_data_units(config.model.build(), dataset)
    base = None if config.model.delta_from is None else _base_model(config.model.delta_from)
    for name, part in (("training", train), ("validation", val)):
        check_fidelities(model.fidelities, part, name)
    targets = train if base is None else _residual(train, base)
    scaling = output_scaling(config.model, model.outputs, targets, _scaled_outputs(training, train))
    potential = Potential.create(model.representation, elements=dataset.elements, seed=training.seed,
                                 heads=model.heads, scaling=scaling)  # fmt: skip
    if base is not None:
        potential = delta_potential(base, potential)
    with main_process_only(run_lock(run_dir)):
        written = run_dir / "run_config.yaml"
        if is_main_process() and (run_stop_reason(run_dir, training) is None or not written.exists()):
            written.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))  # a finished run keeps its own
        trained = fit(potential, train, val, training, run_dir, resume=True, progress=progress)
        if isinstance(trained, PotentialEnsemble):
            trained = calibrate_run(trained, val, training, run_dir)
        return trained


def calibrate_run(ensemble: PotentialEnsemble, val: Dataset, training: TrainConfig, run_dir: Path) -> PotentialEnsemble:
    """Calibrate a trained ensemble on the validation split ``val`` and write ``best_ensemble/calibration.json``
    and the reliability diagram ``calibration.png`` with its bins ``calibration.csv`` into ``run_dir``."""
    settings = training.ensemble
    residuals = ensemble_residuals(ensemble, val, training.batch_size)
    calibration = fit_calibration(residuals, settings.calibration_quantile, settings.forces_threshold)
    calibration.save(run_dir / ENSEMBLE_DIR / CALIBRATION_FILE)
    rows = reliability_table(residuals, calibration)
    write_reliability_csv(rows, run_dir / "calibration.csv")
    plot_calibration(rows, run_dir / "calibration.png", calibration)
    return ensemble.with_calibration(calibration)
