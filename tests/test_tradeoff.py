"""The trade-off: the argmin rule, the exact lambda sweep (decision_path), the deferral curve
(hand-computed sweeps, the event sweep against brute force), its envelope and area."""

from __future__ import annotations

import numpy as np
import pytest

from uniroute import tradeoff as tradeoff_module
from uniroute.tradeoff import (
    DeferralCurve,
    area,
    decision_path,
    deferral_curve,
    mean_quality_up_to,
    route_argmin,
    upper_envelope,
)

# --------------------------------------------------------------------------- the argmin rule


def test_route_argmin_breaks_ties_towards_the_cheaper_model_and_takes_per_row_lambdas():
    errors = np.array([[0.2, 0.2, 0.5], [0.1, 0.3, 0.35]])
    costs = np.array([2.0, 1.0, 0.5])
    assert route_argmin(errors, costs, 0.0).tolist() == [1, 0]
    # Row 0 at lam 0.6: 1.4, 0.8, 0.8 -> tie between models 1 and 2, the cheaper (2) wins.
    assert route_argmin(errors, costs, np.array([0.6, 0.0])).tolist() == [2, 0]
    # Objectives equal up to rounding are ties too.
    assert route_argmin(np.array([[0.3, 0.1 + 0.2]]), np.array([2.0, 1.0]), 0.0).tolist() == [1]


# --------------------------------------------------------------------------- hand-computed sweeps


def test_two_prompts_two_models_by_hand():
    # costs (2, 1). Prompt 0: err (0.1, 0.5) -> lines cross at (0.5 - 0.1) / (2 - 1) = 0.4.
    # Prompt 1: err (0.2, 0.3) -> cross at (0.3 - 0.2) / 1 = 0.1. Quality = 1 - err.
    # lam in [0, 0.1): both on model 0: cost 2, quality (0.9 + 0.8) / 2 = 0.85
    # lam in [0.1, 0.4): prompt 1 on model 1: cost (2 + 1) / 2 = 1.5, quality (0.9 + 0.7) / 2 = 0.8
    # lam >= 0.4: both on model 1: cost 1, quality (0.5 + 0.7) / 2 = 0.6
    errors = np.array([[0.1, 0.5], [0.2, 0.3]])
    curve = deferral_curve(errors, np.array([2.0, 1.0]), 1.0 - errors)
    np.testing.assert_allclose(curve.lambdas, [0.0, 0.1, 0.4])
    np.testing.assert_allclose(curve.costs, [2.0, 1.5, 1.0])
    np.testing.assert_allclose(curve.qualities, [0.85, 0.8, 0.6])
    assert curve.n_prompts == 2
    # Slopes 0.4 then 0.1: already concave, so the envelope keeps all three points.
    np.testing.assert_allclose(curve.envelope_costs, [1.0, 1.5, 2.0])
    np.testing.assert_allclose(curve.envelope_qualities, [0.6, 0.8, 0.85])


def test_quality_at_interpolates_and_is_flat_outside():
    errors = np.array([[0.1, 0.5], [0.2, 0.3]])
    curve = deferral_curve(errors, np.array([2.0, 1.0]), 1.0 - errors)
    # Below the cheapest point (cost 1): its quality 0.6; midway 1 -> 1.5: (0.6 + 0.8) / 2 = 0.7;
    # past the best point (cost 2): 0.85.
    assert curve.quality_at(0.0) == pytest.approx(0.6)
    assert curve.quality_at(1.25) == pytest.approx(0.7)
    assert curve.quality_at(1.75) == pytest.approx(0.825)
    assert curve.quality_at(10.0) == pytest.approx(0.85)
    np.testing.assert_allclose(curve.quality_at(np.array([0.5, 1.5])), [0.6, 0.8])
    assert isinstance(curve.quality_at(1.0), float)


def test_realised_call_costs_are_accumulated_not_decision_costs():
    # Decisions as in the 2x2 example (breakpoints 0.1 and 0.4) but each call costs its own amount:
    # lam 0: calls (0, 0) and (1, 0) cost 4 + 6 -> mean 5; after 0.1 prompt 1 pays 1 -> (4 + 1) / 2
    # = 2.5; after 0.4 prompt 0 pays 2 -> (2 + 1) / 2 = 1.5.
    errors = np.array([[0.1, 0.5], [0.2, 0.3]])
    call_costs = np.array([[4.0, 2.0], [6.0, 1.0]])
    curve = deferral_curve(errors, np.array([2.0, 1.0]), 1.0 - errors, call_costs=call_costs)
    np.testing.assert_allclose(curve.costs, [5.0, 2.5, 1.5])


