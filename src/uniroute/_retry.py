"""Retrying an async call with exponential backoff, shared by every layer that calls endpoints.

``retry`` makes up to ``attempts`` calls. After a failed attempt ``i`` (0-based) whose exception
``retryable`` accepts, it waits ``backoff * 2**i`` seconds, or longer when the server asked for
it (``retry_after``: a Retry-After delay, capped at ``max_retry_after`` so one header cannot
stall a caller), then calls again. Any other exception, and the last attempt's, propagates as is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from uniroute._checks import non_negative_number
from uniroute.errors import UsageError

_T = TypeVar("_T")

#: The longest wait a Retry-After header may impose by default, in seconds.
MAX_RETRY_AFTER = 30.0

Retryable = type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool]


def parse_retry_after(header: str | None) -> float | None:
    """A Retry-After header's delay in seconds (the number form only; None if absent or other)."""
    value = (header or "").strip()
    # The HTTP-date form is not worth a date parser here: the backoff delay applies instead.
    return float(value) if value.replace(".", "", 1).isdigit() else None


def _accepts(retryable: Retryable, exc: Exception) -> bool:
    if isinstance(retryable, type | tuple):
        return isinstance(exc, retryable)
    return bool(retryable(exc))


async def retry(
    call: Callable[[], Awaitable[_T]],
    *,
    attempts: int,
    backoff: float,
    retryable: Retryable,
    on_retry: Callable[[int, Exception, float], None] | None = None,
    retry_after: Callable[[Exception], float | None] | None = None,
    max_retry_after: float = MAX_RETRY_AFTER,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> _T:
    """``await call()``, retrying exceptions ``retryable`` accepts up to ``attempts`` calls in all.

    ``retryable`` is an exception class, a tuple of them, or a predicate. ``on_retry(attempt,
    exc, delay)`` runs before each wait (``attempt`` counts from 1). ``retry_after(exc)`` may give
    the server's requested delay, which lengthens (never shortens) the backoff, up to
    ``max_retry_after``. ``sleep`` is the wait (``anyio.sleep`` works too).
    """
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise UsageError(f"attempts must be a whole number >= 1, got {attempts!r}")
    backoff = non_negative_number(backoff, "backoff")
    max_retry_after = non_negative_number(max_retry_after, "max_retry_after")
    for attempt in range(attempts):
        try:
            return await call()
        # Exception, not BaseException: a cancelled task or an interrupt is never retried.
        except Exception as exc:
            if attempt == attempts - 1 or not _accepts(retryable, exc):
                raise
            delay = backoff * 2**attempt
            requested = retry_after(exc) if retry_after is not None else None
            if requested is not None:
                delay = max(delay, min(requested, max_retry_after))
            if on_retry is not None:
                on_retry(attempt + 1, exc, delay)
        await sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
