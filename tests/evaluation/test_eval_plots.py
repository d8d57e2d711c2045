"""Deferral plots write real PNG files; curves average on a normalised grid."""

from __future__ import annotations

import numpy as np
import pytest

from uniroute.evaluation.plots import MeanCurve, average_curves, plot_deferral_curves
from uniroute.tradeoff import DeferralCurve, deferral_curve

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _curves() -> dict[str, DeferralCurve]:
    rng = np.random.default_rng(1)
    quality = rng.integers(0, 2, size=(40, 3)).astype(float)
    costs = np.array([1.0, 2.0, 5.0])
    noisy = np.clip(1.0 - quality + rng.normal(0, 0.4, quality.shape), 0, 1)
    return {
        "knn": deferral_curve(noisy, costs, quality),
        "oracle": deferral_curve(1.0 - quality, costs, quality),
    }


def test_plot_writes_a_png(tmp_path):
    path = plot_deferral_curves(
        _curves(),
        {"org/small-model": (1.0, 0.5), "big-model": (5.0, 0.55)},
        tmp_path / "plots" / "deferral.png",
        "test pool",
        max_cost=5.0,
    )
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000


def test_plot_of_raw_costs_and_of_mean_curves(tmp_path):
    curves = _curves()
    raw = plot_deferral_curves(curves, {}, tmp_path / "raw.png", "raw costs")
    assert raw.read_bytes().startswith(PNG_SIGNATURE)
    mean = average_curves([curves["oracle"], curves["knn"]], [5.0, 5.0], grid=11)
    normalised = plot_deferral_curves(
        {"mean": mean}, {"m": (0.2, 0.5)}, tmp_path / "m.png", "mean", 1.0
    )
    assert normalised.read_bytes().startswith(PNG_SIGNATURE)


def test_mean_curves_need_a_normalised_axis(tmp_path):
    mean = average_curves([_curves()["oracle"]], [5.0])
    with pytest.raises(ValueError, match="normalised"):
        plot_deferral_curves({"mean": mean}, {}, tmp_path / "x.png", "mean")
    assert not (tmp_path / "x.png").exists()


def test_average_curves_by_hand():
    # Curve A: envelope (1, 0.6) - (1.5, 0.8) - (2, 0.85), max cost 2; read at normalised 0, 0.5, 1
    # -> costs 0, 1, 2 -> 0.6, 0.6, 0.85. Curve B: one point (1, 0.4), max cost 4 -> 0.4 everywhere.
    # Mean (0.5, 0.5, 0.625); sample std of two values = |a - b| / sqrt(2).
    errors = np.array([[0.1, 0.5], [0.2, 0.3]])
    curve_a = deferral_curve(errors, np.array([2.0, 1.0]), 1.0 - errors)
    curve_b = DeferralCurve(lambdas=[0.0], costs=[1.0], qualities=[0.4])
    mean = average_curves([curve_a, curve_b], [2.0, 4.0], grid=3)
    assert isinstance(mean, MeanCurve) and mean.n_trials == 2
    np.testing.assert_allclose(mean.costs, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(mean.qualities, [0.5, 0.5, 0.625])
    np.testing.assert_allclose(mean.stds, np.array([0.2, 0.2, 0.45]) / np.sqrt(2))


def test_average_curves_refuses_bad_input():
    curve = _curves()["oracle"]
    with pytest.raises(ValueError, match="no curves"):
        average_curves([], [])
    with pytest.raises(ValueError, match="2 curves but 1"):
        average_curves([curve, curve], [1.0])
    with pytest.raises(ValueError, match="trial 1"):
        average_curves([curve, curve], [1.0, 0.0])
