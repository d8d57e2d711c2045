"""The model-pool registry: one SQLite file holding every routable model, its scores and Psi.

Layout (schema version 2, kept in ``PRAGMA user_version``):

* ``models``: name, price (per query or per 1k input/output tokens), optional endpoint, the
  model name the endpoint expects (``upstream_model``; NULL = the pool name) and the *name* of
  the environment variable holding its API key, tags, enabled flag, ``revision`` (the pool
  version at which its scores or price last changed), creation and update times;
* ``scores``: (model, prompt_id, score) for the representative prompts; a missing score has no
  row and reads back as NaN;
* ``features``: (model, artifact_id, psi) — Psi(h) as little-endian float64 bytes, per artifact,
  because Psi depends on the router that computed it;
* ``policy``: the calibrated default policy (one row, JSON);
* ``meta``: the artifact the registry is bound to, a fingerprint of its representative prompt ids,
  and ``pool_version``, bumped by every change so a server notices changes with one cheap read.

The file is in WAL mode with a busy timeout, so readers never block the writer and see either the
state before or after each change. Every change is a single ``BEGIN IMMEDIATE`` transaction: a
process killed mid-write leaves the previous state, never a half-written model.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from uniroute.data.jsonl import iter_jsonl_objects
from uniroute.errors import DataError, RegistryError, StateError
from uniroute.registry.calibration import Policy
from uniroute.registry.costs import ModelCost

# ---------------------------------------------------------------------------- schema migrations
_SCHEMA_V1 = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE models (
        name TEXT PRIMARY KEY,
        cost_per_query REAL,
        cost_per_1k_input REAL,
        cost_per_1k_output REAL,
        expected_output_tokens REAL NOT NULL,
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
        score REAL NOT NULL,
        PRIMARY KEY (model, prompt_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE features (
        model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
        artifact_id TEXT NOT NULL,
        psi BLOB NOT NULL,
        PRIMARY KEY (model, artifact_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE policy (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        body TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    "INSERT INTO meta (key, value) VALUES ('pool_version', '0')",
)


def _create_schema_v1(connection: sqlite3.Connection) -> None:
    # Statement by statement: executescript() would commit the migration's open transaction.
    for statement in _SCHEMA_V1:
        connection.execute(statement)
    connection.execute("INSERT INTO meta (key, value) VALUES ('created_at', ?)", (_now(),))


def _add_upstream_model(connection: sqlite3.Connection) -> None:
    # NULL for every existing model: they were served under their pool name.
    connection.execute("ALTER TABLE models ADD COLUMN upstream_model TEXT")


Migration = Callable[[sqlite3.Connection], None]

#: ``MIGRATIONS[v]`` upgrades a file from schema version v to v + 1 (version 0 = an empty file).
MIGRATIONS: tuple[Migration, ...] = (_create_schema_v1, _add_upstream_model)
REGISTRY_SCHEMA_VERSION = len(MIGRATIONS)


def migrate(
    connection: sqlite3.Connection,
    migrations: Sequence[Migration] = MIGRATIONS,
    source: str = "registry",
) -> int:
    """Upgrade a registry file to ``len(migrations)``, one transaction per step; returns it.

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


# ---------------------------------------------------------------------------- field validation
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_PREFIXES = (
    "sk-",
    "sk_",
    "rk_",
    "pk_",
    "ghp_",
    "gho_",
    "ghs_",
    "github_pat_",
    "glpat-",
    "xox",
    "hf_",
    "gsk_",
    "AKIA",
    "AIza",
    "ya29.",
    "eyJ",
)


def looks_like_secret(value: str) -> bool:
    """True when a string looks like an API key or token rather than a variable name."""
    if any(value.startswith(prefix) for prefix in _SECRET_PREFIXES):
        return True
    if not _ENV_NAME.match(value):
        return True
    # Variable names are words joined by underscores; keys are long runs mixing case and digits.
    longest_run = max((len(part) for part in value.split("_")), default=0)
    mixed = any(c.islower() for c in value) and any(c.isupper() for c in value)
    has_digit = any(c.isdigit() for c in value)
    return longest_run >= 24 or (len(value) >= 20 and mixed and has_digit)


