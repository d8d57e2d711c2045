"""deployment.pool_changes: the one set of pool changes the CLI and the admin API make."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from uniroute.artifact import Artifact
from uniroute.data.dataset import RoutingDataset
from uniroute.deployment import Router
from uniroute.deployment.pool_changes import (
    AddedModel,
    add_scored_model,
    calibrate,
    check_can_add,
    onboard_model,
    remove_model,
    seed_registry,
    set_cost,
    set_enabled,
)
from uniroute.errors import (
    DataError,
    ModelExistsError,
    ModelNotFoundError,
    RegistryError,
)
from uniroute.registry import ModelCost, ModelRecord, Registry
from uniroute.registry.calibration import make_target

HELD_OUT = "gpt-4-1106-preview"
#: A training model of the shared artifact, re-priced by a bare registry.
REPRICED = "meta/llama-2-70b-chat"
UNREACHABLE = "http://127.0.0.1:9/v1"


@pytest.fixture
def router(arc_artifact: Artifact, tmp_path: Path) -> Router:
    """A Router over the shared ARC artifact and an empty registry of its own."""
    return Router.load(arc_artifact, Registry(tmp_path / "pool.db"))


def _recorded_scores(dataset: RoutingDataset, model: str) -> dict[str, float]:
    column = dataset.scores[:, dataset.model_index(model)]
    return {str(p): float(s) for p, s in zip(dataset.prompt_ids, column, strict=True)}


# ------------------------------------------------------------------------ adding from scores
def test_the_record_scores_and_psi_are_stored_in_one_change(router, arc_dataset) -> None:
    scores = _recorded_scores(arc_dataset, HELD_OUT)
    record = ModelRecord(
        name="gpt4-prod", cost=ModelCost(per_query=0.006), endpoint=UNREACHABLE,
        upstream_model=HELD_OUT, tags=("held-out",),
    )  # fmt: skip
    version = router.registry.pool_version()
    added = add_scored_model(router, record, scores, source="recorded scores")
    assert isinstance(added, AddedModel) and added.seconds >= 0
    # One transaction: the revision moved by exactly one.
    assert router.registry.pool_version() == version + 1
    plain = ModelRecord(name=HELD_OUT, cost=ModelCost(per_query=0.006))
    reference = add_scored_model(router, plain, scores)

    assert added.record.upstream_model == HELD_OUT and added.record.tags == ("held-out",)
    assert added.record.revision == router.registry.pool_version() - 1
    assert "gpt4-prod" in router.snapshot.pool  # routable on return
    assert router.snapshot.pool.endpoint("gpt4-prod").upstream_model == HELD_OUT
    registry, artifact = router.registry, router.artifact
    assert registry.get_model("gpt4-prod").upstream_model == HELD_OUT
    # The same scores and Psi whatever the other fields of the record.
    assert registry.get_scores("gpt4-prod") == registry.get_scores(HELD_OUT)
    psi = registry.get_features(artifact.artifact_id)
    np.testing.assert_array_equal(psi["gpt4-prod"], psi[HELD_OUT])
    # Psi is the estimator's description of the scores on the representative prompts.
    values = np.array([scores[p] for p in artifact.prompt_ids])
    np.testing.assert_allclose(psi["gpt4-prod"], artifact.router.model_features(values))
    assert (added.n_matched, added.n_representative, added.unknown_ids) == (
        reference.n_matched,
        reference.n_representative,
        reference.unknown_ids,
    )
    # Only representative prompts are stored, and missing scores are left out, never 0.
    representative = set(artifact.prompt_ids)
    stored = registry.get_scores("gpt4-prod")
    assert set(stored) <= representative
    assert set(stored) == {p for p in representative if not math.isnan(scores[p])}
    assert len(added.unknown_ids) == len(scores) - len(representative)


def test_scores_that_are_all_missing_are_refused_and_nothing_is_written(router) -> None:
    version = router.registry.pool_version()
    nan_scores = {prompt_id: float("nan") for prompt_id in router.artifact.prompt_ids}
    record = ModelRecord(name="blank", cost=ModelCost(per_query=0.001))
    with pytest.raises(DataError, match="blank scores: every matched score is missing"):
        add_scored_model(router, record, nan_scores, source="blank scores")
    with pytest.raises(DataError, match="other.csv: none of its 1 prompt ids"):
        add_scored_model(router, record, {"not-a-prompt": 1.0}, source="other.csv")
    assert router.registry.pool_version() == version
    assert not router.registry.has_model("blank")


def test_adding_errors_leave_the_registry_unchanged(seeded, arc_dataset) -> None:
    version = seeded.registry.pool_version()
    record = ModelRecord(name="x", cost=ModelCost(per_query=0.1))
    with pytest.raises(DataError, match="none of its 2 prompt ids"):
        add_scored_model(seeded, record, {"nope-1": 1.0, "nope-2": 0.0}, source="x.csv")
    existing = ModelRecord(name="claude-v1", cost=ModelCost(per_query=0.1))
    scores = _recorded_scores(arc_dataset, "claude-v1")
    with pytest.raises(ModelExistsError, match="already in the registry"):
        check_can_add(seeded, "claude-v1", replace=False)
    with pytest.raises(ModelExistsError, match="already in the registry"):
        add_scored_model(seeded, existing, scores)
    # A literal key is refused when the record is made, before any change is attempted.
    with pytest.raises(RegistryError, match="NAME of the environment variable"):
        ModelRecord(
            name="y",
            cost=ModelCost(per_query=0.1),
            endpoint=UNREACHABLE,
            api_key_env="sk-proj-Abc123def456ghi789jkl012mno345pqr678",
        )
    assert seeded.registry.pool_version() == version
    assert "x" not in seeded.snapshot.pool and "y" not in seeded.snapshot.pool
    check_can_add(seeded, "claude-v1", replace=True)  # replacing is allowed


def test_replace_swaps_the_model_in_whole(seeded, arc_dataset) -> None:
    before = seeded.snapshot
    scores = _recorded_scores(arc_dataset, HELD_OUT)
    record = ModelRecord(name="claude-v1", cost=ModelCost(per_query=0.5), tags=("new",))
    add_scored_model(seeded, record, scores, replace=True)
    after = seeded.snapshot
    assert after.pool.cost("claude-v1") == 0.5
    j = after.pool.index("claude-v1")
    expected = np.array([scores[p] for p in seeded.artifact.prompt_ids])
    np.testing.assert_array_equal(after.pool.scores[:, j], expected)
    assert after.fingerprint != before.fingerprint
    assert before.pool.cost("claude-v1") != 0.5  # the old snapshot is unchanged


# ------------------------------------------------------------------------ onboarding
def test_onboarding_refuses_before_asking_anything(seeded, tmp_path) -> None:
    version = seeded.registry.pool_version()
    no_endpoint = ModelRecord(name="ghost", cost=ModelCost(per_query=0.001))
    with pytest.raises(DataError, match="onboarding needs its endpoint"):
        onboard_model(seeded, no_endpoint)
    # An existing model is refused before the (unreachable) endpoint is asked anything.
    existing = ModelRecord(name="claude-v1", cost=ModelCost(per_query=0.1), endpoint=UNREACHABLE)
    with pytest.raises(ModelExistsError, match="already in the registry"):
        onboard_model(seeded, existing, retries=0, timeout=2, progress=False)
    assert seeded.registry.pool_version() == version


def test_an_unreachable_endpoint_leaves_the_registry_unchanged(seeded, tmp_path) -> None:
    version = seeded.registry.pool_version()
    record = ModelRecord(name="ghost", cost=ModelCost(per_query=0.001), endpoint=UNREACHABLE)
    with pytest.raises(DataError):
        onboard_model(
            seeded,
            record,
            cache_path=tmp_path / "answers.sqlite3",
            progress=False,
            retries=0,
            timeout=2,
        )
    assert seeded.registry.pool_version() == version
    assert not seeded.registry.has_model("ghost") and "ghost" not in seeded.snapshot.pool


# ------------------------------------------------------------------------ other changes
def test_changes_through_a_router_are_routed_on_return(seeded) -> None:
    set_enabled(seeded, "claude-v1", False)
    assert "claude-v1" not in seeded.snapshot.pool
    assert seeded.registry.has_model("claude-v1")
    record = set_enabled(seeded, "claude-v1", True)
    assert record.enabled and "claude-v1" in seeded.snapshot.pool
    record = set_cost(seeded, "claude-v1", ModelCost(per_query=0.25))
    assert record.cost.per_query == 0.25 and seeded.snapshot.pool.cost("claude-v1") == 0.25
    remove_model(seeded, "claude-v1")
    assert "claude-v1" not in seeded.snapshot.pool
    assert not seeded.registry.has_model("claude-v1")
    with pytest.raises(ModelNotFoundError):
        remove_model(seeded, "claude-v1")
    with pytest.raises(ModelNotFoundError):
        set_cost(seeded, "claude-v1", ModelCost(per_query=1.0))


def test_changes_through_a_bare_registry_reach_routers_at_their_next_refresh(seeded) -> None:
    registry = Registry(seeded.registry.path)
    set_enabled(registry, "claude-v1", False)
    set_cost(registry, REPRICED, ModelCost(per_query=0.125))
    remove_model(registry, "zero-one-ai/Yi-34B-Chat")
    assert "claude-v1" in seeded.snapshot.pool  # not refreshed yet
    assert seeded.refresh() is True
    pool = seeded.snapshot.pool
    assert "claude-v1" not in pool and "zero-one-ai/Yi-34B-Chat" not in pool
    assert pool.cost(REPRICED) == 0.125


def test_calibrate_stores_the_policy_unless_told_not_to(seeded) -> None:
    version = seeded.registry.pool_version()
    dry = calibrate(seeded, make_target(target_quality=0.75), store=False)
    assert seeded.registry.get_policy() is None and seeded.snapshot.policy is None
    assert seeded.registry.pool_version() == version
    stored = calibrate(seeded, make_target(target_quality=0.75))
    assert (stored.lam, stored.expected_cost, stored.expected_quality) == (
        dry.lam,
        dry.expected_cost,
        dry.expected_quality,
    )
    assert seeded.registry.get_policy() == stored == seeded.snapshot.policy
    assert stored.pool_fingerprint == seeded.snapshot.fingerprint


def test_seed_registry_adds_the_training_models_with_their_psi(arc_artifact, tmp_path) -> None:
    with Registry(tmp_path / "fresh.db") as registry:
        records = seed_registry(arc_artifact, registry)
        assert [r.name for r in records] == list(arc_artifact.training_models)
        assert all(r.tags == ("training",) for r in records)
        training = arc_artifact.training_pool()
        psi = registry.get_features(arc_artifact.artifact_id)
        for name in training.names:
            np.testing.assert_allclose(psi[name], training.features[training.index(name)])
            assert registry.get_model(name).cost.per_query == training.cost(name)
        assert registry.binding().artifact_id == arc_artifact.artifact_id
