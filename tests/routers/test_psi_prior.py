"""PsiPrior: a population prior over per-cluster errors, checked where the truth is known.

The synthetic population is a one-factor Gaussian: an LLM's per-cluster error is
mu_k + loading_k * f + idiosyncratic noise, so clusters are strongly correlated across LLMs and
cluster 0 is much easier than the others (its own-mean estimate is badly biased). Each LLM
answers N_PROMPTS Bernoulli prompts per cluster.
"""

from __future__ import annotations

import numpy as np
import pytest

from uniroute.errors import RouterError
from uniroute.routers.psi_prior import STATE_PREFIX, PsiPrior, cluster_statistics
from uniroute.routers.uniroute_kmeans import cluster_error_profile

K = 6
MU = np.array([0.12, 0.35, 0.40, 0.45, 0.50, 0.55])
LOADING = np.array([0.10, 0.12, 0.12, 0.11, 0.12, 0.10])
IDIOSYNCRATIC = 0.02
N_PROMPTS = 40


def draw_psi(rng: np.random.Generator, n_models: int) -> np.ndarray:
    """True per-cluster errors (n_models, K) of LLMs from the one-factor population."""
    factor = rng.normal(size=(n_models, 1))
    psi = MU + factor * LOADING + IDIOSYNCRATIC * rng.normal(size=(n_models, K))
    return np.clip(psi, 0.02, 0.98)


