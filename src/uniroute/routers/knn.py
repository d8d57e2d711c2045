"""K-nearest-neighbour baseline: a model's error on a prompt is its mean error on the most
similar representative prompts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from uniroute.errors import RouterError
from uniroute.pool import Pool
from uniroute.routers.base import RouterEstimator
from uniroute.routers.selection import (
    best_candidate,
    check_auto_or_positive_int,
    check_grid,
    check_random_state,
    cross_validate,
    fold_prior_errors,
)
from uniroute.routers.uniroute_kmeans import normalize_rows

DEFAULT_NEIGHBORS_GRID = (5, 10, 20, 40, 80)
#: Query rows per block when searching neighbours, to bound the similarity matrix's memory.
QUERY_BLOCK = 2048


def nearest_neighbors(
    queries_normalized: np.ndarray, references_normalized: np.ndarray, n_neighbors: int
) -> np.ndarray:
    """Indices (n, k) of the k references with the highest cosine similarity to each query."""
    blocks = []
    for start in range(0, len(queries_normalized), QUERY_BLOCK):
        similarity = queries_normalized[start : start + QUERY_BLOCK] @ references_normalized.T
        if n_neighbors < similarity.shape[1]:
            blocks.append(np.argpartition(-similarity, n_neighbors - 1, axis=1)[:, :n_neighbors])
        else:
            blocks.append(np.broadcast_to(np.arange(similarity.shape[1]), similarity.shape))
    if not blocks:
        return np.zeros((0, n_neighbors), dtype=int)
    return np.vstack(blocks)


def neighbor_mean_errors(
    neighbors: np.ndarray, errors: np.ndarray, observed: np.ndarray, fallback: np.ndarray
) -> np.ndarray:
    """Mean observed error of each model over each prompt's neighbours, shape (n, m).

    ``errors``/``observed`` are (n_ref, m); where none of a prompt's neighbours has a score for a
    model, the model's ``fallback`` (its overall mean error) is used.
    """
    values = np.where(observed, errors, 0.0)
    counts = observed.astype(float)
    sums = np.zeros((len(neighbors), errors.shape[1]))
    seen = np.zeros_like(sums)
    for column in range(neighbors.shape[1]):
        sums += values[neighbors[:, column]]
        seen += counts[neighbors[:, column]]
    fallback = np.broadcast_to(np.asarray(fallback, dtype=float), sums.shape)
    return np.divide(sums, seen, out=fallback.copy(), where=seen > 0)


class KNNRouter(RouterEstimator):
    """K-NN baseline: err(x, h) = mean error of h over the k validation prompts nearest to x.

    Similarity is cosine (dot product of L2-normalised embeddings). Missing scores are ignored;
    when all k neighbours lack a score for h, err(x, h) is h's mean validation error.
    Psi(h) is h's validation error vector 1 - score with missing entries filled by h's mean error;
    which entries were missing is read from the pool's representative-prompt scores, so the fill
    never counts as an observation.

    With ``n_neighbors="auto"`` k is chosen from ``n_neighbors_grid`` by the same 2-fold
    cross-validation over the validation prompts, with the training LLMs, as the K-means router
    uses for K (values above the size of the describing half are dropped). The chosen k is
    ``n_neighbors_`` and each candidate's score is in ``selection_scores_``.
    """

    name = "knn"

    def __init__(
        self,
        n_neighbors: str | int = "auto",
        n_neighbors_grid: Sequence[int] = DEFAULT_NEIGHBORS_GRID,
        random_state: int | None = 0,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.n_neighbors_grid = n_neighbors_grid
        self.random_state = random_state

    def _fit(
        self,
        X_train: np.ndarray,
        S_train: np.ndarray,
        X_val: np.ndarray,
        S_val: np.ndarray,
        costs: np.ndarray,
    ) -> None:
        n_neighbors = check_auto_or_positive_int(self.n_neighbors, "n_neighbors")
        grid = check_grid(self.n_neighbors_grid, "n_neighbors_grid")
        random_state = check_random_state(self.random_state)
        n_val = len(X_val)
        if n_neighbors != "auto":
            if n_neighbors > n_val:
                raise RouterError(
                    f"n_neighbors={n_neighbors} exceeds the {n_val} validation prompts"
                )
            self.selection_scores_: dict[int, float] = {}
            self.n_neighbors_ = n_neighbors
            return
        n_describe = n_val // 2
        candidates = [k for k in dict.fromkeys(grid) if k <= n_describe]
        if not candidates:
            raise RouterError(
                f"every k in n_neighbors_grid={list(grid)} exceeds half of the {n_val} "
                "validation prompts used to choose it"
            )
        X_val = normalize_rows(X_val)
        errors = 1.0 - np.asarray(S_val, dtype=float)
        observed = np.isfinite(errors)

        def fold_errors(k: int, describe: np.ndarray, evaluate: np.ndarray) -> np.ndarray:
            neighbors = nearest_neighbors(X_val[evaluate], X_val[describe], k)
            return neighbor_mean_errors(
                neighbors, errors[describe], observed[describe], fold_prior_errors(errors, describe)
            )

        scores = cross_validate(candidates, fold_errors, S_val, costs, random_state)
        self.selection_scores_ = {int(k): float(v) for k, v in scores.items()}
        self.n_neighbors_ = int(best_candidate(scores))

    def _model_features(self, scores: np.ndarray) -> np.ndarray:
        errors = 1.0 - scores
        observed = np.isfinite(errors)
        return np.where(observed, errors, errors[observed].mean())

    def _predict_error(self, X: np.ndarray, pool: Pool) -> np.ndarray:
        neighbors = nearest_neighbors(
            normalize_rows(X), normalize_rows(self.X_val_), self.n_neighbors_
        )
        observed = np.isfinite(pool.scores)
        errors = pool.features.T
        overall = np.array([errors[observed[:, j], j].mean() for j in range(errors.shape[1])])
        return neighbor_mean_errors(neighbors, errors, observed, overall)

    def _state_arrays(self) -> dict[str, np.ndarray]:
        grid = np.array(sorted(self.selection_scores_), dtype=int)
        return {
            "n_neighbors": np.array(self.n_neighbors_),
            "selection_k": grid,
            "selection_scores": np.array([self.selection_scores_[k] for k in grid], dtype=float),
        }

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.n_neighbors_ = int(arrays["n_neighbors"])
        self.selection_scores_ = {
            int(k): float(v)
            for k, v in zip(arrays["selection_k"], arrays["selection_scores"], strict=True)
        }
