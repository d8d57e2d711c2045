"""RouterEstimator.cross_fitted_errors: out-of-fold estimates on the representative prompts."""

from __future__ import annotations

import numpy as np
import pytest

from uniroute.errors import RouterError
from uniroute.pool import Pool
from uniroute.routers import RouterEstimator, UniRouteKMeans, make_estimator

# Every estimator that predicts from prompts (the oracle cannot: it reads the true scores).
PREDICTING = ["uniroute-kmeans", "uniroute-learned", "knn", "zero", "mlp", "random"]


def _fitted(name: str, two_groups, fast_params) -> RouterEstimator:
    return make_estimator(name, **fast_params[name]).fit(*two_groups.fit_args())


def _noisy_pool(estimator: RouterEstimator, seed: int = 0) -> Pool:
    """Three models whose representative-prompt scores are noisy (so each one matters), with
    some missing."""
    rng = np.random.default_rng(seed)
    n = estimator.n_representative
    scores = (rng.random((n, 3)) < [0.8, 0.5, 0.3]).astype(float)
    scores[rng.random((n, 3)) < 0.1] = np.nan
    return estimator.make_pool(["A", "B", "C"], scores, np.array([1.0, 0.5, 0.1]))


def _with_score(estimator: RouterEstimator, pool: Pool, row: int, column: int, value: float):
    scores = np.array(pool.scores)
    scores[row, column] = value
    return estimator.make_pool(pool.names, scores, pool.costs)


@pytest.mark.parametrize("name", PREDICTING)
def test_shape_range_and_determinism(name, two_groups, fast_params) -> None:
    estimator = _fitted(name, two_groups, fast_params)
    pool = _noisy_pool(estimator)
    errors = estimator.cross_fitted_errors(estimator.X_val_, pool, folds=4, seed=1)
    assert errors.shape == (estimator.n_representative, len(pool))
    assert np.isfinite(errors).all() and (errors >= 0).all() and (errors <= 1).all()
    again = estimator.cross_fitted_errors(estimator.X_val_, pool, folds=4, seed=1)
    np.testing.assert_array_equal(errors, again)


@pytest.mark.parametrize("name", PREDICTING)
def test_a_prompts_own_score_does_not_reach_its_estimate(name, two_groups, fast_params) -> None:
    """No leakage: changing prompt i's score leaves prompt i's cross-fitted row unchanged, for
    every estimator (K-NN's neighbours come only from the other folds too)."""
    estimator = _fitted(name, two_groups, fast_params)
    pool = _noisy_pool(estimator)
    before = estimator.cross_fitted_errors(estimator.X_val_, pool, folds=5, seed=0)
    for row, column in [(0, 0), (7, 1), (estimator.n_representative - 1, 2)]:
        flipped = 1.0 - np.nan_to_num(pool.scores[row, column], nan=0.0)
        changed = _with_score(estimator, pool, row, column, flipped)
        after = estimator.cross_fitted_errors(estimator.X_val_, changed, folds=5, seed=0)
        np.testing.assert_array_equal(after[row], before[row])


def test_kmeans_in_sample_estimates_do_see_the_own_score(two_groups, fast_params) -> None:
    """The contrast that makes the test above meaningful: predict_error on the representative
    prompts moves with a prompt's own score; the cross-fitted estimate does not."""
    estimator = _fitted("uniroute-kmeans", two_groups, fast_params)
    assert isinstance(estimator, UniRouteKMeans)
    pool = _noisy_pool(estimator)
    row, column = 3, 1
    flipped = 1.0 - np.nan_to_num(pool.scores[row, column], nan=0.0)
    changed = _with_score(estimator, pool, row, column, flipped)
    X = estimator.X_val_
    in_sample = estimator.predict_error(X, pool)[row, column]
    assert estimator.predict_error(X, changed)[row, column] != in_sample
    cross = estimator.cross_fitted_errors(X, pool)[row, column]
    assert estimator.cross_fitted_errors(X, changed)[row, column] == cross
    # ... while a prompt of another fold, in the same cluster, does see it.
    clusters = estimator.clusters(X)
    order = np.random.default_rng(0).permutation(len(X))
    fold_of = np.empty(len(X), dtype=int)
    for f, rows in enumerate(np.array_split(order, 5)):
        fold_of[rows] = f
    others = np.flatnonzero((clusters == clusters[row]) & (fold_of != fold_of[row]))
    assert others.size
    moved = estimator.cross_fitted_errors(X, changed)[others, column]
    assert (moved != estimator.cross_fitted_errors(X, pool)[others, column]).all()


def test_kmeans_folds_are_described_from_the_other_folds_only(two_groups, fast_params) -> None:
    """Fold f's rows are exactly predict_error over the pool made from the other folds' scores."""
    estimator = _fitted("uniroute-kmeans", two_groups, fast_params)
    pool = _noisy_pool(estimator)
    X = estimator.X_val_
    errors = estimator.cross_fitted_errors(X, pool, folds=3, seed=5)
    order = np.random.default_rng(5).permutation(len(X))
    for rows in np.array_split(order, 3):
        masked = np.array(pool.scores)
        masked[rows] = np.nan
        fold_pool = estimator.make_pool(pool.names, masked, pool.costs)
        np.testing.assert_array_equal(errors[rows], estimator.predict_error(X[rows], fold_pool))
    assert not np.array_equal(errors, estimator.cross_fitted_errors(X, pool, folds=3, seed=6))


def test_a_model_scored_only_inside_one_fold_keeps_its_in_sample_features(
    two_groups, fast_params
) -> None:
    estimator = _fitted("uniroute-kmeans", two_groups, fast_params)
    pool = _noisy_pool(estimator)
    scores = np.array(pool.scores)
    scores[:, 2] = np.nan
    scores[4, 2] = 1.0  # "C" is scored on one prompt only: no fold can describe it without it
    pool = estimator.make_pool(pool.names, scores, pool.costs)
    X = estimator.X_val_
    errors = estimator.cross_fitted_errors(X, pool)
    np.testing.assert_array_equal(errors[:, 2], estimator.predict_error(X, pool)[:, 2])


@pytest.mark.parametrize(
    "folds, message",
    [(1, r"folds must lie in \[2, 40\]"), (41, r"folds must lie in \[2, 40\]"),
     (2.5, "folds must be an integer"), (True, "folds must be an integer")],
)  # fmt: skip
def test_bad_folds_are_clear_errors(folds, message, two_groups, fast_params) -> None:
    estimator = _fitted("uniroute-kmeans", two_groups, fast_params)
    pool = _noisy_pool(estimator)
    assert estimator.n_representative == 40
    with pytest.raises(RouterError, match=message):
        estimator.cross_fitted_errors(estimator.X_val_, pool, folds=folds)
    # As many folds as prompts is leave-one-out, and allowed.
    loo = estimator.cross_fitted_errors(estimator.X_val_, pool, folds=40)
    assert loo.shape == (40, 3)


def test_inputs_must_be_the_representative_prompts(two_groups, fast_params) -> None:
    estimator = _fitted("uniroute-kmeans", two_groups, fast_params)
    pool = _noisy_pool(estimator)
    with pytest.raises(RouterError, match="one per representative prompt"):
        estimator.cross_fitted_errors(estimator.X_val_[:10], pool)
    oracle = _fitted("oracle", two_groups, fast_params)
    with pytest.raises(RouterError, match="needs the true scores"):
        oracle.cross_fitted_errors(oracle.X_val_, _noisy_pool(oracle))