def draw_prompts(
    rng: np.random.Generator, psi: np.ndarray, n_per_cluster: int = N_PROMPTS
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster labels (n,) and 0/1 prompt errors (n, n_models) drawn from ``psi``."""
    labels = np.repeat(np.arange(K), n_per_cluster)
    errors = (rng.random((len(labels), len(psi))) < psi.T[labels]).astype(float)
    return labels, errors


@pytest.fixture(scope="module")
def prior() -> PsiPrior:
    rng = np.random.default_rng(0)
    labels, errors = draw_prompts(rng, draw_psi(rng, 20))
    return PsiPrior.from_prompt_errors(labels, errors, K)


def rmse(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((estimate - truth) ** 2)))


def test_cluster_statistics_are_sums_counts_and_sample_variances():
    labels = np.array([0, 0, 0, 1, 2])
    errors = np.array([[1.0, 0.0], [0.0, np.nan], [1.0, 1.0], [0.5, np.nan], [np.nan, np.nan]])
    sums, counts, variance = cluster_statistics(labels, errors, 4)
    np.testing.assert_allclose(sums, [[2.0, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(counts, [[3, 1, 0, 0], [2, 0, 0, 0]])
    np.testing.assert_allclose(variance[:, 0], [np.var([1, 0, 1], ddof=1), 0.5])
    assert np.isnan(variance[:, 1:]).all()  # fewer than two scores: no variance


def test_the_fit_recovers_the_population(prior):
    # mu is the training LLMs' average profile (20 LLMs: within sampling error of MU).
    rng = np.random.default_rng(0)
    labels, errors = draw_prompts(rng, draw_psi(rng, 20))
    sums, counts, _ = cluster_statistics(labels, errors, K)
    np.testing.assert_allclose(prior.mean_, (sums / counts).mean(axis=0))
    np.testing.assert_allclose(prior.mean_, MU, atol=0.1)
    correlation = prior.cov_ / np.outer(prior.prior_std, prior.prior_std)
    # The factor makes every pair strongly correlated; shrinkage may weaken but not erase that.
    off_diagonal = correlation[~np.eye(K, dtype=bool)]
    assert off_diagonal.mean() > 0.4
    # One prompt's 0/1 error has variance e(1 - e): about 0.1 in cluster 0, near 0.25 elsewhere.
    assert 0.05 < prior.noise_var_[0] < 0.15
    assert (prior.noise_var_[1:] > 0.18).all()


def test_an_unanswered_cluster_is_predicted_from_the_correlated_clusters(prior):
    rng = np.random.default_rng(1)
    psi = draw_psi(rng, 300)
    labels, errors = draw_prompts(rng, psi)
    errors[labels == 0] = np.nan  # no new model answered any cluster-0 prompt
    sums, counts, _ = cluster_statistics(labels, errors, K)

    posterior, _ = prior.posterior(sums, counts)
    own_mean = cluster_error_profile(labels, errors, K, prior_strength=1.0).T

    truth = psi[:, 0]
    # Today's rule puts the model's mean over the other (much harder) clusters into cluster 0.
    assert rmse(posterior[:, 0], truth) < 0.5 * rmse(own_mean[:, 0], truth)
    # And the correlations carry information beyond the population mean of cluster 0.
    assert rmse(posterior[:, 0], truth) < 0.8 * rmse(np.full_like(truth, prior.mean_[0]), truth)
    # Answered clusters are estimated at least as well as by today's rule.
    assert rmse(posterior[:, 1:], psi[:, 1:]) <= rmse(own_mean[:, 1:], psi[:, 1:]) + 1e-3


def test_a_sparse_cluster_shrinks_toward_the_prediction_not_toward_the_own_mean(prior):
    # A fairly strong model that got its only two cluster-0 prompts wrong.
    counts = np.array([2.0, 400, 400, 400, 400, 400])
    means = np.concatenate([[1.0], prior.mean_[1:] - 0.04])
    with_two, _ = prior.posterior(means * counts, counts)
    counts_none = counts.copy()
    counts_none[0] = 0.0
    prediction, _ = prior.posterior(means * counts_none, counts_none)
    # Today's rule on the same evidence, one prompt per row at its cluster's mean error.
    labels = np.repeat(np.arange(K), counts.astype(int))
    today = cluster_error_profile(labels, means[labels], K, prior_strength=1.0)
    # Predicted easier than the average LLM there, as in its other clusters.
    assert 0.0 < prediction[0] < prior.mean_[0]
    # Two prompts move the estimate off the prediction toward 1, but only part of the way,
    # while today's rule puts it near the two wrong answers.
    assert prediction[0] < with_two[0] < 0.5 * (prediction[0] + 1.0)
    assert with_two[0] < today[0] - 0.3


@pytest.mark.parametrize("means", [MU, np.array([0.9, 0.05, 0.1, 0.8, 0.3, 0.6])])
def test_plenty_of_evidence_gives_the_observed_mean(prior, means):
    # The second profile contradicts the population's correlations; evidence still wins.
    counts = np.full(K, 1e6)
    posterior, std = prior.posterior(means * counts, counts)
    np.testing.assert_allclose(posterior, means, atol=2e-3)
    assert (std < 2e-3).all()


def test_the_posterior_is_the_gaussian_conditional_on_the_observed_clusters(prior):
    counts = np.array([0.0, 5, 0, 30, 2, 0])
    means = np.array([np.nan, 0.5, np.nan, 0.3, 0.7, np.nan])
    seen = counts > 0
    mu, cov = prior.mean_, prior.cov_
    R = np.diag(prior.noise_var_[seen] / counts[seen])
    gain = cov[:, seen] @ np.linalg.inv(cov[np.ix_(seen, seen)] + R)
    expected_mean = mu + gain @ (means[seen] - mu[seen])
    expected_cov = cov - gain @ cov[seen, :]

    posterior, std = prior.posterior(np.where(seen, means * counts, np.nan), counts)
    assert ((expected_mean > 0) & (expected_mean < 1)).all()  # nothing clipped here
    np.testing.assert_allclose(posterior, expected_mean, atol=1e-10)
    np.testing.assert_allclose(std, np.sqrt(np.diag(expected_cov)), atol=1e-10)


def test_std_is_largest_where_there_is_no_evidence(prior):
    means = np.array([0.1, 0.3, 0.4, 0.4, 0.5, 0.6])
    none_in_0 = np.array([0.0, 1e4, 1e4, 1e4, 1e4, 1e4])
    _, std = prior.posterior(means * none_in_0, none_in_0)
    assert std[0] > 3 * std[1:].max()
    # The observed, correlated clusters still tell something about cluster 0.
    assert std[0] < prior.prior_std[0]
    # And evidence in cluster 0 itself narrows it further, the more the narrower.
    previous = std[0]
    for n in (3.0, 30.0, 300.0):
        _, std = prior.posterior(means * np.r_[n, none_in_0[1:]], np.r_[n, none_in_0[1:]])
        assert std[0] < previous
        previous = std[0]


def test_no_evidence_at_all_gives_the_prior(prior):
    mean, std = prior.posterior(np.full(K, np.nan), np.zeros(K))
    np.testing.assert_allclose(mean, np.clip(prior.mean_, 0, 1))
    np.testing.assert_allclose(std, np.sqrt(np.diag(prior.cov_)))
    np.testing.assert_allclose(std, prior.prior_std)


def test_means_are_clipped_to_the_unit_interval(prior):
    counts = np.array([0.0, 1e6, 1e6, 1e6, 1e6, 1e6])
    means = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # far below the population: extrapolates
    mean, _ = prior.posterior(means * counts, counts)
    assert (mean >= 0).all() and (mean <= 1).all()


def test_vectorised_and_single_model_calls_agree(prior):
    rng = np.random.default_rng(2)
    counts = rng.integers(0, 6, size=(9, K)).astype(float)
    counts[0] = 0.0  # no evidence at all
    counts[1] = 1e5  # plenty everywhere
    sums = rng.random((9, K)) * counts
    means, stds = prior.posterior(sums, counts)
    assert means.shape == stds.shape == (9, K)
    for row in range(9):
        mean, std = prior.posterior(sums[row], counts[row])
        np.testing.assert_allclose(means[row], mean, atol=1e-12)
        np.testing.assert_allclose(stds[row], std, atol=1e-12)


def test_posterior_from_prompts_matches_posterior_of_the_statistics(prior):
    rng = np.random.default_rng(3)
    labels, errors = draw_prompts(rng, draw_psi(rng, 4), n_per_cluster=3)
    errors[rng.random(errors.shape) < 0.3] = np.nan
    sums, counts, _ = cluster_statistics(labels, errors, K)
    from_prompts = prior.posterior_from_prompts(labels, errors)
    for got, want in zip(from_prompts, prior.posterior(sums, counts), strict=True):
        np.testing.assert_allclose(got, want)


def test_state_round_trips_through_arrays(prior):
    arrays = prior.state_arrays()
    assert all(key.startswith(STATE_PREFIX) for key in arrays)
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in arrays.values())
    # As read back from an array store: copies, next to other routers' arrays.
    restored = PsiPrior.from_arrays(
        {"centroids": np.zeros((2, 3)), **{k: a.copy() for k, a in arrays.items()}}
    )
    for key, array in restored.state_arrays().items():
        np.testing.assert_array_equal(array, arrays[key])
    counts = np.array([0.0, 3, 10, 0, 1, 50])
    sums = 0.4 * counts
    for got, want in zip(
        restored.posterior(sums, counts), prior.posterior(sums, counts), strict=True
    ):
        np.testing.assert_array_equal(got, want)


def test_corrupt_or_incomplete_state_is_refused(prior):
    arrays = prior.state_arrays()
    with pytest.raises(RouterError, match="lacks"):
        PsiPrior.from_arrays({k: v for k, v in arrays.items() if not k.endswith("cov")})
    not_definite = dict(arrays, **{STATE_PREFIX + "cov": -np.eye(K)})
    with pytest.raises(RouterError, match="positive definite"):
        PsiPrior.from_arrays(not_definite)
    zero_noise = dict(arrays, **{STATE_PREFIX + "noise_var": np.zeros(K)})
    with pytest.raises(RouterError, match="noise_var"):
        PsiPrior.from_arrays(zero_noise)


def test_nan_cells_and_fewer_llms_than_clusters_give_finite_output():
    rng = np.random.default_rng(4)
    n_clusters = 10
    errors = rng.random((3, n_clusters)) * 0.6
    counts = rng.integers(1, 20, size=(3, n_clusters)).astype(float)
    errors[0, 2] = np.nan  # a missing cell
    counts[1, 3] = 0.0  # a cell with no scored prompt (its value must be ignored)
    errors[:, 7] = np.nan  # a cluster no training LLM answered
    errors[:, 8] = 0.0  # a cluster every LLM got right: no spread, no noise
    within = np.where(np.isfinite(errors), errors * (1 - errors), np.nan)
    within[:, 9] = np.nan  # no variance information in one cluster
    prior = PsiPrior.fit(errors, counts, within)

    assert np.isfinite(prior.mean_).all() and np.isfinite(prior.cov_).all()
    np.linalg.cholesky(prior.cov_)  # positive definite
    assert np.linalg.cond(prior.cov_) < 1e4
    assert (prior.noise_var_ >= 0.01).all() and (np.diag(prior.cov_) >= 1e-3 - 1e-12).all()

    test_counts = rng.integers(0, 5, size=(6, n_clusters)).astype(float)
    mean, std = prior.posterior(rng.random((6, n_clusters)) * test_counts, test_counts)
    assert np.isfinite(mean).all() and np.isfinite(std).all() and (std >= 0).all()


def test_a_single_training_llm_still_gives_a_usable_prior():
    prior = PsiPrior.fit(np.array([[0.2, 0.5, np.nan]]), np.array([[10.0, 4.0, 0.0]]))
    mean, std = prior.posterior(np.array([1.0, 0.0, 0.0]), np.array([5.0, 0.0, 0.0]))
    assert np.isfinite(mean).all() and (std > 0).all()


def test_pooled_noise_weights_variances_by_degrees_of_freedom_and_is_floored():
    errors = np.array([[0.5, 0.0], [0.5, 0.0]])
    counts = np.array([[3.0, 10.0], [11.0, 10.0]])
    within = np.array([[0.1, 0.0], [0.3, 0.0]])
    prior = PsiPrior.fit(errors, counts, within, noise_floor=0.02)
    np.testing.assert_allclose(prior.noise_var_, [(2 * 0.1 + 10 * 0.3) / 12, 0.02])


@pytest.mark.parametrize(
    ("sums", "counts", "match"),
    [
        (np.zeros(K - 1), np.zeros(K - 1), "clusters"),
        (np.zeros(K), np.zeros((1, K)), "shape"),
        (np.zeros(K), -np.ones(K), "counts"),
        (np.full(K, np.nan), np.ones(K), "sums"),
    ],
)
def test_bad_posterior_inputs_are_refused(prior, sums, counts, match):
    with pytest.raises(RouterError, match=match):
        prior.posterior(sums, counts)


def test_bad_training_inputs_are_refused():
    with pytest.raises(RouterError, match="cluster_counts"):
        PsiPrior.fit(np.zeros((3, 2)), np.ones((3, 3)))
    with pytest.raises(RouterError, match="no training LLM"):
        PsiPrior.fit(np.full((3, 2), np.nan), np.ones((3, 2)))
    with pytest.raises(RouterError, match="ridge"):
        PsiPrior.fit(np.zeros((3, 2)), np.ones((3, 2)), ridge=0.0)


def test_a_cell_without_scored_prompts_is_ignored_whatever_it_holds():
    rng = np.random.default_rng(5)
    errors = rng.random((6, 4)) * 0.5
    counts = np.full((6, 4), 20.0)
    counts[2, 1] = 0.0
    with_garbage = errors.copy()
    with_garbage[2, 1] = 0.99
    with_nan = errors.copy()
    with_nan[2, 1] = np.nan
    garbage, missing = PsiPrior.fit(with_garbage, counts), PsiPrior.fit(with_nan, counts)
    for key, array in garbage.state_arrays().items():
        np.testing.assert_array_equal(array, missing.state_arrays()[key])


def level_population(rng, n_models: int, n_clusters: int = 6, n: int = 40):
    """Training LLMs whose errors share one level per LLM plus small per-cluster deviations."""
    base = rng.uniform(0.2, 0.6, size=n_clusters)
    level = rng.normal(0.0, 0.15, size=n_models)
    truth = np.clip(
        base[None, :] + level[:, None] + rng.normal(0, 0.03, (n_models, n_clusters)), 0.02, 0.98
    )
    counts = np.full((n_models, n_clusters), float(n))
    observed = rng.binomial(n, truth) / n
    return truth, observed, counts


def test_the_level_form_carries_a_models_level_to_an_unanswered_cluster():
    rng = np.random.default_rng(7)
    _, errors, counts = level_population(rng, n_models=6)
    prior = PsiPrior.fit(errors, counts, structure="level")
    weak = prior.mean_ + 0.25  # a model clearly worse than the population everywhere
    sums, seen = weak * 40, np.full(6, 40.0)
    sums[5], seen[5] = 0.0, 0.0  # ... that never answered cluster 5
    mean, std = prior.posterior(sums, seen)
    # Predicted worse than the population there too, by most of its level; not its own mean.
    assert mean[5] > prior.mean_[5] + 0.15
    own_mean = weak[:5].mean()
    assert abs(mean[5] - (prior.mean_[5] + 0.25)) < abs(own_mean - (prior.mean_[5] + 0.25))
    assert std[5] > std[:5].mean()


def test_the_level_form_is_well_conditioned_with_few_llms_and_many_clusters():
    rng = np.random.default_rng(8)
    _, errors, counts = level_population(rng, n_models=4, n_clusters=30, n=10)
    errors[0, :10] = np.nan
    prior = PsiPrior.fit(errors, counts, structure="level")
    assert np.isfinite(prior.cov_).all()
    assert np.linalg.cond(prior.cov_) < 30 / 0.05 * 1.01
    mean, std = prior.posterior(np.full(30, 4.0), np.full(30, 10.0))
    assert np.isfinite(mean).all() and np.isfinite(std).all()


def test_an_unknown_covariance_structure_is_refused():
    rng = np.random.default_rng(9)
    _, errors, counts = level_population(rng, n_models=5)
    with pytest.raises(RouterError, match="structure must be one of"):
        PsiPrior.fit(errors, counts, structure="full")
