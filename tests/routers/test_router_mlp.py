"""RetrainedMLP: per-model heads trained on the representative prompts, packed as Psi."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier, MLPRegressor

from uniroute.errors import RouterError
from uniroute.pool import Pool
from uniroute.routers import RetrainedMLP

# The reference networks below stop at max_iter like the router's heads do.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

PARAMS = {"hidden_layer_sizes": (8, 4), "alpha": 1e-3, "max_iter": 150, "random_state": 2}


def fitted(two_groups):
    return RetrainedMLP(**PARAMS).fit(*two_groups.fit_args())


def with_models(router, two_groups, scores):
    """Pool of A, B and the given extra score columns (named m2, m3, ...)."""
    extra = np.asarray(scores, dtype=float).reshape(len(two_groups.val.X), -1)
    names = ["A", "B"] + [f"m{2 + j}" for j in range(extra.shape[1])]
    return router.make_pool(names, np.column_stack([two_groups.val.S, extra]), np.ones(len(names)))


def test_it_declares_that_new_models_need_training():
    assert "retrain" in RetrainedMLP.__doc__.lower()


def test_binary_scores_train_a_classifier_whose_numpy_forward_pass_matches_sklearn(two_groups):
    router = fitted(two_groups)
    X_val, S_val = two_groups.val.X, two_groups.val.S
    reference = MLPClassifier(**PARAMS).fit(X_val, (1.0 - S_val[:, 0]).astype(int))
    pool = two_groups.pool(router)
    assert pool.features[0, 0] == 1.0  # logistic output
    np.testing.assert_allclose(
        router.predict_error(two_groups.test.X, pool)[:, 0],
        reference.predict_proba(two_groups.test.X)[:, 1],
        rtol=1e-10,
        atol=1e-12,
    )


def test_fractional_scores_train_a_regressor_and_skip_missing_scores(two_groups):
    router = fitted(two_groups)
    scores = np.where(two_groups.val.group == 0, 0.9, 0.2)
    scores[::5] = np.nan
    pool = with_models(router, two_groups, scores)
    observed = np.isfinite(scores)
    reference = MLPRegressor(**PARAMS).fit(two_groups.val.X[observed], 1.0 - scores[observed])
    assert pool.features[2, 0] == 0.0  # identity output
    np.testing.assert_allclose(
        router.predict_error(two_groups.test.X, pool)[:, 2],
        np.clip(reference.predict(two_groups.test.X), 0.0, 1.0),
        rtol=1e-10,
        atol=1e-12,
    )


def test_a_model_with_one_observed_outcome_gets_a_constant_head(two_groups):
    router = fitted(two_groups)
    always_right = np.where(two_groups.val.group == 0, 1.0, np.nan)
    coin = np.full(len(two_groups.val.X), 0.5)
    pool = with_models(router, two_groups, np.column_stack([always_right, coin]))
    errors = router.predict_error(two_groups.test.X, pool)
    np.testing.assert_array_equal(errors[:, 2], 0.0)
    np.testing.assert_array_equal(errors[:, 3], 0.5)


def test_psi_is_the_packed_head_and_has_the_same_length_for_every_model(two_groups):
    router = fitted(two_groups)
    dim = two_groups.val.X.shape[1]
    expected = 1 + (dim * 8 + 8) + (8 * 4 + 4) + (4 * 1 + 1)
    pool = two_groups.pool(router)
    assert pool.features.shape == (2, expected)
    # A stored Psi of the wrong length is refused when the pool is routed over.
    short = Pool(pool.names, pool.costs, pool.scores, pool.features[:, :-1])
    with pytest.raises(RouterError, match=f"{expected - 1} packed weights.*need {expected}"):
        router.predict_error(two_groups.test.X, short)
    bad_kind = pool.features.copy()
    bad_kind[1, 0] = 7.0
    with pytest.raises(RouterError, match="unknown output kind"):
        router.predict_error(two_groups.test.X, Pool(pool.names, pool.costs, pool.scores, bad_kind))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes"),
        ({"hidden_layer_sizes": "64"}, "hidden_layer_sizes"),
        ({"max_iter": 0}, "max_iter"),
        ({"alpha": -1.0}, "alpha"),
    ],
)
def test_bad_parameters_are_reported_at_fit(params, message, two_groups):
    with pytest.raises(RouterError, match=message):
        RetrainedMLP(**params).fit(*two_groups.fit_args())


def larger_problem(n_per_group=40, seed=4):
    rng = np.random.default_rng(seed)
    group = np.repeat([0, 1], n_per_group)
    X = np.zeros((len(group), 5))
    X[np.arange(len(group)), group] = 1.0
    X += 0.3 * rng.normal(size=X.shape)
    S = np.column_stack([group == 0, rng.random(len(group)) < 0.5]).astype(float)
    return X, S


def test_early_stopping_holds_out_part_of_the_scored_prompts_when_there_are_enough():
    X, S = larger_problem()
    router = RetrainedMLP(**PARAMS).fit(X, S, X, S, [1.0, 1.0])
    pool = router.make_pool(["A", "B"], S, [1.0, 1.0])
    for j in range(2):
        reference = MLPClassifier(**PARAMS, early_stopping=True).fit(X, (1.0 - S[:, j]).astype(int))
        np.testing.assert_allclose(
            router.predict_error(X, pool)[:, j],
            reference.predict_proba(X)[:, 1],
            rtol=1e-10,
            atol=1e-12,
        )
    without = RetrainedMLP(**PARAMS, early_stopping=False).fit(X, S, X, S, [1.0, 1.0])
    assert not np.array_equal(without.make_pool(["A", "B"], S, [1.0, 1.0]).features, pool.features)


def test_a_class_too_rare_to_split_trains_without_early_stopping():
    X, S = larger_problem()
    scores = np.ones(len(X))
    scores[0] = 0.0  # a single error: no stratified hold-out is possible
    router = RetrainedMLP(**PARAMS).fit(X, S, X, S, [1.0, 1.0])
    pool = router.make_pool(["A", "B", "rarely-wrong"], np.column_stack([S, scores]), [1, 1, 0.5])
    reference = MLPClassifier(**PARAMS).fit(X, (1.0 - scores).astype(int))
    np.testing.assert_allclose(
        router.predict_error(X, pool)[:, 2],
        reference.predict_proba(X)[:, 1],
        rtol=1e-10,
        atol=1e-12,
    )
