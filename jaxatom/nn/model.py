"""A representation and named output heads joined into one flax model: ``apply(params, graph) -> {name: array}``."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from jaxatom.errors import ConfigError
from jaxatom.graph import Graph
from jaxatom.nn.heads import Atomwise, OutputSpec

__all__ = ["AtomisticModel", "ENERGY_HEAD", "DERIVED_OUTPUTS", "check_model"]

#: The default head: SchNetPack's energy ``Atomwise`` (pyramidal MLP, SiLU, summed), with per-atom energies.
ENERGY_HEAD = Atomwise(output_key="energy", per_atom_output_key="energies")
#: Outputs computed from the energy by autodiff (:func:`~jaxatom.potential.evaluate`), never by a head.
DERIVED_OUTPUTS = ("forces", "stress")
_FEATURES = ("scalar", "vector")


def check_model(representation: nn.Module, heads: Sequence[nn.Module]) -> None:
    """Raise a :class:`ConfigError` if the heads cannot work together: none, output names used twice or reserved
    (``forces``, ``stress``, ``scalar``, ``vector``), or vector features asked of a representation without them."""
    if not heads:
        raise ConfigError("a model needs at least one output head, e.g. Atomwise(output_key='energy')")
    names = [spec.name for head in heads for spec in head.outputs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"two heads predict {', '.join(twice)}; give each output its own key")
    reserved = sorted(set(names) & {*DERIVED_OUTPUTS, *_FEATURES})
    if reserved:
        raise ConfigError(
            f"{', '.join(reserved)} cannot be a head's output: forces and stress are derived from the energy, scalar "
            "and vector are the representation's features"
        )
    fidelities = {spec.fidelities for head in heads for spec in head.outputs if spec.fidelities}
    if len(fidelities) > 1:
        raise ConfigError(f"the heads name different fidelities {sorted(fidelities)}; give them one list")
    if not getattr(representation, "has_vector_features", False):
        for head in heads:
            if getattr(head, "use_vector_representation", False) or type(head).__name__ == "Polarizability":
                raise ConfigError(
                    f"{type(head).__name__} needs vector features, which {type(representation).__name__} has not; "
                    "use PaiNN (or set use_vector_representation=False)"
                )


def _check_base(base: AtomisticModel | None, heads: Sequence[nn.Module]) -> None:
    """A Δ-model's base must predict a single-fidelity energy, and no head may be named ``base``."""
    if base is None:
        return
    names = {spec.name: spec for head in heads for spec in head.outputs}
    base_names = {spec.name: spec for spec in base.outputs}
    if "energy" not in names or "energy" not in base_names:
        raise ConfigError("a Δ-model adds the base's energy to its own: both need an energy head")
    if base_names["energy"].fidelities:
        raise ConfigError("a Δ-model's base must be single-fidelity; pass Potential.at_fidelity() of it")
    if "base" in {head.key for head in heads}:
        raise ConfigError("a Δ-model keeps its base's parameters under 'base'; rename the head called 'base'")


class AtomisticModel(nn.Module):
    """A representation (``SchNet``, ``PaiNN``) and output heads; each head's parameters are named by its key.

    Returns the representation's features (``scalar [N, F]`` and, for equivariant models, ``vector [N, 3, F]``) and
    every head's outputs, raw (a :class:`~jaxatom.potential.Potential` scales them and adds offsets).

    With a ``base`` model it is a Δ-model: ``energy`` (and per-atom ``energies``, when both predict them) is
    ``base_scale · base + own`` (raw outputs; the potential's energy scaling then applies to the sum, so
    ``base_scale`` is the base's energy scale over this model's). The base's parameters are ``params["base"]``,
    frozen in training (:attr:`frozen`); forces and stress are derivatives of the sum.
    """

    representation: nn.Module
    heads: tuple[nn.Module, ...] = (ENERGY_HEAD,)
    base: AtomisticModel | None = None
    base_scale: float = 1.0

    def __post_init__(self) -> None:
        check_model(self.representation, self.heads)
        _check_base(self.base, self.heads)
        super().__post_init__()

    @property
    def cutoff(self) -> float:
        """The largest cutoff (Å) of the representation and the base's: host graphs are built with it."""
        own = float(self.representation.cutoff)
        return own if self.base is None else max(own, self.base.cutoff)

    @property
    def fidelities(self) -> tuple[str, ...]:
        """The levels of theory of the multi-fidelity outputs (cheapest first, the last the target); empty if none."""
        return next((spec.fidelities for spec in self.outputs if spec.fidelities), ())

    @property
    def frozen(self) -> tuple[str, ...]:
        """Top-level parameter names that training leaves unchanged (a Δ-model's ``base``)."""
        return () if self.base is None else ("base",)

    @property
    def outputs(self) -> tuple[OutputSpec, ...]:
        """Every output of every head, in head order."""
        return tuple(spec for head in self.heads for spec in head.outputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        """The model's outputs, and ``forces``/``stress`` when it predicts an energy."""
        names = tuple(spec.name for spec in self.outputs)
        return names + (DERIVED_OUTPUTS if "energy" in names else ())

    @nn.compact
    def __call__(self, graph: Graph) -> dict[str, jax.Array]:
        features = self.representation(graph)
        out = dict(features)
        for head in self.heads:
            out.update(head.clone(parent=self, name=head.key)(features, graph))
        if self.base is not None:
            base = self.base(graph)
            for name in ("energy", "energies"):
                if name in base and name in out:
                    out[name] = self.base_scale * base[name].astype(out[name].dtype) + out[name]
        return out
