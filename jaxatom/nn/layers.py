"""Shared building blocks: SchNetPack-initialised dense layers, MLPs and a NaN-safe norm."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxatom.nn.activations import get_activation

__all__ = ["Dense", "MLP", "safe_norm", "pyramid_widths", "split_last"]


def Dense(features: int, use_bias: bool = True, name: str | None = None) -> nn.Dense:
    """A dense layer with SchNetPack's initialisation: Xavier-uniform weights, zero bias."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        kernel_init=nn.initializers.xavier_uniform(),
        bias_init=nn.initializers.zeros,
        name=name,
    )


def pyramid_widths(n_in: int, n_out: int, n_hidden: int | Sequence[int] | None, n_layers: int) -> list[int]:
    """Output widths of the layers of an MLP as SchNetPack's ``build_mlp`` lays them out.

    ``n_hidden=None`` halves the width after each layer (a pyramid, never below ``n_out``); an int gives
    ``n_layers - 1`` hidden layers of that width; a sequence lists the hidden widths.
    """
    if n_hidden is None:
        widths, current = [], n_in
        for _ in range(n_layers):
            widths.append(current)
            current = max(n_out, current // 2)
        return widths[1:] + [n_out]
    hidden = [int(n_hidden)] * (n_layers - 1) if isinstance(n_hidden, int) else [int(h) for h in n_hidden]
    return hidden + [n_out]


class MLP(nn.Module):
    """Dense layers with an activation between them (none after the last). Layers are named ``layers_k``."""

    widths: Sequence[int]
    activation: str = "silu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        for k, width in enumerate(self.widths):
            x = Dense(width, name=f"layers_{k}")(x)
            if k < len(self.widths) - 1:
                x = act(x)
        return x


def safe_norm(x: jax.Array, axis: int = -1, keepdims: bool = False) -> jax.Array:
    """Euclidean norm with a finite (zero) gradient at the origin."""
    squared = jnp.sum(x * x, axis=axis, keepdims=keepdims)
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def split_last(x: jax.Array, sizes: tuple[int, ...]) -> tuple[jax.Array, ...]:
    """``x`` cut along its last axis into pieces of widths ``sizes`` (same values as slicing).

    The gradient concatenates the pieces' cotangents in one pass. The transpose of plain slices is one zero-padded
    full-width copy per piece plus adds, which XLA CPU does not fuse: on ``[E, 3F]`` edge arrays that cost more than
    the message passing itself.
    """
    offsets = np.cumsum((0, *sizes))
    return tuple(x[..., int(a) : int(b)] for a, b in zip(offsets[:-1], offsets[1:], strict=True))


def _split_last_fwd(x, sizes):
    return split_last(x, sizes), None


def _split_last_bwd(sizes, _, cotangents):
    return (jnp.concatenate(cotangents, axis=-1),)


split_last.defvjp(_split_last_fwd, _split_last_bwd)
