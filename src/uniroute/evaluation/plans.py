"""Scoring verify-and-escalate plans on test prompts with honest costs.

A plan router (``routers.verify.UniRouteVerify``) decides among plans with its estimates (error
and expected cost per cluster, from the pool's representative prompts only). On a test prompt a
plan's realised cost is the sum of every call it makes there: both candidates always, the
target only when the candidates' real answers to that prompt disagree; its quality is that of
the answer it returns (``routers.verify.plan_outcomes``). The deferral curve is the exact lambda
sweep of ``uniroute.tradeoff`` over those per-prompt estimates, costs and qualities.
"""

from __future__ import annotations

import numpy as np

from uniroute.errors import RouterError
from uniroute.evaluation.metrics import evaluate_curve
from uniroute.routers.verify import PlanTable, UniRouteVerify, plan_outcomes
from uniroute.tradeoff import DeferralCurve, deferral_curve


def masked_answers(answers: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Answers with None wherever the score is missing: evidence withheld is withheld whole."""
    out = np.array(answers, dtype=object)
    out[~np.isfinite(np.asarray(scores, dtype=float))] = None
    return out


def plan_curve(
    table: PlanTable,
    rows: np.ndarray,
    quality: np.ndarray,
    call_costs: np.ndarray,
    answers: np.ndarray,
) -> DeferralCurve:
    """The plan router's deferral curve on test prompts (``rows``: each prompt's cluster row).

    ``quality``, ``call_costs`` and ``answers`` are the (n, m) true scores, realised call costs
    and real answer keys of the pool's models on those prompts.
    """
    realised_quality, realised_cost = plan_outcomes(table, quality, call_costs, answers)
    return deferral_curve(
        table.errors[rows], table.costs[rows], realised_quality, call_costs=realised_cost
    )


def plan_metrics(
    estimator: UniRouteVerify,
    names: list[str],
    val_scores: np.ndarray,
    val_answers: np.ndarray,
    costs: np.ndarray,
    X_test: np.ndarray,
    quality: np.ndarray,
    call_costs: np.ndarray,
    answers: np.ndarray,
    subset: np.ndarray | None = None,
) -> tuple[dict[str, float], DeferralCurve, PlanTable] | None:
    """Metrics (references: the single test models), curve and plan table of the plan router.

    The test LLMs enter through their representative-prompt scores and answers only. None when
    some test LLM has no representative score left (it cannot be described). ``subset`` limits
    the scoring to some test prompts (a boolean mask).
    """
    if not np.isfinite(val_scores).any(axis=0).all():
        return None
    if np.shape(val_answers) != np.shape(val_scores):
        raise RouterError(
            f"representative answers are {np.shape(val_answers)}, scores {np.shape(val_scores)}"
        )
    pool = estimator.make_pool(
        names, val_scores, costs, answers=masked_answers(val_answers, val_scores)
    )
    table, rows = estimator.predict_plans(X_test, pool)
    keep = np.ones(len(rows), dtype=bool) if subset is None else np.asarray(subset, dtype=bool)
    curve = plan_curve(table, rows[keep], quality[keep], call_costs[keep], answers[keep])
    return evaluate_curve(curve, quality[keep], call_costs[keep]), curve, table
