"""RandomRouter: the lower baseline, with errors drawn at random per prompt."""

from __future__ import annotations

import hashlib
from numbers import Integral

import numpy as np

from uniroute.errors import RouterError
from uniroute.pool import Pool
from uniroute.routers.base import RouterEstimator


class RandomRouter(RouterEstimator):
    """Lower baseline: err(x, h) ~ Uniform(0, 1) independently per (prompt, pool model).

    The draws are deterministic: a prompt's generator is seeded from ``random_state`` and a hash
    of its embedding's bytes (as float64), so the same prompt always gets the same draws, in
    whatever batch it arrives. The j-th pool model gets the prompt's j-th draw, so a pool with
    one more model at the end keeps every earlier model's draw. Psi(h) = [mean validation
    error], unused.
    """

    name = "random"

    def __init__(self, random_state: int = 0) -> None:
        self.random_state = random_state

    def _fit(
        self,
        X_train: np.ndarray,
        S_train: np.ndarray,
        X_val: np.ndarray,
        S_val: np.ndarray,
        costs: np.ndarray,
    ) -> None:
        seed = self.random_state
        if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
            raise RouterError(f"random_state must be an integer >= 0, got {seed!r}")

    def _model_features(self, scores: np.ndarray) -> np.ndarray:
        return np.array([1.0 - np.nanmean(scores)])

    def _predict_error(self, X: np.ndarray, pool: Pool) -> np.ndarray:
        n_pool = len(pool)
        rows = [
            np.random.default_rng([int(self.random_state), _embedding_key(x)]).random(n_pool)
            for x in np.asarray(X, dtype=np.float64)
        ]
        return np.array(rows).reshape(len(X), n_pool)


def _embedding_key(embedding: np.ndarray) -> int:
    digest = hashlib.blake2b(np.ascontiguousarray(embedding).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little")
