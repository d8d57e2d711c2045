"""Client keys at the gateway: who is calling, which models they may use, and what they spend.

Two kinds of key are accepted, side by side:

* the **static keys** of the environment variable named by ``client_keys_env`` (compared in
  constant time, no limits, as before);
* the registry's **virtual keys** (``uniroute.registry.keys``): looked up by the SHA-256 of the
  secret, with a short in-memory cache (``KEY_CACHE_TTL_S``; a revocation made through this
  replica's admin API applies at once, one made elsewhere within the TTL; a key with limits is
  re-read in every reservation, so its revocation applies at once everywhere).

``/v1`` needs a key as soon as either kind exists (a revoked virtual key counts: revoking the
last key never opens the gateway). A request on a virtual key is *metered* (:class:`Meter`):
before the upstream call, its key's allowed models filter the candidates (403
``model_not_allowed``) and its limits are checked and its estimated cost reserved in the
registry (429 ``rate_limit_exceeded`` / ``budget_exceeded``, with ``retry-after``); every
answer's cost is then taken from the upstream's reported ``usage`` (token-priced models; a
per-query price is the price) and the reservation settled to it, after the answer was sent.
For streams the gateway asks the upstream for the final usage chunk
(``stream_options.include_usage``) and withholds that chunk from a client that did not ask
for it. Usage that is missing or malformed (the upstream is untrusted) is replaced by an
estimate from the text (``costs.estimate_tokens``) and counted in
``uniroute_key_estimated_usage_total``. A request that fails still counts as a request, at the
cost of the answers it got (usually none).

Requests on static keys, or on a gateway without keys, are not metered and pay nothing here.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from uniroute._json import JsonLimitError, loads_bounded
from uniroute.deployment import Snapshot
from uniroute.errors import KeyNotFoundError
from uniroute.gateway.access_log import GATEWAY_LOGGER, note, request_id_of
from uniroute.gateway.errors import ApiError
from uniroute.gateway.metrics import GatewayMetrics
from uniroute.gateway.upstream import UpstreamAnswer, UpstreamStream
from uniroute.registry import ModelCost
from uniroute.registry.costs import CHARS_PER_TOKEN
from uniroute.registry.keys import (
    DAILY_BUDGET,
    MONTHLY_BUDGET,
    RATE_LIMITED,
    ClientKey,
    KeyStore,
    Reservation,
    hash_secret,
)

logger = logging.getLogger(GATEWAY_LOGGER)

T = TypeVar("T")

#: Seconds a looked-up key (or an unknown secret, or whether any key exists) is trusted.
KEY_CACHE_TTL_S = 5.0
#: Looked-up secrets kept at most (by hash); beyond it the cache starts over.
KEY_CACHE_ENTRIES = 10_000
#: Token counts above this in one answer's usage are not believed (estimated instead).
MAX_REPORTED_TOKENS = 10_000_000
#: Where the caller and the meter of a request are kept in its ASGI scope.
CALLER_KEY = "uniroute_caller"
METER_KEY = "uniroute_meter"
#: Metric label of the callers that are not virtual keys (never a secret).
STATIC, ANONYMOUS = "static", "anonymous"
#: How an answer's cost was found (the ``basis`` label of ``uniroute_key_spend_total``).
USAGE, PER_QUERY, ESTIMATED = "usage", "per_query", "estimated"
# The text fields of chat and text completion chunks: what an estimate of a stream counts.
_TEXT_FIELDS = re.compile(
    rb'"(?:content|text|arguments|reasoning_content)"\s*:\s*"((?:[^"\\]|\\.)*)"'
)
_PRICES = ("uniroute.gateway.keys", "prices")


@dataclass(frozen=True)
class Caller:
    """Who sent a request: a virtual key, a static key, or nobody (the gateway has no keys)."""

    key: ClientKey | None
    label: str
    #: The guard that authenticated it (None for static keys and anonymous callers).
    guard: KeyGuard | None = None

    @property
    def team(self) -> str:
        """The key's team as a metric label ("none" without one)."""
        return (self.key.team if self.key is not None else None) or "none"


