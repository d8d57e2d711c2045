"""A model onboarded without evidence on a task is not taken for good at it (real RouterBench)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from uniroute.artifact import Artifact, build_artifact
from uniroute.data.dataset import RoutingDataset
from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_data_dir
from uniroute.deployment import Router
from uniroute.deployment.evidence import cluster_evidence, task_warnings
from uniroute.deployment.pool_changes import add_scored_model, seed_registry
from uniroute.embeddings import make_encoder
from uniroute.registry import ModelCost, ModelRecord, Registry

NEW_MODEL = "mistralai/mistral-7b-chat"
STRONG = "gpt-4-1106-preview"


@pytest.fixture(scope="module")
def routerbench() -> RoutingDataset:
    """RouterBench's ARC-Challenge and MBPP prompts with 11 LLMs' real scores."""
    path = default_data_dir() / "routerbench"
    if not path.is_dir():
        pytest.fail(f"shared RouterBench data not found at {path} (set UNIROUTE_DATA)")
    return load_dataset(path, "routerbench")


@pytest.fixture(scope="module")
def deployed(routerbench: RoutingDataset, tmp_path_factory) -> tuple[Router, Artifact]:
    """A TF-IDF, K=5 artifact without mistral-7b, its training LLMs in a registry."""
    out = tmp_path_factory.mktemp("partial") / "artifact"
    artifact = build_artifact(
        routerbench,
        out,
        encoder=make_encoder("tfidf", n_components=64),
        router="uniroute-kmeans",
        router_params={"n_clusters": 5},
        holdout_models=[NEW_MODEL],
        val_fraction=0.1,
        seed=0,
    )
    registry = Registry(out.parent / "pool.db")
    seed_registry(artifact, registry)
    return Router(artifact, registry), artifact


def scores_of(dataset: RoutingDataset, artifact: Artifact, task_part: str | None) -> dict:
    """The new model's real scores on the representative prompts (of one task family only)."""
    column = dataset.model_index(NEW_MODEL)
    rows = {str(pid): i for i, pid in enumerate(dataset.prompt_ids)}
    tasks = {p.prompt_id: p.task for p in artifact.representative_prompts}
    scores = {}
    for prompt_id in artifact.prompt_ids:
        if task_part is not None and task_part not in tasks[prompt_id].lower():
            continue
        value = float(dataset.scores[rows[prompt_id], column])
        if math.isfinite(value):
            scores[prompt_id] = value
    return scores


def coding_prompts(dataset: RoutingDataset, artifact: Artifact, n: int = 30) -> list[str]:
    """The first ``n`` MBPP prompts that are not representative prompts of the artifact."""
    representative = set(artifact.prompt_ids)
    prompts = [
        str(text)
        for pid, text, task in zip(dataset.prompt_ids, dataset.prompts, dataset.tasks, strict=True)
        if "mbpp" in str(task).lower() and str(pid) not in representative
    ][:n]
    assert len(prompts) == n
    return prompts


def test_no_evidence_on_coding_is_not_read_as_good_coding(routerbench, deployed) -> None:
    router, artifact = deployed
    full = scores_of(routerbench, artifact, None)
    arc_only = scores_of(routerbench, artifact, "arc")
    assert 0 < len(arc_only) < len(full)
    cost = ModelCost(per_query=float(routerbench.model_costs[routerbench.model_index(NEW_MODEL)]))
    add_scored_model(router, ModelRecord(name="full", cost=cost), full)
    added = add_scored_model(router, ModelRecord(name="arc-only", cost=cost), arc_only)
    assert any("no evidence on task" in w and "mbpp" in w.lower() for w in added.evidence_warnings)

    decisions = router.route(coding_prompts(routerbench, artifact), lam=0.0)
    arc_only_error = np.mean([d.estimated_errors["arc-only"] for d in decisions])
    full_error = np.mean([d.estimated_errors["full"] for d in decisions])
    assert abs(arc_only_error - full_error) <= 0.2
    assert sum(d.model == "arc-only" for d in decisions) <= 2
    # Its estimates there rest on no representative prompt, and say so.
    assert all(d.evidence_by_model["arc-only"] == 0 for d in decisions)
    assert all(d.evidence_by_model["arc-only"] < d.evidence_by_model[STRONG] for d in decisions)
    chosen = [d for d in decisions if d.model == "arc-only"]
    for decision in chosen:
        low, high = decision.error_interval
        assert high - low > 0.1

    rows = cluster_evidence(artifact, arc_only)
    assert any(row.n_scored == 0 and row.n_prompts > 0 for row in rows)
    assert task_warnings(artifact, full) == []


def test_the_old_rule_is_what_the_prior_fixes(routerbench, deployed, tmp_path: Path) -> None:
    """The same case with the own-mean rule: the ARC-only copy is taken for a strong coder."""
    _, artifact = deployed
    own = build_artifact(
        routerbench,
        tmp_path / "own-mean",
        encoder=make_encoder("tfidf", n_components=64),
        router="uniroute-kmeans",
        router_params={"n_clusters": 5, "psi_prior": "own-mean"},
        holdout_models=[NEW_MODEL],
        val_fraction=0.1,
        seed=0,
    )
    registry = Registry(tmp_path / "pool.db")
    seed_registry(own, registry)
    router = Router(own, registry)
    cost = ModelCost(per_query=float(routerbench.model_costs[routerbench.model_index(NEW_MODEL)]))
    add_scored_model(
        router, ModelRecord(name="arc-only", cost=cost), scores_of(routerbench, own, "arc")
    )
    decisions = router.route(coding_prompts(routerbench, own), lam=0.0)
    assert sum(d.model == "arc-only" for d in decisions) > 2
