"""The SQLite model registry: CRUD, field checks, migrations, WAL concurrency, kill safety."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from uniroute._io import StateError
from uniroute.data.dataset import DataError
from uniroute.pool.calibration import Policy, Target
from uniroute.pool.costs import ModelCost
from uniroute.pool.registry import (
    MIGRATIONS,
    REGISTRY_SCHEMA_VERSION,
    ModelRecord,
    NewModel,
    Registry,
    RegistryError,
    align_scores,
    looks_like_secret,
    read_scores_file,
)

PROMPTS = [f"p{i}" for i in range(5)]


def _record(name: str, cost: float = 1.0, **fields: object) -> ModelRecord:
    return ModelRecord(name=name, cost=ModelCost(per_query=cost), **fields)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    with Registry(tmp_path / "pool.db") as opened:
        yield opened


# ------------------------------------------------------------------------------------- CRUD
def test_add_get_and_list_round_trip(registry: Registry) -> None:
    scores = {"p0": 1.0, "p1": 0.0, "p2": 0.5, "p3": float("nan")}
    psi = np.array([0.25, 0.5, 0.125])
    stored = registry.add_model(
        _record(
            "alpha",
            0.002,
            endpoint="http://127.0.0.1:9/v1/",
            api_key_env="ALPHA_KEY",
            tags=("open", "7b"),
        ),
        scores,
        {"artifact-1": psi},
    )
    assert stored.revision == registry.pool_version() == 1
    record = registry.get_model("alpha")
    assert record.cost == ModelCost(per_query=0.002)
    assert record.endpoint == "http://127.0.0.1:9/v1"  # trailing slash normalised away
    assert record.api_key_env == "ALPHA_KEY"
    assert record.tags == ("open", "7b")
    assert record.enabled
    # The NaN score is missing: not stored, and it reads back as NaN, never 0.
    assert registry.get_scores("alpha") == {"p0": 1.0, "p1": 0.0, "p2": 0.5}
    matrix = registry.scores_matrix(["alpha"], PROMPTS)
    np.testing.assert_array_equal(matrix[:, 0], [1.0, 0.0, 0.5, np.nan, np.nan])
    np.testing.assert_array_equal(registry.get_features("artifact-1")["alpha"], psi)
    assert registry.get_features("artifact-2") == {}
    assert [r.name for r in registry.list_models()] == ["alpha"]


def test_every_change_bumps_pool_version_and_content_changes_bump_revision(
    registry: Registry,
) -> None:
    registry.add_model(_record("a"), {"p0": 1.0})
    registry.add_model(_record("b"), {"p0": 0.0})
    assert registry.pool_version() == 2
    registry.set_enabled("a", False)
    assert registry.pool_version() == 3
    assert registry.get_model("a").revision == 1  # enabling is not a content change
    assert [r.name for r in registry.list_models(enabled_only=True)] == ["b"]
    registry.set_cost("b", ModelCost(per_1k_input=0.5, per_1k_output=1.5))
    assert registry.pool_version() == 4
    assert registry.get_model("b").revision == 4
    assert registry.get_model("b").cost.per_1k_output == 1.5
    registry.remove_model("a")
    assert registry.pool_version() == 5
    assert [r.name for r in registry.list_models()] == ["b"]


def test_remove_deletes_scores_and_features(registry: Registry) -> None:
    registry.add_model(_record("a"), {"p0": 1.0, "p1": 1.0}, {"art": np.ones(2)})
    registry.remove_model("a")
    assert registry.score_counts() == {}
    assert registry.get_features("art") == {}


def test_duplicate_and_unknown_models_are_clear_errors(registry: Registry) -> None:
    registry.add_model(_record("a"), {"p0": 1.0})
    with pytest.raises(RegistryError, match="'a' is already in the registry"):
        registry.add_model(_record("a"), {"p0": 0.0})
    replaced = registry.add_model(_record("a", 3.0), {"p1": 0.0}, replace=True)
    assert registry.get_scores("a") == {"p1": 0.0}
    assert replaced.cost.per_query == 3.0
    for call in (
        lambda: registry.get_model("zzz"),
        lambda: registry.remove_model("zzz"),
        lambda: registry.set_enabled("zzz", True),
        lambda: registry.set_cost("zzz", ModelCost(per_query=1.0)),
        lambda: registry.get_scores("zzz"),
    ):
        with pytest.raises(RegistryError, match="no model 'zzz'.*models: a"):
            call()


def test_add_models_is_all_or_nothing(registry: Registry) -> None:
    good = NewModel(_record("good"), {"p0": 1.0})
    bad_psi = NewModel(_record("bad"), {"p0": 1.0}, {"art": np.array([np.nan])})
    with pytest.raises(RegistryError, match="Psi must be"):
        registry.add_models([good, bad_psi])
    duplicate_in_db = NewModel(_record("good"), {"p0": 0.0})
    registry.add_model(_record("existing"), {"p0": 1.0})
    with pytest.raises(RegistryError, match="already in the registry"):
        registry.add_models([good, NewModel(_record("existing"), {"p0": 1.0})])
    assert [r.name for r in registry.list_models()] == ["existing"]
    assert duplicate_in_db.record.name == "good"


@pytest.mark.parametrize(
    "scores, message",
    [
        ({"p0": 1.5}, "outside \\[0, 1\\]"),
        ({"p0": "high"}, "not a number"),
        ({"p0": float("nan")}, "no score on any"),
        ({}, "no score on any"),
    ],
)
def test_bad_scores_are_rejected(registry: Registry, scores: dict, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        registry.add_model(_record("m"), scores)
    assert registry.list_models() == []


def test_policy_round_trip(registry: Registry) -> None:
    assert registry.get_policy() is None
    policy = Policy(0.5, 0.01, 0.8, Target("share", 0.25, model="m"), "fp", 0.24, 100, "t")
    registry.set_policy(policy)
    assert registry.get_policy() == policy
    version = registry.pool_version()
    registry.set_policy(policy, notify=False)
    assert registry.pool_version() == version
    registry.clear_policy()
    assert registry.get_policy() is None


def test_pool_fingerprint_tracks_enabled_models_and_revisions(registry: Registry) -> None:
    registry.add_model(_record("a"), {"p0": 1.0})
    registry.add_model(_record("b"), {"p0": 1.0})
    first = registry.pool_fingerprint("art")
    registry.set_enabled("b", False)
    assert registry.pool_fingerprint("art") != first
    registry.set_enabled("b", True)
    assert registry.pool_fingerprint("art") == first
    assert registry.pool_fingerprint("other-artifact") != first
    registry.set_cost("a", ModelCost(per_query=2.0))
    assert registry.pool_fingerprint("art") != first


def test_binding_refuses_other_representative_prompts(registry: Registry) -> None:
    assert registry.binding() is None
    registry.bind("art-1", PROMPTS)
    registry.add_model(_record("a"), {"p0": 1.0})
    # Same prompts, rebuilt artifact: allowed.
    assert registry.bind("art-2", list(reversed(PROMPTS))).artifact_id == "art-2"
    with pytest.raises(StateError, match="use a new registry file"):
        registry.bind("art-3", ["q0", "q1"])


# ------------------------------------------------------------------------------- field checks
@pytest.mark.parametrize(
    "value",
    [
        "sk-proj-Abc123def456ghi789jkl012mno345pqr678",
        "sk_live_51HxYzAbCdEfGhIjKlMnOpQr",
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        "AKIAIOSFODNN7EXAMPLE",
        "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345",
        "xJ8k2LmN4pQ7rS9tU1vW3yZ5aB6cD0eF",
        "key with spaces",
    ],
)
def test_api_key_env_rejects_values_that_look_like_keys(registry: Registry, value: str) -> None:
    assert looks_like_secret(value)
    with pytest.raises(RegistryError, match="NAME of the environment variable") as caught:
        _record("m", api_key_env=value)
    # The rejected value is never echoed back (it may be a real key).
    assert value not in str(caught.value)
    assert registry.list_models() == []


@pytest.mark.parametrize("value", ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "my_gateway_key", "K2"])
def test_api_key_env_accepts_variable_names(value: str) -> None:
    assert not looks_like_secret(value)
    assert _record("m", api_key_env=value).api_key_env == value


@pytest.mark.parametrize(
    "endpoint, message",
    [
        ("ftp://host/v1", "http\\(s\\) base URL"),
        ("localhost:8000", "http\\(s\\) base URL"),
        ("https://user:pw@host/v1", "must not embed credentials"),
    ],
)
def test_bad_endpoints_are_rejected(endpoint: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        _record("m", endpoint=endpoint)


@pytest.mark.parametrize("name", ["", " padded", "tab\tname"])
def test_bad_model_names_are_rejected(name: str) -> None:
    with pytest.raises(RegistryError, match="model name"):
        _record(name)


def test_no_key_value_ever_reaches_the_file(tmp_path: Path) -> None:
    secret = "sk-proj-Abc123def456ghi789jkl012mno345pqr678"
    path = tmp_path / "pool.db"
    with Registry(path) as registry:
        with pytest.raises(RegistryError):
            registry.add_model(_record("m", api_key_env=secret), {"p0": 1.0})
        registry.add_model(_record("m", api_key_env="OPENAI_API_KEY"), {"p0": 1.0})
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert secret.encode() not in raw
    assert b"OPENAI_API_KEY" in raw


# --------------------------------------------------------------------------------- migrations
def _add_notes_column(connection: sqlite3.Connection) -> None:
    """A stand-in version-2 migration: a new column with a default, and a derived value."""
    connection.execute("ALTER TABLE models ADD COLUMN notes TEXT NOT NULL DEFAULT ''")
    connection.execute("UPDATE models SET notes = 'migrated:' || name")


def test_new_file_is_at_the_current_schema_version(tmp_path: Path) -> None:
    with Registry(tmp_path / "pool.db") as registry:
        assert registry.schema_version == REGISTRY_SCHEMA_VERSION == len(MIGRATIONS)
        mode = registry._connection.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    with sqlite3.connect(tmp_path / "pool.db") as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == REGISTRY_SCHEMA_VERSION


def test_a_v1_file_opens_with_v2_code_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    with Registry(path) as v1:
        v1.add_model(_record("a", 0.5), {"p0": 1.0, "p1": 0.0}, {"art": np.array([0.5])})
        version_before = v1.pool_version()
    with Registry(path, migrations=(*MIGRATIONS, _add_notes_column)) as v2:
        assert v2.schema_version == 2
        assert v2.get_model("a").cost.per_query == 0.5
        assert v2.get_scores("a") == {"p0": 1.0, "p1": 0.0}
        assert v2.pool_version() == version_before
        notes = v2._connection.execute("SELECT notes FROM models WHERE name = 'a'").fetchone()
        assert notes == ("migrated:a",)
        v2.add_model(_record("b"), {"p0": 1.0})  # the v1 code paths still work on v2
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 2


def test_a_newer_file_is_refused_by_older_code(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    Registry(path, migrations=(*MIGRATIONS, _add_notes_column)).close()
    with pytest.raises(StateError, match="schema version 2 is newer than this uniroute reads"):
        Registry(path)


def test_a_failing_migration_leaves_the_file_at_the_old_version(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    with Registry(path) as v1:
        v1.add_model(_record("a"), {"p0": 1.0})

    def broken(connection: sqlite3.Connection) -> None:
        connection.execute("ALTER TABLE models ADD COLUMN half_done TEXT")
        raise RuntimeError("migration bug")

    with pytest.raises(RuntimeError, match="migration bug"):
        Registry(path, migrations=(*MIGRATIONS, broken))
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 1
        columns = [row[1] for row in raw.execute("PRAGMA table_info(models)")]
    assert "half_done" not in columns
    with Registry(path) as again:
        assert [r.name for r in again.list_models()] == ["a"]


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="not a readable registry database"):
        Registry(path)


# ---------------------------------------------------------------------- concurrency and kills
N_PROMPTS = 1000

WRITER = textwrap.dedent(
    """
    import sys
    import time
    import numpy as np
    from uniroute.pool.costs import ModelCost
    from uniroute.pool.registry import ModelRecord, Registry

    path = sys.argv[1]
    start, count, n_prompts = (int(value) for value in sys.argv[2:5])
    pause = float(sys.argv[5])
    rng = np.random.default_rng(start)
    with Registry(path) as registry:
        print("ready", flush=True)
        for i in range(start, start + count):
            scores = {f"p{k}": float(v) for k, v in enumerate(rng.random(n_prompts))}
            registry.add_model(
                ModelRecord(name=f"m{i:05d}", cost=ModelCost(per_query=0.001 * (i + 1))),
                scores,
                {"art": rng.random(50)},
            )
            print(i, flush=True)
            time.sleep(pause)
    """
)


def _start_writer(path: Path, start: int, count: int, pause: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WRITER,
            str(path),
            str(start),
            str(count),
            str(N_PROMPTS),
            str(pause),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout.readline().strip() == "ready", process.stderr.read()
    return process


def _assert_every_model_complete(registry: Registry) -> list[str]:
    names = [r.name for r in registry.list_models()]
    counts = registry.score_counts()
    features = registry.get_features("art")
    for name in names:
        assert counts.get(name) == N_PROMPTS, f"{name} has {counts.get(name)} scores"
        assert features[name].shape == (50,), f"{name} has no complete Psi"
    assert set(counts) == set(features) == set(names)  # no orphan rows either
    return names


def test_readers_see_consistent_snapshots_while_a_writer_writes(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    Registry(path).close()
    # Short pauses between models keep the writer busy for a while even on a fast machine.
    writer = _start_writer(path, 0, 30, pause=0.01)
    seen_counts = []
    try:
        with Registry(path, timeout=10.0) as reader:
            deadline = time.monotonic() + 30
            while writer.poll() is None and time.monotonic() < deadline:
                with reader._read() as connection:
                    names = [r[0] for r in connection.execute("SELECT name FROM models")]
                    counts = dict(
                        connection.execute("SELECT model, COUNT(*) FROM scores GROUP BY model")
                    )
                assert all(counts[name] == N_PROMPTS for name in names)
                seen_counts.append(len(names))
                reader.pool_version()
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0, writer.stderr.read()
    # The reader ran while the writer was busy, and saw the pool grow.
    assert len(set(seen_counts)) > 1
    with Registry(path) as registry:
        assert len(_assert_every_model_complete(registry)) == 30
        assert registry.pool_version() == 30


def test_a_writer_killed_mid_write_leaves_only_complete_models(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    Registry(path).close()
    writer = _start_writer(path, 0, 100_000)
    for _ in range(8):
        committed = int(writer.stdout.readline())
    # Nearly all of the writer's time is spent inside a transaction; kill it there, unannounced.
    time.sleep(0.013)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=10)
    assert writer.returncode == -signal.SIGKILL
    with Registry(path) as registry:
        integrity = registry._connection.execute("PRAGMA integrity_check").fetchone()[0]
        assert integrity == "ok"
        names = _assert_every_model_complete(registry)
        assert f"m{committed:05d}" in names  # nothing acknowledged was lost
        assert registry.pool_version() == len(names)
        registry.add_model(_record("after-the-kill"), {"p0": 1.0})  # and it is writable again


# ------------------------------------------------------------------------------- score files
def test_read_scores_from_csv_and_jsonl(tmp_path: Path) -> None:
    csv_path = tmp_path / "s.csv"
    csv_path.write_text("prompt_id,score,extra\np0,1,x\np1,0.25,y\np2,,z\n")
    assert read_scores_file(csv_path) == {"p0": 1.0, "p1": 0.25}
    jsonl_path = tmp_path / "s.jsonl"
    jsonl_path.write_text(
        "\n".join(
            json.dumps(r)
            for r in [{"prompt_id": "p0", "score": 0}, {"prompt_id": 7, "score": None}]
        )
        + "\n"
    )
    assert read_scores_file(jsonl_path) == {"p0": 0.0}


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("a.csv", "prompt_id,score\np0,1\np1,1.5\n", "a.csv, row 2: score '1.5' is outside"),
        ("b.csv", "prompt_id,score\np0,1\np0,0\n", "b.csv, row 2: prompt_id 'p0' appears twice"),
        ("c.csv", "id,score\np0,1\n", "c.csv: missing column\\(s\\) \\['prompt_id'\\]"),
        ("d.csv", "prompt_id,score\np0,yes\n", "d.csv, row 1: score 'yes' is not a number"),
        ("e.jsonl", '{"prompt_id": "p0", "score": 1}\n{oops\n', "e.jsonl, row 2: not valid JSON"),
        ("f.jsonl", '{"prompt_id": "p0"}\n', "f.jsonl, row 1: expected an object"),
        ("g.txt", "prompt_id,score\n", "unknown scores file type"),
        ("h.csv", "prompt_id,score\n", "h.csv: no scores found"),
    ],
)
def test_scores_file_errors_name_the_file_and_row(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_scores_file(path)


def test_align_scores_reports_unknown_ids_and_refuses_a_file_matching_nothing() -> None:
    aligned = align_scores({"p1": 1.0, "x9": 0.0, "p4": 0.5}, PROMPTS, "f.csv")
    np.testing.assert_array_equal(aligned.values, [np.nan, 1.0, np.nan, np.nan, 0.5])
    assert aligned.unknown_ids == ["x9"]
    assert aligned.n_matched == 2
    with pytest.raises(DataError, match="f.csv: none of its 2 prompt ids"):
        align_scores({"x1": 1.0, "x2": 1.0}, PROMPTS, "f.csv")
