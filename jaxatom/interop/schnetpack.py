"""Import SchNetPack 2.x models (``NeuralNetworkPotential`` with SchNet or PaiNN) as jaxatom potentials.

torch and schnetpack are needed only here, for reading the model; the imported :class:`~jaxatom.Potential` runs
without them. Supported, and converted exactly:

* representations ``SchNet`` and ``PaiNN`` (any sizes, shared interactions/filters), with ``GaussianRBF`` (fixed or
  trainable) or ``BesselRBF`` and ``CosineCutoff`` or ``MollifierCutoff``. A ``GaussianRBF`` keeps SchNetPack's stored
  float32 centres and widths: it becomes a trainable jaxatom basis holding them as parameters (jaxatom's fixed basis
  would recompute them in float64), so training the imported model in jaxatom trains them too;
* one ``Atomwise`` energy head (any hidden layout, ``sum``/``avg`` aggregation), ``Forces`` (forces and stress);
* input modules ``PairwiseDistances`` and ``Strain``; postprocessors ``AddOffsets`` (mean per atom and per-element
  atomrefs of the energy) and ``CastTo32``/``CastTo64``;
* the model's energy and length units, converted to eV and Å and recorded in the model file.

Units: SchNetPack model files carry none; the model works in the units of its training data. Each unit is taken from,
in this order: the argument (``--energy-unit``/``--position-unit``); the ``config.yaml`` that ``spktrain`` writes into
the run directory, in the model file's directory or its parent (``data.property_units.<energy key>`` and
``data.distance_unit``); for the length only, Å. An argument that disagrees with ``config.yaml`` wins with a warning.
With no energy unit known the import is refused: pass ``--energy-unit`` (e.g. eV or kcal/mol). An unreadable
``config.yaml`` is an error, or only a warning when both units are given.

Anything else raises :class:`UnsupportedModelError` naming the module — there is no partial import.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxatom.errors import ConfigError, JaxAtomError
from jaxatom.nn import Atomwise, PaiNN, SchNet
from jaxatom.nn.schnet import MAX_Z
from jaxatom.potential import ModelFileError, Potential
from jaxatom.potential.potential import normalise_elements
from jaxatom.units import UnitError, unit_factor

__all__ = ["import_model", "UnsupportedModelError", "MissingDependencyError", "SUPPORTED"]

SUPPORTED = (
    "NeuralNetworkPotential/AtomisticModel with a SchNet or PaiNN representation (GaussianRBF or BesselRBF, "
    "CosineCutoff or MollifierCutoff), one Atomwise energy head, Forces, input modules PairwiseDistances/Strain and "
    "postprocessors AddOffsets/CastTo32/CastTo64"
)


class UnsupportedModelError(JaxAtomError, ValueError):
    """The SchNetPack model contains a module or setting that jaxatom cannot reproduce exactly."""


class MissingDependencyError(JaxAtomError, ImportError):
    """torch or schnetpack, needed only to import SchNetPack models, is not installed (also an ``ImportError``)."""


def _refuse(what: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"cannot import {what}; jaxatom imports {SUPPORTED}")


def _require_schnetpack():
    try:
        import schnetpack
        import torch
    except ImportError as err:
        raise MissingDependencyError(
            "importing SchNetPack models needs torch and schnetpack: pip install 'jaxatom[schnetpack]' "
            "(on Python 3.11 see tools/install-schnetpack.sh)"
        ) from err
    return torch, schnetpack


def _numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().copy()


def _dense(layer, scale: float = 1.0) -> dict[str, np.ndarray]:
    """A ``schnetpack.nn.Dense`` as flax ``Dense`` parameters (kernel = weight transposed, times ``scale``)."""
    params = {"kernel": _numpy(layer.weight).T * scale}
    if layer.bias is not None:
        params["bias"] = _numpy(layer.bias)
    return params


def _activation(activation, torch, spk) -> str:
    """The jaxatom name of a SchNetPack activation (function or module)."""
    functional = torch.nn.functional
    by_function = {
        spk.nn.activations.shifted_softplus: "shifted_softplus",
        functional.silu: "silu",
        functional.softplus: "softplus",
        torch.tanh: "tanh",
        functional.relu: "relu",
    }
    if not isinstance(activation, torch.nn.Module):
        for function, name in by_function.items():
            if activation is function:
                return name
    by_module = {torch.nn.SiLU: "silu", torch.nn.Tanh: "tanh", torch.nn.ReLU: "relu"}
    if type(activation) in by_module:
        return by_module[type(activation)]
    if type(activation) is torch.nn.Softplus and activation.beta == 1:
        return "softplus"
    if type(activation) is spk.nn.activations.ShiftedSoftplus:
        if float(activation.alpha) == 1.0 and float(activation.beta) == 1.0 and not activation.alpha.requires_grad:
            return "shifted_softplus"
    raise _refuse(f"the activation {activation!r} (supported: shifted softplus, SiLU, softplus, tanh, ReLU)")


def _radial_basis(rep, length: float, spk) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Settings and parameters of the radial basis, in Å, and the factor its outputs gain from the unit change."""
    rbf = rep.radial_basis
    if type(rbf) is spk.nn.GaussianRBF:
        # the stored centres and widths (buffers or parameters) as parameters: a fixed jaxatom basis would recompute
        # them in float64, off SchNetPack's float32 values by about a float32 ulp
        offsets, widths = _numpy(rbf.offsets).astype(np.float64), _numpy(rbf.widths).astype(np.float64)
        settings = {"radial_basis": "gaussian", "n_rbf": int(rbf.n_rbf), "trainable_rbf": True}
        return settings, {"offsets": offsets * length, "widths": widths * length}, 1.0
    if type(rbf) is spk.nn.BesselRBF:
        freqs = _numpy(rbf.freqs).astype(np.float64)
        rbf_cutoff = np.pi / freqs[0]
        # sin(k pi d / rc) / d gains a factor `length` when d is measured in Å: absorbed into the next layer
        return {"radial_basis": "bessel", "n_rbf": int(rbf.n_rbf), "rbf_cutoff": rbf_cutoff * length}, {}, length
    raise _refuse(f"the radial basis {type(rbf).__name__}")


