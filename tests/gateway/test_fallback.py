"""Circuit breaker states and the fallback loop over ranked models."""

from __future__ import annotations

import asyncio

import pytest

from uniroute.gateway.fallback import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    AllModelsFailedError,
    BreakerBoard,
    CircuitBreaker,
    UpstreamError,
    call_with_fallback,
)


class ManualClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_then_probes_and_closes() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10.0, clock=clock)
    for _ in range(2):
        assert breaker.try_acquire()
        breaker.record_failure()
    assert breaker.state == CLOSED
    breaker.record_failure()
    assert breaker.state == OPEN
    assert not breaker.try_acquire()
    clock.now += 9.9
    assert not breaker.try_acquire()
    clock.now += 0.2
    assert breaker.state == HALF_OPEN
    assert breaker.try_acquire()  # the single probe
    assert not breaker.try_acquire()  # no second request while the probe is out
    breaker.record_success()
    assert breaker.state == CLOSED
    assert breaker.try_acquire() and breaker.try_acquire()


def test_failed_probe_restarts_the_cooldown() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5.0, clock=clock)
    breaker.record_failure()
    clock.now += 5.0
    assert breaker.try_acquire()
    breaker.record_failure()
    assert breaker.state == OPEN
    clock.now += 4.0
    assert not breaker.try_acquire()
    clock.now += 1.0
    assert breaker.try_acquire()
    assert breaker.times_opened == 2


def test_success_resets_the_consecutive_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=5.0, clock=ManualClock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == CLOSED


def test_abandoned_probe_is_given_back_after_a_cooldown() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5.0, clock=clock)
    breaker.record_failure()
    clock.now += 5.0
    assert breaker.try_acquire()
    clock.now += 4.0
    assert not breaker.try_acquire()
    clock.now += 1.0
    assert breaker.try_acquire()


def test_breaker_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError, match="cooldown_s"):
        CircuitBreaker(cooldown_s=0)


def _run(coro):
    return asyncio.run(coro)


def test_fallback_moves_down_the_ranking_and_records_attempts() -> None:
    board = BreakerBoard(failure_threshold=1, cooldown_s=60.0, clock=ManualClock())
    calls: list[str] = []

    async def call(model: str) -> str:
        calls.append(model)
        if model == "a":
            raise UpstreamError("HTTP 500 from 'a'", status=500)
        return f"answer of {model}"

    result = _run(call_with_fallback(["a", "b", "c"], call, board, max_models=3))
    assert result.model == "b" and result.value == "answer of b"
    assert calls == ["a", "b"]
    assert [(a.model, a.outcome) for a in result.attempts] == [("a", "failed"), ("b", "ok")]
    assert board.get("a").state == OPEN
    # The next request skips the open model without calling it.
    calls.clear()
    result = _run(call_with_fallback(["a", "b", "c"], call, board, max_models=3))
    assert calls == ["b"]
    assert result.attempts[0].outcome == "skipped"


def test_fallback_stops_after_max_models() -> None:
    board = BreakerBoard(failure_threshold=5, cooldown_s=60.0)
    calls: list[str] = []

    async def call(model: str) -> str:
        calls.append(model)
        raise UpstreamError(f"timeout from {model!r}")

    with pytest.raises(AllModelsFailedError) as info:
        _run(call_with_fallback(["a", "b", "c", "d"], call, board, max_models=2))
    assert calls == ["a", "b"]
    assert "timeout from 'a'" in str(info.value) and "timeout from 'b'" in str(info.value)


def test_request_rejected_by_upstream_is_not_retried_elsewhere_nor_counted() -> None:
    board = BreakerBoard(failure_threshold=1, cooldown_s=60.0)
    calls: list[str] = []

    async def call(model: str) -> str:
        calls.append(model)
        raise UpstreamError("rejected", status=400, counts_against_model=False)

    with pytest.raises(UpstreamError):
        _run(call_with_fallback(["a", "b"], call, board, max_models=2))
    assert calls == ["a"]
    assert board.get("a").state == CLOSED


def test_no_candidates_is_a_clear_failure() -> None:
    async def call(model: str) -> str:
        return model

    with pytest.raises(AllModelsFailedError, match="no candidate model"):
        _run(call_with_fallback([], call, BreakerBoard(), max_models=3))
