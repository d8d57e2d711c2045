"""UniRouteLearnedMap: the analytic gradient, the K-means initialisation, early stopping, and
training that reads only the training LLMs."""

from __future__ import annotations

import numpy as np
import pytest

from uniroute.errors import RouterError
from uniroute.routers import UniRouteKMeans, UniRouteLearnedMap, load_estimator
from uniroute.routers.uniroute_kmeans import assign_clusters, normalize_rows
from uniroute.routers.uniroute_learned import kmeans_initial_map, map_log_loss, softmax_rows


def loss_problem(seed=0, n=30, dim=5, n_clusters=4, n_models=3):
    rng = np.random.default_rng(seed)
    X = normalize_rows(rng.normal(size=(n, dim)))
    targets = rng.uniform(0, 1, size=(n, n_models))  # soft labels, half of them rounded to 0/1
    hard = rng.random((n, n_models)) < 0.5
    targets[hard] = np.round(targets[hard])
    observed = rng.random((n, n_models)) > 0.2
    targets = np.where(observed, targets, 0.0)
    profiles = rng.uniform(0.1, 0.9, size=(n_clusters, n_models))  # p never reaches the clip
    theta = rng.normal(scale=0.7, size=n_clusters * dim + n_clusters)
    return theta, X, targets, observed, profiles


@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_gradient_matches_central_finite_differences(l2):
    theta, X, targets, observed, profiles = loss_problem()
    loss, gradient = map_log_loss(theta, X, targets, observed, profiles, l2)
    step = 1e-6
    numeric = np.empty_like(theta)
    for i in range(len(theta)):
        shift = np.zeros_like(theta)
        shift[i] = step
        up = map_log_loss(theta + shift, X, targets, observed, profiles, l2)[0]
        down = map_log_loss(theta - shift, X, targets, observed, profiles, l2)[0]
        numeric[i] = (up - down) / (2 * step)
    assert np.isfinite(loss)
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-8)


def test_loss_is_the_hand_computed_log_loss_plus_penalty():
    # One prompt, K = 2 clusters with equal logits (Phi = [0.5, 0.5]), one model with
    # Psi = [0.2, 0.6]: p(wrong) = 0.4; soft label 0.25 -> -(0.25 ln 0.4 + 0.75 ln 0.6).
    theta = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 0.0])  # W = [[1, 0], [1, 0]], b = 0
    X = np.array([[0.6, 0.8]])
    loss, _ = map_log_loss(
        theta, X, np.array([[0.25]]), np.array([[True]]), np.array([[0.2], [0.6]]), l2=0.1
    )
    expected = -(0.25 * np.log(0.4) + 0.75 * np.log(0.6)) + 0.1 * 2.0
    assert loss == pytest.approx(expected)


def test_missing_pairs_do_not_enter_the_loss():
    theta, X, targets, observed, profiles = loss_problem(seed=1)
    scrambled = np.where(observed, targets, 0.987)
    a = map_log_loss(theta, X, targets, observed, profiles, 0.0)
    b = map_log_loss(theta, X, scrambled, observed, profiles, 0.0)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


def test_kmeans_initialisation_reproduces_the_hard_assignment(two_groups):
    kmeans = UniRouteKMeans(n_clusters=2).fit(*two_groups.fit_args())
    X = normalize_rows(two_groups.train.X)
    W, b = kmeans_initial_map(kmeans.centroids_, beta=200.0)
    phi = softmax_rows(X @ W.T + b)
    np.testing.assert_array_equal(phi.argmax(axis=1), assign_clusters(X, kmeans.centroids_))
    assert phi.max(axis=1).min() > 0.99
    # For any beta > 0 the argmax is still the nearest centroid.
    W, b = kmeans_initial_map(kmeans.centroids_, beta=0.5)
    soft = softmax_rows(X @ W.T + b)
    np.testing.assert_array_equal(soft.argmax(axis=1), assign_clusters(X, kmeans.centroids_))


def test_untrained_sharp_map_predicts_what_the_kmeans_router_predicts(two_groups):
    kmeans = UniRouteKMeans(n_clusters=2, random_state=5).fit(*two_groups.fit_args())
    learned = UniRouteLearnedMap(n_clusters=2, max_iter=0, temperature_init=0.005, random_state=5)
    learned.fit(*two_groups.fit_args())
    assert learned.n_iter_ == 0 and learned.beta_ == pytest.approx(200.0)
    np.testing.assert_array_equal(learned.centroids_, kmeans.centroids_)
    learned_pool, kmeans_pool = two_groups.pool(learned), two_groups.pool(kmeans)
    np.testing.assert_array_equal(learned_pool.features, kmeans_pool.features)
    np.testing.assert_array_equal(
        learned.soft_clusters(two_groups.test.X).argmax(axis=1), kmeans.clusters(two_groups.test.X)
    )
    np.testing.assert_allclose(
        learned.predict_error(two_groups.test.X, learned_pool),
        kmeans.predict_error(two_groups.test.X, kmeans_pool),
        atol=1e-6,
    )


