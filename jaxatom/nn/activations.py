"""Activation functions, addressed by name so model configurations stay serialisable."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["shifted_softplus", "get_activation", "ACTIVATIONS"]


def shifted_softplus(x: jax.Array) -> jax.Array:
    """``softplus(x) - ln 2``: zero at the origin (SchNet's activation)."""
    return jax.nn.softplus(x) - math.log(2.0)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "shifted_softplus": shifted_softplus,
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation called ``name``; raises ``ValueError`` naming the known ones."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]
