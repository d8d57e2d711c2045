"""The router artifact: build, layout, exact round trip, and refusal of corrupt files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from uniroute._io import sha256_file
from uniroute.artifact import (
    ARTIFACT_SCHEMA_VERSION,
    Artifact,
    build_artifact,
    split_representative,
)
from uniroute.data.dataset import RoutingDataset
from uniroute.errors import DataError, StateError
from uniroute.routers import UniRouteKMeans, read_estimator_manifest


@pytest.fixture
def copy_of(arc_artifact: Artifact, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(arc_artifact.path, target)
    return target


def test_layout_and_manifest(
    arc_artifact: Artifact, arc_dataset: RoutingDataset, arc_holdout_models: list[str]
) -> None:
    root = arc_artifact.path
    for name in ("manifest.json", "representative_prompts.jsonl", "encoder", "router", "training"):
        assert (root / name).exists(), name
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["kind"] == "artifact"
    assert manifest["schema_version"] == ARTIFACT_SCHEMA_VERSION
    assert manifest["encoder"]["id"].startswith("tfidf-svd-32-")
    assert manifest["router"]["name"] == "uniroute-kmeans"
    assert manifest["n_clusters"] == 6
    assert manifest["created_at"].endswith("+00:00")
    expected_training = [m for m in arc_dataset.models if m not in arc_holdout_models]
    assert manifest["training"]["models"] == expected_training
    assert (
        manifest["n_representative_prompts"] + manifest["n_training_prompts"]
        == arc_dataset.n_prompts
    )
    # Every file except the manifest is listed with its real checksum.
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {"manifest.json"}
    for relative, checksum in manifest["files"].items():
        assert sha256_file(root / relative) == checksum
    assert arc_artifact.artifact_id == manifest["artifact_id"]


def test_representative_prompts_come_from_the_data_with_derived_references(
    arc_artifact: Artifact, arc_dataset: RoutingDataset
) -> None:
    prompts = arc_artifact.representative_prompts
    assert len(prompts) == round(0.2 * arc_dataset.n_prompts)
    by_id = {pid: i for i, pid in enumerate(arc_dataset.prompt_ids)}
    for prompt in prompts:
        i = by_id[prompt.prompt_id]
        assert prompt.text == arc_dataset.prompts[i]
        assert prompt.task == arc_dataset.tasks[i] == "arc-challenge"
    # ARC-Challenge has no reference column: the letters are derived from recorded answers.
    assert sum(p.reference in ("A", "B", "C", "D") for p in prompts) >= 0.9 * len(prompts)


def test_training_scores_are_the_training_models_scores_on_the_representative_prompts(
    arc_artifact: Artifact, arc_dataset: RoutingDataset, arc_holdout_models: list[str]
) -> None:
    rows = [list(arc_dataset.prompt_ids).index(pid) for pid in arc_artifact.prompt_ids]
    for j, model in enumerate(arc_artifact.training_models):
        expected = arc_dataset.scores[rows, arc_dataset.model_index(model)]
        np.testing.assert_array_equal(arc_artifact.training_scores[:, j], expected)
        assert (
            arc_artifact.training_costs[j]
            == arc_dataset.model_costs[arc_dataset.model_index(model)]
        )
    pool = arc_artifact.training_pool()
    assert pool.names == tuple(arc_artifact.training_models)
    assert not set(arc_holdout_models) & set(pool.names)
    np.testing.assert_array_equal(pool.scores, arc_artifact.training_scores)
    np.testing.assert_array_equal(pool.costs, arc_artifact.training_costs)
    for j in range(len(pool)):
        np.testing.assert_array_equal(
            pool.features[j], arc_artifact.router.model_features(pool.scores[:, j])
        )


def test_the_router_directory_holds_prompt_side_state_only(arc_artifact: Artifact) -> None:
    manifest = read_estimator_manifest(arc_artifact.path / "router")
    assert manifest["schema_version"] == 2 and manifest["router"] == "uniroute-kmeans"
    assert "pool_names" not in manifest
    assert not any(name.startswith("pool") for name in manifest["arrays"])
    assert isinstance(arc_artifact.router, UniRouteKMeans)


def test_load_reproduces_encoder_and_router_exactly(arc_artifact: Artifact) -> None:
    loaded = Artifact.load(arc_artifact.path)
    texts = [p.text for p in arc_artifact.representative_prompts[:20]] + ["an unseen prompt"]
    X = arc_artifact.encoder.encode(texts)
    np.testing.assert_array_equal(loaded.encoder.encode(texts), X)
    np.testing.assert_array_equal(
        loaded.router.predict_error(X, loaded.training_pool()),
        arc_artifact.router.predict_error(X, arc_artifact.training_pool()),
    )
    np.testing.assert_array_equal(
        loaded.training_pool().features, arc_artifact.training_pool().features
    )
    assert loaded.representative_prompts == arc_artifact.representative_prompts
    assert loaded.artifact_id == arc_artifact.artifact_id


def test_the_split_is_seeded_and_stratified_by_task() -> None:
    # 30 prompts of task a, 10 of task b: a quarter of each is 7.5 and 2.5. Task a rounds 7.5
    # up to 8 and carries -0.5 to task b, which gets 2.5 - 0.5 = 2: 10 prompts in all.
    tasks = ["a"] * 30 + ["b"] * 10
    train, val = split_representative(tasks, 0.25, seed=3)
    assert len(val) == 10 and len(train) == 30
    chosen = [tasks[i] for i in val]
    assert (chosen.count("a"), chosen.count("b")) == (8, 2)
    assert not set(train) & set(val)
    np.testing.assert_array_equal(split_representative(tasks, 0.25, seed=3)[1], val)
    assert not np.array_equal(split_representative(tasks, 0.25, seed=4)[1], val)
    with pytest.raises(DataError, match="leave no representative prompts"):
        split_representative(["a", "b"], 0.1, seed=0)


# ------------------------------------------------------------------------------- corruption
def test_truncated_file_is_reported_by_name(copy_of: Path) -> None:
    target = next((copy_of / "router").rglob("*.npy"))
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(StateError, match=f"{target.name}: checksum mismatch"):
        Artifact.load(copy_of)


@pytest.mark.parametrize("relative", ["representative_prompts.jsonl", "encoder/manifest.json"])
def test_a_flipped_byte_is_reported_by_name(copy_of: Path, relative: str) -> None:
    target = copy_of / relative
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(StateError, match=f"{target.name}: checksum mismatch"):
        Artifact.load(copy_of)


def test_an_edited_manifest_is_detected(copy_of: Path) -> None:
    path = copy_of / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["n_clusters"] = 7
    path.write_text(json.dumps(manifest))
    with pytest.raises(StateError, match="manifest.json: checksum mismatch"):
        Artifact.load(copy_of)


def test_a_truncated_manifest_is_a_clear_error(copy_of: Path) -> None:
    path = copy_of / "manifest.json"
    path.write_text(path.read_text()[:100])
    with pytest.raises(StateError, match="corrupt manifest"):
        Artifact.load(copy_of)


def test_another_schema_version_is_refused(copy_of: Path) -> None:
    path = copy_of / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["schema_version"] = ARTIFACT_SCHEMA_VERSION + 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(StateError, match=f"schema version {ARTIFACT_SCHEMA_VERSION + 1}"):
        Artifact.load(copy_of)


def test_a_missing_file_is_reported(copy_of: Path) -> None:
    (copy_of / "representative_prompts.jsonl").unlink()
    with pytest.raises(StateError, match="representative_prompts.jsonl: missing"):
        Artifact.load(copy_of)


def test_not_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no such artifact directory"):
        Artifact.load(tmp_path / "nothing-here")
    with pytest.raises(StateError, match="no manifest"):
        Artifact.load(tmp_path)


def test_a_failed_build_leaves_the_previous_artifact_in_place(
    arc_dataset: RoutingDataset, copy_of: Path
) -> None:
    before = Artifact.load(copy_of).artifact_id
    with pytest.raises(DataError, match="hold-out model\\(s\\) \\['no-such-model'\\]"):
        build_artifact(arc_dataset, copy_of, encoder="tfidf", holdout_models=["no-such-model"])
    with pytest.raises(DataError, match="at least 2 training models"):
        build_artifact(arc_dataset, copy_of, encoder="tfidf", holdout_models=arc_dataset.models[1:])
    assert Artifact.load(copy_of).artifact_id == before
    assert [p.name for p in copy_of.parent.iterdir()] == ["copy"]  # no staging debris


def test_a_lazy_encoder_is_checked_when_first_used(copy_of: Path) -> None:
    target = next(p for p in (copy_of / "encoder").iterdir() if p.suffix == ".json")
    target.write_text(target.read_text() + " ")
    with pytest.raises(StateError, match="checksum mismatch"):
        Artifact.load(copy_of)
    lazy = Artifact.load(copy_of, lazy_encoder=True)  # the router side is intact and usable
    assert lazy.router.n_representative == len(lazy.prompt_ids)
    with pytest.raises(StateError, match=f"{target.name}: checksum mismatch"):
        _ = lazy.encoder


def test_build_refuses_to_replace_a_directory_that_is_not_an_artifact(
    arc_dataset: RoutingDataset, tmp_path: Path
) -> None:
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "todo.txt").write_text("keep me")
    with pytest.raises(StateError, match="not empty and not a router artifact"):
        build_artifact(arc_dataset, precious, encoder="tfidf")
    assert (precious / "todo.txt").read_text() == "keep me"
