"""The pool commands: build, models (add, list, show, remove, ...), route and calibrate."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from uniroute.cli.main import main
from uniroute.data.dataset import RoutingDataset
from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_data_dir
from uniroute.onboarding.probes import PROBED_CAPABILITIES
from uniroute.registry.store import Registry

ARC_TEST = default_data_dir() / "routerbench" / "arc_challenge_test.csv"
HOLDOUT = "claude-v2,gpt-4-1106-preview"


@pytest.fixture(scope="module")
def dataset() -> RoutingDataset:
    return load_dataset(ARC_TEST, "routerbench")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """An artifact and a seeded registry built through `uniroute build`; returns the output too."""
    root = tmp_path_factory.mktemp("cli")
    artifact, registry = root / "artifact", root / "pool.db"
    argv = [
        "build", "--data", str(ARC_TEST), "--format", "routerbench", "--out", str(artifact),
        "--encoder", "tfidf", "--encoder-params", '{"n_components": 32}',
        "--router-params", '{"n_clusters": 6}', "--holdout-models", HOLDOUT,
        "--val-fraction", "0.25", "--registry", str(registry), "--no-cache",
    ]  # fmt: skip
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert main(argv) == 0
    return artifact, registry, output.getvalue()


@pytest.fixture
def paths(built: tuple[Path, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A private copy of the registry, both locations given through the environment."""
    artifact, registry, _ = built
    private = tmp_path / "pool.db"
    shutil.copy(registry, private)
    monkeypatch.setenv("UNIROUTE_ARTIFACT", str(artifact))
    monkeypatch.setenv("UNIROUTE_REGISTRY", str(private))
    return artifact, private


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _write_scores(path: Path, dataset: RoutingDataset, model: str) -> Path:
    column = dataset.scores[:, dataset.model_index(model)]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt_id", "score"])
        for prompt_id, score in zip(dataset.prompt_ids, column, strict=True):
            writer.writerow([prompt_id, "" if score != score else score])
    return path


