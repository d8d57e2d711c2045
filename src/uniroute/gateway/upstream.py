"""Calls to the OpenAI-compatible upstream endpoints, through one pooled aiohttp client.

Each servable pool model has a :class:`uniroute.pool.Endpoint`: its base URL
(``http://host:port/v1``, as an OpenAI client's ``base_url``), optionally the *name* of the
environment variable holding its API key, and the model name the endpoint expects. The key is
read from the environment at call time, sent only to that upstream, and never stored or logged.
Client headers are never forwarded (the client's Authorization is the gateway's key, not the
upstream's). The body sent is the client's parsed JSON object with only ``model`` changed.

Everything an upstream sends back is untrusted input. A body that is too big, compressed,
nested too deep, not a JSON object, or a stream that stalls, breaks, holds an endless line or
ends without ``data: [DONE]`` is that model failing (an :class:`UpstreamError`), never an
exception of another kind; upstream headers are never relayed, and an upstream's refusal of a
request (a 4xx that says nothing about the model) reaches the client only as a rebuilt OpenAI
error whose message is cut short and stripped of the endpoint's key.

**The HTTP client is aiohttp.** Every proxied request costs one client-side HTTP exchange, so
the client's CPU time per request is the gateway's floor. aiohttp parses responses in C
(llhttp), runs on the asyncio event loop the gateway already uses (uvloop), and is among the
most used and most actively maintained Python HTTP libraries. Its connection pool hands out
and takes back a connection in constant time (a queue per host), so one pool of hundreds of
connections needs no sharding, and it can be told not to do what the gateway must not do:
``auto_decompress=False`` (a compressed answer is refused, never inflated), a
``DummyCookieJar`` (no cookie parsing or storage per answer), no redirects and no proxies
from the environment. httpx, which this module used before, parses HTTP in pure Python (h11),
extracts cookies from every response and scans its whole pool on every hand-out and return;
httpx2, its continuation, is built on the same h11-based core. niquests parses HTTP/1.1 in
pure Python too; the Rust clients (pyreqwest, rnet, primp, httpr) drive their I/O on a runtime
of their own beside the event loop and are young or aimed at browser impersonation; libcurl
bindings (pycurl, curl-cffi) fit asyncio only through libcurl's socket callbacks.

**Keep-alive.** Idle connections are kept ``upstream_keepalive_s`` (2 s), below the idle
timeout of common servers (uvicorn's is 5 s), and aiohttp checks that age again when it hands
a connection out, so a reused connection is almost never one the upstream is closing. Almost:
a connection whose close is already on the wire when the request is written fails with
``ServerDisconnectedError`` or ``ClientOSError`` before any byte of an answer. That is the
keep-alive race, not the model failing, so a request that meets it on a *reused* connection is
sent once more at once (aiohttp only does this itself for idempotent methods, and every
completion is a POST). On a fresh connection, a close without an answer is a connection error
like a refused connection: retried ``connect_retries`` times with backoff.

**Streams** pass through as bytes: :class:`SseModelRewriter` parses JSON only in the events
that name another model than the pool's. A stream's idleness is watched by one timer for the
whole stream that is moved only when it comes due, not on every chunk: a chunk only records
the time its read started (a moving deadline would cancel and create a timer per chunk).
The timer fails the upstream read itself, so time spent waiting for a slow client to take a
chunk never counts as the upstream stalling.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import weakref
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
from aiohttp.client_proto import ResponseHandler

from uniroute._json import JsonLimitError, dumps_compact, loads_bounded
from uniroute._retry import retry
from uniroute.gateway.config import GatewayConfig
from uniroute.gateway.errors import error_body
from uniroute.gateway.fallback import UpstreamError
from uniroute.onboarding.upstream_hosts import EndpointPolicy
from uniroute.pool import Endpoint

# Statuses after which another model may well succeed: the upstream is overloaded, down,
# misconfigured (bad key, unknown path) or timed out. Any other 4xx rejects the request itself.
_MODEL_FAILURE_STATUSES = frozenset({401, 403, 404, 408, 409, 425, 429})
# Failures to reach the upstream at all (refused, unresolvable, TLS, connect timeout: only
# connecting is timed by aiohttp here) or a server that closed without answering: retried.
_CONNECTION_ERRORS = (
    aiohttp.ClientConnectorError,
    aiohttp.ServerTimeoutError,
    aiohttp.ServerDisconnectedError,
)
# How the keep-alive race shows: the upstream's close of the idle connection was on its way.
_KEEPALIVE_RACE = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
# What reading an answer's body can raise when the upstream breaks it off.
_READ_ERRORS = (aiohttp.ClientError, OSError)
#: Bytes of an upstream's error answer read at most (only its message is ever used).
ERROR_BODY_LIMIT = 65_536
#: Characters of an upstream's error message passed on to the client at most.
ERROR_MESSAGE_LIMIT = 2_000
# Bearer tokens and key-shaped strings an upstream might echo back in an error message.
_SECRET_SHAPES = re.compile(
    r"(?i)(bearer\s+)\S+|\b(sk|pk|rk|gsk|hf|ghp|xox[abp])[-_][A-Za-z0-9_\-]{8,}"
)
# Set by the connector for the request being sent in this task: did its connection already
# carry a request (a kept-alive one) or was it opened for this one?
_REUSED: ContextVar[bool] = ContextVar("uniroute_upstream_connection_reused", default=False)
# A stall is declared this much before its exact deadline: timers may fire a little early
# (uvloop's clock has millisecond steps), and re-arming for the remainder would spin.
_TIMER_SLACK_S = 0.005


@dataclass(frozen=True)
class UpstreamTarget:
    """A pool model (by its pool name) and where it is served."""

    model: str
    endpoint: Endpoint

    @property
    def api_key_env(self) -> str | None:
        """The environment variable holding the endpoint's API key, if it needs one."""
        return self.endpoint.api_key_env

    @property
    def upstream_model(self) -> str | None:
        """The ``model`` field the endpoint expects, when it differs from the pool name."""
        return self.endpoint.upstream_model

    def url(self, path: str) -> str:
        """Full URL of an API path such as ``/chat/completions`` under the base URL."""
        return self.endpoint.base_url.rstrip("/") + "/" + path.lstrip("/")


