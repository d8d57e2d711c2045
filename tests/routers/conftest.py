"""A small routing problem whose right answers are known by construction.

Prompts form two well-separated groups in embedding space (around e_0 and around e_1). Model
"A" answers every group-0 prompt correctly and every group-1 prompt wrongly; model "B" does the
opposite. Any router that looks at the prompt must send group-0 prompts to A and group-1
prompts to B at lambda = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from uniroute.pool import Pool
from uniroute.routers import RouterEstimator

DIM = 6
MODELS = ["A", "B"]
COSTS = np.array([1.0, 1.0])

_FAST_PARAMS: dict[str, dict] = {
    "uniroute-kmeans": {"k_grid": [2, 3, 4]},
    "uniroute-learned": {"k_grid": [2, 3, 4], "max_iter": 30},
    "knn": {"n_neighbors_grid": [3, 5]},
    "zero": {},
    "mlp": {"hidden_layer_sizes": [8], "max_iter": 200},
    "oracle": {},
    "random": {},
    "uniroute-verify": {"k_grid": [2, 3, 4]},
}


@dataclass
class Split:
    """Embeddings, per-model scores (columns A, B) and the group of each prompt."""

    X: np.ndarray
    S: np.ndarray
    group: np.ndarray


@dataclass
class TwoGroups:
    """Training, validation and test prompts of the two-group problem."""

    train: Split
    val: Split
    test: Split

    def fit_args(self) -> tuple:
        """Positional arguments of RouterEstimator.fit for models A and B."""
        return (self.train.X, self.train.S, self.val.X, self.val.S, COSTS)

    def pool(self, estimator: RouterEstimator) -> Pool:
        """The training models A and B as a pool, described by their validation scores."""
        return estimator.make_pool(MODELS, self.val.S, COSTS)


def make_split(rng: np.random.Generator, n_per_group: int) -> Split:
    """n_per_group prompts around e_0, then as many around e_1, with A/B scores by group."""
    group = np.repeat([0, 1], n_per_group)
    X = np.zeros((len(group), DIM))
    X[np.arange(len(group)), group] = 1.0
    X += 0.05 * rng.normal(size=X.shape)
    S = np.column_stack([group == 0, group == 1]).astype(float)
    return Split(X=X, S=S, group=group)


@pytest.fixture
def fast_params() -> dict[str, dict]:
    """Quick settings for each router on the small problem (selection grids that fit its size)."""
    return {name: dict(params) for name, params in _FAST_PARAMS.items()}


@pytest.fixture
def two_groups() -> TwoGroups:
    """The two-group problem: 60 + 60 training, 20 + 20 validation, 15 + 15 test prompts."""
    rng = np.random.default_rng(7)
    return TwoGroups(train=make_split(rng, 60), val=make_split(rng, 20), test=make_split(rng, 15))
