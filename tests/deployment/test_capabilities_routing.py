"""Capability-restricted routing: the argmin over the models that can take a request.

The restriction is applied to the candidate set before the argmin, so the decision is the best
*capable* model (not the overall best filtered away afterwards), with the same answer from the
per-cluster decision tables and from the general path.
"""

from __future__ import annotations

import numpy as np
import pytest

from uniroute.deployment import Router, pool_changes
from uniroute.errors import NoCapableModelError, RouterError
from uniroute.pool import Capabilities
from uniroute.tradeoff import route_argmin


@pytest.fixture
def prompts(arc_dataset) -> list[str]:
    return [str(p) for p in arc_dataset.prompts[:60]]


def _manual_picks(router: Router, X: np.ndarray, capable: list[str], lam: float) -> list[str]:
    """The argmin of estimated error + lam * cost over ``capable`` only, computed here."""
    pool = router.snapshot.pool.select(capable)
    errors = router.artifact.router.predict_error(X, pool)
    return [capable[j] for j in route_argmin(errors, pool.costs, lam).tolist()]


@pytest.mark.parametrize("tables", [True, False])
def test_the_pick_is_the_best_capable_model(seeded: Router, prompts, tables: bool) -> None:
    seeded.decision_tables = tables
    X = seeded.embed(prompts)
    lam = 50.0
    unrestricted = [d.model for d in seeded.route_embeddings(X, lam=lam)]
    # Leave out the model picked most often: the rule must change those picks.
    favourite = max(set(unrestricted), key=unrestricted.count)
    capable = [n for n in seeded.snapshot.pool.names if n != favourite]
    decisions = seeded.route_embeddings(X, lam=lam, capable=capable)
    assert [d.model for d in decisions] == _manual_picks(seeded, X, capable, lam)
    for decision, before in zip(decisions, unrestricted, strict=True):
        assert decision.model != favourite
        assert favourite not in decision.ranking and favourite in decision.not_capable
        assert decision.unrestricted_model == before
        assert decision.capability_rule_changed_pick == (before == favourite)
        assert favourite not in decision.over_budget
        info = decision.capability_dict()
        assert info["capability_rule_changed_pick"] == (before == favourite)
    assert any(d.capability_rule_changed_pick for d in decisions)


def test_without_a_restriction_nothing_changes(seeded: Router, prompts) -> None:
    X = seeded.embed(prompts)
    plain = seeded.route_embeddings(X, lam=5.0)
    every = seeded.route_embeddings(X, lam=5.0, capable=seeded.snapshot.pool.names)
    assert [d.model for d in plain] == [d.model for d in every]
    assert [d.ranking for d in plain] == [d.ranking for d in every]
    assert not any(d.capability_rule_changed_pick for d in plain + every)
    assert all(d.not_capable == [] for d in plain + every)


def test_restricted_and_unrestricted_tables_are_kept_apart(seeded: Router, prompts) -> None:
    X = seeded.embed(prompts)
    names = seeded.snapshot.pool.names
    first = [d.model for d in seeded.route_embeddings(X, lam=0.0)]
    only = [names[-1]]
    assert {d.model for d in seeded.route_embeddings(X, lam=0.0, capable=only)} == {names[-1]}
    assert [d.model for d in seeded.route_embeddings(X, lam=0.0)] == first


def test_no_capable_model_is_an_error_naming_the_models_considered(seeded: Router) -> None:
    X = seeded.embed(["Which gas do plants take in?"])
    with pytest.raises(NoCapableModelError, match="considered"):
        seeded.route_embeddings(X, capable=[])
    with pytest.raises(NoCapableModelError):
        seeded.route_embeddings(X, capable=["not-a-pool-model"])
    with pytest.raises(RouterError, match="collection of model names"):
        seeded.route_embeddings(X, capable=seeded.snapshot.pool.names[0])


def test_a_budget_is_applied_among_capable_models(seeded: Router) -> None:
    pool = seeded.snapshot.pool
    X = seeded.embed(["Which gas do plants take in?"])
    by_cost = sorted(pool.names, key=pool.cost)
    cheapest, dearest = by_cost[0], by_cost[-1]
    budget = pool.cost(cheapest)
    decision = seeded.route_embeddings(X, max_cost=budget)[0]
    assert decision.model == cheapest
    with pytest.raises(RouterError, match="model that can take the request costs at most"):
        seeded.route_embeddings(X, max_cost=budget, capable=[dearest])


def test_the_snapshot_carries_capabilities_from_the_records(seeded: Router) -> None:
    name = seeded.snapshot.pool.names[0]
    before = seeded.registry.pool_version()
    revision = seeded.registry.get_model(name).revision
    record = pool_changes.set_capabilities(
        seeded, name, capabilities=["vision", "tools"], context_window=8192
    )
    assert record.capabilities == ("tools", "vision") and record.context_window == 8192
    assert seeded.registry.pool_version() > before
    # The scores did not change: the record keeps its revision (the policy stays valid).
    assert record.revision == revision
    pool = seeded.snapshot.pool
    assert pool.capabilities_of(name) == Capabilities(frozenset({"tools", "vision"}), 8192, None)
    assert pool.select([name]).capabilities_of(name).context_window == 8192
    other = pool.names[1]
    assert pool.capabilities_of(other) == Capabilities()
    # Left out: kept; given: changed; [] clears.
    record = pool_changes.set_capabilities(seeded.registry, name, max_output_tokens=1024)
    assert record.capabilities == ("tools", "vision") and record.max_output_tokens == 1024
    record = pool_changes.set_capabilities(seeded, name, capabilities=[], context_window=None)
    assert record.capabilities == () and record.context_window is None
    assert seeded.snapshot.pool.capabilities_of(name).max_output_tokens == 1024
