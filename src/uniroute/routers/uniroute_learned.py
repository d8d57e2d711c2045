"""UniRoute with a learned soft cluster map: err(x, h) = softmax(W x + b) . Psi(h).

Psi(h) is exactly the K-means router's per-cluster error profile (computed from the hard
K-means clusters of the representative prompts); only the prompt-side map Phi is learned, from
the training prompts and training LLMs, so new models still join with no retraining.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Integral
from typing import TYPE_CHECKING

import numpy as np

from uniroute._checks import non_negative_number
from uniroute.errors import RouterError
from uniroute.pool import Pool
from uniroute.routers.selection import check_random_state
from uniroute.routers.uniroute_kmeans import (
    DEFAULT_K_GRID,
    ClusterProfileRouter,
    normalize_rows,
)

if TYPE_CHECKING:
    from scipy.optimize import OptimizeResult

#: Probabilities are clipped to [EPS, 1 - EPS] inside the log loss.
EPS = 1e-6
#: Inverse temperatures tried for the K-means initialisation when temperature_init is None.
BETA_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)
#: Penalties tried when l2="auto" (the largest wins ties: the simpler map).
DEFAULT_L2_GRID = (0.0, 1e-5, 1e-4, 1e-3)
#: Share of the training prompts held out to choose the number of optimiser iterations.
HOLDOUT_FRACTION = 0.1
#: The held-out run stops after this many iterations without a better held-out loss.
PATIENCE = 10


def softmax_rows(Z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    Z = Z - Z.max(axis=1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=1, keepdims=True)
    return Z


def kmeans_initial_map(centroids: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) with softmax(W x + b) = softmax(-beta * ||x - c_k||^2 / 2) over the centroids.

    W_k = beta * c_k and b_k = -beta * ||c_k||^2 / 2; the dropped term -beta * ||x||^2 / 2 is the
    same for every k, so the argmax is the nearest centroid and large beta gives the hard map.
    """
    return beta * centroids, -0.5 * beta * (centroids**2).sum(axis=1)


#: (L2-normalised prompt embeddings, soft error labels, observed mask) of training prompts.
TrainingData = tuple[np.ndarray, np.ndarray, np.ndarray]


def map_log_loss(
    theta: np.ndarray,
    X: np.ndarray,
    targets: np.ndarray,
    observed: np.ndarray,
    profiles: np.ndarray,
    l2: float,
) -> tuple[float, np.ndarray]:
    """Penalised log loss of the soft map and its gradient with respect to theta = [W.ravel(), b].

    p(wrong | x, h) = clip(softmax(W x + b) . Psi(h), EPS, 1 - EPS); ``targets`` (n, m) are the
    soft error labels 1 - score, used only where ``observed``; ``profiles`` is Psi as (K, m).
    The loss is the mean log loss over observed pairs plus ``l2 * ||W||^2``. The two products
    with X run in X's dtype (float32 halves the training time); the rest is float64.
    """
    n_clusters, dim = profiles.shape[0], X.shape[1]
    W = theta[: n_clusters * dim].reshape(n_clusters, dim)
    b = theta[n_clusters * dim :]
    phi = softmax_rows(X @ W.T.astype(X.dtype) + b.astype(X.dtype))
    p = phi @ profiles
    clipped = np.clip(p, EPS, 1.0 - EPS)
    n_observed = max(int(observed.sum()), 1)
    log_likelihood = targets * np.log(clipped) + (1.0 - targets) * np.log1p(-clipped)
    loss = -np.where(observed, log_likelihood, 0.0).sum() / n_observed + l2 * float((W**2).sum())
    # The clip is flat outside [EPS, 1 - EPS], so those pairs contribute no gradient.
    active = observed & (p > EPS) & (p < 1.0 - EPS)
    d_p = np.where(active, (clipped - targets) / (clipped * (1.0 - clipped)), 0.0) / n_observed
    d_phi = d_p @ profiles.T
    d_logits = phi * (d_phi - (d_phi * phi).sum(axis=1, keepdims=True))
    d_W = (d_logits.T.astype(X.dtype) @ X).astype(float) + 2.0 * l2 * W
    d_b = d_logits.sum(axis=0)
    return loss, np.concatenate([d_W.ravel(), d_b])