def _route_json(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    code, out, err = _run(capsys, "route", "Which of these is a mammal?", "--json", *argv)
    assert code == 0, err
    return json.loads(out)


def test_build_writes_an_artifact_and_seeds_the_registry(built, dataset) -> None:
    artifact, registry, output = built
    assert (artifact / "manifest.json").is_file()
    assert "router uniroute-kmeans, K=6, encoder tfidf-svd-32-" in output
    assert "registry" in output and "9 training models added" in output
    with Registry(registry) as opened:
        names = [r.name for r in opened.list_models()]
    assert names == sorted(m for m in dataset.models if m not in HOLDOUT.split(","))


def test_models_add_makes_a_model_routable_at_once(paths, dataset, capsys, tmp_path) -> None:
    before = _route_json(capsys, "--lambda", "10000")
    assert before["model"] == "mistralai/mistral-7b-chat"  # the cheapest training model
    assert "gpt-4-1106-preview" not in before["estimated_errors"]
    scores = _write_scores(tmp_path / "gpt4.csv", dataset, "gpt-4-1106-preview")
    code, out, err = _run(
        capsys, "models", "add", "gpt-4-1106-preview", "--cost", "0", "--scores", str(scores),
        "--tag", "held-out",
    )  # fmt: skip
    assert code == 0, err
    manifest = json.loads(Path(paths[0], "manifest.json").read_text())
    n_representative = manifest["n_representative_prompts"]
    assert n_representative == 111  # a quarter of the 445 prompts
    assert f"scores on {n_representative} of {n_representative} representative prompts" in out
    # Every other prompt id of the file with a (non-missing) score is reported as unknown.
    representative = {
        json.loads(line)["prompt_id"]
        for line in Path(paths[0], "representative_prompts.jsonl").read_text().splitlines()
    }
    column = dataset.scores[:, dataset.model_index("gpt-4-1106-preview")]
    unknown = sum(pid not in representative and s == s
                  for pid, s in zip(dataset.prompt_ids, column, strict=True))  # fmt: skip
    assert f"ignored {unknown} prompt id(s) that are not representative prompts" in out
    assert re.search(r"routable now: \d+\.\d\d s from start to routable", out)
    after = _route_json(capsys, "--lambda", "10000")
    # Free of charge, it pays no lambda * cost and takes the prompt.
    assert after["model"] == "gpt-4-1106-preview"
    assert after["costs"]["gpt-4-1106-preview"] == 0.0
    assert (
        after["cost"] == 0.0
        and after["estimated_error"] == after["estimated_errors"]["gpt-4-1106-preview"]
    )


def test_models_add_refuses_an_existing_model_unless_replacing(
    paths, dataset, capsys, tmp_path
) -> None:
    scores = _write_scores(tmp_path / "claude.csv", dataset, "claude-v2")
    with Registry(paths[1]) as registry:
        version = registry.pool_version()
    argv = ["models", "add", "claude-v1", "--cost", "0.5", "--scores", str(scores)]
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert f"model 'claude-v1' is already in {paths[1]}; use --replace or remove it" in err
    with Registry(paths[1]) as registry:
        assert registry.pool_version() == version
    code, out, err = _run(capsys, *argv, "--replace")
    assert code == 0, err
    assert "routable now" in out
    assert _route_json(capsys, "--lambda", "0")["costs"]["claude-v1"] == 0.5


def test_models_add_through_the_console_script(paths, dataset, capsys, tmp_path) -> None:
    artifact, registry = paths
    scores = tmp_path / "claude.jsonl"
    column = dataset.scores[:, dataset.model_index("claude-v2")]
    scores.write_text(
        "".join(
            json.dumps({"prompt_id": pid, "score": None if s != s else float(s)}) + "\n"
            for pid, s in zip(dataset.prompt_ids, column, strict=True)
        )
    )
    script = Path(sys.executable).with_name("uniroute")
    completed = subprocess.run(
        [str(script), "models", "add", "claude-v2", "--cost", "0.00002", "--scores", str(scores),
         "--artifact", str(artifact), "--registry", str(registry)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "routable now" in completed.stdout
    decision = _route_json(capsys, "--lambda", "0")
    assert decision["costs"]["claude-v2"] == 0.00002


def test_list_show_disable_enable_set_cost_remove(paths, capsys) -> None:
    code, out, _ = _run(capsys, "models", "list")
    assert code == 0
    assert "claude-v1" in out and "yes" in out
    code, out, _ = _run(capsys, "models", "show", "claude-v1", "--json")
    shown = json.loads(out)
    assert shown["n_scores"] > 100 and shown["enabled"] is True
    assert set(shown["accuracy_per_task"]) == {"arc-challenge"}
    assert 0.0 < shown["accuracy_per_task"]["arc-challenge"]["accuracy"] <= 1.0
    # The cluster x evidence table: every cluster's estimate, its std and what backs it.
    clusters = shown["clusters"]
    assert sum(row["n_prompts"] for row in clusters) == shown["representative_prompts"]
    assert all(0 <= row["n_scored"] <= row["n_prompts"] for row in clusters)
    assert all(row["std"] is not None and row["std"] > 0 for row in clusters)
    assert shown["evidence_warnings"] == []
    code, out, _ = _run(capsys, "models", "show", "claude-v1")
    assert code == 0 and "estimated error per cluster" in out and "mostly arc-challenge" in out

    code, out, _ = _run(capsys, "models", "disable", "claude-v1")
    assert code == 0 and "disabled 'claude-v1'; the pool has 8 enabled models" in out
    assert "claude-v1" not in _route_json(capsys)["estimated_errors"]
    code, out, _ = _run(capsys, "models", "enable", "claude-v1")
    assert code == 0 and "enabled 'claude-v1'; the pool has 9 enabled models" in out
    assert "claude-v1" in _route_json(capsys)["estimated_errors"]

    code, out, _ = _run(capsys, "models", "set-cost", "claude-v1", "--cost-per-1k-input", "0.5",
                        "--cost-per-1k-output", "1.5", "--expected-output-tokens", "4")  # fmt: skip
    assert code == 0 and "0.5/1k in + 1.5/1k out (500/1M in + 1500/1M out" in out
    # The artifact is given: the price is costed per query, and this one is far above the pool's
    # (as a price per 1M tokens given per 1k would be), which is said.
    expected = _expected_token_cost(paths[0], 0.5, 1.5, 4)
    code, out, err = _run(capsys, "models", "show", "claude-v1")
    assert f"per query   ~{expected:.6g} per query" in out
    code, out, err = _run(capsys, "models", "set-cost", "claude-v1", "--cost-per-1k-input",
                          "0.5", "--cost-per-1k-output", "1.5", "--expected-output-tokens",
                          "4")  # fmt: skip
    assert f"~{expected:.6g} per query" in out
    assert "warning: model 'claude-v1'" in err and "check the unit" in err
    # The same model at a realistic price, given per 1M tokens: stored per 1k, no warning.
    code, out, err = _run(capsys, "models", "set-cost", "claude-v1", "--cost-per-1m-input",
                          "0.5", "--cost-per-1m-output", "1.5", "--expected-output-tokens",
                          "4")  # fmt: skip
    assert code == 0 and "0.0005/1k in + 0.0015/1k out (0.5/1M in + 1.5/1M out" in out
    assert err == ""
    _run(capsys, "models", "set-cost", "claude-v1", "--cost-per-1k-input", "0.5",
         "--cost-per-1k-output", "1.5", "--expected-output-tokens", "4")  # fmt: skip
    listed = json.loads(_run(capsys, "models", "list", "--json")[1])
    record = next(m for m in listed["models"] if m["name"] == "claude-v1")
    assert record["cost_per_query"] is None and record["cost_per_1k_output"] == 1.5

    assert _route_json(capsys, "--lambda", "0")["costs"]["claude-v1"] == pytest.approx(
        _expected_token_cost(paths[0], 0.5, 1.5, 4)
    )

    code, out, _ = _run(capsys, "models", "remove", "claude-v1")
    assert code == 0 and "removed 'claude-v1'; the pool has 8 enabled models" in out
    assert "claude-v1" not in _route_json(capsys)["estimated_errors"]
    code, _, err = _run(capsys, "models", "show", "claude-v1")
    assert code == 2 and "no model 'claude-v1' in the registry" in err


def test_models_add_records_the_answer_column_and_show_counts_it(
    paths, dataset, capsys, tmp_path
) -> None:
    from uniroute.data.routerbench import responses_by_prompt

    model = "gpt-4-1106-preview"
    responses = responses_by_prompt(dataset)[model]
    column = dataset.scores[:, dataset.model_index(model)]
    path = tmp_path / "gpt4.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt_id", "score", "answer"])
        for prompt_id, score in zip(dataset.prompt_ids, column, strict=True):
            answer = responses.get(str(prompt_id)) or ""
            writer.writerow([prompt_id, "" if score != score else score, answer])
    code, out, err = _run(capsys, "models", "add", model, "--cost", "0.006", "--scores", str(path))
    assert code == 0, err
    with Registry(paths[1]) as registry:
        n_answers, n_keys = registry.answer_count(model)
        stored = registry.get_answers(model)
    n_rep = len(Path(paths[0], "representative_prompts.jsonl").read_text().splitlines())
    assert 0 < n_keys <= n_answers == len(stored) <= n_rep
    assert all(answer.raw == responses[p] for p, answer in stored.items())
    line = f"{n_answers} of {n_rep} representative prompts have a recorded answer ({n_keys} "
    assert line in out
    code, out, _ = _run(capsys, "models", "show", model)
    assert code == 0 and f"  answers     {line}" in out
    shown = json.loads(_run(capsys, "models", "show", model, "--json")[1])
    assert (shown["n_answers"], shown["n_answer_keys"]) == (n_answers, n_keys)
    # A training model seeded from data with recorded answers has their keys.
    shown = json.loads(_run(capsys, "models", "show", "claude-v1", "--json")[1])
    assert shown["n_answer_keys"] > 0.9 * shown["representative_prompts"]


def test_a_bad_answer_cell_is_one_line_naming_the_file_line_and_field(
    paths, capsys, tmp_path
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"prompt_id": "arc-challenge.test.1", "score": 1, "answer": "A"}\n'
        '{"prompt_id": "arc-challenge.test.2", "score": 0, "answer": {"letter": "B"}}\n'
    )
    with Registry(paths[1]) as registry:
        version = registry.pool_version()
    code, out, err = _run(capsys, "models", "add", "m", "--cost", "0.1", "--scores", str(path))
    assert code == 2 and out == ""
    problem = "answer must be text (or a number, or null), got dict"
    assert err == f"uniroute: error: {path}, line 2: {problem}\n"
    with Registry(paths[1]) as registry:
        assert registry.pool_version() == version and not registry.has_model("m")


