"""cluster_weights(X): Phi(x) of the cluster routers, one-hot for K-means and soft for the map."""

from __future__ import annotations

import numpy as np
import pytest

from uniroute.errors import RouterError
from uniroute.routers import UniRouteKMeans, UniRouteLearnedMap, load_estimator

E0 = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
E1 = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]


@pytest.fixture
def kmeans(two_groups) -> UniRouteKMeans:
    return UniRouteKMeans(n_clusters=2).fit(*two_groups.fit_args())


def test_kmeans_weights_are_one_hot_on_the_prompts_cluster(kmeans):
    X = np.array([E0, E1, [3.0, 0.2, 0, 0, 0, 0], [0.1, 2.0, 0, 0, 0, 0]])
    weights = kmeans.cluster_weights(X)
    group_0, group_1 = kmeans.clusters(np.array([E0, E1]))
    assert group_0 != group_1
    expected = np.zeros((4, 2))
    expected[[0, 2], group_0] = 1.0
    expected[[1, 3], group_1] = 1.0
    np.testing.assert_array_equal(weights, expected)
    assert weights.dtype == float


def test_kmeans_error_is_the_weights_times_psi(kmeans, two_groups):
    weights = kmeans.cluster_weights(two_groups.test.X)
    assert weights.shape == (len(two_groups.test.X), kmeans.n_clusters_)
    pool = two_groups.pool(kmeans)
    np.testing.assert_array_equal(
        weights @ pool.features.T, kmeans.predict_error(two_groups.test.X, pool)
    )


def test_untrained_map_weights_are_the_softmax_of_half_scaled_squared_distances(two_groups):
    # With no training the map is its start: Phi_k(x) proportional to exp(-beta ||x - c_k||^2 / 2)
    # for the unit-norm x, here with beta = 1 / temperature_init = 4.
    router = UniRouteLearnedMap(n_clusters=2, max_iter=0, temperature_init=0.25)
    router.fit(*two_groups.fit_args())
    X = np.array([E0, [2.0, 2.0, 0, 0, 0, 0], [0.0, 0.5, 0, 0, 0, 0.5]])
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    squared = ((unit[:, None, :] - router.centroids_[None, :, :]) ** 2).sum(axis=2)
    numerators = np.exp(-4.0 * squared / 2.0)
    expected = numerators / numerators.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(router.cluster_weights(X), expected, rtol=1e-12)


def test_trained_map_weights_are_its_soft_clusters_and_give_its_errors(two_groups):
    router = UniRouteLearnedMap(n_clusters=3, max_iter=20).fit(*two_groups.fit_args())
    X = two_groups.test.X
    weights = router.cluster_weights(X)
    assert weights.shape == (len(X), 3)
    assert (weights > 0).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    np.testing.assert_array_equal(weights, router.soft_clusters(X))
    pool = two_groups.pool(router)
    np.testing.assert_allclose(weights @ pool.features.T, router.predict_error(X, pool))


@pytest.mark.parametrize("router_class", [UniRouteKMeans, UniRouteLearnedMap])
def test_weights_survive_a_save_and_load(router_class, two_groups, tmp_path):
    router = router_class(n_clusters=2).fit(*two_groups.fit_args())
    router.save(tmp_path / "router")
    loaded = load_estimator(tmp_path / "router")
    np.testing.assert_array_equal(
        loaded.cluster_weights(two_groups.test.X), router.cluster_weights(two_groups.test.X)
    )


@pytest.mark.parametrize("router_class", [UniRouteKMeans, UniRouteLearnedMap])
def test_weights_need_a_fitted_router_and_embeddings_of_its_dimension(router_class, two_groups):
    with pytest.raises(RouterError, match="not fitted"):
        router_class(n_clusters=2).cluster_weights(two_groups.test.X)
    router = router_class(n_clusters=2).fit(*two_groups.fit_args())
    with pytest.raises(RouterError, match=r"embeddings must be \(n, 6\), got shape \(30, 4\)"):
        router.cluster_weights(two_groups.test.X[:, :4])