def _cutoff_fn(rep, length: float, spk) -> dict[str, Any]:
    fn = rep.cutoff_fn
    kinds = {spk.nn.CosineCutoff: "cosine", spk.nn.MollifierCutoff: "mollifier"}
    if type(fn) not in kinds:
        raise _refuse(f"the cutoff function {type(fn).__name__}")
    return {"cutoff_fn": kinds[type(fn)], "cutoff": float(fn.cutoff) * length}


def _embedding(rep, torch) -> dict[str, np.ndarray]:
    embedding = rep.embedding
    if type(embedding) is not torch.nn.Embedding:
        raise _refuse(f"the nuclear embedding {type(embedding).__name__} (only torch.nn.Embedding)")
    if len(getattr(rep, "electronic_embeddings", [])) > 0:
        raise _refuse("electronic (charge/spin) embeddings")
    table = _numpy(embedding.weight)
    if table.shape[0] > MAX_Z:
        table = table[:MAX_Z]
    padded = np.zeros((MAX_Z, table.shape[1]), table.dtype)
    padded[: table.shape[0]] = table
    return {"embedding": padded}


def _blocks(modules) -> tuple[bool, list]:
    """Whether a ``ModuleList`` repeats one shared module, and its distinct blocks."""
    shared = len(modules) > 1 and all(m is modules[0] for m in modules)
    return shared, [modules[0]] if shared else list(modules)


def _schnet(rep, length: float, torch, spk) -> tuple[SchNet, dict]:
    rbf_settings, rbf_params, rbf_gain = _radial_basis(rep, length, spk)
    shared, blocks = _blocks(rep.interactions)
    first = blocks[0]
    activation = _activation(first.filter_network[0].activation, torch, spk)
    params: dict[str, Any] = {"embedding": _embedding(rep, torch)}
    if rbf_params:
        params["radial_basis"] = rbf_params
    for index, block in enumerate(blocks):
        params["interaction" if shared else f"interactions_{index}"] = {
            "in2f": _dense(block.in2f),
            "filter_0": _dense(block.filter_network[0], rbf_gain),
            "filter_1": _dense(block.filter_network[1]),
            "f2out_0": _dense(block.f2out[0]),
            "f2out_1": _dense(block.f2out[1]),
        }
    module = SchNet(
        n_atom_basis=int(rep.n_atom_basis),
        n_interactions=len(rep.interactions),
        n_filters=int(first.in2f.out_features),
        shared_interactions=shared,
        activation=activation,
        **rbf_settings,
        **_cutoff_fn(rep, length, spk),
    )
    return module, params


