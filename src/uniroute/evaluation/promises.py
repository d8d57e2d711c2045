"""Does calibration keep its promise on unseen LLMs? Promised versus realised quality and cost.

Per trial and router, lambda is calibrated on the representative (validation) prompts with the
test pool, as the product does when an operator sets a target; the policy promises an
``expected_quality`` and ``expected_cost``. Routing the trial's *test* prompts at that lambda
with the same (full-evidence) pool gives the realised mean quality and mean realised cost. The
difference is ``realised - promised`` (negative: the promise was too optimistic).

The calibration itself is passed in (a :data:`Calibrator`): it lives in the registry layer,
above this package, and the command line supplies the product's own solver.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from uniroute.errors import CalibrationError
from uniroute.evaluation.stats import mean_std
from uniroute.pool import Pool
from uniroute.routers.base import RouterEstimator
from uniroute.tradeoff import route_argmin

#: Target kinds the evaluation can calibrate for (``--calibrate-quality``, ``--calibrate-cost``).
CALIBRATION_KINDS = ("quality", "cost")


@dataclass(frozen=True)
class Promise:
    """A solved calibration target: the lambda and what it promises on the representative set."""

    lam: float
    expected_quality: float
    expected_cost: float


#: ``(estimator, representative-prompt embeddings, pool, target kind, target value) -> Promise``;
#: raises CalibrationError when the target cannot be met on the representative prompts.
Calibrator = Callable[[RouterEstimator, np.ndarray, Pool, str, float], Promise]


def realised_at(
    errors: np.ndarray,
    costs: np.ndarray,
    lam: float,
    quality: np.ndarray,
    call_costs: np.ndarray,
) -> tuple[float, float]:
    """Mean true quality and mean realised cost of routing these prompts at ``lam``."""
    choice = route_argmin(errors, costs, lam)
    rows = np.arange(len(choice))
    return float(np.mean(quality[rows, choice])), float(np.mean(call_costs[rows, choice]))


def check_promise(
    calibrator: Calibrator,
    estimator: RouterEstimator,
    X_rep: np.ndarray,
    pool: Pool,
    kind: str,
    value: float,
    *,
    test_errors: np.ndarray,
    test_quality: np.ndarray,
    test_call_costs: np.ndarray,
) -> dict[str, Any]:
    """Calibrate on the representative prompts, then measure the test prompts at that lambda."""
    try:
        promise = calibrator(estimator, X_rep, pool, kind, value)
    except CalibrationError as exc:
        nan = float("nan")
        return {
            "met": False,
            "reason": str(exc),
            "lam": nan,
            "promised_quality": nan,
            "promised_cost": nan,
            "realised_quality": nan,
            "realised_cost": nan,
        }
    quality, cost = realised_at(test_errors, pool.costs, promise.lam, test_quality, test_call_costs)
    return {
        "met": True,
        "reason": None,
        "lam": float(promise.lam),
        "promised_quality": float(promise.expected_quality),
        "promised_cost": float(promise.expected_cost),
        "realised_quality": quality,
        "realised_cost": cost,
    }


def summarise_promises(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Over trials: how often the target was met, and promised vs realised quality and cost.

    Means are over the trials where the target was met; ``difference`` is realised - promised.
    """
    met = [r for r in records if r["met"]]
    summary: dict[str, Any] = {"trials": len(records), "trials_met": len(met)}
    for metric in ("quality", "cost"):
        promised = np.array([r[f"promised_{metric}"] for r in met], dtype=float)
        realised = np.array([r[f"realised_{metric}"] for r in met], dtype=float)
        difference = realised - promised
        for key, values in (
            (f"promised_{metric}", promised),
            (f"realised_{metric}", realised),
            (f"{metric}_difference", difference),
            (f"{metric}_abs_difference", np.abs(difference)),
        ):
            mean, std = mean_std(values.tolist())
            summary[key] = {"mean": mean, "std": std}
    summary["per_trial"] = {
        key: [r[key] for r in records]
        for key in (
            "met",
            "lam",
            "promised_quality",
            "realised_quality",
            "promised_cost",
            "realised_cost",
        )
    }
    reasons = sorted({str(r["reason"]) for r in records if not r["met"]})
    summary["unmet_reasons"] = reasons
    return summary
