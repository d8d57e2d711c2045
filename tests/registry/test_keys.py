"""Virtual client keys in the registry (``Registry.keys``), on SQLite and PostgreSQL: create,
list, look up, revoke, and the atomic check-and-charge of their limits, under concurrency."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime

import pytest

from tests.registry.postgres import RegistryBackend
from uniroute.errors import KeyNotFoundError, RegistryError
from uniroute.registry import Registry
from uniroute.registry.keys import (
    DAILY_BUDGET,
    MONTHLY_BUDGET,
    RATE_LIMITED,
    Periods,
)

NOON = datetime(2026, 12, 2, 12, 0, 30, tzinfo=UTC)


def test_a_key_is_stored_by_its_hash_only(registry: Registry, backend: RegistryBackend) -> None:
    created = registry.keys.create(
        "ci bot", team="platform", allowed_models=["a", "b", "a"], rpm_limit=10,
        daily_spend_limit=1.5, monthly_spend_limit=20,
    )  # fmt: skip
    secret, key = created.secret, created.key
    assert secret.startswith("ur-") and len(secret) == 3 + 43
    assert key.allowed_models == ("a", "b") and key.team == "platform" and not key.revoked
    assert (key.rpm_limit, key.daily_spend_limit, key.monthly_spend_limit) == (10, 1.5, 20.0)
    rows = backend.execute(registry.path_for_tests, "SELECT * FROM client_keys")
    assert len(rows) == 1
    assert secret not in repr(rows) and hashlib.sha256(secret.encode()).hexdigest() in rows[0]
    assert registry.keys.lookup(secret) == key
    assert registry.keys.lookup(secret + "x") is None
    assert registry.keys.list() == [key]
    assert "secret" not in key.to_dict() and secret not in repr(key.to_dict())
    other = registry.keys.create("other")
    assert other.secret != secret and other.key.id != key.id
    assert other.key.allowed_models is None and not other.key.has_limits and key.has_limits


@pytest.fixture
def registry(backend: RegistryBackend):
    """An empty registry that remembers its location (the raw SQL checks read it)."""
    location = backend.new_location()
    with Registry(location) as opened:
        opened.path_for_tests = location  # type: ignore[attr-defined]
        yield opened


def test_revoked_keys_stay_known_and_the_gateway_stays_closed(registry: Registry) -> None:
    assert not registry.keys.any_keys()
    created = registry.keys.create("k")
    assert registry.keys.any_keys()
    revoked = registry.keys.revoke(created.key.id)
    assert revoked.revoked and revoked.revoked_at is not None
    assert registry.keys.revoke(created.key.id) == revoked  # again: nothing changes
    assert registry.keys.lookup(created.secret) == revoked
    assert registry.keys.any_keys()  # revoking the last key never opens the gateway
    with pytest.raises(KeyNotFoundError):
        registry.keys.revoke("key-nope")
    with pytest.raises(KeyNotFoundError):
        registry.keys.reserve(created.key.id, 0.1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "key name"),
        ({"name": " padded"}, "key name"),
        ({"name": "sk-" + "a" * 40}, "looks like a secret"),
        ({"name": "k", "team": "a b"}, "team"),
        ({"name": "k", "team": "x" * 65}, "team"),
        ({"name": "k", "allowed_models": []}, "empty"),
        ({"name": "k", "allowed_models": "gpt"}, "list"),
        ({"name": "k", "rpm_limit": 0}, "rpm"),
        ({"name": "k", "rpm_limit": True}, "rpm"),
        ({"name": "k", "daily_spend_limit": float("nan")}, "daily budget"),
        ({"name": "k", "monthly_spend_limit": -1}, "monthly budget"),
    ],
)
def test_bad_fields_are_refused_by_name(registry: Registry, fields: dict, message: str) -> None:
    fields = dict(fields)
    name = fields.pop("name")
    with pytest.raises(RegistryError, match=message):
        registry.keys.create(name, **fields)
    assert registry.keys.list() == []


def test_the_periods_of_a_moment() -> None:
    periods = Periods.at(NOON)
    assert (periods.minute, periods.day, periods.month) == (
        "minute:2026-12-02T12:00", "day:2026-12-02", "month:2026-12",
    )  # fmt: skip
    assert periods.to_next["minute"] == 29.5 + 0.5
    assert periods.to_next["day"] == 12 * 3600 - 30
    assert Periods.at(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)).to_next["month"] == 60


def test_reserve_then_settle_charges_the_actual_cost(registry: Registry) -> None:
    key = registry.keys.create("k", daily_spend_limit=1.0).key
    first = registry.keys.reserve(key.id, 0.25, at=NOON)
    assert first.admitted and first.periods == ("day:2026-12-02", "month:2026-12")
    registry.keys.settle(first, 0.1)
    usage = {row.period: (row.spend, row.requests) for row in registry.keys.usage(key.id)}
    spent = (pytest.approx(0.1), 1)
    assert usage == {"day:2026-12-02": spent, "month:2026-12": spent}
    # The day's spend (with what is reserved) reaching the limit refuses the next request.
    second = registry.keys.reserve(key.id, 0.9, at=NOON)
    assert second.admitted
    refused = registry.keys.reserve(key.id, 0.01, at=NOON)
    assert refused.refused == DAILY_BUDGET and refused.retry_after_s == 12 * 3600 - 30
    assert refused.limit == 1.0 and refused.used == pytest.approx(1.0)
    # Settling below the estimate gives the budget back.
    registry.keys.settle(second, 0.5)
    assert registry.keys.reserve(key.id, 0.01, at=NOON).admitted
    # The next day starts afresh; the month goes on counting.
    tomorrow = datetime(2026, 12, 3, 0, 0, 1, tzinfo=UTC)
    assert registry.keys.reserve(key.id, 0.0, at=tomorrow).admitted
    month = {r.period: r for r in registry.keys.usage(key.id)}["month:2026-12"]
    assert month.requests == 4 and month.spend == pytest.approx(0.61)


def test_a_settlement_after_midnight_goes_to_the_reserved_day(registry: Registry) -> None:
    key = registry.keys.create("k", daily_spend_limit=5.0).key
    late = registry.keys.reserve(key.id, 1.0, at=datetime(2026, 12, 2, 23, 59, 59, tzinfo=UTC))
    registry.keys.settle(late, 2.0)
    usage = {row.period: row.spend for row in registry.keys.usage(key.id)}
    assert usage == {"day:2026-12-02": 2.0, "month:2026-12": 2.0}


def test_rpm_and_monthly_limits(registry: Registry, backend: RegistryBackend) -> None:
    key = registry.keys.create("k", rpm_limit=2, monthly_spend_limit=1.0).key
    assert registry.keys.reserve(key.id, 0.0, at=NOON).admitted
    assert registry.keys.reserve(key.id, 0.0, at=NOON).admitted
    limited = registry.keys.reserve(key.id, 0.0, at=NOON)
    assert limited.refused == RATE_LIMITED and limited.retry_after_s == 29.5 + 0.5
    later = datetime(2026, 12, 2, 12, 1, 0, tzinfo=UTC)
    assert registry.keys.reserve(key.id, 2.0, at=later).admitted  # a new minute
    # Only the current minute's row is kept.
    minutes = backend.execute(
        registry.path_for_tests, "SELECT period FROM key_usage WHERE period LIKE 'minute:%'"
    )
    assert minutes == [("minute:2026-12-02T12:01",)]
    assert registry.keys.reserve(key.id, 0.0, at=later).refused == MONTHLY_BUDGET


def test_charge_counts_a_key_without_limits_and_teams_add_up(registry: Registry) -> None:
    a = registry.keys.create("a", team="red").key
    b = registry.keys.create("b", team="red").key
    c = registry.keys.create("c").key
    registry.keys.charge(a.id, 0.5, at=NOON)
    registry.keys.charge(b.id, 0.25, at=NOON)
    registry.keys.charge(c.id, 1.0, at=NOON)
    teams = registry.keys.team_spend("day:2026-12-02")
    assert teams == {"red": {"spend": 0.75, "requests": 2}, None: {"spend": 1.0, "requests": 1}}
    assert len(registry.keys.usage()) == 6
    with pytest.raises(KeyNotFoundError):
        registry.keys.usage("key-nope")


def test_concurrent_reservations_never_overshoot_and_spend_is_exact(
    registry: Registry, backend: RegistryBackend
) -> None:
    """200 requests at once from 8 threads, each reserving 0.01 and settling 0.007: the limit
    admits only requests that fit, and the spend is exactly the admitted requests' cost."""
    limit, estimate, actual = 1.0, 0.01, 0.007
    key = registry.keys.create("k", daily_spend_limit=limit).key
    # A second Registry on the same database: another process (replica) sharing it.
    with Registry(registry.path_for_tests) as other:
        stores = [registry.keys, other.keys]
        admitted: list[int] = []
        lock = threading.Lock()

        def work(worker: int) -> None:
            store = stores[worker % 2]
            for _ in range(25):
                reservation = store.reserve(key.id, estimate, at=NOON)
                if reservation.admitted:
                    store.settle(reservation, actual)
                    with lock:
                        admitted.append(1)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    day = {row.period: row for row in registry.keys.usage(key.id)}["day:2026-12-02"]
    assert day.requests == len(admitted)
    assert day.spend == pytest.approx(len(admitted) * actual, rel=1e-9)
    # Admission stops once the spend reached the limit: at most one estimate past it.
    # (Refused requests met reservations in flight, which later settled lower.)
    assert limit - 8 * estimate <= day.spend < limit + estimate
    assert len(admitted) < 200
