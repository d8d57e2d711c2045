"""The verify-and-escalate router: plan estimates, honest realised costs, selection, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from uniroute.errors import RouterError
from uniroute.routers import UniRouteVerify, load_estimator, make_estimator
from uniroute.routers.verify import (
    NO_MODEL,
    PlanTable,
    agreement_matrix,
    hull_plans,
    plan_outcomes,
)
from uniroute.tradeoff import route_argmin

NAMES = ["cheap1", "cheap2", "strong"]
COSTS = np.array([1.0, 1.0, 10.0])


def agreeing_world(rng: np.random.Generator, n: int, dim: int = 4):
    """Two cheap models right 75% of the time, independently; wrong answers never coincide.

    So the cheap pair agrees exactly when both are right (56% of prompts), and the strong model,
    always right, is needed only where they disagree.
    """
    X = rng.normal(size=(n, dim))
    right = rng.random((n, 2)) < 0.75
    scores = np.column_stack([right, np.ones(n)]).astype(float)
    answers = np.empty((n, 3), dtype=object)
    answers[:, 0] = np.where(right[:, 0], "A", "B")
    answers[:, 1] = np.where(right[:, 1], "A", "C")
    answers[:, 2] = "A"
    return X, scores, answers


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(3)
    train = agreeing_world(rng, 300)
    val = agreeing_world(rng, 200)
    test = agreeing_world(rng, 200)
    return train, val, test


@pytest.fixture(scope="module")
def fitted(world) -> UniRouteVerify:
    (X_tr, S_tr, A_tr), (X_val, S_val, A_val), _ = world
    estimator = make_estimator("uniroute-verify", n_clusters=2, shrinkage_grid=[1.0, 16.0])
    assert isinstance(estimator, UniRouteVerify)
    return estimator.fit(X_tr, S_tr, X_val, S_val, COSTS, answers_train=A_tr, answers_val=A_val)


def test_agreement_is_estimated_and_the_pair_plan_beats_the_strong_model(fitted, world):
    _, (X_val, S_val, A_val), (X_test, _, _) = world
    pool = fitted.make_pool(NAMES, S_val, COSTS, answers=A_val)
    table = fitted.plan_table(pool)
    verify = np.flatnonzero(~table.is_single())
    assert len(verify) >= 1
    p = int(verify[0])
    assert table.describe(p) == {"candidates": ("cheap1", "cheap2"), "target": "strong"}
    observed_agreement = np.mean(A_val[:, 0] == A_val[:, 1])
    assert np.allclose(table.agreement[:, p], observed_agreement, atol=0.12)
    # They agree only when both are right, and the target is always right: error ~ 0.
    assert table.errors[:, p].max() < 0.05
    assert np.all(table.costs[:, p] < 2 + 10 * (1 - observed_agreement) + 1.5)
    # At a moderate trade-off the pair plan is preferred over paying 10 for the strong model.
    plans = fitted.route_plans(X_test[:5], pool, lam=0.02)
    assert all(plan["target"] == "strong" for plan in plans)


def test_realised_cost_counts_every_call_and_quality_is_the_returned_answer():
    table = PlanTable(
        names=tuple(NAMES),
        first=np.array([0, 2, 0]),
        second=np.array([NO_MODEL, NO_MODEL, 1]),
        target=np.array([NO_MODEL, NO_MODEL, 2]),
        errors=np.zeros((1, 3)),
        costs=np.zeros((1, 3)),
        agreement=np.ones((1, 3)),
    )
    quality = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    call_costs = np.array([[1.0, 2.0, 10.0], [1.5, 1.0, 12.0], [1.0, 1.0, 10.0]])
    answers = np.array([["A", "A", "A"], ["B", "A", "A"], [None, None, "C"]], dtype=object)
    returned, paid = plan_outcomes(table, quality, call_costs, answers)
    # Prompt 0: they agree, no escalation; prompt 1: they disagree, the strong model answers;
    # prompt 2: unparsable answers never agree, so the target is called too.
    assert returned[:, 2].tolist() == [1.0, 1.0, 0.0]
    assert paid[:, 2].tolist() == [3.0, 14.5, 12.0]
    assert paid[:, 0].tolist() == [1.0, 1.5, 1.0] and paid[:, 1].tolist() == [10.0, 12.0, 10.0]


def test_none_never_agrees_in_the_agreement_matrix():
    answers = np.array([["A", "A"], [None, None], ["A", "B"]], dtype=object)
    agree = agreement_matrix(answers, np.array([0, 0]), np.array([1, NO_MODEL]))
    assert agree[:, 0].tolist() == [True, False, False]
    assert agree[:, 1].tolist() == [True, True, True]  # a single model never escalates


def test_hull_keeps_exactly_the_plans_some_lambda_chooses():
    rng = np.random.default_rng(0)
    costs, errors = rng.uniform(0, 10, (3, 40)), rng.uniform(0, 1, (3, 40))
    kept = set(hull_plans(costs, errors).tolist())
    chosen = set()
    for lam in np.r_[0.0, np.geomspace(1e-4, 1e3, 3000)]:
        chosen |= set(route_argmin(errors, costs, lam).tolist())
    assert chosen <= kept and len(kept - chosen) <= 1


def test_shrinkage_is_chosen_on_the_training_llms(fitted):
    scores = fitted.plan_selection_scores_
    assert set(scores) == {(rule, s) for rule in ("envelope", "all") for s in (1.0, 16.0)}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert scores[(fitted.candidates_, fitted.shrinkage_)] == max(scores.values())


def test_without_answers_it_is_the_kmeans_router_and_plans_are_refused(world):
    (X_tr, S_tr, _), (X_val, S_val, _), (X_test, _, _) = world
    estimator = make_estimator("uniroute-verify", n_clusters=2).fit(X_tr, S_tr, X_val, S_val, COSTS)
    kmeans = make_estimator("uniroute-kmeans", n_clusters=2).fit(X_tr, S_tr, X_val, S_val, COSTS)
    pool = estimator.make_pool(NAMES, S_val, COSTS)
    assert np.array_equal(estimator.predict_error(X_test, pool), kmeans.predict_error(X_test, pool))
    assert isinstance(estimator, UniRouteVerify)
    with pytest.raises(RouterError, match="need the pool's answers"):
        estimator.plan_table(pool)
    with pytest.raises(RouterError, match="candidates must be"):
        make_estimator("uniroute-verify", n_clusters=2, candidates="some").fit(
            X_tr, S_tr, X_val, S_val, COSTS
        )
    with pytest.raises(RouterError, match="shrinkage must be"):
        make_estimator("uniroute-verify", n_clusters=2, shrinkage=-1).fit(
            X_tr, S_tr, X_val, S_val, COSTS
        )


def test_saved_and_loaded_it_makes_the_same_plans(fitted, world, tmp_path):
    _, (X_val, S_val, A_val), (X_test, _, _) = world
    fitted.save(tmp_path / "verify")
    loaded = load_estimator(tmp_path / "verify")
    assert isinstance(loaded, UniRouteVerify)
    assert loaded.shrinkage_ == fitted.shrinkage_
    assert loaded.plan_selection_scores_ == fitted.plan_selection_scores_
    assert loaded.candidates_ == fitted.candidates_
    pool = fitted.make_pool(NAMES, S_val, COSTS, answers=A_val)
    assert loaded.route_plans(X_test, pool, 0.01) == fitted.route_plans(X_test, pool, 0.01)
