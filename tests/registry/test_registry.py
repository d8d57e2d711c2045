"""The model registry on both backends (SQLite and PostgreSQL, see conftest.py): CRUD, field
checks, migrations, concurrency, kill safety; and each backend's own failure modes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.registry.postgres import RegistryBackend
from uniroute.errors import (
    DataError,
    ModelExistsError,
    ModelNotFoundError,
    RegistryError,
    StateError,
)
from uniroute.registry import (
    MIGRATIONS,
    REGISTRY_SCHEMA_VERSION,
    Binding,
    ModelCost,
    ModelRecord,
    NewModel,
    Registry,
    align_scores,
    looks_like_secret,
    migrate,
    read_scores_file,
)
from uniroute.registry.calibration import Policy, Target
from uniroute.registry.records import MAX_SOURCE_CHARS

PROMPTS = [f"p{i}" for i in range(5)]


def _record(name: str, cost: float = 1.0, **fields: object) -> ModelRecord:
    return ModelRecord(name=name, cost=ModelCost(per_query=cost), **fields)


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
    with pytest.raises(ModelExistsError, match="'a' is already in the registry") as exists:
        registry.add_model(_record("a"), {"p0": 0.0})
    assert exists.value.http_status == 409
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
        with pytest.raises(ModelNotFoundError, match="no model 'zzz'.*models: a") as unknown:
            call()
        assert unknown.value.http_status == 404
    with pytest.raises(ModelNotFoundError, match="no model 'zzz'"):
        registry.set_features("art", {"zzz": np.ones(3)})


def test_a_models_source_is_kept_on_one_bounded_line(registry: Registry) -> None:
    registry.add_model(_record("a", source="scores file\n/data/a.csv"), {"p0": 1.0})
    registry.add_model(_record("b", source="x" * 1000), {"p0": 1.0})
    registry.set_cost("a", ModelCost(per_query=2.0))  # a later change keeps it
    a, b = registry.list_models()
    assert a.source == "scores file /data/a.csv" and a.cost.per_query == 2.0
    assert b.source == "x" * MAX_SOURCE_CHARS
    assert a.to_dict()["source"] == a.source
    with pytest.raises(RegistryError, match="source must be a string"):
        _record("c", source=3)


def test_add_models_is_all_or_nothing(registry: Registry) -> None:
    good = NewModel(_record("good"), {"p0": 1.0})
    bad_psi = NewModel(_record("bad"), {"p0": 1.0}, {"art": np.array([np.nan])})
    with pytest.raises(RegistryError, match="Psi must be"):
        registry.add_models([good, bad_psi])
    duplicate_in_db = NewModel(_record("good"), {"p0": 0.0})
    registry.add_model(_record("existing"), {"p0": 1.0})
    with pytest.raises(ModelExistsError, match="already in the registry"):
        registry.add_models([good, NewModel(_record("existing"), {"p0": 1.0})])
    assert [r.name for r in registry.list_models()] == ["existing"]
    assert duplicate_in_db.record.name == "good"


class _StaleExistenceCheck:
    """A connection whose "is this name taken?" query answers as before a rival's commit."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, *parameters: object) -> sqlite3.Cursor:
        if sql.startswith("SELECT created_at FROM models WHERE name"):
            return self._connection.execute("SELECT 1 WHERE 0")
        return self._connection.execute(sql, *parameters)

    def __getattr__(self, name: str) -> object:
        return getattr(self._connection, name)


def test_a_writer_that_loses_the_race_for_a_name_gets_model_exists(tmp_path: Path) -> None:
    # SQLite only: on PostgreSQL every writer locks the pool_version row before its check, so
    # the check cannot go stale; the two-writer test below covers both backends.
    path = tmp_path / "pool.db"
    with Registry(path) as winner, Registry(path) as loser:
        # The loser checked before the winner committed, so its own INSERT hits the primary key.
        loser._backend.connection = _StaleExistenceCheck(loser._backend.connection)
        winner.add_model(_record("a", 1.0), {"p0": 1.0})
        version = winner.pool_version()
        with pytest.raises(ModelExistsError, match="'a' is already in the registry"):
            loser.add_model(_record("a", 2.0), {"p0": 0.0, "p1": 1.0})
        # The losing transaction was rolled back whole; the winner's model is untouched.
        assert winner.get_model("a").cost.per_query == 1.0
        assert winner.get_scores("a") == {"p0": 1.0}
        assert winner.pool_version() == version
        assert loser.add_model(_record("b"), {"p0": 1.0}).name == "b"  # and it can write again


