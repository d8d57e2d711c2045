"""Sign test on known counts and mean / sample std over trials."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uniroute.evaluation.stats import SignTestResult, mean_std, sign_test


def test_nine_wins_one_loss():
    # Two-sided exact binomial, p = 2 * P(X <= 1 | n = 10, 1/2) = 2 * (1 + 10) / 1024 = 0.021484375.
    a = np.r_[np.full(9, 0.8), 0.1]
    b = np.full(10, 0.5)
    result = sign_test(a, b)
    assert (result.wins, result.losses, result.ties) == (9, 1, 0)
    assert result.p_value == pytest.approx(22 / 1024, rel=1e-12)


def test_ties_are_ignored():
    # 9 wins, 1 loss and 3 ties: the same p-value as 9 vs 1.
    a = np.r_[np.full(9, 0.8), 0.1, 0.5, 0.5, 0.5]
    b = np.full(13, 0.5)
    assert sign_test(a, b) == SignTestResult(9, 1, 3, pytest.approx(22 / 1024, rel=1e-12))


def test_values_equal_up_to_rounding_tie():
    assert sign_test([0.1 + 0.2], [0.3]).ties == 1


def test_ten_wins_no_loss():
    # p = 2 * (1/2)^10 = 2 / 1024.
    assert sign_test(np.ones(10), np.zeros(10)).p_value == pytest.approx(2 / 1024, rel=1e-12)


def test_balanced_and_all_ties_give_p_one():
    assert sign_test([1, 1, 0, 0], [0, 0, 1, 1]).p_value == pytest.approx(1.0)
    assert sign_test([0.5, 0.5], [0.5, 0.5]) == SignTestResult(0, 0, 2, 1.0)


def test_sign_test_result_to_dict():
    assert SignTestResult(3, 1, 2, 0.625).to_dict() == {
        "wins": 3,
        "losses": 1,
        "ties": 2,
        "p_value": 0.625,
    }


def test_sign_test_refuses_unpaired_or_missing_values():
    with pytest.raises(ValueError, match="paired"):
        sign_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="trial 1 has a NaN"):
        sign_test([1.0, np.nan], [0.0, 0.0])


def test_mean_std_by_hand():
    # Mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5; / (4 - 1) -> std sqrt(5 / 3).
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5)
    assert std == pytest.approx(math.sqrt(5 / 3))


def test_mean_std_of_one_value_has_zero_std():
    assert mean_std([0.7]) == (pytest.approx(0.7), 0.0)


def test_mean_std_ignores_nan_and_counts_what_it_used():
    # Values 1 and 3: mean 2, std sqrt(((1 - 2)^2 + (3 - 2)^2) / 1) = sqrt(2).
    mean, std, used = mean_std([1.0, np.nan, 3.0], return_count=True)
    assert (mean, std, used) == (pytest.approx(2.0), pytest.approx(math.sqrt(2)), 2)


def test_mean_std_with_no_value_is_nan():
    mean, std, used = mean_std([np.nan], return_count=True)
    assert math.isnan(mean) and math.isnan(std) and used == 0


def test_mean_std_refuses_infinity():
    with pytest.raises(ValueError, match="infinite"):
        mean_std([1.0, np.inf])
