"""The SQLite registry backend: one file in WAL mode, one connection shared by a process's threads.

``Registry`` (``uniroute.registry.store``) runs every statement through a backend's ``read``,
``write`` and ``query`` context managers; this one and ``postgres_backend.PostgresBackend`` are
the two. Here a write is one ``BEGIN IMMEDIATE … COMMIT`` transaction (SQLite's writer lock), a
multi-statement read is one read transaction (a consistent snapshot under WAL), and every SQLite
error leaves as a one-line ``StateError`` naming the file.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from uniroute.errors import StateError
from uniroute.registry.backend import committed
from uniroute.registry.schema import SQLITE, Migration, migrate

if TYPE_CHECKING:
    from uniroute.registry.backend import OnChange, Watcher

# An INSERT into the models table that fails on these lost a race for the name.
_DUPLICATE_KEY_ERRORS = ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE")
# Errors that mean another connection holds the file, not that the file is bad.
_BUSY_ERRORS = ("SQLITE_BUSY", "SQLITE_LOCKED")
# Errors that mean the file is damaged or is some other database: a corrupt page, not a
# database at all, or (plain SQLITE_ERROR) a table or column of the registry is missing.
_UNREADABLE_ERRORS = ("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_ERROR")
# The first bytes of every SQLite database file.
_SQLITE_MAGIC = b"SQLite format 3\x00"


class SqliteBackend:
    """An open registry file: its connection, transactions and error wording."""

    dialect = SQLITE
    #: The subquery a bound JSON list of strings expands to (``WHERE x IN (…)``).
    JSON_LIST = "SELECT value FROM json_each(?)"
    #: The driver's integrity error (a primary key already taken, among others).
    integrity_error: type[Exception] = sqlite3.IntegrityError

    def __init__(self, path: Path, *, timeout: float, migrations: Sequence[Migration]) -> None:
        self.path = path
        self.location: Path | str = path
        if path.is_dir():
            raise StateError(f"{path}: is a directory, expected a registry file")
        _check_sqlite_header(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            ancestor = path.absolute().parent
            while not ancestor.exists():
                ancestor = ancestor.parent
            reason = f"{ancestor} is not a directory" if not ancestor.is_dir() else exc.strerror
            raise StateError(f"{path}: cannot create the registry ({reason or exc})") from None
        self._lock = threading.RLock()
        connection = None
        try:
            connection = sqlite3.connect(
                str(path), timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self.connection = connection
            connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            mode = _switch_to_wal(connection, timeout)
            if str(mode).lower() != "wal":
                raise StateError(f"{path}: could not switch the registry to WAL mode ({mode})")
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("PRAGMA foreign_keys = ON")
            self.schema_version = migrate(connection, migrations, source=str(path))
        except (sqlite3.DatabaseError, StateError) as exc:
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.close()
            if isinstance(exc, StateError):
                raise
            raise self.failure(exc, "cannot open the registry") from None

    @staticmethod
    def announce(connection: sqlite3.Connection) -> None:
        """Nothing to send: a file has no notification channel, readers poll pool_version."""

    @staticmethod
    def watch(on_change: OnChange) -> Watcher | None:
        """None: SQLite cannot push changes; a server notices them by polling pool_version."""
        return None

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self.connection.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (SQLite's writer lock held throughout), all or nothing."""
        with self._lock:
            connection = self.connection
            try:
                connection.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StateError(f"{self.path}: cannot start a write ({exc})") from None
            with committed(connection, sqlite3.Error, self.failure, self._rollback, "write failed"):
                yield connection

    def write_rows(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A write of rows outside the pool: on SQLite, the same as ``write`` (one writer)."""
        return self.write()

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so several SELECTs see one consistent snapshot."""
        with self._lock, self._reading():
            connection = self.connection
            connection.execute("BEGIN")
            try:
                yield connection
            except BaseException:
                self._rollback(connection)
                raise
            connection.execute("COMMIT")

    @contextlib.contextmanager
    def query(self) -> Iterator[sqlite3.Connection]:
        """The connection for one statement outside any transaction."""
        with self._lock, self._reading():
            yield self.connection

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Turn SQLite's errors while reading into a StateError naming the file."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self.failure(exc, "cannot read the registry") from None

    @staticmethod
    def _rollback(connection: sqlite3.Connection) -> None:
        # On a corrupt file the ROLLBACK may fail too; the error that caused it is the one to
        # report, and SQLite has already given up the transaction.
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")

    @staticmethod
    def is_duplicate_key(exc: BaseException) -> bool:
        """Whether an integrity error is a primary key already taken (a lost race for a name)."""
        return str(getattr(exc, "sqlite_errorname", "")).startswith(_DUPLICATE_KEY_ERRORS)

    def failure(self, exc: BaseException, doing: str) -> StateError:
        """A StateError naming the file for an SQLite error; ``doing`` words any other kind."""
        name = getattr(exc, "sqlite_errorname", None) or ""
        if name.startswith(_BUSY_ERRORS):
            return StateError(f"{self.path}: the registry is locked by another process ({exc})")
        if name.startswith(_UNREADABLE_ERRORS):
            return StateError(
                f"{self.path}: not a readable registry database: it is not a UniRoute registry "
                f"or is corrupted ({exc})"
            )
        return StateError(f"{self.path}: {doing} ({exc})")


def _switch_to_wal(connection: sqlite3.Connection, timeout: float) -> str:
    """Put the file in WAL mode; returns the journal mode it is in.

    On a new file another process may be switching it at the same moment: SQLite then answers
    SQLITE_BUSY at once, without waiting for the busy timeout (the switch needs the exclusive
    lock), so the switch is retried here until the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(connection.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            busy = str(getattr(exc, "sqlite_errorname", "")).startswith(_BUSY_ERRORS)
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _check_sqlite_header(path: Path) -> None:
    """Refuse a non-empty file that is not SQLite before SQLite opens it.

    SQLite takes some files too short to hold its header (a file of one byte, such as a lone
    newline) for an empty database and writes a registry over them, so a mistyped --registry
    could silently replace a user's file. An empty file is a new registry, as SQLite treats it.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
    except (FileNotFoundError, NotADirectoryError):
        return  # a new registry (a parent that is a file is reported when it is created)
    except OSError as exc:
        raise StateError(f"{path}: cannot read the registry ({exc.strerror or exc})") from None
    if head and head != _SQLITE_MAGIC:
        raise StateError(
            f"{path}: not a readable registry database: it is not a UniRoute registry or is "
            "corrupted (not an SQLite file)"
        )