def test_two_writers_adding_the_same_name_one_wins_the_other_gets_model_exists(
    backend: RegistryBackend,
) -> None:
    path = backend.new_location()
    Registry(path).close()
    start = threading.Barrier(2)
    outcomes: dict[int, str] = {}

    def add(writer: int) -> None:
        with Registry(path) as registry:
            start.wait(timeout=10)
            try:
                registry.add_model(_record("same", writer + 1.0), {"p0": float(writer)})
                outcomes[writer] = "added"
            except ModelExistsError:
                outcomes[writer] = "exists"
            except Exception as exc:  # reported by the assertion below
                outcomes[writer] = repr(exc)

    threads = [threading.Thread(target=add, args=(writer,)) for writer in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes.values()) == ["added", "exists"], outcomes
    winner = next(writer for writer, outcome in outcomes.items() if outcome == "added")
    with Registry(path) as registry:
        assert registry.get_model("same").cost.per_query == winner + 1.0
        assert registry.get_scores("same") == {"p0": float(winner)}


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
        # Refused by onboarding before the one endpoint rule, so they are not stored either.
        ("http://:8000/v1", "http\\(s\\) base URL"),
        ("http://host:port/v1", "not a valid URL"),
        ("http://host\n/v1", "not a valid URL"),
    ],
)
def test_bad_endpoints_are_rejected(endpoint: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        _record("m", endpoint=endpoint)


def test_an_endpoint_is_stored_trimmed_and_without_trailing_slashes() -> None:
    assert _record("m", endpoint="  http://127.0.0.1:9/v1// ").endpoint == "http://127.0.0.1:9/v1"
    assert _record("m", endpoint="HTTP://Host:8000").endpoint == "HTTP://Host:8000"


@pytest.mark.parametrize("name", ["", " padded", "tab\tname"])
def test_bad_model_names_are_rejected(name: str) -> None:
    with pytest.raises(RegistryError, match="model name"):
        _record(name)


def test_upstream_model_is_stored_and_read_back(registry: Registry) -> None:
    endpoint = "http://127.0.0.1:9/v1"
    stored = registry.add_model(
        _record("prod-large", endpoint=endpoint, upstream_model="org/Large-70B-Instruct"),
        {"p0": 1.0},
    )
    assert stored.upstream_model == "org/Large-70B-Instruct"
    record = registry.get_model("prod-large")
    assert record.upstream_model == "org/Large-70B-Instruct"
    assert record.to_dict()["upstream_model"] == "org/Large-70B-Instruct"
    # Replacing the model without one goes back to sending the pool name.
    registry.add_model(_record("prod-large", endpoint=endpoint), {"p0": 1.0}, replace=True)
    assert registry.get_model("prod-large").upstream_model is None
    assert registry.list_models()[0].to_dict()["upstream_model"] is None


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"upstream_model": "org/m"}, "'m': an upstream model name \\('org/m'\\) is the name sent"),
        ({"upstream_model": "", "endpoint": "http://h/v1"}, "'m': upstream model name must be"),
        ({"upstream_model": " org/m", "endpoint": "http://h/v1"}, "upstream model name must be"),
        ({"upstream_model": "a\tb", "endpoint": "http://h/v1"}, "upstream model name must be"),
    ],
)
def test_bad_upstream_model_names_are_rejected(fields: dict, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        _record("m", **fields)


def test_no_key_value_ever_reaches_the_file(backend: RegistryBackend, tmp_path: Path) -> None:
    secret = "sk-proj-Abc123def456ghi789jkl012mno345pqr678"
    path = backend.new_location()
    with Registry(path) as registry:
        with pytest.raises(RegistryError):
            registry.add_model(_record("m", api_key_env=secret), {"p0": 1.0})
        registry.add_model(_record("m", api_key_env="OPENAI_API_KEY"), {"p0": 1.0})
    if backend.name == "sqlite":
        raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    else:  # every row of every table, as text
        tables = sorted(backend.tables(path))
        raw = "\n".join(
            str(row[0])
            for table in tables
            for row in backend.execute(path, f"SELECT CAST(t AS TEXT) FROM {table} t")
        ).encode()
    assert secret.encode() not in raw
    assert b"OPENAI_API_KEY" in raw


# --------------------------------------------------------------------------------- migrations
def _add_notes_column(connection: sqlite3.Connection) -> None:
    """A stand-in next migration: a new column with a default, and a derived value."""
    connection.execute("ALTER TABLE models ADD COLUMN notes TEXT NOT NULL DEFAULT ''")
    connection.execute("UPDATE models SET notes = 'migrated:' || name")


NEXT_VERSION = REGISTRY_SCHEMA_VERSION + 1

# A registry written by the version-1 code: its models table and rows exactly as v1 wrote them.
V1_PSI = {
    ("alpha", "art-1"): [0.25, -1.5, 3.0],
    ("alpha", "art-2"): [1.0],
    ("beta", "art-1"): [0.0, 0.5, 0.125],
}
V1_SCORES = {"alpha": {"p0": 1.0, "p1": 0.0, "p3": 0.5}, "beta": {"p2": 1.0}}
V1_POLICY = (
    '{"achieved": 0.8, "created_at": "t", "expected_cost": 0.01, "expected_quality": 0.8, '
    '"lam": 2.5, "n_prompts": 5, "pool_fingerprint": "fp", '
    '"target": {"kind": "quality", "model": null, "value": 0.8}}'
)


def _write_v1_registry(backend: RegistryBackend, path: str | Path) -> None:
    """A schema-version-1 registry with two models, their scores and Psi, a policy and a binding."""
    if backend.name == "sqlite":  # the file as the version-1 code opened it
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
            connection.execute("PRAGMA journal_mode = WAL")
            assert migrate(connection, MIGRATIONS[:1]) == 1
    else:
        with Registry(path, migrations=MIGRATIONS[:1]) as v1:
            assert v1.schema_version == 1
    v1_columns = (
        "name, cost_per_query, cost_per_1k_input, cost_per_1k_output, expected_output_tokens,"
        " endpoint, api_key_env, tags, enabled, revision, created_at, updated_at"
    )
    backend.executemany(
        path,
        f"INSERT INTO models ({v1_columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("alpha", 0.002, None, None, 256.0, "http://127.0.0.1:9/v1", "ALPHA_KEY",
             '["open", "7b"]', 1, 1, "2025-01-01T00:00:00+00:00", "2025-01-02T00:00:00+00:00"),
            ("beta", None, 0.5, 1.5, 64.0, None, None, "[]", 0, 2,
             "2025-01-03T00:00:00+00:00", "2025-01-04T00:00:00+00:00"),
        ],
    )  # fmt: skip
    backend.executemany(
        path,
        "INSERT INTO scores (model, prompt_id, score) VALUES (?, ?, ?)",
        [(model, p, v) for model, scores in V1_SCORES.items() for p, v in scores.items()],
    )
    backend.executemany(
        path,
        "INSERT INTO features (model, artifact_id, psi) VALUES (?, ?, ?)",
        [(m, a, np.array(v, dtype="<f8").tobytes()) for (m, a), v in V1_PSI.items()],
    )
    backend.execute(
        path, "INSERT INTO policy (id, body, updated_at) VALUES (1, ?, 't')", (V1_POLICY,)
    )
    backend.executemany(
        path,
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [("pool_version", "3"), ("artifact_id", "art-1"), ("prompts_fingerprint", "fp-1")],
    )


