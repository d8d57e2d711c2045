"""Calibration: the exact lambda path and solving cost, quality and share targets."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from uniroute.embeddings import make_encoder
from uniroute.errors import CalibrationError
from uniroute.pool import Pool
from uniroute.registry.calibration import (
    SHARE_TOLERANCE,
    Policy,
    Target,
    filled_quality,
    lambda_path,
    make_target,
    solve_target,
)
from uniroute.routers import make_estimator
from uniroute.tradeoff import route_argmin

# Two prompts, three models (costs 1.0, 0.5, 0.1). Lines err_h + lambda * cost_h:
#   prompt 0: 0.1 + l, 0.3 + 0.5 l, 0.6 + 0.1 l -> model 0, then 1 at l = 0.4 (0.2 / 0.5),
#             then 2 at l = 0.75 (0.3 / 0.4);
#   prompt 1: 0.2 + l, 0.25 + 0.5 l, 0.5 + 0.1 l -> model 0, then 1 at l = 0.1 (0.05 / 0.5),
#             then 2 at l = 0.625 (0.25 / 0.4).
ERRORS = np.array([[0.1, 0.3, 0.6], [0.2, 0.25, 0.5]])
COSTS = np.array([1.0, 0.5, 0.1])
SCORES = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
NAMES = ["big", "mid", "small"]


def test_lambda_path_on_a_hand_computed_example() -> None:
    path = lambda_path(ERRORS, COSTS, SCORES, share_model=1)
    np.testing.assert_allclose(path.lambdas, [0.0, 0.1, 0.4, 0.625, 0.75])
    # Choices (prompt 0, prompt 1): (0,0) (0,1) (1,1) (1,2) (2,2)
    np.testing.assert_allclose(path.costs, [1.0, 0.75, 0.5, 0.3, 0.1])
    np.testing.assert_allclose(path.qualities, [1.0, 0.5, 0.5, 1.0, 0.5])
    np.testing.assert_allclose(path.shares, [0.0, 0.5, 1.0, 0.5, 0.0])
    assert path.interior_lambda(0) == 0.0
    assert path.interior_lambda(2) == pytest.approx((0.4 + 0.625) / 2)
    assert path.interior_lambda(4) == pytest.approx(1.5)


def test_targets_on_the_hand_computed_example() -> None:
    # Cost <= 0.6: points 2 (0.5, q 0.5), 3 (0.3, q 1.0), 4 (0.1, q 0.5) -> point 3, the most
    # accurate within budget; lambda in the middle of [0.625, 0.75).
    policy = solve_target(ERRORS, COSTS, SCORES, NAMES, Target("cost", 0.6), "fp")
    assert policy.lam == pytest.approx(0.6875)
    assert (policy.expected_cost, policy.expected_quality) == pytest.approx((0.3, 1.0))
    assert policy.achieved == pytest.approx(0.3)
    assert policy.pool_fingerprint == "fp"
    assert policy.n_prompts == 2
    # Quality >= 0.9: points 0 (cost 1.0) and 3 (cost 0.3) -> the cheaper, point 3.
    policy = solve_target(ERRORS, COSTS, SCORES, NAMES, Target("quality", 0.9))
    assert (policy.expected_cost, policy.expected_quality) == pytest.approx((0.3, 1.0))
    # Share of "mid" closest to 1.0: point 2 only.
    policy = solve_target(ERRORS, COSTS, SCORES, NAMES, Target("share", 1.0, model="mid"))
    assert policy.lam == pytest.approx(0.5125)
    assert policy.achieved == 1.0
    # Share 0.5: points 1 (cost 0.75) and 3 (cost 0.3) tie -> the cheaper.
    policy = solve_target(ERRORS, COSTS, SCORES, NAMES, Target("share", 0.5, model="mid"))
    assert policy.expected_cost == pytest.approx(0.3)
    # Any lambda at least 0.75 sends everything to "small": a cost of 0.1 is the floor.
    # (The sweep sums cost changes along its events, so the floor is met up to rounding.)
    floor = solve_target(ERRORS, COSTS, SCORES, NAMES, Target("cost", 0.1))
    assert floor.expected_cost == pytest.approx(0.1, rel=1e-12, abs=0)
    assert route_argmin(ERRORS, COSTS, floor.lam).tolist() == [2, 2]


def test_unreachable_targets_are_clear_errors() -> None:
    with pytest.raises(
        CalibrationError, match="below the cheapest possible expected cost 0.1"
    ) as e:
        solve_target(ERRORS, COSTS, SCORES, NAMES, Target("cost", 0.05))
    assert "cheapest achievable: λ=1.5, cost 0.1, quality 0.5000" in str(e.value)
    scores = np.array([[0.5, 0.0, 0.0], [0.5, 0.0, 0.0]])
    with pytest.raises(CalibrationError, match="above the best expected quality 0.5000") as e:
        solve_target(ERRORS, COSTS, scores, NAMES, Target("quality", 0.9))
    assert "best achievable: λ=0, cost 1, quality 0.5000" in str(e.value)
    with pytest.raises(CalibrationError, match="'gone' is not in the pool"):
        solve_target(ERRORS, COSTS, SCORES, NAMES, Target("share", 0.5, model="gone"))


def test_missing_scores_count_through_the_estimated_error() -> None:
    # Was: a prompt whose chosen model has no score was left out of the mean (the bug: at
    # lambda 0 the quality read 1.0 from prompt 0 alone). Now every prompt counts, the missing
    # score through the model's estimate 1 - err.
    scores = SCORES.copy()
    scores[1, 0] = np.nan  # prompt 1 has no score for "big"; its estimated error is 0.2
    path = lambda_path(ERRORS, COSTS, scores)
    np.testing.assert_allclose(path.qualities, [(1.0 + 0.8) / 2, 0.5, 0.5, 1.0, 0.5])
    # Only at lambda 0 (choices big, big) does a prompt's quality come from the estimate.
    assert path.n_estimated.tolist() == [1, 0, 0, 0, 0]
    np.testing.assert_array_equal(
        filled_quality(scores, ERRORS), [[1.0, 1.0, 0.0], [0.8, 0.0, 1.0]]
    )
    # The policy counts both prompts and says how many went through the estimate.
    policy = solve_target(ERRORS, COSTS, scores, NAMES, Target("quality", 0.85))
    assert policy.n_prompts == 2
    assert (policy.expected_cost, policy.expected_quality) == pytest.approx((0.3, 1.0))
    policy = solve_target(ERRORS, COSTS, scores, NAMES, Target("cost", 1.0))
    assert policy.expected_quality == pytest.approx(1.0)  # point 3 beats point 0's 0.9
    assert policy.n_estimated == 0
    everything_big = solve_target(ERRORS, COSTS, scores, NAMES, Target("share", 1.0, model="big"))
    assert everything_big.lam == 0.0 and everything_big.n_estimated == 1
    assert everything_big.expected_quality == pytest.approx(0.9)


def test_an_unachievable_share_names_the_achievable_shares_either_side() -> None:
    # Shares of "mid" along the path: 0, 0.5, 1, 0.5, 0 (hand example above).
    with pytest.raises(CalibrationError) as info:
        solve_target(ERRORS, COSTS, SCORES, NAMES, Target("share", 0.2, model="mid"))
    message = str(info.value)
    assert "no λ gives 20% of traffic to mid (within ±5%)" in message
    # Below: 0% (the cheaper of the two zero-share points, lambda >= 0.75 -> interior 1.5);
    # above: 50% (the cheaper of points 1 and 3: point 3, lambda in [0.625, 0.75)).
    assert "0% (λ=1.5, cost 0.1, quality 0.5000)" in message
    assert "50% (λ=0.6875, cost 0.3, quality 1.0000)" in message
    # Within the tolerance the closest share is taken, as before.
    near = solve_target(ERRORS, COSTS, SCORES, NAMES, Target("share", 0.46, model="mid"))
    assert near.achieved == 0.5 and near.expected_cost == pytest.approx(0.3)
    # The tolerance is a parameter; a share above every achievable one names only the one below.
    loose = solve_target(
        ERRORS, COSTS, SCORES, NAMES, Target("share", 0.2, model="mid"), share_tolerance=0.3
    )
    assert loose.achieved == 0.0
    # Here "big" is never chosen for prompt 1: its shares are 50% (lambda < 0.1) then 0%.
    errors, costs = np.array([[0.1, 0.5], [0.6, 0.5]]), np.array([1.0, 0.5])
    with pytest.raises(CalibrationError, match=r"near it: 50% \(λ=0, cost 0.75, [^)]*\)$"):
        solve_target(errors, costs, np.ones((2, 2)), ["big", "small"], Target("share", 1.0, "big"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one"),
        ({"target_cost": 1.0, "target_quality": 0.5}, "exactly one"),
        ({"target_quality": 1.5}, "must lie in \\[0, 1\\]"),
        ({"target_cost": -1.0}, ">= 0"),
        ({"target_share": ("m", 2.0)}, "must lie in \\[0, 1\\]"),
        ({"target_share": "m"}, "must be \\(model, share\\)"),
    ],
)
def test_malformed_targets(kwargs: dict, message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        make_target(**kwargs)


def test_policy_serialises_round_trip() -> None:
    policy = solve_target(ERRORS, COSTS, SCORES, NAMES, Target("share", 0.5, model="mid"), "x")
    assert Policy.from_dict(policy.to_dict()) == policy
    described = solve_target(
        ERRORS, COSTS, SCORES, NAMES, Target("cost", 0.6), "x",
        out_of_sample=True, n_folds=5, servable_only=True,
    )  # fmt: skip
    data = json.loads(json.dumps(described.to_dict()))
    assert data["models"] == NAMES and data["out_of_sample"] is True and data["n_folds"] == 5
    assert Policy.from_dict(data) == described
    assert described.describe_basis() == "out-of-sample (5-fold cross-fitted)"
    assert described.left_out(["big", "other", "small"]) == ["other"]


def test_a_policy_stored_before_the_new_fields_still_reads() -> None:
    old = {
        "lam": 0.5, "expected_cost": 0.3, "expected_quality": 0.9, "pool_fingerprint": "fp",
        "target": {"kind": "cost", "value": 0.6, "model": None}, "achieved": 0.3,
        "n_prompts": 2, "created_at": "2025-01-01T00:00:00+00:00",
    }  # fmt: skip
    policy = Policy.from_dict(old)
    assert (policy.out_of_sample, policy.n_folds, policy.models) == (False, 0, ())
    assert (policy.servable_only, policy.n_estimated) == (False, 0)
    assert policy.describe_basis() == "in-sample (optimistic)"
    assert policy.left_out(["a", "b"]) == []  # unknown, so nothing is claimed left out


def _brute_force_outcomes(errors, costs, scores):
    """(mean cost, mean quality) at 0, at every pairwise crossing, between them and beyond."""
    n, m = errors.shape
    crossings = [0.0]
    for i in range(n):
        for a in range(m):
            for b in range(m):
                if costs[a] > costs[b]:
                    lam = (errors[i, b] - errors[i, a]) / (costs[a] - costs[b])
                    if lam > 0:
                        crossings.append(lam)
    crossings = np.unique(crossings)
    probes = np.concatenate(
        [crossings, (crossings[1:] + crossings[:-1]) / 2, [crossings[-1] * 2 + 1]]
    )
    outcomes = set()
    for lam in probes:
        choice = route_argmin(errors, costs, lam)
        chosen = scores[np.arange(n), choice]
        outcomes.add((round(costs[choice].mean(), 9), round(np.nanmean(chosen), 9)))
    return outcomes


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lambda_path_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, m = 12, 5
    # Coarse values make ties in error and in cost (equal-cost models) common.
    errors = rng.integers(0, 5, size=(n, m)) / 4
    costs = rng.integers(1, 4, size=m).astype(float)
    scores = rng.integers(0, 2, size=(n, m)).astype(float)
    path = lambda_path(errors, costs, scores)
    assert np.all(np.diff(path.costs) < 0)
    for j in range(len(path.lambdas)):
        choice = route_argmin(errors, costs, path.interior_lambda(j))
        assert costs[choice].mean() == pytest.approx(path.costs[j])
        assert scores[np.arange(n), choice].mean() == pytest.approx(path.qualities[j])
    found = {(round(c, 9), round(q, 9)) for c, q in zip(path.costs, path.qualities, strict=True)}
    assert found == _brute_force_outcomes(errors, costs, scores)


@dataclass(frozen=True)
class Fitted:
    """An estimator's cross-fitted errors on its representative prompts for its pool."""

    pool: Pool
    errors: np.ndarray

    def solve(self, target: Target) -> Policy:
        return solve_target(
            self.errors, self.pool.costs, self.pool.scores, list(self.pool.names), target
        )

    def outcome(self, lam: float) -> tuple[float, float, np.ndarray]:
        """Mean cost, mean quality over every prompt (a missing score counting as 1 - its
        estimated error) and choices of routing at ``lam``."""
        choice = route_argmin(self.errors, self.pool.costs, lam)
        quality = filled_quality(self.pool.scores, self.errors)
        chosen = quality[np.arange(len(choice)), choice]
        return self.pool.costs[choice].mean(), chosen.mean(), choice


