"""A population prior for the per-cluster error profile Psi, fitted on the training LLMs.

``cluster_error_profile`` shrinks a model's sparse clusters toward the model's *own* overall
mean error, so a model with no scores in a cluster is estimated there at its mean over the
clusters it did answer: onboarded on easy multiple-choice prompts only, a weak model looks like
a strong coder. This module instead treats Psi(h) in R^K as a draw from a Gaussian population
fitted on the training LLMs,

    Psi ~ N(mu, Sigma),    y_k | Psi ~ N(Psi_k, sigma_k^2 / n_k)    (n_k > 0),

where y_k is the model's observed mean error on its n_k representative prompts in cluster k and
sigma_k^2 the variance of one prompt's error around a model's cluster mean. The posterior of Psi
predicts an unanswered cluster from the clusters the model did answer (through the correlations
in Sigma), pulls a sparse cluster toward that prediction, and approaches the observed mean as
evidence grows.

Arrays here are models-first: ``cluster_errors`` and ``sums`` are (m, K) or (K,) for one model.
The fitted state is four small float arrays (``state_arrays`` / ``from_arrays``), so a router
can persist it in its checksummed array store; only numpy is needed to compute a posterior.
"""

from __future__ import annotations

import numpy as np

from uniroute.errors import RouterError

#: Key prefix of the persisted arrays, so a router can merge them into its own state dict.
STATE_PREFIX = "psi_prior_"
_STATE_KEYS = ("mean", "cov", "noise_var", "shrinkage")

#: The forms of the prior covariance ``PsiPrior.fit`` can estimate.
COVARIANCE_STRUCTURES = ("correlated", "level")

#: Fewest LLMs observed in both clusters for their correlation to be estimated at all.
_MIN_PAIR = 3


