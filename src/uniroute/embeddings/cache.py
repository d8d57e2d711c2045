"""An on-disk embedding cache (one SQLite file) and an Encoder that reads through it."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from uniroute.embeddings._common import as_text_list
from uniroute.embeddings.base import Encoder
from uniroute.errors import StateError

CACHE_FILE_NAME = "embeddings.sqlite3"
CACHE_SCHEMA_VERSION = 1
# SQLite's default limit on bound parameters is 32766 (999 before 3.32); stay well below it.
_KEYS_PER_QUERY = 500
# How long a writer waits for another process's transaction before giving up.
_BUSY_TIMEOUT_SECONDS = 60.0


def text_key(text: str) -> bytes:
    """The cache key of a text: the SHA-256 digest of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).digest()


def _is_lock_error(exc: sqlite3.OperationalError) -> bool:
    message = str(exc)
    return "locked" in message or "busy" in message


class EmbeddingCache:
    """Embeddings keyed by (encoder id, SHA-256 of the text), stored as float32 blobs.

    Every call opens its own short-lived connection, so one cache object is safe to share
    between threads and across fork, and several processes may read and write the same file at
    once (WAL journal; writers queue on SQLite's lock).
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / CACHE_FILE_NAME
        self.directory.mkdir(parents=True, exist_ok=True)
        self._initialise()

    def _error(self, exc: sqlite3.Error) -> StateError:
        """A StateError naming the cache file; only a damaged file is worth deleting."""
        if isinstance(exc, sqlite3.OperationalError):
            if _is_lock_error(exc):
                return StateError(f"{self.path}: held by another process for too long ({exc})")
            return StateError(f"{self.path}: cannot use the embedding cache ({exc})")
        return StateError(
            f"{self.path}: not a readable embedding cache ({exc}); it only holds embeddings that "
            f"can be recomputed, so delete it (and any {self.path.name}-wal / -shm beside it) "
            "to start an empty cache"
        )

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode; callers open transactions explicitly."""
        try:
            connection = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        try:
            connection.execute("PRAGMA synchronous=NORMAL")
            yield connection
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        finally:
            connection.close()

    def _initialise(self) -> None:
        """Create the schema on first use and check the version of an existing file."""
        with self._connect() as connection:
            self._enable_wal(connection)
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS cache_meta (key TEXT PRIMARY KEY, value TEXT)"
                )
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS embeddings ("
                    " encoder_id TEXT NOT NULL,"
                    " text_sha256 BLOB NOT NULL,"
                    " vector BLOB NOT NULL,"
                    " PRIMARY KEY (encoder_id, text_sha256)) WITHOUT ROWID"
                )
                connection.execute(
                    "INSERT OR IGNORE INTO cache_meta VALUES ('schema_version', ?)",
                    (str(CACHE_SCHEMA_VERSION),),
                )
                (version,) = connection.execute(
                    "SELECT value FROM cache_meta WHERE key = 'schema_version'"
                ).fetchone()
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        if version != str(CACHE_SCHEMA_VERSION):
            raise StateError(
                f"{self.path}: embedding cache schema version {version}, this uniroute uses "
                f"version {CACHE_SCHEMA_VERSION}; delete the file to start an empty cache"
            )

    def _enable_wal(self, connection: sqlite3.Connection) -> None:
        """Switch the file to WAL mode, retrying while another process holds it.

        SQLite answers a journal-mode change with "database is locked" at once, without its
        busy handler, when another connection is mid-way through the same first-time setup.
        """
        deadline = time.monotonic() + _BUSY_TIMEOUT_SECONDS
        delay = 0.005
        while True:
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if not _is_lock_error(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def get_many(self, encoder_id: str, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Look texts up: returns (hits, mask) with ``hits[k]`` the vector of the k-th True in mask.

        ``hits`` is float32 of shape (mask.sum(), dim); with no hit at all it is (0, 0).
        """
        text_list = as_text_list(texts)
        keys = [text_key(text) for text in text_list]
        found: dict[bytes, bytes] = {}
        unique_keys = list(dict.fromkeys(keys))
        with self._connect() as connection:
            for start in range(0, len(unique_keys), _KEYS_PER_QUERY):
                chunk = unique_keys[start : start + _KEYS_PER_QUERY]
                placeholders = ",".join("?" * len(chunk))
                rows = connection.execute(
                    "SELECT text_sha256, vector FROM embeddings "
                    f"WHERE encoder_id = ? AND text_sha256 IN ({placeholders})",
                    (encoder_id, *chunk),
                )
                found.update(rows)
        mask = np.array([key in found for key in keys], dtype=bool)
        if not found:
            return np.zeros((0, 0), dtype=np.float32), mask
        blob_sizes = {len(blob) for blob in found.values()}
        if len(blob_sizes) != 1 or next(iter(blob_sizes)) % 4:
            raise self._error(
                sqlite3.DatabaseError(f"vectors of encoder {encoder_id!r} have mixed byte sizes")
            )
        dim = blob_sizes.pop() // 4
        hits = np.empty((int(mask.sum()), dim), dtype=np.float32)
        for row, key in enumerate(key for key in keys if key in found):
            hits[row] = np.frombuffer(found[key], dtype="<f4")
        return hits, mask

    def put_many(self, encoder_id: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store one vector per text (float32), replacing any earlier entry, in one transaction."""
        text_list = as_text_list(texts)
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != len(text_list) or vectors.shape[1] < 1:
            raise ValueError(
                f"put_many for {encoder_id!r}: expected a ({len(text_list)}, dim) array of "
                f"vectors, got shape {vectors.shape}"
            )
        if not np.isfinite(vectors).all():
            bad_row = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
            raise ValueError(
                f"put_many for {encoder_id!r}: the vector of text {bad_row} holds NaN or "
                "infinite values; refusing to cache it"
            )
        little_endian = vectors.astype("<f4", copy=False)
        rows = [
            (encoder_id, text_key(text), little_endian[row].tobytes())
            for row, text in enumerate(text_list)
        ]
        if not rows:
            return
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", rows)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def count(self, encoder_id: str | None = None) -> int:
        """Number of cached vectors, for one encoder id or in total."""
        with self._connect() as connection:
            if encoder_id is None:
                (total,) = connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()
            else:
                (total,) = connection.execute(
                    "SELECT COUNT(*) FROM embeddings WHERE encoder_id = ?", (encoder_id,)
                ).fetchone()
        return int(total)

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.directory)!r})"


