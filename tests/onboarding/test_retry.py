"""The shared async retry helper: backoff, Retry-After, what is retried and what is not."""

from __future__ import annotations

import asyncio

import pytest

from uniroute._retry import parse_retry_after, retry
from uniroute.errors import UsageError


class _Flaky:
    """Fails ``failures`` times with ``error`` (built per call), then returns "ok"."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return "ok"


def _run(call, **options) -> tuple[object, list[float]]:
    """(the result, or the exception raised; the waits asked for)."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def main() -> object:
        try:
            return await retry(call, sleep=sleep, **options)
        except Exception as exc:
            return exc

    return asyncio.run(main()), waits


def test_retries_with_exponential_backoff_until_a_call_succeeds() -> None:
    flaky = _Flaky(3)
    seen = []
    result, waits = _run(
        flaky,
        attempts=4,
        backoff=0.5,
        retryable=ConnectionError,
        on_retry=lambda attempt, exc, delay: seen.append((attempt, str(exc), delay)),
    )
    assert result == "ok" and flaky.calls == 4
    assert waits == [0.5, 1.0, 2.0]
    assert seen == [(1, "failure 1", 0.5), (2, "failure 2", 1.0), (3, "failure 3", 2.0)]


def test_the_last_failure_propagates_after_the_last_attempt() -> None:
    flaky = _Flaky(10)
    result, waits = _run(flaky, attempts=3, backoff=0.1, retryable=(ConnectionError, OSError))
    assert isinstance(result, ConnectionError) and str(result) == "failure 3"
    assert flaky.calls == 3 and waits == pytest.approx([0.1, 0.2])


def test_an_exception_that_is_not_retryable_propagates_at_once() -> None:
    flaky = _Flaky(1, error=KeyError)
    result, waits = _run(flaky, attempts=5, backoff=1.0, retryable=ConnectionError)
    assert isinstance(result, KeyError) and flaky.calls == 1 and waits == []
    predicate = _Flaky(1, error=ValueError)
    result, _ = _run(predicate, attempts=2, backoff=0, retryable=lambda exc: "1" in str(exc))
    assert result == "ok" and predicate.calls == 2


def test_retry_after_lengthens_the_wait_up_to_the_cap() -> None:
    delays = iter([5.0, 0.01, 120.0, None])
    result, waits = _run(
        _Flaky(4),
        attempts=5,
        backoff=0.5,
        retryable=ConnectionError,
        retry_after=lambda exc: next(delays),
        max_retry_after=30.0,
    )
    # 5 s asked: 5 s; 0.01 s asked: the 1 s backoff; 120 s asked: capped; nothing asked: backoff.
    assert result == "ok" and waits == [5.0, 1.0, 30.0, 4.0]


def test_cancellation_is_never_retried() -> None:
    calls = []

    async def cancelled() -> None:
        calls.append(1)
        raise asyncio.CancelledError

    async def main() -> None:
        await retry(cancelled, attempts=3, backoff=0, retryable=lambda exc: True)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    assert calls == [1]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"attempts": 0, "backoff": 0}, "attempts must be a whole number >= 1"),
        ({"attempts": 2.5, "backoff": 0}, "attempts must be a whole number"),
        ({"attempts": 1, "backoff": -1}, "backoff must be a finite number >= 0"),
    ],
)
def test_bad_settings_are_usage_errors(options: dict, message: str) -> None:
    result, _ = _run(_Flaky(0), retryable=ConnectionError, **options)
    assert isinstance(result, UsageError) and message in str(result)


@pytest.mark.parametrize(
    "header, seconds",
    [("3", 3.0), ("1.5", 1.5), (" 2 ", 2.0), ("", None), (None, None), ("-1", None),
     ("Wed, 21 Oct 2015 07:28:00 GMT", None)],
)  # fmt: skip
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds
