"""`uniroute models add|update|show|list` with capabilities and token limits."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from uniroute.artifact import Artifact
from uniroute.cli.main import main
from uniroute.data.dataset import RoutingDataset
from uniroute.deployment.pool_changes import seed_registry
from uniroute.registry import Registry

NEW = "claude-v2"


@pytest.fixture
def where(arc_artifact: Artifact, tmp_path: Path) -> list[str]:
    """--artifact and --registry of a registry seeded with the artifact's training models."""
    registry = tmp_path / "pool.db"
    with Registry(registry) as opened:
        seed_registry(arc_artifact, opened)
    return ["--artifact", str(arc_artifact.path), "--registry", str(registry)]


@pytest.fixture
def scores_file(arc_dataset: RoutingDataset, tmp_path: Path) -> Path:
    path = tmp_path / "scores.csv"
    column = arc_dataset.scores[:, arc_dataset.model_index(NEW)]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt_id", "score"])
        for prompt_id, score in zip(arc_dataset.prompt_ids, column, strict=True):
            writer.writerow([prompt_id, "" if score != score else score])
    return path


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _registry_only(where: list[str]) -> list[str]:
    return where[2:]


def _shown(capsys, where: list[str]) -> dict:
    code, out, err = _run(capsys, "models", "show", NEW, "--json", *_registry_only(where))
    assert code == 0, err
    return json.loads(out)


def test_add_with_capabilities_then_update_show_and_list(capsys, where, scores_file) -> None:
    code, out, err = _run(
        capsys, "models", "add", NEW, "--scores", str(scores_file), "--cost", "0.001",
        "--capabilities", "tools,json", "--context-window", "8192",
        "--max-output-tokens", "1024", *where,
    )  # fmt: skip
    assert code == 0, err
    assert "capabilities json, tools; context window 8,192 tokens; max output 1,024" in out
    shown = _shown(capsys, where)
    assert shown["capabilities"] == ["json", "tools"]
    assert shown["context_window"] == 8192 and shown["max_output_tokens"] == 1024

    code, out, _ = _run(capsys, "models", "show", NEW, *_registry_only(where))
    assert code == 0
    assert "capable of  json, tools" in out and "context     8,192 tokens" in out
    code, out, _ = _run(capsys, "models", "list", *_registry_only(where))
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith(NEW))
    assert "json,tools (8k)" in line
    assert "capabilities" in out.splitlines()[0]

    # An option left out keeps its value.
    code, out, err = _run(
        capsys, "models", "update", NEW, "--capabilities", "vision,tools", *_registry_only(where)
    )
    assert code == 0, err
    assert "capabilities tools, vision; context window 8,192 tokens" in out
    shown = _shown(capsys, where)
    assert shown["capabilities"] == ["tools", "vision"] and shown["context_window"] == 8192

    # "" declares none; "none" makes a limit unknown again.
    code, out, err = _run(
        capsys, "models", "update", NEW, "--capabilities", "", "--context-window", "none",
        "--max-output-tokens", "2048", *_registry_only(where),
    )  # fmt: skip
    assert code == 0, err
    shown = _shown(capsys, where)
    assert shown["capabilities"] == [] and shown["context_window"] is None
    assert shown["max_output_tokens"] == 2048
    code, out, _ = _run(capsys, "models", "show", NEW, *_registry_only(where))
    assert "capable of  - (none declared)" in out


def test_update_bumps_the_pool_version(capsys, where) -> None:
    registry = where[3]
    with Registry(registry) as opened:
        name = opened.list_models()[0].name
        before = opened.pool_version()
    code, _, err = _run(capsys, "models", "update", name, "--context-window", "4000",
                        "--registry", registry)  # fmt: skip
    assert code == 0, err
    with Registry(registry) as opened:
        assert opened.pool_version() > before
        assert opened.get_model(name).context_window == 4000


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--capabilities", "tools,telepathy"], "unknown capability 'telepathy'"),
        (["--context-window", "0"], "must be an integer >= 1"),
        (["--max-output-tokens", "many"], "must be an integer >= 1"),
    ],
)
def test_bad_values_are_refused_naming_the_option(capsys, where, argv, message) -> None:
    name = "mistralai/mistral-7b-chat"
    with pytest.raises(SystemExit) as stopped:
        main(["models", "update", name, *argv, *_registry_only(where)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert message in err and argv[0] in err


def test_add_refuses_an_unknown_capability(capsys, where, scores_file) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["models", "add", NEW, "--scores", str(scores_file), "--cost", "0.001",
              "--capabilities", "vison", *where])  # fmt: skip
    assert stopped.value.code == 2
    assert "unknown capability 'vison'" in capsys.readouterr().err
    with Registry(where[3]) as opened:
        assert not opened.has_model(NEW)


def test_update_needs_something_to_change_and_a_known_model(capsys, where) -> None:
    code, _, err = _run(capsys, "models", "update", "mistralai/mistral-7b-chat",
                        *_registry_only(where))  # fmt: skip
    assert code != 0 and "nothing to update" in err
    code, _, err = _run(capsys, "models", "update", "no-such-model", "--capabilities", "tools",
                        *_registry_only(where))  # fmt: skip
    assert code != 0 and "no-such-model" in err
    assert "Traceback" not in err


def test_onboarding_probes_unless_capabilities_are_given(capsys, where, arc_dataset, tmp_path):
    from uniroute.testing.harness import serve_in_thread
    from uniroute.testing.replay import create_replay_app

    model = "zero-one-ai/Yi-34B-Chat"
    with Registry(where[3]) as opened:
        opened.remove_model(model)
    app = create_replay_app(arc_dataset, model, capabilities=["tools", "json"])
    common = ["models", "add", model, "--cost", "0.001", "--no-progress", "--retries", "0",
              "--answer-cache", str(tmp_path / "answers.db"), *where]  # fmt: skip
    with serve_in_thread(app) as url:
        code, out, err = _run(capsys, *common, "--endpoint", f"{url}/v1")
        assert code == 0, err
        assert "capability probes: tools: yes" in out and "json: yes" in out
        assert "not probed (declare it): vision" in out
        assert "capabilities json, tools" in out
        code, out, err = _run(
            capsys, *common, "--endpoint", f"{url}/v1", "--replace", "--capabilities", ""
        )
        assert code == 0, err
        assert "capability probes" not in out and "capabilities none declared" in out
    with Registry(where[3]) as opened:
        assert opened.get_model(model).capabilities == ()
