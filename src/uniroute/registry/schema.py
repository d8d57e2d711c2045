"""The registry's tables, their versioned migrations, and the models-table row.

A new column touches this module only (a migration, ``MODEL_COLUMN_NAMES`` and the row mapping)
besides the record field itself; see ``uniroute.registry.store`` for the layout.

The same migrations build an SQLite file and a PostgreSQL database. A migration is given a
connection whose ``execute(sql, parameters)`` takes ``?`` placeholders on both (a raw
``sqlite3.Connection``, or ``postgres_backend.PostgresConnection``, which translates them), and
writes its column types through ``column_types(connection)``: the only spelling the two differ in
(``REAL``/``BLOB``/``WITHOUT ROWID`` on SQLite, ``DOUBLE PRECISION``/``BYTEA`` on PostgreSQL,
whose ``REAL`` is single precision). SQLite records the version in ``PRAGMA user_version``
(``migrate`` below); PostgreSQL in a one-row ``schema_version`` table, under an advisory lock
(``postgres_backend.migrate_postgres``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from uniroute.errors import StateError
from uniroute.registry.costs import ModelCost
from uniroute.registry.records import ModelRecord

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

#: Column types by dialect: PostgreSQL's REAL is float4, so scores and prices use float8 there.
_COLUMN_TYPES = {
    SQLITE: {"real": "REAL", "blob": "BLOB", "without_rowid": " WITHOUT ROWID"},
    POSTGRESQL: {"real": "DOUBLE PRECISION", "blob": "BYTEA", "without_rowid": ""},
}


def dialect_of(connection: Any) -> str:
    """``POSTGRESQL`` for a PostgreSQL registry connection, otherwise ``SQLITE``."""
    return str(getattr(connection, "dialect", SQLITE))


def column_types(connection: Any) -> dict[str, str]:
    """The dialect's spelling of ``{real}``, ``{blob}`` and ``{without_rowid}`` in a DDL."""
    return _COLUMN_TYPES[dialect_of(connection)]


_SCHEMA_V1 = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE models (
        name TEXT PRIMARY KEY,
        cost_per_query {real},
        cost_per_1k_input {real},
        cost_per_1k_output {real},
        expected_output_tokens {real} NOT NULL,
        endpoint TEXT,
        api_key_env TEXT,
        tags TEXT NOT NULL DEFAULT '[]',
        enabled INTEGER NOT NULL DEFAULT 1,
        revision INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE scores (
        model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
        prompt_id TEXT NOT NULL,
        score {real} NOT NULL,
        PRIMARY KEY (model, prompt_id)
    ){without_rowid}""",
    """CREATE TABLE features (
        model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
        artifact_id TEXT NOT NULL,
        psi {blob} NOT NULL,
        PRIMARY KEY (model, artifact_id)
    ){without_rowid}""",
    """CREATE TABLE policy (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        body TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "INSERT INTO meta (key, value) VALUES ('pool_version', '0')",
)


def now() -> str:
    """The current UTC time as the registry stores it (ISO 8601, whole seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _create_schema_v1(connection: Any) -> None:
    # Statement by statement: executescript() would commit the migration's open transaction.
    types = column_types(connection)
    for statement in _SCHEMA_V1:
        connection.execute(statement.format(**types))
    connection.execute("INSERT INTO meta (key, value) VALUES ('created_at', ?)", (now(),))


def _add_upstream_model(connection: Any) -> None:
    # NULL for every existing model: they were served under their pool name.
    connection.execute("ALTER TABLE models ADD COLUMN upstream_model TEXT")


def _add_answers(connection: Any) -> None:
    # Existing models simply have no answers (no rows): nothing routable changes.
    # A row is an answer the model gave: its canonical key (NULL: nothing comparable in it) and
    # its raw text, kept cut to records.MAX_RAW_ANSWER_CHARS, with raw_chars its full length.
    connection.execute(
        """CREATE TABLE answers (
            model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
            prompt_id TEXT NOT NULL,
            answer_key TEXT,
            raw TEXT,
            raw_chars INTEGER,
            PRIMARY KEY (model, prompt_id),
            CHECK (answer_key IS NOT NULL OR raw IS NOT NULL)
        ){without_rowid}""".format(**column_types(connection))
    )


def _add_jobs_and_answer_cache(connection: Any) -> None:
    # Background jobs (endpoint onboarding) and the answers their endpoints gave, shared by
    # every process on the registry: a job started by one gateway replica is visible to all and
    # is resumed by another when its lease runs out (``uniroute.registry.jobs``); the answer
    # cache makes the resumed run ask only the prompts still unanswered. Times are Unix seconds.
    types = column_types(connection)
    connection.execute(
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            subject TEXT NOT NULL,
            status TEXT NOT NULL,
            request TEXT NOT NULL,
            done INTEGER NOT NULL DEFAULT 0,
            total INTEGER,
            message TEXT NOT NULL DEFAULT '',
            error TEXT,
            result TEXT,
            owner TEXT,
            lease_expires {real},
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at {real} NOT NULL,
            started_at {real},
            finished_at {real},
            updated_at {real} NOT NULL
        )""".format(**types)
    )
    connection.execute("CREATE INDEX jobs_by_status ON jobs (status, lease_expires)")
    # Not tied to the models table: answers are cached before the model exists.
    connection.execute(
        """CREATE TABLE answer_cache (
            model TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            prompt_id TEXT NOT NULL,
            prompt_sha256 TEXT NOT NULL,
            settings_sha256 TEXT NOT NULL,
            answer TEXT NOT NULL,
            created {real} NOT NULL,
            PRIMARY KEY (model, endpoint, prompt_id)
        ){without_rowid}""".format(**types)
    )


