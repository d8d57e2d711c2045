"""Router.add_record: a complete registry record, its scores and Psi stored in one transaction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uniroute.deployment.router import Router
from uniroute.errors import DataError
from uniroute.registry.costs import ModelCost
from uniroute.registry.store import ModelRecord, Registry

HELD_OUT = "gpt-4-1106-preview"


@pytest.fixture
def router(arc_artifact, tmp_path) -> Router:
    """A Router over the shared ARC artifact and an empty registry of its own."""
    return Router.load(arc_artifact, Registry(tmp_path / "pool.db"))


def _recorded_scores(dataset, model: str) -> dict[str, float]:
    column = dataset.scores[:, dataset.model_index(model)]
    return {str(p): float(s) for p, s in zip(dataset.prompt_ids, column, strict=True)}


def test_the_record_scores_and_psi_are_stored_as_router_add_model_stores_them(
    router, arc_dataset
) -> None:
    scores = _recorded_scores(arc_dataset, HELD_OUT)
    endpoint = "http://127.0.0.1:9/v1"
    record = ModelRecord(
        name="gpt4-prod", cost=ModelCost(per_query=0.006), endpoint=endpoint,
        upstream_model=HELD_OUT, tags=("held-out",),
    )  # fmt: skip
    added = router.add_record(record, scores, source="recorded scores")
    reference = router.add_model(HELD_OUT, scores, 0.006, endpoint=endpoint, tags=["held-out"])

    assert added.record.upstream_model == HELD_OUT and added.record.tags == ("held-out",)
    assert added.record.revision == router.registry.pool_version() - 1
    assert "gpt4-prod" in router.pool_models  # routable on return
    registry, artifact_id = router.registry, router.artifact.artifact_id
    assert registry.get_model("gpt4-prod").upstream_model == HELD_OUT
    # The same scores and Psi as the Router's own add_model stores for the same input.
    assert registry.get_scores("gpt4-prod") == registry.get_scores(HELD_OUT)
    psi = registry.get_features(artifact_id)
    np.testing.assert_array_equal(psi["gpt4-prod"], psi[HELD_OUT])
    assert (added.n_matched, added.n_representative, added.unknown_ids) == (
        reference.n_matched,
        reference.n_representative,
        reference.unknown_ids,
    )
    # Only representative prompts are stored, and missing scores are left out, never 0.
    representative = set(router.artifact.prompt_ids)
    stored = registry.get_scores("gpt4-prod")
    assert set(stored) <= representative
    assert set(stored) == {p for p in representative if not math.isnan(scores[p])}
    assert len(added.unknown_ids) == len(scores) - len(representative)


def test_scores_that_are_all_missing_are_refused_and_nothing_is_written(router) -> None:
    version = router.registry.pool_version()
    nan_scores = {prompt_id: float("nan") for prompt_id in router.artifact.prompt_ids}
    record = ModelRecord(name="blank", cost=ModelCost(per_query=0.001))
    with pytest.raises(DataError, match="blank scores: every matched score is missing"):
        router.add_record(record, nan_scores, source="blank scores")
    with pytest.raises(DataError, match="other.csv: none of its 1 prompt ids"):
        router.add_record(record, {"not-a-prompt": 1.0}, source="other.csv")
    assert router.registry.pool_version() == version
    assert not router.registry.has_model("blank")
