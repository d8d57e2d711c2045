"""ZeroRouter: the prompt-blind baseline that routes on each model's mean validation error."""

from __future__ import annotations

import numpy as np

from uniroute.pool import Pool
from uniroute.routers.base import RouterEstimator


class ZeroRouter(RouterEstimator):
    """Ignores the prompt: err(x, h) = h's mean validation error g(h) (missing scores skipped).

    Psi(h) = [g(h)]. Every prompt gets the same decision, so sweeping lambda in
    argmin_h g(h) + lambda * cost(h) visits exactly the vertices of the lower convex hull of the
    points (cost(h), g(h)); the evaluation's interpolation between consecutive vertices is the
    random mixture of those two models, which is the best any prompt-blind policy can do.
    """

    name = "zero"

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
        """Nothing to learn on the prompt side."""

    def _model_features(self, scores: np.ndarray) -> np.ndarray:
        return np.array([1.0 - np.nanmean(scores)])

    def _predict_error(self, X: np.ndarray, pool: Pool) -> np.ndarray:
        return np.repeat(pool.features[:, 0][None, :], len(X), axis=0)
