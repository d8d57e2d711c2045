"""Evaluation of routers: deferral curves, their metrics, statistics over trials, plots, reports."""

from uniroute.evaluation.deferral import (
    DeferralCurve,
    deferral_curve,
    single_model_points,
    upper_envelope,
)
from uniroute.evaluation.metrics import (
    area,
    area_50,
    evaluate_curve,
    peak_accuracy,
    quality_neutral_cost,
    reference_models,
)
from uniroute.evaluation.stats import SignTestResult, mean_std, sign_test

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
