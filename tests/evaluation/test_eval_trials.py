"""Trials: fresh LLM and prompt splits, unseen test pool, aggregation, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from uniroute.data.dataset import RoutingDataset
from uniroute.data.splits import split_prompts
from uniroute.evaluation.metrics import evaluate_curve
from uniroute.evaluation.trials import TrialConfig, run_trial, run_trials
from uniroute.routers import make_estimator
from uniroute.tradeoff import deferral_curve

ALL = ["uniroute-kmeans", "uniroute-learned", "knn", "zero", "mlp", "oracle", "random"]
FAST_PARAMS = {
    "uniroute-kmeans": {"k_grid": [2, 4, 8]},
    "uniroute-learned": {"k_grid": [2, 4, 8], "max_iter": 40},
    "knn": {"n_neighbors_grid": [5, 10]},
    "mlp": {"hidden_layer_sizes": [8], "max_iter": 100},
}


def planted_dataset(n_per_task: int = 120, seed: int = 0) -> tuple[RoutingDataset, np.ndarray]:
    """Two tasks, eight models: 'math*' models are right on math, 'text*' on text; costs vary.

    Embeddings separate the tasks, so a prompt-aware router can beat any single model.
    """
    rng = np.random.default_rng(seed)
    tasks = np.repeat(["math", "text"], n_per_task)
    n = len(tasks)
    models = [f"math{i}" for i in range(4)] + [f"text{i}" for i in range(4)]
    skill = {"math": 0.9, "text": 0.3}
    scores = np.empty((n, len(models)))
    for j, model in enumerate(models):
        strong = "math" if model.startswith("math") else "text"
        p = np.where(tasks == strong, skill["math"], skill["text"])
        scores[:, j] = rng.random(n) < p
    costs = np.linspace(1.0, 4.0, len(models))
    X = np.zeros((n, 8))
    X[tasks == "math", 0] = 1.0
    X[tasks == "text", 1] = 1.0
    X += 0.1 * rng.normal(size=X.shape)
    dataset = RoutingDataset(
        prompt_ids=[f"p{i}" for i in range(n)],
        prompts=[f"{task} question {i}" for i, task in enumerate(tasks)],
        tasks=tasks,
        models=models,
        model_costs=costs,
        scores=scores,
        name="planted",
    )
    return dataset, X


def run(dataset: RoutingDataset, X: np.ndarray, routers=ALL, trials=3, seed=0, test_models=4):
    config = TrialConfig(
        routers=routers,
        test_models=test_models,
        trials=trials,
        seed=seed,
        router_params={r: p for r, p in FAST_PARAMS.items() if r in routers},
    )
    return run_trials(dataset, lambda: None, config, fixed_embeddings=X, encoder_id="planted")


def test_results_schema_and_unseen_pool() -> None:
    dataset, X = planted_dataset()
    evaluation = run(dataset, X, trials=2)
    results = evaluation.results
    assert results["trials"] == 2 and results["encoder"] == "planted"
    assert set(results["routers"]) == set(ALL)
    for name, entry in results["routers"].items():
        for metric in ("area", "area_50", "qnc", "peak_accuracy"):
            assert len(entry["per_trial"][metric]) == 2
            assert set(entry[metric]) == {"mean", "std"}
        assert (entry["sign_test_vs_knn"] is None) == (name == "knn")
        assert set(entry["sign_tests"]) == {"knn", "zero", "uniroute-kmeans"} - {name}
        for test in entry["sign_tests"].values():
            assert test["wins"] + test["losses"] + test["ties"] == 2
    for outcome in evaluation.outcomes:
        assert not set(outcome.train_models) & set(outcome.test_models)
        assert len(outcome.test_models) == 4
        # The curves are drawn over the unseen LLMs only.
        assert set(outcome.model_points) == set(outcome.test_models)


def test_oracle_bounds_every_router_and_routing_beats_random() -> None:
    dataset, X = planted_dataset()
    evaluation = run(dataset, X, routers=["uniroute-kmeans", "knn", "zero", "oracle", "random"])
    for outcome in evaluation.outcomes:
        oracle = outcome.metrics["oracle"]["area"]
        for name, metrics in outcome.metrics.items():
            assert metrics["area"] <= oracle + 1e-12, name
    areas = {name: entry["area"]["mean"] for name, entry in evaluation.results["routers"].items()}
    # The tasks are separable and models specialise, so prompt-aware routers beat the baselines.
    assert areas["uniroute-kmeans"] > areas["zero"] + 0.02
    assert areas["uniroute-kmeans"] > areas["random"] + 0.05


def test_same_seed_same_results_other_seed_other_splits() -> None:
    dataset, X = planted_dataset()
    first = run(dataset, X, routers=["uniroute-kmeans", "zero"], seed=3)
    again = run(dataset, X, routers=["uniroute-kmeans", "zero"], seed=3)
    other = run(dataset, X, routers=["uniroute-kmeans", "zero"], seed=4)
    for name in ("uniroute-kmeans", "zero"):
        assert (
            first.results["routers"][name]["per_trial"]
            == again.results["routers"][name]["per_trial"]
        )
    splits = [o.test_models for o in first.outcomes]
    assert splits != [o.test_models for o in other.outcomes]


def test_learned_map_reusing_the_kmeans_choice_of_k_changes_nothing() -> None:
    dataset, X = planted_dataset()
    routers = ["uniroute-kmeans", "uniroute-learned"]
    shared = run_trials(
        dataset,
        lambda: None,
        TrialConfig(routers=routers, test_models=4, trials=2, seed=1),
        fixed_embeddings=X,
    )
    # Passing any parameter turns the sharing off: the learned map then selects K itself.
    own_choice = {"uniroute-learned": {"n_clusters": "auto"}}
    alone = run_trials(
        dataset,
        lambda: None,
        TrialConfig(routers=routers, test_models=4, trials=2, seed=1, router_params=own_choice),
        fixed_embeddings=X,
    )
    for a, b in zip(shared.outcomes, alone.outcomes, strict=True):
        assert a.metrics["uniroute-learned"] == b.metrics["uniroute-learned"]


def test_prompts_missing_a_test_llm_score_are_dropped_and_counted() -> None:
    dataset, X = planted_dataset()
    dataset.scores[:10, :] = np.nan  # every model unscored on the first ten prompts
    evaluation = run(dataset, X, routers=["zero", "oracle"], trials=2)
    for outcome in evaluation.outcomes:
        assert outcome.n_dropped_prompts > 0
        assert outcome.n_test_prompts + outcome.n_dropped_prompts <= dataset.n_prompts


def test_zero_trials_is_an_error() -> None:
    dataset, X = planted_dataset()
    with pytest.raises(ValueError, match="trials"):
        run(dataset, X, trials=0)


@pytest.mark.parametrize("name", ["knn", "oracle"])
def test_a_trial_routes_over_a_pool_of_the_unseen_llms_only(name: str) -> None:
    dataset, X = planted_dataset()
    params = FAST_PARAMS.get(name, {})
    config = TrialConfig(routers=[name], test_models=4, trials=1, router_params={name: params})
    split = split_prompts(dataset.tasks, config.fractions, seed=5)
    outcome = run_trial(dataset, X, config, 5, split)

    train_cols = [dataset.model_index(m) for m in outcome.train_models]
    test_cols = [dataset.model_index(m) for m in outcome.test_models]
    scores, costs = dataset.scores, dataset.model_costs
    estimator = make_estimator(name, **params).fit(
        X[split.train],
        scores[np.ix_(split.train, train_cols)],
        X[split.val],
        scores[np.ix_(split.val, train_cols)],
        costs[train_cols],
    )
    quality = scores[np.ix_(split.test, test_cols)]
    call_costs = dataset.effective_call_costs()[np.ix_(split.test, test_cols)]
    if estimator.clairvoyant:
        errors = estimator.oracle_error(quality)
    else:
        pool = estimator.make_pool(
            outcome.test_models, scores[np.ix_(split.val, test_cols)], costs[test_cols]
        )
        errors = estimator.predict_error(X[split.test], pool)
    curve = deferral_curve(errors, costs[test_cols], quality, call_costs=call_costs)
    assert outcome.metrics[name] == evaluate_curve(curve, quality, call_costs)
