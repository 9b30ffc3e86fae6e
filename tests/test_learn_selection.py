"""Selection of structures to label (jaxatom.learn.selection): uncertain and diverse picks, thresholds, seeds, and
the descriptors built from a model's features."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule

import jaxatom
from jaxatom.errors import ConfigError, DataError
from jaxatom.learn.selection import select, structure_features
from tests.conftest import ELEMENTS, tiny_schnet

CENTRES = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 5.0]])


@pytest.fixture(scope="module")
def clusters() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three tight clusters of 40 points each (features, cluster of each point) and an uncertainty per point."""
    rng = np.random.default_rng(0)
    which = np.repeat(np.arange(3), 40)
    features = CENTRES[which] + 0.05 * rng.normal(size=(120, 3))
    uncertainty = rng.random(120) + np.where(which == 0, 1.0, 0.0)  # cluster 0 is the most uncertain
    return features, which, uncertainty


@pytest.mark.parametrize("method", ["fps", "kmeans"])
def test_diverse_methods_pick_one_per_cluster(clusters, method):
    features, which, uncertainty = clusters
    picks = select(features, uncertainty, 3, method=method)
    assert sorted(which[picks]) == [0, 1, 2]
    if method == "fps":
        assert picks[0] == np.argmax(uncertainty)  # starts at the most uncertain
    else:  # the most uncertain point of each cluster
        assert set(picks) == {np.flatnonzero(which == c)[np.argmax(uncertainty[which == c])] for c in range(3)}


def test_fps_reaches_outliers_first(clusters):
    features, which, uncertainty = clusters
    outliers = np.array([[30.0, 30.0, 30.0], [-30.0, 30.0, -30.0]])
    features = np.concatenate([features, outliers])
    uncertainty = np.concatenate([uncertainty, [0.0, 0.0]])  # the least uncertain, but far away
    picks = select(features, uncertainty, 5, method="fps")
    assert {120, 121} <= set(picks)
    assert sorted(which[[p for p in picks if p < 120]]) == [0, 1, 2]


def test_uncertainty_picks_top_k(clusters):
    features, _, uncertainty = clusters
    picks = select(features, uncertainty, 7, method="uncertainty")
    np.testing.assert_array_equal(picks, np.argsort(-uncertainty)[:7])


@pytest.mark.parametrize("method", ["fps", "kmeans", "uncertainty", "random"])
def test_threshold_drops_certain_candidates(clusters, method):
    features, which, uncertainty = clusters
    threshold = 1.0  # only cluster 0 is above it
    picks = select(features, uncertainty, 5, method=method, threshold=threshold)
    assert len(picks) == 5 and len(set(picks)) == 5
    assert (uncertainty[picks] >= threshold).all()


@pytest.mark.parametrize("method", ["fps", "kmeans", "uncertainty", "random"])
def test_budget_beyond_candidates_returns_all_by_uncertainty(clusters, method):
    features, _, uncertainty = clusters
    picks = select(features, uncertainty, 500, method=method, threshold=1.5)
    above = np.flatnonzero(uncertainty >= 1.5)
    np.testing.assert_array_equal(picks, above[np.argsort(-uncertainty[above])])
    assert select(features, uncertainty, 0, method=method).shape == (0,)
    assert select(features, uncertainty, 3, method=method, threshold=99.0).shape == (0,)


@pytest.mark.parametrize("method", ["kmeans", "random"])
def test_seeded_methods_are_deterministic(clusters, method):
    features, _, uncertainty = clusters
    first = select(features, uncertainty, 10, method=method, seed=3)
    np.testing.assert_array_equal(first, select(features, uncertainty, 10, method=method, seed=3))
    if method == "random":
        assert not np.array_equal(first, select(features, uncertainty, 10, method=method, seed=4))


def test_kmeans_fills_up_the_budget_with_duplicates():
    features = np.repeat(np.eye(2), 5, axis=0)  # two distinct points, five copies each
    uncertainty = np.linspace(0.0, 1.0, 10)
    picks = select(features, uncertainty, 4, method="kmeans")
    assert len(set(picks)) == 4
    assert set(picks) >= {4, 9}  # the most uncertain copy of each point


def test_references_exclude_near_duplicates(clusters):
    features, which, uncertainty = clusters
    references = features[which == 0][:1] + 1e-3  # cluster 0 is in the training set already
    picks = select(features, uncertainty, 30, method="uncertainty", reference_features=references, min_distance=1.0)
    assert 0 not in which[picks]
    exact = select(features, uncertainty, 120, method="uncertainty", reference_features=features[:2])
    assert set(exact) == set(range(2, 120))


def test_standardized_distances_weigh_every_feature(clusters):
    features, which, uncertainty = clusters
    rng = np.random.default_rng(1)
    noisy = np.concatenate([features, 1e3 * rng.normal(size=(120, 1))], axis=1)  # one huge, uninformative feature
    raw = select(noisy, uncertainty, 3, method="kmeans")
    assert sorted(which[raw]) != [0, 1, 2]  # raw distances follow the noise
    picks = select(noisy, uncertainty, 3, method="kmeans", standardize=True)  # the noise weighs as one feature
    assert sorted(which[picks]) == [0, 1, 2]


def test_bad_input_is_refused(clusters):
    features, _, uncertainty = clusters
    with pytest.raises(ConfigError, match="unknown selection method 'farthest'"):
        select(features, uncertainty, 3, method="farthest")
    with pytest.raises(ConfigError, match="budget"):
        select(features, uncertainty, -1)
    with pytest.raises(DataError, match="one uncertainty per candidate"):
        select(features, uncertainty[:-1], 3)
    bad = uncertainty.copy()
    bad[7] = np.nan
    with pytest.raises(DataError, match=r"candidates \[7\]"):
        select(features, bad, 3)
    with pytest.raises(DataError, match="reference_features"):
        select(features, uncertainty, 3, reference_features=np.zeros((2, 5)))


def test_structure_features_describe_composition_and_environment():
    potential = jaxatom.Potential.create(tiny_schnet(), elements=ELEMENTS, seed=0)
    water, methanol = molecule("H2O"), molecule("CH3OH")
    bent = water.copy()
    bent.positions[1] += [0.0, 0.3, 0.0]
    structures = [water, methanol, bent, water.copy()]  # one batch shape for every call below: one compile
    features = structure_features(potential, structures)
    assert features.shape == (4, len(ELEMENTS) * 16)
    np.testing.assert_array_equal(features[0], features[3])
    assert not np.allclose(features[0], features[2])
    carbon = slice(16, 32)  # ELEMENTS = H, C, O: water has no carbon block
    assert not features[0, carbon].any() and features[1, carbon].any()
    hydrogen = potential.features(structures)[1]["scalar"][methanol.numbers == 1]
    np.testing.assert_allclose(features[1, :16], hydrogen.mean(axis=0), rtol=1e-6)

    other = jaxatom.Potential.create(tiny_schnet(), elements=ELEMENTS, seed=5)
    ensemble = jaxatom.PotentialEnsemble.from_potentials([potential, other])  # described by its first member
    np.testing.assert_allclose(structure_features(ensemble, structures), features, rtol=1e-6)
    assert structure_features(potential, []).shape == (0, len(ELEMENTS) * 16)
