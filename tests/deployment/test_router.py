"""The deployed Router: routing real RouterBench prompts over a registry's pool snapshot."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from uniroute.artifact import Artifact
from uniroute.data.dataset import RoutingDataset
from uniroute.deployment import Decision, Router, Snapshot
from uniroute.deployment.pool_changes import (
    add_scored_model,
    calibrate,
    remove_model,
    seed_registry,
    set_cost,
    set_enabled,
)
from uniroute.errors import RouterError, StateError
from uniroute.registry import ModelCost, ModelRecord, Registry
from uniroute.registry.calibration import make_target
from uniroute.routers import KNNRouter, make_estimator

HELD_OUT = "gpt-4-1106-preview"
#: A training model of the shared artifact, switched off and on by the snapshot tests.
TOGGLED = "meta/llama-2-70b-chat"


@pytest.fixture
def registry_path(arc_artifact: Artifact, tmp_path: Path) -> Path:
    path = tmp_path / "pool.db"
    with Registry(path) as registry:
        seed_registry(arc_artifact, registry)
    return path


@pytest.fixture
def router(arc_artifact: Artifact, registry_path: Path) -> Router:
    return Router.load(arc_artifact, registry_path)


def _scores_of(dataset: RoutingDataset, model: str) -> dict[str, float]:
    column = dataset.scores[:, dataset.model_index(model)]
    return {pid: float(s) for pid, s in zip(dataset.prompt_ids, column, strict=True)}


def _test_prompts(dataset: RoutingDataset, artifact: Artifact, n: int = 25) -> list[str]:
    """Real prompts that are not representative prompts."""
    representative = set(artifact.prompt_ids)
    rows = [i for i, pid in enumerate(dataset.prompt_ids) if pid not in representative]
    return [str(dataset.prompts[i]) for i in rows[:n]]


def _costs(router: Router) -> dict[str, float]:
    pool = router.snapshot.pool
    return dict(zip(pool.names, pool.costs.tolist(), strict=True))


def _add(router: Router, dataset: RoutingDataset, name: str, cost: ModelCost | float, **fields):
    if not isinstance(cost, ModelCost):
        cost = ModelCost(per_query=cost)
    record = ModelRecord(name=name, cost=cost, **fields)
    return add_scored_model(router, record, _scores_of(dataset, name))


# ------------------------------------------------------------------------------- routing
def test_routes_real_prompts_and_explains_the_choice(
    router: Router, arc_artifact: Artifact, arc_dataset: RoutingDataset
) -> None:
    prompts = _test_prompts(arc_dataset, arc_artifact)
    decisions = router.route(prompts, lam=50.0)
    assert len(decisions) == len(prompts)
    X = arc_artifact.encoder.encode(prompts)
    # The training models' Psi in the registry reproduce the estimator's own over the training
    # pool (Psi computed afresh from the artifact's training scores).
    training = arc_artifact.training_pool()
    expected = arc_artifact.router.predict_error(X, training)
    pool_names = router.snapshot.pool.names
    for i, decision in enumerate(decisions):
        assert isinstance(decision, Decision)
        assert set(decision.estimated_errors) == set(arc_artifact.training_models)
        for j, model in enumerate(training.names):
            assert decision.estimated_errors[model] == pytest.approx(expected[i, j])
            assert decision.objectives[model] == pytest.approx(
                decision.estimated_errors[model] + 50.0 * decision.costs[model]
            )
        # The scalar fields are the chosen model's own.
        assert decision.estimated_error == decision.estimated_errors[decision.model]
        assert decision.cost == decision.costs[decision.model]
        assert isinstance(decision.estimated_error, float) and isinstance(decision.cost, float)
        best = min(decision.objectives.values())
        assert decision.objectives[decision.model] == pytest.approx(best)
        assert decision.ranking[0] == decision.model
        assert sorted(decision.ranking) == sorted(pool_names)
        ranked_objectives = [decision.objectives[m] for m in decision.ranking]
        assert ranked_objectives == sorted(ranked_objectives)
        # K-means: Phi(x) is one-hot on the prompt's cluster.
        assert decision.cluster_weights[decision.cluster] == 1.0
        assert sum(decision.cluster_weights) == 1.0
        assert len(decision.cluster_weights) == 6
        assert decision.cluster == int(arc_artifact.router.clusters(X[i : i + 1])[0])
        assert decision.policy == "explicit" and decision.warning is None
        assert decision.max_cost is None and decision.over_budget == []
        assert decision.pool is router.snapshot.pool
    assert len({d.model for d in decisions}) >= 1


def test_single_prompt_batch_and_embeddings_agree(
    router: Router, arc_artifact: Artifact, arc_dataset: RoutingDataset
) -> None:
    prompts = _test_prompts(arc_dataset, arc_artifact, 10)
    single = [router.route(p, lam=20.0) for p in prompts]
    batch = router.route(prompts, lam=20.0)
    embedded = router.route_embeddings(router.embed(prompts), lam=20.0)
    for a, b, c in zip(single, batch, embedded, strict=True):
        assert a.to_dict() == b.to_dict() == c.to_dict()
    assert router.route([]) == []


def test_decision_is_json_serialisable(router: Router, arc_dataset: RoutingDataset) -> None:
    decision = router.route(str(arc_dataset.prompts[0]), max_cost=0.0004)
    data = json.loads(json.dumps(decision.to_dict()))
    assert set(data) == {
        "model",
        "estimated_error",
        "error_interval",
        "evidence",
        "risk",
        "not_servable",
        "evidence_by_model",
        "cost",
        "lam",
        "max_cost",
        "policy",
        "warning",
        "estimated_errors",
        "costs",
        "objectives",
        "ranking",
        "servable_ranking",
        "over_budget",
        "cluster",
        "cluster_weights",
        "latency_weight",
        "expected_latency",
    }
    assert data["model"] == decision.model and data["max_cost"] == 0.0004
    assert data["estimated_error"] == data["estimated_errors"][decision.model]
    assert data["cost"] == data["costs"][decision.model]
    assert data["policy"] == "max_cost"


def test_max_cost_picks_the_most_accurate_model_within_it(
    router: Router, arc_artifact: Artifact, arc_dataset: RoutingDataset
) -> None:
    costs = _costs(router)
    max_cost = sorted(costs.values())[3]  # four models are within it
    for decision in router.route(_test_prompts(arc_dataset, arc_artifact), max_cost=max_cost):
        within = [m for m, c in costs.items() if c <= max_cost]
        assert sorted(decision.ranking) == sorted(within)
        assert sorted(decision.over_budget) == sorted(set(costs) - set(within))
        best = min(decision.estimated_errors[m] for m in within)
        assert decision.estimated_error == best
        assert decision.cost == costs[decision.model] <= max_cost
        assert decision.policy == "max_cost" and decision.lam == 0.0
        assert decision.max_cost == max_cost
    cheapest = min(costs, key=costs.get)
    with pytest.raises(RouterError, match=f"the cheapest is '{cheapest}'"):
        router.route("a prompt", max_cost=costs[cheapest] / 2)


def test_lambda_zero_and_large_lambda_extremes(router: Router, arc_dataset: RoutingDataset) -> None:
    prompt = str(arc_dataset.prompts[3])
    accurate = router.route(prompt, lam=0.0)
    assert accurate.estimated_error == min(accurate.estimated_errors.values())
    frugal = router.route(prompt, lam=1e9)
    costs = _costs(router)
    assert frugal.model == min(costs, key=costs.get)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "abc"])
def test_bad_lambda_or_max_cost_is_a_clear_error(router: Router, bad: object) -> None:
    with pytest.raises(RouterError, match="lambda must be"):
        router.route("x", lam=bad)
    with pytest.raises(RouterError, match="max_cost must be"):
        router.route("x", max_cost=bad)


def test_without_a_policy_lambda_is_zero_with_a_warning(router: Router) -> None:
    assert router.snapshot.default_lambda is None and router.snapshot.policy is None
    decision = router.route("Which gas do plants absorb?")
    assert decision.lam == 0.0 and decision.policy == "uncalibrated"
    assert "no default policy is calibrated" in decision.warning


def test_servable_ranking_keeps_the_models_with_an_endpoint(
    router: Router, arc_dataset: RoutingDataset
) -> None:
    endpoint = "http://127.0.0.1:9/v1"
    _add(router, arc_dataset, HELD_OUT, 0.006, endpoint=endpoint, upstream_model="gpt-4")
    pool = router.snapshot.pool
    assert pool.servable == (HELD_OUT,)
    assert pool.endpoint(HELD_OUT).upstream_model == "gpt-4"
    enabled = set(pool.names)
    for decision in router.route(["Which planet is largest?", "What is 2 + 2?"], lam=1.0):
        # The decision names the model the gateway will call; the others are listed apart.
        assert decision.model == HELD_OUT
        assert decision.servable_ranking == decision.ranking == [HELD_OUT]
        assert set(decision.not_servable) == enabled - {HELD_OUT}
        assert decision.to_dict()["not_servable"] == decision.not_servable


def test_describe_reports_artifact_registry_and_policy(
    router: Router, arc_artifact: Artifact
) -> None:
    facts = router.describe()
    assert facts["artifact_id"] == arc_artifact.artifact_id
    assert facts["router"] == "uniroute-kmeans"
    assert facts["n_representative_prompts"] == len(arc_artifact.prompt_ids)
    assert facts["registry"] == str(router.registry.path)
    assert facts["pool_version"] == router.snapshot.revision == router.registry_revision()
    assert facts["default_lambda"] is None and facts["policy_stale_reason"] is None
    json.dumps(facts)


# ------------------------------------------------------------------------------- the pool
def test_added_model_is_routable_at_once_and_changes_decisions(
    router: Router, arc_artifact: Artifact, arc_dataset: RoutingDataset
) -> None:
    prompts = _test_prompts(arc_dataset, arc_artifact)
    before = router.route(prompts, lam=1e4)
    costs = _costs(router)
    cheapest = min(costs, key=costs.get)
    assert {d.model for d in before} == {cheapest}
    added = _add(router, arc_dataset, HELD_OUT, 0.0)
    assert added.n_matched == len(arc_artifact.prompt_ids)
    assert len(added.unknown_ids) == arc_dataset.n_prompts - len(arc_artifact.prompt_ids)
    after = router.route(prompts, lam=1e4)
    # At cost 0 it pays no lambda * cost (at least 0.89 for every other model here): it wins.
    assert {d.model for d in after} == {HELD_OUT}
    # Its Psi is the estimator's description of those scores.
    values = np.array([_scores_of(arc_dataset, HELD_OUT)[p] for p in arc_artifact.prompt_ids])
    X = router.embed(prompts[:3])
    psi = arc_artifact.router.model_features(values)
    for i, decision in enumerate(after[:3]):
        k = int(arc_artifact.router.clusters(X[i : i + 1])[0])
        assert decision.estimated_errors[HELD_OUT] == pytest.approx(psi[k])


def test_disabled_models_are_never_routed_to(router: Router, arc_dataset: RoutingDataset) -> None:
    prompt = str(arc_dataset.prompts[5])
    first = router.route(prompt, lam=0.0).model
    set_enabled(router, first, False)
    decision = router.route(prompt, lam=0.0)
    assert decision.model != first and first not in decision.estimated_errors
    set_enabled(router, first, True)
    assert router.route(prompt, lam=0.0).model == first


def test_an_empty_pool_loads_but_cannot_route(arc_artifact: Artifact, tmp_path: Path) -> None:
    empty = Router.load(arc_artifact, tmp_path / "empty.db")
    assert len(empty.snapshot.pool) == 0 and empty.snapshot.records == ()
    with pytest.raises(RouterError, match="no enabled model in the registry"):
        empty.route("anything")


def test_refresh_picks_up_changes_made_through_another_connection(
    router: Router, registry_path: Path
) -> None:
    assert router.refresh() is False
    # A second connection to the file, as the CLI or another server process would open.
    with Registry(registry_path) as other:
        other.set_cost("claude-v1", ModelCost(per_query=0.0))
    assert router.snapshot.pool.cost("claude-v1") > 0
    assert router.refresh() is True
    assert router.snapshot.pool.cost("claude-v1") == 0.0
    assert router.refresh() is False


def test_a_snapshot_is_an_unchanging_value(
    router: Router, arc_artifact: Artifact, arc_dataset: RoutingDataset
) -> None:
    prompts = _test_prompts(arc_dataset, arc_artifact, 5)
    X = router.embed(prompts)
    old = router.snapshot
    assert isinstance(old, Snapshot)
    names, costs = old.pool.names, old.pool.costs.copy()
    before = [d.to_dict() for d in router.route_embeddings(X, lam=10.0)]
    set_cost(router, "claude-v1", ModelCost(per_query=0.0))
    set_enabled(router, TOGGLED, False)
    assert router.snapshot is not old and router.snapshot.revision > old.revision
    assert TOGGLED not in router.snapshot.pool
    # The old snapshot still describes the pool it was read at, and routes as it did.
    assert old.pool.names == names
    np.testing.assert_array_equal(old.pool.costs, costs)
    with pytest.raises(ValueError):
        old.pool.costs[0] = 1.0
    again = [d.to_dict() for d in router.route_embeddings(X, lam=10.0, snapshot=old)]
    assert again == before
    assert [r.name for r in old.records] == list(names)


def test_routing_is_safe_while_the_pool_changes(
    router: Router, arc_dataset: RoutingDataset, arc_artifact: Artifact
) -> None:
    X = router.embed(_test_prompts(arc_dataset, arc_artifact, 5))
    errors: list[BaseException] = []
    stop = threading.Event()

    def route_continuously() -> None:
        try:
            while not stop.is_set():
                for decision in router.route_embeddings(X, lam=10.0):
                    assert decision.ranking[0] == decision.model
                    assert set(decision.estimated_errors) == set(decision.costs)
                    assert decision.cost == decision.costs[decision.model]
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=route_continuously) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for round_number in range(15):
            set_enabled(router, TOGGLED, round_number % 2 == 1)
            set_cost(
                router, "WizardLM/WizardLM-13B-V1.2", ModelCost(per_query=0.001 * round_number)
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert errors == []


def test_a_registry_of_other_prompts_is_refused(arc_artifact: Artifact, tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with Registry(path) as registry:
        registry.bind("another-artifact", ["q1", "q2"])
    with pytest.raises(StateError, match="holds scores on the representative prompts of artifact"):
        Router.load(arc_artifact, path)


def test_token_priced_models_get_an_expected_per_query_cost(
    router: Router, arc_dataset: RoutingDataset
) -> None:
    cost = ModelCost(per_1k_input=0.01, per_1k_output=0.03, expected_output_tokens=5)
    _add(router, arc_dataset, "claude-v2", cost)
    texts = [p.text for p in router.artifact.representative_prompts]
    mean_tokens = sum(len(t) for t in texts) / len(texts) / 4
    assert router.mean_input_tokens == pytest.approx(mean_tokens)
    expected = mean_tokens / 1000 * 0.01 + 5 / 1000 * 0.03
    assert router.snapshot.pool.cost("claude-v2") == pytest.approx(expected)


# ----------------------------------------------------------------------- default policy
def test_calibrated_policy_becomes_the_default(router: Router, arc_artifact: Artifact) -> None:
    policy = calibrate(router, make_target(target_quality=0.8))
    snapshot = router.snapshot
    assert snapshot.default_lambda == policy.lam and snapshot.policy_stale_reason is None
    decision = router.route("What is the boiling point of water?")
    assert decision.lam == policy.lam and decision.policy == "default" and decision.warning is None
    # Loaded afresh, the stored policy is used as it is (same pool).
    again = Router.load(arc_artifact, router.registry.path)
    assert again.snapshot.policy == policy


def test_policy_is_solved_again_when_the_pool_changes(
    router: Router, arc_artifact: Artifact, arc_dataset: RoutingDataset
) -> None:
    first = calibrate(router, make_target(target_cost=0.0004))
    _add(router, arc_dataset, HELD_OUT, 0.0001)
    second = router.snapshot.policy
    assert router.snapshot.policy_stale_reason is None
    assert second.target == first.target
    assert second.pool_fingerprint != first.pool_fingerprint
    assert second.pool_fingerprint == router.snapshot.fingerprint
    assert second.expected_cost <= 0.0004
    # A cheap, accurate newcomer lets the same budget buy more quality.
    assert second.expected_quality > first.expected_quality
    # The re-solved policy was stored: a new process uses it without solving again.
    assert Router.load(arc_artifact, router.registry.path).snapshot.policy == second


def test_policy_is_flagged_stale_when_its_target_cannot_be_met(
    router: Router, arc_artifact: Artifact
) -> None:
    costs = _costs(router)
    expensive = max(costs, key=costs.get)
    policy = calibrate(router, make_target(target_share=(expensive, 0.2)))
    remove_model(router, expensive)
    snapshot = router.snapshot
    assert snapshot.policy_stale_reason is not None
    assert expensive in snapshot.policy_stale_reason
    assert snapshot.default_lambda == policy.lam
    decision = router.route("Which planet is largest?")
    assert decision.lam == policy.lam
    assert "stale" in decision.warning
    # Re-calibrating with a reachable target clears it.
    calibrate(router, make_target(target_quality=0.7))
    assert router.snapshot.policy_stale_reason is None
    assert Router.load(arc_artifact, router.registry.path).snapshot.policy_stale_reason is None


# ----------------------------------------------------------------------- cluster weights
def _training_data(artifact: Artifact, dataset: RoutingDataset) -> tuple[np.ndarray, np.ndarray]:
    """The embeddings and training models' scores of the artifact's training prompts (the
    prompts of the data that are not representative prompts)."""
    representative = set(artifact.prompt_ids)
    train = [i for i, pid in enumerate(dataset.prompt_ids) if pid not in representative]
    columns = [dataset.model_index(m) for m in artifact.training_models]
    X_train = artifact.encoder.encode([str(dataset.prompts[i]) for i in train])
    return X_train, dataset.scores[np.ix_(train, columns)]


def test_learned_cluster_map_gives_soft_cluster_weights(
    arc_artifact: Artifact, arc_dataset: RoutingDataset, tmp_path: Path
) -> None:
    # The same artifact with a learned cluster map fitted on the same prompts.
    estimator = make_estimator("uniroute-learned", n_clusters=4, max_iter=30).fit(
        *_training_data(arc_artifact, arc_dataset),
        arc_artifact.router.X_val_,
        arc_artifact.training_scores,
        arc_artifact.training_costs,
    )
    learned = dataclasses.replace(arc_artifact, router=estimator)
    with Registry(tmp_path / "pool.db") as registry:
        seed_registry(learned, registry)
    router = Router.load(learned, tmp_path / "pool.db")
    prompts = _test_prompts(arc_dataset, learned, 5)
    X = router.embed(prompts)
    training = learned.training_pool()
    for i, decision in enumerate(router.route(prompts, lam=0.0)):
        weights = np.array(decision.cluster_weights)
        assert weights.shape == (4,) and weights.sum() == pytest.approx(1.0)
        assert decision.cluster == int(weights.argmax())
        # err(x, h) = Phi(x) . Psi(h), Psi as the estimator computes it from the scores.
        for model in training.names:
            psi = training.features[training.index(model)]
            assert decision.estimated_errors[model] == pytest.approx(weights @ psi)
        np.testing.assert_allclose(weights, learned.router.soft_clusters(X[i : i + 1])[0])


def test_routers_without_clusters_give_no_cluster(
    router: Router, arc_artifact: Artifact, arc_dataset: RoutingDataset, tmp_path: Path
) -> None:
    # The same artifact with a k-NN estimator fitted on the same representative prompts.
    knn = KNNRouter().fit(
        *_training_data(arc_artifact, arc_dataset),
        arc_artifact.router.X_val_,
        arc_artifact.training_scores,
        arc_artifact.training_costs,
    )
    artifact = dataclasses.replace(arc_artifact, router=knn)
    with Registry(tmp_path / "knn.db") as registry:
        seed_registry(artifact, registry)
    knn_router = Router.load(artifact, tmp_path / "knn.db")
    X = knn_router.embed(_test_prompts(arc_dataset, arc_artifact, 4))
    training = artifact.training_pool()
    expected = knn.predict_error(X, training)
    for i, decision in enumerate(knn_router.route_embeddings(X, lam=0.0)):
        assert decision.cluster is None and decision.cluster_weights is None
        for j, model in enumerate(training.names):
            assert decision.estimated_errors[model] == pytest.approx(expected[i, j])
    # The K-means artifact's decisions carry its one-hot Phi(x).
    weights = np.array([d.cluster_weights for d in router.route_embeddings(X, lam=0.0)])
    np.testing.assert_array_equal(weights, arc_artifact.router.cluster_weights(X))
    assert weights.shape == (4, 6)


def test_latency_in_the_objective_steers_away_from_a_slow_model(router: Router) -> None:
    # mu * seconds is added to each model's objective: a large weight on one slow model moves
    # every prompt that chose it to another; mu = 0, or no latencies, changes nothing.
    prompts = [str(p.text) for p in router.artifact.representative_prompts[:40]]
    base = router.route(prompts, lam=0.0)
    slow = max({d.model for d in base}, key=[d.model for d in base].count)
    latencies = {name: 1.0 for name in router.snapshot.pool.names}
    latencies[slow] = 30.0
    weighed = router.route_embeddings(
        router.embed(prompts), lam=0.0, latency_weight=0.1, latencies=latencies
    )
    assert slow not in {d.model for d in weighed}
    assert weighed[0].latency_weight == 0.1 and weighed[0].expected_latency() == 1.0
    assert weighed[0].expected_latency(slow) == pytest.approx(30.0)
    assert weighed[0].objectives[slow] == pytest.approx(weighed[0].estimated_errors[slow] + 3.0)
    same = router.route_embeddings(router.embed(prompts), lam=0.0, latency_weight=0.0,
                                   latencies=latencies)  # fmt: skip
    assert [d.model for d in same] == [d.model for d in base]
    unknown = router.route_embeddings(router.embed(prompts), lam=0.0, latency_weight=5.0,
                                      latencies={"not-in-the-pool": 9.0})  # fmt: skip
    assert [d.model for d in unknown] == [d.model for d in base]
    with pytest.raises(RouterError, match="latency weight"):
        router.route_embeddings(router.embed(prompts[:1]), latency_weight=-1.0)


def test_a_model_without_a_latency_counts_the_median_of_the_others(router: Router) -> None:
    prompt = str(router.artifact.representative_prompts[0].text)
    names = router.snapshot.pool.names
    latencies = {name: float(i) for i, name in enumerate(names[1:], start=1)}  # names[0] unknown
    decision = router.route_embeddings(
        router.embed([prompt]), lam=0.0, latency_weight=1.0, latencies=latencies
    )[0]
    assert decision.expected_latency(names[0]) == pytest.approx(np.median(list(latencies.values())))
