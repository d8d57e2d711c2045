"""Backing up a registry file and copying a registry between backends, verified row by row.

``backup_registry`` copies a live SQLite registry with SQLite's online backup API: one read
transaction on the source, so what is still in its write-ahead log is included and a gateway may
keep writing meanwhile; the copy is written beside the destination, checked, fsynced and renamed
into place. A PostgreSQL registry is backed up with ``pg_dump`` (the error says how).

``copy_registry`` copies every table's rows from one registry to another (SQLite or PostgreSQL,
either way): the source is read in one consistent snapshot, the destination (its schema made by
the normal migrations) is written in one transaction, and the rows are compared with the
source's, table by table in a deterministic order (floats and blobs bit for bit), before the
commit and once more after it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import struct
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uniroute.errors import RegistryError, StateError, UsageError
from uniroute.registry.jobs import JOB_COLUMN_NAMES
from uniroute.registry.schema import MODEL_COLUMN_NAMES, REGISTRY_SCHEMA_VERSION, SQLITE
from uniroute.registry.store import Registry, is_registry_url


@dataclass(frozen=True)
class Table:
    """One registry table as copied: its columns and its primary key (the comparison order)."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    #: How the report counts its rows.
    label: str


#: Every table of the registry, parents before children (the order rows are inserted in).
#: ``schema_version`` (PostgreSQL) is not copied: the destination's migrations write their own.
TABLES: tuple[Table, ...] = (
    Table("meta", ("key", "value"), ("key",), "meta rows"),
    Table("models", MODEL_COLUMN_NAMES, ("name",), "models"),
    Table("scores", ("model", "prompt_id", "score"), ("model", "prompt_id"), "scores"),
    Table("features", ("model", "artifact_id", "psi"), ("model", "artifact_id"), "Ψ rows"),
    Table(
        "answers",
        ("model", "prompt_id", "answer_key", "raw", "raw_chars"),
        ("model", "prompt_id"),
        "answers",
    ),
    Table("policy", ("id", "body", "updated_at"), ("id",), "policy rows"),
    Table("jobs", JOB_COLUMN_NAMES, ("id",), "jobs"),
    Table(
        "answer_cache",
        (
            "model",
            "endpoint",
            "prompt_id",
            "prompt_sha256",
            "settings_sha256",
            "answer",
            "created",
        ),  # fmt: skip
        ("model", "endpoint", "prompt_id"),
        "cached answers",
    ),
    Table(
        "client_keys",
        (
            "id",
            "key_hash",
            "name",
            "team",
            "allowed_models",
            "rpm_limit",
            "daily_spend_limit",
            "monthly_spend_limit",
            "revoked",
            "created_at",
            "revoked_at",
        ),  # fmt: skip
        ("id",),
        "client keys",
    ),
    Table(
        "key_usage", ("key_id", "period", "spend", "requests"), ("key_id", "period"), "usage rows"
    ),
    Table(
        "sessions",
        ("id", "model", "estimated_error", "turns", "expires", "updated"),
        ("id",),
        "sessions",
    ),
)
# Tables a registry has that are the backend's bookkeeping, not pool content.
_BOOKKEEPING_TABLES = frozenset({"schema_version"})
# meta keys every registry has from its first migration: a registry with only these is empty.
_FRESH_META_KEYS = frozenset({"pool_version", "created_at"})

Rows = dict[str, list[tuple]]


@dataclass(frozen=True)
class BackupReport:
    """What ``backup_registry`` wrote."""

    source: Path
    destination: Path
    models: int
    pool_version: int
    size_bytes: int

    def describe(self) -> str:
        """One line for the command's output."""
        return (
            f"backed up {self.source} to {self.destination}: {self.models} models, "
            f"pool_version {self.pool_version}, {self.size_bytes:,} bytes"
        )


@dataclass(frozen=True)
class CopyReport:
    """What ``copy_registry`` copied: rows per table, the destination's pool_version."""

    source: str
    destination: str
    counts: Mapping[str, int]
    pool_version: int
    source_pool_version: int
    replaced: bool

    def describe(self) -> str:
        """One line for the command's output."""
        counts = ", ".join(f"{self.counts[t.name]:,} {t.label}" for t in TABLES)
        version = f"pool_version {self.pool_version}"
        if self.pool_version != self.source_pool_version:
            version += (
                f" (the source's is {self.source_pool_version}; raised past the replaced "
                "registry's so that its readers see the change)"
            )
        replaced = ", replacing what was there" if self.replaced else ""
        return (
            f"copied {counts} from {self.source} to {self.destination}{replaced}; "
            f"verified row by row; {version}"
        )


