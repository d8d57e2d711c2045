"""Calibration: turn an operator's target (a cost, a quality, a traffic share) into the lambda used
by ``argmin_h err(x, h) + lambda * cost(h)``.

Everything is measured on the representative (validation) prompts with the current pool: the
router estimates each model's error on every representative prompt, routes them at a given lambda,
and the expected cost and quality are the mean cost and the mean *actual* validation score of the
chosen models. The models' Psi vectors were computed from those same scores, so the figures are
in-sample and therefore optimistic; treat them as a guide for choosing lambda, not as a promise.

Decisions only change at finitely many lambdas (for each prompt, where the lower envelope of the
lines ``err_h + lambda * cost_h`` switches model), so :func:`lambda_path` computes every breakpoint
exactly instead of searching a grid, and the chosen lambda lies strictly inside the interval whose
decisions meet the target.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from uniroute.errors import CalibrationError
from uniroute.routers.base import BaseRouter, route_argmin

TARGET_KINDS = ("cost", "quality", "share")
# Float slack when comparing a path value with a target, so that a target equal to an achievable
# value (e.g. a cost read from a previous calibration) is met.
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Target:
    """What the operator asked for: an expected cost per query, an expected quality, or a share of
    traffic (``value`` in [0, 1]) for ``model``."""

    kind: str
    value: float
    model: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise CalibrationError(f"unknown target kind {self.kind!r}; use one of {TARGET_KINDS}")
        try:
            value = float(self.value)
        except (TypeError, ValueError):
            raise CalibrationError(
                f"target {self.kind} must be a number, got {self.value!r}"
            ) from None
        object.__setattr__(self, "value", value)
        if not math.isfinite(value) or value < 0:
            raise CalibrationError(f"target {self.kind} must be a finite number >= 0, got {value}")
        if self.kind in ("quality", "share") and value > 1:
            raise CalibrationError(f"target {self.kind} must lie in [0, 1], got {value}")
        if (self.kind == "share") != (self.model is not None):
            raise CalibrationError("a model name is required for a share target, and only for it")

    def describe(self) -> str:
        """Human-readable target, e.g. 'expected cost <= 0.002' or '30% of traffic to gpt-4'."""
        if self.kind == "cost":
            return f"expected cost per query <= {self.value:g}"
        if self.kind == "quality":
            return f"expected quality >= {self.value:g}"
        return f"{self.value:.0%} of traffic to {self.model}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Target:
        """Inverse of to_dict."""
        return cls(kind=data["kind"], value=data["value"], model=data.get("model"))


@dataclass(frozen=True)
class Policy:
    """A solved target: the lambda to route with and what it is expected to give.

    ``achieved`` is the value of the target's own metric at ``lam`` (expected cost, expected
    quality, or the model's traffic share); ``pool_fingerprint`` identifies the pool it was solved
    for.
    """

    lam: float
    expected_cost: float
    expected_quality: float
    target: Target
    pool_fingerprint: str
    achieved: float
    n_prompts: int
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        data = asdict(self)
        data["target"] = self.target.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        """Inverse of to_dict."""
        return cls(
            lam=float(data["lam"]),
            expected_cost=float(data["expected_cost"]),
            expected_quality=float(data["expected_quality"]),
            target=Target.from_dict(data["target"]),
            pool_fingerprint=str(data["pool_fingerprint"]),
            achieved=float(data["achieved"]),
            n_prompts=int(data["n_prompts"]),
            created_at=str(data.get("created_at", "")),
        )


@dataclass(frozen=True)
class LambdaPath:
    """Routing outcomes on a fixed prompt set for every distinct decision set as lambda grows.

    Point ``j`` holds for every lambda in ``[lambdas[j], lambdas[j + 1])`` (the last one up to
    infinity); ``lambdas[0] == 0``. ``costs`` never increase along the path.
    """

    lambdas: np.ndarray
    costs: np.ndarray
    qualities: np.ndarray
    shares: np.ndarray | None

    def representative_lambda(self, j: int) -> float:
        """A lambda strictly inside point j's interval (0 for the first point)."""
        if j == 0:
            return 0.0
        if j + 1 < len(self.lambdas):
            return float((self.lambdas[j] + self.lambdas[j + 1]) / 2)
        return float(2 * self.lambdas[j])


