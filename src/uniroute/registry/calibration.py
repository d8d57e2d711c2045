"""Calibration: turn an operator's target (a cost, a quality, a traffic share) into the lambda used
by ``argmin_h err(x, h) + lambda * cost(h)``.

Everything is measured on the representative (validation) prompts with the current pool: the
router estimates each model's error on every representative prompt, routes them at a given lambda,
and the expected cost and quality are the mean cost and the mean *actual* validation score of the
chosen models. The models' Psi vectors were computed from those same scores, so the figures are
in-sample and therefore optimistic; treat them as a guide for choosing lambda, not as a promise.

Calibration is a view over the one exact lambda sweep in :mod:`uniroute.tradeoff`: the sweep's
breakpoints are the distinct decision sets, the target picks one of them, and the policy's lambda
lies strictly inside that point's interval. Its expected cost and quality are read from the same
sweep, so they equal the deferral curve's point at that lambda on the same prompts and pool.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from uniroute.errors import CalibrationError
from uniroute.tradeoff import DecisionPath, decision_path

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
    infinity); ``lambdas[0] == 0``. ``costs`` never increase along the path. ``qualities`` are
    the mean observed scores of the chosen models (prompts whose chosen model has no score are
    left out of that mean); ``shares`` the fraction of prompts routed to one model.
    """

    lambdas: np.ndarray
    costs: np.ndarray
    qualities: np.ndarray
    shares: np.ndarray | None
    path: DecisionPath

    def interior_lambda(self, j: int) -> float:
        """A lambda strictly inside point j's interval (0 for the first point)."""
        return self.path.interior_lambda(j)


def lambda_path(
    errors: np.ndarray, costs: np.ndarray, scores: np.ndarray, share_model: int | None = None
) -> LambdaPath:
    """Mean cost, mean observed quality[, share of one model] at every breakpoint of the sweep.

    ``errors`` (n, m) are estimated errors, ``costs`` (m,) per-query costs, ``scores`` (n, m)
    actual qualities (NaN = missing, left out of the mean quality).
    """
    errors = np.asarray(errors, dtype=float)
    costs = np.asarray(costs, dtype=float)
    scores = np.asarray(scores, dtype=float)
    if errors.ndim != 2 or costs.shape != (errors.shape[1],) or scores.shape != errors.shape:
        raise CalibrationError(
            f"shapes do not match: errors {errors.shape}, costs {costs.shape}, "
            f"scores {scores.shape}"
        )
    n, m = errors.shape
    if n == 0 or m == 0:
        raise CalibrationError("nothing to calibrate on: no prompts or no models")
    path = decision_path(errors, costs)
    observed = np.isfinite(scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        qualities = path.totals(np.where(observed, scores, 0.0)) / path.totals(observed)
    shares = None
    if share_model is not None:
        shares = path.totals(np.arange(m) == share_model) / n
    return LambdaPath(
        lambdas=path.breakpoints,
        costs=path.totals(costs) / n,
        qualities=qualities,
        shares=shares,
        path=path,
    )


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
        distance = np.abs(_shares_of(path) - target.value)
        closest = np.flatnonzero(distance <= distance.min() + _TOLERANCE)
        point = int(closest[-1])

    lam = path.interior_lambda(point)
    # The point whose interval holds lam (the same one unless that interval is empty), so the
    # policy's figures are the sweep's own values at the lambda it routes with.
    point = path.path.point_index(lam)
    expected_cost = float(path.costs[point])
    expected_quality = float(path.qualities[point])
    if target.kind == "cost":
        achieved = expected_cost
    elif target.kind == "quality":
        achieved = expected_quality
    else:
        achieved = float(_shares_of(path)[point])
    return Policy(
        lam=lam,
        expected_cost=expected_cost,
        expected_quality=expected_quality,
        target=target,
        pool_fingerprint=pool_fingerprint,
        achieved=achieved,
        n_prompts=path.path.n_prompts,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _shares_of(path: LambdaPath) -> np.ndarray:
    """The traffic shares of a path solved for a share target (``lambda_path(share_model=)``)."""
    if path.shares is None:
        raise CalibrationError("a share target needs the lambda path of its model's share")
    return path.shares


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
    if target_share is None:
        raise CalibrationError("give exactly one of target_cost, target_quality, target_share")
    try:
        model, share = target_share
    except (TypeError, ValueError):
        raise CalibrationError(
            f"target_share must be (model, share), got {target_share!r}"
        ) from None
    return Target("share", share, model=str(model))
