"""The PostgreSQL registry backend: psycopg 3 with a ``psycopg_pool.ConnectionPool``.

The same tables and migrations as the SQLite file (``uniroute.registry.schema``), the same
guarantees, by PostgreSQL's means:

* a write is one transaction that first locks the ``pool_version`` row of ``meta``
  (``SELECT … FOR UPDATE``), so writers take turns exactly as under SQLite's ``BEGIN IMMEDIATE``
  and each sees the previous writer's commit; a client killed mid-write has its transaction
  rolled back by the server;
* a multi-statement read is one ``REPEATABLE READ READ ONLY`` transaction (one snapshot);
* the schema version is a one-row ``schema_version`` table; each migration step is one
  transaction that holds ``pg_advisory_xact_lock`` (released at its commit or rollback), so two
  processes opening a fresh database at once apply every step exactly once;
* connections come from a pool that checks each one before lending it, so a registry object
  outlives a database restart (calls fail with a ``StateError`` while the server is down);
* every driver error leaves as a one-line ``StateError`` naming the URL without its password;
* every write that bumps ``pool_version`` also runs ``pg_notify(NOTIFY_CHANNEL, <new version>)``
  in its transaction, which the server delivers at commit and drops on rollback;
  ``PostgresWatcher`` (``Registry.watch``) LISTENs on one dedicated connection of its own.

Statements are written once with ``?`` placeholders; ``PostgresConnection`` turns them into
psycopg's ``%s``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from uniroute.errors import StateError
from uniroute.registry.backend import OnChange, committed
from uniroute.registry.schema import POSTGRESQL, Migration

logger = logging.getLogger(__name__)

#: The URL schemes taken as a PostgreSQL registry (``store.is_registry_url``).
URL_SCHEMES = ("postgresql", "postgres")
# Held by each migration step: one key per database (advisory locks are per database).
_MIGRATION_LOCK = zlib.crc32(b"uniroute.registry.migrate")
# SQLSTATEs: waiting for another writer's lock too long, or a deadlock with it.
_LOCKED = ("55P03", "40P01")
# A table or column of the registry is missing: some other database, or a damaged one.
_NOT_A_REGISTRY = ("42P01", "42703")
_UNIQUE_VIOLATION = "23505"
# Connections kept open (lent to threads one at a time each).
_POOL_MAX = 4
#: The channel every committed pool change is announced on; the payload is the new pool_version.
NOTIFY_CHANNEL = "uniroute_pool"
# Run after the bump, inside the write: the payload is the version this transaction commits.
_ANNOUNCE = f"SELECT pg_notify('{NOTIFY_CHANNEL}', value) FROM meta WHERE key = 'pool_version'"
# A listener waits for notifications in slices this long, so stop() takes at most about this.
_WATCH_SLICE_S = 0.25
# An idle listening connection runs a query this often: a connection that died without a word
# (a network cut) fails it, and is replaced, instead of waiting for notifications forever.
_WATCH_PING_S = 10.0
# Seconds before reconnecting after a lost connection: doubled per failed attempt up to the
# last, so a restart (a few seconds) is bridged quickly and a long outage costs little.
_WATCH_BACKOFF_S = (0.1, 2.0)


def restore_url(value: str) -> str:
    """A URL that went through ``pathlib.Path`` (``postgresql:/u@h/db``) with its ``//`` back."""
    scheme, sep, rest = value.partition(":/")
    if sep and scheme.lower() in URL_SCHEMES and not rest.startswith("/"):
        return f"{scheme}://{rest}"
    return value


def redact_url(url: str) -> str:
    """The URL as shown in messages: without a password (in the userinfo or the query)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}@{hostport}" if user else hostport
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return f"{url.partition('://')[0]}://(unparseable URL)"


def _first_line(exc: BaseException) -> str:
    """The driver's primary message, on one line (psycopg adds context lines after it)."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc) or type(exc).__name__
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return "; ".join(lines[:2]) if lines else type(exc).__name__


