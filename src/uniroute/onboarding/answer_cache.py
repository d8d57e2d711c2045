"""A resumable cache of the raw answers a model's endpoint gave to representative prompts.

Keyed by (model, endpoint, prompt_id), each answer committed as it arrives, so an onboarding run
that is interrupted (killed, endpoint down, Ctrl-C) asks only the prompts still missing when it
is run again. An entry also records a hash of the prompt text and of the request settings (API
style, max_tokens, temperature, upstream model): when either changed, the entry is stale and the
prompt is asked again.

``AnswerStore`` is what onboarding needs of a cache; ``AnswerCache`` here is one SQLite file (WAL)
for onboarding without a registry, and the registry holds the same table for every process that
shares it (``uniroute.registry.answer_cache``), with the statements below.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol

from uniroute.errors import StateError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    prompt_sha256 TEXT NOT NULL,
    settings_sha256 TEXT NOT NULL,
    answer TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (model, endpoint, prompt_id)
)
"""


def text_sha256(text: str) -> str:
    """Hex SHA-256 of a text's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def settings_sha256(settings: Mapping[str, object]) -> str:
    """A stable hash of request settings that change what an endpoint answers."""
    return text_sha256(json.dumps(dict(settings), sort_keys=True, default=str))


def normalise_endpoint(base_url: str) -> str:
    """The endpoint part of a cache key: the base URL without a trailing slash."""
    return str(base_url).strip().rstrip("/")


#: The statements of a cache table (``answers`` in a cache file, ``answer_cache`` in a
#: registry), with ``?`` placeholders, as both SQLite and the registry's connections take them.
SELECT_ANSWERS = (
    "SELECT prompt_id, prompt_sha256, settings_sha256, answer FROM {table} "
    "WHERE model = ? AND endpoint = ?"
)
UPSERT_ANSWER = (
    "INSERT INTO {table} (model, endpoint, prompt_id, prompt_sha256, settings_sha256, answer, "
    "created) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model, endpoint, prompt_id) DO UPDATE "
    "SET prompt_sha256 = excluded.prompt_sha256, settings_sha256 = excluded.settings_sha256, "
    "answer = excluded.answer, created = excluded.created"
)


def selection(
    verb: str, table: str, model: str | None, endpoint: str | None
) -> tuple[str, list[str]]:
    """``verb`` (``SELECT COUNT(*)``, ``DELETE``) over a cache table's rows of one model and/or
    endpoint (all rows when both are None), with its parameters."""
    query, params = f"{verb} FROM {table} WHERE 1 = 1", []
    if model is not None:
        query += " AND model = ?"
        params.append(model)
    if endpoint is not None:
        query += " AND endpoint = ?"
        params.append(normalise_endpoint(endpoint))
    return query, params


class AnswerStore(Protocol):
    """What onboarding needs of an answer cache."""

    def get_many(
        self,
        model: str,
        endpoint: str,
        prompts: Iterable[tuple[str, str]],
        settings: Mapping[str, object],
    ) -> dict[str, str]:
        """Cached answers {prompt_id: answer} for (prompt_id, prompt_text) pairs still valid."""
        ...

    def put(
        self,
        model: str,
        endpoint: str,
        prompt_id: str,
        prompt_text: str,
        answer: str,
        settings: Mapping[str, object],
    ) -> None:
        """Store (or replace) one answer; committed before returning."""
        ...

    def clear(self, model: str, endpoint: str | None = None) -> int:
        """Forget a model's answers (from one endpoint, or all); returns how many were removed."""
        ...


def answer_row(
    model: str,
    endpoint: str,
    prompt_id: str,
    prompt_text: str,
    answer: str,
    settings: Mapping[str, object],
) -> tuple:
    """The values of ``UPSERT_ANSWER`` for one answer."""
    return (
        model,
        normalise_endpoint(endpoint),
        prompt_id,
        text_sha256(prompt_text),
        settings_sha256(settings),
        answer,
        time.time(),
    )


def still_valid(
    rows: Sequence[tuple], prompts: Iterable[tuple[str, str]], settings: Mapping[str, object]
) -> dict[str, str]:
    """{prompt_id: answer} of rows selected by ``SELECT_ANSWERS`` whose prompt text and
    settings hashes match the prompts and settings asked now."""
    wanted = {prompt_id: text_sha256(text) for prompt_id, text in prompts}
    settings_key = settings_sha256(settings)
    return {
        prompt_id: answer
        for prompt_id, prompt_hash, settings_hash, answer in rows
        if wanted.get(prompt_id) == prompt_hash and settings_hash == settings_key
    }


class AnswerCache:
    """Raw answers of endpoints to prompts, safe for several processes (WAL, busy timeout).

    Use as a context manager or call ``close()``. One instance may be shared by the threads of
    one process; writes are serialised by a lock.
    """

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._connection = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
            version = self._connection.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StateError(
                    f"{self.path}: answer cache schema version {version}, this uniroute reads "
                    f"version {SCHEMA_VERSION}; delete the file to start afresh"
                )
            if version == 0:
                self._connection.execute(_SCHEMA)
                self._connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{self.path}: not a usable answer cache ({exc})") from None

    def __enter__(self) -> AnswerCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._connection.close()

    def get_many(
        self,
        model: str,
        endpoint: str,
        prompts: Iterable[tuple[str, str]],
        settings: Mapping[str, object],
    ) -> dict[str, str]:
        """Cached answers {prompt_id: answer} for (prompt_id, prompt_text) pairs still valid."""
        with self._lock:
            rows = self._connection.execute(
                SELECT_ANSWERS.format(table="answers"), (model, normalise_endpoint(endpoint))
            ).fetchall()
        return still_valid(rows, prompts, settings)

    def put(
        self,
        model: str,
        endpoint: str,
        prompt_id: str,
        prompt_text: str,
        answer: str,
        settings: Mapping[str, object],
    ) -> None:
        """Store (or replace) one answer; committed before returning."""
        row = answer_row(model, endpoint, prompt_id, prompt_text, answer, settings)
        with self._lock:
            self._connection.execute(UPSERT_ANSWER.format(table="answers"), row)

    def count(self, model: str | None = None, endpoint: str | None = None) -> int:
        """Number of cached answers, optionally for one model and/or endpoint."""
        query, params = selection("SELECT COUNT(*)", "answers", model, endpoint)
        with self._lock:
            return int(self._connection.execute(query, params).fetchone()[0])

    def clear(self, model: str, endpoint: str | None = None) -> int:
        """Forget a model's answers (from one endpoint, or all); returns how many were removed."""
        query, params = selection("DELETE", "answers", model, endpoint)
        with self._lock:
            return self._connection.execute(query, params).rowcount
