"""A PostgreSQL registry through the command line and the gateway: ``--registry URL`` and
``$UNIROUTE_REGISTRY`` (the option wins), the password never shown, ``uniroute serve`` on it."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import httpx
import pytest

from uniroute.cli.main import main
from uniroute.registry import ModelCost, ModelRecord, Registry
from uniroute.testing.process import GatewayProcess

PASSWORD = "s3cret-registry-pw"


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _scores_file(path: Path, dataset, model: str) -> Path:
    column = dataset.scores[:, dataset.model_index(model)]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt_id", "score"])
        for prompt_id, score in zip(dataset.prompt_ids, column, strict=True):
            writer.writerow([prompt_id, "" if score != score else score])
    return path


def test_the_pool_commands_work_on_a_postgres_url_from_the_option_or_the_environment(
    postgres_cluster, arc_artifact, arc_dataset, tmp_path: Path, capsys, monkeypatch
) -> None:
    url = postgres_cluster.create_database()
    secret_url = url.replace("postgres@", f"postgres:{PASSWORD}@")
    monkeypatch.setenv("UNIROUTE_ARTIFACT", str(arc_artifact.path))
    monkeypatch.setenv("UNIROUTE_REGISTRY", secret_url)
    scores = _scores_file(tmp_path / "claude.csv", arc_dataset, "claude-v2")
    code, out, err = _run(
        capsys, "models", "add", "claude-v2", "--cost", "0.01", "--scores", str(scores)
    )
    assert code == 0, err
    code, out2, err = _run(
        capsys, "models", "add", "cheap", "--cost", "0.0001", "--scores", str(scores),
        "--registry", secret_url,
    )  # fmt: skip
    assert code == 0, err
    code, listed, err = _run(capsys, "models", "list", "--json")
    assert code == 0, err
    assert sorted(m["name"] for m in json.loads(listed)["models"]) == ["cheap", "claude-v2"]
    code, routed, err = _run(capsys, "route", "Which of these is a mammal?", "--json")
    assert code == 0, err
    assert json.loads(routed)["model"] in ("cheap", "claude-v2")
    code, _, err = _run(capsys, "models", "disable", "cheap")
    assert code == 0, err
    with Registry(url) as registry:
        assert [r.name for r in registry.list_models(enabled_only=True)] == ["claude-v2"]
    assert all(PASSWORD not in text for text in (out, out2, listed, routed, err))
    # --registry wins over the environment: this file does not exist, so the command refuses.
    code, _, err = _run(capsys, "models", "list", "--registry", str(tmp_path / "none.db"))
    assert code == 2 and "none.db: no such registry" in err


def test_an_unreachable_postgres_registry_is_one_line_without_the_password(
    capsys, monkeypatch
) -> None:
    monkeypatch.delenv("UNIROUTE_REGISTRY", raising=False)
    url = f"postgresql://someone:{PASSWORD}@127.0.0.1:1/pool"
    code, out, err = _run(capsys, "models", "list", "--registry", url)
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith(
        "uniroute: error: postgresql://someone@127.0.0.1:1"
    )
    assert "cannot connect" in err and PASSWORD not in err


def test_the_gateway_serves_a_postgres_registry_and_sees_another_process_add_a_model(
    postgres_cluster, arc_artifact, arc_dataset
) -> None:
    url = postgres_cluster.create_database()
    prompt_ids = list(arc_artifact.prompt_ids)
    column = arc_dataset.scores[:, arc_dataset.model_index("claude-v2")]
    by_id = dict(zip(arc_dataset.prompt_ids, column, strict=True))
    scores = {p: float(by_id[p]) for p in prompt_ids if by_id[p] == by_id[p]}
    with Registry(url) as registry:
        registry.bind(arc_artifact.artifact_id, prompt_ids)
        registry.add_model(
            ModelRecord(
                name="served", cost=ModelCost(per_query=0.01), endpoint="http://127.0.0.1:9/v1"
            ),
            scores,
        )
        version = registry.pool_version()
    with GatewayProcess(arc_artifact.path, url) as gateway:
        ready = httpx.get(f"{gateway.base_url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["registry_readable"] and ready.json()["pool_version"] == version
        with Registry(url) as registry:  # a change by another process
            registry.add_model(
                ModelRecord(
                    name="second", cost=ModelCost(per_query=0.02), endpoint="http://127.0.0.1:9/v1"
                ),
                scores,
            )
        deadline = time.monotonic() + 15
        seen = version
        while time.monotonic() < deadline and seen == version:
            seen = httpx.get(f"{gateway.base_url}/readyz", timeout=10).json()["pool_version"]
            time.sleep(0.1)
        assert seen == version + 1
        models = httpx.get(f"{gateway.base_url}/v1/models", timeout=10)
        assert {"served", "second"} <= {m["id"] for m in models.json()["data"]}, models.text
