"""Hyper-parameter selection shared by several routers: 2-fold cross-validation over the
validation prompts, scored by how well the routing trades quality against cost.

Selection uses only the training LLMs and the validation (representative) prompts: the
validation prompts are split in two seeded halves; one half describes each training LLM (plays
the role of the representative prompts), the other half is routed among those LLMs and scored,
then the halves swap. Test prompts and unseen LLMs are never read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from numbers import Integral
from typing import Literal, TypeVar

import numpy as np

from uniroute.errors import RouterError
from uniroute.tradeoff import area, deferral_curve

#: A candidate hyper-parameter value (a K, a k, ...).
C = TypeVar("C", bound=Hashable)

#: Builds a candidate's estimated errors on the evaluation half from the describing half:
#: (candidate, describe_index, evaluate_index) -> errors_hat of shape (len(evaluate_index), m).
FoldErrors = Callable[[C, np.ndarray, np.ndarray], np.ndarray]


def routing_score(errors_hat: np.ndarray, costs: np.ndarray, quality: np.ndarray) -> float:
    """Area under the deferral curve of routing by ``errors_hat`` (higher is better).

    The same measure as the evaluation (``uniroute.tradeoff``): the exact lambda sweep, its
    concave envelope, and the mean envelope quality over costs from 0 to the most expensive
    model's cost. As there, prompts with a missing true score for any model are left out. When
    every model is free the curve is a single point and its quality is returned; NaN when no
    prompt has every score.
    """
    errors_hat = np.asarray(errors_hat, dtype=float)
    costs = np.asarray(costs, dtype=float)
    quality = np.asarray(quality, dtype=float)
    if errors_hat.ndim != 2 or quality.shape != errors_hat.shape:
        raise RouterError(
            f"errors_hat {errors_hat.shape} and quality {quality.shape} must be equal (n, m) arrays"
        )
    complete = np.isfinite(quality).all(axis=1)
    if not complete.any():
        return math.nan
    curve = deferral_curve(errors_hat[complete], costs, quality[complete])
    max_cost = float(costs.max())
    return area(curve, max_cost) if max_cost > 0 else float(curve.qualities[0])


def two_fold_split(n: int, random_state: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into two sorted halves of sizes ceil(n/2) and floor(n/2)."""
    if n < 2:
        raise RouterError(f"2-fold selection needs at least 2 validation prompts, got {n}")
    order = np.random.default_rng(random_state).permutation(n)
    half = (n + 1) // 2
    return np.sort(order[:half]), np.sort(order[half:])


def cross_validate(
    candidates: Sequence[C],
    fold_errors: FoldErrors[C],
    S_val: np.ndarray,
    costs: np.ndarray,
    random_state: int | None,
) -> dict[C, float]:
    """Mean 2-fold ``routing_score`` of each candidate over the validation prompts.

    ``fold_errors(candidate, describe_index, evaluate_index)`` estimates the training LLMs'
    errors on the evaluation half using only the describing half's scores.
    """
    S_val = np.asarray(S_val, dtype=float)
    first, second = two_fold_split(len(S_val), random_state)
    scores: dict[C, float] = {}
    for candidate in candidates:
        fold_scores = [
            routing_score(fold_errors(candidate, describe, evaluate), costs, S_val[evaluate])
            for describe, evaluate in ((first, second), (second, first))
        ]
        finite = [s for s in fold_scores if np.isfinite(s)]
        scores[candidate] = float(np.mean(finite)) if finite else math.nan
    return scores


def best_candidate(scores: Mapping[C, float]) -> C:
    """Candidate with the highest score; ties (and NaN scores) go to the earliest candidate."""
    if not scores:
        raise RouterError("no candidate to select from")
    best: C | None = None
    best_score = -math.inf
    for candidate, score in scores.items():
        if np.isfinite(score) and score > best_score:
            best, best_score = candidate, score
    return next(iter(scores)) if best is None else best


def fold_prior_errors(errors: np.ndarray, describe: np.ndarray) -> np.ndarray:
    """Each model's mean error on the describing half, or on all rows when the half has none."""
    errors = np.asarray(errors, dtype=float)
    return np.where(
        np.isfinite(errors[describe]).any(axis=0),
        _nanmean_columns(errors[describe]),
        _nanmean_columns(errors),
    )


def _nanmean_columns(values: np.ndarray) -> np.ndarray:
    observed = np.isfinite(values)
    counts = observed.sum(axis=0)
    sums = np.where(observed, values, 0.0).sum(axis=0)
    return np.divide(sums, counts, out=np.full(values.shape[1:], np.nan), where=counts > 0)


def check_grid(grid: object, label: str) -> list[int]:
    """Validate a candidate grid of positive integers, returning it as a list."""
    if isinstance(grid, str | bytes) or not isinstance(grid, Sequence) or len(grid) == 0:
        raise RouterError(
            f"{label} must be a non-empty sequence of positive integers, got {grid!r}"
        )
    values = []
    for value in grid:
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise RouterError(f"{label} must hold positive integers, got {value!r}")
        values.append(int(value))
    return values


def check_auto_or_positive_int(value: object, label: str) -> Literal["auto"] | int:
    """Validate a parameter that is either "auto" or a positive integer."""
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise RouterError(f"{label} must be 'auto' or a positive integer, got {value!r}")
    return int(value)


def check_random_state(value: object) -> int | None:
    """Validate a seed: an integer >= 0 or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise RouterError(f"random_state must be an integer >= 0 or None, got {value!r}")
    return int(value)
