"""Hyper-parameter selection: the routing score, the 2-fold split and the choice of a candidate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uniroute.errors import RouterError
from uniroute.routers.selection import (
    best_candidate,
    check_auto_or_positive_int,
    check_grid,
    cross_validate,
    fold_prior_errors,
    routing_score,
    two_fold_split,
)

# Two models, cheap (cost 1) and dear (cost 2). Prompt 0: only the dear one is right; prompt 1:
# both are right. With exact error estimates the curve has two points: at lambda = 0 prompt 0
# goes to the dear model and prompt 1 (a tie) to the cheap one: mean cost 1.5, quality 1; from
# lambda = 1 on everything goes to the cheap model: cost 1, quality 0.5. Normalised by the
# dearest cost 2, the area is (1/2) * (0.5 * 1 + (0.5 + 1) / 2 * 0.5 + 1 * 0.5) = 0.6875.
QUALITY = np.array([[0.0, 1.0], [1.0, 1.0]])
COSTS = np.array([1.0, 2.0])


def test_routing_score_is_the_hand_computed_area():
    assert routing_score(1.0 - QUALITY, COSTS, QUALITY) == pytest.approx(0.6875)


def test_routing_score_leaves_out_prompts_with_a_missing_score():
    quality = np.vstack([QUALITY, [np.nan, 0.0]])
    errors_hat = np.vstack([1.0 - QUALITY, [0.0, 1.0]])
    assert routing_score(errors_hat, COSTS, quality) == pytest.approx(0.6875)
    assert math.isnan(routing_score(errors_hat[2:], COSTS, quality[2:]))


def test_routing_score_with_free_models_is_the_quality_at_lambda_zero():
    # Prompt 0 goes to model 1 (right), prompt 1 to model 0 (wrong): quality 0.5.
    errors_hat = np.array([[0.9, 0.1], [0.2, 0.8]])
    quality = np.array([[0.0, 1.0], [0.0, 1.0]])
    assert routing_score(errors_hat, np.zeros(2), quality) == pytest.approx(0.5)


def test_routing_score_rewards_better_estimates():
    blind = np.tile([0.5, 0.4], (2, 1))  # always the dear model at lambda = 0
    assert routing_score(1.0 - QUALITY, COSTS, QUALITY) > routing_score(blind, COSTS, QUALITY)


def test_routing_score_rejects_mismatched_shapes():
    with pytest.raises(RouterError, match="must be equal"):
        routing_score(np.zeros((2, 2)), COSTS, np.zeros((3, 2)))


def test_two_fold_split_is_a_seeded_partition_into_halves():
    first, second = two_fold_split(11, random_state=3)
    assert (len(first), len(second)) == (6, 5)
    assert sorted(np.r_[first, second].tolist()) == list(range(11))
    again = two_fold_split(11, random_state=3)
    np.testing.assert_array_equal(again[0], first)
    assert not np.array_equal(two_fold_split(11, random_state=4)[0], first)
    with pytest.raises(RouterError, match="at least 2"):
        two_fold_split(1, random_state=0)


def test_cross_validate_scores_both_folds_and_averages_them():
    S_val = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    calls = []

    def fold_errors(candidate, describe, evaluate):
        calls.append((candidate, describe, evaluate))
        # "exact" knows the truth; "blind" always prefers the dear model.
        if candidate == "exact":
            return 1.0 - S_val[evaluate]
        return np.tile([0.5, 0.4], (len(evaluate), 1))

    scores = cross_validate(["exact", "blind"], fold_errors, S_val, COSTS, random_state=0)
    first, second = two_fold_split(len(S_val), random_state=0)
    for (_, d1, e1), (_, d2, e2) in (calls[:2], calls[2:]):
        np.testing.assert_array_equal(d1, first)
        np.testing.assert_array_equal(e1, second)
        np.testing.assert_array_equal(d2, second)
        np.testing.assert_array_equal(e2, first)
    expected = np.mean(
        [routing_score(1.0 - S_val[half], COSTS, S_val[half]) for half in (second, first)]
    )
    assert scores["exact"] == pytest.approx(expected)
    assert scores["exact"] > scores["blind"]
    assert best_candidate(scores) == "exact"


def test_best_candidate_prefers_the_first_of_equals_and_ignores_nan():
    assert best_candidate({5: 0.7, 10: 0.9, 20: 0.9}) == 10
    assert best_candidate({5: math.nan, 10: 0.1}) == 10
    assert best_candidate({5: math.nan, 10: math.nan}) == 5
    with pytest.raises(RouterError):
        best_candidate({})


def test_fold_prior_errors_falls_back_to_all_rows_for_a_model_unseen_in_the_half():
    errors = np.array([[0.0, np.nan], [1.0, np.nan], [1.0, 0.5]])
    np.testing.assert_allclose(fold_prior_errors(errors, np.array([0, 1])), [0.5, 0.5])


@pytest.mark.parametrize("bad", [[], "abc", [3, 0], [2.5], [True]])
def test_check_grid_rejects_bad_grids(bad):
    with pytest.raises(RouterError, match="k_grid"):
        check_grid(bad, "k_grid")


@pytest.mark.parametrize("bad", ["Auto", 0, -2, 1.5, True, None])
def test_check_auto_or_positive_int_rejects_bad_values(bad):
    with pytest.raises(RouterError, match="n_clusters"):
        check_auto_or_positive_int(bad, "n_clusters")
