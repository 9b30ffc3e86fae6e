"""Choosing which candidate structures to label: uncertain *and* diverse.

A candidate is described by one vector (:func:`structure_features`: the per-element mean of the model's invariant
per-atom features) and ranked by the model's uncertainty (e.g. an ensemble's energy or force spread).
:func:`select` drops candidates below an uncertainty threshold and near-duplicates of the training set, then picks
``budget`` of the rest by farthest-point sampling, k-means, top-k uncertainty or at random (the baseline).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal, get_args

import jax
import numpy as np
from ase import Atoms
from scipy.cluster.vq import kmeans2

from jaxatom.errors import ConfigError, DataError
from jaxatom.potential import Potential, PotentialEnsemble

__all__ = ["Method", "METHODS", "structure_features", "select"]

Method = Literal["fps", "kmeans", "uncertainty", "random"]
#: The selection methods :func:`select` knows.
METHODS: tuple[str, ...] = get_args(Method)


def structure_features(
    model: Potential | PotentialEnsemble, structures: Sequence[Atoms], batch_size: int = 32
) -> np.ndarray:
    """``[C, E * F]`` descriptors of ``C`` structures (float64): for each of the model's ``E`` elements (in
    ``model.elements`` order) the mean over that element's atoms of the representation's ``F`` invariant per-atom
    features (:meth:`Potential.features` ``scalar``), zeros where a structure has no atom of it. So structures differ
    in composition as well as in local environments.

    An ensemble is described by its first member's features (members share the architecture; the descriptor only has
    to place similar structures close together, which any one trained member does).
    """
    potential = model if isinstance(model, Potential) else _first_member(model)
    if not structures:
        return np.zeros((0, len(potential.elements) * _feature_width(potential)))
    features = potential.features(list(structures), batch_size=batch_size)
    return np.stack([_element_means(atoms.numbers, f["scalar"], potential.elements) for atoms, f in
                     zip(structures, features, strict=True)])  # fmt: skip


def _first_member(ensemble: PotentialEnsemble) -> Potential:
    params = jax.tree.map(lambda leaf: leaf[0], ensemble.params)
    return Potential(ensemble.model, params, ensemble.elements, ensemble.scalings[0])


def _feature_width(potential: Potential) -> int:
    return int(potential.model.representation.n_atom_basis)


def _element_means(numbers: np.ndarray, scalar: np.ndarray, elements: Sequence[int]) -> np.ndarray:
    """``[E * F]``: the mean of ``scalar [n, F]`` over the atoms of each element (zeros for absent ones)."""
    scalar = np.asarray(scalar, np.float64)
    means = [scalar[numbers == z].mean(axis=0) if np.any(numbers == z) else np.zeros(scalar.shape[1])
             for z in elements]  # fmt: skip
    return np.concatenate(means)


def select(
    features: np.ndarray,
    uncertainty: np.ndarray,
    budget: int,
    method: Method = "fps",
    threshold: float | None = None,
    seed: int = 0,
    standardize: bool = False,
    reference_features: np.ndarray | None = None,
    min_distance: float = 0.0,
) -> np.ndarray:
    """Indices (into the ``C`` candidates, int64) of up to ``budget`` structures to label.

    Candidates with ``uncertainty < threshold`` are dropped, and, when ``reference_features [R, D]`` (e.g. of the
    training set) are given, those within ``min_distance`` of a reference (0: exact duplicates only). Of the rest:

    * ``"fps"``: farthest-point sampling, starting at the most uncertain candidate, then each time the candidate
      farthest from all picked ones (returned in pick order);
    * ``"kmeans"``: k-means with ``k = budget`` (``scipy.cluster.vq.kmeans2``, k-means++ start, seeded) and the most
      uncertain candidate of each cluster (``k`` is at most the number of distinct candidates; clusters that come
      out empty or missing are made up by the most uncertain candidates not yet picked; returned by decreasing
      uncertainty);
    * ``"uncertainty"``: the ``budget`` most uncertain (by decreasing uncertainty);
    * ``"random"``: a seeded random choice (the baseline for learning curves).

    If no more than ``budget`` candidates remain, all of them are returned, by decreasing uncertainty.

    Args:
        features: ``[C, D]`` descriptors (e.g. :func:`structure_features`).
        uncertainty: ``[C]`` uncertainty of each candidate (any unit; larger = less certain).
        budget: how many to pick (≥ 0).
        standardize: measure distances (fps, k-means, duplicates) after scaling every feature to zero mean and unit
            standard deviation over the candidates (features that do not vary are left unscaled). Helps when a few
            features of large scale would dominate; it also magnifies features that barely vary, so it is off by
            default (the model's own feature space).
        min_distance: Euclidean distance, in the space the distances are measured in, below which a candidate
            counts as a duplicate of a reference.
    """
    features, uncertainty = _check_inputs(features, uncertainty, budget, method)
    if budget == 0:
        return np.zeros(0, np.int64)
    space = _standardized(features, features) if standardize else features
    keep = np.ones(len(features), bool) if threshold is None else uncertainty >= threshold
    if reference_features is not None:
        references = _check_references(reference_features, features.shape[1])
        references = _standardized(references, features) if standardize else references
        keep &= _nearest_distance(space, references) > min_distance
    candidates = np.flatnonzero(keep)
    if len(candidates) <= budget:
        return candidates[np.argsort(-uncertainty[candidates], kind="stable")]
    picks = _PICKERS[method](space[candidates], uncertainty[candidates], budget, np.random.default_rng(seed))
    return candidates[picks]


def _check_inputs(features, uncertainty, budget: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    if method not in METHODS:
        raise ConfigError(f"unknown selection method {method!r}; use one of {', '.join(METHODS)}")
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 0:
        raise ConfigError(f"budget must be a whole number ≥ 0, got {budget!r}")
    features = np.asarray(features, np.float64)
    uncertainty = np.asarray(uncertainty, np.float64)
    if features.ndim != 2 or uncertainty.shape != (len(features),):
        raise DataError(
            f"features must be [candidates, D] and uncertainty [candidates], got {list(features.shape)} and "
            f"{list(uncertainty.shape)}; give one feature row and one uncertainty per candidate"
        )
    bad = np.flatnonzero(~np.isfinite(features).all(axis=1) | ~np.isfinite(uncertainty))
    if bad.size:
        raise DataError(
            f"features or uncertainty are NaN or infinite for candidates {bad[:5].tolist()}; check the model's "
            "predictions of those structures (or drop them) before selecting"
        )
    return features, uncertainty


def _check_references(reference_features, width: int) -> np.ndarray:
    references = np.asarray(reference_features, np.float64)
    if references.ndim != 2 or references.shape[1] != width:
        raise DataError(
            f"reference_features must be [references, {width}] like the candidates' features, got "
            f"{list(references.shape)}; describe both with the same model"
        )
    return references


def _standardized(values: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``values`` shifted and scaled by the per-feature mean and std of ``basis`` (std 0 → 1)."""
    std = basis.std(axis=0)
    return (values - basis.mean(axis=0)) / np.where(std > 0, std, 1.0)


def _nearest_distance(points: np.ndarray, references: np.ndarray) -> np.ndarray:
    """``[C]`` Euclidean distance from each point to its nearest reference (inf without references)."""
    if len(references) == 0:
        return np.full(len(points), np.inf)
    return np.sqrt(np.min(_squared_distances(points, references), axis=1))


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[len(a), len(b)]`` squared Euclidean distances (clipped at 0 against round-off)."""
    return np.maximum((a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def _farthest_points(space: np.ndarray, uncertainty: np.ndarray, budget: int, rng) -> np.ndarray:
    picks = [int(np.argmax(uncertainty))]
    nearest = ((space - space[picks[0]]) ** 2).sum(axis=1)
    while len(picks) < budget:
        picks.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, ((space - space[picks[-1]]) ** 2).sum(axis=1))
    return np.array(picks, np.int64)


def _kmeans(space: np.ndarray, uncertainty: np.ndarray, budget: int, rng) -> np.ndarray:
    k = min(budget, len(np.unique(space, axis=0)))  # k-means++ needs k distinct points
    with warnings.catch_warnings():  # an empty cluster is made up for below
        warnings.filterwarnings("ignore", "One of the clusters is empty")
        _, labels = kmeans2(space, k, iter=20, minit="++", missing="warn", rng=rng)
    order = np.argsort(-uncertainty, kind="stable")
    best: dict[int, int] = {}
    for index in order:  # the first (most uncertain) member of each cluster
        best.setdefault(int(labels[index]), int(index))
    picked = set(best.values())
    picks = sorted(picked) + [int(i) for i in order if i not in picked][: budget - len(picked)]
    return np.array(sorted(picks, key=lambda i: -uncertainty[i]), np.int64)


def _top_uncertainty(space: np.ndarray, uncertainty: np.ndarray, budget: int, rng) -> np.ndarray:
    return np.argsort(-uncertainty, kind="stable")[:budget]


def _random(space: np.ndarray, uncertainty: np.ndarray, budget: int, rng) -> np.ndarray:
    return rng.choice(len(space), size=budget, replace=False)


_PICKERS = {"fps": _farthest_points, "kmeans": _kmeans, "uncertainty": _top_uncertainty, "random": _random}
