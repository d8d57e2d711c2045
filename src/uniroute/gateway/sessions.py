"""Where the gateway keeps conversations' sessions: in its memory, or in a shared registry.

``memory``: an LRU of at most ``max_sessions`` entries with a TTL, per replica (an SQLite
registry serves one host, often one gateway). ``registry``: the registry's ``sessions`` table,
which every replica on a PostgreSQL registry shares, so a conversation whose turns a load
balancer spreads over replicas keeps its model; it is read on each turn of a continuing
conversation and written after the answer, off the request's path. ``auto`` (the default)
picks ``registry`` for a PostgreSQL registry and ``memory`` otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict

import anyio.to_thread

from uniroute.gateway.access_log import GATEWAY_LOGGER
from uniroute.registry import Registry
from uniroute.registry.sessions import SessionStore

logger = logging.getLogger(GATEWAY_LOGGER)

MODES = ("auto", "memory", "registry")


class SessionCache:
    """Sessions' last model and estimated error, by session key, with a TTL."""

    def __init__(self, registry: Registry, mode: str, *, ttl_s: float, max_sessions: int) -> None:
        if mode == "auto":
            mode = "registry" if registry.dialect == "postgresql" else "memory"
        self.mode = mode
        self.ttl_s = float(ttl_s)
        self.max_sessions = int(max_sessions)
        self._store: SessionStore | None = registry.sessions if mode == "registry" else None
        self._memory: OrderedDict[str, tuple[str, float | None, float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def shared(self) -> bool:
        """Whether sessions live in the registry (reading one is then a database call)."""
        return self._store is not None

    def get(self, key: str) -> tuple[str, float | None] | None:
        """(model, estimated error) of a live session, or None."""
        if self._store is not None:
            found = self._store.get(key)
            return None if found is None else (found[0], found[1])
        with self._lock:
            entry = self._memory.get(key)
            if entry is None:
                return None
            if entry[2] <= time.monotonic():
                del self._memory[key]
                return None
            self._memory.move_to_end(key)
            return entry[0], entry[1]

    def record(self, key: str, model: str, estimated_error: float | None) -> None:
        """Note which model answered the session's turn (the oldest entry goes when full)."""
        if self._store is not None:
            self._store.record(key, model, estimated_error, self.ttl_s)
            return
        with self._lock:
            self._memory[key] = (model, estimated_error, time.monotonic() + self.ttl_s)
            self._memory.move_to_end(key)
            while len(self._memory) > self.max_sessions:
                self._memory.popitem(last=False)

    async def previous(self, key: str) -> tuple[str, float | None] | None:
        """``get`` from a request: in a thread when it reads the registry; a registry that
        cannot be read means no session (the turn is routed afresh), never a failed request."""
        if self._store is None:
            return self.get(key)
        try:
            return await anyio.to_thread.run_sync(self.get, key)
        except Exception:
            logger.exception("session lookup failed: routing the turn afresh")
            return None

    def record_soon(self, key: str, model: str, estimated_error: float | None) -> None:
        """``record`` from a request, off its path: in a worker thread for the registry."""
        if self._store is None:
            self.record(key, model, estimated_error)
            return
        asyncio.get_running_loop().run_in_executor(
            None, self._record_logged, key, model, estimated_error
        )

    def _record_logged(self, key: str, model: str, estimated_error: float | None) -> None:
        try:
            self.record(key, model, estimated_error)
        except Exception:  # the next turn is then routed afresh
            logger.exception("session could not be recorded")

    def __len__(self) -> int:
        if self._store is not None:
            return self._store.count()
        with self._lock:
            return len(self._memory)
