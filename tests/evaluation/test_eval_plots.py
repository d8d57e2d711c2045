"""Evaluation figures write real PNG files; curves average on a normalised grid; single LLMs
are summarised over the trials they were tested in; the $ axis is drawn for dollar costs only."""

from __future__ import annotations

import numpy as np
import pytest

from uniroute.evaluation.plots import (
    DOLLARS,
    MeanCurve,
    ModelSpread,
    PairedDifferences,
    average_curves,
    dollars_per_normalised_cost,
    mean_deferral_figure,
    model_spreads,
    plot_mean_deferral,
    plot_paired_differences,
)
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


def _mean_curves() -> dict[str, MeanCurve]:
    curves = _curves()
    return {
        "knn": average_curves([curves["knn"], curves["oracle"]], [5.0, 4.0], grid=21),
        "oracle": average_curves([curves["oracle"]], [5.0], grid=21),
    }


SPREADS = {"org/small-model": ModelSpread(0.2, 0.05, 0.5, 0.02, 3)}


def test_mean_figure_with_bands_and_spreads_is_a_png(tmp_path):
    path = plot_mean_deferral(
        _mean_curves(), SPREADS, tmp_path / "plots" / "deferral.png", "mean", 0.01
    )
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000
    # Written atomically: no temporary file is left beside it.
    assert [p.name for p in path.parent.iterdir()] == ["deferral.png"]


def test_the_band_is_one_std_and_absent_for_one_trial():
    curves = _mean_curves()
    axes = mean_deferral_figure(curves, {}, "bands").axes[0]
    # One shaded band: the two-trial knn curve; the one-trial oracle has no spread to show.
    (band,) = axes.collections
    upper = np.asarray(band.get_paths()[0].vertices)[:, 1].max()
    knn = curves["knn"]
    assert upper == pytest.approx((knn.qualities + knn.stds).max())
    assert knn.stds.max() > 0


def test_second_axis_only_with_a_dollar_scale():
    with_dollars = mean_deferral_figure(_mean_curves(), SPREADS, "$", 0.004).axes[0]
    (top,) = with_dollars.child_axes
    assert "$ per prompt" in top.get_xlabel() and "0.004" in top.get_xlabel()
    without = mean_deferral_figure(_mean_curves(), SPREADS, "no $", None).axes[0]
    assert without.child_axes == []


def test_dollar_scale_is_the_mean_max_cost_and_only_for_dollars():
    assert dollars_per_normalised_cost(DOLLARS, [0.002, 0.004, 0.006]) == pytest.approx(0.004)
    # Unknown units (a cost map, parameter counts) and unusable costs draw no $ axis.
    assert dollars_per_normalised_cost(None, [0.002, 0.004]) is None
    assert dollars_per_normalised_cost("parameters (B)", [7.0, 70.0]) is None
    assert dollars_per_normalised_cost(DOLLARS, []) is None
    assert dollars_per_normalised_cost(DOLLARS, [0.002, float("nan")]) is None


def test_model_spreads_by_hand():
    # Trial 1 (max cost 4): a at cost 2 (0.5 normalised), acc 0.6; b at 4 (1.0), acc 0.8.
    # Trial 2 (max cost 2): a at 1 (0.5), acc 0.7; c at 2 (1.0), acc 0.9.
    # Trial 3 (max cost 10): a at 2 (0.2), acc 0.8; c at 5 (0.5), acc 0.7.
    points = [
        {"a": (2.0, 0.6), "b": (4.0, 0.8)},
        {"a": (1.0, 0.7), "c": (2.0, 0.9)},
        {"c": (5.0, 0.7), "a": (2.0, 0.8)},
    ]
    spreads = model_spreads(points, [4.0, 2.0, 10.0])
    assert list(spreads) == ["a", "b", "c"]
    a, b, c = spreads["a"], spreads["b"], spreads["c"]
    assert a.n_trials == 3 and b.n_trials == 1 and c.n_trials == 2
    # a: costs (0.5, 0.5, 0.2): mean 0.4, sample std sqrt(((0.1)^2*2 + 0.2^2) / 2) = sqrt(0.03).
    assert a.cost == pytest.approx(0.4) and a.cost_std == pytest.approx(np.sqrt(0.03))
    assert a.accuracy == pytest.approx(0.7) and a.accuracy_std == pytest.approx(0.1)
    # b was tested once: its spread is 0, not undefined.
    assert (b.cost, b.cost_std, b.accuracy, b.accuracy_std) == pytest.approx((1.0, 0, 0.8, 0))
    # c: costs (1.0, 0.5), accuracies (0.9, 0.7): std of two values = |x - y| / sqrt(2).
    assert c.cost == pytest.approx(0.75) and c.cost_std == pytest.approx(0.5 / np.sqrt(2))
    assert c.accuracy == pytest.approx(0.8) and c.accuracy_std == pytest.approx(0.2 / np.sqrt(2))


def test_model_spreads_refuses_bad_input():
    with pytest.raises(ValueError, match="2 trials of points but 1"):
        model_spreads([{}, {}], [1.0])
    with pytest.raises(ValueError, match="trial 0"):
        model_spreads([{"a": (1.0, 0.5)}], [0.0])


def test_paired_differences_figure_is_a_png(tmp_path):
    found = PairedDifferences(np.array([0.01, -0.02, 0.03]), 0.00667, 2, 1, 0, 1.0)
    panels = {"area − K-NN": {"uniroute-kmeans": found, "uniroute-learned": found}}
    path = plot_paired_differences(panels, tmp_path / "paired.png", "paired")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError, match="no baseline"):
        plot_paired_differences({}, tmp_path / "none.png", "paired")
    assert not (tmp_path / "none.png").exists()


def test_average_curves_by_hand():
    # Curve A: envelope (1, 0.6) - (1.5, 0.8) - (2, 0.85), max cost 2; read at normalised 0, 0.5, 1
    # -> costs 0, 1, 2 -> 0.6, 0.6, 0.85. Curve B: one point (1, 0.4), max cost 4 -> 0.4 everywhere.
    # Mean (0.5, 0.5, 0.625); sample std of two values = |a - b| / sqrt(2).
    errors = np.array([[0.1, 0.5], [0.2, 0.3]])
    curve_a = deferral_curve(errors, np.array([2.0, 1.0]), 1.0 - errors)
    curve_b = DeferralCurve(
        lambdas=np.array([0.0]), costs=np.array([1.0]), qualities=np.array([0.4])
    )
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