def test_new_file_is_at_the_current_schema_version(backend: RegistryBackend) -> None:
    path = backend.new_location()
    with Registry(path) as registry:
        assert registry.schema_version == REGISTRY_SCHEMA_VERSION == len(MIGRATIONS) == 8
        assert registry.dialect == backend.name
    if backend.name == "sqlite":
        assert backend.execute(path, "PRAGMA journal_mode")[0][0] == "wal"
    assert backend.schema_version(path) == REGISTRY_SCHEMA_VERSION
    assert {"upstream_model", "latency_s", "source"} <= set(backend.model_columns(path))
    assert "answers" in backend.tables(path)


def test_a_v1_file_is_migrated_in_place_and_keeps_every_model_score_and_psi(
    backend: RegistryBackend, tmp_path: Path
) -> None:
    path = backend.new_location()
    _write_v1_registry(backend, path)
    assert backend.schema_version(path) == 1
    assert "upstream_model" not in backend.model_columns(path)
    with Registry(path) as registry:
        assert registry.schema_version == REGISTRY_SCHEMA_VERSION
        alpha, beta = registry.list_models()
        assert alpha == ModelRecord(
            name="alpha", cost=ModelCost(per_query=0.002), endpoint="http://127.0.0.1:9/v1",
            api_key_env="ALPHA_KEY", tags=("open", "7b"), enabled=True, revision=1,
            created_at="2025-01-01T00:00:00+00:00", updated_at="2025-01-02T00:00:00+00:00",
        )  # fmt: skip
        assert beta == ModelRecord(
            name="beta", cost=ModelCost(per_1k_input=0.5, per_1k_output=1.5,
                                        expected_output_tokens=64.0),
            enabled=False, revision=2,
            created_at="2025-01-03T00:00:00+00:00", updated_at="2025-01-04T00:00:00+00:00",
        )  # fmt: skip
        # Models registered before v2 are sent upstream under their pool name; how models
        # registered before v8 joined was not recorded.
        assert alpha.upstream_model is None and beta.upstream_model is None
        assert alpha.source is None and beta.source is None
        assert {name: registry.get_scores(name) for name in ("alpha", "beta")} == V1_SCORES
        for artifact_id in ("art-1", "art-2"):
            stored = registry.get_features(artifact_id)
            expected = {m: v for (m, a), v in V1_PSI.items() if a == artifact_id}
            assert {m: psi.tolist() for m, psi in stored.items()} == expected
        assert registry.get_policy().lam == 2.5
        assert registry.binding() == Binding("art-1", "fp-1")
        # Migrating is not a pool change: a running server has nothing to re-read.
        assert registry.pool_version() == 3
        registry.add_model(
            _record("gamma", endpoint="http://127.0.0.1:9/v1", upstream_model="org/gamma-7b"),
            {"p0": 1.0},
        )
        assert registry.get_model("gamma").upstream_model == "org/gamma-7b"
    assert backend.schema_version(path) == REGISTRY_SCHEMA_VERSION
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("pool.db")] == []


