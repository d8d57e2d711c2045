"""Conversations' sessions in the registry, on both backends, and the gateway's session cache."""

from __future__ import annotations

import time

import pytest

from tests.registry.postgres import RegistryBackend
from uniroute.gateway.sessions import SessionCache
from uniroute.registry import Registry


def test_a_session_recorded_through_one_registry_is_read_through_another(
    backend: RegistryBackend,
) -> None:
    location = backend.new_location()
    with Registry(location) as a, Registry(location) as b:
        assert a.sessions.get("c:1") is None
        a.sessions.record("c:1", "mid", 0.2, ttl_s=60)
        assert b.sessions.get("c:1") == ("mid", 0.2, 1)
        b.sessions.record("c:1", "dear", 0.05, ttl_s=60)  # escalated on the other replica
        assert a.sessions.get("c:1") == ("dear", 0.05, 2)
        assert a.sessions.count() == 1 and a.pool_version() == 0


def test_an_expired_session_is_gone_and_starts_again(backend: RegistryBackend) -> None:
    with Registry(backend.new_location()) as registry:
        registry.sessions.record("c:1", "mid", None, ttl_s=0.05)
        time.sleep(0.1)
        assert registry.sessions.get("c:1") is None and registry.sessions.count() == 0
        registry.sessions.record("c:1", "cheap", 0.3, ttl_s=60)
        assert registry.sessions.get("c:1") == ("cheap", 0.3, 1)  # a new session: turn 1


@pytest.mark.parametrize("mode", ["memory", "registry"])
def test_the_session_cache_keeps_the_last_model_for_its_ttl(tmp_path, mode: str) -> None:
    with Registry(tmp_path / "pool.db") as registry:
        cache = SessionCache(registry, mode, ttl_s=0.2, max_sessions=10)
        assert cache.shared == (mode == "registry")
        cache.record("c:1", "mid", 0.2)
        assert cache.get("c:1") == ("mid", 0.2)
        time.sleep(0.3)
        assert cache.get("c:1") is None


def test_memory_sessions_are_bounded_least_recently_used_first(tmp_path) -> None:
    with Registry(tmp_path / "pool.db") as registry:
        cache = SessionCache(registry, "memory", ttl_s=60, max_sessions=3)
        for i in range(3):
            cache.record(f"c:{i}", "m", None)
        assert cache.get("c:0") == ("m", None)  # used: now the most recent
        cache.record("c:3", "m", None)
        assert len(cache) == 3 and cache.get("c:1") is None and cache.get("c:0") is not None


def test_auto_shares_sessions_only_on_postgresql(backend: RegistryBackend) -> None:
    with Registry(backend.new_location()) as registry:
        cache = SessionCache(registry, "auto", ttl_s=60, max_sessions=10)
        assert cache.shared == (backend.name == "postgresql")
