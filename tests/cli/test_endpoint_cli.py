"""`uniroute models add --endpoint`: a bad or refused endpoint is one line, exit 2, nothing written;
a bad endpoint stored by an older version never stops the pool commands."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from uniroute.cli.main import main
from uniroute.deployment.pool_changes import seed_registry
from uniroute.registry import Registry
from uniroute.testing.harness import recorded_scores

NEW_MODEL = "claude-v2"


@pytest.fixture
def registry_path(arc_artifact, tmp_path: Path) -> Path:
    """A registry seeded with the shared artifact's training models."""
    path = tmp_path / "pool.db"
    with Registry(path) as registry:
        seed_registry(arc_artifact, registry)
    return path


@pytest.fixture
def scores_file(arc_artifact, arc_dataset, tmp_path: Path) -> Path:
    """NEW_MODEL's recorded scores on the representative prompts, as a scores CSV."""
    path = tmp_path / "scores.csv"
    scores = recorded_scores(arc_dataset, NEW_MODEL, arc_artifact.prompt_ids)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt_id", "score"])
        writer.writerows(scores.items())
    return path


def _state(path: Path) -> tuple[int, list[dict]]:
    with Registry(path) as registry:
        return registry.pool_version(), [r.to_dict() for r in registry.list_models()]


def _models(capsys, arc_artifact, registry_path: Path, *argv: str) -> tuple[int, str, str]:
    location = ["--artifact", str(arc_artifact.path), "--registry", str(registry_path)]
    code = main(["models", *argv, *location])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "endpoint, problem",
    [
        ("http://127.0.0.1:abc/v1", "port 'abc' is not a number"),
        ("http://127.0.0.1:99999/v1", "port 99999 is out of range 1-65535"),
        ("http://127.0.0.1:8000/v1#/admin", "it has a fragment"),
        ("http://2852039166/v1", "is neither a DNS name nor a dotted-decimal IPv4"),
    ],
)
@pytest.mark.parametrize("with_scores", [True, False], ids=["scores", "onboard"])
def test_a_bad_endpoint_is_one_line_exit_2_and_nothing_is_written(
    capsys, arc_artifact, registry_path, scores_file, endpoint, problem, with_scores
) -> None:
    before = _state(registry_path)
    scores = ["--scores", str(scores_file)] if with_scores else []
    code, out, err = _models(
        capsys, arc_artifact, registry_path, "add", NEW_MODEL, "--cost", "0.001",
        "--endpoint", endpoint, *scores,
    )  # fmt: skip
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("uniroute: error: endpoint "), err
    assert problem in err
    assert _state(registry_path) == before


@pytest.mark.parametrize(
    "endpoint, problem",
    [
        ("http://169.254.169.254/v1", "cloud metadata address"),
        ("http://[::ffff:169.254.169.254]/v1", "it carries 169.254.169.254"),
        ("http://metadata.google.internal/v1", "cloud metadata service"),
        ("http://[fe80::1]:8000/v1", "link-local address"),
    ],
)
@pytest.mark.parametrize("with_scores", [True, False], ids=["scores", "onboard"])
def test_a_metadata_endpoint_is_refused_before_anything_is_asked_or_written(
    capsys, arc_artifact, registry_path, scores_file, endpoint, problem, with_scores
) -> None:
    before = _state(registry_path)
    scores = ["--scores", str(scores_file)] if with_scores else []
    code, out, err = _models(
        capsys, arc_artifact, registry_path, "add", NEW_MODEL, "--cost", "0.001",
        "--endpoint", endpoint, "--no-progress", *scores,
    )  # fmt: skip
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"uniroute: error: model {NEW_MODEL!r}: ")
    assert problem in err
    assert _state(registry_path) == before


def test_a_bad_endpoint_stored_by_an_older_version_leaves_the_pool_usable(
    capsys, arc_artifact, registry_path, scores_file
) -> None:
    with Registry(registry_path) as registry:
        victim = registry.list_models()[0].name
    # What an older, laxer version could have stored.
    with sqlite3.connect(registry_path) as connection:
        connection.execute(
            "UPDATE models SET endpoint = 'http://127.0.0.1:abc/v1' WHERE name = ?", (victim,)
        )
    code, out, err = _models(capsys, arc_artifact, registry_path, "list", "--json")
    assert code == 0, err
    listed = {m["name"]: m for m in json.loads(out)["models"]}
    assert "port 'abc' is not a number" in listed[victim]["problem"]
    assert all(m["problem"] is None for name, m in listed.items() if name != victim)
    # Pool changes still work: the registry is read (and the router refreshed) as usual.
    code, out, err = _models(
        capsys, arc_artifact, registry_path, "add", NEW_MODEL, "--cost", "0.001",
        "--scores", str(scores_file), "--endpoint", "http://127.0.0.1:9/v1",
    )  # fmt: skip
    assert code == 0, err
    assert f"added {NEW_MODEL!r}" in out
    assert main(["models", "disable", victim, "--registry", str(registry_path)]) == 0