def test_the_v2_migration_is_one_transaction(backend: RegistryBackend) -> None:
    path = backend.new_location()
    _write_v1_registry(backend, path)

    def v2_then_crash(connection: object) -> None:
        MIGRATIONS[1](connection)
        raise RuntimeError("killed after the v2 step")

    with pytest.raises(RuntimeError, match="killed after the v2 step"):
        Registry(path, migrations=(MIGRATIONS[0], v2_then_crash))
    assert backend.schema_version(path) == 1
    assert "upstream_model" not in backend.model_columns(path)
    with Registry(path) as registry:
        assert registry.schema_version == REGISTRY_SCHEMA_VERSION
        assert [r.name for r in registry.list_models()] == ["alpha", "beta"]


def test_a_file_opens_with_a_further_migration_and_keeps_its_data(
    backend: RegistryBackend,
) -> None:
    path = backend.new_location()
    with Registry(path) as current:
        current.add_model(_record("a", 0.5), {"p0": 1.0, "p1": 0.0}, {"art": np.array([0.5])})
        version_before = current.pool_version()
    with Registry(path, migrations=(*MIGRATIONS, _add_notes_column)) as upgraded:
        assert upgraded.schema_version == NEXT_VERSION
        assert upgraded.get_model("a").cost.per_query == 0.5
        assert upgraded.get_scores("a") == {"p0": 1.0, "p1": 0.0}
        assert upgraded.pool_version() == version_before
        with upgraded._read() as connection:
            notes = connection.execute("SELECT notes FROM models WHERE name = 'a'").fetchone()
        assert tuple(notes) == ("migrated:a",)
        upgraded.add_model(_record("b"), {"p0": 1.0})  # the current code paths still work
    assert backend.schema_version(path) == NEXT_VERSION


def test_a_newer_file_is_refused_by_older_code(backend: RegistryBackend) -> None:
    path = backend.new_location()
    Registry(path, migrations=(*MIGRATIONS, _add_notes_column)).close()
    with pytest.raises(
        StateError, match=f"schema version {NEXT_VERSION} is newer than this uniroute reads"
    ):
        Registry(path)


def test_a_failing_migration_leaves_the_file_at_the_old_version(backend: RegistryBackend) -> None:
    path = backend.new_location()
    with Registry(path) as current:
        current.add_model(_record("a"), {"p0": 1.0})

    def broken(connection: object) -> None:
        connection.execute("ALTER TABLE models ADD COLUMN half_done TEXT")  # type: ignore[attr-defined]
        raise RuntimeError("migration bug")

    with pytest.raises(RuntimeError, match="migration bug"):
        Registry(path, migrations=(*MIGRATIONS, broken))
    assert backend.schema_version(path) == REGISTRY_SCHEMA_VERSION
    assert "half_done" not in backend.model_columns(path)
    with Registry(path) as again:
        assert [r.name for r in again.list_models()] == ["a"]