def lambda_path(
    errors: np.ndarray, costs: np.ndarray, scores: np.ndarray, share_model: int | None = None
) -> LambdaPath:
    """Exact path of (mean cost, mean quality[, share of one model]) over all lambdas >= 0.

    ``errors`` (n, m) are estimated errors, ``costs`` (m,) per-query costs, ``scores`` (n, m)
    actual qualities (NaN = missing, left out of the mean quality). For each prompt the chosen model
    follows the lower envelope of ``errors[i, h] + lambda * costs[h]``; the envelope is walked for
    all prompts at once, one breakpoint per step, so the work is O(n * m * longest envelope).
    """
    errors = np.asarray(errors, dtype=float)
    costs = np.asarray(costs, dtype=float)
    scores = np.asarray(scores, dtype=float)
    n, m = errors.shape
    if costs.shape != (m,) or scores.shape != (n, m):
        raise CalibrationError(
            f"shapes do not match: errors {errors.shape}, costs {costs.shape}, "
            f"scores {scores.shape}"
        )
    if n == 0 or m == 0:
        raise CalibrationError("nothing to calibrate on: no prompts or no models")

    choice = route_argmin(errors, costs, 0.0)
    rows = np.arange(n)
    current_lam = np.zeros(n)
    event_lam, event_row, event_from, event_to = [], [], [], []
    active = rows[costs[choice] > costs.min()]
    while active.size:
        chosen = choice[active]
        cheaper = costs[None, :] < costs[chosen][:, None]
        gain = costs[chosen][:, None] - costs[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (errors[active] - errors[active, chosen][:, None]) / gain
        ratio = np.where(cheaper, np.maximum(ratio, current_lam[active][:, None]), np.inf)
        next_lam = ratio.min(axis=1)
        # Among models reaching the envelope at the same lambda the cheapest takes over.
        at_next = ratio <= next_lam[:, None]
        successor = np.where(at_next, costs[None, :], np.inf).argmin(axis=1)
        event_lam.append(next_lam)
        event_row.append(active)
        event_from.append(chosen)
        event_to.append(successor)
        choice[active] = successor
        current_lam[active] = next_lam
        active = active[costs[successor] > costs.min()]

    start = route_argmin(errors, costs, 0.0)
    observed = np.isfinite(scores)
    filled = np.where(observed, scores, 0.0)
    total_cost = costs[start].sum()
    total_quality = filled[rows, start].sum()
    total_observed = observed[rows, start].sum()
    total_share = 0 if share_model is None else int((start == share_model).sum())

    lambdas, path_costs, path_qualities, path_shares = [0.0], [total_cost], [total_quality], []
    path_observed = [total_observed]
    path_shares.append(total_share)
    if event_lam:
        lam = np.concatenate(event_lam)
        row = np.concatenate(event_row)
        old = np.concatenate(event_from)
        new = np.concatenate(event_to)
        order = np.argsort(lam, kind="stable")
        lam, row, old, new = lam[order], row[order], old[order], new[order]
        d_cost = np.cumsum(costs[new] - costs[old])
        d_quality = np.cumsum(filled[row, new] - filled[row, old])
        d_observed = np.cumsum(observed[row, new].astype(int) - observed[row, old].astype(int))
        if share_model is None:
            d_share = np.zeros(len(lam), dtype=int)
        else:
            d_share = np.cumsum((new == share_model).astype(int) - (old == share_model).astype(int))
        # Events at the same lambda are applied together: keep the last cumulative value of each.
        last_of_group = np.append(lam[1:] != lam[:-1], True)
        lambdas += lam[last_of_group].tolist()
        path_costs += (total_cost + d_cost[last_of_group]).tolist()
        path_qualities += (total_quality + d_quality[last_of_group]).tolist()
        path_observed += (total_observed + d_observed[last_of_group]).tolist()
        path_shares += (total_share + d_share[last_of_group]).tolist()
        if lambdas[1] == 0.0:
            # A breakpoint at exactly 0 only happens through float rounding; fold it into the start.
            lambdas.pop(0)
            for values in (path_costs, path_qualities, path_observed, path_shares):
                values.pop(0)

    path_observed_arr = np.asarray(path_observed, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        qualities = np.asarray(path_qualities) / path_observed_arr
    return LambdaPath(
        lambdas=np.asarray(lambdas),
        costs=np.asarray(path_costs) / n,
        qualities=qualities,
        shares=None if share_model is None else np.asarray(path_shares) / n,
    )


def routing_outcome(
    errors: np.ndarray, costs: np.ndarray, scores: np.ndarray, lam: float
) -> tuple[np.ndarray, float, float]:
    """Choices at one lambda, with their mean cost and mean observed quality."""
    choice = route_argmin(errors, costs, lam)
    rows = np.arange(len(choice))
    chosen_scores = np.asarray(scores, dtype=float)[rows, choice]
    observed = np.isfinite(chosen_scores)
    quality = float(chosen_scores[observed].mean()) if observed.any() else float("nan")
    return choice, float(np.asarray(costs, dtype=float)[choice].mean()), quality


def solve_target(
    errors: np.ndarray,
    costs: np.ndarray,
    scores: np.ndarray,
    model_names: list[str],
    target: Target,
    pool_fingerprint: str = "",
) -> Policy:
    """The lambda meeting ``target`` on these prompts.

    Among the distinct decision sets along the lambda path: cost -> the highest expected quality
    whose expected cost is at most the target (ties to the cheaper); quality -> the lowest
    expected cost whose expected quality is at least the target (ties to the more accurate);
    share -> the share of prompts routed to the model closest to the target (ties to the
    cheaper). A target no decision set meets raises CalibrationError.
    """
    share_model = None
    if target.kind == "share":
        if target.model not in model_names:
            raise CalibrationError(
                f"target model {target.model!r} is not in the pool {list(model_names)}"
            )
        share_model = list(model_names).index(target.model)
    path = lambda_path(errors, costs, scores, share_model=share_model)

    if target.kind == "cost":
        meets = np.flatnonzero(path.costs <= target.value * (1 + _TOLERANCE) + _TOLERANCE)
        if meets.size == 0:
            raise CalibrationError(
                f"target cost {target.value:g} per query is below the cheapest possible expected "
                f"cost {path.costs[-1]:g} (everything routed to the cheapest model)"
            )
        best = (
            np.nanmax(path.qualities[meets]) if np.isfinite(path.qualities[meets]).any() else None
        )
        candidates = meets if best is None else meets[path.qualities[meets] >= best]
        point = int(candidates[np.argmin(path.costs[candidates])])
    elif target.kind == "quality":
        meets = np.flatnonzero(path.qualities >= target.value - _TOLERANCE)
        if meets.size == 0:
            raise CalibrationError(
                f"target quality {target.value:g} is above the best expected quality "
                f"{np.nanmax(path.qualities):.4f} on the representative prompts"
            )
        cheapest = path.costs[meets].min()
        candidates = meets[path.costs[meets] <= cheapest]
        point = int(candidates[np.argmax(path.qualities[candidates])])
    else:
        distance = np.abs(path.shares - target.value)
        closest = np.flatnonzero(distance <= distance.min() + _TOLERANCE)
        point = int(closest[-1])

    lam = path.representative_lambda(point)
    choice, expected_cost, expected_quality = routing_outcome(errors, costs, scores, lam)
    if target.kind == "cost":
        achieved = expected_cost
    elif target.kind == "quality":
        achieved = expected_quality
    else:
        achieved = float((choice == share_model).mean())
    return Policy(
        lam=lam,
        expected_cost=expected_cost,
        expected_quality=expected_quality,
        target=target,
        pool_fingerprint=pool_fingerprint,
        achieved=achieved,
        n_prompts=len(choice),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def make_target(
    *,
    target_cost: float | None = None,
    target_quality: float | None = None,
    target_share: tuple[str, float] | None = None,
) -> Target:
    """Build a Target from exactly one of the three keyword forms."""
    given = [v is not None for v in (target_cost, target_quality, target_share)]
    if sum(given) != 1:
        raise CalibrationError("give exactly one of target_cost, target_quality, target_share")
    if target_cost is not None:
        return Target("cost", target_cost)
    if target_quality is not None:
        return Target("quality", target_quality)
    try:
        model, share = target_share
    except (TypeError, ValueError):
        raise CalibrationError(
            f"target_share must be (model, share), got {target_share!r}"
        ) from None
    return Target("share", share, model=str(model))


def calibrate(
    router: BaseRouter,
    *,
    target_cost: float | None = None,
    target_quality: float | None = None,
    target_share: tuple[str, float] | None = None,
    target: Target | None = None,
    pool_fingerprint: str = "",
) -> Policy:
    """Solve a target on the router's representative prompts with its current pool."""
    if target is None:
        target = make_target(
            target_cost=target_cost, target_quality=target_quality, target_share=target_share
        )
    elif any(v is not None for v in (target_cost, target_quality, target_share)):
        raise CalibrationError("give either target or one of the target_* keywords, not both")
    errors = router.predict_error(router.X_val_)
    return solve_target(
        errors,
        router.pool_costs_,
        router.pool_val_scores_,
        list(router.pool_names_),
        target,
        pool_fingerprint=pool_fingerprint,
    )