def cluster_statistics(
    labels: np.ndarray, errors: np.ndarray, n_clusters: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-model, per-cluster (sums, counts, within-cluster sample variances) of prompt errors.

    ``errors`` is (n,) or (n, m) with NaN for a missing score and ``labels`` the cluster of each
    row. Returns three (m, K) arrays (or (K,) for 1-D ``errors``); the variance (ddof=1) is NaN
    where a model has fewer than two scores in a cluster.
    """
    errors = np.asarray(errors, dtype=float)
    labels = np.asarray(labels)
    one_model = errors.ndim == 1
    errors = errors.reshape(len(errors), -1)
    if labels.shape != (len(errors),):
        raise RouterError(f"labels must be ({len(errors)},), got shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_clusters):
        raise RouterError(f"cluster labels must lie in [0, {n_clusters})")
    observed = np.isfinite(errors)
    filled = np.where(observed, errors, 0.0)
    membership = np.zeros((n_clusters, len(labels)))
    membership[labels, np.arange(len(labels))] = 1.0
    sums = (membership @ filled).T
    counts = (membership @ observed.astype(float)).T
    squares = (membership @ filled**2).T
    # Sum of squared deviations from the cluster mean, clipped: rounding can make it -1e-17.
    with np.errstate(invalid="ignore", divide="ignore"):
        deviations = np.maximum(squares - np.where(counts > 0, sums**2 / counts, 0.0), 0.0)
        variance = np.where(counts >= 2, deviations / (counts - 1.0), np.nan)
    if one_model:
        return sums[0], counts[0], variance[0]
    return sums, counts, variance


class PsiPrior:
    """Gaussian population prior N(mu, Sigma) over Psi plus a per-cluster per-prompt noise model.

    Attributes: ``mean_`` (K,), ``cov_`` (K, K) symmetric positive definite, ``noise_var_`` (K,)
    (variance of one prompt's error around a model's cluster mean, floored above zero) and
    ``shrinkage_`` (2,), the correlation and variance shrinkage intensities used in ``fit``.
    """

    def __init__(
        self,
        mean: np.ndarray,
        cov: np.ndarray,
        noise_var: np.ndarray,
        shrinkage: np.ndarray | None = None,
    ) -> None:
        """Wrap fitted arrays after checking their shapes and that ``cov`` is positive definite."""
        mean = np.asarray(mean, dtype=float)
        cov = np.asarray(cov, dtype=float)
        noise_var = np.asarray(noise_var, dtype=float)
        shrinkage = np.full(2, np.nan) if shrinkage is None else np.asarray(shrinkage, float)
        if mean.ndim != 1 or len(mean) == 0:
            raise RouterError(f"prior mean must be a non-empty (K,) array, got shape {mean.shape}")
        n_clusters = len(mean)
        if cov.shape != (n_clusters, n_clusters):
            raise RouterError(f"prior cov must be ({n_clusters}, {n_clusters}), got {cov.shape}")
        if noise_var.shape != (n_clusters,):
            raise RouterError(f"noise_var must be ({n_clusters},), got shape {noise_var.shape}")
        if shrinkage.shape != (2,):
            raise RouterError(f"shrinkage must be (2,), got shape {shrinkage.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(cov).all()):
            raise RouterError("prior mean and cov must be finite")
        if not (np.isfinite(noise_var).all() and (noise_var > 0).all()):
            raise RouterError("noise_var must be finite and > 0")
        if not np.allclose(cov, cov.T, rtol=1e-10, atol=1e-12):
            raise RouterError("prior cov must be symmetric")
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise RouterError("prior cov must be positive definite") from None
        self.mean_ = mean
        self.cov_ = (cov + cov.T) / 2.0
        self.noise_var_ = noise_var
        self.shrinkage_ = shrinkage

    @property
    def n_clusters(self) -> int:
        """K, the number of clusters the prior describes."""
        return len(self.mean_)

    @property
    def prior_std(self) -> np.ndarray:
        """Marginal prior standard deviation of each Psi_k, shape (K,)."""
        return np.sqrt(np.diag(self.cov_))

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        cluster_errors: np.ndarray,
        cluster_counts: np.ndarray,
        within_variance: np.ndarray | None = None,
        *,
        noise_floor: float = 0.01,
        variance_floor: float = 1e-3,
        ridge: float = 0.05,
        structure: str = "correlated",
    ) -> PsiPrior:
        """Fit mu, a shrunk Sigma and the per-prompt noise from the training LLMs' (m, K) profiles.

        ``structure`` is the form of Sigma: "correlated" estimates every pairwise correlation
        (shrunk toward 0); "level" is the one-factor form tau^2 11' + diag(d): each LLM has an
        overall level of error shared by every cluster plus independent per-cluster
        deviations. With few training LLMs the level form is far better determined (two
        numbers per cluster instead of K), and it predicts an unanswered cluster as the
        population's error there shifted by the model's own (shrunk) level elsewhere.

        ``cluster_errors[h, k]`` is LLM h's mean error on its ``cluster_counts[h, k]`` scored
        representative prompts of cluster k (NaN, or a zero count, where it has none);
        ``within_variance[h, k]`` the sample variance (ddof=1) of those prompt errors (NaN where
        fewer than two; when omitted, the Bernoulli variance e(1 - e) of the cluster mean is
        used, exact for 0/1 scores). ``noise_floor`` bounds the per-prompt noise variance from
        below, ``variance_floor`` each prior variance, and ``ridge`` the eigenvalues of Sigma
        relative to its mean variance (so Sigma stays well conditioned whatever m and K are:
        its condition number is at most about K / ridge).
        """
        errors, counts, within = _check_training(cluster_errors, cluster_counts, within_variance)
        for value, label in (
            (noise_floor, "noise_floor"),
            (variance_floor, "variance_floor"),
            (ridge, "ridge"),
        ):
            if not (np.isfinite(value) and value > 0):
                raise RouterError(f"{label} must be a finite number > 0, got {value!r}")
        observed = np.isfinite(errors)
        noise_var = _pooled_noise(errors, counts, within, observed, noise_floor)

        n_models = observed.sum(axis=0)
        overall = float(errors[observed].mean())
        # A cluster no training LLM answered borrows the population's overall mean error.
        mean = np.full(errors.shape[1], overall)
        np.divide(
            np.where(observed, errors, 0.0).sum(axis=0), n_models, out=mean, where=n_models > 0
        )

        # Each training profile is itself a mean of n_hk noisy prompt errors, so its spread
        # across LLMs overstates the spread of the true Psi by about mean_h sigma_k^2 / n_hk.
        with np.errstate(divide="ignore", invalid="ignore"):
            sampling = np.where(observed, noise_var[None, :] / counts, np.nan)
        sampling_var = np.zeros(errors.shape[1])
        np.divide(np.nansum(sampling, axis=0), n_models, out=sampling_var, where=n_models > 0)

        if structure not in COVARIANCE_STRUCTURES:
            raise RouterError(
                f"structure must be one of {COVARIANCE_STRUCTURES}, got {structure!r}"
            )
        if structure == "level":
            cov = _level_covariance(errors, observed, mean, sampling, variance_floor)
            cov = _floor_eigenvalues(cov, ridge * float(np.diag(cov).mean()))
            return cls(mean, cov, noise_var, np.array([np.nan, np.nan]))
        variances, variance_shrinkage = _shrunk_variances(errors, observed, mean, variance_floor)
        correlation, correlation_shrinkage = _shrunk_correlation(errors, observed, mean)
        scale = np.sqrt(variances)
        cov = correlation * scale[:, None] * scale[None, :]
        # Sampling noise is independent across clusters (disjoint prompts), so it inflates only
        # the diagonal. Remove it there (method of moments), but never more than half of the
        # spread, as the noise estimate is itself rough; the eigenvalue floor then restores
        # positive definiteness.
        diagonal = np.diag(cov)
        cov[np.diag_indices_from(cov)] = np.maximum(
            np.maximum(diagonal - sampling_var, 0.5 * diagonal), variance_floor
        )
        # m LLMs span at most m - 1 directions of R^K, and removing the noise can push the
        # weakest ones below zero. A new LLM may deviate from the population's pattern in any
        # direction, so every eigenvalue keeps a share of the mean variance: without it a few
        # contradicting clusters would be explained away even after hundreds of prompts.
        cov = _floor_eigenvalues(cov, ridge * float(np.diag(cov).mean()))
        return cls(mean, cov, noise_var, np.array([correlation_shrinkage, variance_shrinkage]))

    @classmethod
    def from_prompt_errors(
        cls,
        labels: np.ndarray,
        errors: np.ndarray,
        n_clusters: int,
        *,
        structure: str = "correlated",
        **options: float,
    ) -> PsiPrior:
        """Fit from the training LLMs' per-prompt errors (n, m) on the representative prompts."""
        sums, counts, within = cluster_statistics(labels, errors, n_clusters)
        sums, counts, within = (np.atleast_2d(a) for a in (sums, counts, within))
        with np.errstate(divide="ignore", invalid="ignore"):
            means = np.where(counts > 0, sums / counts, np.nan)
        return cls.fit(means, counts, within, structure=structure, **options)

    # ------------------------------------------------------------------ posterior
    def posterior(self, sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior (mean, std) of Psi given per-cluster error sums and counts, (K,) or (m, K).

        Conditions N(mu, Sigma) on y_k = sums_k / counts_k observed with variance
        sigma_k^2 / counts_k wherever counts_k > 0 (sums elsewhere are ignored and may be NaN).
        The mean is clipped to [0, 1]; with no evidence at all it is (mu, prior std).
        """
        sums = np.asarray(sums, dtype=float)
        counts = np.asarray(counts, dtype=float)
        one_model = sums.ndim == 1
        if sums.shape != counts.shape or sums.ndim not in (1, 2):
            raise RouterError(
                f"sums and counts must share a (K,) or (m, K) shape, got {sums.shape} and "
                f"{counts.shape}"
            )
        if sums.shape[-1] != self.n_clusters:
            raise RouterError(f"expected {self.n_clusters} clusters, got {sums.shape[-1]}")
        sums, counts = np.atleast_2d(sums), np.atleast_2d(counts)
        if not (np.isfinite(counts).all() and (counts >= 0).all()):
            raise RouterError("counts must be finite and >= 0")
        has = counts > 0
        if not np.isfinite(sums[has]).all():
            raise RouterError("sums must be finite wherever counts > 0")

        mu, cov = self.mean_, self.cov_
        with np.errstate(divide="ignore", invalid="ignore"):
            residual = np.where(has, sums / counts - mu[None, :], 0.0)
        # W = diag(n_k / sigma_k^2), zero where unobserved. The gain Sigma H^T (H Sigma H^T + R)^-1
        # equals Sigma W^1/2 B^-1 W^1/2 with B = I + W^1/2 Sigma W^1/2: B is (m, K, K) for every
        # model at once (no per-model subset of clusters), its eigenvalues are >= 1, so its
        # Cholesky factor never fails, and no inverse of Sigma or of R is ever formed.
        root_w = np.sqrt(counts / self.noise_var_[None, :])
        scaled = root_w[:, :, None] * cov[None, :, :]  # W^1/2 Sigma
        B = np.eye(self.n_clusters)[None] + scaled * root_w[:, None, :]
        L = np.linalg.cholesky(B)
        A = np.linalg.solve(L, scaled)  # L^-1 W^1/2 Sigma
        r = np.linalg.solve(L, (root_w * residual)[:, :, None])[:, :, 0]
        mean = np.clip(mu[None, :] + np.einsum("mij,mi->mj", A, r), 0.0, 1.0)
        variance = np.maximum(np.diag(cov)[None, :] - (A**2).sum(axis=1), 0.0)
        std = np.sqrt(variance)
        return (mean[0], std[0]) if one_model else (mean, std)

    def posterior_from_prompts(
        self, labels: np.ndarray, errors: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Posterior (mean, std) from per-prompt errors (n,) or (n, m) (NaN = not answered)."""
        sums, counts, _ = cluster_statistics(labels, errors, self.n_clusters)
        return self.posterior(sums, counts)

    # ------------------------------------------------------------------ persistence
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as float arrays keyed ``psi_prior_*`` (mean, cov, noise_var, ...)."""
        values = (self.mean_, self.cov_, self.noise_var_, self.shrinkage_)
        return {
            STATE_PREFIX + key: np.array(v, dtype=float)
            for key, v in zip(_STATE_KEYS, values, strict=True)
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> PsiPrior:
        """Rebuild a prior from ``state_arrays`` output (other keys in ``arrays`` are ignored)."""
        missing = [STATE_PREFIX + k for k in _STATE_KEYS if STATE_PREFIX + k not in arrays]
        if missing:
            raise RouterError(f"saved Psi prior lacks array(s) {missing}")
        return cls(*(np.asarray(arrays[STATE_PREFIX + k], dtype=float) for k in _STATE_KEYS))


def _check_training(
    cluster_errors: np.ndarray, cluster_counts: np.ndarray, within_variance: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    errors = np.array(cluster_errors, dtype=float)
    counts = np.asarray(cluster_counts, dtype=float)
    if errors.ndim != 2 or 0 in errors.shape:
        raise RouterError(f"cluster_errors must be a non-empty (m, K) array, got {errors.shape}")
    if counts.shape != errors.shape:
        raise RouterError(f"cluster_counts must be {errors.shape}, got {counts.shape}")
    if not (np.isfinite(counts).all() and (counts >= 0).all()):
        raise RouterError("cluster_counts must be finite and >= 0")
    if np.isinf(errors).any():
        raise RouterError("cluster_errors must be finite or NaN")
    # A cell without any scored prompt carries no information, whatever value it holds.
    errors[counts == 0] = np.nan
    if not np.isfinite(errors).any():
        raise RouterError("no training LLM has a scored representative prompt")
    within = None
    if within_variance is not None:
        within = np.asarray(within_variance, dtype=float)
        if within.shape != errors.shape:
            raise RouterError(f"within_variance must be {errors.shape}, got {within.shape}")
        if (within[np.isfinite(within)] < 0).any() or np.isinf(within).any():
            raise RouterError("within_variance must be >= 0 or NaN")
    return errors, counts, within


def _pooled_noise(
    errors: np.ndarray,
    counts: np.ndarray,
    within: np.ndarray | None,
    observed: np.ndarray,
    floor: float,
) -> np.ndarray:
    """Per-cluster variance of one prompt's error around a model's cluster mean, pooled."""
    if within is None:
        # Bernoulli variance of the cluster mean, weighted by the n_hk prompts behind it.
        cell = np.where(observed, errors * (1.0 - errors), np.nan)
        weight = np.where(observed, counts, 0.0)
    else:
        # Pool the sample variances by their degrees of freedom, as in one-way ANOVA.
        cell = within
        weight = np.where(observed & np.isfinite(within), np.maximum(counts - 1.0, 0.0), 0.0)
    total = weight.sum(axis=0)
    pooled_all = (
        float((np.nan_to_num(cell) * weight).sum() / weight.sum()) if weight.sum() > 0 else floor
    )
    # A cluster with no usable variance borrows the variance pooled over every cluster.
    pooled = np.full(errors.shape[1], pooled_all)
    np.divide((np.nan_to_num(cell) * weight).sum(axis=0), total, out=pooled, where=total > 0)
    # A cluster every training LLM got all right (or all wrong) would otherwise claim zero
    # noise, making a new model's first few answers there look certain.
    return np.maximum(pooled, floor)


def _shrunk_variances(
    errors: np.ndarray, observed: np.ndarray, mean: np.ndarray, floor: float
) -> tuple[np.ndarray, float]:
    """Across-LLM variance of each cluster's error, shrunk toward the median variance.

    The Opgen-Rhein & Strimmer intensity, so a cluster where a handful of LLMs happen to agree
    is not taken as one where every LLM must score alike.
    """
    n = observed.sum(axis=0)
    n_clusters = errors.shape[1]
    squares = np.where(observed, (errors - mean[None, :]) ** 2, 0.0)
    usable = n >= 2
    if not usable.any():
        # One LLM per cluster says nothing about spread: fall back on the floor everywhere.
        return np.full(n_clusters, floor), 1.0
    raw = np.full(n_clusters, np.nan)
    # Var-hat of each sample variance: n / (n-1)^3 * sum_h (w_hk - mean_h w_hk)^2.
    spread = np.zeros(n_clusters)
    for k in np.flatnonzero(usable):
        w = squares[observed[:, k], k]
        raw[k] = w.sum() / (n[k] - 1.0)
        spread[k] = n[k] / (n[k] - 1.0) ** 3 * ((w - w.mean()) ** 2).sum()
    target = float(np.median(raw[usable]))
    distance = float(((raw[usable] - target) ** 2).sum())
    intensity = 1.0 if distance <= 0 else float(np.clip(spread[usable].sum() / distance, 0, 1))
    variances = np.full(n_clusters, target)
    variances[usable] = intensity * target + (1.0 - intensity) * raw[usable]
    return np.maximum(variances, floor), intensity


def _shrunk_correlation(
    errors: np.ndarray, observed: np.ndarray, mean: np.ndarray
) -> tuple[np.ndarray, float]:
    """Pairwise-complete correlation of Psi across LLMs, shrunk toward 0 (Schafer & Strimmer).

    The Ledoit-Wolf intensity toward the diagonal target, computed on standardised profiles:
    sum of Var-hat(r_ij) over sum of r_ij^2 for i != j, clipped to [0, 1].
    """
    n_clusters = errors.shape[1]
    n = observed.sum(axis=0)
    deviations = np.where(observed, errors - mean[None, :], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.sqrt((deviations**2).sum(axis=0) / (n - 1.0))
    z = np.zeros_like(deviations)
    good = (n >= 2) & (scale > 0)
    z[:, good] = deviations[:, good] / scale[good]
    correlation = np.eye(n_clusters)
    numerator = denominator = 0.0
    for i in range(n_clusters):
        for j in range(i + 1, n_clusters):
            both = observed[:, i] & observed[:, j]
            n_ij = int(both.sum())
            if n_ij < _MIN_PAIR or not (good[i] and good[j]):
                continue  # too few shared LLMs: the correlation stays 0 (the target)
            w = z[both, i] * z[both, j]
            r = w.sum() / (n_ij - 1.0)
            numerator += n_ij / (n_ij - 1.0) ** 3 * ((w - w.mean()) ** 2).sum()
            denominator += r**2
            correlation[i, j] = correlation[j, i] = r
    intensity = 1.0 if denominator <= 0 else float(np.clip(numerator / denominator, 0.0, 1.0))
    off_diagonal = ~np.eye(n_clusters, dtype=bool)
    correlation[off_diagonal] *= 1.0 - intensity
    # Pairwise-complete correlations need not form a valid matrix: clip into [-1, 1] here and
    # let the eigenvalue floor restore positive definiteness.
    return np.clip(correlation, -1.0, 1.0), intensity


def _level_covariance(
    errors: np.ndarray,
    observed: np.ndarray,
    mean: np.ndarray,
    sampling: np.ndarray,
    floor: float,
) -> np.ndarray:
    """tau^2 11' + diag(d): a shared level of error per LLM plus per-cluster deviations.

    Method of moments on the training profiles: an LLM's level is its mean deviation from the
    population over the clusters it answered, tau^2 the spread of those levels, and d_k the
    spread of what is left in cluster k; each spread less the sampling noise (``sampling``,
    sigma^2 / n per cell) that the profiles carry, never below ``floor``.
    """
    deviations = np.where(observed, errors - mean[None, :], np.nan)
    answered = observed.sum(axis=1)
    level = np.where(answered > 0, np.nansum(deviations, axis=1) / np.maximum(answered, 1), 0.0)
    residual = np.where(observed, deviations - level[:, None], np.nan)
    n_models = observed.sum(axis=0)
    noise = np.where(observed, sampling, np.nan)
    d = np.full(errors.shape[1], floor)
    for k in np.flatnonzero(n_models >= 2):
        values = residual[observed[:, k], k]
        d[k] = max(float(values.var(ddof=1)) - float(np.nanmean(noise[:, k])), floor)
    usable = answered > 0
    if usable.sum() >= 2:
        # An LLM's level averages its clusters' deviations: their spread and noise shrink by
        # the number of clusters it answered, so that share is not taken for a level.
        per_model = np.nanmean(np.where(observed, d[None, :] + noise, np.nan), axis=1)
        spread = float(level[usable].var(ddof=1))
        tau2 = max(spread - float(np.mean(per_model[usable] / answered[usable])), floor)
    else:
        tau2 = floor
    return tau2 * np.ones((errors.shape[1], errors.shape[1])) + np.diag(d)


def _floor_eigenvalues(cov: np.ndarray, floor: float) -> np.ndarray:
    """Nearest symmetric matrix whose eigenvalues are all at least ``floor``."""
    cov = (cov + cov.T) / 2.0
    values, vectors = np.linalg.eigh(cov)
    cov = (vectors * np.maximum(values, floor)) @ vectors.T
    return (cov + cov.T) / 2.0