# ---------------------------------------------------------------------------- backup
def pg_dump_advice(location: str, destination: str | Path) -> str:
    """The one-line refusal for backing up a PostgreSQL registry: use pg_dump, or copy it."""
    from uniroute.registry.postgres_backend import redact_url, restore_url

    url = redact_url(restore_url(location))
    return (
        f"{url}: a PostgreSQL registry is backed up with pg_dump, not by uniroute: "
        f"`pg_dump --format=custom --file={destination} '{url}'` (restore with "
        f"`pg_restore --dbname=URL {destination}`), or copy it to an SQLite file with "
        f"`uniroute registry copy '{url}' FILE.db`"
    )


def backup_registry(
    source: str | Path, destination: str | Path, *, force: bool = False, timeout: float = 30.0
) -> BackupReport:
    """Copy a live SQLite registry to ``destination`` with the online backup API, atomically.

    The copy is one read transaction on the source (the write-ahead log included), so writers
    go on meanwhile and the copy holds everything committed before it began. An existing
    ``destination`` is refused unless ``force``.
    """
    if is_registry_url(source):
        raise UsageError(pg_dump_advice(str(source), destination))
    if is_registry_url(destination):
        raise UsageError(
            f"{destination}: a backup is written to a file; copy a registry into a database "
            "with `uniroute registry copy SRC URL`"
        )
    source, destination = Path(source), Path(destination)
    _check_source_file(source)
    _check_destination_file(source, destination, overwrite=force, option="--force")
    if destination.exists():
        _check_not_in_use(destination)
    with _temporary_beside(destination) as temporary:
        try:
            with (
                contextlib.closing(_connect(source, timeout)) as reader,
                contextlib.closing(_connect(temporary, timeout)) as writer,
            ):
                # pages=-1: the whole database in one step, i.e. one read transaction on the
                # source; copying in slices would restart on every concurrent write.
                reader.backup(writer, pages=-1)
                models, pool_version = _check_copy(writer, source)
                # A single self-contained file: no -wal beside it to lose in the rename.
                writer.execute("PRAGMA journal_mode = DELETE")
        except sqlite3.Error as exc:
            raise _sqlite_failure(source, exc) from None
        size = temporary.stat().st_size
        _publish(temporary, destination, overwrite=force)
    return BackupReport(source, destination, models, pool_version, size)


def _connect(path: Path, timeout: float) -> sqlite3.Connection:
    connection = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
    connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    return connection


