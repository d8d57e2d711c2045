"""OracleRouter: the clairvoyant upper bound that reads the true scores of the test prompts."""

from __future__ import annotations

import numpy as np

from uniroute.errors import RouterError
from uniroute.pool import Pool
from uniroute.routers.base import RouterEstimator


class OracleRouter(RouterEstimator):
    """Clairvoyant upper bound: its 'estimated' error is the true error 1 - score.

    It cannot route from prompts alone: ``predict_error`` raises, and the evaluation calls
    ``oracle_error(true_scores)`` instead. A missing true score counts as an error (1), so the
    oracle never prefers a model for an answer that was not recorded. The columns of the true
    scores are the pool's models, in pool order. Psi(h) = [mean validation error] only to keep
    pools uniform; it plays no part in routing.
    """

    name = "oracle"
    clairvoyant = True

    def __init__(self) -> None:
        pass

    def _fit(
        self,
        X_train: np.ndarray,
        S_train: np.ndarray,
        X_val: np.ndarray,
        S_val: np.ndarray,
        costs: np.ndarray,
    ) -> None:
        """Nothing to learn: the oracle reads the answers."""

    def _model_features(self, scores: np.ndarray) -> np.ndarray:
        return np.array([1.0 - np.nanmean(scores)])

    def oracle_error(self, true_scores: np.ndarray) -> np.ndarray:
        """True error 1 - score of each model (column) on each prompt (missing score -> 1)."""
        self._check_fitted()
        scores = np.asarray(true_scores, dtype=float)
        if scores.ndim != 2 or scores.shape[1] == 0:
            raise RouterError(
                f"true_scores has shape {scores.shape}, expected (n_prompts, n_models) with one "
                "column per pool model"
            )
        finite = np.isfinite(scores)
        if np.isinf(scores).any() or ((scores[finite] < 0) | (scores[finite] > 1)).any():
            raise RouterError("true_scores must lie in [0, 1] (NaN = missing)")
        return np.where(finite, 1.0 - scores, 1.0)

    def _predict_error(self, X: np.ndarray, pool: Pool) -> np.ndarray:
        raise RouterError(
            "the oracle router needs the true scores of the prompts: call "
            "oracle_error(true_scores) instead of predict_error/route"
        )
