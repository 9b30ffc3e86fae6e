"""Δ-learning: one potential whose energy is a frozen base model's plus a Δ-model's (forces and stress by autodiff of
the sum), as one artifact that loads, predicts and runs MD like any other model."""

from __future__ import annotations

import numpy as np

from jaxatom.errors import ConfigError
from jaxatom.potential.outputs import OutputScaling
from jaxatom.potential.potential import Potential, _symbols

__all__ = ["delta_potential"]


def delta_potential(base: Potential, delta: Potential) -> Potential:
    """The potential ``E = E_base + E_delta``: ``delta``'s model with ``base`` inside (its parameters under
    ``params["base"]``, frozen in training, :attr:`~jaxatom.nn.AtomisticModel.frozen`).

    The energy's offsets are the sum of both (added once, on the host in float64) and the base's raw energy enters
    scaled by ``base_scale / delta_scale``, so each model's scaling counts exactly once. A multi-fidelity base is
    used at its target fidelity. Other outputs are ``delta``'s.
    """
    base = base.at_fidelity()
    if delta.fidelities:
        raise ConfigError("a Δ-model has one fidelity; drop fidelities from the Δ-model (its base may have them)")
    missing = set(delta.elements) - set(base.elements)
    if missing:
        raise ConfigError(f"the base model does not know {_symbols(missing)}; train the base on those elements too")
    for name, potential in (("base", base), ("Δ", delta)):
        if "energy" not in potential.outputs:
            raise ConfigError(f"the {name} model predicts no energy; Δ-learning adds energies")
    base_energy = base.scaling.get("energy", OutputScaling())
    delta_energy = delta.scaling.get("energy", OutputScaling())
    model = delta.model.clone(base=base.model, base_scale=base_energy.scale / delta_energy.scale)
    params = {**delta.params, "params": {**delta.params["params"], "base": base.params["params"]}}
    energy = OutputScaling(delta_energy.scale, base_energy.shift + delta_energy.shift,
                           _added(base_energy.atomrefs, delta_energy.atomrefs))  # fmt: skip
    return delta.replace(model=model, params=params, scaling={**delta.scaling, "energy": energy})


def _added(a: dict[int, float], b: dict[int, float]) -> dict[int, float]:
    return {z: float(np.float64(a.get(z, 0.0)) + b.get(z, 0.0)) for z in {*a, *b}}
