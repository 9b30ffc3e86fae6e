"""Activation functions, addressed by name so model configurations stay serialisable."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["shifted_softplus", "get_activation", "ACTIVATIONS"]


def softplus(x: jax.Array) -> jax.Array:
    """``ln(1 + e^x)`` in the overflow-free form ``max(x, 0) + ln(1 + e^-|x|)`` (gradient 1/2 at 0, as sigmoid).

    Same values as ``jax.nn.softplus`` but about 1.3x faster forward and 4x faster backward on CPU, where the
    activation on ``[E, F]`` edge filters costs as much as a matrix product.
    """
    return 0.5 * (x + jnp.abs(x)) + jnp.log1p(jnp.exp(-jnp.abs(x)))


def shifted_softplus(x: jax.Array) -> jax.Array:
    """``softplus(x) - ln 2``: zero at the origin (SchNet's activation)."""
    return softplus(x) - math.log(2.0)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "shifted_softplus": shifted_softplus,
    "silu": jax.nn.silu,
    "softplus": softplus,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation called ``name``; raises ``ValueError`` naming the known ones."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]
