"""deployment.snapshot.calibrate_pool: out-of-sample, over the models traffic can reach."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from uniroute.data.dataset import RoutingDataset
from uniroute.deployment import Router
from uniroute.deployment.pool_changes import add_scored_model, calibrate, set_cost
from uniroute.deployment.snapshot import CALIBRATION_FOLDS, calibrate_pool
from uniroute.errors import CalibrationError
from uniroute.registry import ModelCost, ModelRecord
from uniroute.registry.calibration import make_target, solve_target

UNREACHABLE = "http://127.0.0.1:9/v1"
HELD_OUT = "gpt-4-1106-preview"


def _recorded_scores(dataset: RoutingDataset, model: str) -> dict[str, float]:
    column = dataset.scores[:, dataset.model_index(model)]
    return {str(p): float(s) for p, s in zip(dataset.prompt_ids, column, strict=True)}


def _give_endpoint(router: Router, dataset: RoutingDataset, name: str) -> None:
    record = router.registry.get_model(name)
    with_endpoint = ModelRecord(name=name, cost=record.cost, endpoint=UNREACHABLE, tags=record.tags)
    add_scored_model(router, with_endpoint, _recorded_scores(dataset, name), replace=True)


def test_without_endpoints_every_enabled_model_counts_out_of_sample(seeded: Router) -> None:
    policy = calibrate(seeded, make_target(target_quality=0.7), store=False)
    pool = seeded.snapshot.pool
    assert not pool.servable
    assert policy.out_of_sample and policy.n_folds == CALIBRATION_FOLDS
    assert policy.models == pool.names and not policy.servable_only
    assert policy.left_out(pool.names) == []
    assert policy.describe_basis() == f"out-of-sample ({CALIBRATION_FOLDS}-fold cross-fitted)"
    assert policy.n_prompts == len(seeded.artifact.prompt_ids)  # every representative prompt
    # Its figures are the sweep of the cross-fitted errors (seed 0), not the in-sample ones.
    estimator = seeded.artifact.router
    errors = estimator.cross_fitted_errors(estimator.X_val_, pool, folds=CALIBRATION_FOLDS)
    expected = solve_target(errors, pool.costs, pool.scores, list(pool.names), policy.target)
    assert (policy.lam, policy.expected_cost, policy.expected_quality) == (
        expected.lam,
        expected.expected_cost,
        expected.expected_quality,
    )


def test_servable_only_calibration_ignores_a_model_without_endpoint(
    seeded: Router, arc_dataset: RoutingDataset
) -> None:
    costs = dict(zip(seeded.snapshot.pool.names, seeded.snapshot.pool.costs, strict=True))
    cheap, expensive = min(costs, key=costs.__getitem__), max(costs, key=costs.__getitem__)
    for name in (cheap, expensive):
        _give_endpoint(seeded, arc_dataset, name)
    pool = seeded.snapshot.pool
    servable = [n for n in pool.names if n in (cheap, expensive)]
    assert list(pool.servable) == servable

    target = make_target(target_quality=0.5)
    policy = calibrate(seeded, target)
    assert policy.servable_only and policy.models == tuple(servable)
    assert policy.out_of_sample
    left_out = policy.left_out(pool.names)
    assert sorted(left_out) == sorted(set(pool.names) - {cheap, expensive})
    # The figures are those of the servable pool alone.
    only = seeded.artifact.router.cross_fitted_errors(
        seeded.artifact.router.X_val_, pool.select(servable), folds=CALIBRATION_FOLDS
    )
    alone = solve_target(only, pool.select(servable).costs, pool.select(servable).scores,
                         servable, target)  # fmt: skip
    assert (policy.lam, policy.expected_cost, policy.expected_quality) == (
        alone.lam,
        alone.expected_cost,
        alone.expected_quality,
    )
    # A model the gateway cannot call changes nothing, however attractive: made free, it would
    # take the traffic if it were counted. (The pool changed, so the stored target is re-solved.)
    set_cost(seeded, left_out[0], ModelCost(per_query=0.0))
    resolved = seeded.snapshot.policy
    assert resolved is not None and seeded.snapshot.policy_stale_reason is None
    assert resolved.pool_fingerprint == seeded.snapshot.fingerprint != policy.pool_fingerprint
    assert (resolved.lam, resolved.expected_cost, resolved.expected_quality) == (
        policy.lam,
        policy.expected_cost,
        policy.expected_quality,
    )
    # ... while counted (the same pool with no endpoint at all), it changes the answer.
    counted = calibrate_pool(
        seeded.artifact, dataclasses.replace(seeded.snapshot.pool, endpoints=()), target, "fp"
    )
    assert not counted.servable_only and left_out[0] in counted.models
    assert counted.expected_cost < resolved.expected_cost
    # A share of traffic for a model without endpoint is refused, saying why.
    with pytest.raises(CalibrationError, match="has no endpoint, so the gateway never sends"):
        calibrate(seeded, make_target(target_share=(left_out[0], 0.2)))


def test_a_new_servable_model_is_counted_when_the_target_is_solved_again(
    seeded: Router, arc_dataset: RoutingDataset
) -> None:
    costs = dict(zip(seeded.snapshot.pool.names, seeded.snapshot.pool.costs, strict=True))
    cheap = min(costs, key=costs.__getitem__)
    _give_endpoint(seeded, arc_dataset, cheap)
    first = calibrate(seeded, make_target(target_quality=0.0))
    assert first.models == (cheap,)
    record = ModelRecord(name=HELD_OUT, cost=ModelCost(per_query=0.002), endpoint=UNREACHABLE)
    add_scored_model(seeded, record, _recorded_scores(arc_dataset, HELD_OUT))
    second = seeded.snapshot.policy
    assert second is not None and seeded.snapshot.policy_stale_reason is None
    assert set(second.models) == {cheap, HELD_OUT} and second.servable_only
    assert second.out_of_sample and second.target == first.target
    assert Router.load(seeded.artifact, seeded.registry.path).snapshot.policy == second


def test_an_empty_pool_is_a_clear_error(seeded: Router) -> None:
    empty = seeded.snapshot.pool.select([])
    with pytest.raises(CalibrationError, match="no enabled model"):
        calibrate_pool(seeded.artifact, empty, make_target(target_quality=0.5), "fp")


def test_the_stored_policy_says_how_it_was_computed(seeded: Router) -> None:
    stored = calibrate(seeded, make_target(target_cost=0.001))
    read = seeded.registry.get_policy()
    assert read == stored
    data = read.to_dict()
    assert data["out_of_sample"] is True and data["n_folds"] == CALIBRATION_FOLDS
    assert data["models"] == list(seeded.snapshot.pool.names)
    assert data["servable_only"] is False and data["n_estimated"] == stored.n_estimated
    assert np.isfinite(data["expected_quality"])
