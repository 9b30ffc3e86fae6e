"""Import SchNetPack 2.x models (``NeuralNetworkPotential`` with SchNet or PaiNN) as jaxatom potentials.

torch and schnetpack are needed only here, for reading the model; the imported :class:`~jaxatom.Potential` runs
without them. Supported, and converted exactly:

* representations ``SchNet`` and ``PaiNN`` (any sizes, shared interactions/filters), with ``GaussianRBF`` (fixed or
  trainable) or ``BesselRBF`` and ``CosineCutoff`` or ``MollifierCutoff``. The radial basis keeps SchNetPack's stored
  float32 Gaussian centres and widths, or Bessel frequencies: it becomes a trainable jaxatom basis holding them as
  parameters (jaxatom's fixed bases would recompute them in float64, off by about a float32 ulp), so training the
  imported model in jaxatom trains them too;
* output modules, each becoming the jaxatom head with the same math (weights mapped by position, parameters under the
  head's key):

  - ``Atomwise`` (any hidden layout, ``n_out``, ``sum``/``avg``/``None`` aggregation, ``per_atom_output_key``) →
    :class:`~jaxatom.nn.Atomwise` under SchNetPack's output key; the energy (the output ``Forces`` differentiates,
    else the one called ``energy``, else the only output of a model with one ``Atomwise`` and nothing else) becomes
    jaxatom's ``energy`` with per-atom ``energies``. With ``aggregation_mode=None`` the per-atom values are the
    output key (SchNetPack writes the same values under ``per_atom_output_key`` too);
  - ``DipoleMoment`` (with or without ``use_vector_representation``, ``predict_magnitude``, ``correct_charges``,
    ``return_charges``) → :class:`~jaxatom.nn.DipoleMoment` with SchNetPack's ``dipole_key`` and, with
    ``return_charges``, ``charges_key``;
  - ``Polarizability`` → :class:`~jaxatom.nn.Polarizability` with ``translation_invariant=False`` (SchNetPack uses
    absolute positions);
  - ``Forces`` (forces and stress, always jaxatom's ``forces``/``stress``) and ``ScaleProperty`` placed before it;
* input modules ``PairwiseDistances`` and ``Strain``; postprocessors ``AddOffsets`` (mean and per-element atomrefs of
  a scalar per-structure ``Atomwise`` output, ``is_extensive`` matching its aggregation), ``ScaleProperty`` (not on an
  energy whose forces SchNetPack computed before scaling) and ``CastTo32``/``CastTo64``. Scales and offsets of
  ``Atomwise`` outputs become their :class:`~jaxatom.potential.OutputScaling`; those of dipoles and polarizabilities,
  whose jaxatom heads take none, are folded into the head's last layer, like the units;
* the model's units, converted to jaxatom's (eV, Å, e·Å, e, Å³) and recorded in the model file.

Units: SchNetPack model files carry none; the model works in the units of its training data. Each unit is taken from,
in this order: the argument (``energy_unit``/``position_unit``, ``units={output key: unit}`` for the other outputs;
``--energy-unit``/``--position-unit`` on the command line); the ``config.yaml`` that ``spktrain`` writes into the run
directory, in the model file's directory or its parent (``data.property_units.<output key>`` and
``data.distance_unit``); for the length only, Å. A dipole's unit may also come from its charges' (dipole = charges ×
length). An argument that disagrees with ``config.yaml`` wins with a warning. An output whose unit is not known is
refused (e.g. pass ``--energy-unit`` or ``units={"dipole_moment": "Debye"}``; QM9's dipoles are in Debye and its
polarizabilities in Bohr³). An unreadable ``config.yaml`` is an error, or only a warning when every unit is given.

Charges: SchNetPack's latent charges are in the unit of dipole / length (e for e·Bohr with Bohr, 0.208 e for Debye
with Å); jaxatom's are in e, so that μ = Σ q r in e·Å. SchNetPack adds a structure's total charge (``total_charge``,
in e) to its charges in their own unit, jaxatom (``atoms.info["charge"]``) in e: for charged structures the two agree
only where that unit is e (dipoles in e·Bohr with Bohr, or e·Å with Å, unscaled); the import warns otherwise.

Anything else raises :class:`UnsupportedModelError` naming the module — there is no partial import.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxatom.errors import ConfigError, JaxAtomError
from jaxatom.nn import Atomwise, DipoleMoment, PaiNN, Polarizability, SchNet
from jaxatom.nn.schnet import MAX_Z
from jaxatom.potential import ModelFileError, OutputScaling, Potential
from jaxatom.potential.potential import normalise_elements
from jaxatom.properties import property_info
from jaxatom.units import UnitError, parse_unit, unit_factor

__all__ = ["import_model", "UnsupportedModelError", "MissingDependencyError", "SUPPORTED"]

SUPPORTED = (
    "NeuralNetworkPotential/AtomisticModel with a SchNet or PaiNN representation (GaussianRBF or BesselRBF, "
    "CosineCutoff or MollifierCutoff), output modules Atomwise, DipoleMoment, Polarizability, Forces and "
    "ScaleProperty, input modules PairwiseDistances/Strain and postprocessors AddOffsets/ScaleProperty/CastTo32/"
    "CastTo64"
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
    """A ``schnetpack.nn.Dense`` as flax ``Dense`` parameters (kernel = weight transposed, times ``scale``; a scaled
    kernel in float64, so that the product is not rounded to float32)."""
    kernel = _numpy(layer.weight).T
    params = {"kernel": kernel if scale == 1.0 else kernel.astype(np.float64) * scale}
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
    """Settings and parameters (SchNetPack's stored values) of the radial basis, in Å, and the factor its outputs gain
    from the unit change."""
    rbf = rep.radial_basis
    if type(rbf) is spk.nn.GaussianRBF:
        # the stored centres and widths (buffers or parameters) as parameters: a fixed jaxatom basis would recompute
        # them in float64, off SchNetPack's float32 values by about a float32 ulp
        offsets, widths = _numpy(rbf.offsets).astype(np.float64), _numpy(rbf.widths).astype(np.float64)
        settings = {"radial_basis": "gaussian", "n_rbf": int(rbf.n_rbf), "trainable_rbf": True}
        return settings, {"offsets": offsets * length, "widths": widths * length}, 1.0
    if type(rbf) is spk.nn.BesselRBF:
        # the stored float32 frequencies as parameters, likewise; sin(f d) / d gains a factor `length` when d is
        # measured in Å: absorbed into the next layer
        freqs = _numpy(rbf.freqs).astype(np.float64)
        settings = {"radial_basis": "bessel", "n_rbf": int(rbf.n_rbf), "rbf_cutoff": float(np.pi / freqs[0] * length),
                    "trainable_rbf": True}  # fmt: skip
        return settings, {"freqs": freqs / length}, length
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


def _scalar(tensor, what: str) -> float:
    """The one number in ``tensor`` (a buffer of shape ``[]`` or ``[1]``), float64."""
    values = _numpy(tensor).astype(np.float64).reshape(-1)
    if values.size != 1:
        raise _refuse(f"{what} with {values.size} values (one per output: jaxatom has one scale per output)")
    return float(values[0])


def _mlp(outnet, torch, spk, what: str) -> tuple[dict[str, Any], dict]:
    """Settings (``n_hidden``, ``n_layers``, ``activation``) and parameters (``layers_k``) of a ``build_mlp``."""
    layers = list(outnet)
    if not layers or not all(type(layer) is spk.nn.Dense for layer in layers):
        raise _refuse(f"{what} whose network is not a sequence of schnetpack.nn.Dense layers")
    names = {_activation(layer.activation, torch, spk) for layer in layers[:-1]}
    if len(names) > 1 or type(layers[-1].activation) is not torch.nn.Identity:
        raise _refuse(f"{what} whose network mixes activations or activates its output")
    settings = {"n_hidden": tuple(int(layer.out_features) for layer in layers[:-1]), "n_layers": len(layers),
                "activation": names.pop() if names else "silu"}  # fmt: skip
    return settings, {f"layers_{k}": _dense(layer) for k, layer in enumerate(layers)}


def _gated_mlp(outnet, torch, spk, what: str) -> tuple[dict[str, Any], dict]:
    """Settings and parameters (``blocks_k/{mix_vectors, scalar_net_0, scalar_net_1}``) of a
    ``build_gated_equivariant_mlp`` with its default gating widths (those of the blocks' inputs)."""
    blocks = list(outnet)
    if not blocks or not all(type(block) is spk.nn.GatedEquivariantBlock for block in blocks):
        raise _refuse(f"{what} whose network is not a sequence of GatedEquivariantBlocks")
    activation = _activation(blocks[0].scalar_net[0].activation, torch, spk)
    for k, block in enumerate(blocks):
        last = k == len(blocks) - 1
        inner = [_activation(block.scalar_net[0].activation, torch, spk)]
        if not last:
            inner.append(_activation(block.sactivation, torch, spk) if block.sactivation else "none")
        if (inner != [activation] * len(inner) or (last and block.sactivation) or block.n_vin != block.n_sin
                or block.n_hidden != block.n_sin or block.n_sout != block.n_vout
                or type(block.scalar_net[1].activation) is not torch.nn.Identity):  # fmt: skip
            raise _refuse(
                f"{what} with a gated block {k} that build_gated_equivariant_mlp does not make (gating width, "
                "activations)"
            )
    params = {
        f"blocks_{k}": {
            "mix_vectors": _dense(block.mix_vectors),
            "scalar_net_0": _dense(block.scalar_net[0]),
            "scalar_net_1": _dense(block.scalar_net[1]),
        }
        for k, block in enumerate(blocks)
    }
    settings = {"n_hidden": tuple(int(block.n_sout) for block in blocks[:-1]), "n_layers": len(blocks),
                "activation": activation}  # fmt: skip
    return settings, params


@dataclasses.dataclass
class _Output:
    """One SchNetPack output module and what the import makes of it."""

    module: Any
    kind: str  # "atomwise", "dipole" or "polarizability"
    key: str  # SchNetPack's key of its main output
    name: str  # jaxatom's name of it ("energy" for the energy)
    scale: float = 1.0  # ScaleProperty and AddOffsets, in the model's unit of the output
    shift: float = 0.0
    atomrefs: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(MAX_Z))

    @property
    def side_key(self) -> str | None:
        """SchNetPack's key of the module's second output (per-atom values or charges), if it writes one."""
        if self.kind == "atomwise":
            return self.module.per_atom_output_key
        if self.kind == "dipole" and self.module.return_charges:
            return self.module.charges_key
        return None

    @property
    def aggregation(self) -> str | None:
        return self.module.aggregation_mode if self.kind == "atomwise" else "sum"

    @property
    def scalar_per_structure(self) -> bool:
        return (
            self.kind == "atomwise"
            and self.aggregation is not None
            and getattr(self.module.outnet[-1], "out_features", None) == 1
        )


_HEAD_KEYS = {"atomwise": "output_key", "dipole": "dipole_key", "polarizability": "polarizability_key"}


def _check_inputs(model, spk) -> None:
    allowed_inputs = (spk.atomistic.PairwiseDistances, spk.atomistic.Strain)
    inputs = list(getattr(model, "input_modules", []))
    for module in inputs:
        if type(module) not in allowed_inputs:
            raise _refuse(f"the input module {type(module).__name__}")
    if not any(type(m) is spk.atomistic.PairwiseDistances for m in inputs):
        raise _refuse("a model without a PairwiseDistances input module")


def _outputs(model, spk) -> tuple[list[_Output], _Output | None]:
    """The output heads (the energy, if any, named ``energy``), with the scales and offsets of the ``ScaleProperty``
    output modules and the postprocessors applied in SchNetPack's order."""
    kinds = {spk.atomistic.Atomwise: "atomwise", spk.atomistic.DipoleMoment: "dipole",
             spk.atomistic.Polarizability: "polarizability"}  # fmt: skip
    outputs: list[_Output] = []
    scalings: list[tuple[Any, bool]] = []  # (ScaleProperty or AddOffsets, after a Forces module)
    forces_keys: list[str] = []
    for module in model.output_modules:
        kind = kinds.get(type(module))
        if kind is not None:
            key = getattr(module, _HEAD_KEYS[kind])
            outputs.append(_Output(module, kind, key, key))
        elif type(module) is spk.atomistic.Forces:
            forces_keys.append(module.energy_key)
        elif type(module) is spk.transform.ScaleProperty:
            scalings.append((module, bool(forces_keys)))
        else:
            raise _refuse(f"the output module {type(module).__name__}")
    if not outputs:
        raise _refuse("a model without an Atomwise, DipoleMoment or Polarizability output module")
    energy = _energy_output(outputs, forces_keys)
    ignored = (spk.transform.CastTo32, spk.transform.CastTo64)
    for module in getattr(model, "postprocessors", []):
        if type(module) in (spk.transform.ScaleProperty, spk.transform.AddOffsets):
            scalings.append((module, bool(forces_keys)))
        elif type(module) not in ignored:
            raise _refuse(f"the postprocessor {type(module).__name__}")
    by_key = {key: (output, key == output.key) for output in outputs for key in (output.side_key, output.key) if key}
    for module, after_forces in scalings:
        if type(module) is spk.transform.ScaleProperty:
            _scale(module, by_key, after_forces and energy is not None)
        else:
            _add_offsets(module, by_key)
    return outputs, energy


def _energy_output(outputs: list[_Output], forces_keys: list[str]) -> _Output | None:
    """The energy head: the Atomwise ``Forces`` differentiates, else the one called ``energy``, else the only output
    of a model with one scalar per-structure Atomwise (as before heads were named); None for models without."""
    atomwise = [output for output in outputs if output.kind == "atomwise"]
    if len(set(forces_keys)) > 1:
        raise _refuse(f"Forces modules differentiating several outputs ({', '.join(sorted(set(forces_keys)))})")
    if forces_keys:
        energy = next((output for output in atomwise if output.key == forces_keys[0]), None)
        if energy is None:
            raise _refuse(f"a Forces module differentiating {forces_keys[0]!r}, which no Atomwise head predicts")
    else:
        energy = next((output for output in atomwise if output.key == "energy"), None)
        if energy is None and len(outputs) == 1 and atomwise and atomwise[0].scalar_per_structure:
            energy = atomwise[0]
    if energy is None:
        return None
    if not energy.scalar_per_structure:
        mode = energy.module.aggregation_mode
        raise _refuse(
            f"the energy Atomwise {energy.key!r} with {energy.module.outnet[-1].out_features} outputs and "
            f"aggregation_mode={mode!r} (one output, sum or avg)"
        )
    energy.name = "energy"
    return energy


def _scale(module, by_key: dict[str, tuple[_Output, bool]], after_forces: bool) -> None:
    """A ``ScaleProperty``: the output's scale and offsets so far times its scale."""
    if module.input_key != module.output_key:
        raise _refuse(f"ScaleProperty from {module.input_key!r} into another output {module.output_key!r}")
    scale = _scalar(module.scale, f"ScaleProperty on {module.input_key!r}")
    if scale == 1.0:
        return
    if module.input_key not in by_key:
        raise _refuse(f"ScaleProperty on {module.input_key!r}, which no output module predicts")
    output, main = by_key[module.input_key]
    if not main:
        raise _refuse(
            f"ScaleProperty on {module.input_key!r}, the per-atom values or charges of {output.key!r} (jaxatom scales "
            f"them with {output.key!r}, as the values that make it)"
        )
    if output.name == "energy" and after_forces:
        raise _refuse(
            f"ScaleProperty on the energy {output.key!r} after Forces: SchNetPack's forces are then not the gradient "
            "of its energy, and jaxatom's always are"
        )
    if output.kind == "dipole" and output.module.predict_magnitude and scale < 0:
        raise _refuse(f"ScaleProperty by {scale} of the dipole magnitude {output.key!r} (a norm scaled by a negative)")
    output.scale *= scale
    output.shift *= scale
    output.atomrefs = output.atomrefs * scale


def _add_offsets(module, by_key: dict[str, tuple[_Output, bool]]) -> None:
    """An ``AddOffsets``: mean per atom and per-element references added to a scalar per-structure Atomwise output."""
    key = module._property
    output, main = by_key.get(key, (None, False))
    if output is None or not main or not output.scalar_per_structure:
        raise _refuse(f"AddOffsets on {key!r} (only on scalar per-structure Atomwise outputs, such as the energy)")
    extensive = bool(getattr(module, "is_extensive", True))
    if extensive != (output.aggregation == "sum"):
        raise _refuse(
            f"AddOffsets with is_extensive={extensive} on {key!r}, aggregated by {output.aggregation!r} (jaxatom sums "
            "the offsets of summed outputs and averages those of averaged ones)"
        )
    if module.add_mean:
        output.shift += _scalar(module.mean, f"AddOffsets on {key!r} with a mean")
    if module.add_atomrefs:
        table = _numpy(module.atomref).astype(np.float64).reshape(-1)[:MAX_Z]
        output.atomrefs = output.atomrefs.copy()
        output.atomrefs[: len(table)] += table


def _head(output: _Output, torch, spk) -> tuple[Any, dict]:
    """The jaxatom head of a SchNetPack output module and its parameters (in the model's units)."""
    module = output.module
    what = f"the {type(module).__name__} head {output.key!r}"
    if output.kind == "atomwise":
        settings, params = _mlp(module.outnet, torch, spk, what)
        aggregation = module.aggregation_mode
        if aggregation not in ("sum", "avg", None):
            raise _refuse(f"{what} with aggregation_mode={aggregation!r} (sum, avg or None)")
        if output.name == "energy":
            per_atom = "energies"
        else:
            side = module.per_atom_output_key
            per_atom = side if aggregation is not None and side != output.key else None
        head = Atomwise(n_out=int(module.outnet[-1].out_features), aggregation=aggregation, output_key=output.name,
                        per_atom_output_key=per_atom, **settings)  # fmt: skip
        return head, {"outnet": params}
    if output.kind == "dipole":
        vector = bool(module.use_vector_representation)
        settings, params = (_gated_mlp if vector else _mlp)(module.outnet, torch, spk, what)
        head = DipoleMoment(
            predict_magnitude=bool(module.predict_magnitude), use_vector_representation=vector,
            correct_charges=bool(module.correct_charges), dipole_key=module.dipole_key,
            charges_key=module.charges_key if module.return_charges else None, **settings,
        )  # fmt: skip
        return head, {"outnet": params}
    settings, params = _gated_mlp(module.outnet, torch, spk, what)
    head = Polarizability(polarizability_key=module.polarizability_key, translation_invariant=False, **settings)
    return head, {"outnet": params}


def _fold(params: dict, vector: bool, scalar_factor: float, vector_factor: float) -> dict:
    """Scale a head's last layer: its scalar output by ``scalar_factor`` and, for gated networks, the gate of its
    vector output by ``vector_factor`` (float64, so the product is not rounded to float32)."""
    outnet = params["outnet"]
    last = outnet[max(outnet, key=lambda name: int(name.rsplit("_", 1)[1]))]
    layer = last["scalar_net_1"] if vector else last
    factors = np.array([scalar_factor, vector_factor] if vector else [scalar_factor])
    layer["kernel"] = layer["kernel"].astype(np.float64) * factors
    layer["bias"] = layer["bias"].astype(np.float64) * factors
    return params


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
#: jaxatom's unit of each kind of head output, and examples of SchNetPack's
_HEAD_UNITS = {"dipole": ("e*Ang", "'Debye', 'e*Bohr' or 'e*Ang'"), "polarizability": ("Ang^3", "'Bohr^3' or 'Ang^3'")}


def _factor(option: str, unit: str) -> float:
    """Factor from ``unit`` to eV (``energy_unit``) or Å (``position_unit``); a :class:`UnitError` naming the option
    if the unit is unknown or of the wrong kind."""
    target, examples = _UNIT_OPTIONS[option]
    try:
        return unit_factor(unit, target)
    except UnitError as err:
        raise UnitError(f"{option} {unit!r} cannot be used ({err}); pass e.g. {examples}") from err


def _output_factor(key: str, unit: str, target: str, examples: str) -> float:
    """Factor from ``unit`` to ``target`` for the output ``key``; a :class:`UnitError` naming it otherwise."""
    try:
        return unit_factor(unit, target)
    except UnitError as err:
        raise UnitError(
            f"the unit {unit!r} of the output {key!r} cannot be used ({err}); pass e.g. {examples}"
        ) from err


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


def _config_units(path: Path, energy_key: str | None, keys: Sequence[str]) -> dict[str, str | None]:
    """Units of the training data in a SchNetPack run's ``config.yaml`` (Hydra, saved with its interpolations):
    ``energy_unit`` (``data.property_units.<energy_key>``), ``position_unit`` (``data.distance_unit``) and one per
    output key (``data.property_units.<key>``), None where absent.

    A :class:`ConfigError` if the file is not such a configuration or names a unit jaxatom does not know.
    """
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    entries = {"energy_unit": f"data.property_units.{energy_key}", "position_unit": "data.distance_unit",
               **{key: f"data.property_units.{key}" for key in keys}}  # fmt: skip
    try:
        config = OmegaConf.load(path)
        data = config.get("data") if isinstance(config, DictConfig) else None
        if not isinstance(data, DictConfig):
            raise ConfigError("it has no data section; is it a SchNetPack run configuration?")
        property_units = data.get("property_units")
        if not isinstance(property_units, DictConfig | None):
            raise ConfigError(f"data.property_units is {property_units!r}, not a mapping of property to unit")
        property_units = property_units or {}
        units = {
            "energy_unit": property_units.get(energy_key) if energy_key is not None else None,
            "position_unit": data.get("distance_unit"),
            **{key: property_units.get(key) for key in keys},
        }
        for option, unit in units.items():
            if isinstance(unit, str):
                _factor(option, unit) if option in _UNIT_OPTIONS else parse_unit(unit)
            elif unit is not None:
                raise ConfigError(f"{entries[option]} is {unit!r}, not a unit name")
    except (YAMLError, OmegaConfBaseException, ConfigError, UnitError) as err:
        why = " ".join(str(err).split())
        raise ConfigError(f"cannot read the units of the training data from {path}: {why}") from err
    return units


def _units(
    given: dict[str, str | None], run_config: Path | None, energy_key: str | None, optional: Sequence[str] = ()
) -> dict[str, str | None]:
    """The model's units, by option (``energy_unit``, ``position_unit``) and output key: those given, else those of
    the run's ``config.yaml``, None where neither names one; the length defaults to Å. Warns where a given unit
    disagrees with ``config.yaml``, which, unreadable, is an error unless every unit not ``optional`` is given."""
    keys = [key for key in given if key not in _UNIT_OPTIONS]
    found: dict[str, str | None] = dict.fromkeys(given)
    if run_config is not None:
        try:
            found = _config_units(run_config, energy_key, keys)
        except ConfigError as err:
            needed = [key for key in given if key not in optional and (key != "energy_unit" or energy_key)]
            if any(given[key] is None for key in needed):
                others = [key for key in keys if key in needed and given[key] is None]
                extra = f" and units={{{', '.join(repr(key) + ': ...' for key in others)}}}" if others else ""
                raise ConfigError(f"{err}; correct it, or pass both --energy-unit and --position-unit{extra}") from err
            warnings.warn(f"{err}; using the units given", stacklevel=3)
    for option, unit in given.items():
        if unit is None or found[option] is None:
            continue
        if option in _UNIT_OPTIONS:
            same = _factor(option, unit) == _factor(option, found[option])
        else:
            same = _same_unit(unit, found[option])
        if not same:
            where = option if option in _UNIT_OPTIONS else f"the unit of {option!r}"
            warnings.warn(f"using {where} {unit!r} as given, not {found[option]!r} from {run_config}", stacklevel=3)
    units = {option: given[option] or found[option] for option in given}
    return {**units, "position_unit": units["position_unit"] or "Ang"}


def _same_unit(a: str, b: str) -> bool:
    first, second = parse_unit(a), parse_unit(b)
    return first.dimension == second.dimension and first.value == second.value


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
    units: Mapping[str, str] | None = None,
) -> Potential:
    """Convert a SchNetPack 2.x model (a file written by ``torch.save`` or a module) into a jaxatom potential.

    Args:
        source: path of a SchNetPack model file (e.g. ``best_model``), or the ``torch.nn.Module`` itself.
        energy_unit: unit of the model's energy output (that of its training data), e.g. ``"kcal/mol"``; default:
            from the run's ``config.yaml`` beside the model file, required for a model with an energy without one
            (see the module docstring).
        position_unit: unit of the positions the model expects, e.g. ``"Ang"`` or ``"Bohr"``; default: from
            ``config.yaml``, else ``"Ang"``.
        elements: atomic numbers the model may be used for; default: those with reference energies, else all.
        units: unit of each other output by SchNetPack key, e.g. ``{"dipole_moment": "Debye", "polarizability":
            "Bohr^3"}``; default: from ``config.yaml``. Outputs jaxatom knows by name (see
            :mod:`jaxatom.properties`), dipoles, charges and polarizabilities are converted to jaxatom's units,
            others to jaxatom's unit of their kind (e.g. a gap in Ha to eV) if it has one (else they keep theirs).

    Returns:
        A :class:`~jaxatom.Potential` in jaxatom's units whose outputs equal SchNetPack's: energies and forces in eV
        and Å, dipoles in e·Å, charges in e, polarizabilities in Å³.
    """
    given: dict[str, str | None] = {"energy_unit": energy_unit, "position_unit": position_unit}
    for option, unit in given.items():
        if unit is not None:
            _factor(option, unit)
    for key, unit in (units or {}).items():
        try:
            parse_unit(unit)
        except UnitError as err:
            raise UnitError(f"the unit {unit!r} given for {key!r} cannot be used: {err}") from err
    if elements is not None:
        elements = normalise_elements(elements)
    _check_source(source)
    run_config = _find_run_config(source)
    torch, spk = _require_schnetpack()
    model, path = _load(source, torch)
    if not isinstance(model, spk.model.AtomisticModel):
        raise _refuse(f"a {type(model).__name__} (not a schnetpack AtomisticModel)")
    converters = {spk.representation.SchNet: _schnet, spk.representation.PaiNN: _painn}
    representation = getattr(model, "representation", None)
    if type(representation) not in converters:
        raise _refuse(f"the representation {type(representation).__name__}")
    _check_inputs(model, spk)
    outputs, energy = _outputs(model, spk)
    found = _model_units(given, dict(units or {}), run_config, outputs, energy)
    length = _factor("position_unit", found["position_unit"])
    rep_module, rep_params = converters[type(representation)](representation, length, torch, spk)
    heads, params, scaling, source_units = [], {"representation": rep_params}, {}, {}
    for output in outputs:
        head, head_params = _head(output, torch, spk)
        factor, unit = _convert(output, found, length)
        if output.kind == "atomwise":
            if output.name != "energy" and property_info(output.name) is None:
                head = head.clone(unit=_internal_unit(unit))  # a property jaxatom does not know by name
            table = output.atomrefs * factor
            atomrefs = {int(z): float(table[z]) for z in np.nonzero(table)[0]}
            if (output.scale * factor, output.shift, atomrefs) != (1.0, 0.0, {}):
                scaling[output.name] = OutputScaling(output.scale * factor, output.shift * factor, atomrefs)
        elif output.kind == "dipole":  # μ = Σ q r + Σ d: charges in (dipole unit)/length, atomic dipoles
            factor *= output.scale
            head_params = _fold(head_params, head.use_vector_representation, factor / length, factor)
        else:  # α = Σ a 1 + v r^T + r v^T: the isotropic part in α's unit, v in α's unit per length
            factor *= output.scale
            head_params = _fold(head_params, True, factor, factor / length)
        heads.append(head)
        params[head.key] = head_params
        if output.name != "energy":
            source_units[output.key] = unit
    if elements is None:
        elements = sorted(scaling["energy"].atomrefs) if "energy" in scaling else []
        elements = elements or list(range(1, MAX_Z))
    try:
        potential = Potential.create(rep_module, elements=elements, heads=heads)
    except ConfigError as err:
        raise _refuse(f"these output heads together ({err})") from err
    params = {"params": params}
    _check_structure(potential.params, params)
    _warn_total_charge(outputs, found, length)
    return potential.replace(
        params=params,
        scaling=scaling,
        metadata={
            "imported_from": "schnetpack",
            "schnetpack_version": str(getattr(model, "spk_version", spk.__version__)),
            "source_file": path,
            "source_units": {
                "energy": found.get("energy_unit") if energy else None,
                "length": found["position_unit"],
                **source_units,
            },
            "source_outputs": {output.name: output.key for output in outputs},
        },
    )


