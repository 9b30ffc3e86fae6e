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
    if not getattr(representation, "has_vector_features", False):
        for head in heads:
            if getattr(head, "use_vector_representation", False) or type(head).__name__ == "Polarizability":
                raise ConfigError(
                    f"{type(head).__name__} needs vector features, which {type(representation).__name__} has not; "
                    "use PaiNN (or set use_vector_representation=False)"
                )


class AtomisticModel(nn.Module):
    """A representation (``SchNet``, ``PaiNN``) and output heads; each head's parameters are named by its key.

    Returns the representation's features (``scalar [N, F]`` and, for equivariant models, ``vector [N, 3, F]``) and
    every head's outputs, raw (a :class:`~jaxatom.potential.Potential` scales them and adds offsets).
    """

    representation: nn.Module
    heads: tuple[nn.Module, ...] = (ENERGY_HEAD,)

    def __post_init__(self) -> None:
        check_model(self.representation, self.heads)
        super().__post_init__()

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
        return out
