"""The deployable Router: routing real RouterBench prompts over a registry's pool."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from uniroute.artifact import Artifact, build_artifact
from uniroute.data.dataset import RoutingDataset
from uniroute.deployment.router import Decision, Router, cluster_weights, seed_registry
from uniroute.embeddings import make_encoder
from uniroute.errors import DataError, RegistryError, RouterError, StateError
from uniroute.registry.costs import ModelCost
from uniroute.registry.store import Registry
from uniroute.routers import KNNRouter, ZeroRouter


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


# ------------------------------------------------------------------------------- routing
def test_routes_real_prompts_and_explains_the_choice(
    router: Router, arc_artifact: Artifact, arc_dataset: RoutingDataset
) -> None:
    prompts = _test_prompts(arc_dataset, arc_artifact)
    decisions = router.route(prompts, lam=50.0)
    assert len(decisions) == len(prompts)
    X = arc_artifact.encoder.encode(prompts)
    # The training models' Psi in the registry reproduce the artifact's own fitted router.
    expected = arc_artifact.router.predict_error(X)
    for i, decision in enumerate(decisions):
        assert isinstance(decision, Decision)
        assert set(decision.estimated_error) == set(arc_artifact.training_models)
        for j, model in enumerate(arc_artifact.router.pool_names_):
            assert decision.estimated_error[model] == pytest.approx(expected[i, j])
            assert decision.objective[model] == pytest.approx(
                decision.estimated_error[model] + 50.0 * decision.cost[model]
            )
        best = min(decision.objective.values())
        assert decision.objective[decision.model] == pytest.approx(best)
        assert decision.ranking[0] == decision.model
        assert sorted(decision.ranking) == sorted(router.pool_models)
        ranked_objectives = [decision.objective[m] for m in decision.ranking]
        assert ranked_objectives == sorted(ranked_objectives)
        # K-means: Phi(x) is one-hot on the prompt's cluster.
        assert decision.cluster_weights[decision.cluster] == 1.0
        assert sum(decision.cluster_weights) == 1.0
        assert len(decision.cluster_weights) == 6
        assert decision.cluster == int(arc_artifact.router.clusters(X[i : i + 1])[0])
        assert decision.policy == "explicit" and decision.warning is None
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
    decision = router.route(str(arc_dataset.prompts[0]), budget=0.0004)
    data = json.loads(json.dumps(decision.to_dict()))
    assert set(data) == {
        "model",
        "lam",
        "budget",
        "policy",
        "warning",
        "estimated_error",
        "cost",
        "objective",
        "ranking",
        "over_budget",
        "cluster",
        "cluster_weights",
    }
    assert data["model"] == decision.model and data["budget"] == 0.0004


def test_budget_picks_the_most_accurate_model_within_it(
    router: Router, arc_artifact: Artifact, arc_dataset: RoutingDataset
) -> None:
    costs = router.pool_costs
    budget = sorted(costs.values())[3]  # four models are within it
    for decision in router.route(_test_prompts(arc_dataset, arc_artifact), budget=budget):
        within = [m for m, c in costs.items() if c <= budget]
        assert sorted(decision.ranking) == sorted(within)
        assert sorted(decision.over_budget) == sorted(set(costs) - set(within))
        best = min(decision.estimated_error[m] for m in within)
        assert decision.estimated_error[decision.model] == best
        assert costs[decision.model] <= budget
        assert decision.policy == "budget" and decision.lam == 0.0
    cheapest = min(costs, key=costs.get)
    with pytest.raises(RouterError, match=f"the cheapest is '{cheapest}'"):
        router.route("a prompt", budget=costs[cheapest] / 2)


def test_lambda_zero_and_large_lambda_extremes(router: Router, arc_dataset: RoutingDataset) -> None:
    prompt = str(arc_dataset.prompts[3])
    accurate = router.route(prompt, lam=0.0)
    assert accurate.estimated_error[accurate.model] == min(accurate.estimated_error.values())
    frugal = router.route(prompt, lam=1e9)
    assert frugal.model == min(router.pool_costs, key=router.pool_costs.get)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "abc"])
def test_bad_lambda_or_budget_is_a_clear_error(router: Router, bad: object) -> None:
    with pytest.raises(RouterError, match="lambda must be"):
        router.route("x", lam=bad)
    with pytest.raises(RouterError, match="budget must be"):
        router.route("x", budget=bad)


def test_without_a_policy_lambda_is_zero_with_a_warning(router: Router) -> None:
    assert router.default_lambda is None and router.policy is None
    decision = router.route("Which gas do plants absorb?")
    assert decision.lam == 0.0 and decision.policy == "uncalibrated"
    assert "no default policy is calibrated" in decision.warning


# ------------------------------------------------------------------------------- the pool
def test_added_model_is_routable_at_once_and_changes_decisions(
    router: Router, arc_artifact: Artifact, arc_dataset: RoutingDataset
) -> None:
    prompts = _test_prompts(arc_dataset, arc_artifact)
    before = router.route(prompts, lam=1e4)
    cheapest = min(router.pool_costs, key=router.pool_costs.get)
    assert {d.model for d in before} == {cheapest}
    added = router.add_model(
        "gpt-4-1106-preview", _scores_of(arc_dataset, "gpt-4-1106-preview"), 0.0
    )
    assert added.n_matched == len(arc_artifact.prompt_ids)
    assert len(added.unknown_ids) == arc_dataset.n_prompts - len(arc_artifact.prompt_ids)
    after = router.route(prompts, lam=1e4)
    # At cost 0 it pays no lambda * cost (at least 0.89 for every other model here): it wins.
    assert {d.model for d in after} == {"gpt-4-1106-preview"}
    # Its Psi is the artifact router's description of those scores.
    values = np.array(
        [_scores_of(arc_dataset, "gpt-4-1106-preview")[p] for p in arc_artifact.prompt_ids]
    )
    X = router.embed(prompts[:3])
    psi = arc_artifact.router.model_features(values)
    for i, decision in enumerate(after[:3]):
        k = int(arc_artifact.router.clusters(X[i : i + 1])[0])
        assert decision.estimated_error["gpt-4-1106-preview"] == pytest.approx(psi[k])


def test_disabled_models_are_never_routed_to(router: Router, arc_dataset: RoutingDataset) -> None:
    prompt = str(arc_dataset.prompts[5])
    first = router.route(prompt, lam=0.0).model
    router.set_enabled(first, False)
    decision = router.route(prompt, lam=0.0)
    assert decision.model != first and first not in decision.estimated_error
    router.set_enabled(first, True)
    assert router.route(prompt, lam=0.0).model == first


def test_an_empty_pool_loads_but_cannot_route(arc_artifact: Artifact, tmp_path: Path) -> None:
    empty = Router.load(arc_artifact, tmp_path / "empty.db")
    assert empty.pool_models == []
    with pytest.raises(RouterError, match="no enabled model in the registry"):
        empty.route("anything")


def test_refresh_picks_up_changes_made_through_another_connection(
    router: Router, registry_path: Path
) -> None:
    assert router.refresh() is False
    # A second connection to the file, as the CLI or another server process would open.
    with Registry(registry_path) as other:
        other.set_cost("claude-v1", ModelCost(per_query=0.0))
    assert router.pool_costs["claude-v1"] > 0
    assert router.refresh() is True
    assert router.pool_costs["claude-v1"] == 0.0
    assert router.refresh() is False


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
                    assert set(decision.estimated_error) == set(decision.cost)
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=route_continuously) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for round_number in range(15):
            name = "claude-instant-v1"
            router.set_enabled(name, round_number % 2 == 1)
            router.set_cost("WizardLM/WizardLM-13B-V1.2", ModelCost(per_query=0.001 * round_number))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert errors == []


def test_add_model_errors_leave_the_registry_unchanged(
    router: Router, arc_dataset: RoutingDataset
) -> None:
    version = router.registry.pool_version()
    with pytest.raises(DataError, match="none of its 2 prompt ids"):
        router.add_model("x", {"nope-1": 1.0, "nope-2": 0.0}, 0.1, source="x.csv")
    with pytest.raises(RegistryError, match="already in the registry"):
        router.add_model("claude-v1", _scores_of(arc_dataset, "claude-v1"), 0.1)
    with pytest.raises(RegistryError, match="NAME of the environment variable"):
        router.add_model(
            "y",
            _scores_of(arc_dataset, "claude-v2"),
            0.1,
            api_key_env="sk-proj-Abc123def456ghi789jkl012mno345pqr678",
        )
    assert router.registry.pool_version() == version
    assert "x" not in router.pool_models and "y" not in router.pool_models


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
    router.add_model("claude-v2", _scores_of(arc_dataset, "claude-v2"), cost)
    texts = [p.text for p in router.artifact.representative_prompts]
    mean_tokens = sum(len(t) for t in texts) / len(texts) / 4
    expected = mean_tokens / 1000 * 0.01 + 5 / 1000 * 0.03
    assert router.pool_costs["claude-v2"] == pytest.approx(expected)


# ----------------------------------------------------------------------- default policy
def test_calibrated_policy_becomes_the_default(router: Router, arc_artifact: Artifact) -> None:
    policy = router.calibrate(target_quality=0.8)
    assert router.default_lambda == policy.lam and not router.policy_is_stale
    decision = router.route("What is the boiling point of water?")
    assert decision.lam == policy.lam and decision.policy == "default" and decision.warning is None
    # Loaded afresh, the stored policy is used as it is (same pool).
    again = Router.load(arc_artifact, router.registry.path)
    assert again.policy == policy


def test_policy_is_solved_again_when_the_pool_changes(
    router: Router, arc_artifact: Artifact, arc_dataset: RoutingDataset
) -> None:
    first = router.calibrate(target_cost=0.0004)
    router.add_model("gpt-4-1106-preview", _scores_of(arc_dataset, "gpt-4-1106-preview"), 0.0001)
    second = router.policy
    assert not router.policy_is_stale
    assert second.target == first.target
    assert second.pool_fingerprint != first.pool_fingerprint
    assert second.expected_cost <= 0.0004
    # A cheap, accurate newcomer lets the same budget buy more quality.
    assert second.expected_quality > first.expected_quality
    # The re-solved policy was stored: a new process uses it without solving again.
    assert Router.load(arc_artifact, router.registry.path).policy == second


def test_policy_is_flagged_stale_when_its_target_cannot_be_met(
    router: Router, arc_artifact: Artifact
) -> None:
    expensive = max(router.pool_costs, key=router.pool_costs.get)
    policy = router.calibrate(target_share=(expensive, 0.2))
    router.remove_model(expensive)
    assert router.policy_is_stale
    assert expensive in router.policy_stale_reason
    assert router.default_lambda == policy.lam
    decision = router.route("Which planet is largest?")
    assert decision.lam == policy.lam
    assert "stale" in decision.warning
    # Re-calibrating with a reachable target clears it.
    router.calibrate(target_quality=0.7)
    assert not router.policy_is_stale
    assert Router.load(arc_artifact, router.registry.path).policy_is_stale is False


def test_import_uniroute_stays_light_and_exports_router_lazily() -> None:
    code = "import sys, uniroute\nassert 'numpy' not in sys.modules, sorted(sys.modules)\n"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    import uniroute

    assert uniroute.Router is Router
    with pytest.raises(AttributeError, match="no attribute 'Routr'"):
        _ = uniroute.Routr


def test_learned_cluster_map_gives_soft_cluster_weights(
    arc_dataset: RoutingDataset, arc_holdout_models: list[str], tmp_path: Path
) -> None:
    learned = build_artifact(
        arc_dataset,
        tmp_path / "learned",
        encoder=make_encoder("tfidf", n_components=16),
        router="uniroute-learned",
        router_params={"n_clusters": 4, "max_iter": 30},
        holdout_models=arc_holdout_models,
        val_fraction=0.25,
    )
    with Registry(tmp_path / "pool.db") as registry:
        seed_registry(learned, registry)
    router = Router.load(learned, tmp_path / "pool.db")
    prompts = _test_prompts(arc_dataset, learned, 5)
    X = router.embed(prompts)
    for i, decision in enumerate(router.route(prompts, lam=0.0)):
        weights = np.array(decision.cluster_weights)
        assert weights.shape == (4,) and weights.sum() == pytest.approx(1.0)
        assert decision.cluster == int(weights.argmax())
        # err(x, h) = Phi(x) . Psi(h), Psi as the artifact's router computed it.
        for j, model in enumerate(learned.router.pool_names_):
            psi = learned.router.pool_features_[j]
            assert decision.estimated_error[model] == pytest.approx(weights @ psi)
        np.testing.assert_allclose(weights, learned.router.soft_clusters(X[i : i + 1])[0])


def test_cluster_weights_come_from_cluster_routers_only(
    router: Router, arc_artifact: Artifact, arc_dataset: RoutingDataset
) -> None:
    X = router.embed(_test_prompts(arc_dataset, arc_artifact, 4))
    weights = cluster_weights(arc_artifact.router, X)
    np.testing.assert_array_equal(weights, arc_artifact.router.cluster_weights(X))
    assert weights.shape == (4, 6)
    for router_without_clusters in (KNNRouter(), ZeroRouter()):
        assert cluster_weights(router_without_clusters, X) is None