def _model_units(given, units: dict[str, str], run_config, outputs: list[_Output], energy) -> dict[str, str | None]:
    """The unit of the energy, the length and every other output: given, else from ``config.yaml``; a
    :class:`UnitError` naming what to pass for any that stays unknown."""
    keys = [key for output in outputs if output is not energy for key in (output.key, output.side_key) if key]
    unknown = sorted(set(units) - set(keys) - ({energy.key} if energy else set()))
    if unknown:
        predicted = ", ".join(repr(output.key) for output in outputs)
        raise ConfigError(
            f"units names {', '.join(map(repr, unknown))}, which the model does not predict ({predicted})"
        )
    if energy is not None and energy.key in units:
        if given["energy_unit"] is not None and not _same_unit(given["energy_unit"], units[energy.key]):
            raise ConfigError(f"energy_unit {given['energy_unit']!r} and units[{energy.key!r}] disagree; pass one")
        given = {**given, "energy_unit": units[energy.key]}
        _factor("energy_unit", given["energy_unit"])
    given = {**given, **{key: units.get(key) for key in keys}}
    if energy is not None and given["energy_unit"] is None and run_config is None:
        raise _unknown_energy_unit("SchNetPack models carry no units, and no config.yaml of the run was found")
    sides = [
        output.side_key for output in outputs if output is not energy and output.side_key not in (None, output.key)
    ]
    found = _units(given, run_config, energy.key if energy else None, optional=sides)
    if energy is not None and found["energy_unit"] is None:
        raise _unknown_energy_unit(f"{run_config} has no data.property_units.{energy.key}")
    missing = []
    for output in outputs:
        if output is energy:
            continue
        if found[output.key] is None and not (output.kind != "polarizability" and found.get(output.side_key or "")):
            missing.append(output)
    if missing:
        why = (f"{run_config} names none in data.property_units" if run_config
               else "SchNetPack models carry no units, and no config.yaml of the run was found")  # fmt: skip
        examples = ", ".join(
            f"{output.key!r}: {_HEAD_UNITS[output.kind][1].split(',')[0] if output.kind in _HEAD_UNITS else '...'}"
            for output in missing
        )
        raise UnitError(
            f"the unit of the model's output {', '.join(repr(output.key) for output in missing)} is unknown ({why}): "
            f"pass it with units={{{examples}}} in Python, or name it in data.property_units of the run's config.yaml"
        )
    return found