@dataclass
class UpstreamAnswer:
    """A complete (non-streamed) upstream answer, with the ``model`` field already rewritten."""

    status: int
    body: bytes
    content_type: str
    seconds: float


class _StreamStalledError(Exception):
    """Set on a stream's reader by its idle watch: the upstream sent nothing for too long."""


class _IdleWatch:
    """One timer for a whole stream that fails its read after ``timeout_s`` of silence.

    The reading side only stores when each read started waiting (``waiting_since``) and clears
    it when the read returns; the timer is moved on only when it comes due and finds the
    stream busy, so a stream of thousands of chunks arms a few timers, not one per chunk. A
    stall is set as the reader's exception, so it surfaces in the read that is waiting and
    never cancels whatever else the task is doing (sending the last chunk to a slow client).
    """

    __slots__ = ("_handle", "_loop", "_reader", "clock", "timeout_s", "waiting_since")

    def __init__(self, reader: aiohttp.StreamReader, timeout_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        #: The event loop's clock, the one the timer runs on (``waiting_since`` is read on it).
        self.clock = self._loop.time
        self._reader = reader
        self.timeout_s = timeout_s
        self.waiting_since: float | None = None
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(
            self.clock() + timeout_s, self._due
        )

    def _due(self) -> None:
        now = self._loop.time()
        since = self.waiting_since
        if since is not None and now + _TIMER_SLACK_S >= since + self.timeout_s:
            self._handle = None
            self._reader.set_exception(_StreamStalledError())
            return
        # Busy (a chunk came in, or the client is being sent one): due again a full timeout
        # after the read that is waiting now started, or from now if none is.
        start = now if since is None else since
        self._handle = self._loop.call_at(start + self.timeout_s, self._due)

    def cancel(self) -> None:
        """Stop watching (the stream ended or was closed)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


@dataclass
class UpstreamStream:
    """An open streamed answer whose status is 200 and whose first bytes have arrived.

    Iterate ``chunks()`` (which raises :class:`UpstreamError` when the stream stalls, breaks or
    ends without ``data: [DONE]``), then ``aclose()``.
    """

    response: aiohttp.ClientResponse
    model: str
    seconds_to_headers: float
    idle_timeout_s: float
    rewriter: SseModelRewriter
    first: bytes
    _watch: _IdleWatch | None = field(default=None, repr=False)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The SSE bytes as they arrive, each ``model`` field set to the pool model's name."""
        yield self.first
        reader = self.response.content
        read = reader.readany
        feed = self.rewriter.feed
        watch = self._watch = _IdleWatch(reader, self.idle_timeout_s)
        clock = watch.clock
        try:
            while True:
                watch.waiting_since = clock()
                try:
                    chunk = await read()
                except _StreamStalledError:
                    raise UpstreamError(
                        f"stream from {self.model!r} stalled for {self.idle_timeout_s:g}s",
                        kind="stream_stalled",
                    ) from None
                except _READ_ERRORS as exc:
                    raise UpstreamError(
                        f"stream from {self.model!r} broke off ({type(exc).__name__})",
                        kind="stream_broken",
                    ) from None
                watch.waiting_since = None
                if not chunk:
                    break
                out = feed(chunk)
                if out:
                    yield out
        finally:
            watch.cancel()
        tail = self.rewriter.flush()
        if tail:
            yield tail
        if not self.rewriter.done:
            raise UpstreamError(
                f"stream from {self.model!r} ended without 'data: [DONE]'", kind="stream_broken"
            )

    async def aclose(self) -> None:
        """Give the connection back to the pool if the stream was read to its end, else close
        it (an unread rest is never drained)."""
        if self._watch is not None:
            self._watch.cancel()
        self.response.release()


class SseModelRewriter:
    """Rewrites the ``model`` field of ``data:`` events in an SSE byte stream, line by line.

    Bytes are passed through unchanged except ``data:`` lines whose JSON names another model;
    a partial line is held back only until its newline arrives, so nothing else is buffered.
    The first event must be a JSON object (so an upstream that answers garbage fails before
    the client got a byte); after it, only lines that mention ``"model"`` without the pool name
    are parsed at all, and one that is not acceptable JSON breaks the stream. A line longer than
    ``max_line_bytes`` raises :class:`UpstreamError` (an upstream cannot make the gateway hold
    an endless line); ``events`` counts the data events, ``done`` tells whether
    ``data: [DONE]`` went by.
    """

    def __init__(self, model: str, max_line_bytes: int = 1_000_000) -> None:
        self.model = model
        self.max_line_bytes = max_line_bytes
        self.done = False
        self.events = 0
        self._partial = b""
        expected = dumps_compact(model)
        # The two spellings of the pool's own model field that most upstreams use.
        self._named = (b'"model":' + expected, b'"model": ' + expected)

    def feed(self, chunk: bytes) -> bytes:
        """Bytes ready to send after receiving ``chunk`` (complete lines only)."""
        data = self._partial + chunk if self._partial else chunk
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        if len(self._partial) > self.max_line_bytes:
            self._partial = b""
            raise UpstreamError(
                f"stream from {self.model!r} sent a line longer than {self.max_line_bytes} bytes",
                kind="stream_broken",
            )
        if not cut:
            return b""
        lines = data[:cut]
        if b"data:" not in lines:
            return lines
        rewrite = self._rewrite_line
        return b"".join([rewrite(line) for line in lines.splitlines(keepends=True)])

    def flush(self) -> bytes:
        """Whatever incomplete last line is left at the end of the stream."""
        rest, self._partial = self._partial, b""
        return self._rewrite_line(rest) if rest else b""

    def _rewrite_line(self, line: bytes) -> bytes:
        if not line.startswith(b"data:"):
            return line
        if b"[DONE]" in line and line[5:].strip() == b"[DONE]":
            self.done = True
            return line
        self.events += 1
        # The cheap check first, on the line as it is (the "data:" prefix and the whitespace
        # around the payload cannot form or split these patterns): most events either carry no
        # model or exactly one, already the pool's name. (Inside a JSON string the key would be
        # escaped, \"model\", so a count of b'"model"' counts keys; a nested "model" key means
        # a full parse.)
        if self.events > 1:
            keys = line.count(b'"model"')
            if keys == 0 or (keys == 1 and (self._named[0] in line or self._named[1] in line)):
                return line
        payload = line[5:].strip()
        try:
            event = loads_bounded(payload)
        except JsonLimitError as exc:
            raise UpstreamError(
                f"stream from {self.model!r} sent an event that {exc}", kind="bad_response"
            ) from None
        if not isinstance(event, dict):
            raise UpstreamError(
                f"stream from {self.model!r} sent an event that is not a JSON object",
                kind="bad_response",
            )
        if event.get("model", self.model) == self.model:
            return line
        event["model"] = self.model
        ending = line[len(line.rstrip(b"\r\n")) :]
        return b"data: " + dumps_compact(event) + ending


def rewrite_model_field(body: bytes, model: str, max_depth: int = 64) -> bytes:
    """A JSON answer body whose ``model`` is the pool model's name (unchanged if it already is).

    Raises :class:`UpstreamError` for anything but a JSON object within the parsing bounds.
    """
    try:
        payload = loads_bounded(body, max_depth=max_depth)
    except JsonLimitError as exc:
        raise UpstreamError(
            f"{model!r} answered with a body that {exc}",
            kind="bad_response",
        ) from None
    if not isinstance(payload, dict):
        raise UpstreamError(
            f"{model!r} answered with JSON that is not an object", kind="bad_response"
        )
    if payload.get("model") == model:
        return body
    payload["model"] = model
    return dumps_compact(payload)


def scrubbed_error_body(body: bytes, status: int, secret: str | None) -> dict[str, Any]:
    """The OpenAI error object to pass on for an upstream's refusal, rebuilt from its parts.

    Only ``message``, ``type``, ``param`` and ``code`` survive, as short strings; the endpoint's
    key and anything shaped like a bearer token or an API key are masked in the message.
    """
    error: dict[str, Any] = {}
    try:
        parsed = loads_bounded(body, max_depth=8)
    except JsonLimitError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
    elif isinstance(parsed, dict):
        error = parsed

    def text(name: str) -> str | None:
        value = error.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)[:200]
        return None

    message = error.get("message") if isinstance(error.get("message"), str) else None
    message = message or f"the upstream rejected the request (HTTP {status})"
    if secret:
        message = message.replace(secret, "***")
    message = _SECRET_SHAPES.sub(lambda m: (m.group(1) or "") + "***", message)
    return {
        "error": {
            "message": message[:ERROR_MESSAGE_LIMIT],
            "type": text("type") or "invalid_request_error",
            "param": text("param"),
            "code": text("code"),
        }
    }