class PostgresConnection:
    """One pooled psycopg connection, speaking the registry's ``?``-placeholder SQL."""

    dialect = POSTGRESQL

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.raw = connection

    @staticmethod
    def _sql(sql: str) -> str:
        # psycopg reads %s as a placeholder, so a literal % is doubled first.
        return sql.replace("%", "%%").replace("?", "%s")

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        """Run one statement; ``?`` marks each parameter, as on SQLite."""
        if not parameters:
            return self.raw.execute(sql.encode())  # no placeholders: the text as written
        return self.raw.execute(self._sql(sql), tuple(parameters))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for every row of parameters (pipelined by psycopg)."""
        rows = list(rows)
        if rows:
            with self.raw.cursor() as cursor:
                cursor.executemany(self._sql(sql), rows)


class PostgresBackend:
    """A registry in a PostgreSQL database: its connection pool, transactions and errors."""

    dialect = POSTGRESQL
    JSON_LIST = "SELECT json_array_elements_text(CAST(? AS json))"
    integrity_error: type[Exception] = psycopg.errors.IntegrityError

    def __init__(self, url: str, *, timeout: float, migrations: Sequence[Migration]) -> None:
        self.url = url
        self.path = redact_url(url)
        self.location: Path | str = self.path
        self._timeout = float(timeout)
        connect_timeout = max(1, round(timeout))
        # Waits for another writer's row lock up to the timeout, as SQLite's busy_timeout does.
        options = f"-c lock_timeout={int(timeout * 1000)}"
        try:
            with psycopg.connect(
                url, autocommit=True, connect_timeout=connect_timeout, options=options
            ) as connection:
                self.schema_version = migrate_postgres(
                    PostgresConnection(connection), migrations, source=self.path
                )
        except psycopg.Error as exc:
            raise self._connect_failure(exc) from None
        except ValueError as exc:  # a URL libpq cannot parse (bad port, unknown option)
            raise StateError(f"{self.path}: not a usable registry URL ({exc})") from None
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=1,
            max_size=_POOL_MAX,
            kwargs={"autocommit": True, "connect_timeout": connect_timeout, "options": options},
            check=ConnectionPool.check_connection,
            timeout=self._timeout,
            open=False,
            name=f"uniroute-registry {self.location}",
        )
        try:
            self._pool.open(wait=True, timeout=self._timeout)
        except PoolTimeout:
            self._pool.close()
            raise StateError(
                f"{self.path}: cannot connect to the PostgreSQL registry "
                f"(no connection within {self._timeout:g} s)"
            ) from None

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.close()

    @staticmethod
    def announce(connection: PostgresConnection) -> None:
        """Queue the notification of the new pool_version; sent at commit, dropped on rollback."""
        connection.execute(_ANNOUNCE)

    def watch(self, on_change: OnChange) -> PostgresWatcher:
        """Start a ``PostgresWatcher`` on a dedicated connection (not one of the pool's)."""
        return PostgresWatcher(
            self.url, self.path, on_change, connect_timeout=max(1, round(self._timeout))
        ).start()

    @contextlib.contextmanager
    def _connection(self, doing: str) -> Iterator[PostgresConnection]:
        """A pooled connection, checked alive; a StateError when the server cannot be reached."""
        try:
            with self._pool.connection() as connection:
                yield PostgresConnection(connection)
        except PoolTimeout:
            raise StateError(
                f"{self.path}: {doing} (no connection to the PostgreSQL registry within "
                f"{self._timeout:g} s)"
            ) from None

    @contextlib.contextmanager
    def write(self) -> Iterator[PostgresConnection]:
        """One write transaction, writers taking turns on the pool_version row; all or nothing."""
        with self._connection("write failed") as connection:
            try:
                connection.execute("BEGIN")
                # The writer lock: every write takes it first, as BEGIN IMMEDIATE does on SQLite.
                connection.execute("SELECT value FROM meta WHERE key = 'pool_version' FOR UPDATE")
            except psycopg.Error as exc:
                self._rollback(connection)
                raise self.failure(exc, "cannot start a write") from None
            with committed(connection, psycopg.Error, self.failure, self._rollback, "write failed"):
                yield connection

    @contextlib.contextmanager
    def write_rows(self) -> Iterator[PostgresConnection]:
        """One write transaction that does not take the pool's writer lock: for rows no pool
        change reads (sessions), whose statements are atomic on their own, so that writing
        them at the request rate never queues behind, or holds up, a change to the pool."""
        doing = "write failed"
        with self._connection(doing) as connection:
            try:
                connection.execute("BEGIN")
            except psycopg.Error as exc:
                self._rollback(connection)
                raise self.failure(exc, "cannot start a write") from None
            with committed(connection, psycopg.Error, self.failure, self._rollback, doing):
                yield connection

    @contextlib.contextmanager
    def read(self) -> Iterator[PostgresConnection]:
        """A read-only transaction on one snapshot, so several SELECTs agree."""
        doing = "cannot read the registry"
        with (
            self._connection(doing) as connection,
            committed(connection, psycopg.Error, self.failure, self._rollback, doing),
        ):
            connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield connection

    @contextlib.contextmanager
    def query(self) -> Iterator[PostgresConnection]:
        """A connection for one statement outside any transaction (autocommit)."""
        with self._connection("cannot read the registry") as connection:
            try:
                yield connection
            except psycopg.Error as exc:
                raise self.failure(exc, "cannot read the registry") from None

    @staticmethod
    def _rollback(connection: PostgresConnection) -> None:
        # After a lost connection the ROLLBACK fails too; the server has dropped the
        # transaction already, and the error that caused it is the one to report.
        with contextlib.suppress(psycopg.Error):
            connection.execute("ROLLBACK")

    @staticmethod
    def is_duplicate_key(exc: BaseException) -> bool:
        """Whether an integrity error is a primary key already taken (a lost race for a name)."""
        return getattr(exc, "sqlstate", None) == _UNIQUE_VIOLATION

    def failure(self, exc: BaseException, doing: str) -> StateError:
        """A one-line StateError naming the URL (no password) for a driver error."""
        state = getattr(exc, "sqlstate", None)
        message = _first_line(exc)
        if state in _LOCKED:
            return StateError(f"{self.path}: the registry is locked by another process ({message})")
        if state in _NOT_A_REGISTRY:
            return StateError(
                f"{self.path}: not a readable registry database: it is not a UniRoute "
                f"registry or is corrupted ({message})"
            )
        if isinstance(exc, psycopg.OperationalError) and state is None:
            return StateError(
                f"{self.path}: {doing}: lost the connection to the PostgreSQL registry ({message})"
            )
        return StateError(f"{self.path}: {doing} ({message})")

    def _connect_failure(self, exc: psycopg.Error) -> StateError:
        if isinstance(exc, psycopg.OperationalError) and getattr(exc, "sqlstate", None) is None:
            return StateError(
                f"{self.path}: cannot connect to the PostgreSQL registry ({_first_line(exc)})"
            )
        return self.failure(exc, "cannot open the registry")


class PostgresWatcher:
    """``LISTEN`` on ``NOTIFY_CHANNEL`` over one connection of its own, on a daemon thread.

    Its own connection, not a pooled one: a LISTEN belongs to its session, and a pooled
    connection is lent to other work and replaced after a restart. When the connection is lost
    (a database restart) it reconnects with backoff, and after every (re)connection it calls
    ``on_change(None)``, because notifications sent while it was away are gone for good.
    """

    def __init__(
        self, url: str, location: str, on_change: OnChange, *, connect_timeout: int
    ) -> None:
        self._url = url
        self._location = location
        self._on_change = on_change
        self._connect_timeout = connect_timeout
        self._stopping = threading.Event()
        self._connected = False
        self._thread = threading.Thread(
            target=self._run, name="uniroute-registry-watch", daemon=True
        )

    @property
    def connected(self) -> bool:
        """Whether it is listening now (False while it reconnects)."""
        return self._connected

    def start(self) -> PostgresWatcher:
        """Start the listening thread."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening and wait up to ``timeout`` seconds for the thread to end."""
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        delay = _WATCH_BACKOFF_S[0]
        while not self._stopping.is_set():
            was_connected = False
            try:
                with psycopg.connect(
                    self._url, autocommit=True, connect_timeout=self._connect_timeout
                ) as connection:
                    connection.execute(f"LISTEN {NOTIFY_CHANNEL}".encode())
                    self._connected = was_connected = True
                    logger.info("%s: listening for pool changes", self._location)
                    self._notify(None)
                    self._listen(connection)
            except psycopg.Error as exc:
                if was_connected:
                    logger.warning(
                        "%s: lost the pool-change listener's connection (%s); reconnecting",
                        self._location, _first_line(exc),
                    )  # fmt: skip
                else:
                    logger.debug("%s: cannot listen yet (%s)", self._location, _first_line(exc))
            finally:
                self._connected = False
            delay = _WATCH_BACKOFF_S[0] if was_connected else min(2 * delay, _WATCH_BACKOFF_S[1])
            self._stopping.wait(delay)

    def _listen(self, connection: psycopg.Connection[Any]) -> None:
        """Pass notifications on until told to stop; raises when the connection is lost."""
        quiet_since = time.monotonic()
        while not self._stopping.is_set():
            received = False
            for note in connection.notifies(timeout=_WATCH_SLICE_S):
                received = True
                self._notify(_revision(note.payload))
            if received:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= _WATCH_PING_S:
                connection.execute(b"SELECT 1")
                quiet_since = time.monotonic()

    def _notify(self, revision: int | None) -> None:
        # The listener must outlive a failing callback: it is the caller's bug, and the next
        # notification may well succeed.
        try:
            self._on_change(revision)
        except Exception:
            logger.exception("%s: the pool-change callback failed", self._location)


def _revision(payload: str) -> int | None:
    """The pool_version a notification carries (None if it is not a number)."""
    try:
        return int(payload)
    except ValueError:
        return None


def migrate_postgres(
    connection: PostgresConnection,
    migrations: Sequence[Migration],
    source: str = "registry",
) -> int:
    """Upgrade a PostgreSQL registry to ``len(migrations)``, one locked transaction per step.

    Each step holds ``pg_advisory_xact_lock`` and reads the version again under it, so
    processes starting together apply each step once; a database written by a newer uniroute is
    refused rather than misread. ``connection`` must be in autocommit mode.
    """
    target = len(migrations)
    version = _stored_version(connection)
    while version != target:
        if version is not None and version > target:
            raise StateError(
                f"{source}: registry schema version {version} is newer than this uniroute "
                f"reads (version {target}); upgrade uniroute"
            )
        connection.execute("BEGIN")
        try:
            connection.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
            )
            connection.execute(
                "INSERT INTO schema_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING"
            )
            # Another process may have migrated between our read and taking the lock.
            row = connection.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
            version = int(row[0]) if row is not None else 0
            if version < target:
                migrations[version](connection)
                version += 1
                connection.execute("UPDATE schema_version SET version = ? WHERE id = 1", (version,))
            connection.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                connection.execute("ROLLBACK")
            raise
    return version


def _stored_version(connection: PostgresConnection) -> int | None:
    """The recorded schema version, or None before the first migration (no table yet)."""
    exists = connection.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    row = connection.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
    return None if row is None else int(row[0])