def test_training_lowers_the_training_loss_from_a_soft_start(two_groups):
    start = UniRouteLearnedMap(n_clusters=2, max_iter=0, temperature_init=1.0, l2=0.0)
    trained = UniRouteLearnedMap(n_clusters=2, max_iter=50, temperature_init=1.0, l2=0.0)
    for router in (start, trained):
        router.fit(*two_groups.fit_args())
    assert 0 < trained.n_iter_ <= 50

    def training_loss(router):
        X = normalize_rows(two_groups.train.X)
        theta = np.r_[router.W_.ravel(), router.b_]
        profiles = two_groups.pool(router).features.T
        errors = 1.0 - two_groups.train.S
        return map_log_loss(theta, X, errors, np.ones_like(errors, bool), profiles, 0.0)[0]

    assert training_loss(trained) < training_loss(start) - 0.05


def test_training_never_sees_models_outside_the_training_pool(two_groups):
    # A fixed penalty keeps the optimiser moving on this easy problem, so the sentinel below
    # (training with the extra model changes W) can detect leaks.
    router = UniRouteLearnedMap(k_grid=(2, 3), l2=1e-3, max_iter=20).fit(*two_groups.fit_args())
    W, b = router.W_.copy(), router.b_.copy()
    # Routing over a pool with an unseen model, and over one without A: the map does not move.
    val_S = two_groups.val.S
    for names, scores, costs in (
        (["A", "B", "unseen"], np.column_stack([val_S, 1.0 - val_S[:, 0]]), [1.0, 1.0, 0.5]),
        (["B", "unseen"], np.column_stack([val_S[:, 1], 1.0 - val_S[:, 0]]), [1.0, 0.5]),
    ):
        router.route(two_groups.test.X, router.make_pool(names, scores, costs))
    np.testing.assert_array_equal(router.W_, W)
    np.testing.assert_array_equal(router.b_, b)

    # Training with that model among the training LLMs does change the map: the check above
    # would notice if models outside the training set leaked into training.
    train, val = two_groups.train, two_groups.val
    with_unseen = UniRouteLearnedMap(k_grid=(2, 3), l2=1e-3, max_iter=20).fit(
        train.X,
        np.column_stack([train.S, 1.0 - train.S[:, 0]]),
        val.X,
        np.column_stack([val.S, 1.0 - val.S[:, 0]]),
        np.array([1.0, 1.0, 0.5]),
    )
    assert not np.array_equal(with_unseen.W_, W)


def test_missing_training_scores_are_skipped(two_groups):
    S_train = two_groups.train.S.copy()
    S_train[::3, 0] = np.nan
    S_train[1, :] = np.nan  # a prompt with no score at all
    router = UniRouteLearnedMap(k_grid=(2, 3), max_iter=20)
    router.fit(two_groups.train.X, S_train, two_groups.val.X, two_groups.val.S, [1, 1])
    assert np.isfinite(router.W_).all()
    assert (router.route(two_groups.test.X, two_groups.pool(router)) == two_groups.test.group).all()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"l2": -1.0}, "l2"),
        ({"max_iter": 2.5}, "max_iter"),
        ({"max_iter": -1}, "max_iter"),
        ({"temperature_init": 0.0}, "temperature_init"),
    ],
)
def test_bad_parameters_are_reported_at_fit(params, message, two_groups):
    with pytest.raises(RouterError, match=message):
        UniRouteLearnedMap(k_grid=(2,), **params).fit(*two_groups.fit_args())


def test_auto_penalty_is_chosen_from_the_grid_and_persisted(two_groups, tmp_path):
    router = UniRouteLearnedMap(k_grid=(2, 3), l2_grid=(0.0, 1e-2), max_iter=20)
    router.fit(*two_groups.fit_args())
    assert router.l2_ in (0.0, 1e-2)
    router.save(tmp_path / "r")
    assert load_estimator(tmp_path / "r").l2_ == router.l2_


def test_bad_penalty_is_a_clear_error(two_groups):
    with pytest.raises(RouterError, match="l2"):
        UniRouteLearnedMap(k_grid=(2, 3), l2="strong").fit(*two_groups.fit_args())
