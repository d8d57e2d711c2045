"""Fallback across models and a circuit breaker per model.

A routed request tries the models of ``Decision.ranking`` in order (best objective first) until
one answers. A model that fails ``failure_threshold`` times in a row is *open*: it is skipped for
``cooldown_s`` seconds, then *half-open*: exactly one request is let through as a probe; if it
succeeds the model is *closed* (back in rotation), if it fails the cool-down starts again.

The breakers are used from the event loop only, so they need no locks.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

T = TypeVar("T")


class UpstreamError(Exception):
    """One model failed to answer one request; ``reason`` is short and safe to log."""

    def __init__(
        self,
        reason: str,
        *,
        kind: str = "error",
        status: int | None = None,
        counts_against_model: bool = True,
        body: bytes | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        #: A metric label: ``connect``, ``timeout``, ``http_<status>``, ``bad_response``, ...
        self.kind = kind if status is None else f"http_{status}"
        self.status = status
        #: False when the failure says nothing about the model's health (the upstream rejected
        #: the request itself), so the breaker is not moved and no other model is tried.
        self.counts_against_model = counts_against_model
        #: The upstream's response body, passed back to the client for rejected requests.
        self.body = body


class CircuitBreaker:
    """Tracks one model's consecutive failures and decides whether a request may use it."""

    def __init__(
        self,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if cooldown_s <= 0:
            raise ValueError(f"cooldown_s must be > 0, got {cooldown_s}")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self.probe_started_at: float | None = None
        self.times_opened = 0

    @property
    def state(self) -> str:
        """``closed``, ``open`` (cooling down) or ``half_open`` (cool-down over, probing)."""
        if self.opened_at is None:
            return CLOSED
        if self.clock() - self.opened_at < self.cooldown_s:
            return OPEN
        return HALF_OPEN

    def try_acquire(self) -> bool:
        """True if a request may go to this model now; in half-open, grants the single probe."""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            return False
        now = self.clock()
        # A probe whose outcome never came back (cancelled request) must not block the model
        # forever: after another cool-down a new probe is allowed.
        if self.probe_started_at is not None and now - self.probe_started_at < self.cooldown_s:
            return False
        self.probe_started_at = now
        return True

    def record_success(self) -> None:
        """The model answered: close the breaker and reset the failure count."""
        self.consecutive_failures = 0
        self.opened_at = None
        self.probe_started_at = None

    def record_failure(self) -> None:
        """The model failed: count it; open at the threshold, or again after a failed probe."""
        self.consecutive_failures += 1
        was_probing = self.opened_at is not None
        if was_probing or self.consecutive_failures >= self.failure_threshold:
            self.opened_at = self.clock()
            self.probe_started_at = None
            self.times_opened += 1

    def release(self) -> None:
        """Give back a probe slot whose request ended without a verdict on the model."""
        self.probe_started_at = None


class BreakerBoard:
    """One CircuitBreaker per model name, created on first use with shared settings."""

    def __init__(
        self,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, model: str) -> CircuitBreaker:
        """The breaker of a model (a fresh closed one the first time)."""
        breaker = self._breakers.get(model)
        if breaker is None:
            breaker = CircuitBreaker(self.failure_threshold, self.cooldown_s, self.clock)
            self._breakers[model] = breaker
        return breaker

    def states(self) -> dict[str, str]:
        """Current state of every model seen so far."""
        return {name: breaker.state for name, breaker in sorted(self._breakers.items())}

    def forget(self, model: str) -> None:
        """Drop a model's breaker (the model was removed from the pool)."""
        self._breakers.pop(model, None)


@dataclass
class Attempt:
    """What happened to one model tried for a request."""

    model: str
    outcome: str  # "ok", "failed" or "skipped" (breaker open)
    reason: str = ""
    seconds: float = 0.0


@dataclass
class FallbackResult(Generic[T]):
    """The answer of the first model that succeeded and the log of every model tried."""

    model: str
    value: T
    attempts: list[Attempt] = field(default_factory=list)


class AllModelsFailedError(Exception):
    """No candidate model answered; ``attempts`` says what happened to each."""

    def __init__(self, attempts: list[Attempt], last_failure: UpstreamError | None) -> None:
        self.attempts = attempts
        self.last_failure = last_failure
        tried = "; ".join(
            f"{a.model}: {a.reason or a.outcome}" for a in attempts if a.outcome != "ok"
        )
        super().__init__(f"no model could answer ({tried or 'no candidate model'})")


async def call_with_fallback(
    candidates: Iterable[str],
    call: Callable[[str], Awaitable[T]],
    board: BreakerBoard,
    max_models: int,
    clock: Callable[[], float] = time.perf_counter,
    *,
    success_on_return: bool = True,
) -> FallbackResult[T]:
    """Try ``call(model)`` on each candidate in order until one succeeds.

    Models whose breaker is open are skipped (and not counted against ``max_models``).
    ``call`` raises UpstreamError for a failure that should move on to the next model; a
    failure with ``counts_against_model=False`` stops the loop and is re-raised, since another
    model would fail the same way. Any other exception propagates unchanged.

    With ``success_on_return=False`` a returned value is not yet a success (a stream whose
    first bytes arrived may still break): the caller settles the winner's breaker with
    ``record_success`` or ``record_failure`` (or ``release``) once it knows.
    """
    attempts: list[Attempt] = []
    last_failure: UpstreamError | None = None
    tried = 0
    for model in candidates:
        if tried >= max_models:
            break
        breaker = board.get(model)
        if not breaker.try_acquire():
            attempts.append(Attempt(model, "skipped", f"circuit {breaker.state}"))
            continue
        tried += 1
        started = clock()
        try:
            value = await call(model)
        except UpstreamError as failure:
            attempts.append(Attempt(model, "failed", failure.reason, clock() - started))
            if not failure.counts_against_model:
                breaker.release()
                raise
            breaker.record_failure()
            last_failure = failure
            continue
        except BaseException:
            breaker.release()
            raise
        if success_on_return:
            breaker.record_success()
        attempts.append(Attempt(model, "ok", "", clock() - started))
        return FallbackResult(model=model, value=value, attempts=attempts)
    raise AllModelsFailedError(attempts, last_failure)