def test_tie_at_lambda_zero_goes_to_the_cheaper_model():
    # Equal estimated error: the cheaper model (column 1) is chosen from lam = 0, so no event.
    quality = np.array([[1.0, 0.0]])
    curve = deferral_curve(np.array([[0.2, 0.2]]), np.array([2.0, 1.0]), quality)
    np.testing.assert_allclose(curve.costs, [1.0])
    np.testing.assert_allclose(curve.qualities, [0.0])


def test_lines_crossing_at_one_lambda_jump_straight_to_the_cheapest():
    # err (0.1, 0.2, 0.3), costs (3, 2, 1): 0->1 crosses at 0.1 / 1 = 0.1 and 0->2 at 0.2 / 2 = 0.1,
    # so at lam = 0.1 all three tie and the cheapest (model 2) wins; model 1 is never used.
    errors = np.array([[0.1, 0.2, 0.3]])
    quality = np.array([[0.9, 0.5, 0.4]])
    curve = deferral_curve(errors, np.array([3.0, 2.0, 1.0]), quality)
    np.testing.assert_allclose(curve.lambdas, [0.0, 0.1])
    np.testing.assert_allclose(curve.costs, [3.0, 1.0])
    np.testing.assert_allclose(curve.qualities, [0.9, 0.4])


def test_equal_cost_models_never_switch_between_each_other():
    # Models 0 and 1 both cost 1: model 0 (err 0.1) always beats model 1 (err 0.3). Model 2 (cost
    # 0.5, err 0.5) takes over at (0.5 - 0.1) / (1 - 0.5) = 0.8.
    errors = np.array([[0.1, 0.3, 0.5]])
    quality = np.array([[1.0, 1.0, 0.0]])
    curve = deferral_curve(errors, np.array([1.0, 1.0, 0.5]), quality)
    np.testing.assert_allclose(curve.lambdas, [0.0, 0.8])
    np.testing.assert_allclose(curve.costs, [1.0, 0.5])


def test_events_at_the_same_lambda_make_one_point():
    # Two identical prompts switch at the same lam = 0.4: one breakpoint, two points.
    errors = np.array([[0.1, 0.5], [0.1, 0.5]])
    curve = deferral_curve(errors, np.array([2.0, 1.0]), 1.0 - errors)
    np.testing.assert_allclose(curve.lambdas, [0.0, 0.4])
    np.testing.assert_allclose(curve.costs, [2.0, 1.0])


def test_breakpoints_equal_up_to_rounding_make_one_point():
    # costs (3, 1). Prompt 0 crosses at (0.3 - 0.1) / 2 and prompt 1 at (0.2 - 0.0) / 2: both 0.1,
    # but in floating point the first is 0.09999999999999999. They are one breakpoint.
    errors = np.array([[0.1, 0.3], [0.0, 0.2]])
    assert (errors[0, 1] - errors[0, 0]) / 2 != (errors[1, 1] - errors[1, 0]) / 2
    curve = deferral_curve(errors, np.array([3.0, 1.0]), 1.0 - errors)
    assert len(curve.lambdas) == 2
    np.testing.assert_allclose(curve.costs, [3.0, 1.0])


def test_all_costs_equal_gives_a_single_point():
    errors = np.array([[0.3, 0.1], [0.2, 0.4]])
    quality = np.array([[0.0, 1.0], [1.0, 0.0]])
    curve = deferral_curve(errors, np.array([1.0, 1.0]), quality)
    np.testing.assert_allclose(curve.costs, [1.0])
    np.testing.assert_allclose(curve.qualities, [1.0])
    assert curve.quality_at(0.0) == 1.0 and curve.quality_at(5.0) == 1.0


# --------------------------------------------------------------------------- brute force


def _brute_force(errors, costs, quality, call_costs):
    """Decisions by route_argmin at 0, at every pairwise crossing, between them and beyond."""
    n, m = errors.shape
    crossings = []
    for i in range(n):
        for a in range(m):
            for b in range(m):
                if costs[a] > costs[b]:
                    crossings.append((errors[i, b] - errors[i, a]) / (costs[a] - costs[b]))
    crossings = np.unique([lam for lam in crossings if lam > 0])
    if len(crossings):
        # Crossings equal up to rounding are one lambda: probing between them would be noise.
        distinct = np.r_[True, np.diff(crossings) > 1e-9 * np.maximum(1.0, crossings[:-1])]
        crossings = crossings[distinct]
    midpoints = (crossings[1:] + crossings[:-1]) / 2 if len(crossings) > 1 else np.array([])
    ends = [crossings[0] / 2, 2 * crossings[-1] + 1] if len(crossings) else [1.0]
    probes = np.sort(np.r_[0.0, crossings, midpoints, ends])
    rows = np.arange(n)
    lambdas, points, previous = [], [], None
    for lam in probes:
        decision = route_argmin(errors, costs, lam)
        if previous is None or (decision != previous).any():
            lambdas.append(lam)
            points.append((call_costs[rows, decision].mean(), quality[rows, decision].mean()))
            previous = decision
    return np.array(lambdas), np.array(points)