@pytest.fixture(scope="module")
def fitted(arc_dataset) -> Fitted:
    """UniRoute K-means fitted on real RouterBench ARC prompts with the TF-IDF encoder."""
    data = arc_dataset
    rows = np.random.default_rng(0).permutation(data.n_prompts)
    train, val = rows[:300], rows[300:]
    texts = [str(t) for t in data.prompts]
    encoder = make_encoder("tfidf", n_components=32).fit([texts[i] for i in train])
    estimator = make_estimator("uniroute-kmeans", n_clusters=6)
    estimator.fit(
        encoder.encode([texts[i] for i in train]),
        data.scores[train],
        encoder.encode([texts[i] for i in val]),
        data.scores[val],
        data.model_costs,
    )
    pool = estimator.make_pool(data.models, data.scores[val], data.model_costs)
    assert not np.isfinite(pool.scores).all()  # ARC misses scores: they count via the estimate
    return Fitted(pool, estimator.cross_fitted_errors(estimator.X_val_, pool))


GRID = np.concatenate([[0.0], np.logspace(-2, 6, 400)])


def test_calibration_hits_a_cost_target_on_the_representative_prompts(fitted) -> None:
    costs = fitted.pool.costs
    target = (costs.min() + costs.max()) / 4
    policy = fitted.solve(make_target(target_cost=target))
    cost, quality, _ = fitted.outcome(policy.lam)
    assert cost <= target
    assert (cost, quality) == pytest.approx((policy.expected_cost, policy.expected_quality))
    # No lambda on a wide grid does better within the budget.
    best_on_grid = max(q for c, q, _ in map(fitted.outcome, GRID) if c <= target)
    assert policy.expected_quality >= best_on_grid - 1e-12


