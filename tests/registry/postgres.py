"""Raw SQL access to either registry backend, for the registry tests.

``RegistryBackend`` is what the registry tests are parametrised over: a fresh registry location
(an SQLite file, or a new database of the session's ``uniroute.testing.postgres`` cluster) and
raw SQL on it that does not go through ``Registry``, for writing what an older version wrote and
checking what is stored.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from uniroute.testing.postgres import PostgresCluster

BACKENDS = ("sqlite", "postgresql")


class RegistryBackend:
    """One registry backend as the tests see it: new locations and raw SQL on them."""

    def __init__(self, name: str, tmp_path: Path, cluster: PostgresCluster | None) -> None:
        self.name = name
        self._tmp_path = tmp_path
        self._cluster = cluster
        self._count = itertools.count()

    def __repr__(self) -> str:
        return f"RegistryBackend({self.name})"

    def new_location(self) -> str | Path:
        """A registry location nothing has used yet: a file path, or a new database's URL."""
        if self._cluster is None:
            return self._tmp_path / f"pool{next(self._count) or ''}.db"
        return self._cluster.create_database()

    def execute(self, location: str | Path, sql: str, parameters: Sequence[Any] = ()) -> list:
        """Run one statement (``?`` placeholders) outside any Registry, committed; its rows."""
        if self._cluster is None:
            with contextlib.closing(sqlite3.connect(location, isolation_level=None)) as raw:
                cursor = raw.execute(sql, tuple(parameters))
                return cursor.fetchall()
        import psycopg

        with psycopg.connect(str(location), autocommit=True) as raw:
            if parameters:
                cursor = raw.execute(sql.replace("?", "%s"), tuple(parameters))
            else:
                cursor = raw.execute(sql.encode())
            return cursor.fetchall() if cursor.description is not None else []

    def executemany(self, location: str | Path, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each row of parameters, in one transaction."""
        if self._cluster is None:
            with contextlib.closing(sqlite3.connect(location)) as raw, raw:
                raw.executemany(sql, rows)
            return
        import psycopg

        with psycopg.connect(str(location)) as raw, raw.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)

    def schema_version(self, location: str | Path) -> int:
        """The schema version the registry records."""
        if self._cluster is None:
            return int(self.execute(location, "PRAGMA user_version")[0][0])
        return int(self.execute(location, "SELECT version FROM schema_version")[0][0])

    def model_columns(self, location: str | Path) -> list[str]:
        """The columns of the models table."""
        if self._cluster is None:
            return [row[1] for row in self.execute(location, "PRAGMA table_info(models)")]
        rows = self.execute(
            location,
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'models'"
            " ORDER BY ordinal_position",
        )
        return [row[0] for row in rows]

    def tables(self, location: str | Path) -> set[str]:
        """The names of the registry's tables."""
        if self._cluster is None:
            rows = self.execute(location, "SELECT name FROM sqlite_master WHERE type = 'table'")
        else:
            rows = self.execute(
                location, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        return {row[0] for row in rows}
