"""UniRoute with a K-means cluster map: err(x, h) = Psi_{k(x)}(h), the error of model h on the
representative prompts of the cluster that prompt x falls into.

The clusters are learned once from the training prompts; a model is described by its
per-cluster error on the representative (validation) prompts, so a new model joins the pool by
answering those prompts, with no retraining.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from uniroute._checks import non_negative_number
from uniroute.errors import RouterError
from uniroute.pool import Pool
from uniroute.routers.base import RouterEstimator
from uniroute.routers.psi_prior import STATE_PREFIX as PRIOR_STATE_PREFIX
from uniroute.routers.psi_prior import PsiPrior
from uniroute.routers.selection import (
    best_candidate,
    check_auto_or_positive_int,
    check_grid,
    check_random_state,
    cross_validate,
    fold_prior_errors,
)

#: K-means restarts; the best of a few seeded k-means++ starts is stable enough for routing.
KMEANS_N_INIT = 3
DEFAULT_K_GRID = (3, 5, 10, 20, 30, 50)


def normalize_rows(X: np.ndarray) -> np.ndarray:
    """Scale each row to unit L2 norm (all-zero rows stay zero)."""
    X = np.asarray(X, dtype=float)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


def assign_clusters(X_normalized: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (squared Euclidean distance) for each row; ties go low."""
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2 and ||x||^2 does not change the argmin.
    distances = (centroids**2).sum(axis=1)[None, :] - 2.0 * X_normalized @ centroids.T
    return distances.argmin(axis=1)


def cluster_error_profile(
    labels: np.ndarray,
    errors: np.ndarray,
    n_clusters: int,
    prior_strength: float,
    prior_errors: np.ndarray | None = None,
) -> np.ndarray:
    """Per-cluster mean error of each model, shrunk toward the model's overall mean error.

    ``errors`` is (n,) or (n, m) with NaN for missing scores and ``labels`` the cluster of each
    row. With n_k(h) observed errors of model h in cluster k and g(h) its mean error over all
    observed rows (or ``prior_errors`` when given),

        Psi_k(h) = (sum of observed errors of h in k + a * g(h)) / (n_k(h) + a),

    with a = ``prior_strength``. An empty cluster, or one where every score of h is missing,
    gets g(h); a cluster with few observations is pulled toward g(h).
    Returns (n_clusters,) or (n_clusters, m).
    """
    errors = np.asarray(errors, dtype=float)
    one_model = errors.ndim == 1
    errors = errors.reshape(len(errors), -1)
    observed = np.isfinite(errors)
    membership = np.zeros((len(labels), n_clusters))
    membership[np.arange(len(labels)), labels] = 1.0
    sums = membership.T @ np.where(observed, errors, 0.0)
    counts = membership.T @ observed.astype(float)
    if prior_errors is None:
        total = counts.sum(axis=0)
        prior_errors = np.divide(
            sums.sum(axis=0), total, out=np.full(errors.shape[1], np.nan), where=total > 0
        )
    prior_errors = np.asarray(prior_errors, dtype=float).reshape(-1)
    if not np.isfinite(prior_errors).all():
        raise RouterError("a model has no observed validation score, so it has no mean error")
    denominator = counts + prior_strength
    profile = np.divide(
        sums + prior_strength * prior_errors[None, :],
        denominator,
        out=np.broadcast_to(prior_errors, sums.shape).copy(),
        where=denominator > 0,
    )
    return profile[:, 0] if one_model else profile


def fit_kmeans(X_normalized: np.ndarray, n_clusters: int, random_state: int | None) -> np.ndarray:
    """Centroids of seeded K-means on (already normalised) prompt embeddings."""
    # Imported here: routing from a saved artifact needs numpy only, not scikit-learn.
    from sklearn.cluster import KMeans

    kmeans = KMeans(n_clusters=n_clusters, n_init=KMEANS_N_INIT, random_state=random_state)
    return kmeans.fit(X_normalized).cluster_centers_


#: How a model's Psi is estimated from its representative-prompt scores: "population" is the
#: posterior under a prior fitted on the training LLMs (``psi_prior.PsiPrior``); "own-mean"
#: shrinks each cluster toward the model's own mean error (the rule before the prior existed).
PSI_PRIORS = ("population", "own-mean")


