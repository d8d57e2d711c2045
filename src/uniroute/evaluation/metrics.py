"""Summary metrics of a deferral curve: area, area_50, quality-neutral cost and peak accuracy.

Every metric reads the curve's interpolated envelope (``DeferralCurve.quality_at``); the area
itself is :func:`uniroute.tradeoff.area`. The exact definitions are in docs/EVALUATION.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from uniroute.tradeoff import DeferralCurve, area, cost_matrix, mean_quality_up_to, score_matrix

#: Two qualities closer than this are equal (reaching the reference, ties between models).
QUALITY_TOLERANCE = 1e-12


def single_model_points(
    quality: np.ndarray, call_costs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean cost and accuracy of each model when it answers every prompt: two (m,) arrays."""
    quality = score_matrix(quality, "quality")
    call_costs = cost_matrix(call_costs, quality.shape, "call_costs")
    return call_costs.mean(axis=0), quality.mean(axis=0)


def area_50(curve: DeferralCurve, max_cost: float) -> float:
    """Mean envelope quality over [0, max_cost / 2] (the low-budget half of the cost axis)."""
    return mean_quality_up_to(curve, 0.5 * _positive(max_cost, "max_cost"))


def quality_neutral_cost(
    curve: DeferralCurve, ref_accuracy: float, ref_cost: float
) -> tuple[float, bool]:
    """Lowest cost (as % of ref_cost, at most 100) at which the curve reaches ref_accuracy; reached?

    The search runs over costs the router can realise (from its cheapest point on). When the
    curve never reaches the reference accuracy, or reaches it only above ``ref_cost``, the value
    is 100: sending everything to the reference model always achieves it at that cost.
    """
    ref_cost = _positive(ref_cost, "ref_cost")
    ref_accuracy = float(ref_accuracy)
    if not np.isfinite(ref_accuracy):
        raise ValueError(f"ref_accuracy must be a finite number, got {ref_accuracy}")
    target = ref_accuracy - QUALITY_TOLERANCE
    costs, qualities = curve.envelope_costs, curve.envelope_qualities
    reaching = np.flatnonzero(qualities >= target)
    if reaching.size == 0:
        return 100.0, False
    k = int(reaching[0])
    if k == 0:
        cost = float(costs[0])
    else:
        # The envelope rises strictly, so the target is crossed once inside segment (k-1, k).
        slope = (costs[k] - costs[k - 1]) / (qualities[k] - qualities[k - 1])
        cost = float(
            np.clip(
                costs[k - 1] + (ref_accuracy - qualities[k - 1]) * slope, costs[k - 1], costs[k]
            )
        )
    return min(100.0, 100.0 * cost / ref_cost), True


def peak_accuracy(curve: DeferralCurve) -> float:
    """The highest quality anywhere on the curve."""
    return curve.max_quality


def reference_models(quality: np.ndarray, call_costs: np.ndarray) -> dict[str, Any]:
    """The references of the metrics: the most expensive and the most accurate test model.

    Ties for the most accurate model go to the cheaper one (then the first column).
    """
    model_costs, accuracies = single_model_points(quality, call_costs)
    most_expensive = int(np.argmax(model_costs))
    near_best = accuracies >= accuracies.max() - QUALITY_TOLERANCE
    most_accurate = int(np.argmin(np.where(near_best, model_costs, np.inf)))
    return {
        "max_cost": float(model_costs[most_expensive]),
        "max_cost_model": most_expensive,
        "ref_accuracy": float(accuracies[most_accurate]),
        "ref_cost": float(model_costs[most_accurate]),
        "ref_model": most_accurate,
    }


def evaluate_curve(
    curve: DeferralCurve, quality: np.ndarray, call_costs: np.ndarray
) -> dict[str, Any]:
    """All metrics of one curve on one test set, with the references taken from the test models.

    ``quality`` and ``call_costs`` are the (n, m) true scores and realised costs of the test
    models. Returns area, area_50, qnc, qnc_reached, peak_accuracy and the references used
    (column indices for max_cost_model and ref_model).
    """
    references = reference_models(quality, call_costs)
    max_cost = references["max_cost"]
    if max_cost <= 0:
        raise ValueError("every test model has mean cost 0; a cost-normalised area is undefined")
    qnc, reached = quality_neutral_cost(curve, references["ref_accuracy"], references["ref_cost"])
    return {
        "area": area(curve, max_cost),
        "area_50": area_50(curve, max_cost),
        "qnc": qnc,
        "qnc_reached": reached,
        "peak_accuracy": peak_accuracy(curve),
        **references,
    }


def _positive(value: float, label: str) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{label} must be a finite number > 0, got {value}")
    return value
