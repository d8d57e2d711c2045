"""A calibrated policy lies on the evaluated deferral curve.

Calibration and the deferral curve read the one lambda sweep of ``uniroute.tradeoff``, so on the
same representative prompts and pool, a policy's expected cost and quality at its lambda are the
curve's point at that lambda, for every kind of target. The sweep calibration runs is over the
*cross-fitted* errors (``RouterEstimator.cross_fitted_errors``) and the quality matrix with each
missing score filled by ``1 - estimated error`` (``filled_quality``), so the curve is drawn from
those same two matrices, on every representative prompt (none is dropped). Checked on real
RouterBench ARC data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from uniroute.artifact import Artifact
from uniroute.data.dataset import RoutingDataset
from uniroute.deployment import Router
from uniroute.deployment.pool_changes import (
    add_scored_model,
    calibrate,
    remove_model,
    seed_registry,
)
from uniroute.deployment.snapshot import CALIBRATION_FOLDS
from uniroute.errors import CalibrationError
from uniroute.pool import Pool
from uniroute.registry import ModelCost, ModelRecord, Registry
from uniroute.registry.calibration import Policy, Target, filled_quality, solve_target
from uniroute.tradeoff import DeferralCurve, deferral_curve, route_argmin

TOLERANCE = 1e-12
HELD_OUT = "gpt-4-1106-preview"
#: The one training model of the shared artifact without a score on some representative prompt.
INCOMPLETE = "gpt-3.5-turbo-1106"


def _targets(curve: DeferralCurve, pool: Pool) -> list[Target]:
    """Cost and quality targets across the curve's range, and shares for the pool's models."""
    costs = np.linspace(curve.costs.min(), curve.costs.max(), 9)
    qualities = np.linspace(curve.qualities.min(), curve.qualities.max(), 9)
    targets = [Target("cost", float(c)) for c in costs]
    targets += [Target("quality", float(q)) for q in qualities]
    for name in pool.names:
        targets += [Target("share", share, model=name) for share in (0.0, 0.1, 0.5, 0.9)]
    return targets


def _assert_on_curve(policy: Policy, curve: DeferralCurve, errors, costs, quality) -> None:
    cost, curve_quality = curve.point_at(policy.lam)
    assert abs(policy.expected_cost - cost) <= TOLERANCE, policy
    assert abs(policy.expected_quality - curve_quality) <= TOLERANCE, policy
    # ... and both are what routing at that lambda actually gives on those prompts.
    choice = route_argmin(errors, costs, policy.lam)
    assert costs[choice].mean() == pytest.approx(policy.expected_cost, rel=TOLERANCE, abs=0)
    realised = quality[np.arange(len(choice)), choice].mean()
    assert realised == pytest.approx(policy.expected_quality, rel=TOLERANCE, abs=TOLERANCE)


def _scores_of(dataset: RoutingDataset, model: str) -> dict[str, float]:
    column = dataset.scores[:, dataset.model_index(model)]
    return {pid: float(s) for pid, s in zip(dataset.prompt_ids, column, strict=True)}


def test_policies_lie_on_the_curve_of_the_deployed_pool(
    arc_artifact: Artifact, arc_dataset: RoutingDataset, tmp_path: Path
) -> None:
    """The shared artifact's deployed pool (training models and an onboarded unseen one)."""
    router = Router.load(arc_artifact, tmp_path / "pool.db")
    seed_registry(arc_artifact, router.registry)
    record = ModelRecord(name=HELD_OUT, cost=ModelCost(per_query=0.002))
    add_scored_model(router, record, _scores_of(arc_dataset, HELD_OUT))
    pool = router.snapshot.pool
    assert HELD_OUT in pool and len(pool) == len(arc_artifact.training_models) + 1

    complete = np.isfinite(pool.scores).all(axis=1)
    assert complete.sum() < len(complete)  # ARC has missing scores; no row is left out now
    estimator = arc_artifact.router
    errors = estimator.cross_fitted_errors(estimator.X_val_, pool, folds=CALIBRATION_FOLDS)
    quality = filled_quality(pool.scores, errors)
    curve = deferral_curve(errors, pool.costs, quality)

    checked = 0
    for target in _targets(curve, pool):
        try:
            policy = solve_target(errors, pool.costs, pool.scores, list(pool.names), target)
        except CalibrationError:
            continue  # a share no lambda gives within the tolerance, e.g. a model never chosen
        _assert_on_curve(policy, curve, errors, pool.costs, quality)
        assert policy.n_prompts == curve.n_prompts == len(complete)
        # The deployed path (calibrate_pool) sweeps exactly these matrices.
        deployed = calibrate(router, target, store=False)
        assert (deployed.lam, deployed.expected_cost, deployed.expected_quality) == (
            policy.lam, policy.expected_cost, policy.expected_quality,
        )  # fmt: skip
        checked += 1
    assert checked >= 20


def test_stored_policies_lie_on_the_curve_of_the_representative_prompts(
    arc_artifact: Artifact, tmp_path: Path
) -> None:
    """The deployed path end to end: `calibrate` over the registry's pool, stored and reloaded.

    The pool is the shared artifact's training models scored on every representative prompt:
    all of them but the one with missing scores there (see ``arc_artifact``).
    """
    registry = Registry(tmp_path / "pool.db")
    seed_registry(arc_artifact, registry)
    router = Router.load(arc_artifact, registry)
    seeded = router.snapshot.pool
    missing = [
        name for name in seeded.names if np.isnan(seeded.scores[:, seeded.index(name)]).any()
    ]
    assert missing == [INCOMPLETE]
    remove_model(router, INCOMPLETE)
    pool = router.snapshot.pool
    assert len(pool) == len(arc_artifact.training_models) - 1 >= 5
    assert np.isfinite(pool.scores).all()
    assert not pool.servable  # no endpoint: calibration is over every enabled model
    estimator = arc_artifact.router
    # What calibrate_pool sweeps: the cross-fitted errors (seed 0), out of sample.
    errors = estimator.cross_fitted_errors(estimator.X_val_, pool, folds=CALIBRATION_FOLDS)
    curve = deferral_curve(errors, pool.costs, pool.scores)
    assert curve.n_prompts == len(arc_artifact.prompt_ids)

    checked = 0
    for target in _targets(curve, pool):
        try:
            policy = calibrate(router, target)
        except CalibrationError:
            continue
        _assert_on_curve(policy, curve, errors, pool.costs, pool.scores)
        assert policy.out_of_sample and policy.n_folds == CALIBRATION_FOLDS
        assert policy.models == pool.names and not policy.servable_only
        # The stored default is that same point: a fresh process routes at it.
        reloaded = Router.load(arc_artifact, registry.path).snapshot.policy
        assert reloaded == policy
        assert reloaded.pool_fingerprint == router.snapshot.fingerprint
        checked += 1
    assert checked >= 20
