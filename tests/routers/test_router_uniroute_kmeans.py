"""UniRouteKMeans: the shrunk per-cluster error profile Psi, the choice of K, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from uniroute.errors import RouterError
from uniroute.routers import UniRouteKMeans, load_estimator
from uniroute.routers.uniroute_kmeans import (
    assign_clusters,
    cluster_error_profile,
    normalize_rows,
)

LABELS = np.array([0, 0, 1, 1, 1])  # cluster 2 has no prompt
ERRORS = np.array(
    [
        [1.0, 0.0],
        [0.0, np.nan],
        [np.nan, 1.0],
        [1.0, np.nan],
        [1.0, np.nan],
    ]
)


def test_profile_shrinks_toward_the_model_mean_and_handles_empty_and_missing():
    profile = cluster_error_profile(LABELS, ERRORS, n_clusters=3, prior_strength=1.0)
    # Model 0: g = (1 + 0 + 1 + 1) / 4 = 0.75; cluster 0: (1 + 0 + 0.75) / (2 + 1);
    # cluster 1 (one score missing): (1 + 1 + 0.75) / (2 + 1); cluster 2 (empty): g.
    # Model 1: g = (0 + 1) / 2 = 0.5; cluster 0: (0 + 0.5) / 2; cluster 1: (1 + 0.5) / 2; g.
    expected = np.array([[1.75 / 3, 0.25], [2.75 / 3, 0.75], [0.75, 0.5]])
    np.testing.assert_allclose(profile, expected)


def test_profile_without_prior_is_the_plain_cluster_mean_and_g_where_nothing_is_observed():
    profile = cluster_error_profile(LABELS, ERRORS, n_clusters=3, prior_strength=0.0)
    np.testing.assert_allclose(profile, [[0.5, 0.0], [1.0, 1.0], [0.75, 0.5]])


def test_profile_of_one_model_and_a_given_prior():
    profile = cluster_error_profile(
        LABELS, ERRORS[:, 0], n_clusters=3, prior_strength=2.0, prior_errors=np.array([0.0])
    )
    np.testing.assert_allclose(profile, [1.0 / 4, 2.0 / 4, 0.0])


def test_profile_refuses_a_model_with_no_observed_score():
    with pytest.raises(RouterError, match="no observed validation score"):
        cluster_error_profile(LABELS, np.full(5, np.nan), n_clusters=3, prior_strength=1.0)


def test_assign_clusters_picks_the_nearest_centroid():
    centroids = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.6]])
    X = normalize_rows(np.array([[2.0, 0.1], [0.1, 3.0], [1.0, 1.0], [0.0, 0.0]]))
    assert assign_clusters(X, centroids).tolist() == [0, 1, 2, 2]
    np.testing.assert_allclose(np.linalg.norm(X[:3], axis=1), 1.0)


def three_groups(rng, counts):
    """Prompts around e_0, e_1, e_2 (counts[g] of group g)."""
    group = np.repeat(np.arange(3), counts)
    X = np.zeros((len(group), 4))
    X[np.arange(len(group)), group] = 1.0
    return X + 0.02 * rng.normal(size=X.shape), group


def test_router_psi_with_an_empty_cluster_and_missing_scores_is_hand_computed():
    rng = np.random.default_rng(0)
    X_train, _ = three_groups(rng, [10, 10, 10])
    X_val, val_group = three_groups(rng, [3, 2, 0])  # no representative prompt in group 2
    S_val = np.ones((5, 1))
    router = UniRouteKMeans(n_clusters=3, psi_prior="own-mean")
    router.fit(X_train, np.ones((30, 1)), X_val, S_val, [1.0])
    k = router.clusters(X_val)
    assert len(set(k[:3].tolist())) == 1 and len(set(k[3:].tolist())) == 1 and k[0] != k[3]
    empty = ({0, 1, 2} - set(k.tolist())).pop()

    scores = np.array([0.0, 1.0, np.nan, 0.0, 0.5])  # errors 1, 0, -, 1, 0.5
    psi = router.model_features(scores)
    g = (1 + 0 + 1 + 0.5) / 4
    assert psi[k[0]] == pytest.approx((1 + 0 + g) / (2 + 1))
    assert psi[k[3]] == pytest.approx((1 + 0.5 + g) / (2 + 1))
    assert psi[empty] == pytest.approx(g)

    pool = router.make_pool(["m", "new"], np.column_stack([S_val[:, 0], scores]), [1.0, 0.5])
    np.testing.assert_array_equal(pool.features[pool.index("new")], psi)
    X_test, test_group = three_groups(rng, [2, 2, 2])
    errors = router.predict_error(X_test, pool)[:, pool.index("new")]
    np.testing.assert_allclose(errors, psi[router.clusters(X_test)])
    assert errors[test_group == 2] == pytest.approx([g, g])


def correlated_skills(rng, n_models):
    """Training LLMs whose error on group 2 follows their error on group 0 (group 1 is noise)."""
    skill = rng.uniform(0.05, 0.95, size=n_models)
    return np.column_stack([skill, rng.uniform(0.2, 0.8, size=n_models), skill])


def test_population_prior_predicts_a_cluster_without_evidence_from_the_others():
    rng = np.random.default_rng(1)
    X_train, train_group = three_groups(rng, [40, 40, 40])
    X_val, val_group = three_groups(rng, [10, 10, 10])
    truth = correlated_skills(rng, 12)  # (models, groups) error rates
    S_train = (rng.random((120, 12)) >= truth[:, train_group].T).astype(float)
    S_val = (rng.random((30, 12)) >= truth[:, val_group].T).astype(float)
    router = UniRouteKMeans(n_clusters=3).fit(X_train, S_train, X_val, S_val, np.ones(12))
    k_of_group = {g: int(router.clusters(X_val[val_group == g][:1])[0]) for g in range(3)}

    # A weak new model (error 0.9 on groups 0 and 2) that answered groups 0 and 1 only.
    scores = np.where(val_group == 0, 0.1, 0.5).astype(float)
    scores[val_group == 0] = (rng.random(10) >= 0.9).astype(float)
    scores[val_group == 2] = np.nan
    psi = router.model_features(scores)
    own_mean = np.nanmean(1 - scores)
    evidence, std = router.model_evidence(scores)
    unseen = k_of_group[2]
    # Its unanswered cluster is predicted weak, as its correlated cluster is: not its own mean.
    assert psi[unseen] > own_mean + 0.05
    assert abs(psi[unseen] - psi[k_of_group[0]]) < abs(own_mean - psi[k_of_group[0]])
    assert evidence[unseen] == 0 and evidence[k_of_group[0]] == 10
    assert std is not None and std[unseen] > std[k_of_group[0]]

    # With evidence everywhere the posterior is close to the observed cluster means.
    full = (rng.random(30) >= truth[0, val_group]).astype(float)
    observed = np.array([1 - full[val_group == g].mean() for g in range(3)])
    np.testing.assert_allclose(
        router.model_features(full)[[k_of_group[g] for g in range(3)]], observed, atol=0.12
    )


def test_a_router_saved_before_the_prior_keeps_the_own_mean_rule(tmp_path):
    rng = np.random.default_rng(2)
    X_train, _ = three_groups(rng, [10, 10, 10])
    X_val, _ = three_groups(rng, [3, 3, 3])
    S_train, S_val = rng.random((30, 3)), rng.random((9, 3))
    router = UniRouteKMeans(n_clusters=3, psi_prior="own-mean")
    router.fit(X_train, S_train, X_val, S_val, np.ones(3)).save(tmp_path / "r")
    loaded = load_estimator(tmp_path / "r")
    assert loaded.psi_prior == "own-mean" and loaded.psi_prior_ is None
    np.testing.assert_array_equal(
        loaded.model_features(S_val[:, 0]), router.model_features(S_val[:, 0])
    )
    population = UniRouteKMeans(n_clusters=3).fit(X_train, S_train, X_val, S_val, np.ones(3))
    population.save(tmp_path / "p")
    reloaded = load_estimator(tmp_path / "p")
    assert reloaded.psi_prior == "population"
    np.testing.assert_array_equal(
        reloaded.model_features(S_val[:, 1]), population.model_features(S_val[:, 1])
    )


def test_auto_k_picks_the_number_of_skill_groups_from_validation_only():
    # Four prompt groups; model j is right only on group j, so merging groups hurts routing.
    rng = np.random.default_rng(1)

    def four_groups(n):
        group = np.repeat(np.arange(4), n)
        X = np.zeros((len(group), 4))
        X[np.arange(len(group)), group] = 1.0
        S = (group[:, None] == np.arange(4)[None, :]).astype(float)
        return X + 0.03 * rng.normal(size=X.shape), S

    X_train, S_train = four_groups(25)
    X_val, S_val = four_groups(12)
    costs = np.array([1.0, 2.0, 3.0, 4.0])
    router = UniRouteKMeans(k_grid=(2, 4, 1000), random_state=0)
    router.fit(X_train, S_train, X_val, S_val, costs)
    assert set(router.selection_scores_) == {2, 4}  # 1000 > 100 training prompts: dropped
    assert router.selection_scores_[4] > router.selection_scores_[2]
    assert router.n_clusters_ == 4 and router.centroids_.shape == (4, 4)

    # The training scores play no part in the choice of K.
    other = UniRouteKMeans(k_grid=(2, 4, 1000), random_state=0)
    other.fit(X_train, 1.0 - S_train, X_val, S_val, costs)
    assert other.selection_scores_ == router.selection_scores_


def test_fixed_k_skips_selection():
    rng = np.random.default_rng(2)
    X, _ = three_groups(rng, [5, 5, 5])
    router = UniRouteKMeans(n_clusters=2).fit(X, np.ones((15, 1)), X, np.ones((15, 1)), [1])
    assert router.n_clusters_ == 2 and router.selection_scores_ == {}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_clusters": 31}, "exceeds the 30 training prompts"),
        ({"k_grid": (40, 50)}, "every K in k_grid"),
        ({"n_clusters": "many"}, "n_clusters must be 'auto'"),
        ({"prior_strength": -1.0}, "prior_strength"),
        ({"random_state": "seed"}, "random_state"),
    ],
)
def test_bad_parameters_are_reported_at_fit(params, message):
    rng = np.random.default_rng(3)
    X, _ = three_groups(rng, [10, 10, 10])
    with pytest.raises(RouterError, match=message):
        UniRouteKMeans(**params).fit(X, np.ones((30, 1)), X, np.ones((30, 1)), [1.0])


def test_chosen_k_and_selection_scores_survive_save_and_load(two_groups, tmp_path):
    router = UniRouteKMeans(k_grid=(2, 3)).fit(*two_groups.fit_args())
    router.save(tmp_path / "r")
    loaded = load_estimator(tmp_path / "r")
    assert isinstance(loaded, UniRouteKMeans)
    assert loaded.n_clusters_ == router.n_clusters_
    assert loaded.selection_scores_ == router.selection_scores_
    assert set(loaded.selection_scores_) == {2, 3}
    np.testing.assert_array_equal(loaded.val_clusters_, router.val_clusters_)


def test_cluster_lookup_checks_the_embedding_width(two_groups):
    router = UniRouteKMeans(n_clusters=2).fit(*two_groups.fit_args())
    with pytest.raises(RouterError, match="embeddings must be"):
        router.clusters(two_groups.test.X[:, :4])