def check_api_key_env(value: str | None) -> str | None:
    """Validate the name of the environment variable holding a model's API key."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise RegistryError("api_key_env must be a non-empty environment variable name")
    if looks_like_secret(value):
        raise RegistryError(
            "api_key_env must be the NAME of the environment variable that holds the API key "
            "(e.g. OPENAI_API_KEY), not the key itself; the value given looks like a key and was "
            "not stored"
        )
    return value


def check_endpoint(value: str | None) -> str | None:
    """Validate an OpenAI-compatible base URL (http or https with a host)."""
    if value is None:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise RegistryError(
            f"endpoint must be an http(s) base URL such as https://host/v1, got {value!r}"
        )
    if parsed.username or parsed.password:
        raise RegistryError("endpoint must not embed credentials; use api_key_env for the key")
    return value.rstrip("/")


def check_model_name(name: str, label: str = "model name") -> str:
    """Validate a model name (non-empty, printable, no surrounding whitespace)."""
    if not isinstance(name, str) or not name or name != name.strip():
        raise RegistryError(
            f"{label} must be a non-empty string without surrounding spaces: {name!r}"
        )
    if len(name) > 200 or not name.isprintable():
        raise RegistryError(f"{label} must be printable and at most 200 characters: {name!r}")
    return name


def check_upstream_model(value: str | None, endpoint: str | None, name: str) -> str | None:
    """Validate the model name sent to a model's endpoint (it needs an endpoint to be sent to)."""
    if value is None:
        return None
    check_model_name(value, f"model {name!r}: upstream model name")
    if endpoint is None:
        raise RegistryError(
            f"model {name!r}: an upstream model name ({value!r}) is the name sent to the "
            "model's endpoint; give the endpoint too"
        )
    return value


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------- records
@dataclass(frozen=True)
class ModelRecord:
    """One model of the pool as the registry stores it (scores and Psi are kept separately)."""

    name: str
    cost: ModelCost
    endpoint: str | None = None
    api_key_env: str | None = None
    tags: tuple[str, ...] = ()
    enabled: bool = True
    revision: int = 0
    created_at: str = ""
    updated_at: str = ""
    #: The ``model`` field the endpoint expects, when it differs from ``name`` (None: ``name``).
    #: Last, so that positional construction written for schema version 1 still works.
    upstream_model: str | None = None

    def __post_init__(self) -> None:
        check_model_name(self.name)
        object.__setattr__(self, "endpoint", check_endpoint(self.endpoint))
        check_upstream_model(self.upstream_model, self.endpoint, self.name)
        object.__setattr__(self, "api_key_env", check_api_key_env(self.api_key_env))
        tags = tuple(self.tags)
        if not all(isinstance(tag, str) and tag.strip() for tag in tags):
            raise RegistryError(f"model {self.name!r}: tags must be non-empty strings, got {tags}")
        object.__setattr__(self, "tags", tags)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the API key itself is never part of a record)."""
        return {
            "name": self.name,
            "cost_per_query": self.cost.per_query,
            "cost_per_1k_input": self.cost.per_1k_input,
            "cost_per_1k_output": self.cost.per_1k_output,
            "expected_output_tokens": self.cost.expected_output_tokens,
            "endpoint": self.endpoint,
            "upstream_model": self.upstream_model,
            "api_key_env": self.api_key_env,
            "tags": list(self.tags),
            "enabled": self.enabled,
            "revision": self.revision,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class Binding:
    """The artifact a registry's scores refer to: its id and a fingerprint of its prompt ids."""

    artifact_id: str
    prompts_fingerprint: str


def prompts_fingerprint(prompt_ids: Iterable[str]) -> str:
    """Order-independent fingerprint of a set of representative prompt ids."""
    digest = hashlib.sha256()
    for prompt_id in sorted(str(p) for p in prompt_ids):
        digest.update(prompt_id.encode("utf-8") + b"\0")
    return digest.hexdigest()[:32]


@dataclass
class NewModel:
    """A model to add: its record, scores by prompt id, and Psi per artifact id."""

    record: ModelRecord
    scores: Mapping[str, float]
    features: Mapping[str, np.ndarray] = field(default_factory=dict)


def _psi_bytes(psi: np.ndarray, label: str) -> bytes:
    array = np.asarray(psi, dtype="<f8").reshape(-1)
    if array.size == 0 or not np.isfinite(array).all():
        raise RegistryError(f"{label}: Psi must be a non-empty vector of finite numbers")
    return array.tobytes()


