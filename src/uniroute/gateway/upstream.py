"""Calls to the OpenAI-compatible upstream endpoints, through pooled async HTTP clients.

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
"""

from __future__ import annotations

import itertools
import math
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from uniroute._json import JsonLimitError, dumps_compact, loads_bounded
from uniroute._retry import retry
from uniroute.gateway.config import GatewayConfig
from uniroute.gateway.fallback import UpstreamError
from uniroute.onboarding.upstream_hosts import EndpointPolicy
from uniroute.pool import Endpoint

# Statuses after which another model may well succeed: the upstream is overloaded, down,
# misconfigured (bad key, unknown path) or timed out. Any other 4xx rejects the request itself.
_MODEL_FAILURE_STATUSES = frozenset({401, 403, 404, 408, 409, 425, 429})
_CONNECTION_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)
#: Bytes of an upstream's error answer read at most (only its message is ever used).
ERROR_BODY_LIMIT = 65_536
#: Characters of an upstream's error message passed on to the client at most.
ERROR_MESSAGE_LIMIT = 2_000
_STREAM_END = b"data: [DONE]"
# Bearer tokens and key-shaped strings an upstream might echo back in an error message.
_SECRET_SHAPES = re.compile(
    r"(?i)(bearer\s+)\S+|\b(sk|pk|rk|gsk|hf|ghp|xox[abp])[-_][A-Za-z0-9_\-]{8,}"
)


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


@dataclass
class UpstreamStream:
    """An open streamed answer whose status is 200 and whose first bytes have arrived.

    Iterate ``chunks()`` (which raises :class:`UpstreamError` when the stream stalls, breaks or
    ends without ``data: [DONE]``), then ``aclose()``.
    """

    response: httpx.Response
    model: str
    seconds_to_headers: float
    idle_timeout_s: float
    rewriter: SseModelRewriter
    first: bytes
    _iterator: AsyncIterator[bytes] = field(repr=False)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The SSE bytes as they arrive, each ``model`` field set to the pool model's name."""
        yield self.first
        # One cancel scope whose deadline moves on with every chunk: a stall anywhere in the
        # stream is caught without a new timer per chunk.
        with anyio.CancelScope() as idle:
            idle.deadline = anyio.current_time() + self.idle_timeout_s
            try:
                async for chunk in self._iterator:
                    idle.deadline = anyio.current_time() + self.idle_timeout_s
                    out = self.rewriter.feed(chunk)
                    if out:
                        yield out
            except httpx.HTTPError as exc:
                raise UpstreamError(
                    f"stream from {self.model!r} broke off ({type(exc).__name__})",
                    kind="stream_broken",
                ) from None
        if idle.cancelled_caught:
            raise UpstreamError(
                f"stream from {self.model!r} stalled for {self.idle_timeout_s:g}s",
                kind="stream_stalled",
            )
        tail = self.rewriter.flush()
        if tail:
            yield tail
        if not self.rewriter.done:
            raise UpstreamError(
                f"stream from {self.model!r} ended without 'data: [DONE]'", kind="stream_broken"
            )

    async def aclose(self) -> None:
        """Release the connection back to the pool (or close it if the body was not read)."""
        await self.response.aclose()


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
        self._expected = dumps_compact(model)

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
        return b"".join(self._rewrite_line(line) for line in lines.splitlines(keepends=True))

    def flush(self) -> bytes:
        """Whatever incomplete last line is left at the end of the stream."""
        rest, self._partial = self._partial, b""
        return self._rewrite_line(rest) if rest else b""

    def _rewrite_line(self, line: bytes) -> bytes:
        if not line.startswith(b"data:"):
            return line
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return line
        self.events += 1
        # The cheap check first: most events either carry no model or exactly one, already the
        # pool's name. (Inside a JSON string the key would be escaped, \"model\", so a count of
        # b'"model"' counts keys; a nested "model" key means a full parse.)
        if self.events > 1:
            keys = payload.count(b'"model"')
            if keys == 0 or (
                keys == 1
                and (
                    b'"model":' + self._expected in payload
                    or b'"model": ' + self._expected in payload
                )
            ):
                return line
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


