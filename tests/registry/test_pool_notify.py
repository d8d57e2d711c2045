"""Pool changes pushed by PostgreSQL: NOTIFY at commit, nothing on rollback, and ``watch``.

Every write that bumps ``pool_version`` announces the new version on
``postgres_backend.NOTIFY_CHANNEL`` inside its own transaction. A plain psycopg connection that
LISTENs is the witness here (not ``Registry.watch``, which is tested on its own below), so what is
checked is what any listener on the server sees.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from uniroute.errors import ModelExistsError, ModelNotFoundError, StateError
from uniroute.registry import ModelCost, ModelRecord, Registry
from uniroute.registry.postgres_backend import NOTIFY_CHANNEL
from uniroute.testing.postgres import PostgresCluster

# Long enough for a notification to cross loopback many times over; a wait that is meant to
# see nothing lasts this long.
QUIET_S = 0.5


def _record(name: str, cost: float = 1.0) -> ModelRecord:
    return ModelRecord(name=name, cost=ModelCost(per_query=cost))


@pytest.fixture
def url(postgres_cluster: PostgresCluster) -> str:
    """A new, empty database of the session's cluster."""
    return postgres_cluster.create_database()


@pytest.fixture
def listener(url: str) -> Iterator[psycopg.Connection]:
    """A connection LISTENing on the registry's channel, opened after the registry was made."""
    Registry(url).close()  # the tables first, so that making them announces nothing later
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"LISTEN {NOTIFY_CHANNEL}".encode())
        yield connection


def _received(connection: psycopg.Connection, wait: float = QUIET_S) -> list[str]:
    """Payloads of the registry's notifications that arrive within ``wait`` seconds."""
    return [n.payload for n in connection.notifies(timeout=wait) if n.channel == NOTIFY_CHANNEL]


def test_every_committed_change_announces_its_new_pool_version(url, listener) -> None:
    with Registry(url) as registry:
        start = registry.pool_version()
        registry.bind("art", ["p0", "p1"])
        registry.add_model(_record("a"), {"p0": 1.0, "p1": 0.0})
        registry.set_cost("a", ModelCost(per_query=2.0))
        registry.set_enabled("a", False)
        registry.remove_model("a")
        end = registry.pool_version()
        payloads = _received(listener)
    assert end - start == 5
    assert payloads == [str(v) for v in range(start + 1, end + 1)]


def test_a_write_that_leaves_pool_version_alone_announces_nothing(url, listener) -> None:
    with Registry(url) as registry:
        registry.add_model(_record("a"), {"p0": 1.0})
        assert _received(listener) == [str(registry.pool_version())]
        version = registry.pool_version()
        registry.set_features("art", {"a": np.ones(3)}, notify=False)
        assert registry.pool_version() == version
    assert _received(listener) == []


def test_a_rolled_back_write_announces_nothing(url, listener, postgres_cluster) -> None:
    with Registry(url) as registry:
        registry.add_model(_record("a"), {"p0": 1.0})
        assert len(_received(listener)) == 1
        version = registry.pool_version()
        with pytest.raises(ModelExistsError):
            registry.add_model(_record("a"), {"p0": 0.0})
        with pytest.raises(ModelNotFoundError):
            registry.set_enabled("missing", False)
        # A failure at COMMIT itself, after the bump and the NOTIFY ran in the transaction: a
        # deferred constraint trigger that refuses one name.
        with psycopg.connect(url, autocommit=True) as raw:
            raw.execute(
                b"CREATE FUNCTION refuse_doomed() RETURNS trigger LANGUAGE plpgsql AS $$"
                b" BEGIN IF NEW.name = 'doomed' THEN RAISE EXCEPTION 'refused at commit';"
                b" END IF; RETURN NULL; END $$"
            )
            raw.execute(
                b"CREATE CONSTRAINT TRIGGER refuse_doomed AFTER INSERT ON models"
                b" DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_doomed()"
            )
        with pytest.raises(StateError, match="refused at commit"):
            registry.add_model(_record("doomed"), {"p0": 1.0})
        assert not registry.has_model("doomed")
        assert registry.pool_version() == version
        assert _received(listener) == []
        registry.add_model(_record("b"), {"p0": 1.0})
        assert _received(listener) == [str(version + 1)]


def test_watch_calls_back_after_each_commit_and_stops(url) -> None:
    calls: queue.Queue[tuple[int | None, int]] = queue.Queue()
    with Registry(url) as watched, Registry(url) as reader, Registry(url) as writer:

        def on_change(revision: int | None) -> None:
            # What a gateway does on a notification: read the registry. It must see the change.
            calls.put((revision, reader.pool_version()))

        watcher = watched.watch(on_change)
        assert watcher is not None
        try:
            first = calls.get(timeout=10)
            assert first[0] is None  # connected: read once, changes may have been missed
            assert watcher.connected
            for name in ("a", "b", "c"):
                started = time.monotonic()
                writer.add_model(_record(name), {"p0": 1.0})
                revision, seen = calls.get(timeout=5)
                assert time.monotonic() - started < 1.0
                assert revision == seen == writer.pool_version()
        finally:
            watcher.stop()
        assert not watcher.connected
        writer.remove_model("a")
        with pytest.raises(queue.Empty):
            calls.get(timeout=QUIET_S)


def test_an_sqlite_registry_cannot_push(tmp_path: Path) -> None:
    with Registry(tmp_path / "pool.db") as registry:
        assert registry.watch(lambda revision: None) is None