def _check_scores(name: str, scores: Mapping[str, float]) -> list[tuple[str, str, float]]:
    rows = []
    for prompt_id, score in scores.items():
        try:
            value = float(score)
        except (TypeError, ValueError):
            raise RegistryError(
                f"model {name!r}: score for prompt {prompt_id!r} is not a number: {score!r}"
            ) from None
        if math.isnan(value):
            continue  # missing: stored as no row
        if not 0.0 <= value <= 1.0:
            raise RegistryError(
                f"model {name!r}: score {value} for prompt {prompt_id!r} is outside [0, 1]"
            )
        rows.append((name, str(prompt_id), value))
    if not rows:
        raise RegistryError(f"model {name!r}: no score on any representative prompt")
    return rows


# ---------------------------------------------------------------------------- the registry
class Registry:
    """The pool of routable models in one SQLite file (created on first open).

    One instance may be shared by threads (calls are serialised); any number of processes may open
    the same file at once.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        timeout: float = 30.0,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StateError(f"{self.path}: is a directory, expected a registry file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._connection = sqlite3.connect(
                str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self._connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            mode = self._connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StateError(f"{self.path}: could not switch the registry to WAL mode ({mode})")
            self._connection.execute("PRAGMA synchronous = FULL")
            self._connection.execute("PRAGMA foreign_keys = ON")
            self.schema_version = migrate(self._connection, migrations, source=str(self.path))
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                self._connection.close()
            raise StateError(f"{self.path}: not a readable registry database ({exc})") from None

    # -------------------------------------------------------------- connection plumbing
    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._connection.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({str(self.path)!r})"

    @contextlib.contextmanager
    def _write(self, *, notify: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction, all or nothing; ``notify`` also bumps pool_version."""
        with self._lock:
            connection = self._connection
            try:
                connection.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StateError(f"{self.path}: cannot start a write ({exc})") from None
            try:
                yield connection
                if notify:
                    connection.execute(
                        "UPDATE meta SET value = CAST(value AS INTEGER) + 1"
                        " WHERE key = 'pool_version'"
                    )
                connection.execute("COMMIT")
            except sqlite3.Error as exc:
                connection.execute("ROLLBACK")
                raise StateError(f"{self.path}: write failed ({exc})") from None
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so several SELECTs see one consistent snapshot."""
        with self._lock:
            connection = self._connection
            connection.execute("BEGIN")
            try:
                yield connection
            finally:
                connection.execute("COMMIT")

    # -------------------------------------------------------------- meta
    def pool_version(self) -> int:
        """Counter bumped by every change; compare it to notice changes cheaply."""
        with self._lock:
            row = self._connection.execute(
                "SELECT value FROM meta WHERE key = 'pool_version'"
            ).fetchone()
        return int(row[0])

    def binding(self) -> Binding | None:
        """The artifact this registry's scores refer to, or None before the first bind."""
        with self._read() as connection:
            meta = dict(
                connection.execute(
                    "SELECT key, value FROM meta"
                    " WHERE key IN ('artifact_id', 'prompts_fingerprint')"
                ).fetchall()
            )
        if "artifact_id" not in meta:
            return None
        return Binding(meta["artifact_id"], meta["prompts_fingerprint"])

    def bind(self, artifact_id: str, prompt_ids: Iterable[str]) -> Binding:
        """Tie the registry to an artifact; refuses one with other representative prompts."""
        fingerprint = prompts_fingerprint(prompt_ids)
        current = self.binding()
        if (
            current is not None
            and current.prompts_fingerprint != fingerprint
            and self.list_models()
        ):
            raise StateError(
                f"{self.path}: its models were scored on the representative prompts of artifact "
                f"{current.artifact_id}, which differ from those of artifact {artifact_id}; "
                "use a new registry file for this artifact"
            )
        if current == Binding(artifact_id, fingerprint):
            return current
        with self._write() as connection:
            connection.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [("artifact_id", artifact_id), ("prompts_fingerprint", fingerprint)],
            )
        return Binding(artifact_id, fingerprint)

    # -------------------------------------------------------------- models
    def add_model(
        self,
        record: ModelRecord,
        scores: Mapping[str, float],
        features: Mapping[str, np.ndarray] | None = None,
        *,
        replace: bool = False,
    ) -> ModelRecord:
        """Add a model with its scores and Psi in one transaction; returns the stored record."""
        return self.add_models([NewModel(record, scores, features or {})], replace=replace)[0]

    def add_models(self, models: Sequence[NewModel], *, replace: bool = False) -> list[ModelRecord]:
        """Add several models atomically (all or none); ``replace`` overwrites existing ones."""
        names = [m.record.name for m in models]
        if len(set(names)) != len(names):
            raise RegistryError(f"the same model is given twice in {names}")
        prepared = []
        for model in models:
            name = model.record.name
            score_rows = _check_scores(name, model.scores)
            feature_rows = [
                (name, artifact_id, _psi_bytes(psi, f"model {name!r}, artifact {artifact_id}"))
                for artifact_id, psi in model.features.items()
            ]
            prepared.append((model.record, score_rows, feature_rows))
        stored = []
        with self._write() as connection:
            version = self._next_version(connection)
            now = _now()
            for record, score_rows, feature_rows in prepared:
                existing = connection.execute(
                    "SELECT created_at FROM models WHERE name = ?", (record.name,)
                ).fetchone()
                if existing and not replace:
                    raise RegistryError(
                        f"model {record.name!r} is already in the registry {self.path}; remove it "
                        "first or replace it"
                    )
                created = existing[0] if existing else now
                if existing:
                    connection.execute("DELETE FROM models WHERE name = ?", (record.name,))
                new = _with_times(record, revision=version, created=created, updated=now)
                connection.execute(
                    f"INSERT INTO models ({_MODEL_COLUMNS})"
                    f" VALUES ({', '.join('?' * len(_MODEL_COLUMN_NAMES))})",
                    _record_row(new),
                )
                connection.executemany(
                    "INSERT INTO scores (model, prompt_id, score) VALUES (?, ?, ?)", score_rows
                )
                connection.executemany(
                    "INSERT INTO features (model, artifact_id, psi) VALUES (?, ?, ?)", feature_rows
                )
                stored.append(new)
        return stored

    def remove_model(self, name: str) -> None:
        """Delete a model with its scores and Psi."""
        with self._write() as connection:
            cursor = connection.execute("DELETE FROM models WHERE name = ?", (name,))
            if cursor.rowcount == 0:
                raise self._unknown(connection, name)

    def set_enabled(self, name: str, enabled: bool) -> ModelRecord:
        """Enable or disable a model (a disabled model is kept but never routed to)."""
        with self._write() as connection:
            cursor = connection.execute(
                "UPDATE models SET enabled = ?, updated_at = ? WHERE name = ?",
                (int(bool(enabled)), _now(), name),
            )
            if cursor.rowcount == 0:
                raise self._unknown(connection, name)
        return self.get_model(name)

    def set_cost(self, name: str, cost: ModelCost) -> ModelRecord:
        """Change a model's price."""
        with self._write() as connection:
            version = self._next_version(connection)
            cursor = connection.execute(
                "UPDATE models SET cost_per_query = ?, cost_per_1k_input = ?,"
                " cost_per_1k_output = ?, expected_output_tokens = ?, revision = ?,"
                " updated_at = ? WHERE name = ?",
                (
                    cost.per_query,
                    cost.per_1k_input,
                    cost.per_1k_output,
                    cost.expected_output_tokens,
                    version,
                    _now(),
                    name,
                ),
            )
            if cursor.rowcount == 0:
                raise self._unknown(connection, name)
        return self.get_model(name)

    def get_model(self, name: str) -> ModelRecord:
        """One model's record, with a clear error when it is unknown."""
        with self._read() as connection:
            row = connection.execute(f"{_SELECT_MODELS} WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise self._unknown(connection, name)
        return _record_from_row(row)

    def has_model(self, name: str) -> bool:
        """Whether a model of this name is registered."""
        with self._lock:
            row = self._connection.execute(
                "SELECT 1 FROM models WHERE name = ?", (name,)
            ).fetchone()
        return row is not None

    def list_models(self, *, enabled_only: bool = False) -> list[ModelRecord]:
        """Every model (or only enabled ones), by name."""
        where = " WHERE enabled = 1" if enabled_only else ""
        with self._read() as connection:
            rows = connection.execute(f"{_SELECT_MODELS}{where} ORDER BY name").fetchall()
        return [_record_from_row(row) for row in rows]

    def score_counts(self) -> dict[str, int]:
        """Number of stored (non-missing) scores per model."""
        with self._read() as connection:
            rows = connection.execute(
                "SELECT model, COUNT(*) FROM scores GROUP BY model"
            ).fetchall()
        return dict(rows)

    def get_scores(self, name: str) -> dict[str, float]:
        """A model's stored scores by prompt id (missing ones are absent)."""
        with self._read() as connection:
            if (
                connection.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone()
                is None
            ):
                raise self._unknown(connection, name)
            rows = connection.execute(
                "SELECT prompt_id, score FROM scores WHERE model = ?", (name,)
            ).fetchall()
        return dict(rows)

    def scores_matrix(self, names: Sequence[str], prompt_ids: Sequence[str]) -> np.ndarray:
        """Scores as a (len(prompt_ids), len(names)) array; NaN where a score is missing."""
        row_of = {str(p): i for i, p in enumerate(prompt_ids)}
        matrix = np.full((len(prompt_ids), len(names)), np.nan)
        with self._read() as connection:
            for j, name in enumerate(names):
                rows = connection.execute(
                    "SELECT prompt_id, score FROM scores WHERE model = ?", (name,)
                ).fetchall()
                for prompt_id, score in rows:
                    i = row_of.get(prompt_id)
                    if i is not None:
                        matrix[i, j] = score
        return matrix

    def get_features(
        self, artifact_id: str, names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Stored Psi vectors for one artifact, by model name (models without one are absent)."""
        with self._read() as connection:
            rows = connection.execute(
                "SELECT model, psi FROM features WHERE artifact_id = ?", (artifact_id,)
            ).fetchall()
        wanted = None if names is None else set(names)
        return {
            model: np.frombuffer(blob, dtype="<f8").astype(float)
            for model, blob in rows
            if wanted is None or model in wanted
        }

    def set_features(
        self, artifact_id: str, features: Mapping[str, np.ndarray], *, notify: bool = False
    ) -> None:
        """Store (or overwrite) Psi vectors of existing models for one artifact.

        Psi is derived from the stored scores, so by default this does not count as a pool
        change (``notify=False`` leaves pool_version alone).
        """
        rows = [
            (name, artifact_id, _psi_bytes(psi, f"model {name!r}, artifact {artifact_id}"))
            for name, psi in features.items()
        ]
        with self._write(notify=notify) as connection:
            for name, _, _ in rows:
                if (
                    connection.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone()
                    is None
                ):
                    raise self._unknown(connection, name)
            connection.executemany(
                "INSERT OR REPLACE INTO features (model, artifact_id, psi) VALUES (?, ?, ?)", rows
            )

    def pool_fingerprint(self, artifact_id: str) -> str:
        """Identifies the routable pool (enabled models and their revisions) for one artifact."""
        with self._read() as connection:
            rows = connection.execute(
                "SELECT name, revision FROM models WHERE enabled = 1 ORDER BY name"
            ).fetchall()
        return pool_fingerprint(artifact_id, rows)

    # -------------------------------------------------------------- policy
    def get_policy(self) -> Policy | None:
        """The stored default policy, if any."""
        with self._read() as connection:
            row = connection.execute("SELECT body FROM policy WHERE id = 1").fetchone()
        if row is None:
            return None
        try:
            return Policy.from_dict(json.loads(row[0]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise StateError(
                f"{self.path}: the stored default policy is unreadable ({exc})"
            ) from None

    def set_policy(self, policy: Policy, *, notify: bool = True) -> None:
        """Store the default policy (replacing any previous one).

        ``notify=False`` leaves pool_version alone: for a policy solved again from the stored
        target, which every reader would derive identically.
        """
        body = json.dumps(policy.to_dict(), sort_keys=True)
        with self._write(notify=notify) as connection:
            connection.execute(
                "INSERT OR REPLACE INTO policy (id, body, updated_at) VALUES (1, ?, ?)",
                (body, _now()),
            )

    def clear_policy(self) -> None:
        """Forget the default policy."""
        with self._write() as connection:
            connection.execute("DELETE FROM policy")

    # -------------------------------------------------------------- internals
    @staticmethod
    def _next_version(connection: sqlite3.Connection) -> int:
        row = connection.execute("SELECT value FROM meta WHERE key = 'pool_version'").fetchone()
        return int(row[0]) + 1

    def _unknown(self, connection: sqlite3.Connection, name: str) -> RegistryError:
        names = [row[0] for row in connection.execute("SELECT name FROM models ORDER BY name")]
        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        return RegistryError(
            f"no model {name!r} in the registry {self.path} (models: {shown or 'none'})"
        )


def pool_fingerprint(artifact_id: str, models: Iterable[tuple[str, int]]) -> str:
    """Fingerprint of (artifact, sorted (name, revision) pairs) of the routable models."""
    digest = hashlib.sha256(artifact_id.encode("utf-8") + b"\0")
    for name, revision in sorted(models):
        digest.update(f"{name}\0{int(revision)}\0".encode())
    return digest.hexdigest()[:32]


# The order of _record_row and _record_from_row.
_MODEL_COLUMN_NAMES = (
    "name",
    "cost_per_query",
    "cost_per_1k_input",
    "cost_per_1k_output",
    "expected_output_tokens",
    "endpoint",
    "upstream_model",
    "api_key_env",
    "tags",
    "enabled",
    "revision",
    "created_at",
    "updated_at",
)
_MODEL_COLUMNS = ", ".join(_MODEL_COLUMN_NAMES)
_SELECT_MODELS = f"SELECT {_MODEL_COLUMNS} FROM models"


def _record_row(record: ModelRecord) -> tuple:
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
        int(record.enabled),
        record.revision,
        record.created_at,
        record.updated_at,
    )


def _record_from_row(row: tuple) -> ModelRecord:
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
        enabled=bool(enabled),
        revision=int(revision),
        created_at=created,
        updated_at=updated,
    )


def _with_times(record: ModelRecord, *, revision: int, created: str, updated: str) -> ModelRecord:
    return replace(record, revision=revision, created_at=created, updated_at=updated)


# ---------------------------------------------------------------------------- scores files
def read_scores_file(path: str | Path) -> dict[str, float]:
    """Read a model's scores from CSV (columns prompt_id, score) or JSON Lines ({prompt_id, score}).

    An empty score cell (or JSON null) is a missing score and is skipped; any other bad value raises
    DataError naming the file and the line (as an editor numbers it, the CSV header being line 1).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: scores file not found")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        records = _scores_jsonl(path)
    elif suffix in (".csv", ".tsv"):
        records = _scores_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
    else:
        raise DataError(f"{path}: unknown scores file type {suffix!r}; use .csv or .jsonl")
    scores: dict[str, float] = {}
    for line_number, prompt_id, raw in records:
        where = f"{path}, line {line_number}"
        if prompt_id is None or str(prompt_id).strip() == "":
            raise DataError(f"{where}: empty prompt_id")
        prompt_id = str(prompt_id).strip()
        if prompt_id in scores:
            raise DataError(f"{where}: prompt_id {prompt_id!r} appears twice")
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise DataError(f"{where}: score {raw!r} is not a number") from None
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise DataError(f"{where}: score {raw!r} is outside [0, 1]")
        scores[prompt_id] = value
    if not scores:
        raise DataError(f"{path}: no scores found")
    return scores


def _scores_csv(path: Path, delimiter: str) -> Iterator[tuple[int, Any, Any]]:
    """(line number, prompt_id, score cell) per data row; a short row is an error, not missing."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            columns = reader.fieldnames or []
            missing = [c for c in ("prompt_id", "score") if c not in columns]
            if missing:
                raise DataError(
                    f"{path}: missing column(s) {missing}; the header must name prompt_id and score"
                )
            for row in reader:
                # DictReader fills the cells of a row cut short with None (an empty cell is "").
                if row["prompt_id"] is None or row["score"] is None:
                    raise DataError(
                        f"{path}, line {reader.line_num}: the row ends before its prompt_id and "
                        "score columns"
                    )
                yield reader.line_num, row["prompt_id"], row["score"]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not readable as CSV ({exc})") from None


def _scores_jsonl(path: Path) -> Iterator[tuple[int, Any, Any]]:
    """(line number, prompt_id, score) per object of a JSON Lines file."""
    for line_number, record in iter_jsonl_objects(path):
        if "prompt_id" not in record or "score" not in record:
            raise DataError(
                f"{path}, line {line_number}: expected an object with prompt_id and score"
            )
        yield line_number, record["prompt_id"], record["score"]


@dataclass(frozen=True)
class AlignedScores:
    """Scores aligned to the representative prompts, and the ids that matched none."""

    values: np.ndarray
    unknown_ids: list[str]
    n_matched: int


def align_scores(
    scores: Mapping[str, float], prompt_ids: Sequence[str], source: str
) -> AlignedScores:
    """Place scores in representative-prompt order (NaN where absent); error if none matches."""
    row_of = {str(p): i for i, p in enumerate(prompt_ids)}
    values = np.full(len(prompt_ids), np.nan)
    unknown = []
    for prompt_id, score in scores.items():
        i = row_of.get(str(prompt_id))
        if i is None:
            unknown.append(str(prompt_id))
        else:
            values[i] = score
    matched = len(scores) - len(unknown)
    if matched == 0:
        raise DataError(
            f"{source}: none of its {len(scores)} prompt ids is a representative prompt of the "
            f"artifact (first ids: {list(scores)[:3]}; expected ids such as {list(prompt_ids)[:3]})"
        )
    return AlignedScores(values=values, unknown_ids=unknown, n_matched=matched)