def _check_identity(target: UpstreamTarget, response: httpx.Response) -> None:
    """Refuse a compressed answer: identity was asked for, and compressed bytes could inflate
    far past any size check (or reach the client still compressed)."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UpstreamError(
            f"{target.model!r} answered compressed ({encoding}) though asked not to",
            kind="bad_response",
        )


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


class UpstreamClient:
    """Sends requests to upstream models with timeouts and retries on connection errors.

    The connections are pooled (kept alive and reused) in ``upstream_client_shards`` httpx
    clients used in turn: httpx checks every connection of a pool each time it hands one out
    or takes one back, so one pool of hundreds of connections costs more CPU per request than
    the upstream call itself at high concurrency; several small pools keep that check short.
    """

    def __init__(
        self, config: GatewayConfig, endpoint_policy: EndpointPolicy | None = None
    ) -> None:
        self.config = config
        #: Which hosts may be called at all: checked before every call (cached, no DNS).
        self.endpoint_policy = endpoint_policy or EndpointPolicy(config.upstream_allowlist)
        shards = config.upstream_client_shards
        per_shard = max(1, math.ceil(config.max_upstream_connections / shards))
        self.clients = [
            httpx.AsyncClient(
                timeout=httpx.Timeout(config.upstream_timeout_s, connect=config.connect_timeout_s),
                limits=httpx.Limits(
                    max_connections=per_shard,
                    max_keepalive_connections=per_shard,
                    keepalive_expiry=config.upstream_keepalive_s,
                ),
                follow_redirects=False,
                trust_env=False,
            )
            for _ in range(shards)
        ]
        self._turn = itertools.cycle(self.clients)

    async def aclose(self) -> None:
        """Close every pooled connection."""
        for client in self.clients:
            await client.aclose()

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
    ) -> httpx.Response:
        """Send the request, retrying only connection errors; returns the open response."""
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
            raise UpstreamError(
                f"the request body cannot be sent as JSON ({type(exc).__name__})",
                kind="bad_request",
                status=400,
                counts_against_model=False,
                body=dumps_compact(
                    {
                        "error": {
                            "message": f"the request body cannot be sent as JSON ({exc})",
                            "type": "invalid_request_error",
                            "param": None,
                            "code": "invalid_json",
                        }
                    }
                ),
            ) from None
        url = target.url(path)

        async def attempt() -> httpx.Response:
            client = next(self._turn)
            request = client.build_request("POST", url, content=payload, headers=headers)
            return await client.send(request, stream=True)

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
        except httpx.TimeoutException:
            raise self._timeout(target) from None
        except (httpx.HTTPError, httpx.InvalidURL, OverflowError, ValueError) as exc:
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
        self, target: UpstreamTarget, response: httpx.Response, limit: int
    ) -> bytes:
        """The whole body of a response, or an UpstreamError once it exceeds ``limit`` bytes."""
        _check_identity(target, response)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise UpstreamError(
                f"{target.model!r} answered {declared} bytes; the limit is {limit}",
                kind="too_large",
            )
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > limit:
                    raise UpstreamError(
                        f"{target.model!r} answered more than the limit of {limit} bytes",
                        kind="too_large",
                    )
                chunks.append(chunk)
        except httpx.TimeoutException:
            raise self._timeout(target) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"answer from {target.model!r} broke off ({type(exc).__name__})",
                kind="bad_response",
            ) from None
        return b"".join(chunks)

    async def _check_status(self, target: UpstreamTarget, response: httpx.Response) -> None:
        status = response.status_code
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
        response: httpx.Response | None = None
        try:
            with anyio.fail_after(self.config.upstream_timeout_s):
                response = await self._send(target, path, body, request_id)
                await self._check_status(target, response)
                content = await self._read_bounded(
                    target, response, self.config.max_upstream_body_bytes
                )
        except TimeoutError:
            raise self._timeout(target) from None
        finally:
            if response is not None:
                await response.aclose()
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
        response: httpx.Response | None = None
        try:
            with anyio.fail_after(self.config.upstream_timeout_s):
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
                iterator = response.aiter_raw().__aiter__()
                # Nothing reaches the client before the first event checked out: until then a
                # failure can still fall back to another model.
                first = b""
                while not rewriter.events and not rewriter.done:
                    try:
                        chunk = await iterator.__anext__()
                    except StopAsyncIteration:
                        raise UpstreamError(
                            f"stream from {target.model!r} ended before any event",
                            kind="stream_broken",
                        ) from None
                    first += rewriter.feed(chunk)
                    if len(first) > limit:
                        raise UpstreamError(
                            f"stream from {target.model!r} sent {len(first)} bytes before "
                            "its first event",
                            kind="bad_response",
                        )
        except TimeoutError:
            if response is not None:
                await response.aclose()
            raise self._timeout(target) from None
        except httpx.HTTPError as exc:
            if response is not None:
                await response.aclose()
            raise UpstreamError(
                f"stream from {target.model!r} broke off ({type(exc).__name__})",
                kind="stream_broken",
            ) from None
        except BaseException:
            if response is not None:
                await response.aclose()
            raise
        return UpstreamStream(
            response=response,
            model=target.model,
            seconds_to_headers=seconds_to_headers,
            idle_timeout_s=self.config.stream_idle_timeout_s,
            rewriter=rewriter,
            first=first,
            _iterator=iterator,
        )