def _check_identity(target: UpstreamTarget, response: aiohttp.ClientResponse) -> None:
    """Refuse a compressed answer: identity was asked for, and compressed bytes could inflate
    far past any size check (or reach the client still compressed)."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UpstreamError(
            f"{target.model!r} answered compressed ({encoding}) though asked not to",
            kind="bad_response",
        )


def _no_answer_yet(exc: Exception) -> bool:
    """Whether a failed send got no byte of an answer back (a disconnect carries the part of
    the answer's head that had arrived, if any)."""
    return not isinstance(exc, aiohttp.ServerDisconnectedError) or isinstance(exc.message, str)


class _PoolConnector(aiohttp.TCPConnector):
    """aiohttp's connection pool, telling each send whether its connection was reused.

    What it tells is stored in ``_REUSED`` for the task that is sending: aiohttp gets the
    connection in that same task, and an exception does not say which connection it came from.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # Connections that have carried a request; weak, so that closed ones simply vanish.
        self._carried: weakref.WeakSet[ResponseHandler] = weakref.WeakSet()

    async def connect(self, *args: Any, **kwargs: Any) -> aiohttp.connector.Connection:
        """A connection from the pool or a new one, noting which (see ``_REUSED``)."""
        connection = await super().connect(*args, **kwargs)
        protocol = connection.protocol
        if protocol is not None:
            _REUSED.set(protocol in self._carried)
            self._carried.add(protocol)
        return connection


class UpstreamClient:
    """Sends requests to upstream models with timeouts and retries on connection errors.

    One aiohttp session with one connection pool of ``max_upstream_connections`` serves every
    upstream: aiohttp's pool costs the same per request whatever its size, so
    ``upstream_client_shards`` (which spread httpx's pool, whose cost per request grew with its
    size, over several) is still accepted but no longer splits anything. The session is opened
    on the first call, on the event loop that serves the gateway.
    """

    def __init__(
        self, config: GatewayConfig, endpoint_policy: EndpointPolicy | None = None
    ) -> None:
        self.config = config
        #: Which hosts may be called at all: checked before every call (cached, no DNS).
        self.endpoint_policy = endpoint_policy or EndpointPolicy(config.upstream_allowlist)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            connector = _PoolConnector(
                limit=self.config.max_upstream_connections,
                limit_per_host=0,
                keepalive_timeout=self.config.upstream_keepalive_s,
            )
            session = self._session = aiohttp.ClientSession(
                connector=connector,
                # Only connecting is timed by aiohttp (once per new connection); the call's
                # deadline is one asyncio timeout, and a stream's idleness its own watch.
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=None, sock_connect=self.config.connect_timeout_s
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
                raise_for_status=False,
            )
        return session

    async def aclose(self) -> None:
        """Close every pooled connection."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _headers(self, target: UpstreamTarget, request_id: str) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "x-request-id": request_id,
            "accept-encoding": "identity",
        }
        key = self._key(target)
        if key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    @staticmethod
    def _key(target: UpstreamTarget) -> str | None:
        if not target.api_key_env:
            return None
        key = os.environ.get(target.api_key_env)
        if not key:
            raise UpstreamError(
                f"environment variable {target.api_key_env} (API key of model "
                f"{target.model!r}) is not set",
                kind="missing_key",
            )
        return key

    async def _send(
        self,
        target: UpstreamTarget,
        path: str,
        body: dict[str, Any],
        request_id: str,
    ) -> aiohttp.ClientResponse:
        """Send the request, retrying only connection errors; returns the response whose head
        has arrived (its body is not read)."""
        refused = self.endpoint_policy.refusal(target.endpoint.base_url)
        if refused is not None:
            raise UpstreamError(f"{target.model!r} may not be called: {refused}", kind="refused")
        headers = self._headers(target, request_id)
        upstream_name = target.upstream_model or target.model
        # The client's parsed body, unchanged but for the model name the endpoint expects. A
        # body that cannot be encoded is the request's fault, never the model's.
        try:
            payload = dumps_compact({**body, "model": upstream_name})
        except (TypeError, ValueError) as exc:
            message = f"the request body cannot be sent as JSON ({exc})"
            raise UpstreamError(
                f"the request body cannot be sent as JSON ({type(exc).__name__})",
                kind="bad_request",
                status=400,
                counts_against_model=False,
                body=dumps_compact(error_body(message, status=400, code="invalid_json")),
            ) from None
        url = target.url(path)
        session = self._open()

        async def post() -> aiohttp.ClientResponse:
            _REUSED.set(False)
            return await session.post(url, data=payload, headers=headers, allow_redirects=False)

        async def attempt() -> aiohttp.ClientResponse:
            try:
                return await post()
            except _KEEPALIVE_RACE as exc:
                if not (_REUSED.get() and _no_answer_yet(exc)):
                    raise
            # The keep-alive race (see the module doc): once more, at once.
            return await post()

        try:
            return await retry(
                attempt,
                attempts=self.config.connect_retries + 1,
                backoff=self.config.retry_backoff_s,
                retryable=_CONNECTION_ERRORS,
                sleep=anyio.sleep,
            )
        except _CONNECTION_ERRORS as exc:
            raise UpstreamError(
                f"cannot connect to {target.model!r} ({type(exc).__name__})", kind="connect"
            ) from None
        except (aiohttp.ClientError, OSError, OverflowError, ValueError) as exc:
            # A URL the HTTP client cannot use (a port out of range stored by an older version)
            # is this model's failure too, not the gateway's.
            raise UpstreamError(
                f"HTTP error from {target.model!r} ({type(exc).__name__})", kind="http_error"
            ) from None

    def _timeout(self, target: UpstreamTarget) -> UpstreamError:
        return UpstreamError(
            f"timeout after {self.config.upstream_timeout_s:g}s from {target.model!r}",
            kind="timeout",
        )

    async def _read_bounded(
        self, target: UpstreamTarget, response: aiohttp.ClientResponse, limit: int
    ) -> bytes:
        """The whole body of a response, or an UpstreamError once it exceeds ``limit`` bytes."""
        _check_identity(target, response)
        declared = response.content_length
        if declared is not None and declared > limit:
            raise UpstreamError(
                f"{target.model!r} answered {declared} bytes; the limit is {limit}",
                kind="too_large",
            )
        read = response.content.readany
        chunks: list[bytes] = []
        size = 0
        try:
            while chunk := await read():
                size += len(chunk)
                if size > limit:
                    raise UpstreamError(
                        f"{target.model!r} answered more than the limit of {limit} bytes",
                        kind="too_large",
                    )
                chunks.append(chunk)
        except _READ_ERRORS as exc:
            raise UpstreamError(
                f"answer from {target.model!r} broke off ({type(exc).__name__})",
                kind="bad_response",
            ) from None
        return b"".join(chunks)

    async def _check_status(self, target: UpstreamTarget, response: aiohttp.ClientResponse) -> None:
        status = response.status
        if status == 200:
            return
        try:
            content = await self._read_bounded(target, response, ERROR_BODY_LIMIT)
        except UpstreamError:
            content = b""
        if 400 <= status < 500 and status not in _MODEL_FAILURE_STATUSES:
            raise UpstreamError(
                f"{target.model!r} rejected the request (HTTP {status})",
                status=status,
                counts_against_model=False,
                body=dumps_compact(
                    scrubbed_error_body(content, status, os.environ.get(target.api_key_env or ""))
                ),
            )
        hint = ""
        if status in (401, 403):
            hint = (
                f" (check the key in ${target.api_key_env})"
                if target.api_key_env
                else " (the upstream wants an API key; set api_key_env for this model)"
            )
        elif status == 404:
            sent = target.upstream_model or target.model
            hint = (
                f" (the request named the model {sent!r}; if the endpoint knows it by another "
                "name, register that name as the model's upstream_model)"
            )
        raise UpstreamError(f"HTTP {status} from {target.model!r}{hint}", status=status)

    async def complete(
        self,
        target: UpstreamTarget,
        path: str,
        body: dict[str, Any],
        request_id: str,
    ) -> UpstreamAnswer:
        """A non-streamed answer; raises UpstreamError on timeout, error status or bad JSON."""
        started = time.perf_counter()
        response: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout(self.config.upstream_timeout_s):
                response = await self._send(target, path, body, request_id)
                await self._check_status(target, response)
                content = await self._read_bounded(
                    target, response, self.config.max_upstream_body_bytes
                )
        except TimeoutError:
            raise self._timeout(target) from None
        finally:
            if response is not None:
                # Back to the pool if the body was read to its end, else closed (never drained).
                response.release()
        return UpstreamAnswer(
            status=200,
            body=rewrite_model_field(content, target.model, self.config.max_json_depth),
            content_type="application/json",
            seconds=time.perf_counter() - started,
        )

    async def open_stream(
        self,
        target: UpstreamTarget,
        path: str,
        body: dict[str, Any],
        request_id: str,
    ) -> UpstreamStream:
        """Open a streamed answer and wait for its first bytes; until then every failure
        (status, content type, silence, an early end) is an UpstreamError, so another model
        can still take the request."""
        started = time.perf_counter()
        response: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout(self.config.upstream_timeout_s):
                response = await self._send(target, path, body, request_id)
                seconds_to_headers = time.perf_counter() - started
                await self._check_status(target, response)
                content_type = response.headers.get("content-type", "")
                if "text/event-stream" not in content_type:
                    raise UpstreamError(
                        f"{target.model!r} did not stream "
                        f"(content-type {content_type or 'missing'!r})",
                        kind="bad_response",
                    )
                _check_identity(target, response)
                limit = self.config.max_stream_line_bytes
                rewriter = SseModelRewriter(target.model, limit)
                read = response.content.readany
                # Nothing reaches the client before the first event checked out: until then a
                # failure can still fall back to another model.
                first = b""
                while not rewriter.events and not rewriter.done:
                    chunk = await read()
                    if not chunk:
                        raise UpstreamError(
                            f"stream from {target.model!r} ended before any event",
                            kind="stream_broken",
                        )
                    first += rewriter.feed(chunk)
                    if len(first) > limit:
                        raise UpstreamError(
                            f"stream from {target.model!r} sent {len(first)} bytes before "
                            "its first event",
                            kind="bad_response",
                        )
        except TimeoutError:
            if response is not None:
                response.close()
            raise self._timeout(target) from None
        except _READ_ERRORS as exc:
            if response is not None:
                response.close()
            raise UpstreamError(
                f"stream from {target.model!r} broke off ({type(exc).__name__})",
                kind="stream_broken",
            ) from None
        except BaseException:
            if response is not None:
                response.close()
            raise
        return UpstreamStream(
            response=response,
            model=target.model,
            seconds_to_headers=seconds_to_headers,
            idle_timeout_s=self.config.stream_idle_timeout_s,
            rewriter=rewriter,
            first=first,
        )