def test_calibration_hits_a_quality_target(fitted) -> None:
    policy = fitted.solve(make_target(target_quality=0.8))
    cost, quality, _ = fitted.outcome(policy.lam)
    assert quality >= 0.8
    cheapest_on_grid = min(c for c, q, _ in map(fitted.outcome, GRID) if q >= 0.8)
    assert cost <= cheapest_on_grid + 1e-15


def test_calibration_hits_a_share_target(fitted) -> None:
    model = fitted.pool.names[int(np.argmax(fitted.pool.costs))]
    column = fitted.pool.index(model)
    shares = lambda_path(fitted.errors, fitted.pool.costs, fitted.pool.scores, column).shares
    assert shares is not None
    # Was: a target of 30% silently took the closest share however far it was. On this pool
    # the most expensive model's shares jump over 30% (see the refusal below), so the target
    # is set just off an achievable share (within SHARE_TOLERANCE) to check it is hit.
    achievable = shares[(shares > 0.1) & (shares < 0.9)]
    wanted = float(achievable[len(achievable) // 2]) + 0.5 * SHARE_TOLERANCE
    policy = fitted.solve(make_target(target_share=(model, wanted)))
    _, _, choice = fitted.outcome(policy.lam)
    share = float((choice == column).mean())
    assert share == pytest.approx(policy.achieved)
    assert abs(share - wanted) <= SHARE_TOLERANCE
    on_grid = [float((fitted.outcome(lam)[2] == column).mean()) for lam in GRID]
    assert abs(share - wanted) <= min(abs(s - wanted) for s in on_grid) + 1e-12
    # A share farther than the tolerance from every achievable one is refused, naming the
    # achievable shares on either side of it.
    gaps = np.diff(np.unique(shares))
    widest = int(np.argmax(gaps))
    assert gaps[widest] > 2 * SHARE_TOLERANCE
    between = float(np.unique(shares)[widest] + gaps[widest] / 2)
    with pytest.raises(CalibrationError, match="achievable shares near it: .*% .* and .*%"):
        fitted.solve(make_target(target_share=(model, between)))