def _random_problem(seed, n, m, discrete):
    rng = np.random.default_rng(seed)
    if discrete:
        # Coarse values make many exact ties: equal errors, equal costs, common crossings.
        errors = rng.integers(0, 5, size=(n, m)) / 4.0
        costs = rng.choice([1.0, 2.0, 4.0], size=m)
    else:
        errors = rng.random((n, m))
        costs = rng.uniform(0.1, 5.0, size=m)
    quality = rng.random((n, m))
    call_costs = costs * rng.uniform(0.5, 1.5, size=(n, m))
    return errors, costs, quality, call_costs


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("discrete", [False, True])
def test_event_sweep_matches_brute_force(seed, discrete):
    errors, costs, quality, call_costs = _random_problem(seed, n=25, m=5, discrete=discrete)
    curve = deferral_curve(errors, costs, quality, call_costs=call_costs)
    lambdas, points = _brute_force(errors, costs, quality, call_costs)
    np.testing.assert_allclose(curve.lambdas, lambdas, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(curve.costs, points[:, 0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(curve.qualities, points[:, 1], rtol=1e-9, atol=1e-12)


def test_event_sweep_with_one_model_family_of_equal_costs_matches_brute_force():
    # Every cost equal but one: most lines are parallel and never cross one another.
    errors, _, quality, call_costs = _random_problem(11, n=30, m=6, discrete=True)
    costs = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 1.0])
    curve = deferral_curve(errors, costs, quality, call_costs=call_costs)
    lambdas, points = _brute_force(errors, costs, quality, call_costs)
    np.testing.assert_allclose(curve.lambdas, lambdas, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(curve.costs, points[:, 0], rtol=1e-9)
    np.testing.assert_allclose(curve.qualities, points[:, 1], rtol=1e-9)


def test_curve_ends_with_every_prompt_on_the_cheapest_model():
    errors, costs, quality, call_costs = _random_problem(3, n=40, m=6, discrete=False)
    curve = deferral_curve(errors, costs, quality, call_costs=call_costs)
    cheapest = int(np.argmin(costs))
    assert curve.costs[-1] == pytest.approx(call_costs[:, cheapest].mean())
    assert curve.qualities[-1] == pytest.approx(quality[:, cheapest].mean())
    assert (np.diff(curve.lambdas) > 0).all()


def test_sweep_in_small_row_blocks_gives_the_same_curve(monkeypatch):
    errors, costs, quality, call_costs = _random_problem(5, n=200, m=7, discrete=True)
    whole = deferral_curve(errors, costs, quality, call_costs=call_costs)
    monkeypatch.setattr(tradeoff_module, "_SWEEP_BLOCK_ELEMENTS", 7 * 13)
    blocked = deferral_curve(errors, costs, quality, call_costs=call_costs)
    np.testing.assert_allclose(blocked.lambdas, whole.lambdas)
    np.testing.assert_allclose(blocked.costs, whole.costs)
    np.testing.assert_allclose(blocked.qualities, whole.qualities)


def test_event_sweep_matches_brute_force_on_many_models():
    errors, costs, quality, call_costs = _random_problem(21, n=50, m=10, discrete=False)
    curve = deferral_curve(errors, costs, quality, call_costs=call_costs)
    lambdas, points = _brute_force(errors, costs, quality, call_costs)
    assert len(curve.lambdas) > 50  # many breakpoints: the check below is not vacuous
    np.testing.assert_allclose(curve.lambdas, lambdas, rtol=1e-9)
    np.testing.assert_allclose(curve.costs, points[:, 0], rtol=1e-9)
    np.testing.assert_allclose(curve.qualities, points[:, 1], rtol=1e-9)


# --------------------------------------------------------------------------- decision path


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("discrete", [False, True])
def test_each_point_of_the_path_is_the_argmin_inside_its_interval(seed, discrete):
    # Discrete problems have many exact ties: equal errors, equal costs, common crossings.
    errors, costs, quality, _ = _random_problem(seed, n=40, m=6, discrete=discrete)
    path = decision_path(errors, costs)
    assert path.breakpoints[0] == 0.0 and (np.diff(path.breakpoints) > 0).all()
    np.testing.assert_array_equal(path.choices(0), route_argmin(errors, costs, 0.0))
    rows = np.arange(len(errors))
    totals = path.totals(quality)
    cost_totals = path.totals(costs)
    for k in range(len(path.breakpoints)):
        lam = path.interior_lambda(k)
        assert path.point_index(lam) == k
        assert path.point_index(path.breakpoints[k]) == k
        choice = path.choices(k)
        np.testing.assert_array_equal(choice, route_argmin(errors, costs, lam), err_msg=str(k))
        assert totals[k] == pytest.approx(quality[rows, choice].sum(), abs=1e-9)
        assert cost_totals[k] == pytest.approx(costs[choice].sum(), abs=1e-9)
    # The last point holds for every larger lambda: every prompt on a cheapest model.
    assert (costs[path.choices(len(path.breakpoints) - 1)] == costs.min()).all()


def test_the_path_and_the_curve_share_breakpoints_and_point_at_matches_routing():
    errors, costs, quality, call_costs = _random_problem(4, n=50, m=5, discrete=True)
    path = decision_path(errors, costs)
    curve = deferral_curve(errors, costs, quality, call_costs=call_costs)
    np.testing.assert_array_equal(curve.lambdas, path.breakpoints)
    rows = np.arange(len(errors))
    for k in range(len(path.breakpoints)):
        lam = path.interior_lambda(k)
        chosen = route_argmin(errors, costs, lam)
        cost, quality_k = curve.point_at(lam)
        assert cost == pytest.approx(call_costs[rows, chosen].mean(), abs=1e-12)
        assert quality_k == pytest.approx(quality[rows, chosen].mean(), abs=1e-12)
        # From its breakpoint on, a point holds: point_at reads the raw point, not the envelope.
        assert curve.point_at(curve.lambdas[k]) == (curve.costs[k], curve.qualities[k])
    assert curve.point_at(1e9) == (curve.costs[-1], curve.qualities[-1])


def test_a_path_with_no_event_has_one_point():
    errors = np.array([[0.3, 0.1], [0.2, 0.4]])
    path = decision_path(errors, np.array([1.0, 1.0]))
    np.testing.assert_array_equal(path.breakpoints, [0.0])
    np.testing.assert_array_equal(path.choices(0), [1, 0])
    assert path.interior_lambda(0) == 0.0
    assert path.point_index(5.0) == 0
    np.testing.assert_allclose(path.totals(np.array([[1.0, 0.0], [0.5, 0.25]])), [0.5])


def test_the_path_by_hand():
    # The 2 x 2 example of the curve: prompt 1 moves to model 1 at 0.1, prompt 0 at 0.4.
    errors = np.array([[0.1, 0.5], [0.2, 0.3]])
    path = decision_path(errors, np.array([2.0, 1.0]))
    np.testing.assert_allclose(path.breakpoints, [0.0, 0.1, 0.4])
    assert [path.choices(k).tolist() for k in range(3)] == [[0, 0], [0, 1], [1, 1]]
    assert [path.interior_lambda(k) for k in range(3)] == pytest.approx([0.0, 0.25, 0.8])
    np.testing.assert_allclose(path.totals(np.array([2.0, 1.0])), [4.0, 3.0, 2.0])


# --------------------------------------------------------------------------- envelope


def test_upper_envelope_drops_points_below_a_chord_and_past_the_best():
    # (2, 0.55) lies under the chord (1, 0.5)-(3, 0.9) whose height at 2 is 0.7; (4, 0.8) is past
    # the best quality and (1, 0.3) is beaten by (1, 0.5) at the same cost.
    costs = np.array([2.0, 1.0, 4.0, 3.0, 1.0])
    qualities = np.array([0.55, 0.5, 0.8, 0.9, 0.3])
    env_costs, env_qualities = upper_envelope(costs, qualities)
    np.testing.assert_allclose(env_costs, [1.0, 3.0])
    np.testing.assert_allclose(env_qualities, [0.5, 0.9])


def test_upper_envelope_removes_collinear_and_flat_points():
    # (2, 0.6) is on the segment (1, 0.5)-(3, 0.7); (4, 0.7) only repeats the maximum.
    env_costs, env_qualities = upper_envelope(
        np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.5, 0.6, 0.7, 0.7])
    )
    np.testing.assert_allclose(env_costs, [1.0, 3.0])
    np.testing.assert_allclose(env_qualities, [0.5, 0.7])