class ClusterProfileRouter(RouterEstimator):
    """Shared state of the UniRoute routers: K-means clusters and per-cluster model errors Psi.

    Learned state: ``centroids_`` (K, D) on L2-normalised embeddings, ``n_clusters_``,
    ``val_clusters_`` (cluster of each representative prompt), ``selection_scores_``
    ({K: cross-validated score}, empty when K was given) and, with ``psi_prior="population"``,
    ``psi_prior_`` (the population prior of Psi, fitted on the training LLMs' errors on the
    training prompts).
    """

    n_clusters: str | int
    k_grid: Sequence[int]
    prior_strength: float
    psi_prior: str
    random_state: int | None
    psi_prior_: PsiPrior | None

    def _fit_clusters(
        self, X_train: np.ndarray, S_train: np.ndarray, S_val: np.ndarray, costs: np.ndarray
    ) -> None:
        """Fit K-means on the training prompts, choosing K by 2-fold validation when "auto"."""
        if self.psi_prior not in PSI_PRIORS:
            raise RouterError(f"psi_prior must be one of {PSI_PRIORS}, got {self.psi_prior!r}")
        n_clusters = check_auto_or_positive_int(self.n_clusters, "n_clusters")
        grid = check_grid(self.k_grid, "k_grid")
        prior_strength = non_negative_number(self.prior_strength, "prior_strength", RouterError)
        random_state = check_random_state(self.random_state)
        n_train = len(X_train)
        if n_train == 0:
            raise RouterError("no training prompts to learn clusters from")
        X_train = normalize_rows(X_train)
        X_val = normalize_rows(self.X_val_)
        errors_val = 1.0 - np.asarray(S_val, dtype=float)
        errors_train = 1.0 - np.asarray(S_train, dtype=float)
        population = self.psi_prior == "population"

        def prior_for(centroids: np.ndarray) -> PsiPrior | None:
            if not population:
                return None
            labels = assign_clusters(X_train, centroids)
            # The one-factor form: with a handful of training LLMs it is the one well determined.
            return PsiPrior.from_prompt_errors(
                labels, errors_train, len(centroids), structure="level"
            )

        if n_clusters != "auto":
            if n_clusters > n_train:
                raise RouterError(f"n_clusters={n_clusters} exceeds the {n_train} training prompts")
            centroids = fit_kmeans(X_train, n_clusters, random_state)
            self.selection_scores_: dict[int, float] = {}
        else:
            candidates = [k for k in dict.fromkeys(grid) if k <= n_train]
            if not candidates:
                raise RouterError(
                    f"every K in k_grid={list(grid)} exceeds the {n_train} training prompts"
                )
            fitted = {k: fit_kmeans(X_train, k, random_state) for k in candidates}
            val_labels = {k: assign_clusters(X_val, c) for k, c in fitted.items()}
            priors = {k: prior_for(c) for k, c in fitted.items()}

            def fold_errors(k: int, describe: np.ndarray, evaluate: np.ndarray) -> np.ndarray:
                # Each candidate K is scored with the same Psi rule the router will use.
                prior = priors[k]
                if prior is None:
                    profile = cluster_error_profile(
                        val_labels[k][describe],
                        errors_val[describe],
                        k,
                        prior_strength,
                        fold_prior_errors(errors_val, describe),
                    )
                else:
                    mean, _ = prior.posterior_from_prompts(
                        val_labels[k][describe], errors_val[describe]
                    )
                    profile = np.atleast_2d(mean).T
                return profile[val_labels[k][evaluate]]

            scores = cross_validate(candidates, fold_errors, S_val, costs, random_state)
            self.selection_scores_ = {int(k): float(v) for k, v in scores.items()}
            centroids = fitted[int(best_candidate(scores))]
        self.centroids_ = centroids
        self.n_clusters_ = len(centroids)
        self.val_clusters_ = assign_clusters(X_val, centroids)
        self.psi_prior_ = prior_for(centroids)

    def describe_models(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Psi rows (m, K) of models with these (n_representative, m) scores, and their std.

        The std is the posterior standard deviation under the population prior (None with the
        own-mean rule, which has no uncertainty model).
        """
        errors = 1.0 - np.asarray(scores, dtype=float).reshape(len(self.val_clusters_), -1)
        if self.psi_prior_ is None:
            profile = cluster_error_profile(
                self.val_clusters_, errors, self.n_clusters_, float(self.prior_strength)
            )
            return np.atleast_2d(profile.T), None
        mean, std = self.psi_prior_.posterior_from_prompts(self.val_clusters_, errors)
        return np.atleast_2d(mean), np.atleast_2d(std)

    def _model_features(self, scores: np.ndarray) -> np.ndarray:
        """Psi(h): the model's estimated error in each cluster of the representative prompts."""
        return self.describe_models(scores)[0][0]

    def describe_pool(
        self, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Psi rows, evidence counts and std of every model at once (one posterior call)."""
        features, std = self.describe_models(scores)
        return features, self._evidence_counts(scores), std

    def pool_evidence(self, scores: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Evidence counts and Psi's std of every model of (n_representative, m) scores."""
        return self._evidence_counts(scores), self.describe_models(scores)[1]

    def _evidence_counts(self, scores: np.ndarray) -> np.ndarray:
        """(m, K): each model's number of scored representative prompts in each cluster."""
        observed = np.isfinite(np.asarray(scores, dtype=float)).reshape(len(self.val_clusters_), -1)
        membership = np.zeros((self.n_clusters_, len(self.val_clusters_)))
        membership[self.val_clusters_, np.arange(len(self.val_clusters_))] = 1.0
        return (membership @ observed).T

    def model_evidence(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Per cluster: the model's number of scored representative prompts, and Psi's std."""
        values = self._check_scores(scores, "model")
        _, std = self.describe_models(values)
        return self._evidence_counts(values)[0], None if std is None else std[0]

    def clusters(self, X: np.ndarray) -> np.ndarray:
        """Hard cluster index k(x) of each prompt embedding."""
        return assign_clusters(self._normalized_prompts(X), self.centroids_)

    def cluster_weights(self, X: np.ndarray) -> np.ndarray:
        """Phi(x): each prompt's weights over the K clusters, shape (n, K); one-hot on k(x).

        err(x, h) = Phi(x) . Psi(h) for every cluster router; the learned map overrides this
        with its soft weights.
        """
        labels = self.clusters(X)
        weights = np.zeros((len(labels), self.n_clusters_))
        weights[np.arange(len(labels)), labels] = 1.0
        return weights

    def _normalized_prompts(self, X: np.ndarray) -> np.ndarray:
        self._check_fitted()
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise RouterError(f"embeddings must be (n, {self.n_features_in_}), got shape {X.shape}")
        return normalize_rows(X)

    def _state_arrays(self) -> dict[str, np.ndarray]:
        grid = np.array(sorted(self.selection_scores_), dtype=int)
        prior = {} if self.psi_prior_ is None else self.psi_prior_.state_arrays()
        return {
            "centroids": self.centroids_,
            "val_clusters": self.val_clusters_,
            "selection_k": grid,
            "selection_scores": np.array([self.selection_scores_[k] for k in grid], dtype=float),
            **prior,
        }

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        if any(key.startswith(PRIOR_STATE_PREFIX) for key in arrays):
            self.psi_prior_ = PsiPrior.from_arrays(arrays)
        else:
            # Saved before the population prior existed: keep the rule it was built with.
            self.psi_prior_ = None
            self.psi_prior = "own-mean"
        self.centroids_ = arrays["centroids"]
        self.n_clusters_ = len(self.centroids_)
        self.val_clusters_ = arrays["val_clusters"]
        self.selection_scores_ = {
            int(k): float(v)
            for k, v in zip(arrays["selection_k"], arrays["selection_scores"], strict=True)
        }


class UniRouteKMeans(ClusterProfileRouter):
    """UniRoute with a hard K-means cluster map: err(x, h) = Psi_{k(x)}(h).

    ``fit`` clusters the L2-normalised training prompts with K-means (centroids_) and assigns each
    prompt to its nearest centroid. A model h is described by

        Psi_k(h) = (sum_{i in k, observed} err_i(h) + a * g(h)) / (n_k(h) + a),

    its error on the representative prompts of cluster k. With ``psi_prior="population"`` (the
    default) Psi(h) is the posterior mean under a Gaussian prior of per-cluster errors fitted on
    the training LLMs (``psi_prior.PsiPrior``): a cluster where h has no score is predicted from
    the clusters where it has, through how the training LLMs' errors go together, and a sparse
    cluster is pulled toward that prediction; ``model_evidence`` gives the per-cluster evidence
    count and posterior std. With ``psi_prior="own-mean"`` Psi_k(h) is shrunk toward h's own
    overall mean validation error g(h) with a = ``prior_strength`` pseudo-counts (a cluster with
    no score gets g(h)). Missing scores are skipped, never read as errors.

    With ``n_clusters="auto"`` K is chosen from ``k_grid`` (values above the number of training
    prompts are dropped) by 2-fold cross-validation over the validation prompts with the training
    LLMs only: Psi from one half, routing scored on the other (see ``selection.routing_score``).
    The chosen K is ``n_clusters_`` and each K's score is in ``selection_scores_``.
    """

    name = "uniroute-kmeans"

    def __init__(
        self,
        n_clusters: str | int = "auto",
        k_grid: Sequence[int] = DEFAULT_K_GRID,
        prior_strength: float = 1.0,
        psi_prior: str = "population",
        random_state: int | None = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.k_grid = k_grid
        self.prior_strength = prior_strength
        self.psi_prior = psi_prior
        self.random_state = random_state

    def _fit(
        self,
        X_train: np.ndarray,
        S_train: np.ndarray,
        X_val: np.ndarray,
        S_val: np.ndarray,
        costs: np.ndarray,
    ) -> None:
        self._fit_clusters(X_train, S_train, S_val, costs)

    def _predict_error(self, X: np.ndarray, pool: Pool) -> np.ndarray:
        return pool.features[:, self.clusters(X)].T

    # A prompt's estimates depend on it only through its cluster, so they can be tabulated per
    # pool: predict_error(X, pool) == cluster_errors(pool)[error_rows(X, pool)], exactly.
    def cluster_errors(self, pool: Pool) -> np.ndarray:
        """Estimated error of every pool model on a prompt of each cluster: shape (K, m)."""
        self._check_pool(pool)
        return np.clip(pool.features.T, 0.0, 1.0)

    def error_rows(self, X: np.ndarray, pool: Pool) -> np.ndarray:
        """Each prompt's row of ``cluster_errors(pool)``: its cluster k(x), checked as
        ``predict_error`` checks its inputs."""
        return self.clusters(self._check_prediction_inputs(X, pool))