def _painn(rep, length: float, torch, spk) -> tuple[PaiNN, dict]:
    rbf_settings, rbf_params, rbf_gain = _radial_basis(rep, length, spk)
    shared, interactions = _blocks(rep.interactions)
    _, mixings = _blocks(rep.mixing)
    params: dict[str, Any] = {"embedding": _embedding(rep, torch), "filter_net": _dense(rep.filter_net, rbf_gain)}
    if rbf_params:
        params["radial_basis"] = rbf_params
    for index, (interaction, mixing) in enumerate(zip(interactions, mixings, strict=True)):
        params["interaction" if shared else f"interactions_{index}"] = {
            "context_0": _dense(interaction.interatomic_context_net[0]),
            "context_1": _dense(interaction.interatomic_context_net[1]),
        }
        params["mixing" if shared else f"mixing_{index}"] = {
            "context_0": _dense(mixing.intraatomic_context_net[0]),
            "context_1": _dense(mixing.intraatomic_context_net[1]),
            "mu_channel_mix": _dense(mixing.mu_channel_mix),
        }
    module = PaiNN(
        n_atom_basis=int(rep.n_atom_basis),
        n_interactions=int(rep.n_interactions),
        shared_interactions=shared,
        shared_filters=bool(rep.share_filters),
        activation=_activation(interactions[0].interatomic_context_net[0].activation, torch, spk),
        epsilon=float(mixings[0].epsilon),
        **rbf_settings,
        **_cutoff_fn(rep, length, spk),
    )
    return module, params


def _head(atomwise, torch, spk) -> tuple[Atomwise, dict]:
    layers = list(atomwise.outnet)
    if not all(isinstance(layer, spk.nn.Dense) for layer in layers):
        raise _refuse("an Atomwise head whose network is not a sequence of schnetpack.nn.Dense layers")
    if layers[-1].out_features != 1:
        raise _refuse(f"an Atomwise head with {layers[-1].out_features} outputs (the energy head has one)")
    if atomwise.aggregation_mode not in ("sum", "avg"):
        raise _refuse(f"an Atomwise head with aggregation_mode={atomwise.aggregation_mode!r} (sum or avg)")
    activation = _activation(layers[0].activation, torch, spk) if len(layers) > 1 else "silu"
    head = Atomwise(
        n_out=1,
        n_hidden=tuple(int(layer.out_features) for layer in layers[:-1]),
        n_layers=len(layers),
        activation=activation,
        aggregation=atomwise.aggregation_mode,
        output_key="energy",
        per_atom_output_key="energies",
    )
    return head, {"outnet": {f"layers_{k}": _dense(layer) for k, layer in enumerate(layers)}}


def _energy_modules(model, spk) -> tuple[Any, str]:
    """The Atomwise energy head and its output key; refuses other inputs and outputs."""
    allowed_inputs = (spk.atomistic.PairwiseDistances, spk.atomistic.Strain)
    inputs = list(getattr(model, "input_modules", []))
    for module in inputs:
        if type(module) not in allowed_inputs:
            raise _refuse(f"the input module {type(module).__name__}")
    if not any(type(m) is spk.atomistic.PairwiseDistances for m in inputs):
        raise _refuse("a model without a PairwiseDistances input module")
    heads = [m for m in model.output_modules if type(m) is spk.atomistic.Atomwise]
    others = [m for m in model.output_modules if type(m) not in (spk.atomistic.Atomwise, spk.atomistic.Forces)]
    if others:
        raise _refuse(f"the output module {type(others[0]).__name__}")
    if len(heads) != 1:
        raise _refuse(f"a model with {len(heads)} Atomwise heads (exactly one, the energy)")
    energy_key = heads[0].output_key
    for forces in (m for m in model.output_modules if type(m) is spk.atomistic.Forces):
        if forces.energy_key != energy_key:
            raise _refuse(f"a Forces module differentiating {forces.energy_key!r}, not the energy {energy_key!r}")
    return heads[0], energy_key


def _offsets(model, energy_key: str, energy: float, spk) -> tuple[float, dict[int, float]]:
    """Mean energy per atom and per-element reference energies (eV) from the ``AddOffsets`` postprocessors."""
    shift, atomrefs = 0.0, np.zeros(MAX_Z)
    ignored = (spk.transform.CastTo32, spk.transform.CastTo64)
    for module in getattr(model, "postprocessors", []):
        if type(module) in ignored:
            continue
        if type(module) is not spk.transform.AddOffsets:
            raise _refuse(f"the postprocessor {type(module).__name__}")
        if module._property != energy_key:
            raise _refuse(f"AddOffsets on {module._property!r} (only the energy {energy_key!r})")
        if not getattr(module, "is_extensive", True):
            raise _refuse("AddOffsets with is_extensive=False (the energy is extensive)")
        if module.add_mean:
            shift += float(_numpy(module.mean).astype(np.float64).reshape(-1)[0]) * energy
        if module.add_atomrefs:
            table = _numpy(module.atomref).astype(np.float64).reshape(-1)[:MAX_Z]
            atomrefs[: len(table)] += table * energy
    return shift, {int(z): float(atomrefs[z]) for z in np.nonzero(atomrefs)[0]}


