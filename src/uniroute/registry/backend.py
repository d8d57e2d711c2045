"""What ``Registry`` needs of a storage backend (``sqlite_backend``, ``postgres_backend``).

A backend owns its connections and their transactions, and words its driver's errors; the SQL is
``Registry``'s, written once for both dialects (``?`` placeholders, standard upserts), except the
one fragment that differs, ``JSON_LIST``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from uniroute.errors import StateError

#: Called by a watcher with the new pool_version a notification carried, or with None when a
#: change may have been missed (on every (re)connection): either way, read the registry again.
OnChange = Callable[[int | None], None]


@contextlib.contextmanager
def committed(
    connection: Any,
    driver_error: type[BaseException],
    failure: Callable[[BaseException, str], StateError],
    roll_back: Callable[[Any], None],
    doing: str,
) -> Iterator[Any]:
    """Yield ``connection`` in its open transaction, then COMMIT; on any failure roll back
    first, a ``driver_error`` leaving as ``failure(exc, doing)`` (the backend's StateError)."""
    try:
        yield connection
        connection.execute("COMMIT")
    except driver_error as exc:
        roll_back(connection)
        raise failure(exc, doing) from None
    except BaseException:
        roll_back(connection)
        raise


class Watcher(Protocol):
    """A running listener for pool changes (``Registry.watch``), on a thread of its own."""

    @property
    def connected(self) -> bool:
        """Whether it is listening now (False while it reconnects)."""
        ...

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening and wait up to ``timeout`` seconds for the thread to end."""
        ...


class Backend(Protocol):
    """An open registry: where it is, its schema version, and its transactions."""

    #: ``schema.SQLITE`` or ``schema.POSTGRESQL``.
    dialect: str
    #: The registry as messages name it: the file, or the URL without its password.
    location: Path | str
    schema_version: int
    #: The subquery a bound JSON list of strings expands to, in ``WHERE name IN (…)``.
    JSON_LIST: str
    #: The driver's integrity error (a constraint such as a primary key refused a row).
    integrity_error: type[Exception]

    def write(self) -> AbstractContextManager[Any]:
        """One write transaction, writers taking turns; committed on success, else rolled back."""
        ...

    def write_rows(self) -> AbstractContextManager[Any]:
        """A write transaction for rows outside the pool, without the pool's writer lock where
        the database allows it (PostgreSQL); each statement in it must be atomic on its own."""
        ...

    def read(self) -> AbstractContextManager[Any]:
        """One read transaction on a consistent snapshot."""
        ...

    def query(self) -> AbstractContextManager[Any]:
        """A connection for one statement outside any transaction."""
        ...

    def is_duplicate_key(self, exc: BaseException) -> bool:
        """Whether an integrity error is a primary key already taken."""
        ...

    def failure(self, exc: BaseException, doing: str) -> StateError:
        """A one-line StateError for a driver error."""
        ...

    def announce(self, connection: Any) -> None:
        """Tell listeners, at this write's commit, that pool_version moved (no-op without push)."""
        ...

    def watch(self, on_change: OnChange) -> Watcher | None:
        """Start a listener calling ``on_change`` on every committed change; None: no push."""
        ...

    def close(self) -> None:
        """Release the backend's connections."""
        ...
