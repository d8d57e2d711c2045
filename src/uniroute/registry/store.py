"""The model-pool registry: every routable model, its scores and Psi, in SQLite or PostgreSQL.

Layout (schema version 4; SQLite keeps it in ``PRAGMA user_version``, PostgreSQL in a
``schema_version`` table):

* ``models``: name, price (per query or per 1k input/output tokens), optional endpoint, the
  model name the endpoint expects (``upstream_model``; NULL = the pool name) and the *name* of
  the environment variable holding its API key, tags, enabled flag, ``revision`` (the pool
  version at which its scores or price last changed), creation and update times;
* ``scores``: (model, prompt_id, score) for the representative prompts; a missing score has no
  row and reads back as NaN;
* ``answers``: (model, prompt_id, answer_key, raw, raw_chars) for the representative prompts
  the model answered: the canonical key agreement is decided on (NULL when the answer held
  nothing comparable) and the raw text, cut to ``MAX_RAW_ANSWER_CHARS`` (``raw_chars``: its
  full length); a prompt the model did not answer has no row;
* ``features``: (model, artifact_id, psi) — Psi(h) as little-endian float64 bytes, per artifact,
  because Psi depends on the router that computed it;
* ``policy``: the calibrated default policy (one row, JSON);
* ``jobs``: background jobs (endpoint onboarding) with their progress and the lease of the
  process running them, and ``answer_cache``: the raw answers endpoints gave them, both outside
  the pool's revision (``uniroute.registry.jobs``, ``uniroute.registry.answer_cache``);
* ``meta``: the artifact the registry is bound to, a fingerprint of its representative prompt ids,
  and ``pool_version``, bumped by every change so a server notices changes with one cheap read.

Where the registry lives is the backend's business (``sqlite_backend.SqliteBackend``: a file in
WAL mode; ``postgres_backend.PostgresBackend``: a database, for ``postgresql://`` URLs): each
gives this class a write transaction (writers take turns; all or nothing), a read transaction (one
consistent snapshot), and one-line ``StateError``s for its driver's errors. The statements below
are the same on both: ``?`` placeholders, ``INSERT … ON CONFLICT … DO UPDATE`` upserts, and the
backend's ``JSON_LIST`` where a list of names is bound as one JSON value. A process killed
mid-write leaves the previous state, never a half-written model.

This module holds the ``Registry`` class only: the tables and their migrations are in
``uniroute.registry.schema``, the records and their field checks in ``uniroute.registry.records``,
and the scores files models are added from in ``uniroute.registry.score_files``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace as with_fields
from pathlib import Path
from types import EllipsisType
from typing import Any

import numpy as np

from uniroute.errors import ModelExistsError, ModelNotFoundError, RegistryError, StateError
from uniroute.registry.answer_cache import RegistryAnswerCache
from uniroute.registry.backend import Backend, OnChange, Watcher
from uniroute.registry.calibration import Policy
from uniroute.registry.costs import ModelCost
from uniroute.registry.jobs import JobStore
from uniroute.registry.keys import KeyStore
from uniroute.registry.records import (
    Binding,
    ModelAnswer,
    ModelRecord,
    NewModel,
    check_answers,
    check_scores,
    pool_fingerprint,
    prompts_fingerprint,
    psi_bytes,
)
from uniroute.registry.schema import (
    INSERT_MODEL,
    MIGRATIONS,
    SELECT_MODELS,
    Migration,
    now,
    record_from_row,
    record_row,
)
from uniroute.registry.sessions import SessionStore
from uniroute.registry.sqlite_backend import SqliteBackend

# Both dialects read CAST(... AS INTEGER) and store the counter back as text in meta.value.
_BUMP_POOL_VERSION = (
    "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'pool_version'"
)


def is_registry_url(location: str | Path) -> bool:
    """Whether a registry location is a PostgreSQL URL (``postgresql://``, ``postgres://``).

    A URL that went through ``pathlib.Path`` (``postgresql:/user@host/db``) counts too.
    """
    scheme, sep, _ = str(location).partition(":/")
    # The schemes postgres_backend.URL_SCHEMES names; not imported, so that an SQLite registry
    # never loads the PostgreSQL driver.
    return bool(sep) and scheme.lower() in ("postgresql", "postgres")


class Registry:
    """The pool of routable models: an SQLite file (created on first open) or, for a
    ``postgresql://user@host:port/db`` URL, a PostgreSQL database (its tables created on first
    open).

    One instance may be shared by threads; any number of processes may open the same registry
    at once. ``path`` names it in messages: the file, or the URL without its password.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        timeout: float = 30.0,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self._backend: Backend
        if is_registry_url(path):
            # Imported only here: an SQLite registry never loads the PostgreSQL driver.
            from uniroute.registry.postgres_backend import PostgresBackend, restore_url

            self._backend = PostgresBackend(
                restore_url(str(path)), timeout=timeout, migrations=migrations
            )
        else:
            self._backend = SqliteBackend(Path(path), timeout=timeout, migrations=migrations)
        self.path: Path | str = self._backend.location
        self.dialect: str = self._backend.dialect
        self.schema_version: int = self._backend.schema_version
        #: Background jobs (onboarding) every process on this registry sees and can resume.
        self.jobs = JobStore(self._backend)
        #: The answers endpoints gave during onboarding, so no prompt is asked twice.
        self.answer_cache = RegistryAnswerCache(self._backend)
        #: Virtual client keys, their limits and what they used (every replica's requests).
        self.keys = KeyStore(self._backend)
        #: Conversations' sessions (the model that answered their last turn).
        self.sessions = SessionStore(self._backend)

    # -------------------------------------------------------------- connection plumbing
    def close(self) -> None:
        """Close the database connection(s)."""
        self._backend.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({str(self.path)!r})"

    @contextlib.contextmanager
    def _write(self, *, notify: bool = True) -> Iterator[Any]:
        """One write transaction, all or nothing; ``notify`` also bumps pool_version."""
        with self._backend.write() as connection:
            yield connection
            if notify:
                connection.execute(_BUMP_POOL_VERSION)
                # In the same transaction: PostgreSQL delivers it at commit, never on rollback.
                self._backend.announce(connection)

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        """A read transaction, so several SELECTs see one consistent snapshot."""
        with self._backend.read() as connection:
            yield connection

    def watch(self, on_change: OnChange) -> Watcher | None:
        """Call ``on_change`` soon after every committed change, from a thread of its own.

        PostgreSQL only: ``LISTEN`` on ``postgres_backend.NOTIFY_CHANNEL`` over one dedicated
        connection that reconnects by itself; ``on_change`` gets the new pool_version, or None
        after each (re)connection, when changes may have been missed. Returns the running
        watcher (``stop()`` it), or None for an SQLite file, whose changes are noticed by
        polling ``pool_version``.
        """
        return self._backend.watch(on_change)

    # -------------------------------------------------------------- meta
    def pool_version(self) -> int:
        """Counter bumped by every change; compare it to notice changes cheaply."""
        with self._backend.query() as connection:
            row = connection.execute("SELECT value FROM meta WHERE key = 'pool_version'").fetchone()
        return self._version_of(row)

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
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [("artifact_id", artifact_id), ("prompts_fingerprint", fingerprint)],
            )
        return Binding(artifact_id, fingerprint)

    # -------------------------------------------------------------- models
    def add_model(
        self,
        record: ModelRecord,
        scores: Mapping[str, float],
        features: Mapping[str, np.ndarray] | None = None,
        answers: Mapping[str, ModelAnswer] | None = None,
        *,
        replace: bool = False,
    ) -> ModelRecord:
        """Add a model with its scores, Psi and answers in one transaction; returns the record."""
        return self.add_models(
            [NewModel(record, scores, features or {}, answers or {})], replace=replace
        )[0]

    def add_models(self, models: Sequence[NewModel], *, replace: bool = False) -> list[ModelRecord]:
        """Add several models atomically (all or none); ``replace`` overwrites existing ones."""
        names = [m.record.name for m in models]
        if len(set(names)) != len(names):
            raise RegistryError(f"the same model is given twice in {names}")
        prepared = []
        for model in models:
            name = model.record.name
            if model.record.problem:  # a row read back from an older version, never rewritten
                raise RegistryError(f"model {name!r} cannot be stored: {model.record.problem}")
            score_rows = check_scores(name, model.scores)
            feature_rows = [
                (name, artifact_id, psi_bytes(psi, f"model {name!r}, artifact {artifact_id}"))
                for artifact_id, psi in model.features.items()
            ]
            answer_rows = check_answers(name, model.answers)
            prepared.append((model.record, score_rows, feature_rows, answer_rows))
        stored = []
        with self._write() as connection:
            version = self._next_version(connection)
            stamp = now()
            for record, score_rows, feature_rows, answer_rows in prepared:
                existing = connection.execute(
                    "SELECT created_at FROM models WHERE name = ?", (record.name,)
                ).fetchone()
                if existing and not replace:
                    raise self._exists(record.name)
                created = existing[0] if existing else stamp
                if existing:
                    connection.execute("DELETE FROM models WHERE name = ?", (record.name,))
                new = with_fields(record, revision=version, created_at=created, updated_at=stamp)
                try:
                    connection.execute(INSERT_MODEL, record_row(new))
                except self._backend.integrity_error as exc:
                    # The name appeared after the check above: this transaction lost a race to
                    # another writer (one that does not take the write lock before checking, or
                    # a stale check). Still "already registered", not a failed write.
                    if not self._backend.is_duplicate_key(exc):
                        raise
                    raise self._exists(record.name) from None
                connection.executemany(
                    "INSERT INTO scores (model, prompt_id, score) VALUES (?, ?, ?)", score_rows
                )
                connection.executemany(
                    "INSERT INTO features (model, artifact_id, psi) VALUES (?, ?, ?)", feature_rows
                )
                connection.executemany(
                    "INSERT INTO answers (model, prompt_id, answer_key, raw, raw_chars)"
                    " VALUES (?, ?, ?, ?, ?)",
                    answer_rows,
                )
                stored.append(new)
        return stored

    def remove_model(self, name: str) -> None:
        """Delete a model with its scores, Psi and answers."""
        with self._write() as connection:
            cursor = connection.execute("DELETE FROM models WHERE name = ?", (name,))
            if cursor.rowcount == 0:
                raise self._unknown(connection, name)

    def set_enabled(self, name: str, enabled: bool) -> ModelRecord:
        """Enable or disable a model (a disabled model is kept but never routed to)."""
        with self._write() as connection:
            cursor = connection.execute(
                "UPDATE models SET enabled = ?, updated_at = ? WHERE name = ?",
                (int(bool(enabled)), now(), name),
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
                    now(),
                    name,
                ),
            )
            if cursor.rowcount == 0:
                raise self._unknown(connection, name)
        return self.get_model(name)

    def set_capabilities(
        self,
        name: str,
        *,
        capabilities: Iterable[str] | EllipsisType = ...,
        context_window: int | None | EllipsisType = ...,
        max_output_tokens: int | None | EllipsisType = ...,
    ) -> ModelRecord:
        """Change what a model can do (``CAPABILITIES``; an empty list clears them) and its
        token limits (None: not known); a field left out (``...``) is kept. One transaction:
        the record is read, checked with the record's own rules and written."""
        changes: dict[str, Any] = {}
        if capabilities is not ...:
            if isinstance(capabilities, str) or not isinstance(capabilities, Iterable):
                raise RegistryError(
                    f"model {name!r}: capabilities must be a list of names, got {capabilities!r}"
                )
            changes["capabilities"] = tuple(capabilities)
        if context_window is not ...:
            changes["context_window"] = context_window
        if max_output_tokens is not ...:
            changes["max_output_tokens"] = max_output_tokens
        with self._write() as connection:
            row = connection.execute(f"{SELECT_MODELS} WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise self._unknown(connection, name)
            # Built with the record's own checks: an unknown capability or a bad limit is refused.
            record = with_fields(record_from_row(row), **changes)
            connection.execute(
                "UPDATE models SET capabilities = ?, context_window = ?, max_output_tokens = ?,"
                " updated_at = ? WHERE name = ?",
                (
                    json.dumps(list(record.capabilities)),
                    record.context_window,
                    record.max_output_tokens,
                    now(),
                    name,
                ),
            )
        return self.get_model(name)

    def get_model(self, name: str) -> ModelRecord:
        """One model's record, with a clear error when it is unknown."""
        with self._read() as connection:
            row = connection.execute(f"{SELECT_MODELS} WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise self._unknown(connection, name)
        return record_from_row(row)

    def has_model(self, name: str) -> bool:
        """Whether a model of this name is registered."""
        with self._backend.query() as connection:
            row = connection.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone()
        return row is not None

    def list_models(self, *, enabled_only: bool = False) -> list[ModelRecord]:
        """Every model (or only enabled ones), by name."""
        where = " WHERE enabled = 1" if enabled_only else ""
        with self._read() as connection:
            rows = connection.execute(f"{SELECT_MODELS}{where} ORDER BY name").fetchall()
        return [record_from_row(row) for row in rows]

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
            self._check_known(connection, name)
            rows = connection.execute(
                "SELECT prompt_id, score FROM scores WHERE model = ?", (name,)
            ).fetchall()
        return dict(rows)

    def get_answers(self, name: str) -> dict[str, ModelAnswer]:
        """A model's recorded answers by prompt id (prompts it did not answer are absent)."""
        with self._read() as connection:
            self._check_known(connection, name)
            rows = connection.execute(
                "SELECT prompt_id, answer_key, raw, raw_chars FROM answers WHERE model = ?",
                (name,),
            ).fetchall()
        return {prompt_id: ModelAnswer(key, raw, chars) for prompt_id, key, raw, chars in rows}

    def answer_count(self, name: str) -> tuple[int, int]:
        """(answers recorded, of which with a canonical key) for one model."""
        with self._read() as connection:
            self._check_known(connection, name)
            row = connection.execute(
                "SELECT COUNT(*), COUNT(answer_key) FROM answers WHERE model = ?", (name,)
            ).fetchone()
        return int(row[0]), int(row[1])

    def answers_matrix(
        self, names: Sequence[str], prompt_ids: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Answer keys as a (len(prompt_ids), len(names)) object array, and answers per model.

        An entry is the canonical key (str) or None (no answer, or nothing comparable in it);
        the second array counts each model's recorded answers on these prompts. One query.
        """
        row_of = {str(p): i for i, p in enumerate(prompt_ids)}
        column_of = {name: j for j, name in enumerate(names)}
        keys = np.full((len(prompt_ids), len(names)), None, dtype=object)
        recorded = np.zeros(len(names), dtype=int)
        if not names:
            return keys, recorded
        for model, prompt_id, key in self._model_rows("answers", "answer_key", column_of):
            i = row_of.get(prompt_id)
            if i is not None:
                j = column_of[model]
                keys[i, j] = key
                recorded[j] += 1
        return keys, recorded

    def scores_matrix(self, names: Sequence[str], prompt_ids: Sequence[str]) -> np.ndarray:
        """Scores as a (len(prompt_ids), len(names)) array; NaN where a score is missing."""
        row_of = {str(p): i for i, p in enumerate(prompt_ids)}
        columns_of: dict[str, list[int]] = {}
        for j, name in enumerate(names):
            columns_of.setdefault(name, []).append(j)
        matrix = np.full((len(prompt_ids), len(names)), np.nan)
        if not columns_of:
            return matrix
        for model, prompt_id, score in self._model_rows("scores", "score", columns_of):
            i = row_of.get(prompt_id)
            if i is not None:
                matrix[i, columns_of[model]] = score
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
            (name, artifact_id, psi_bytes(psi, f"model {name!r}, artifact {artifact_id}"))
            for name, psi in features.items()
        ]
        with self._write(notify=notify) as connection:
            for name, _, _ in rows:
                self._check_known(connection, name)
            connection.executemany(
                "INSERT INTO features (model, artifact_id, psi) VALUES (?, ?, ?)"
                " ON CONFLICT (model, artifact_id) DO UPDATE SET psi = excluded.psi",
                rows,
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
                "INSERT INTO policy (id, body, updated_at) VALUES (1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET body = excluded.body,"
                " updated_at = excluded.updated_at",
                (body, now()),
            )

    # -------------------------------------------------------------- internals
    def _next_version(self, connection: Any) -> int:
        row = connection.execute("SELECT value FROM meta WHERE key = 'pool_version'").fetchone()
        return self._version_of(row) + 1

    def _version_of(self, row: tuple | None) -> int:
        """The pool_version read from meta; a StateError when it is missing or not a number."""
        value = None if row is None else row[0]
        if isinstance(value, int | str):
            with contextlib.suppress(ValueError):
                return int(value)
        shown = "missing" if row is None else repr(value)
        raise StateError(
            f"{self.path}: not a readable registry database: its pool_version is {shown}"
        )

    def _model_rows(self, table: str, column: str, names: Iterable[str]) -> list[Any]:
        """(model, prompt_id, ``column``) rows of a per-prompt ``table`` for these models.

        One query for the whole pool, the names bound as one JSON list: no limit on the pool's
        size, and no round trip per model, which would dominate loading a large pool from a
        database server. ``table`` and ``column`` are this module's own names, never input.
        """
        with self._read() as connection:
            return connection.execute(
                f"SELECT model, prompt_id, {column} FROM {table}"
                f" WHERE model IN ({self._backend.JSON_LIST})",
                (json.dumps(list(names)),),
            ).fetchall()

    def _check_known(self, connection: Any, name: str) -> None:
        """Raise ModelNotFoundError (listing the models) unless ``name`` is registered."""
        if connection.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone() is None:
            raise self._unknown(connection, name)

    def _unknown(self, connection: Any, name: str) -> ModelNotFoundError:
        names = [row[0] for row in connection.execute("SELECT name FROM models ORDER BY name")]
        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        return ModelNotFoundError(
            f"no model {name!r} in the registry {self.path} (models: {shown or 'none'})"
        )

    def _exists(self, name: str) -> ModelExistsError:
        return ModelExistsError(
            f"model {name!r} is already in the registry {self.path}; remove it first or replace it"
        )