@pytest.mark.parametrize("seed", range(5))
def test_envelope_is_concave_increasing_and_covers_every_point(seed):
    errors, costs, quality, call_costs = _random_problem(seed, n=60, m=8, discrete=seed % 2 == 0)
    # A noisy router: errors unrelated to the true quality, so raw points are far from concave.
    curve = deferral_curve(errors, costs, quality, call_costs=call_costs)
    slopes = np.diff(curve.envelope_qualities) / np.diff(curve.envelope_costs)
    assert (np.diff(curve.envelope_costs) > 0).all()
    assert (slopes > 0).all()
    assert (np.diff(slopes) <= 1e-12).all()
    assert (curve.qualities <= curve.quality_at(curve.costs) + 1e-12).all()
    assert curve.envelope_costs[0] == curve.costs.min()
    assert curve.envelope_qualities[-1] == curve.qualities.max()
    assert curve.max_quality == curve.qualities.max()


def test_curve_arrays_are_read_only():
    curve = DeferralCurve(lambdas=[0.0, 1.0], costs=[2.0, 1.0], qualities=[0.9, 0.5])
    with pytest.raises(ValueError):
        curve.envelope_qualities[0] = 1.0


# --------------------------------------------------------------------------- bad input


def test_missing_true_score_is_refused_with_its_position():
    quality = np.array([[1.0, 0.0], [np.nan, 1.0]])
    with pytest.raises(ValueError, match=r"prompt row 1, model column 0"):
        deferral_curve(np.zeros((2, 2)), np.array([1.0, 2.0]), quality)


