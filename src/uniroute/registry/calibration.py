"""Calibration: turn an operator's target (a cost, a quality, a traffic share) into the lambda used
by ``argmin_h err(x, h) + lambda * cost(h)``.

Everything is measured on the representative (validation) prompts: the caller passes each model's
estimated error on every representative prompt, the prompts are routed at a given lambda, and the
expected cost and quality are means over *every* representative prompt of the chosen model's cost
and quality. The quality of (prompt, model) is the model's actual score on the prompt where it is
known and ``1 - estimated error`` where it is missing (:func:`filled_quality`), so a prompt whose
chosen model has no score counts through that model's estimate instead of dropping out of the mean.

The deployed caller (:func:`uniroute.deployment.snapshot.calibrate_pool`) passes *cross-fitted*
errors (``RouterEstimator.cross_fitted_errors``: no prompt's estimate depends on its own scores),
so the figures are out-of-sample; errors from ``predict_error`` on the representative prompts
would make them in-sample and optimistic. ``Policy`` records which (``out_of_sample``,
``n_folds``), over which models, and how many prompts' quality was an estimate.

Calibration is a view over the one exact lambda sweep in :mod:`uniroute.tradeoff`: the sweep's
breakpoints are the distinct decision sets, the target picks one of them, and the policy's lambda
lies strictly inside that point's interval. Its expected cost and quality are read from the same
sweep, so they equal the deferral curve's point at that lambda on the same prompts and pool.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
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
#: A share target is met by the closest achievable share only if it is at most this far from the
#: target (absolute, in traffic fraction); farther, ``solve_target`` refuses and names the
#: achievable shares on either side. Shares move in steps of at least 1 / n_prompts, and a few
#: prompts' worth (5 points) is the precision a traffic-share target is asked for at.
SHARE_TOLERANCE = 0.05


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
    for. How it was computed: ``out_of_sample`` (the errors were cross-fitted over ``n_folds``
    folds of the representative prompts; ``n_folds`` is 0 when they were not), ``models`` (the
    models it was solved over, in pool order), ``servable_only`` (those were the pool's models
    with an endpoint, the others left out) and ``n_estimated`` (prompts whose chosen model has no
    score at ``lam``, so their quality is ``1 - estimated error``). Policies stored before these
    fields existed read as in-sample, over unrecorded models (``models == ()``).
    """

    lam: float
    expected_cost: float
    expected_quality: float
    target: Target
    pool_fingerprint: str
    achieved: float
    n_prompts: int
    created_at: str = ""
    out_of_sample: bool = False
    n_folds: int = 0
    models: tuple[str, ...] = ()
    servable_only: bool = False
    n_estimated: int = 0
    #: mu, the weight of expected latency (seconds) in the objective of requests that give none;
    #: set by the operator, not solved: the expected figures above are for mu = 0.
    latency_weight: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(str(name) for name in self.models))
        weight = self.latency_weight
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not (math.isfinite(weight) and weight >= 0)
        ):
            raise CalibrationError(f"latency weight must be a number >= 0, got {weight!r}")
        object.__setattr__(self, "latency_weight", float(weight))

    def describe_basis(self) -> str:
        """How the expected figures were measured, e.g. 'out-of-sample (5-fold cross-fitted)'."""
        if self.out_of_sample:
            return f"out-of-sample ({self.n_folds}-fold cross-fitted)"
        return "in-sample (optimistic)"

    def left_out(self, enabled: Iterable[str]) -> list[str]:
        """The enabled models this policy was not solved over (with ``servable_only``: those
        without an endpoint); [] for a policy stored before ``models`` was recorded."""
        if not self.models:
            return []
        solved = set(self.models)
        return [name for name in enabled if name not in solved]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        data = asdict(self)
        data["target"] = self.target.to_dict()
        data["models"] = list(self.models)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        """Inverse of to_dict; fields added later take their defaults when absent."""
        return cls(
            lam=float(data["lam"]),
            expected_cost=float(data["expected_cost"]),
            expected_quality=float(data["expected_quality"]),
            target=Target.from_dict(data["target"]),
            pool_fingerprint=str(data["pool_fingerprint"]),
            achieved=float(data["achieved"]),
            n_prompts=int(data["n_prompts"]),
            created_at=str(data.get("created_at", "")),
            out_of_sample=bool(data.get("out_of_sample", False)),
            n_folds=int(data.get("n_folds", 0)),
            models=tuple(str(name) for name in data.get("models", ())),
            servable_only=bool(data.get("servable_only", False)),
            n_estimated=int(data.get("n_estimated", 0)),
            latency_weight=float(data.get("latency_weight", 0.0)),
        )


@dataclass(frozen=True)
class LambdaPath:
    """Routing outcomes on a fixed prompt set for every distinct decision set as lambda grows.

    Point ``j`` holds for every lambda in ``[lambdas[j], lambdas[j + 1])`` (the last one up to
    infinity); ``lambdas[0] == 0``. ``costs`` never increase along the path. ``qualities`` are
    the mean over every prompt of the chosen model's :func:`filled_quality` (its actual score, or
    ``1 - estimated error`` where it has none); ``n_estimated`` counts the prompts whose chosen
    model has no score, i.e. whose quality is that estimate; ``shares`` the fraction of prompts
    routed to one model.
    """

    lambdas: np.ndarray
    costs: np.ndarray
    qualities: np.ndarray
    shares: np.ndarray | None
    path: DecisionPath
    n_estimated: np.ndarray

    def interior_lambda(self, j: int) -> float:
        """A lambda strictly inside point j's interval (0 for the first point)."""
        return self.path.interior_lambda(j)

    def describe_point(self, j: int) -> str:
        """'λ=…, cost …, quality …' of point j, for messages."""
        return (
            f"λ={self.interior_lambda(j):.6g}, cost {self.costs[j]:.6g}, "
            f"quality {self.qualities[j]:.4f}"
        )