def _check_source(source) -> None:
    """A path must name an existing file (checked before torch is imported)."""
    if not isinstance(source, str | os.PathLike):
        return
    path = os.fspath(source)
    if os.path.isdir(path):
        raise ModelFileError(f"{path} is a directory; pass the SchNetPack model file inside it (e.g. best_model)")
    if not os.path.isfile(path):
        raise ModelFileError(
            f"no SchNetPack model file at {path}; pass the file written by torch.save (e.g. best_model)"
        )


#: option -> (jaxatom unit, examples)
_UNIT_OPTIONS = {"energy_unit": ("eV", "'eV', 'kcal/mol' or 'Ha'"), "position_unit": ("Ang", "'Ang' or 'Bohr'")}


def _factor(option: str, unit: str) -> float:
    """Factor from ``unit`` to eV (``energy_unit``) or Å (``position_unit``); a :class:`UnitError` naming the option
    if the unit is unknown or of the wrong kind."""
    target, examples = _UNIT_OPTIONS[option]
    try:
        return unit_factor(unit, target)
    except UnitError as err:
        raise UnitError(f"{option} {unit!r} cannot be used ({err}); pass e.g. {examples}") from err


def _unknown_energy_unit(why: str) -> UnitError:
    return UnitError(
        f"the energy unit of the model is unknown ({why}): pass the energy unit of its training data with "
        "--energy-unit (energy_unit= in Python), e.g. eV or kcal/mol"
    )


def _find_run_config(source) -> Path | None:
    """The ``config.yaml`` of the SchNetPack run a model file belongs to: in the file's directory, else its parent."""
    if not isinstance(source, str | os.PathLike):
        return None
    folder = Path(source).resolve().parent
    return next((d / "config.yaml" for d in (folder, folder.parent) if (d / "config.yaml").is_file()), None)


def _config_units(path: Path, energy_key: str) -> dict[str, str | None]:
    """Energy and length units of the training data in a SchNetPack run's ``config.yaml`` (Hydra, saved with its
    interpolations): ``data.property_units.<energy_key>`` and ``data.distance_unit``, None where absent.

    A :class:`ConfigError` if the file is not such a configuration or names a unit jaxatom does not know.
    """
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    keys = {"energy_unit": f"data.property_units.{energy_key}", "position_unit": "data.distance_unit"}
    try:
        config = OmegaConf.load(path)
        data = config.get("data") if isinstance(config, DictConfig) else None
        if not isinstance(data, DictConfig):
            raise ConfigError("it has no data section; is it a SchNetPack run configuration?")
        property_units = data.get("property_units")
        if not isinstance(property_units, DictConfig | None):
            raise ConfigError(f"data.property_units is {property_units!r}, not a mapping of property to unit")
        units = {"energy_unit": (property_units or {}).get(energy_key), "position_unit": data.get("distance_unit")}
        for option, unit in units.items():
            if isinstance(unit, str):
                _factor(option, unit)
            elif unit is not None:
                raise ConfigError(f"{keys[option]} is {unit!r}, not a unit name")
    except (YAMLError, OmegaConfBaseException, ConfigError, UnitError) as err:
        why = " ".join(str(err).split())
        raise ConfigError(f"cannot read the units of the training data from {path}: {why}") from err
    return units


def _units(given: dict[str, str | None], run_config: Path | None, energy_key: str) -> dict[str, str]:
    """The model's ``energy_unit`` and ``position_unit``: those given, else those of the run's ``config.yaml``; the
    length defaults to Å. Warns where a given unit disagrees with ``config.yaml``."""
    found: dict[str, str | None] = dict.fromkeys(given)
    if run_config is not None:
        try:
            found = _config_units(run_config, energy_key)
        except ConfigError as err:
            if None in given.values():
                raise ConfigError(f"{err}; correct it, or pass both --energy-unit and --position-unit") from err
            warnings.warn(f"{err}; using the units given", stacklevel=3)
    for option, unit in given.items():
        if unit is not None and found[option] is not None and _factor(option, unit) != _factor(option, found[option]):
            warnings.warn(f"using {option} {unit!r} as given, not {found[option]!r} from {run_config}", stacklevel=3)
    units = {option: given[option] or found[option] for option in given}
    if units["energy_unit"] is None:
        raise _unknown_energy_unit(f"{run_config} has no data.property_units.{energy_key}")
    return {**units, "position_unit": units["position_unit"] or "Ang"}