MIGRATOR = textwrap.dedent(
    """
    import sys
    from uniroute.registry import Registry

    print("ready", flush=True)
    sys.stdin.readline()  # both processes open the registry when the test says go
    with Registry(sys.argv[1]) as registry:
        print(registry.schema_version, registry.pool_version(), flush=True)
    """
)


def test_processes_migrating_one_fresh_registry_at_once_all_succeed(
    backend: RegistryBackend,
) -> None:
    path = backend.new_location()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATOR, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)  # more than two, so that the race is lost often without the lock
    ]
    for process in processes:  # past the imports: what is left is opening the registry
        assert process.stdout.readline().strip() == "ready", process.stderr.read()
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    outputs = [process.communicate(timeout=60) for process in processes]
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        assert out.split() == [str(REGISTRY_SCHEMA_VERSION), "0"]
    # Every step applied exactly once: one counter row, the tables as a single open makes them.
    assert backend.schema_version(path) == REGISTRY_SCHEMA_VERSION
    assert backend.execute(path, "SELECT COUNT(*) FROM meta WHERE key = 'pool_version'")[0][0] == 1
    assert {"models", "scores", "answers", "features", "policy", "meta"} <= backend.tables(path)
    with Registry(path) as registry:
        registry.add_model(_record("a"), {"p0": 1.0})
        assert registry.pool_version() == 1


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="not a readable registry database"):
        Registry(path)


