"""Decisions served from a snapshot's (cluster, policy) table are the computed ones, field by field.

With the hard K-means estimator the router looks each prompt's decision up in a table built once
per (snapshot, policy); ``Router(..., decision_tables=False)`` computes every decision as before.
Both must agree on every field for every prompt and policy, raise the same errors, and a pool
change (a model added, a price changed) must give new tables.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from uniroute.artifact import Artifact
from uniroute.data.dataset import RoutingDataset
from uniroute.deployment import Decision, Router
from uniroute.deployment.pool_changes import add_scored_model, calibrate, seed_registry, set_cost
from uniroute.deployment.snapshot import DerivedValues
from uniroute.errors import RouterError
from uniroute.registry import ModelCost, ModelRecord, Registry
from uniroute.registry.calibration import make_target
from uniroute.routers import make_estimator

HELD_OUT = "gpt-4-1106-preview"
#: Training models given an endpoint, so that decisions pick among servable models only.
SERVED = ("mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat", "meta/llama-2-70b-chat")


def _scores_of(dataset: RoutingDataset, model: str) -> dict[str, float]:
    column = dataset.scores[:, dataset.model_index(model)]
    return {pid: float(s) for pid, s in zip(dataset.prompt_ids, column, strict=True)}


def _fields(decision: Decision) -> dict[str, object]:
    """Every public field of a decision (to_dict has them all, the pool aside)."""
    return {**decision.to_dict(), "pool": id(decision.pool)}


def _both(router: Router, X: np.ndarray, **policy) -> tuple[list[Decision], list[Decision]]:
    """(table decisions, computed decisions) over the same snapshot."""
    snapshot = router.snapshot
    tabled = router.route_embeddings(X, snapshot=snapshot, **policy)
    computed = Router.route_embeddings(_computing(router), X, snapshot=snapshot, **policy)
    return tabled, computed


def _computing(router: Router) -> Router:
    """The same router with the tables switched off (shares artifact, registry and snapshot)."""
    clone = object.__new__(Router)
    clone.__dict__.update(router.__dict__)
    clone.decision_tables = False
    return clone


def _errors_of(call) -> str:
    with pytest.raises(RouterError) as caught:
        call()
    return str(caught.value)


@pytest.fixture
def router(arc_artifact: Artifact, arc_dataset: RoutingDataset, tmp_path: Path) -> Router:
    """The shared ARC artifact over its training models, three of them servable."""
    registry = Registry(tmp_path / "pool.db")
    seed_registry(arc_artifact, registry)
    router = Router.load(arc_artifact, registry)
    costs = dict(zip(arc_artifact.training_models, arc_artifact.training_costs, strict=True))
    for name in SERVED:
        record = ModelRecord(
            name=name,
            cost=ModelCost(per_query=float(costs[name])),
            endpoint="http://127.0.0.1:9/v1",
        )
        add_scored_model(router, record, _scores_of(arc_dataset, name), replace=True)
    return router


@pytest.fixture(scope="module")
def embedded(arc_artifact: Artifact, arc_dataset: RoutingDataset) -> np.ndarray:
    """Every ARC prompt, embedded."""
    return arc_artifact.encoder.encode([str(t) for t in arc_dataset.prompts])


POLICIES = [
    {},  # the default policy: uncalibrated here (lambda 0, with a warning)
    {"lam": 0.0},
    {"lam": -0.0},
    {"lam": 3.0},
    {"lam": 50.0},
    {"lam": 1e4},
    {"max_cost": 0.0005},
    {"max_cost": 1.0},
    {"lam": 50.0, "max_cost": 0.002},
    {"risk": 1.64},
    {"lam": 20.0, "risk": 0.5},
]


@pytest.mark.parametrize("policy", POLICIES, ids=[str(p) for p in POLICIES])
def test_table_decisions_are_the_computed_ones_field_by_field(
    router: Router, embedded: np.ndarray, policy: dict
) -> None:
    tabled, computed = _both(router, embedded, **policy)
    assert len(tabled) == len(computed) == len(embedded)
    for a, b in zip(tabled, computed, strict=True):
        assert _fields(a) == _fields(b)
        assert math.copysign(1.0, a.lam) == math.copysign(1.0, b.lam)
    # The ranking is over the servable models (the others have no endpoint).
    assert {m for d in tabled for m in d.ranking} <= set(SERVED)


def test_the_default_policy_once_calibrated(
    router: Router, arc_artifact: Artifact, embedded: np.ndarray
) -> None:
    calibrate(router, make_target(target_cost=float(np.median(router.snapshot.pool.costs))))
    assert router.snapshot.policy is not None
    tabled, computed = _both(router, embedded)
    assert tabled[0].policy == "default"
    assert [_fields(d) for d in tabled] == [_fields(d) for d in computed]


def test_the_same_errors_are_raised(router: Router, embedded: np.ndarray) -> None:
    computing = _computing(router)
    X = embedded[:3]
    nan = X.copy()
    nan[1, 0] = np.nan
    calls = [
        {"X": X, "lam": -1.0},
        {"X": X, "max_cost": 1e-9},  # below the cheapest servable model
        {"X": X, "risk": float("nan")},
        {"X": nan, "lam": 1.0},
        {"X": X[:, :5], "lam": 1.0},
    ]
    for kwargs in calls:
        # Twice each: the second time, a table of the policy may already exist.
        for _ in range(2):
            expected = _errors_of(lambda k=kwargs: computing.route_embeddings(**k))
            assert _errors_of(lambda k=kwargs: router.route_embeddings(**k)) == expected


def test_prompts_of_one_cluster_and_policy_share_one_decision(
    router: Router, arc_artifact: Artifact, embedded: np.ndarray
) -> None:
    clusters = arc_artifact.router.clusters(embedded)
    first, second = np.flatnonzero(clusters == clusters[0])[:2]
    decisions = router.route_embeddings(embedded[[first, second]], lam=5.0)
    assert decisions[0] is decisions[1]
    again = router.route_embeddings(embedded[[first]], lam=5.0)[0]
    assert again is decisions[0]
    assert router.route_embeddings(embedded[[first]], lam=6.0)[0] is not decisions[0]
    # One table per policy on the snapshot, K decisions each.
    assert len(router.snapshot.derived) == 2


def test_a_pool_change_gives_a_new_snapshot_and_new_decisions(
    router: Router, arc_dataset: RoutingDataset, embedded: np.ndarray
) -> None:
    old_snapshot = router.snapshot
    old = router.route_embeddings(embedded, lam=1e4)
    # A new servable model at cost 0: at a large lambda it wins every prompt.
    record = ModelRecord(
        name=HELD_OUT, cost=ModelCost(per_query=0.0), endpoint="http://127.0.0.1:9/v1"
    )
    add_scored_model(router, record, _scores_of(arc_dataset, HELD_OUT))
    assert router.snapshot is not old_snapshot and len(router.snapshot.derived) == 0
    added, computed = _both(router, embedded, lam=1e4)
    assert {d.model for d in added} == {HELD_OUT}
    assert [_fields(d) for d in added] == [_fields(d) for d in computed]
    # Re-priced: the dearest model, and no longer the winner.
    set_cost(router, HELD_OUT, ModelCost(per_query=1.0))
    repriced, computed = _both(router, embedded, lam=1e4)
    assert HELD_OUT not in {d.model for d in repriced}
    assert {d.costs[HELD_OUT] for d in repriced} == {1.0}
    assert [_fields(d) for d in repriced] == [_fields(d) for d in computed]
    # Requests still holding the old snapshot keep getting its decisions.
    stale = router.route_embeddings(embedded, lam=1e4, snapshot=old_snapshot)
    assert [_fields(d) for d in stale] == [_fields(d) for d in old]
    assert all(HELD_OUT not in d.estimated_errors for d in stale)


def test_the_learned_soft_map_is_always_computed(
    arc_artifact: Artifact, embedded: np.ndarray, tmp_path: Path
) -> None:
    estimator = make_estimator("uniroute-learned", n_clusters=4, max_iter=20).fit(
        arc_artifact.router.X_val_,
        arc_artifact.training_scores,
        arc_artifact.router.X_val_,
        arc_artifact.training_scores,
        arc_artifact.training_costs,
    )
    learned = dataclasses.replace(arc_artifact, router=estimator)
    with Registry(tmp_path / "learned.db") as registry:
        seed_registry(learned, registry)
    router = Router.load(learned, tmp_path / "learned.db")
    tabled, computed = _both(router, embedded[:40], lam=2.0)
    assert len(router.snapshot.derived) == 0
    assert [_fields(d) for d in tabled] == [_fields(d) for d in computed]
    # Soft weights: no two prompts share a decision object.
    assert len({id(d) for d in tabled}) == len(tabled)


def test_many_client_lambdas_stay_within_the_snapshots_budget(
    router: Router, embedded: np.ndarray
) -> None:
    snapshot = router.snapshot
    for lam in np.linspace(0.0, 100.0, 300):
        router.route_embeddings(embedded[:2], lam=float(lam))
    assert 0 < len(snapshot.derived) <= 300


def test_derived_values_drop_the_oldest_beyond_their_budget() -> None:
    derived = DerivedValues(budget_cells=10)
    computed: list[str] = []

    def make(key: str):
        return lambda: computed.append(key) or key.upper()

    assert derived.get("a", make("a"), cells=4) == "A"
    assert derived.get("b", make("b"), cells=4) == "B"
    assert derived.get("a", make("a"), cells=4) == "A"  # kept
    assert derived.get("c", make("c"), cells=4) == "C"  # over budget: "a", the oldest, goes
    assert derived.get("b", make("b"), cells=4) == "B"
    assert derived.get("a", make("a"), cells=4) == "A"
    assert computed == ["a", "b", "c", "a"]
    # Larger than the whole budget: computed every time, never kept.
    assert derived.get("huge", make("huge"), cells=11) == "HUGE"
    assert derived.get("huge", make("huge"), cells=11) == "HUGE"
    assert computed[-2:] == ["huge", "huge"] and len(derived) == 2


def test_a_snapshot_copied_with_changes_starts_without_tables(
    router: Router, embedded: np.ndarray
) -> None:
    router.route_embeddings(embedded[:5], lam=1.0)
    snapshot = router.snapshot
    cheaper = dataclasses.replace(snapshot.pool, costs=snapshot.pool.costs / 2)
    copied = dataclasses.replace(snapshot, pool=cheaper)
    assert len(snapshot.derived) == 1 and len(copied.derived) == 0
    tabled = router.route_embeddings(embedded[:5], lam=1.0, snapshot=copied)
    assert {d.costs[m] for d in tabled for m in d.costs} <= set(cheaper.costs.tolist())