def _minimize(
    theta0: np.ndarray,
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
    profiles: np.ndarray,
    l2: float,
    max_iter: int,
    callback: Callable[[OptimizeResult], None] | None = None,
) -> np.ndarray:
    """L-BFGS-B on ``map_log_loss`` from theta0 for at most ``max_iter`` iterations."""
    if max_iter == 0:
        return theta0
    # Imported here: routing from a saved artifact needs numpy only, not SciPy.
    from scipy.optimize import minimize

    result = minimize(
        map_log_loss,
        theta0,
        args=(*data, profiles, l2),
        jac=True,
        method="L-BFGS-B",
        callback=callback,
        options={"maxiter": max_iter},
    )
    if not np.isfinite(result.x).all() or not math.isfinite(result.fun):
        raise RouterError(f"the cluster map diverged during training ({result.message})")
    return result.x


class UniRouteLearnedMap(ClusterProfileRouter):
    """UniRoute with a learned soft cluster map: err(x, h) = Phi_theta(x) . Psi(h).

    Psi(h) is the K-means router's shrunk per-cluster error of h on the representative prompts
    (see ``UniRouteKMeans``), from the hard K-means clusters of those prompts; it stays fixed, for
    the training LLMs during training and for any model added later. K is given or chosen exactly
    as in ``UniRouteKMeans`` (``n_clusters_``, ``selection_scores_``).

    Phi_theta(x) = softmax(W x + b) over the K clusters, x the L2-normalised embedding. W (K x D)
    and b (K) minimise, over the training prompts and training LLMs only, the mean log loss of the
    soft error label 1 - score (missing scores skipped) under p(wrong | x, h) = Phi(x) . Psi(h),
    plus ``l2 * ||W||^2``, with L-BFGS-B and an analytic gradient. The start is the K-means map
    W_k = beta c_k, b_k = -beta ||c_k||^2 / 2 with beta = 1 / ``temperature_init`` or, when that
    is None, the value of ``BETA_GRID`` with the lowest penalised training loss. The number of
    iterations (at most ``max_iter``) is the one with the lowest log loss on a seeded 10% of the
    training prompts held out from a first run (stopped after ``PATIENCE`` iterations without
    improvement); the map is then refitted on all of them for that many iterations.
    With ``l2="auto"`` the penalty is the value of ``l2_grid`` with the lowest held-out log loss
    (each tried with its own start and iteration count).
    Learned state: ``W_``, ``b_``, ``beta_`` (initial inverse temperature), ``n_iter_``, ``l2_``.
    """

    name = "uniroute-learned"
    W_: np.ndarray
    b_: np.ndarray
    beta_: float
    n_iter_: int
    l2_: float

    def __init__(
        self,
        n_clusters: str | int = "auto",
        k_grid: Sequence[int] = DEFAULT_K_GRID,
        prior_strength: float = 1.0,
        psi_prior: str = "population",
        l2: float | str = "auto",
        l2_grid: Sequence[float] = DEFAULT_L2_GRID,
        max_iter: int = 200,
        temperature_init: float | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.k_grid = k_grid
        self.prior_strength = prior_strength
        self.psi_prior = psi_prior
        self.l2 = l2
        self.l2_grid = l2_grid
        self.max_iter = max_iter
        self.temperature_init = temperature_init
        self.random_state = random_state

    def _fit(
        self,
        X_train: np.ndarray,
        S_train: np.ndarray,
        X_val: np.ndarray,
        S_val: np.ndarray,
        costs: np.ndarray,
    ) -> None:
        if isinstance(self.l2, str):
            if self.l2 != "auto":
                raise RouterError(f'l2 must be a number >= 0 or "auto", got {self.l2!r}')
            l2_grid = tuple(non_negative_number(v, "l2_grid", RouterError) for v in self.l2_grid)
            if not l2_grid:
                raise RouterError("l2_grid is empty")
        else:
            l2_grid = (non_negative_number(self.l2, "l2", RouterError),)
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, Integral):
            raise RouterError(f"max_iter must be an integer >= 0, got {self.max_iter!r}")
        if self.max_iter < 0:
            raise RouterError(f"max_iter must be an integer >= 0, got {self.max_iter!r}")
        if self.temperature_init is not None:
            temperature = non_negative_number(
                self.temperature_init, "temperature_init", RouterError
            )
            if temperature == 0:
                raise RouterError("temperature_init must be > 0 (or None to choose it)")
        random_state = check_random_state(self.random_state)

        self._fit_clusters(X_train, S_train, S_val, costs)
        # The training LLMs' Psi, by the same rule that describes every model added later.
        profiles = self.describe_models(S_val)[0].T
        X = normalize_rows(X_train).astype(np.float32)
        S_train = np.asarray(S_train, dtype=float)
        observed = np.isfinite(S_train)
        keep = observed.any(axis=1)
        if not keep.any():
            raise RouterError("the training LLMs have no observed score on any training prompt")
        data = (X[keep], np.where(observed, 1.0 - S_train, 0.0)[keep], observed[keep])

        order = np.random.default_rng(random_state).permutation(len(data[0]))
        n_holdout = int(round(HOLDOUT_FRACTION * len(order)))
        holdout = tuple(part[order[:n_holdout]] for part in data)
        fit_part = tuple(part[order[n_holdout:]] for part in data)

        # With l2="auto" the penalty is chosen, like the iteration count, by the log loss on the
        # held-out training prompts: too strong a penalty flattens Phi towards uniform weights,
        # which makes every prompt look alike (the ZeroRouter).
        candidates = []
        for l2 in l2_grid:
            beta = self._initial_beta(fit_part, profiles, l2)
            theta0 = self._initial_theta(beta)
            n_iter, holdout_loss = self._iterations_by_holdout(
                theta0, fit_part, holdout, profiles, l2
            )
            candidates.append((holdout_loss, l2, beta, n_iter))
        _, l2, beta, n_iter = min(candidates, key=lambda c: (c[0], -c[1]))
        theta0 = self._initial_theta(beta)
        theta = _minimize(theta0, data, profiles, l2, n_iter)

        dim = X.shape[1]
        self.W_ = theta[: self.n_clusters_ * dim].reshape(self.n_clusters_, dim)
        self.b_ = theta[self.n_clusters_ * dim :]
        self.beta_ = float(beta)
        self.n_iter_ = n_iter
        self.l2_ = float(l2)

    def _initial_beta(self, fit_part: TrainingData, profiles: np.ndarray, l2: float) -> float:
        """Inverse temperature of the K-means start: given, or the best of BETA_GRID."""
        if self.temperature_init is not None:
            return 1.0 / float(self.temperature_init)
        # The penalised objective, not the bare log loss: a start whose ||W||^2 dwarfs the
        # data term would spend the first iterations only shrinking W.
        losses = [
            map_log_loss(self._initial_theta(b), *fit_part, profiles, l2)[0] for b in BETA_GRID
        ]
        return BETA_GRID[int(np.argmin(losses))]

    def _iterations_by_holdout(
        self,
        theta0: np.ndarray,
        fit_part: TrainingData,
        holdout: TrainingData,
        profiles: np.ndarray,
        l2: float,
    ) -> tuple[int, float]:
        """Iteration count with the lowest held-out log loss, and that loss (inf: no hold-out)."""
        n_iter = int(self.max_iter)
        if len(holdout[0]) == 0 or len(fit_part[0]) == 0 or n_iter == 0:
            return n_iter, math.inf
        holdout_losses = [map_log_loss(theta0, *holdout, profiles, 0.0)[0]]

        def record(intermediate_result: OptimizeResult) -> None:
            holdout_losses.append(map_log_loss(intermediate_result.x, *holdout, profiles, 0.0)[0])
            if len(holdout_losses) - 1 - int(np.argmin(holdout_losses)) >= PATIENCE:
                raise StopIteration

        _minimize(theta0, fit_part, profiles, l2, n_iter, record)
        best = int(np.argmin(holdout_losses))
        return best, float(holdout_losses[best])

    def _initial_theta(self, beta: float) -> np.ndarray:
        W, b = kmeans_initial_map(self.centroids_, beta)
        return np.concatenate([W.ravel(), b])

    def soft_clusters(self, X: np.ndarray) -> np.ndarray:
        """Phi_theta(x): each prompt's weights over the K clusters, shape (n, K)."""
        return softmax_rows(self._normalized_prompts(X) @ self.W_.T + self.b_)

    def cluster_weights(self, X: np.ndarray) -> np.ndarray:
        """Phi(x): the learned soft weights over the K clusters, shape (n, K); rows sum to 1."""
        return self.soft_clusters(X)

    def _predict_error(self, X: np.ndarray, pool: Pool) -> np.ndarray:
        return self.soft_clusters(X) @ pool.features.T

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {
            **super()._state_arrays(),
            "W": self.W_,
            "b": self.b_,
            "beta": np.array(self.beta_),
            "n_iter": np.array(self.n_iter_),
            "l2": np.array(self.l2_),
        }

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        super()._load_state(arrays)
        self.W_ = arrays["W"]
        self.b_ = arrays["b"]
        self.beta_ = float(arrays["beta"])
        self.n_iter_ = int(arrays["n_iter"])
        self.l2_ = float(arrays["l2"])
