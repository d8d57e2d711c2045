"""Conversations' sessions kept in the registry, so that every replica on it sees them.

A row says which model answered a conversation's last turn (with its estimated error then), how
many turns it had, and until when it counts (``expires``, Unix seconds: each turn moves it a
TTL ahead). Rows past their expiry are ignored and deleted now and then, so the table holds
only live conversations. Sessions are outside the pool's revision.
"""

from __future__ import annotations

import time

from uniroute.registry.backend import Backend

#: Expired rows are deleted at most this often (seconds), by whichever writer comes first.
_PURGE_EVERY_S = 60.0


class SessionStore:
    """The registry's ``sessions`` table: read a live session, record a turn."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._purged = 0.0

    def get(self, session_id: str) -> tuple[str, float | None, int] | None:
        """(model, its estimated error, turns so far) of a live session, or None."""
        with self._backend.query() as connection:
            row = connection.execute(
                "SELECT model, estimated_error, turns FROM sessions WHERE id = ? AND expires > ?",
                (session_id, time.time()),
            ).fetchone()
        return None if row is None else (row[0], row[1], int(row[2]))

    def record(
        self, session_id: str, model: str, estimated_error: float | None, ttl_s: float
    ) -> None:
        """Note that ``model`` answered a turn of the session; it lives ``ttl_s`` more seconds."""
        now = time.time()
        with self._backend.write_rows() as connection:
            connection.execute(
                "INSERT INTO sessions (id, model, estimated_error, turns, expires, updated) "
                "VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (id) DO UPDATE SET model = excluded.model, "
                "estimated_error = excluded.estimated_error, expires = excluded.expires, "
                "updated = excluded.updated, turns = CASE WHEN sessions.expires > ? "
                "THEN sessions.turns + 1 ELSE 1 END",
                (session_id, model, estimated_error, now + ttl_s, now, now),
            )
            if now - self._purged >= _PURGE_EVERY_S:
                self._purged = now
                connection.execute("DELETE FROM sessions WHERE expires <= ?", (now,))

    def count(self) -> int:
        """Live sessions."""
        with self._backend.query() as connection:
            row = connection.execute(
                "SELECT COUNT(*) FROM sessions WHERE expires > ?", (time.time(),)
            ).fetchone()
        return int(row[0])