def _garbled_but_the_schema(tmp_path: Path) -> Path:
    """A registry with models whose every page but the schema's is overwritten (the schema
    starts on the first page and may continue on later ones)."""
    path = tmp_path / "pool.db"
    with Registry(path) as registry:
        for i in range(20):
            registry.add_model(_record(f"m{i}"), {f"p{k}": 1.0 for k in range(200)})
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = connection.execute("PRAGMA page_size").fetchone()[0]
        schema_pages = {
            row[0]
            for row in connection.execute("SELECT pageno FROM dbstat WHERE name = 'sqlite_schema'")
        }
    data = bytearray(path.read_bytes())
    for number in range(1, len(data) // page + 1):
        if number not in schema_pages:
            data[(number - 1) * page : number * page] = bytes(page)
    path.write_bytes(bytes(data))
    return path


def test_a_file_corrupted_past_its_first_page_is_a_clear_error_on_every_call(
    tmp_path: Path,
) -> None:
    path = _garbled_but_the_schema(tmp_path)
    # The schema page is intact, so the file opens; what reads the garbled pages fails.
    with Registry(path) as registry:
        calls = {
            "list_models": registry.list_models,
            "score_counts": registry.score_counts,
            "get_model": lambda: registry.get_model("m3"),
            "has_model": lambda: registry.has_model("m3"),
            "pool_version": registry.pool_version,
            "add_model": lambda: registry.add_model(_record("new"), {"p0": 1.0}),
            "remove_model": lambda: registry.remove_model("m3"),
        }
        for name, call in calls.items():
            with pytest.raises(StateError) as info:
                call()
            message = str(info.value)
            assert message.startswith(f"{path}: not a readable registry database"), name
            assert "is not a UniRoute registry or is corrupted" in message, name


def test_a_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    path = _garbled_but_the_schema(tmp_path)
    path.write_bytes(path.read_bytes()[: 4096 + 1000])  # cut in the middle of page 2
    with (
        pytest.raises(StateError, match="is not a UniRoute registry or is corrupted"),
        Registry(path) as registry,
    ):
        registry.list_models()


def test_another_programs_database_is_not_a_registry(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE notes (body TEXT)")
    other.execute("PRAGMA user_version = 2")  # the version number of a registry, by chance
    other.commit()
    other.close()
    # Refused when it is opened (a migration needs the models table) or, failing that, read.
    with (
        pytest.raises(StateError, match=r"not a UniRoute registry .*no such table: models"),
        Registry(path) as registry,
    ):
        registry.list_models()


def test_a_postgres_migration_waits_for_the_migration_lock(postgres_cluster) -> None:
    import psycopg

    from uniroute.registry.postgres_backend import _MIGRATION_LOCK

    backend = RegistryBackend("postgresql", Path(), postgres_cluster)
    url = backend.new_location()
    opened = threading.Event()
    with psycopg.connect(url, autocommit=True) as holder:
        # As if another process were half way through migrating this database.
        holder.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        opener = threading.Thread(target=lambda: (Registry(url).close(), opened.set()))
        opener.start()
        assert not opened.wait(1.0), "the migration did not wait for the lock"
        assert "models" not in backend.tables(url)
        holder.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
        opener.join(timeout=30)
    assert opened.is_set()
    assert backend.schema_version(url) == REGISTRY_SCHEMA_VERSION


def test_another_programs_postgres_database_is_not_a_registry(postgres_cluster) -> None:
    backend = RegistryBackend("postgresql", Path(), postgres_cluster)
    url = backend.new_location()
    backend.execute(url, "CREATE TABLE notes (body TEXT)")
    backend.execute(url, "CREATE TABLE schema_version (id INTEGER PRIMARY KEY, version INTEGER)")
    backend.execute(url, "INSERT INTO schema_version VALUES (1, 3)")  # a registry's, by chance
    with (
        pytest.raises(StateError, match=r"not a UniRoute registry .*\"models\" does not exist"),
        Registry(url) as registry,
    ):
        registry.list_models()


def test_a_postgres_url_is_shown_without_its_password(postgres_cluster) -> None:
    url = postgres_cluster.create_database()
    with_password = url.replace("postgres@", "postgres:hunter2-secret@")
    with Registry(with_password) as registry:
        assert registry.path == url and "hunter2" not in repr(registry)
        registry.add_model(_record("a"), {"p0": 1.0})
        with pytest.raises(ModelExistsError) as exists:
            registry.add_model(_record("a"), {"p0": 1.0})
        assert "hunter2" not in str(exists.value) and url in str(exists.value)
    # postgres:// is the same scheme; a URL that went through pathlib.Path still works.
    with Registry(url.replace("postgresql://", "postgres://")) as same:
        assert [r.name for r in same.list_models()] == ["a"]
    with Registry(Path(url)) as through_path:
        assert through_path.path == url and through_path.has_model("a")


def test_an_unreachable_postgres_server_is_one_line_naming_the_url_without_password() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://someone:pa55word-secret@127.0.0.1:{port}/pool"
    with pytest.raises(StateError) as raised:
        Registry(url, timeout=2.0)
    message = str(raised.value)
    assert message.startswith(f"postgresql://someone@127.0.0.1:{port}/pool: cannot connect")
    assert "pa55word" not in message and "\n" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_a_missing_postgres_database_and_a_bad_url_are_clear_errors(postgres_cluster) -> None:
    with pytest.raises(StateError, match='cannot connect .*database "no_such_db" does not exist'):
        Registry(postgres_cluster.url("no_such_db"))
    with pytest.raises(StateError, match="postgresql://x@127.0.0.1:99999/db: ") as raised:
        Registry("postgresql://x@127.0.0.1:99999/db", timeout=2.0)
    assert "\n" not in str(raised.value)


def test_a_one_byte_file_is_refused_not_overwritten(tmp_path: Path) -> None:
    # SQLite would take this file for an empty database and write a registry over it.
    path = tmp_path / "notes.txt"
    path.write_bytes(b"\n")
    with pytest.raises(StateError, match="not an SQLite file"):
        Registry(path)
    assert path.read_bytes() == b"\n"


def test_an_empty_file_is_a_new_registry(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    path.write_bytes(b"")
    with Registry(path) as registry:
        assert registry.list_models() == []


def test_a_registry_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("x")
    with pytest.raises(StateError, match=f"cannot create the registry \\({plain} is not a dir"):
        Registry(plain / "pool.db")


# ---------------------------------------------------------------------- concurrency and kills
N_PROMPTS = 1000

WRITER = textwrap.dedent(
    """
    import sys
    import time
    import numpy as np
    from uniroute.registry import ModelAnswer, ModelCost, ModelRecord, Registry

    path = sys.argv[1]
    start, count, n_prompts = (int(value) for value in sys.argv[2:5])
    pause = float(sys.argv[5])
    rng = np.random.default_rng(start)
    with Registry(path) as registry:
        print("ready", flush=True)
        for i in range(start, start + count):
            scores = {f"p{k}": float(v) for k, v in enumerate(rng.random(n_prompts))}
            answers = {p: ModelAnswer.of("ABCD"[k % 4], f"says {k}") for k, p in enumerate(scores)}
            registry.add_model(
                ModelRecord(name=f"m{i:05d}", cost=ModelCost(per_query=0.001 * (i + 1))),
                scores,
                {"art": rng.random(50)},
                answers,
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
    with registry._read() as connection:
        answered = dict(
            connection.execute("SELECT model, COUNT(*) FROM answers GROUP BY model").fetchall()
        )
    for name in names:
        assert counts.get(name) == N_PROMPTS, f"{name} has {counts.get(name)} scores"
        assert features[name].shape == (50,), f"{name} has no complete Psi"
        assert answered.get(name) == N_PROMPTS, f"{name} has {answered.get(name)} answers"
    assert set(counts) == set(features) == set(answered) == set(names)  # no orphan rows either
    return names


def test_readers_see_consistent_snapshots_while_a_writer_writes(
    backend: RegistryBackend,
) -> None:
    path = backend.new_location()
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
                        connection.execute(
                            "SELECT model, COUNT(*) FROM scores GROUP BY model"
                        ).fetchall()
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


def test_a_writer_killed_mid_write_leaves_only_complete_models(
    backend: RegistryBackend,
) -> None:
    path = backend.new_location()
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
        if backend.name == "sqlite":
            assert backend.execute(path, "PRAGMA integrity_check")[0][0] == "ok"
        names = _assert_every_model_complete(registry)
        assert f"m{committed:05d}" in names  # nothing acknowledged was lost
        assert registry.pool_version() == len(names)
        registry.add_model(_record("after-the-kill"), {"p0": 1.0})  # and it is writable again


@pytest.mark.slow
def test_writers_killed_twenty_times_at_random_points_leave_only_complete_models(
    backend: RegistryBackend,
) -> None:
    path = backend.new_location()
    Registry(path).close()
    rng = np.random.default_rng(20)
    acknowledged: list[str] = []
    for round_ in range(20):
        writer = _start_writer(path, 1000 * round_, 1000)
        for _ in range(int(rng.integers(1, 4))):
            acknowledged.append(f"m{int(writer.stdout.readline()):05d}")
        time.sleep(float(rng.uniform(0.0, 0.02)))  # anywhere in the next model's transaction
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
        assert writer.returncode == -signal.SIGKILL
        with Registry(path) as registry:
            names = _assert_every_model_complete(registry)
            assert set(acknowledged) <= set(names)  # nothing acknowledged was lost
            assert registry.pool_version() == len(names)


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
        ("a.csv", "prompt_id,score\np0,1\np1,1.5\n", "a.csv, line 3: score '1.5' is outside"),
        ("b.csv", "prompt_id,score\np0,1\np0,0\n", "b.csv, line 3: prompt_id 'p0' appears twice"),
        ("c.csv", "id,score\np0,1\n", "c.csv: missing column\\(s\\) \\['prompt_id'\\]"),
        ("d.csv", "prompt_id,score\np0,yes\n", "d.csv, line 2: score 'yes' is not a number"),
        # A quoted cell spanning two lines: the error names the line the row ends on.
        ("m.csv", 'prompt_id,score,note\np0,1,"two\nlines"\np1,2,x\n', "m.csv, line 4: score '2'"),
        # A row cut short is an error, not a missing score (an empty cell is missing).
        ("s.csv", "prompt_id,score\np0,\np1\n", "s.csv, line 3: the row ends before"),
        ("u.csv", b"prompt_id,score\np0,1\n\xff,1\n", "u.csv: not UTF-8 text"),
        (
            "e.jsonl",
            '{"prompt_id": "p0", "score": 1}\n\n{oops\n',
            "e.jsonl, line 3: not valid JSON",
        ),
        ("f.jsonl", '{"prompt_id": "p0"}\n', "f.jsonl, line 1: expected an object with prompt_id"),
        ("l.jsonl", '[{"prompt_id": "p0", "score": 1}]\n', "l.jsonl, line 1: expected a JSON obj"),
        ("g.txt", "prompt_id,score\n", "unknown scores file type"),
        ("h.csv", "prompt_id,score\n", "h.csv: no scores found"),
    ],
)
def test_scores_file_errors_name_the_file_and_line(
    tmp_path: Path, name: str, content: str | bytes, message: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
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