def _expected_token_cost(artifact: Path, per_1k_in: float, per_1k_out: float, out_tokens: float):
    texts = [
        json.loads(line)["text"]
        for line in Path(artifact, "representative_prompts.jsonl").read_text().splitlines()
    ]
    mean_tokens = sum(len(t) for t in texts) / len(texts) / 4
    return mean_tokens / 1000 * per_1k_in + out_tokens / 1000 * per_1k_out


def test_remove_enable_disable_set_cost_need_no_artifact(paths, capsys, monkeypatch) -> None:
    monkeypatch.delenv("UNIROUTE_ARTIFACT")
    assert _run(capsys, "models", "disable", "claude-v1")[0] == 0
    assert _run(capsys, "models", "set-cost", "claude-v1", "--cost", "0.125")[0] == 0
    code, out, _ = _run(capsys, "models", "remove", "zero-one-ai/Yi-34B-Chat")
    assert code == 0 and "the pool has 7 enabled models" in out
    code, _, err = _run(capsys, "models", "enable", "no-such-model")
    assert code == 2 and "no model 'no-such-model' in the registry" in err
    with Registry(paths[1]) as registry:
        record = registry.get_model("claude-v1")
        assert not record.enabled and record.cost.per_query == 0.125
        assert not registry.has_model("zero-one-ai/Yi-34B-Chat")