_STATIC_CALLER = Caller(None, STATIC)
_ANONYMOUS_CALLER = Caller(None, ANONYMOUS)


class LimitExceededError(ApiError):
    """A 429 for a key over one of its limits, answered with ``retry-after``."""

    def __init__(self, message: str, *, code: str, retry_after_s: float) -> None:
        super().__init__(429, message, code=code)
        self.retry_after_s = retry_after_s


def invalid_key(message: str = "invalid API key") -> ApiError:
    """The 401 for a request whose key is missing, unknown or revoked."""
    return ApiError(401, message, code="invalid_api_key")


# ---------------------------------------------------------------------------- the guard
class KeyGuard:
    """One gateway's view of the registry's keys: authentication, reservations, settlements."""

    def __init__(
        self,
        store: KeyStore,
        metrics: GatewayMetrics,
        *,
        ttl_s: float = KEY_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.ttl_s = ttl_s
        self.clock = clock
        self._keys: dict[str, tuple[float, ClientKey | None]] = {}
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._any: tuple[float, bool] | None = None
        # Moved by every ``forget``, so a background read that started before it is dropped.
        self._generation = 0

    # ------------------------------------------------------------------ authentication
    async def authenticate(self, secret: str | None, static_keys: Iterable[str]) -> Caller:
        """The caller of a request presenting ``secret`` (None: no key), or a 401."""
        static = frozenset(static_keys)
        virtual = await self.any_keys()
        if not static and not virtual:
            return _ANONYMOUS_CALLER
        if secret is None:
            raise invalid_key("missing API key: send 'Authorization: Bearer <key>'")
        if static and _matches_any(secret, static):
            return _STATIC_CALLER
        if not virtual:
            raise invalid_key()
        key = await self.lookup(secret)
        if key is None:
            raise invalid_key()
        if key.revoked:
            raise invalid_key("this API key has been revoked")
        return Caller(key, key.id, self)

    async def any_keys(self) -> bool:
        """Whether the registry holds any virtual key (cached for the TTL)."""
        known = self._any
        if known is not None:
            if known[0] <= self.clock():
                self._refresh_soon("any", self.store.any_keys, self._set_any)
            return known[1]
        # Never read: wait for the registry (an error refuses rather than opens the gateway).
        value = await self._read_once("any", self.store.any_keys)
        self._set_any(value)
        return value

    def _set_any(self, value: bool | None, ok: bool = True) -> None:
        """Cache whether any key exists (not ``ok``: the read failed, keep what is known)."""
        if ok and value is not None:
            self._any = (self.clock() + self.ttl_s, value)
        elif self._any is not None:
            self._any = (self.clock() + self.ttl_s, self._any[1])

    async def lookup(self, secret: str) -> ClientKey | None:
        """The key of a secret (cached for the TTL, unknown secrets too)."""
        digest = hash_secret(secret)
        cached = self._keys.get(digest)
        if cached is not None:
            if cached[0] <= self.clock():
                read = functools.partial(self.store.lookup, secret)
                self._refresh_soon(digest, read, functools.partial(self._set_key, digest))
            return cached[1]
        generation = self._generation
        key = await self._read_once(digest, functools.partial(self.store.lookup, secret))
        if generation == self._generation:  # else revoked meanwhile: not cached, read again
            self._set_key(digest, key)
        return key

    def _set_key(self, digest: str, key: ClientKey | None, ok: bool = True) -> None:
        """Cache a looked-up key (not ``ok``: the read failed, keep what is known)."""
        now = self.clock()
        if not ok:
            cached = self._keys.get(digest)
            if cached is not None:
                self._keys[digest] = (now + self.ttl_s, cached[1])
            return
        if len(self._keys) >= KEY_CACHE_ENTRIES:
            self._keys = {d: e for d, e in self._keys.items() if e[0] > now}
            if len(self._keys) >= KEY_CACHE_ENTRIES:
                self._keys.clear()
        self._keys[digest] = (now + self.ttl_s, key)

    def _refresh_soon(
        self, name: str, read: Callable[[], T], store: Callable[[Any, bool], None]
    ) -> None:
        """Read again in the background what the cache holds but no longer trusts: requests go
        on with what is known meanwhile, so a slow or unreachable registry delays none of
        them; a failed read keeps what is known for another TTL."""
        if name in self._pending:
            return
        generation = self._generation

        def stored(finished: asyncio.Future[Any]) -> None:
            # A key created or revoked meanwhile (``forget``): this read may predate it.
            if finished.cancelled() or generation != self._generation:
                return
            if finished.exception() is None:
                store(finished.result(), True)
                return
            logger.warning("cannot read the registry's client keys; using what was read before")
            store(None, False)

        self._start_read(name, read).add_done_callback(stored)

    async def _read_once(self, name: str, read: Callable[[], T]) -> T:
        """``read()`` in a thread, shared by every request that needs it meanwhile: one
        registry read however many requests wait for it. The read is a task of its own, so a
        request that goes away does not cancel it for the others."""
        task = self._pending.get(name) or self._start_read(name, read)
        return await asyncio.shield(task)

    def _start_read(self, name: str, read: Callable[[], T]) -> asyncio.Future[T]:
        task = asyncio.ensure_future(anyio.to_thread.run_sync(read))
        self._pending[name] = task

        def done(finished: asyncio.Future[Any]) -> None:
            self._pending.pop(name, None)
            if not finished.cancelled():
                finished.exception()  # retrieved: no warning when nobody waits any more

        task.add_done_callback(done)
        return task

    def forget(self, key_id: str | None = None) -> None:
        """Drop what is cached about a key (all keys when None): it was created or revoked."""
        self._generation += 1
        self._any = None
        if key_id is None:
            self._keys.clear()
            return
        self._keys = {d: e for d, e in self._keys.items() if e[1] is None or e[1].id != key_id}

    # ------------------------------------------------------------------ usage
    async def reserve(self, key: ClientKey, estimate: float) -> Reservation:
        """Check the key's limits and reserve ``estimate``, or raise the 429 (or 401)."""
        try:
            reservation = await anyio.to_thread.run_sync(self.store.reserve, key.id, estimate)
        except KeyNotFoundError:
            self.forget(key.id)
            raise invalid_key("this API key has been revoked") from None
        if reservation.admitted:
            return reservation
        reason = reservation.refused or RATE_LIMITED
        self.metrics.count_key_refusal(key.id, reason)
        raise _limit_error(reservation, reason)

    async def settle(self, key: ClientKey, reservation: Reservation | None, amount: float) -> None:
        """Record a finished request's cost: settle its reservation, or charge it at once."""
        if reservation is not None:
            await anyio.to_thread.run_sync(self.store.settle, reservation, amount)
        else:
            await anyio.to_thread.run_sync(self.store.charge, key.id, amount)


def _matches_any(secret: str, accepted: Iterable[str]) -> bool:
    """Constant-time comparison with every accepted key (time says nothing of which matched)."""
    given = secret.encode()
    found = False
    for candidate in accepted:
        found |= hmac.compare_digest(given, candidate.encode())
    return found


def _limit_error(reservation: Reservation, reason: str) -> LimitExceededError:
    retry = max(1, math.ceil(reservation.retry_after_s))
    if reason == RATE_LIMITED:
        return LimitExceededError(
            f"this key's limit of {reservation.limit:g} requests per minute is reached; "
            f"retry in {retry} s",
            code="rate_limit_exceeded",
            retry_after_s=retry,
        )
    period = {DAILY_BUDGET: "daily", MONTHLY_BUDGET: "monthly"}.get(reason, "")
    return LimitExceededError(
        f"this key's {period} budget of {reservation.limit:g} is spent "
        f"({reservation.used:.6g} used); it resets in {retry} s",
        code="budget_exceeded",
        retry_after_s=retry,
    )


# ---------------------------------------------------------------------------- one request
class Meter:
    """What one request on a virtual key reserved and what its answers cost (event loop only)."""

    def __init__(
        self,
        guard: KeyGuard,
        key: ClientKey,
        prices: Mapping[str, ModelCost],
        prompt_tokens: float,
        output_tokens: float | None,
        choices: int,
    ) -> None:
        self.guard = guard
        self.key = key
        self.prices = prices
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.choices = choices
        self.reservation: Reservation | None = None
        #: Every answer's (model, cost, basis), in the order they came.
        self.costs: list[tuple[str, float, str]] = []
        #: The model whose stream is being relayed (settled at its end), if any.
        self.stream_model: str | None = None
        self.stream_usage: tuple[int, int] | None = None
        self.stream_usage_bad = False
        self.stream_chars = 0
        #: Whether the client asked for the stream's usage chunk itself (else it is withheld).
        self.client_wants_usage = True
        self._finished = False

    def estimate(self, model: str) -> float:
        """The cost reserved for an answer of ``model``: the prompt's estimated tokens and the
        most the answer may hold (``max_tokens``, else the model's expected length)."""
        price = self.prices.get(model)
        if price is None:
            return 0.0
        if price.per_query is not None:
            return price.per_query
        output = price.expected_output_tokens if self.output_tokens is None else self.output_tokens
        return _token_cost(price, self.prompt_tokens, output * self.choices)

    def _cost(self, model: str, usage: tuple[int, int] | str, text_chars: int) -> None:
        """Count one answer: from its usage, or (``usage`` says why not) estimated."""
        price = self.prices.get(model)
        if price is None:  # not in this snapshot's pool: never the case for a servable model
            self.costs.append((model, 0.0, ESTIMATED))
            return
        if price.per_query is not None:
            self.costs.append((model, price.per_query, PER_QUERY))
            return
        if isinstance(usage, tuple):
            self.costs.append((model, _token_cost(price, *usage), USAGE))
            return
        self.guard.metrics.count_estimated_usage(model, usage)
        output = text_chars / CHARS_PER_TOKEN  # the rule of costs.estimate_tokens
        self.costs.append((model, _token_cost(price, self.prompt_tokens, output), ESTIMATED))

    def add_answer(self, model: str, body: bytes) -> None:
        """Count a complete answer by the usage it reports."""
        try:
            payload = loads_bounded(body)
        except JsonLimitError:
            payload = None
        self._cost(model, reported_usage(payload), _answer_chars(payload))

    def tap(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The stream's chunks, read for its usage (withheld unless the client asked for it)."""

        async def tapped() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                out = self._scan(chunk)
                if out:
                    yield out

        return tapped()

    def _scan(self, chunk: bytes) -> bytes:
        for match in _TEXT_FIELDS.finditer(chunk):
            self.stream_chars += len(match.group(1))
        if b'"usage"' not in chunk:
            return chunk
        lines = chunk.splitlines(keepends=True)
        kept: list[bytes] = []
        skip_blank = False
        for line in lines:
            if skip_blank and not line.strip():
                skip_blank = False
                continue
            skip_blank = False
            if (
                line.startswith(b"data:")
                and b'"usage"' in line
                # OpenAI sends "usage": null in every chunk before the last: nothing to read.
                and b'"usage":null' not in line
                and b'"usage": null' not in line
            ):
                try:
                    event = loads_bounded(line[5:].strip())
                except JsonLimitError:
                    event = None
                usage = reported_usage(event)
                if isinstance(usage, tuple):
                    self.stream_usage = usage
                elif usage != "missing":
                    self.stream_usage_bad = True
                if (
                    not self.client_wants_usage
                    and isinstance(event, dict)
                    and event.get("choices") == []
                ):
                    skip_blank = True  # the usage-only event the gateway asked for
                    continue
            kept.append(line)
        return b"".join(kept)

    async def finish(self) -> None:
        """Settle the request once (its stream's cost included), shielded from cancellation."""
        if self._finished:
            return
        self._finished = True
        if self.stream_model is not None:
            usage: tuple[int, int] | str
            if self.stream_usage is not None:
                usage = self.stream_usage
            else:
                usage = "malformed" if self.stream_usage_bad else "missing"
            self._cost(self.stream_model, usage, self.stream_chars)
        total = sum(cost for _, cost, _ in self.costs)
        key = self.key
        metrics = self.guard.metrics
        metrics.count_key_request(key.id, key.team or "none")
        for _, cost, basis in self.costs:
            metrics.record_key_spend(key.id, key.team or "none", cost, basis)
        with anyio.CancelScope(shield=True):
            try:
                await self.guard.settle(key, self.reservation, total)
            except Exception:  # the answer is out: the spend stays at its reservation
                logger.exception("could not record the spend of key %s", key.id)


def _token_cost(price: ModelCost, prompt_tokens: float, completion_tokens: float) -> float:
    per_1k_input = price.per_1k_input or 0.0
    per_1k_output = price.per_1k_output or 0.0
    return prompt_tokens / 1000.0 * per_1k_input + completion_tokens / 1000.0 * per_1k_output


def _token_count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= MAX_REPORTED_TOKENS else None


def reported_usage(payload: Any) -> tuple[int, int] | str:
    """(prompt_tokens, completion_tokens) of an answer or chunk, or why not: "missing" or
    "malformed" (not whole numbers in range: an upstream's word is checked, never trusted)."""
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if usage is None:
        return "missing"
    if not isinstance(usage, dict):
        return "malformed"
    prompt = _token_count(usage.get("prompt_tokens"))
    completion = _token_count(usage.get("completion_tokens"))
    if prompt is None or completion is None:
        return "malformed"
    return prompt, completion


def _answer_chars(payload: Any) -> int:
    """Characters of text in a complete answer's choices (for an estimate of its length)."""
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not isinstance(choices, list):
        return 0
    chars = 0
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice.get("text")
        if isinstance(text, str):
            chars += len(text)
    return chars


def _prompt_chars(body: Mapping[str, Any]) -> int:
    """Characters of the prompt a request sends (chat messages' text, or the prompt)."""
    chars = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                for part in content:
                    text = part.get("text") if isinstance(part, dict) else None
                    if isinstance(text, str):
                        chars += len(text)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        chars += len(prompt)
    elif isinstance(prompt, list):
        chars += sum(len(p) for p in prompt if isinstance(p, str))
    return chars


def _whole(value: Any, lowest: int, highest: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
        return None
    return value


def _prices(snapshot: Snapshot) -> dict[str, ModelCost]:
    """Each pool model's price (computed once per snapshot)."""
    return snapshot.derived.get(
        _PRICES, lambda: {r.name: r.cost for r in snapshot.records}, len(snapshot.records)
    )


# ---------------------------------------------------------------------------- route hooks
def caller_of(request: HTTPConnection) -> Caller | None:
    """Who sent this request (None before ``check_client_key`` ran)."""
    return request.scope.get(CALLER_KEY)


def meter_of(request: HTTPConnection) -> Meter | None:
    """This request's meter (None when it is not on a virtual key)."""
    return request.scope.get(METER_KEY)


async def admit(
    request: Request,
    snapshot: Snapshot,
    body: dict[str, Any],
    candidates: list[str],
    verified: T | None,
    *,
    direct: bool,
) -> tuple[list[str], T | None, dict[str, Any]]:
    """Before the upstream call: the candidates the key may use (403 when none), its limits
    checked and the first candidate's estimated cost reserved (429 when over a limit).

    Returns the candidates, the verify decision (None for a key limited to some models: the
    plan may name others, so the request is routed as usual) and the body to send (asking a
    stream for its usage).
    """
    caller = caller_of(request)
    key = None if caller is None else caller.key
    guard = None if caller is None else caller.guard
    if key is None or guard is None:
        return candidates, verified, body
    if key.allowed_models is not None:
        allowed = [model for model in candidates if key.allows(model)]
        if not allowed:
            guard.metrics.count_key_refusal(key.id, "model_not_allowed")
            if direct:
                message = f"this key may not use the model {candidates[0]!r}"
            else:
                message = "none of the models this key may use can take this request"
            raise ApiError(
                403,
                f"{message}; it may use {list(key.allowed_models)}",
                param="model",
                code="model_not_allowed",
            )
        if verified is not None:
            note(request, verify_skipped="the key is limited to some models")
        candidates, verified = allowed, None
    max_output = _whole(body.get("max_completion_tokens"), 1, MAX_REPORTED_TOKENS)
    if max_output is None:
        max_output = _whole(body.get("max_tokens"), 1, MAX_REPORTED_TOKENS)
    meter = Meter(
        guard,
        key,
        _prices(snapshot),
        _prompt_chars(body) / CHARS_PER_TOKEN,
        None if max_output is None else float(max_output),
        _whole(body.get("n"), 1, 128) or 1,
    )
    if key.has_limits:
        # A verified request may call every model of its plan: all of them are reserved.
        plan = getattr(verified, "plan", None)
        models = [candidates[0]] if plan is None else [*plan.candidates, plan.target]
        estimate = sum(meter.estimate(m) for m in dict.fromkeys(models) if m is not None)
        meter.reservation = await guard.reserve(key, estimate)
    request.scope[METER_KEY] = meter
    note(request, key=key.id)
    if body.get("stream") is True:
        options = body.get("stream_options")
        if options is None or isinstance(options, dict):
            options = dict(options or {})
            meter.client_wants_usage = options.get("include_usage") is True
            if not meter.client_wants_usage:
                body = {**body, "stream_options": {**options, "include_usage": True}}
    return candidates, verified, body


def metered(
    request: HTTPConnection, call: Callable[[str], Awaitable[UpstreamAnswer | UpstreamStream]]
) -> Callable[[str], Awaitable[UpstreamAnswer | UpstreamStream]]:
    """The model call of a request, counting every answer's cost on its meter (if any)."""
    meter = meter_of(request)
    if meter is None:
        return call

    async def counted(model: str) -> UpstreamAnswer | UpstreamStream:
        answer = await call(model)
        if isinstance(answer, UpstreamAnswer):
            meter.add_answer(model, answer.body)
        else:
            meter.stream_model = model
        return answer

    return counted


def tap_usage(request: HTTPConnection, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A relayed stream's chunks, read for usage when the request is metered (else as is)."""
    meter = meter_of(request)
    return chunks if meter is None else meter.tap(chunks)


async def settle_stream(request: HTTPConnection) -> None:
    """At the end of a relayed stream: record the request's spend."""
    meter = meter_of(request)
    if meter is not None:
        await meter.finish()


async def settle_after(request: Request, handler: Awaitable[Response]) -> Response:
    """Run a completion handler, then record its request's spend before its answer goes out
    (so a client's next request sees it), or at the end of a stream (``settle_stream``), or
    at once when it failed. A 429 of a key's limits is answered here, with ``retry-after``."""
    try:
        response = await handler
    except LimitExceededError as exc:
        note(request, error=exc.message)
        return JSONResponse(
            exc.body(),
            status_code=exc.http_status,
            headers={
                "retry-after": str(int(exc.retry_after_s)),
                "x-request-id": request_id_of(request),
            },
        )
    except BaseException:
        meter = meter_of(request)
        if meter is not None:
            await meter.finish()
        raise
    meter = meter_of(request)
    if meter is not None and meter.stream_model is None:
        await meter.finish()
    return response
