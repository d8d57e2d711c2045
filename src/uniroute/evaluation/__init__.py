"""Evaluation of routers: curve metrics, statistics over trials, plots, reports.

The deferral curve itself lives in :mod:`uniroute.tradeoff`; ``DeferralCurve``,
``deferral_curve``, ``upper_envelope`` and ``area`` are re-exported here for convenience.
"""

from uniroute.evaluation.metrics import (
    area_50,
    evaluate_curve,
    peak_accuracy,
    quality_neutral_cost,
    reference_models,
    single_model_points,
)
from uniroute.evaluation.stats import SignTestResult, mean_std, sign_test
from uniroute.tradeoff import DeferralCurve, area, deferral_curve, upper_envelope

__all__ = [
    "DeferralCurve",
    "SignTestResult",
    "area",
    "area_50",
    "deferral_curve",
    "evaluate_curve",
    "mean_std",
    "peak_accuracy",
    "quality_neutral_cost",
    "reference_models",
    "sign_test",
    "single_model_points",
    "upper_envelope",
]
