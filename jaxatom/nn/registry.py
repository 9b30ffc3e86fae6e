"""The one registry of model parts by name, used by model files and run configurations alike: representations
(``schnet``, ``painn``) and heads (``atomwise``, ``dipole_moment``, ``polarizability``), each written as
``{"type": <class name>, <field>: <value>, ...}``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from jaxatom.errors import ConfigError
from jaxatom.nn.heads import Atomwise, DipoleMoment, Polarizability
from jaxatom.nn.painn import PaiNN
from jaxatom.nn.schnet import SchNet

__all__ = ["REPRESENTATIONS", "HEADS", "module_config", "module_class", "module_from_config"]

#: Representations by lower-case name.
REPRESENTATIONS: dict[str, type[nn.Module]] = {"schnet": SchNet, "painn": PaiNN}
#: Output heads by lower-case name.
HEADS: dict[str, type[nn.Module]] = {
    "atomwise": Atomwise,
    "dipole_moment": DipoleMoment,
    "polarizability": Polarizability,
}
_BY_CLASS = {cls.__name__: cls for cls in (*REPRESENTATIONS.values(), *HEADS.values())}


def module_config(module: nn.Module) -> dict[str, Any]:
    """``{"type": class name, **fields}`` of a representation or head (JSON-ready)."""
    fields = {f.name: getattr(module, f.name) for f in dataclasses.fields(module) if f.name not in ("parent", "name")}
    return {"type": type(module).__name__, **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}}


def module_class(kind: str, registry: Mapping[str, type[nn.Module]] | None = None) -> type[nn.Module]:
    """The class named ``kind`` (class name, e.g. ``PaiNN``, or registry key, e.g. ``painn``, any case)."""
    registry = {**REPRESENTATIONS, **HEADS} if registry is None else registry
    by_name = {**{k.lower(): v for k, v in registry.items()}, **{v.__name__.lower(): v for v in registry.values()}}
    if not isinstance(kind, str) or kind.lower() not in by_name:
        raise ConfigError(f"unknown model part {kind!r}; choose one of {', '.join(sorted(registry))}")
    return by_name[kind.lower()]


def module_from_config(config: Mapping[str, Any], registry: Mapping[str, type[nn.Module]] | None = None) -> nn.Module:
    """Build a module from ``{"type": ..., **fields}`` (see :func:`module_config`); a :class:`ConfigError` names a
    wrong type or setting."""
    config = dict(config)
    cls = module_class(config.pop("type", None), registry)
    known = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} settings {unknown}; known: {sorted(known)}")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    except TypeError as err:
        raise ConfigError(f"invalid {cls.__name__} settings: {err}") from err
