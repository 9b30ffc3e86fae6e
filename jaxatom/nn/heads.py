"""Output heads: each turns a representation's features into named predictions and declares them as outputs.

A head is a ``flax.linen`` module called as ``head(features, graph) -> {name: array}``, where ``features`` holds
``scalar [N, F]`` and, for equivariant representations, ``vector [N, 3, F]``. It declares what it returns with
``head.outputs`` (:class:`OutputSpec`: per structure ``[G, ...]`` or per atom ``[N, ...]``, shape, unit, aggregation)
and names its parameters ``head.key``. The heads follow SchNetPack 2.x numerically (``Atomwise``, ``DipoleMoment``,
``Polarizability``), so SchNetPack models import. Outputs are raw: a :class:`~jaxatom.potential.Potential` applies
its per-output scale and offsets (``OutputSpec.scaling``) on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxatom.errors import ConfigError
from jaxatom.graph import Graph
from jaxatom.nn.activations import ACTIVATIONS, get_activation
from jaxatom.nn.checks import choice_problems, count_problems
from jaxatom.nn.layers import MLP, Dense, pyramid_widths, safe_norm
from jaxatom.properties import property_unit

__all__ = [
    "OutputSpec",
    "Atomwise",
    "DipoleMoment",
    "Polarizability",
    "GatedEquivariantMLP",
    "AGGREGATIONS",
    "check_head",
    "atom_fidelities",
]

AGGREGATIONS = ("sum", "avg")


@dataclass(frozen=True)
class OutputSpec:
    """One named model output.

    Attributes:
        name: the output's key, e.g. ``"energy"``, ``"charges"``.
        per_atom: one value per atom (``[N, *shape]``), else one per structure (``[G, *shape]``).
        shape: the shape of one value, ``()`` for scalars.
        unit: its unit (jaxatom's unit for known properties).
        aggregation: how atom contributions make a per-structure value: ``"sum"`` (extensive), ``"avg"``
            (intensive), or None (per-atom outputs and tensors built otherwise).
        scaling: the name of the per-output scale and offsets (:class:`~jaxatom.potential.OutputScaling`) that apply
            to it (the energy's also apply to per-atom energies), or None if none may.
        fidelities: the levels of theory the output is predicted at, cheapest first (the last is the target), as
            chosen per structure by ``Graph.fidelity``; empty for single-fidelity outputs.
    """

    name: str
    per_atom: bool
    shape: tuple[int, ...]
    unit: str
    aggregation: str | None = None
    scaling: str | None = None
    fidelities: tuple[str, ...] = ()


def _hidden_problems(n_hidden) -> list[str]:
    widths = [] if n_hidden is None else list(n_hidden) if isinstance(n_hidden, Sequence) else [n_hidden]
    if any(count_problems("n_hidden", width) for width in widths):
        return [f"n_hidden must be None, a positive integer or a list of them, got {n_hidden!r}"]
    return []


def _key_problems(**keys: str | None) -> list[str]:
    return [f"{name} must be a non-empty string, got {key!r}" for name, key in keys.items()
            if key is not None and not (isinstance(key, str) and key)]  # fmt: skip


def _fidelity_problems(fidelities) -> list[str]:
    names = list(fidelities) if isinstance(fidelities, Sequence) and not isinstance(fidelities, str) else None
    if names is None or not all(isinstance(name, str) and name for name in names):
        return [f"fidelities must be a list of names (cheapest first), got {fidelities!r}"]
    if len(names) == 1 or len(set(names)) != len(names):
        return [f"fidelities must name two or more different levels of theory (or none), got {names}"]
    return []


def check_head(head: nn.Module) -> None:
    """Raise a :class:`ConfigError` listing every unusable setting of a head."""
    problems = count_problems("n_layers", head.n_layers) + _hidden_problems(head.n_hidden)
    problems += choice_problems("activation", head.activation, tuple(ACTIVATIONS))
    if isinstance(head, Atomwise):
        problems += count_problems("n_out", head.n_out)
        if head.aggregation is not None:
            problems += choice_problems("aggregation", head.aggregation, AGGREGATIONS)
        problems += _key_problems(output_key=head.output_key, per_atom_output_key=head.per_atom_output_key)
        if head.output_key == head.per_atom_output_key:
            problems.append(f"output_key and per_atom_output_key are both {head.output_key!r}; give them two names")
        problems += _fidelity_problems(head.fidelities)
    if isinstance(head, DipoleMoment):
        problems += _key_problems(dipole_key=head.dipole_key, charges_key=head.charges_key)
    if isinstance(head, Polarizability):
        problems += _key_problems(polarizability_key=head.polarizability_key)
    if problems:
        raise ConfigError(f"invalid {type(head).__name__} settings: " + "; ".join(problems))


class Atomwise(nn.Module):
    """SchNetPack's ``Atomwise``: an MLP on each atom's scalar features, summed (``"sum"``, extensive) or averaged
    (``"avg"``, intensive) per structure — energies, QM9's targets, any scalar or vector property.

    ``n_hidden=None`` gives the pyramidal MLP (width halves per layer). Outputs ``output_key`` per structure
    (``[G]`` for ``n_out == 1``, else ``[G, n_out]``) and, with ``per_atom_output_key``, the atom contributions
    (``[N]`` or ``[N, n_out]``). With ``aggregation=None`` the head predicts a per-atom target (partial charges,
    magnetic moments) and returns it as ``output_key``. ``unit`` defaults to jaxatom's unit of ``output_key``.

    ``fidelities`` (names, cheapest first; the last is the target) makes it a multi-fidelity head: the last layer
    has ``n_out`` columns per fidelity and each atom takes those of its structure's ``graph.fidelity`` (the target's
    when None). :meth:`single_fidelity` cuts out one fidelity as an ordinary head.
    """

    n_out: int = 1
    n_hidden: int | Sequence[int] | None = None
    n_layers: int = 2
    activation: str = "silu"
    aggregation: str | None = "sum"
    output_key: str = "energy"
    per_atom_output_key: str | None = None
    unit: str | None = None
    fidelities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_head(self)
        super().__post_init__()

    @property
    def key(self) -> str:
        return self.output_key

    def _widths(self, n_features: int) -> list[int]:
        """The MLP's layer widths: SchNetPack's pyramid for ``n_out``, the last layer ``n_out`` per fidelity."""
        widths = pyramid_widths(n_features, self.n_out, self.n_hidden, self.n_layers)
        return [*widths[:-1], self.n_out * max(len(self.fidelities), 1)]

    def single_fidelity(self, params: dict, fidelity: int) -> tuple[Atomwise, dict]:
        """This head at fidelity index ``fidelity`` as a single-fidelity head, with its parameters ``params`` (the
        head's subtree): the last layer's columns of that fidelity. It predicts exactly what this head predicts for
        structures of that fidelity."""
        last = max(params["outnet"], key=lambda name: int(name.rsplit("_", 1)[1]))
        columns = slice(fidelity * self.n_out, (fidelity + 1) * self.n_out)
        layer = params["outnet"][last]
        cut = {**layer, "kernel": layer["kernel"][:, columns], "bias": layer["bias"][columns]}
        return self.clone(fidelities=()), {**params, "outnet": {**params["outnet"], last: cut}}

    @property
    def outputs(self) -> tuple[OutputSpec, ...]:
        shape = () if self.n_out == 1 else (self.n_out,)
        unit = self.unit or property_unit(self.output_key)
        fidelities = tuple(self.fidelities)
        if self.aggregation is None:
            return (OutputSpec(self.output_key, True, shape, unit, None, self.output_key, fidelities),)
        specs = [OutputSpec(self.output_key, False, shape, unit, self.aggregation, self.output_key, fidelities)]
        if self.per_atom_output_key is not None:
            specs.append(OutputSpec(self.per_atom_output_key, True, shape, unit, None, self.output_key, fidelities))
        return tuple(specs)

    @nn.compact
    def __call__(self, features: dict[str, jax.Array], graph: Graph) -> dict[str, jax.Array]:
        x = features["scalar"]
        y = MLP(self._widths(x.shape[-1]), self.activation, name="outnet")(x)
        if self.fidelities:
            columns = y.reshape(y.shape[0], len(self.fidelities), self.n_out)
            rows = atom_fidelities(graph, len(self.fidelities))
            y = jnp.take_along_axis(columns, rows[:, None, None], axis=1)[:, 0]
        y = y * graph.node_mask[:, None]
        squeeze = (lambda a: a[..., 0]) if self.n_out == 1 else (lambda a: a)
        if self.aggregation is None:
            return {self.output_key: squeeze(y)}
        total = _aggregate(y, graph, self.aggregation)
        out = {self.output_key: squeeze(total)}
        if self.per_atom_output_key is not None:
            out[self.per_atom_output_key] = squeeze(y)
        return out


def atom_fidelities(graph: Graph, n_fidelities: int) -> jax.Array:
    """``[N]`` fidelity index of each atom's structure (``graph.fidelity``; the target, ``n_fidelities - 1``, when
    None), clipped into range."""
    if graph.fidelity is None:
        return jnp.full(graph.species.shape, n_fidelities - 1, jnp.int32)
    return jnp.clip(graph.fidelity[graph.node_graph], 0, n_fidelities - 1)


def _aggregate(per_atom: jax.Array, graph: Graph, aggregation: str = "sum") -> jax.Array:
    """Sum (or average, ``"avg"``) per-atom values ``[N, ...]`` over each structure: ``[G, ...]``."""
    total = jax.ops.segment_sum(per_atom, graph.node_graph, num_segments=graph.n_graph)
    if aggregation == "avg":
        count = jnp.maximum(graph.n_node, 1).astype(total.dtype)
        total = total / count.reshape((-1,) + (1,) * (total.ndim - 1))
    return total


class GatedEquivariantBlock(nn.Module):
    """PaiNN's gated equivariant block: scalars ``[N, Fs]`` and vectors ``[N, 3, Fv]`` to ``n_sout`` scalars and
    ``n_vout`` vectors; vectors are gated by scalars computed from the scalars and the vector norms."""

    n_sout: int
    n_vout: int
    n_hidden: int
    activation: str = "silu"
    scalar_activation: bool = False

    @nn.compact
    def __call__(self, scalars: jax.Array, vectors: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = get_activation(self.activation)
        mixed = Dense(2 * self.n_vout, use_bias=False, name="mix_vectors")(vectors)
        v_gate, v_out = mixed[..., : self.n_vout], mixed[..., self.n_vout :]
        context = jnp.concatenate([scalars, safe_norm(v_gate, axis=-2)], axis=-1)
        hidden = act(Dense(self.n_hidden, name="scalar_net_0")(context))
        x = Dense(self.n_sout + self.n_vout, name="scalar_net_1")(hidden)
        s_out, gate = x[..., : self.n_sout], x[..., self.n_sout :]
        if self.scalar_activation:
            s_out = act(s_out)
        return s_out, gate[:, None, :] * v_out


class GatedEquivariantMLP(nn.Module):
    """SchNetPack's ``build_gated_equivariant_mlp``: gated equivariant blocks with pyramidal (``n_hidden=None``) or
    given widths; scalar activations on all but the last block. Returns ``(scalars [N, n_out],
    vectors [N, 3, n_out])``. Blocks are named ``blocks_k``."""

    n_out: int = 1
    n_hidden: int | Sequence[int] | None = None
    n_layers: int = 2
    activation: str = "silu"

    @nn.compact
    def __call__(self, scalars: jax.Array, vectors: jax.Array) -> tuple[jax.Array, jax.Array]:
        widths = [scalars.shape[-1], *pyramid_widths(scalars.shape[-1], self.n_out, self.n_hidden, self.n_layers)]
        for k in range(len(widths) - 1):
            last = k == len(widths) - 2
            block = GatedEquivariantBlock(widths[k + 1], widths[k + 1], widths[k], self.activation, not last,
                                          name=f"blocks_{k}")  # fmt: skip
            scalars, vectors = block(scalars, vectors)
        return scalars, vectors


def _vector_features(features: dict[str, jax.Array], head: str) -> jax.Array:
    if "vector" not in features:
        raise ConfigError(f"{head} needs vector features; use an equivariant representation such as PaiNN")
    return features["vector"]


class DipoleMoment(nn.Module):
    """SchNetPack's ``DipoleMoment``: latent partial charges from scalar features, corrected to sum to the total
    charge (``graph.total_charge``, neutral if None), and μ = Σᵢ qᵢ rᵢ (+ atomic dipoles from vector features with
    ``use_vector_representation``, PaiNN only).

    Outputs ``dipole_key`` (``[G, 3]`` e·Å, or ``[G]`` with ``predict_magnitude``, QM9's μ) and, unless
    ``charges_key`` is None, the partial charges ``[N]`` (e). Positions are absolute, as in SchNetPack: a charged
    structure's dipole moves by Q·t when translated by t.
    """

    n_hidden: int | Sequence[int] | None = None
    n_layers: int = 2
    activation: str = "silu"
    predict_magnitude: bool = False
    use_vector_representation: bool = False
    correct_charges: bool = True
    dipole_key: str = "dipole_moment"
    charges_key: str | None = "charges"

    def __post_init__(self) -> None:
        check_head(self)
        super().__post_init__()

    @property
    def key(self) -> str:
        return self.dipole_key

    @property
    def outputs(self) -> tuple[OutputSpec, ...]:
        shape = () if self.predict_magnitude else (3,)
        specs = [OutputSpec(self.dipole_key, False, shape, "e*Ang", "sum")]
        if self.charges_key is not None:
            specs.append(OutputSpec(self.charges_key, True, (), "e"))
        return tuple(specs)

    @nn.compact
    def __call__(self, features: dict[str, jax.Array], graph: Graph) -> dict[str, jax.Array]:
        mask = graph.node_mask.astype(features["scalar"].dtype)
        atomic_dipoles = 0.0
        if self.use_vector_representation:
            vectors = _vector_features(features, "DipoleMoment(use_vector_representation=True)")
            net = GatedEquivariantMLP(1, self.n_hidden, self.n_layers, self.activation, name="outnet")
            charges, dipoles = net(features["scalar"], vectors)
            atomic_dipoles = dipoles[..., 0] * mask[:, None]
        else:
            widths = pyramid_widths(features["scalar"].shape[-1], 1, self.n_hidden, self.n_layers)
            charges = MLP(widths, self.activation, name="outnet")(features["scalar"])
        charges = charges[:, 0] * mask
        if self.correct_charges:
            charges = charges + _charge_correction(charges, graph)[graph.node_graph] * mask
        dipole = _aggregate(graph.positions * charges[:, None] + atomic_dipoles, graph)
        out = {self.dipole_key: safe_norm(dipole) if self.predict_magnitude else dipole}
        if self.charges_key is not None:
            out[self.charges_key] = charges
        return out


def _charge_correction(charges: jax.Array, graph: Graph) -> jax.Array:
    """``[G]`` charge to add to each atom so that each structure's charges sum to its total charge (e)."""
    total = jnp.zeros(graph.n_graph, charges.dtype) if graph.total_charge is None else graph.total_charge
    missing = total.astype(charges.dtype) - _aggregate(charges, graph)
    return missing / jnp.maximum(graph.n_node, 1).astype(charges.dtype)


class Polarizability(nn.Module):
    """SchNetPack's ``Polarizability`` (PaiNN only): per atom, an isotropic part from a scalar and an anisotropic part
    ``vᵢ ⊗ rᵢ + rᵢ ⊗ vᵢ`` from a vector, summed over atoms — a symmetric ``[G, 3, 3]`` tensor (Å³) that rotates as
    R α Rᵀ.

    SchNetPack uses absolute positions, so its prediction changes when the molecule is translated. With
    ``translation_invariant=True`` (the default for new models) ``rᵢ`` is taken from the structure's centroid instead;
    imported SchNetPack models use ``False`` to give SchNetPack's numbers.
    """

    n_hidden: int | Sequence[int] | None = None
    n_layers: int = 2
    activation: str = "silu"
    polarizability_key: str = "polarizability"
    translation_invariant: bool = True

    def __post_init__(self) -> None:
        check_head(self)
        super().__post_init__()

    @property
    def key(self) -> str:
        return self.polarizability_key

    @property
    def outputs(self) -> tuple[OutputSpec, ...]:
        return (OutputSpec(self.polarizability_key, False, (3, 3), "Ang^3", "sum"),)

    @nn.compact
    def __call__(self, features: dict[str, jax.Array], graph: Graph) -> dict[str, jax.Array]:
        vectors = _vector_features(features, "Polarizability")
        net = GatedEquivariantMLP(1, self.n_hidden, self.n_layers, self.activation, name="outnet")
        scalars, vectors = net(features["scalar"], vectors)
        mask = graph.node_mask.astype(scalars.dtype)
        positions = graph.positions
        if self.translation_invariant:
            positions = positions - _aggregate(positions * mask[:, None], graph, "avg")[graph.node_graph]
        isotropic = scalars[:, 0, None, None] * jnp.eye(3, dtype=scalars.dtype)
        outer = vectors[:, :, 0, None] * positions[:, None, :]
        per_atom = (isotropic + outer + jnp.swapaxes(outer, 1, 2)) * mask[:, None, None]
        return {self.polarizability_key: _aggregate(per_atom, graph)}