def test_route_prints_the_decision_and_why(paths, capsys) -> None:
    code, out, err = _run(capsys, "route", "What do plants need to make food?", "--max-cost",
                          "0.0004")  # fmt: skip
    assert code == 0, err
    assert out.startswith("routed to: ")
    assert "budget = 0.0004 per query" in out
    assert re.search(r"cluster \d of 6, weight 1\.00", out)
    assert "over budget" in out  # claude-v1 and others cost more
    for model in ("claude-v1", "mistralai/mistral-7b-chat", "zero-one-ai/Yi-34B-Chat"):
        assert model in out
    chosen = out.splitlines()[0].removeprefix("routed to: ")
    assert re.search(rf"^\* {re.escape(chosen)} ", out, re.MULTILINE)
    code, out, err = _run(capsys, "route", "What do plants need to make food?")
    assert code == 0, err
    assert "lambda = 0 (uncalibrated)" in out
    assert "warning: no default policy is calibrated" in out
    code, out, err = _run(capsys, "route", "What do plants need?", "--lambda", "50")
    assert code == 0 and "lambda = 50 (explicit)" in out


def test_pool_commands_keep_the_help_instant() -> None:
    code = (
        "import sys\n"
        "from uniroute.cli.main import build_parser\n"
        "build_parser()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'sqlite3'))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_calibrate_stores_the_default_policy(paths, capsys) -> None:
    code, out, err = _run(capsys, "calibrate", "--target-cost", "0.0005")
    assert code == 0, err
    assert "target: expected cost per query <= 0.0005" in out
    expected = float(re.search(r"expected cost per query: (\S+)", out).group(1))
    assert expected <= 0.0005
    # What was promised and how: out-of-sample, over which models (none has an endpoint here).
    assert "(out-of-sample (5-fold cross-fitted), on all " in out
    assert re.search(r"solved over 9 enabled models: .*claude-v1", out)
    assert "left out, no endpoint" not in out
    assert "stored as the default policy" in out
    decision = _route_json(capsys)
    assert decision["policy"] == "default" and decision["warning"] is None
    with Registry(paths[1]) as registry:
        assert decision["lam"] == registry.get_policy().lam
    code, out, err = _run(capsys, "route", "Which of these is a mammal?")
    assert code == 0, err
    assert "(default policy: expected cost per query <= 0.0005)" in out

    code, out, err = _run(capsys, "calibrate", "--target-quality", "0.7", "--dry-run", "--json")
    assert code == 0, err
    assert json.loads(out)["stored"] is False
    with Registry(paths[1]) as registry:
        assert registry.get_policy().target.kind == "cost"  # a dry run stores nothing

    # Was: a share no lambda gives was silently replaced by the closest one. Now it is refused,
    # naming the achievable shares either side; one of those is then met.
    code, _, err = _run(capsys, "calibrate", "--target-share-of", "claude-v1", "0.25", "--json")
    assert code == 2 and "no λ gives 25% of traffic to claude-v1 (within ±5%)" in err
    near = re.search(r"achievable shares near it: ([\d.]+)% \(λ=", err)
    assert near, err
    share = float(near.group(1)) / 100
    code, out, err = _run(
        capsys, "calibrate", "--target-share-of", "claude-v1", str(share), "--json"
    )
    assert code == 0, err
    policy = json.loads(out)
    assert policy["target"] == {"kind": "share", "value": share, "model": "claude-v1"}
    assert policy["achieved"] == pytest.approx(share, abs=0.001)
    assert policy["out_of_sample"] is True and policy["n_folds"] == 5
    assert len(policy["models"]) == 9 and policy["left_out_no_endpoint"] == []
    code, _, err = _run(capsys, "calibrate", "--target-cost", "0.00000001")
    assert code == 2 and "below the cheapest possible expected cost" in err


def test_calibrate_stores_a_latency_weight_that_later_calibrations_keep(paths, capsys) -> None:
    code, out, err = _run(capsys, "calibrate", "--target-cost", "0.0005", "--latency-weight", "0.2")
    assert code == 0, err
    assert "latency weight = 0.2 per second" in out
    assert _route_json(capsys)["latency_weight"] == 0.2  # the default policy's mu
    code, _, err = _run(capsys, "calibrate", "--target-cost", "0.0004")
    assert code == 0, err
    with Registry(paths[1]) as registry:
        assert registry.get_policy().latency_weight == 0.2  # kept when not given
    assert _run(capsys, "calibrate", "--target-cost", "0.0004", "--latency-weight", "0")[0] == 0
    with Registry(paths[1]) as registry:
        assert registry.get_policy().latency_weight == 0.0
    with pytest.raises(SystemExit) as refused:  # a bad option value is argparse's refusal
        _run(capsys, "calibrate", "--target-cost", "0.0004", "--latency-weight", "-1")
    assert refused.value.code == 2 and "--latency-weight" in capsys.readouterr().err


def test_calibrate_solves_over_the_models_with_an_endpoint(paths, dataset, capsys, tmp_path):
    # An unseen model and a training model (replaced) get an endpoint; the 8 others have none.
    added = [("gpt-4-1106-preview", ["--cost", "0.006"]),
             ("mistralai/mistral-7b-chat", ["--cost", "0.0002", "--replace"])]  # fmt: skip
    for name, extra in added:
        scores = _write_scores(tmp_path / "scores.csv", dataset, name)
        code, _, err = _run(
            capsys, "models", "add", name, *extra, "--scores", str(scores),
            "--endpoint", "http://127.0.0.1:9/v1",
        )  # fmt: skip
        assert code == 0, err
    code, out, err = _run(capsys, "calibrate", "--target-quality", "0.5", "--dry-run")
    assert code == 0, err
    assert (
        "solved over 2 servable models (with an endpoint): "
        "gpt-4-1106-preview, mistralai/mistral-7b-chat" in out
    )
    left_out = re.search(r"left out, no endpoint: (.*)", out).group(1).split(", ")
    assert len(left_out) == 8 and "claude-v1" in left_out
    assert "mistralai/mistral-7b-chat" not in left_out
    code, out, err = _run(capsys, "calibrate", "--target-quality", "0.5", "--dry-run", "--json")
    policy = json.loads(out)
    assert policy["servable_only"] is True and sorted(policy["left_out_no_endpoint"]) == sorted(
        left_out
    )
    code, _, err = _run(capsys, "calibrate", "--target-share-of", "claude-v1", "0.1")
    assert code == 2 and "'claude-v1' has no endpoint" in err


@pytest.mark.parametrize(
    "content, message",
    [
        ("prompt_id,score\narc-challenge.test.1004,2\n", "bad.csv, line 2: score '2' is outside"),
        ("prompt_id,score\nnot-a-prompt,1\n", "bad.csv: none of its 1 prompt ids"),
        ("id,value\n1,1\n", "bad.csv: missing column"),
    ],
)
def test_bad_scores_files_are_clear_errors_and_change_nothing(
    paths, capsys, tmp_path, content, message
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    with Registry(paths[1]) as registry:
        version = registry.pool_version()
    code, _, err = _run(capsys, "models", "add", "newbie", "--cost", "1", "--scores", str(bad))
    assert code == 2
    assert err.startswith("uniroute: error: ") and message in err
    with Registry(paths[1]) as registry:
        assert registry.pool_version() == version and not registry.has_model("newbie")


def test_a_literal_key_is_refused_and_not_echoed(paths, dataset, capsys, tmp_path) -> None:
    secret = "sk-proj-Abc123def456ghi789jkl012mno345pqr678"
    scores = _write_scores(tmp_path / "s.csv", dataset, "claude-v2")
    code, out, err = _run(
        capsys, "models", "add", "claude-v2", "--cost", "1", "--scores", str(scores),
        "--endpoint", "http://127.0.0.1:9/v1", "--api-key-env", secret,
    )  # fmt: skip
    assert code == 2 and "NAME of the environment variable" in err
    assert secret not in out + err
    with Registry(paths[1]) as registry:
        assert not registry.has_model("claude-v2")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["models", "add", "m", "--scores", "x.csv"], "give --cost C, or the input and output"),
        (["models", "add", "m", "--cost", "1"], "give --scores FILE, or --endpoint URL"),
        (
            [
                "models",
                "add",
                "m",
                "--cost",
                "1",
                "--cost-per-1k-input",
                "1",
                "--cost-per-1k-output",
                "1",
                "--scores",
                "x.csv",
            ],
            "not both",
        ),
        (["models", "add", "m", "--cost-per-1k-input", "1", "--scores", "x.csv"], "needs both"),
        (
            [
                "models",
                "add",
                "m",
                "--cost-per-1k-input",
                "1",
                "--cost-per-1m-input",
                "1",
                "--cost-per-1m-output",
                "2",
                "--scores",
                "x.csv",
            ],
            "give the input price per 1k tokens or per 1M tokens, not both",
        ),  # fmt: skip
        (
            [
                "models",
                "add",
                "m",
                "--cost-per-1m-input",
                "-1",
                "--cost-per-1m-output",
                "2",
                "--scores",
                "x.csv",
            ],
            "cost per 1M input tokens",
        ),  # fmt: skip
    ],
)
def test_bad_price_options(paths, capsys, argv, message) -> None:
    code, _, err = _run(capsys, *argv)
    assert code == 2 and message in err


