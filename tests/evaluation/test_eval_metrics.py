"""Curve metrics on hand-computed curves: area, area_50, quality-neutral cost, peak accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from uniroute.evaluation.metrics import (
    area_50,
    evaluate_curve,
    peak_accuracy,
    quality_neutral_cost,
    reference_models,
    single_model_points,
)
from uniroute.tradeoff import DeferralCurve, area, deferral_curve, mean_quality_up_to


def _three_point_curve() -> DeferralCurve:
    # Envelope (1, 0.6) - (1.5, 0.8) - (2, 0.85): the 2 prompts x 2 models example of the sweep.
    errors = np.array([[0.1, 0.5], [0.2, 0.3]])
    return deferral_curve(errors, np.array([2.0, 1.0]), 1.0 - errors)


def test_area_by_hand():
    # Integral over [0, 2]: flat 0.6 on [0, 1] -> 0.6; trapezoid on [1, 1.5] -> 0.5 * (0.6 + 0.8)
    # / 2 = 0.35; on [1.5, 2] -> 0.5 * (0.8 + 0.85) / 2 = 0.4125. Sum 1.3625, / 2 -> 0.68125.
    assert area(_three_point_curve(), 2.0) == pytest.approx(0.68125, abs=1e-12)


def test_area_beyond_the_best_point_counts_the_flat_maximum():
    # Over [0, 4]: 1.3625 as above plus 0.85 * 2 on [2, 4] = 3.0625; divided by 4 -> 0.765625.
    assert area(_three_point_curve(), 4.0) == pytest.approx(0.765625, abs=1e-12)


def test_area_50_by_hand():
    # Half of max_cost 3 is 1.5: flat 0.6 on [0, 1] -> 0.6 plus 0.35 on [1, 1.5] = 0.95; / 1.5.
    assert area_50(_three_point_curve(), 3.0) == pytest.approx(0.95 / 1.5, abs=1e-12)
    # With max_cost 2 the half is [0, 1], all flat at 0.6.
    assert area_50(_three_point_curve(), 2.0) == pytest.approx(0.6, abs=1e-12)


def test_area_ending_inside_a_segment_by_hand():
    # Over [0, 1.25]: 0.6 on [0, 1] plus 0.25 * (0.6 + 0.7) / 2 = 0.1625; sum 0.7625 / 1.25 = 0.61.
    assert mean_quality_up_to(_three_point_curve(), 1.25) == pytest.approx(0.61, abs=1e-12)


def test_area_is_the_exact_integral_of_quality_at():
    rng = np.random.default_rng(0)
    errors = rng.random((80, 6))
    curve = deferral_curve(errors, rng.uniform(0.5, 3.0, 6), rng.random((80, 6)))
    budget = 2.2
    grid = np.linspace(0.0, budget, 400_001)
    values = curve.quality_at(grid)
    dense = float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(grid)) / budget)
    assert area(curve, budget) == pytest.approx(dense, abs=1e-8)


def test_peak_accuracy_is_the_best_point():
    assert peak_accuracy(_three_point_curve()) == pytest.approx(0.85)


def test_qnc_interpolates_on_the_envelope():
    curve = _three_point_curve()
    # 0.8 is reached at the vertex of cost 1.5: 1.5 / 2 = 75%.
    assert quality_neutral_cost(curve, 0.8, 2.0) == (pytest.approx(75.0), True)
    # 0.7 lies halfway between (1, 0.6) and (1.5, 0.8): cost 1.25 -> 1.25 / 2 = 62.5%.
    assert quality_neutral_cost(curve, 0.7, 2.0) == (pytest.approx(62.5), True)


def test_qnc_when_the_cheapest_point_already_reaches_the_reference():
    # The cheapest point (cost 1, quality 0.6) already beats 0.5: the lowest achievable cost is 1.
    assert quality_neutral_cost(_three_point_curve(), 0.5, 4.0) == (pytest.approx(25.0), True)


def test_qnc_not_reached_is_one_hundred_percent():
    assert quality_neutral_cost(_three_point_curve(), 0.9, 2.0) == (100.0, False)


def test_qnc_reached_only_above_the_reference_cost_is_capped():
    # 0.85 needs cost 2 but the reference model costs 1: sending everything to it is cheaper.
    assert quality_neutral_cost(_three_point_curve(), 0.85, 1.0) == (100.0, True)


def test_qnc_tolerates_rounding_of_the_reference_accuracy():
    curve = _three_point_curve()
    qnc, reached = quality_neutral_cost(curve, 0.85 + 1e-14, 2.0)
    assert reached and qnc == pytest.approx(100.0)


def test_evaluate_curve_on_an_oracle_by_hand():
    # True quality: prompt 0 (1, 0), prompt 1 (1, 1); costs (2, 1). Oracle error = 1 - quality.
    # lam = 0: prompt 0 -> model 0, prompt 1 tie -> cheaper model 1: cost 1.5, quality 1.
    # lam >= 1 (= (1 - 0) / (2 - 1)): prompt 0 -> model 1: cost 1, quality 0.5.
    # Models: model 0 accuracy 1.0 at cost 2 (most accurate, most expensive); model 1 0.5 at cost 1.
    # area over [0, 2]: 0.5 on [0, 1] + 0.5 * (0.5 + 1) / 2 on [1, 1.5] + 1 * 0.5 = 1.375 -> 0.6875
    # area_50 over [0, 1]: 0.5. QNC: quality 1 first at cost 1.5 -> 75%. Peak 1.
    quality = np.array([[1.0, 0.0], [1.0, 1.0]])
    costs = np.array([2.0, 1.0])
    call_costs = np.broadcast_to(costs, quality.shape)
    curve = deferral_curve(1.0 - quality, costs, quality)
    result = evaluate_curve(curve, quality, call_costs)
    assert result["area"] == pytest.approx(0.6875)
    assert result["area_50"] == pytest.approx(0.5)
    assert result["qnc"] == pytest.approx(75.0)
    assert result["qnc_reached"] is True
    assert result["peak_accuracy"] == pytest.approx(1.0)
    assert result["max_cost"] == pytest.approx(2.0)
    assert (result["ref_model"], result["ref_accuracy"], result["ref_cost"]) == (0, 1.0, 2.0)


def test_most_accurate_ties_go_to_the_cheaper_model():
    # Models 0 and 2 both have accuracy 0.5; model 2 is cheaper (1 < 3). Model 1 costs most (4).
    quality = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    call_costs = np.broadcast_to(np.array([3.0, 4.0, 1.0]), quality.shape)
    references = reference_models(quality, call_costs)
    assert references["ref_model"] == 2
    assert references["ref_cost"] == pytest.approx(1.0)
    assert references["max_cost_model"] == 1
    assert references["max_cost"] == pytest.approx(4.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_non_positive_budgets_are_refused(bad):
    with pytest.raises(ValueError, match="> 0"):
        area(_three_point_curve(), bad)
    with pytest.raises(ValueError, match="> 0"):
        quality_neutral_cost(_three_point_curve(), 0.5, bad)


def test_evaluate_curve_refuses_all_free_models():
    quality = np.array([[1.0, 0.0]])
    curve = deferral_curve(1.0 - quality, np.zeros(2), quality)
    with pytest.raises(ValueError, match="mean cost 0"):
        evaluate_curve(curve, quality, np.zeros((1, 2)))


def test_single_model_points_by_hand():
    # Model 0: accuracy (1 + 0) / 2 = 0.5, cost (2 + 4) / 2 = 3; model 1: 1.0 and 1.
    quality = np.array([[1.0, 1.0], [0.0, 1.0]])
    costs, accuracies = single_model_points(quality, np.array([[2.0, 1.0], [4.0, 1.0]]))
    np.testing.assert_allclose(costs, [3.0, 1.0])
    np.testing.assert_allclose(accuracies, [0.5, 1.0])


def test_single_model_points_refuse_missing_scores_and_bad_costs():
    with pytest.raises(ValueError, match="missing"):
        single_model_points(np.array([[np.nan, 1.0]]), np.ones((1, 2)))
    with pytest.raises(ValueError, match="call_costs has shape"):
        single_model_points(np.ones((1, 2)), np.ones((2, 2)))