class CachedEncoder:
    """An Encoder that serves repeated texts from an EmbeddingCache and embeds only the misses.

    It has the wrapped encoder's id and dim; fit() and save() act on the wrapped encoder (the
    cache is not part of an encoder's saved state).
    """

    def __init__(self, encoder: Encoder, cache: EmbeddingCache) -> None:
        self.encoder = encoder
        self.cache = cache

    @property
    def id(self) -> str:
        """The wrapped encoder's id."""
        return self.encoder.id

    @property
    def dim(self) -> int:
        """The wrapped encoder's embedding length."""
        return self.encoder.dim

    def fit(self, texts: Sequence[str]) -> CachedEncoder:
        """Fit the wrapped encoder (its id changes with its fitted state); returns self."""
        self.encoder.fit(texts)
        return self

    def encode(self, texts: Sequence[str], *, show_progress: bool | None = None) -> np.ndarray:
        """Embed texts in input order, embedding each distinct uncached text once, in one batch."""
        text_list = as_text_list(texts)
        encoder_id, dim = self.id, self.dim
        if not text_list:
            return np.zeros((0, dim), dtype=np.float32)
        unique_texts = list(dict.fromkeys(text_list))
        vectors = np.empty((len(unique_texts), dim), dtype=np.float32)
        hits, mask = self.cache.get_many(encoder_id, unique_texts)
        if mask.any():
            if hits.shape[1] != dim:
                raise StateError(
                    f"{self.cache.path}: cached vectors of encoder {encoder_id!r} have length "
                    f"{hits.shape[1]}, the encoder gives {dim}; delete the cache file"
                )
            vectors[mask] = hits
        missing = [text for text, hit in zip(unique_texts, mask, strict=True) if not hit]
        if missing:
            fresh = np.asarray(self.encoder.encode(missing, show_progress=show_progress))
            if fresh.shape != (len(missing), dim):
                raise ValueError(
                    f"encoder {encoder_id!r} returned shape {fresh.shape} for {len(missing)} "
                    f"texts, expected ({len(missing)}, {dim})"
                )
            fresh = fresh.astype(np.float32, copy=False)
            self.cache.put_many(encoder_id, missing, fresh)
            vectors[~mask] = fresh
        row_of_text = {text: row for row, text in enumerate(unique_texts)}
        return vectors[[row_of_text[text] for text in text_list]]

    def save(self, directory: Path) -> None:
        """Save the wrapped encoder."""
        self.encoder.save(directory)

    def __repr__(self) -> str:
        return f"CachedEncoder({self.encoder!r}, {self.cache!r})"