def _convert(output: _Output, found: dict[str, str | None], length: float) -> tuple[float, str]:
    """Factor from the model's unit of an output to jaxatom's, and the model's unit."""
    if output.name == "energy":
        return _factor("energy_unit", found["energy_unit"]), found["energy_unit"]
    unit = found[output.key]
    if output.kind in _HEAD_UNITS:
        target, examples = _HEAD_UNITS[output.kind]
        if unit is None:  # a dipole from its charges: (charge unit) * length
            charge = found[output.side_key]
            return _output_factor(output.side_key, charge, "e", "'e'") * length, f"{charge}*{found['position_unit']}"
        return _output_factor(output.key, unit, target, examples), unit
    unit = unit or found[output.side_key]  # an Atomwise's unit may be named by its per-atom key
    info = property_info(output.name)
    if info is not None:
        return _output_factor(output.key, unit, info.unit, repr(info.unit)), unit
    return unit_factor(unit, _internal_unit(unit)), unit


#: jaxatom's units, for outputs it does not know by name: one of the same kind is converted to it
_INTERNAL = ("eV", "eV/Ang", "eV/Ang^3", "Ang", "amu", "fs", "e", "e*Ang", "Ang^3", "1")


def _internal_unit(unit: str) -> str:
    """jaxatom's unit of the kind of ``unit`` (e.g. eV for Ha), else ``unit`` itself."""
    dimension = parse_unit(unit).dimension
    return next((internal for internal in _INTERNAL if parse_unit(internal).dimension == dimension), unit)


def _warn_total_charge(outputs: list[_Output], found: dict[str, str | None], length: float) -> None:
    """Warn where SchNetPack adds the total charge (e) to charges in another unit (see the module docstring)."""
    for output in outputs:
        if output.kind != "dipole" or not output.module.correct_charges:
            continue
        charge_factor = _convert(output, found, length)[0] * output.scale / length
        if abs(charge_factor - 1.0) > 1e-12:
            warnings.warn(
                f"SchNetPack's {output.key!r} head adds each structure's total charge to charges in units of "
                f"{charge_factor:.6g} e (its dipole unit per length unit, times its scale), jaxatom to charges in e: "
                "for charged structures the imported dipoles and charges differ from SchNetPack's (neutral ones agree)",
                stacklevel=3,
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