def _check_copy(connection: sqlite3.Connection, source: Path) -> tuple[int, int]:
    """Refuse a copy that is not an intact registry; its model count and pool_version."""
    verdict = connection.execute("PRAGMA quick_check").fetchone()[0]
    if verdict != "ok":
        raise StateError(f"{source}: not a readable registry database: corrupted ({verdict})")
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    tables = {
        row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if not 1 <= version <= REGISTRY_SCHEMA_VERSION or not {"meta", "models"} <= tables:
        raise StateError(
            f"{source}: not a readable registry database: it is not a UniRoute registry "
            f"(schema version {version}, tables {', '.join(sorted(tables)) or 'none'})"
        )
    row = connection.execute("SELECT value FROM meta WHERE key = 'pool_version'").fetchone()
    models = connection.execute("SELECT COUNT(*) FROM models").fetchone()[0]
    return int(models), int(row[0]) if row is not None else 0


def _sqlite_failure(source: Path, exc: sqlite3.Error) -> StateError:
    name = str(getattr(exc, "sqlite_errorname", ""))
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return StateError(f"{source}: not a readable registry database: corrupted ({exc})")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StateError(f"{source}: the registry is locked by another process ({exc})")
    return StateError(f"{source}: cannot back up the registry ({exc})")


# ---------------------------------------------------------------------------- files
def _check_source_file(source: Path) -> None:
    if source.is_dir():
        raise StateError(f"{source}: is a directory, expected a registry file")
    if not source.is_file():
        raise StateError(f"{source}: no such registry")
    with open(source, "rb") as handle:
        head = handle.read(16)
    if head and head != b"SQLite format 3\x00":
        raise StateError(
            f"{source}: not a readable registry database: it is not a UniRoute registry or is "
            "corrupted (not an SQLite file)"
        )


def _check_destination_file(
    source: Path | None, destination: Path, *, overwrite: bool, option: str
) -> None:
    """Refuse a destination that is the source, a directory, or (without ``option``) a file."""
    if destination.is_dir():
        raise StateError(f"{destination}: is a directory, expected a file to write")
    if not destination.parent.is_dir():
        raise StateError(f"{destination}: no such directory: {destination.parent}")
    if not destination.exists():
        return
    if source is not None and source.exists() and os.path.samefile(source, destination):
        raise StateError(f"{destination}: is the source registry itself")
    if not overwrite:
        raise StateError(f"{destination}: already exists; pass {option} to overwrite it")


def _check_not_in_use(destination: Path) -> None:
    """Refuse to rename a new file over a registry file that a process has open."""
    for suffix in ("-wal", "-journal"):
        # A registry's log beside it means a process has it open (or died with it open):
        # renaming a new file under that log would have SQLite apply the stale log to it.
        sidecar = destination.with_name(destination.name + suffix)
        if sidecar.exists() and sidecar.stat().st_size > 0:
            raise StateError(
                f"{destination}: is in use (its {sidecar.name} exists); stop what has it open "
                "or write elsewhere"
            )


@contextlib.contextmanager
def _temporary_beside(destination: Path) -> Iterator[Path]:
    """A new empty file in the destination's directory, removed (with its logs) if left."""
    try:
        handle, name = tempfile.mkstemp(
            dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp"
        )
    except OSError as exc:
        raise StateError(f"{destination}: cannot write beside it ({exc.strerror or exc})") from None
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
    finally:
        for leftover in (temporary, *(Path(name + s) for s in ("-wal", "-shm", "-journal"))):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _publish(temporary: Path, destination: Path, *, overwrite: bool) -> None:
    """fsync ``temporary`` and move it to ``destination`` (never over a file unless asked)."""
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    if overwrite:
        os.replace(temporary, destination)
    else:
        try:
            # A hard link fails if the destination appeared meanwhile: no silent overwrite.
            os.link(temporary, destination)
        except FileExistsError:
            raise StateError(f"{destination}: already exists (created meanwhile)") from None
        except OSError:
            # A file system without hard links: the check above is the best available.
            if destination.exists():
                raise StateError(f"{destination}: already exists (created meanwhile)") from None
            os.replace(temporary, destination)
    directory = os.open(destination.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# ---------------------------------------------------------------------------- copy
def copy_registry(
    source: str | Path, destination: str | Path, *, replace: bool = False, timeout: float = 30.0
) -> CopyReport:
    """Copy every row of one registry into another, in one transaction, verified row by row.

    Either side is an SQLite file or a ``postgresql://`` URL. A destination that holds a pool
    is refused unless ``replace`` (then it is emptied in the same transaction). A new
    destination file is built beside its name and appears only once complete; a failure leaves
    an existing destination as it was.
    """
    if not is_registry_url(source):
        _check_source_file(Path(source))
    with Registry(source, timeout=timeout) as reader:
        source_name = str(reader.path)
        if not is_registry_url(destination):
            destination = Path(destination)
            source_path = None if is_registry_url(source) else Path(source)
            _check_destination_file(source_path, destination, overwrite=True, option="--replace")
        elif is_registry_url(source) and _same_url(str(source), str(destination)):
            raise StateError(f"{destination}: is the source registry itself")
        rows = _read_rows(reader)
    source_version = _pool_version(rows, source_name)
    if isinstance(destination, Path) and not destination.exists():
        # A new file is built under a temporary name, so a failed copy leaves no file at all.
        with _temporary_beside(destination) as temporary:
            with Registry(temporary, timeout=timeout) as writer:
                counts, version, replaced = _write_rows(writer, rows, source_version, False)
            _publish(temporary, destination, overwrite=False)
        destination_name = str(destination)
    else:
        with Registry(destination, timeout=timeout) as writer:
            destination_name = str(writer.path)
            counts, version, replaced = _write_rows(writer, rows, source_version, replace)
    # Once more after the commit, on a connection of its own: what a gateway will read.
    with Registry(destination, timeout=timeout) as check:
        _verify(check, _expected(rows, version), when="after the commit")
    return CopyReport(source_name, destination_name, counts, version, source_version, replaced)


def _same_url(first: str, second: str) -> bool:
    from uniroute.registry.postgres_backend import redact_url, restore_url

    return redact_url(restore_url(first)) == redact_url(restore_url(second))


def _read_rows(registry: Registry) -> Rows:
    """Every table's rows in one consistent snapshot, in primary-key order."""
    with registry._backend.read() as connection:
        unknown = _table_names(connection, registry.dialect) - {t.name for t in TABLES}
        unknown -= _BOOKKEEPING_TABLES
        if unknown:
            raise StateError(
                f"{registry.path}: has tables this uniroute does not copy "
                f"({', '.join(sorted(unknown))}); upgrade uniroute"
            )
        return {table.name: _select(connection, table) for table in TABLES}


def _table_names(connection: Any, dialect: str) -> set[str]:
    if dialect == SQLITE:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    else:
        sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    return {str(row[0]) for row in connection.execute(sql).fetchall()}


def _select(connection: Any, table: Table) -> list[tuple]:
    rows = connection.execute(f"SELECT {', '.join(table.columns)} FROM {table.name}").fetchall()
    # Sorted here, not by ORDER BY: the two databases collate text differently, Python compares
    # code points, the same order on both.
    width = len(table.key)
    return sorted((tuple(_plain(v) for v in row) for row in rows), key=lambda r: r[:width])


def _plain(value: Any) -> Any:
    """A cell as Python values both drivers agree on (PostgreSQL's bytea may be a memoryview)."""
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    return value


def _pool_version(rows: Rows, where: str) -> int:
    for key, value in rows["meta"]:
        if key == "pool_version":
            return int(value)
    raise StateError(f"{where}: the registry has no pool_version; it is damaged")


def _expected(rows: Rows, version: int) -> Rows:
    """The source's rows as the destination must hold them: with its pool_version."""
    meta = [(k, str(version) if k == "pool_version" else v) for k, v in rows["meta"]]
    return {**rows, "meta": meta}


def _write_rows(
    registry: Registry, rows: Rows, source_version: int, replace: bool
) -> tuple[dict[str, int], int, bool]:
    """Empty (if allowed) and fill the registry in one transaction, verified before commit.

    Returns the rows copied per table, the pool_version written and whether a pool was replaced.
    """
    backend = registry._backend
    with backend.write() as connection:
        held = _held_rows(connection)
        if held and not replace:
            what = ", ".join(f"{n:,} {label}" for label, n in held.items())
            raise RegistryError(
                f"{registry.path}: the destination registry is not empty ({what}); pass "
                "--replace to empty it and copy over it"
            )
        current = int(
            connection.execute("SELECT value FROM meta WHERE key = 'pool_version'").fetchone()[0]
        )
        # A gateway on the destination notices a change by pool_version differing from the one
        # it read: replacing a pool must not leave it at the same number.
        version = source_version if not held or current < source_version else current + 1
        expected = _expected(rows, version)
        for table in reversed(TABLES):
            connection.execute(f"DELETE FROM {table.name}")
        for table in TABLES:
            placeholders = ", ".join("?" * len(table.columns))
            connection.executemany(
                f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({placeholders})",
                expected[table.name],
            )
        _verify_connection(connection, expected, str(registry.path), when="before the commit")
        backend.announce(connection)
    return {t.name: len(rows[t.name]) for t in TABLES}, version, bool(held)


def _held_rows(connection: Any) -> dict[str, int]:
    """The pool content a registry holds, by label; empty for a fresh registry."""
    held: dict[str, int] = {}
    for table in TABLES:
        sql = f"SELECT COUNT(*) FROM {table.name}"
        if table.name == "meta":
            fresh = ", ".join(f"'{key}'" for key in sorted(_FRESH_META_KEYS))
            sql += f" WHERE key NOT IN ({fresh})"
        count = int(connection.execute(sql).fetchone()[0])
        if count:
            held[table.label] = count
    return held


def _verify(registry: Registry, expected: Rows, *, when: str) -> None:
    with registry._backend.read() as connection:
        _verify_connection(connection, expected, str(registry.path), when=when)


def _verify_connection(connection: Any, expected: Rows, where: str, *, when: str) -> None:
    """Raise a StateError naming the first table and row the registry differs in."""
    for table in TABLES:
        stored = _select(connection, table)
        want = expected[table.name]
        if len(stored) != len(want):
            raise StateError(
                f"{where}: copy verification failed {when}: table {table.name} has "
                f"{len(stored):,} rows, the source {len(want):,}"
            )
        for got, wanted in zip(stored, want, strict=True):
            if _exact(got) != _exact(wanted):
                key = ", ".join(map(str, wanted[: len(table.key)]))
                raise StateError(
                    f"{where}: copy verification failed {when}: table {table.name}, row "
                    f"({key}) differs from the source's"
                )


def _exact(row: Sequence[Any]) -> tuple:
    """A row compared bit for bit: floats by their IEEE bytes (-0.0 is not 0.0), with types."""
    return tuple(
        ("f", struct.pack("<d", v)) if isinstance(v, float) else (type(v).__name__, v) for v in row
    )