def _load(source, torch):
    if isinstance(source, torch.nn.Module):
        return source, None
    path = os.fspath(source)
    try:
        # SchNetPack saves whole modules with torch.save: loading unpickles code, so only import files you trust
        return torch.load(path, map_location="cpu", weights_only=False), path
    except Exception as err:  # torch.load raises many unrelated types on a file it cannot read
        raise ModelFileError(
            f"cannot read {path} as a SchNetPack model ({type(err).__name__}: {err}); pass the file written by "
            "torch.save (e.g. best_model)"
        ) from err


def import_model(
    source,
    energy_unit: str | None = None,
    position_unit: str | None = None,
    elements: Sequence[int | str] | None = None,
) -> Potential:
    """Convert a SchNetPack 2.x model (a file written by ``torch.save`` or a module) into a jaxatom potential.

    Args:
        source: path of a SchNetPack model file (e.g. ``best_model``), or the ``torch.nn.Module`` itself.
        energy_unit: unit of the model's energy output (that of its training data), e.g. ``"kcal/mol"``; default:
            from the run's ``config.yaml`` beside the model file, required without one (see the module docstring).
        position_unit: unit of the positions the model expects, e.g. ``"Ang"`` or ``"Bohr"``; default: from
            ``config.yaml``, else ``"Ang"``.
        elements: atomic numbers the model may be used for; default: those with reference energies, else all.

    Returns:
        A :class:`~jaxatom.Potential` in eV and Å whose energies and forces equal SchNetPack's.
    """
    given = {"energy_unit": energy_unit, "position_unit": position_unit}
    for option, unit in given.items():
        if unit is not None:
            _factor(option, unit)
    if elements is not None:
        elements = normalise_elements(elements)
    _check_source(source)
    run_config = _find_run_config(source)
    if energy_unit is None and run_config is None:
        raise _unknown_energy_unit("SchNetPack models carry no units, and no config.yaml of the run was found")
    torch, spk = _require_schnetpack()
    model, path = _load(source, torch)
    if not isinstance(model, spk.model.AtomisticModel):
        raise _refuse(f"a {type(model).__name__} (not a schnetpack AtomisticModel)")
    converters = {spk.representation.SchNet: _schnet, spk.representation.PaiNN: _painn}
    representation = getattr(model, "representation", None)
    if type(representation) not in converters:
        raise _refuse(f"the representation {type(representation).__name__}")
    atomwise, energy_key = _energy_modules(model, spk)
    units = _units(given, run_config, energy_key)
    energy, length = _factor("energy_unit", units["energy_unit"]), _factor("position_unit", units["position_unit"])
    rep_module, rep_params = converters[type(representation)](representation, length, torch, spk)
    head, head_params = _head(atomwise, torch, spk)
    shift, atomrefs = _offsets(model, energy_key, energy, spk)
    if elements is None:
        elements = sorted(atomrefs) or list(range(1, MAX_Z))
    potential = Potential.create(rep_module, elements=elements, head=head)
    params = {"params": {"representation": rep_params, head.key: head_params}}
    _check_structure(potential.params, params)
    return potential.replace(
        params=params,
        energy_scale=energy,
        energy_shift=shift,
        atomrefs=atomrefs,
        metadata={
            "imported_from": "schnetpack",
            "schnetpack_version": str(getattr(model, "spk_version", spk.__version__)),
            "source_file": path,
            "source_units": {"energy": units["energy_unit"], "length": units["position_unit"]},
        },
    )


def _check_structure(expected, found) -> None:
    """The converted parameters must have exactly the shapes jaxatom's module initialises."""
    import jax

    shapes = jax.tree.map(np.shape, expected)
    converted = jax.tree.map(np.shape, found)
    if shapes != converted:
        raise UnsupportedModelError(
            "the converted parameters do not match the jaxatom architecture (a SchNetPack variant jaxatom does not "
            f"know?): expected {shapes}, got {converted}"
        )