def test_missing_locations_are_clear_errors(capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("UNIROUTE_ARTIFACT", raising=False)
    monkeypatch.delenv("UNIROUTE_REGISTRY", raising=False)
    code, _, err = _run(capsys, "route", "hello")
    assert code == 2 and "pass --artifact DIR or set UNIROUTE_ARTIFACT" in err
    code, _, err = _run(capsys, "models", "list", "--registry", str(tmp_path / "typo.db"))
    assert code == 2 and "typo.db: no such registry" in err
    assert not (tmp_path / "typo.db").exists()


def test_unreachable_endpoint_leaves_the_registry_unchanged(paths, capsys, tmp_path) -> None:
    with Registry(paths[1]) as registry:
        version = registry.pool_version()
    code, _, err = _run(
        capsys, "models", "add", "ghost", "--cost", "0.001", "--endpoint", "http://127.0.0.1:9/v1",
        "--retries", "0", "--timeout", "2", "--no-progress",
        "--answer-cache", str(tmp_path / "answers.sqlite3"),
    )  # fmt: skip
    assert code == 2 and "uniroute: error:" in err
    with Registry(paths[1]) as registry:
        assert registry.pool_version() == version and not registry.has_model("ghost")


def test_models_add_by_querying_a_replayed_endpoint(paths, dataset, capsys, tmp_path) -> None:
    from uniroute.testing.replay import ReplayServerProcess

    with ReplayServerProcess(ARC_TEST, "gpt-4-1106-preview") as server:
        code, out, err = _run(
            capsys, "models", "add", "gpt-4-1106-preview", "--cost", "0.006",
            "--endpoint", server.v1_url, "--no-progress", "--concurrency", "16",
            "--answer-cache", str(tmp_path / "answers.sqlite3"),
        )  # fmt: skip
    assert code == 0, err
    assert "arc-challenge" in out and "accuracy" in out and "routable now" in out
    with Registry(paths[1]) as registry:
        record = registry.get_model("gpt-4-1106-preview")
        graded = registry.get_scores("gpt-4-1106-preview")
    assert record.endpoint == server.v1_url
    # Every answer the endpoint gave is recorded, with its letter where one can be read.
    with Registry(paths[1]) as registry:
        n_answers, n_keys = registry.answer_count(record.name)
    assert n_answers == len(graded) and n_keys > 0.9 * n_answers
    assert f"{n_answers} of " in out and f"have a recorded answer ({n_keys} with" in out
    # The graded answers agree with RouterBench's recorded scores on nearly every prompt.
    recorded = dict(zip(dataset.prompt_ids, dataset.scores[:, dataset.model_index(record.name)],
                        strict=True))  # fmt: skip
    agree = sum(graded[p] == recorded[p] for p in graded)
    assert len(graded) >= 100 and agree >= 0.95 * len(graded)


def test_models_add_stores_the_upstream_model_and_show_prints_it(
    paths, dataset, capsys, tmp_path
) -> None:
    scores = _write_scores(tmp_path / "gpt4.csv", dataset, "gpt-4-1106-preview")
    code, out, err = _run(
        capsys, "models", "add", "gpt4-prod", "--cost", "0.006", "--scores", str(scores),
        "--endpoint", "http://127.0.0.1:9/v1", "--upstream-model", "gpt-4-1106-preview",
    )  # fmt: skip
    assert code == 0, err
    assert "requests to http://127.0.0.1:9/v1 name the model 'gpt-4-1106-preview'" in out
    with Registry(paths[1]) as registry:
        assert registry.get_model("gpt4-prod").upstream_model == "gpt-4-1106-preview"
        assert registry.get_model("claude-v1").upstream_model is None
    code, out, _ = _run(capsys, "models", "show", "gpt4-prod")
    assert code == 0 and "  upstream    gpt-4-1106-preview\n" in out
    assert (
        json.loads(_run(capsys, "models", "show", "gpt4-prod", "--json")[1])["upstream_model"]
        == "gpt-4-1106-preview"
    )
    listed = json.loads(_run(capsys, "models", "list", "--json")[1])["models"]
    assert {m["name"]: m["upstream_model"] for m in listed}["gpt4-prod"] == "gpt-4-1106-preview"


def test_an_upstream_model_without_an_endpoint_is_refused(paths, dataset, capsys, tmp_path):
    scores = _write_scores(tmp_path / "gpt4.csv", dataset, "gpt-4-1106-preview")
    code, _, err = _run(
        capsys, "models", "add", "gpt4-prod", "--cost", "0.006", "--scores", str(scores),
        "--upstream-model", "gpt-4-1106-preview",
    )  # fmt: skip
    assert code == 2 and "give the endpoint too" in err
    with Registry(paths[1]) as registry:
        assert not registry.has_model("gpt4-prod")


@pytest.fixture(scope="module")
def arc_and_mbpp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """RouterBench ARC + MBPP test data (a folder of links) and an artifact and registry on it."""
    root = tmp_path_factory.mktemp("arc-mbpp")
    data = root / "data"
    data.mkdir()
    for name in ("arc_challenge_test.csv", "mbpp_test.csv"):
        (data / name).symlink_to(ARC_TEST.with_name(name))
    artifact, registry = root / "artifact", root / "pool.db"
    argv = [
        "build", "--data", str(data), "--format", "routerbench", "--out", str(artifact),
        "--encoder", "tfidf", "--encoder-params", '{"n_components": 32}',
        "--router-params", '{"n_clusters": 4}', "--holdout-models", "gpt-4-1106-preview",
        "--val-fraction", "0.1", "--registry", str(registry), "--no-cache",
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    return data, artifact, registry


def test_models_add_can_skip_tasks_that_cannot_be_graded(arc_and_mbpp, capsys, tmp_path) -> None:
    from uniroute.testing.replay import ReplayServerProcess

    data, artifact, registry = arc_and_mbpp
    prompts = [
        json.loads(line)
        for line in (artifact / "representative_prompts.jsonl").read_text().splitlines()
    ]
    mbpp = [p["prompt_id"] for p in prompts if p["task"] == "mbpp"]
    # RouterBench ships no unit tests, so no MBPP prompt can be graded; every ARC one can.
    assert mbpp and all(p["reference"] is None for p in prompts if p["task"] == "mbpp")
    assert all(p["reference"] for p in prompts if p["task"] != "mbpp")
    argv = [
        "models", "add", "gpt-4-1106-preview", "--cost", "0.006", "--no-progress",
        "--answer-cache", str(tmp_path / "answers.sqlite3"),
        "--artifact", str(artifact), "--registry", str(registry),
    ]  # fmt: skip
    with ReplayServerProcess(data, "gpt-4-1106-preview") as server:
        code, _, err = _run(capsys, *argv, "--endpoint", server.v1_url)
        assert code == 2 and "task 'mbpp': none of its" in err
        code, out, err = _run(
            capsys, *argv, "--endpoint", server.v1_url, "--skip-ungradeable-tasks"
        )
        asked = httpx.get(f"{server.base_url}/stats", timeout=5).json()["chat_completions"]
    assert code == 0, err
    left = len(prompts) - len(mbpp)
    assert (
        f"skipped task(s) that cannot be graded: mbpp ({len(mbpp)} prompts); "
        f"{left} of {len(prompts)} representative prompts left to grade"
    ) in out
    # The first, refused run asked nothing; this one each prompt and one probe per capability.
    assert asked == left + len(PROBED_CAPABILITIES)
    with Registry(registry) as opened:
        scores = opened.get_scores("gpt-4-1106-preview")
    # Skipped prompts stay missing, never 0.
    assert not set(mbpp) & set(scores)
    assert len(scores) == left


def test_describe_skipped_separates_whole_tasks_from_single_prompts() -> None:
    from uniroute.cli.models_cmd import describe_skipped
    from uniroute.data.representative import RepresentativePrompt

    prompts = [RepresentativePrompt(f"{task}{i}", "text", task) for task, n in
               (("code", 2), ("quiz", 3)) for i in range(n)]  # fmt: skip
    skipped = {"code0": "no tests", "code1": "no tests", "quiz2": "no reference"}
    assert describe_skipped(prompts, skipped) == (
        "skipped task(s) that cannot be graded: code (2 prompts); skipped 1 more prompt(s) "
        "without a usable reference; 2 of 5 representative prompts left to grade"
    )
    assert describe_skipped(prompts, {"quiz0": "no reference"}) == (
        "skipped 1 more prompt(s) without a usable reference; 4 of 5 representative prompts "
        "left to grade"
    )
