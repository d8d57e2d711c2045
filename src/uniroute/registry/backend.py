"""What ``Registry`` needs of a storage backend (``sqlite_backend``, ``postgres_backend``).

A backend owns its connections and their transactions, and words its driver's errors; the SQL is
``Registry``'s, written once for both dialects (``?`` placeholders, standard upserts), except the
one fragment that differs, ``JSON_LIST``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from uniroute.errors import StateError


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

    def close(self) -> None:
        """Release the backend's connections."""
        ...
