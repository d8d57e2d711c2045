"""Evaluating the verify router: plans scored with every call counted, on unseen LLMs."""

from __future__ import annotations

import numpy as np
import pytest

from uniroute.cli.eval_cmd import _only_tasks
from uniroute.data.dataset import RoutingDataset
from uniroute.errors import DataError, RouterError
from uniroute.evaluation.plans import masked_answers, plan_curve
from uniroute.evaluation.trials import TrialConfig, run_trials
from uniroute.routers.verify import NO_MODEL, PlanTable

PARAMS = {
    "uniroute-kmeans": {"k_grid": [2, 3]},
    "uniroute-verify": {"k_grid": [2, 3], "shrinkage_grid": [4.0, 1e6]},
}


def agreement_dataset(seed: int = 0, n: int = 400) -> tuple[RoutingDataset, np.ndarray]:
    """Five cheap models (70% right, wrong answers all different) and two dear ones (97%).

    Two cheap models agree essentially only when both are right, so asking two of them and
    escalating on disagreement is nearly as good as a dear model at a fraction of its cost.
    The prompt embeddings carry no information: only answers can help.
    """
    rng = np.random.default_rng(seed)
    accuracy = np.array([0.7] * 5 + [0.97] * 2)
    costs = np.array([1.0] * 5 + [20.0] * 2)
    right = rng.random((n, len(accuracy))) < accuracy
    answers = np.empty(right.shape, dtype=object)
    for j in range(len(accuracy)):
        answers[:, j] = np.where(right[:, j], "A", f"wrong{j}")
    dataset = RoutingDataset(
        prompt_ids=[f"p{i}" for i in range(n)],
        prompts=[f"question {i}" for i in range(n)],
        tasks=["quiz"] * n,
        models=[f"cheap{j}" for j in range(5)] + ["dear0", "dear1"],
        model_costs=costs,
        scores=right.astype(float),
        answers=answers,
        name="agreement",
    )
    return dataset, rng.normal(size=(n, 6))


def run(dataset: RoutingDataset, X: np.ndarray, routers: list[str], trials: int = 3):
    config = TrialConfig(
        routers=routers,
        test_models=4,
        trials=trials,
        seed=1,
        router_params={r: PARAMS[r] for r in routers if r in PARAMS},
    )
    return run_trials(dataset, lambda: None, config, fixed_embeddings=X, encoder_id="none")


def test_verify_beats_prompt_only_routing_when_answers_are_informative() -> None:
    dataset, X = agreement_dataset()
    results = run(dataset, X, ["uniroute-kmeans", "uniroute-verify", "zero"]).results
    verify, kmeans = results["routers"]["uniroute-verify"], results["routers"]["uniroute-kmeans"]
    assert verify["area"]["mean"] > kmeans["area"]["mean"] + 0.02
    # A split whose unseen LLMs are all cheap has nothing to escalate to: a tie, never a loss.
    test = verify["sign_tests"]["uniroute-kmeans"]
    assert test["wins"] >= 2 and test["losses"] == 0
    details = verify["plans_per_trial"]
    assert len(details) == 3 and all(d["verify_plans"] >= 1 for d in details)
    assert all(d["shrinkage"] in (4.0, 1e6) for d in details)


def test_the_curve_counts_both_candidates_and_the_target_where_they_disagree() -> None:
    table = PlanTable(
        names=("a", "b", "e"),
        first=np.array([0, 2, 0]),
        second=np.array([NO_MODEL, NO_MODEL, 1]),
        target=np.array([NO_MODEL, NO_MODEL, 2]),
        # The pair plan is estimated best at every lambda, so the curve has one point.
        errors=np.array([[0.5, 0.4, 0.0]]),
        costs=np.array([[1.0, 10.0, 0.5]]),
        agreement=np.ones((1, 3)),
    )
    quality = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    call_costs = np.array([[1.0, 1.0, 10.0], [1.0, 1.0, 10.0], [1.0, 1.0, 10.0]])
    answers = np.array([["A", "A", "A"], ["B", "A", "A"], ["A", "C", "D"]], dtype=object)
    curve = plan_curve(table, np.zeros(3, dtype=int), quality, call_costs, answers)
    assert curve.costs.tolist() == [(2 + 12 + 12) / 3]
    assert curve.qualities.tolist() == [(1 + 1 + 0) / 3]


def test_withheld_scores_withhold_answers_too() -> None:
    answers = np.array([["A", "B"], ["C", None]], dtype=object)
    scores = np.array([[1.0, np.nan], [0.0, 1.0]])
    assert masked_answers(answers, scores).tolist() == [["A", None], ["C", None]]


def test_verify_needs_recorded_answers() -> None:
    dataset, X = agreement_dataset(n=60)
    dataset.answers = None
    with pytest.raises(RouterError, match="records no answers"):
        run(dataset, X, ["uniroute-verify"], trials=1)


def test_tasks_filter_keeps_only_those_prompts() -> None:
    dataset, _ = agreement_dataset(n=20)
    dataset.tasks[:5] = "other"
    kept = _only_tasks(dataset, "other")
    assert kept.n_prompts == 5 and kept.answers.shape == (5, 7)
    with pytest.raises(DataError, match=r"unknown task\(s\) \['arc'\].*\['other', 'quiz'\]"):
        _only_tasks(dataset, "arc")