def _add_capabilities(connection: Any) -> None:
    # Every existing model declares no capability and no limit: plain requests route as before;
    # one that needs tools, images or JSON mode waits for a model to declare it (``models
    # update``) or for a probe to find it.
    connection.execute("ALTER TABLE models ADD COLUMN capabilities TEXT NOT NULL DEFAULT '[]'")
    connection.execute("ALTER TABLE models ADD COLUMN context_window INTEGER")
    connection.execute("ALTER TABLE models ADD COLUMN max_output_tokens INTEGER")


def _add_client_keys_and_sessions(connection: Any) -> None:
    # Client keys (stored as SHA-256 hashes only) with their limits, the spend and requests
    # counted against them per period, and conversations' sessions: state every replica on the
    # registry shares, outside the pool's revision. Times are Unix seconds unless named *_at.
    types = column_types(connection)
    connection.execute(
        """CREATE TABLE client_keys (
            id TEXT PRIMARY KEY,
            key_hash TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            team TEXT,
            allowed_models TEXT,
            rpm_limit INTEGER,
            daily_spend_limit {real},
            monthly_spend_limit {real},
            revoked INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            revoked_at TEXT
        )""".format(**types)
    )
    # One row per key and period ("day:2026-12-02", "month:2026-12", "minute:2026-12-02T10:15").
    connection.execute(
        """CREATE TABLE key_usage (
            key_id TEXT NOT NULL REFERENCES client_keys(id) ON DELETE CASCADE,
            period TEXT NOT NULL,
            spend {real} NOT NULL DEFAULT 0,
            requests INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (key_id, period)
        ){without_rowid}""".format(**types)
    )
    connection.execute(
        """CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            estimated_error {real},
            turns INTEGER NOT NULL DEFAULT 1,
            expires {real} NOT NULL,
            updated {real} NOT NULL
        ){without_rowid}""".format(**types)
    )
    connection.execute("CREATE INDEX sessions_by_expiry ON sessions (expires)")


def _add_latency(connection: Any) -> None:
    # NULL for every existing model: its latency is learnt from live traffic alone.
    connection.execute(
        "ALTER TABLE models ADD COLUMN latency_s {real}".format(**column_types(connection))
    )


def _add_source(connection: Any) -> None:
    # NULL for every existing model: how it joined was not recorded.
    connection.execute("ALTER TABLE models ADD COLUMN source TEXT")