@pytest.mark.parametrize(
    ("errors", "costs", "quality", "call_costs", "message"),
    [
        (np.zeros((2, 2)), np.array([1.0]), np.zeros((2, 2)), None, "costs has shape"),
        (np.zeros((2, 2)), np.array([1.0, -1.0]), np.zeros((2, 2)), None, "model column 1"),
        (np.zeros((2, 2)), np.ones(2), np.zeros((3, 2)), None, "quality has shape"),
        (np.zeros((2, 2)), np.ones(2), np.full((2, 2), 1.5), None, "outside"),
        (np.array([[0.0, np.inf]] * 2), np.ones(2), np.zeros((2, 2)), None, "non-finite"),
        (np.zeros((0, 2)), np.ones(2), np.zeros((0, 2)), None, "non-empty"),
        (np.zeros((2, 2)), np.ones(2), np.zeros((2, 2)), np.ones((2, 3)), "call_costs"),
        (np.zeros((2, 2)), np.ones(2), np.zeros((2, 2)), np.full((2, 2), np.nan), "call_costs"),
    ],
)
def test_bad_input_is_refused_clearly(errors, costs, quality, call_costs, message):
    with pytest.raises(ValueError, match=message):
        deferral_curve(errors, costs, quality, call_costs=call_costs)


def test_curve_needs_matching_point_arrays():
    with pytest.raises(ValueError, match="same length"):
        DeferralCurve(lambdas=[0.0], costs=[1.0, 2.0], qualities=[0.5, 0.6])


# --------------------------------------------------------------------------- area


def test_area_is_the_mean_envelope_quality_up_to_the_budget():
    # Envelope (1, 0.6) - (1.5, 0.8) - (2, 0.85): over [0, 2] the integral is 0.6 + 0.35 + 0.4125.
    errors = np.array([[0.1, 0.5], [0.2, 0.3]])
    curve = deferral_curve(errors, np.array([2.0, 1.0]), 1.0 - errors)
    assert area(curve, 2.0) == pytest.approx(1.3625 / 2, abs=1e-12)
    assert mean_quality_up_to(curve, 1.0) == pytest.approx(0.6, abs=1e-12)
    with pytest.raises(ValueError, match="cost budget must be a finite number > 0"):
        mean_quality_up_to(curve, 0.0)


def test_a_free_model_as_good_as_a_paid_one_wins_at_every_lambda():
    # A self-hosted model at $0 with the same estimated error as a paid API, and a better,
    # dearer one: at lambda 0 the best wins; from any lambda > 0 on, never the paid equal.
    errors = np.array([[0.2, 0.2, 0.1]])
    costs = np.array([0.002, 0.0, 0.03])
    assert route_argmin(errors, costs, 0.0).tolist() == [2]
    for lam in (1e-9, 1.0, 1e6):
        assert route_argmin(errors, costs, lam).tolist() == [1 if lam > 3.4 else 2]
    # Exactly as good and free: chosen even at lambda 0 over the paid twin.
    assert route_argmin(errors[:, :2], costs[:2], 0.0).tolist() == [1]
