"""Calls to the OpenAI-compatible upstream endpoints, through pooled async HTTP clients.

Each servable pool model has a :class:`uniroute.pool.Endpoint`: its base URL
(``http://host:port/v1``, as an OpenAI client's ``base_url``), optionally the *name* of the
environment variable holding its API key, and the model name the endpoint expects. The key is
read from the environment at call time, sent only to that upstream, and never stored or logged.
Client headers are never forwarded (the client's Authorization is the gateway's key, not the
upstream's). The body sent is the client's parsed JSON object with only ``model`` changed.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from uniroute._retry import retry
from uniroute.gateway.config import GatewayConfig
from uniroute.gateway.fallback import UpstreamError
from uniroute.pool import Endpoint

# Statuses after which another model may well succeed: the upstream is overloaded, down,
# misconfigured (bad key, unknown path) or timed out. Any other 4xx rejects the request itself.
_MODEL_FAILURE_STATUSES = frozenset({401, 403, 404, 408, 409, 425, 429})
_CONNECTION_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


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
    """An open streamed answer whose status is 200; iterate ``chunks()`` and then ``aclose()``."""

    response: httpx.Response
    model: str
    seconds_to_headers: float
    idle_timeout_s: float

    async def chunks(self) -> AsyncIterator[bytes]:
        """The SSE bytes as they arrive, each ``model`` field set to the pool model's name."""
        rewriter = SseModelRewriter(self.model)
        iterator = self.response.aiter_bytes().__aiter__()
        while True:
            try:
                with anyio.fail_after(self.idle_timeout_s):
                    chunk = await iterator.__anext__()
            except StopAsyncIteration:
                break
            out = rewriter.feed(chunk)
            if out:
                yield out
        tail = rewriter.flush()
        if tail:
            yield tail

    async def aclose(self) -> None:
        """Release the connection back to the pool (or close it if the body was not read)."""
        await self.response.aclose()


class SseModelRewriter:
    """Rewrites the ``model`` field of ``data:`` events in an SSE byte stream, line by line.

    Bytes are passed through unchanged except ``data:`` lines whose JSON names another model;
    a partial line is held back only until its newline arrives, so nothing else is buffered.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self._partial = b""

    def feed(self, chunk: bytes) -> bytes:
        """Bytes ready to send after receiving ``chunk`` (complete lines only)."""
        data = self._partial + chunk
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        if not cut:
            return b""
        return b"".join(self._rewrite_line(line) for line in data[:cut].splitlines(keepends=True))

    def flush(self) -> bytes:
        """Whatever incomplete last line is left at the end of the stream."""
        rest, self._partial = self._partial, b""
        return self._rewrite_line(rest) if rest else b""

    def _rewrite_line(self, line: bytes) -> bytes:
        if not line.startswith(b"data:"):
            return line
        payload = line[5:].strip()
        if not payload.startswith(b"{"):
            return line
        try:
            event = json.loads(payload)
        except ValueError:
            return line
        if not isinstance(event, dict) or event.get("model", self.model) == self.model:
            return line
        event["model"] = self.model
        ending = line[len(line.rstrip(b"\r\n")) :]
        return b"data: " + json.dumps(event, ensure_ascii=False).encode() + ending


def rewrite_model_field(body: bytes, model: str) -> bytes:
    """A JSON answer body whose ``model`` is the pool model's name (unchanged if it already is)."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise UpstreamError(
            f"{model!r} answered with a body that is not JSON", kind="bad_response"
        ) from None
    if not isinstance(payload, dict):
        raise UpstreamError(
            f"{model!r} answered with JSON that is not an object", kind="bad_response"
        )
    if payload.get("model") == model:
        return body
    payload["model"] = model
    return json.dumps(payload, ensure_ascii=False).encode()


class UpstreamClient:
    """Sends requests to upstream models with timeouts and retries on connection errors.

    The connections are pooled (kept alive and reused) in ``upstream_client_shards`` httpx
    clients used in turn: httpx checks every connection of a pool each time it hands one out
    or takes one back, so one pool of hundreds of connections costs more CPU per request than
    the upstream call itself at high concurrency; several small pools keep that check short.
    """

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
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
        if target.api_key_env:
            key = os.environ.get(target.api_key_env)
            if not key:
                raise UpstreamError(
                    f"environment variable {target.api_key_env} (API key of model "
                    f"{target.model!r}) is not set",
                    kind="missing_key",
                )
            headers["authorization"] = f"Bearer {key}"
        return headers

    async def _send(
        self,
        target: UpstreamTarget,
        path: str,
        body: dict[str, Any],
        request_id: str,
        *,
        stream: bool,
    ) -> httpx.Response:
        """Send the request, retrying only connection errors; returns the open response."""
        headers = self._headers(target, request_id)
        upstream_name = target.upstream_model or target.model
        # The client's parsed body, unchanged but for the model name the endpoint expects.
        payload = json.dumps({**body, "model": upstream_name}, ensure_ascii=False).encode()
        url = target.url(path)

        async def attempt() -> httpx.Response:
            client = next(self._turn)
            request = client.build_request("POST", url, content=payload, headers=headers)
            return await client.send(request, stream=stream)

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
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"HTTP error from {target.model!r} ({type(exc).__name__})", kind="http_error"
            ) from None

    def _timeout(self, target: UpstreamTarget) -> UpstreamError:
        return UpstreamError(
            f"timeout after {self.config.upstream_timeout_s:g}s from {target.model!r}",
            kind="timeout",
        )

    @staticmethod
    def _check_status(target: UpstreamTarget, status: int, body: bytes) -> None:
        if status == 200:
            return
        if 400 <= status < 500 and status not in _MODEL_FAILURE_STATUSES:
            raise UpstreamError(
                f"{target.model!r} rejected the request (HTTP {status})",
                status=status,
                counts_against_model=False,
                body=body,
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
        try:
            with anyio.fail_after(self.config.upstream_timeout_s):
                response = await self._send(target, path, body, request_id, stream=False)
        except TimeoutError:
            raise self._timeout(target) from None
        self._check_status(target, response.status_code, response.content)
        return UpstreamAnswer(
            status=200,
            body=rewrite_model_field(response.content, target.model),
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
        """Open a streamed answer and wait for its headers; a non-200 status is a failure."""
        started = time.perf_counter()
        response: httpx.Response | None = None
        try:
            with anyio.fail_after(self.config.upstream_timeout_s):
                response = await self._send(target, path, body, request_id, stream=True)
                if response.status_code != 200:
                    content = await response.aread()
                    await response.aclose()
                    self._check_status(target, response.status_code, content)
        except TimeoutError:
            if response is not None:
                await response.aclose()
            raise self._timeout(target) from None
        content_type = response.headers.get("content-type", "")
        if "text/event-stream" not in content_type:
            await response.aclose()
            raise UpstreamError(
                f"{target.model!r} did not stream (content-type {content_type or 'missing'!r})",
                kind="bad_response",
            )
        return UpstreamStream(
            response=response,
            model=target.model,
            seconds_to_headers=time.perf_counter() - started,
            idle_timeout_s=self.config.stream_idle_timeout_s,
        )
