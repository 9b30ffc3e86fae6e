"""Pair features of dense blocks (:attr:`Graph.blocks`) computed once per pair.

In a block of ``M`` slots the unordered pairs are ``(i, i + k mod M)`` for ``k = 1..K``, ``K = M // 2`` (for even
``M`` the pairs at ``k = M/2`` appear twice; the copies with ``i >= M/2`` are masked). A square ``[B, M, M, ...]``
array is turned into these cyclic offsets and back by pads, reshapes and slices (:func:`skew`, :func:`unskew`), so
neither direction nor its gradient needs a gather or a scatter-add. Filters made on the ``[B, M, K, ...]`` half
cost half of those made on the square.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxatom.graph import PADDING_DISTANCE, Graph

__all__ = ["half_pair_vectors", "symmetric_square", "skew", "unskew"]


def skew(square: jax.Array) -> jax.Array:
    """``[B, M, M, ...] -> [B, M, M, ...]``: entry ``[b, i, k]`` is ``square[b, i, (i + k) mod M]``."""
    b, m = square.shape[:2]
    tail = square.shape[3:]
    flat = jnp.concatenate([square, square], axis=2).reshape((b, 2 * m * m) + tail)
    flat = jnp.pad(flat, [(0, 0), (0, m)] + [(0, 0)] * len(tail))
    return flat.reshape((b, m, 2 * m + 1) + tail)[:, :, :m]


def unskew(offsets: jax.Array) -> jax.Array:
    """The inverse of :func:`skew`: entry ``[b, i, j]`` is ``offsets[b, i, (j - i) mod M]``."""
    b, m = offsets.shape[:2]
    tail = offsets.shape[3:]
    flat = jnp.concatenate([offsets, offsets], axis=2).reshape((b, 2 * m * m) + tail)
    return flat[:, m : m + m * (2 * m - 1)].reshape((b, m, 2 * m - 1) + tail)[:, :, :m]


def _first_copies(size: int) -> np.ndarray:
    """``[M, K]`` False where offset ``k`` repeats a pair (``k = M/2``, ``i >= M/2``, even ``M``)."""
    i, k = np.arange(size)[:, None], np.arange(1, size // 2 + 1)[None, :]
    return ~((2 * k == size) & (i >= k))


def half_pair_vectors(graph: Graph) -> jax.Array:
    """``[B, M, K, 3]`` vectors ``r_ij = R[j] - R[i]`` (Å) of each pair once, from slot ``i`` to ``j = i + k``;
    pairs with an empty slot, and repeated ones, get a length of :data:`PADDING_DISTANCE`, beyond every cutoff."""
    slots = graph.to_blocks(graph.positions)
    size = slots.shape[1]
    vectors = skew(slots[:, None, :, :] - slots[:, :, None, :])[:, :, 1 : size // 2 + 1]
    filled = graph.to_blocks(graph.species) > 0
    real = skew(filled[:, :, None] & filled[:, None, :])[:, :, 1 : size // 2 + 1] & _first_copies(size)
    return jnp.where(real[..., None], vectors, jnp.asarray([PADDING_DISTANCE, 0.0, 0.0], vectors.dtype))


def symmetric_square(half: jax.Array) -> jax.Array:
    """``[B, M, K, ...]`` features of each pair once -> ``[B, M, M, ...]`` for every ordered pair (the same for
    ``(i, j)`` and ``(j, i)``, zero on the diagonal)."""
    b, m = half.shape[:2]
    pad = [(0, 0), (0, 0), (1, m - 1 - half.shape[2])] + [(0, 0)] * (half.ndim - 3)
    upper = unskew(jnp.pad(half, pad))
    return upper + jnp.swapaxes(upper, 1, 2)
