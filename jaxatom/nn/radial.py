"""Radial bases and cutoff functions of interatomic distances ``d`` (Å), as in SchNetPack 2.x."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "GaussianRBF",
    "BesselRBF",
    "cosine_cutoff",
    "mollifier_cutoff",
    "make_radial_basis",
    "make_cutoff_fn",
    "expand_distances",
    "RADIAL_BASES",
    "CUTOFF_FNS",
]


class GaussianRBF(nn.Module):
    """Gaussians with centres ``linspace(start, cutoff, n_rbf)`` and width = centre spacing. ``[E] -> [E, n_rbf]``."""

    n_rbf: int
    cutoff: float
    start: float = 0.0
    trainable: bool = False

    @nn.compact
    def __call__(self, d: jax.Array) -> jax.Array:
        centres = np.linspace(self.start, self.cutoff, self.n_rbf)
        widths = np.full(self.n_rbf, abs(centres[1] - centres[0]))
        if self.trainable:
            centres = self.param("offsets", lambda *_: jnp.asarray(centres, jnp.float32))
            widths = self.param("widths", lambda *_: jnp.asarray(widths, jnp.float32))
        centres = jnp.asarray(centres, d.dtype)
        widths = jnp.asarray(widths, d.dtype)
        return jnp.exp(-0.5 / widths**2 * (d[..., None] - centres) ** 2)


class BesselRBF(nn.Module):
    """``sin(f_k d) / d`` with frequencies ``f_k = k pi / cutoff`` for ``k = 1..n_rbf`` (0th-order spherical Bessel).
    ``[E] -> [E, n_rbf]``.

    Fixed (default), the frequencies are computed in the distances' precision. With ``trainable`` they are the
    parameter ``freqs`` (1/Å), initialised in float32 at ``k pi / cutoff`` as SchNetPack stores them: imported
    SchNetPack models keep SchNetPack's stored float32 frequencies there, as :class:`GaussianRBF` keeps its centres.
    """

    n_rbf: int
    cutoff: float
    trainable: bool = False

    @nn.compact
    def __call__(self, d: jax.Array) -> jax.Array:
        if self.trainable:
            initial = np.arange(1, self.n_rbf + 1) * (math.pi / self.cutoff)
            freqs = self.param("freqs", lambda *_: jnp.asarray(initial, jnp.float32)).astype(d.dtype)
        else:
            freqs = jnp.arange(1, self.n_rbf + 1, dtype=d.dtype) * (math.pi / self.cutoff)
        norm = jnp.where(d == 0, 1.0, d)
        return jnp.sin(d[..., None] * freqs) / norm[..., None]


def cosine_cutoff(d: jax.Array, cutoff: float) -> jax.Array:
    """Behler cosine cutoff ``0.5 (cos(pi d / rc) + 1)`` for ``d < rc``, exactly zero beyond."""
    return jnp.where(d < cutoff, 0.5 * (jnp.cos(d * (math.pi / cutoff)) + 1.0), 0.0)


def mollifier_cutoff(d: jax.Array, cutoff: float, eps: float = 1.0e-7) -> jax.Array:
    """Mollifier ``exp(1 - 1 / (1 - (d / rc)^2))`` for ``d + eps < rc`` (1 at the origin), exactly zero beyond."""
    inside = d + eps < cutoff
    x = jnp.where(inside, d / cutoff, 0.0)
    return jnp.where(inside, jnp.exp(1.0 - 1.0 / (1.0 - x**2)), 0.0)


RADIAL_BASES = ("gaussian", "bessel")
CUTOFF_FNS = ("cosine", "mollifier")


def make_radial_basis(name: str, n_rbf: int, cutoff: float, trainable: bool = False, start: float = 0.0) -> nn.Module:
    """The radial basis called ``name`` (one of :data:`RADIAL_BASES`) spanning ``start``..``cutoff`` (Å); with
    ``trainable`` its centres and widths (Gaussian) or frequencies (Bessel) are parameters."""
    if name == "gaussian":
        return GaussianRBF(n_rbf=n_rbf, cutoff=cutoff, start=start, trainable=trainable, name="radial_basis")
    if start != 0.0:
        raise ValueError("only the Gaussian basis has a start; set rbf_start=0.0")
    if name == "bessel":
        return BesselRBF(n_rbf=n_rbf, cutoff=cutoff, trainable=trainable, name="radial_basis")
    raise ValueError(f"unknown radial basis {name!r}; choose one of {RADIAL_BASES}")


def make_cutoff_fn(name: str, cutoff: float):
    """The cutoff function called ``name`` (one of :data:`CUTOFF_FNS`) as ``d -> f(d)``."""
    if name == "cosine":
        return lambda d: cosine_cutoff(d, cutoff)
    if name == "mollifier":
        return lambda d: mollifier_cutoff(d, cutoff)
    raise ValueError(f"unknown cutoff function {name!r}; choose one of {CUTOFF_FNS}")


def expand_distances(representation: nn.Module, d: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Radial basis ``[E, n_rbf]`` and cutoff ``[E]`` of distances ``d`` (Å) for a representation with the fields
    ``radial_basis``, ``n_rbf``, ``cutoff``, ``cutoff_fn``, ``trainable_rbf``, ``rbf_start`` and ``rbf_cutoff``.

    Call it inside the representation's ``nn.compact`` method: the basis becomes its submodule ``radial_basis``.
    """
    rbf = make_radial_basis(
        representation.radial_basis,
        representation.n_rbf,
        representation.rbf_cutoff or representation.cutoff,
        representation.trainable_rbf,
        representation.rbf_start,
    )(d)
    return rbf, make_cutoff_fn(representation.cutoff_fn, representation.cutoff)(d)