def filled_quality(scores: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """Quality of each (prompt, model): the actual score where known, else ``1 - error``.

    ``scores`` (n, m) are actual scores (NaN = missing), ``errors`` (n, m) estimated errors.
    """
    scores = np.asarray(scores, dtype=float)
    errors = np.asarray(errors, dtype=float)
    if scores.shape != errors.shape:
        raise CalibrationError(f"scores {scores.shape} and errors {errors.shape} do not match")
    return np.where(np.isfinite(scores), scores, 1.0 - errors)


def lambda_path(
    errors: np.ndarray, costs: np.ndarray, scores: np.ndarray, share_model: int | None = None
) -> LambdaPath:
    """Mean cost, mean quality[, share of one model] at every breakpoint of the sweep.

    ``errors`` (n, m) are estimated errors, ``costs`` (m,) per-query costs, ``scores`` (n, m)
    actual qualities (NaN = missing: that cell's quality is ``1 - errors``, see
    :func:`filled_quality`; ``LambdaPath.n_estimated`` counts them at each point).
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
    shares = None
    if share_model is not None:
        shares = path.totals(np.arange(m) == share_model) / n
    return LambdaPath(
        lambdas=path.breakpoints,
        costs=path.totals(costs) / n,
        qualities=path.totals(filled_quality(scores, errors)) / n,
        shares=shares,
        path=path,
        n_estimated=np.rint(path.totals(~np.isfinite(scores))).astype(int),
    )


def solve_target(
    errors: np.ndarray,
    costs: np.ndarray,
    scores: np.ndarray,
    model_names: list[str],
    target: Target,
    pool_fingerprint: str = "",
    *,
    out_of_sample: bool = False,
    n_folds: int = 0,
    servable_only: bool = False,
    share_tolerance: float = SHARE_TOLERANCE,
) -> Policy:
    """The lambda meeting ``target`` on these prompts.

    Every prompt counts, with the quality of :func:`filled_quality`. Among the distinct decision
    sets along the lambda path: cost -> the highest expected quality whose expected cost is at
    most the target (ties to the cheaper); quality -> the lowest expected cost whose expected
    quality is at least the target (ties to the more accurate); share -> the share of prompts
    routed to the model closest to the target (ties to the cheaper), provided it is within
    ``share_tolerance`` of it. A target no decision set meets raises CalibrationError naming the
    nearest achievable points (the cheapest, the most accurate, or the shares either side).

    ``out_of_sample``, ``n_folds`` and ``servable_only`` only describe how ``errors`` and the
    model set were obtained; they are recorded in the policy.
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
            cheapest = _cheapest_point(path)
            raise CalibrationError(
                f"target cost {target.value:g} per query is below the cheapest possible expected "
                f"cost {path.costs[cheapest]:g} (everything routed to the cheapest model; "
                f"cheapest achievable: {path.describe_point(cheapest)})"
            )
        best = path.qualities[meets].max()
        candidates = meets[path.qualities[meets] >= best]
        point = int(candidates[np.argmin(path.costs[candidates])])
    elif target.kind == "quality":
        meets = np.flatnonzero(path.qualities >= target.value - _TOLERANCE)
        if meets.size == 0:
            best_point = _best_point(path)
            raise CalibrationError(
                f"target quality {target.value:g} is above the best expected quality "
                f"{path.qualities[best_point]:.4f} on the representative prompts (best "
                f"achievable: {path.describe_point(best_point)})"
            )
        cheapest_cost = path.costs[meets].min()
        candidates = meets[path.costs[meets] <= cheapest_cost]
        point = int(candidates[np.argmax(path.qualities[candidates])])
    else:
        point = _closest_share(path, target, share_tolerance)

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
        out_of_sample=bool(out_of_sample),
        n_folds=int(n_folds),
        models=tuple(model_names),
        servable_only=bool(servable_only),
        n_estimated=int(path.n_estimated[point]),
    )


def _cheapest_point(path: LambdaPath) -> int:
    """The cheapest point (the last of equal cost: costs never increase along the path)."""
    return int(np.flatnonzero(path.costs <= path.costs.min())[-1])


def _best_point(path: LambdaPath) -> int:
    """The most accurate point (ties to the cheaper)."""
    best = np.flatnonzero(path.qualities >= path.qualities.max())
    return int(best[np.argmin(path.costs[best])])


def _percent(share: float) -> str:
    return f"{100 * share:.3g}%"


def _closest_share(path: LambdaPath, target: Target, tolerance: float) -> int:
    """The point whose share is closest to the target (ties to the cheaper), or an error naming
    the achievable shares either side when even the closest is farther than ``tolerance``."""
    shares = _shares_of(path)
    distance = np.abs(shares - target.value)
    closest = np.flatnonzero(distance <= distance.min() + _TOLERANCE)
    point = int(closest[-1])
    if distance[point] <= tolerance + _TOLERANCE:
        return point
    neighbours = []
    for side in (shares < target.value, shares > target.value):
        if side.any():
            nearest = np.flatnonzero(side & (distance <= distance[side].min() + _TOLERANCE))
            j = int(nearest[-1])  # the cheapest of equal shares
            neighbours.append(f"{_percent(shares[j])} ({path.describe_point(j)})")
    raise CalibrationError(
        f"no λ gives {_percent(target.value)} of traffic to {target.model} (within "
        f"±{_percent(tolerance)}); achievable shares near it: {' and '.join(neighbours)}"
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