#: A migration step: given a connection of either dialect inside the step's transaction.
Migration = Callable[[Any], None]

#: ``MIGRATIONS[v]`` upgrades a registry from schema version v to v + 1 (version 0 = empty).
MIGRATIONS: tuple[Migration, ...] = (
    _create_schema_v1,
    _add_upstream_model,
    _add_answers,
    _add_jobs_and_answer_cache,
    _add_capabilities,
    _add_client_keys_and_sessions,
    _add_latency,
    _add_source,
)
REGISTRY_SCHEMA_VERSION = len(MIGRATIONS)


def migrate(
    connection: sqlite3.Connection,
    migrations: Sequence[Migration] = MIGRATIONS,
    source: str = "registry",
) -> int:
    """Upgrade an SQLite registry file to ``len(migrations)``, one transaction per step; returns it.

    A file written by a newer uniroute (a higher version than this code knows) is refused rather
    than misread.
    """
    target = len(migrations)
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > target:
        raise StateError(
            f"{source}: registry schema version {version} is newer than this uniroute reads "
            f"(version {target}); upgrade uniroute"
        )
    while version < target:
        connection.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated between our read and taking the write lock.
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version < target:
                migrations[version](connection)
                version += 1
                connection.execute(f"PRAGMA user_version = {int(version)}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    return version


# ---------------------------------------------------------------------------- the models row
#: The columns of the models table, in the order of ``record_row`` and ``record_from_row``.
MODEL_COLUMN_NAMES = (
    "name",
    "cost_per_query",
    "cost_per_1k_input",
    "cost_per_1k_output",
    "expected_output_tokens",
    "endpoint",
    "upstream_model",
    "api_key_env",
    "tags",
    "capabilities",
    "context_window",
    "max_output_tokens",
    "latency_s",
    "source",
    "enabled",
    "revision",
    "created_at",
    "updated_at",
)
MODEL_COLUMNS = ", ".join(MODEL_COLUMN_NAMES)
SELECT_MODELS = f"SELECT {MODEL_COLUMNS} FROM models"
INSERT_MODEL = (
    f"INSERT INTO models ({MODEL_COLUMNS}) VALUES ({', '.join('?' * len(MODEL_COLUMN_NAMES))})"
)


def record_row(record: ModelRecord) -> tuple:
    """A record as the values of ``MODEL_COLUMN_NAMES``."""
    return (
        record.name,
        record.cost.per_query,
        record.cost.per_1k_input,
        record.cost.per_1k_output,
        record.cost.expected_output_tokens,
        record.endpoint,
        record.upstream_model,
        record.api_key_env,
        json.dumps(list(record.tags)),
        json.dumps(list(record.capabilities)),
        record.context_window,
        record.max_output_tokens,
        record.latency_s,
        record.source,
        int(record.enabled),
        record.revision,
        record.created_at,
        record.updated_at,
    )


def record_from_row(row: tuple) -> ModelRecord:
    """The record of a row selected with ``SELECT_MODELS`` (validated again on the way in)."""
    (
        name,
        per_query,
        per_in,
        per_out,
        out_tokens,
        endpoint,
        upstream_model,
        key_env,
        tags,
        capabilities,
        context_window,
        max_output_tokens,
        latency_s,
        source,
        enabled,
        revision,
        created,
        updated,
    ) = row
    return ModelRecord(
        name=name,
        cost=ModelCost(
            per_query=per_query,
            per_1k_input=per_in,
            per_1k_output=per_out,
            expected_output_tokens=out_tokens,
        ),
        endpoint=endpoint,
        upstream_model=upstream_model,
        api_key_env=key_env,
        tags=tuple(json.loads(tags)),
        capabilities=tuple(json.loads(capabilities)),
        context_window=context_window,
        max_output_tokens=max_output_tokens,
        latency_s=latency_s,
        source=source,
        enabled=bool(enabled),
        revision=int(revision),
        created_at=created,
        updated_at=updated,
    )
