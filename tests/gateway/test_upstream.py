"""SSE pass-through with the model field rewritten, JSON body rewriting, and the upstream HTTP
client against hand-written upstreams: the keep-alive race, cookies, compression, size caps,
stream idleness."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time

import pytest

from uniroute.gateway.config import GatewayConfig
from uniroute.gateway.fallback import UpstreamError
from uniroute.gateway.upstream import (
    SseModelRewriter,
    UpstreamAnswer,
    UpstreamClient,
    UpstreamTarget,
    rewrite_model_field,
)
from uniroute.onboarding.upstream_hosts import EndpointPolicy
from uniroute.pool import Endpoint


def _event(model: str, text: str) -> bytes:
    return (
        b"data: " + json.dumps({"model": model, "choices": [{"delta": {"content": text}}]}).encode()
    )


def test_rewriter_passes_matching_events_through_byte_for_byte() -> None:
    stream = _event("m", "hel") + b"\n\n" + _event("m", "lo") + b"\n\ndata: [DONE]\n\n"
    rewriter = SseModelRewriter("m")
    out = b"".join(rewriter.feed(stream[i : i + 7]) for i in range(0, len(stream), 7))
    assert out + rewriter.flush() == stream


def test_rewriter_sets_the_model_and_keeps_everything_else() -> None:
    rewriter = SseModelRewriter("pool-name")
    out = rewriter.feed(b": comment\r\n" + _event("upstream-name", "x") + b"\r\n\r\n")
    out += rewriter.feed(b"data: [DONE]\n\n") + rewriter.flush()
    lines = out.split(b"\r\n")
    assert lines[0] == b": comment"
    event = json.loads(lines[1][len(b"data: ") :])
    assert event == {"model": "pool-name", "choices": [{"delta": {"content": "x"}}]}
    assert out.endswith(b"\r\n\r\ndata: [DONE]\n\n")


def test_rewriter_holds_only_the_incomplete_line() -> None:
    rewriter = SseModelRewriter("m")
    assert rewriter.feed(b'data: {"model": "m"') == b""
    assert rewriter.feed(b"}\n\nda") == b'data: {"model": "m"}\n\n'
    assert rewriter.flush() == b"da"


def test_json_body_rewrite() -> None:
    body = json.dumps({"model": "m", "choices": []}).encode()
    assert rewrite_model_field(body, "m") is body
    assert json.loads(rewrite_model_field(body, "other"))["model"] == "other"
    with pytest.raises(UpstreamError, match="not valid JSON"):
        rewrite_model_field(b"<html>", "m")
    with pytest.raises(UpstreamError, match="not an object"):
        rewrite_model_field(b"[]", "m")


def test_target_urls() -> None:
    target = UpstreamTarget("m", Endpoint("http://127.0.0.1:9/v1/", "M_KEY", "served-name"))
    assert target.url("/chat/completions") == "http://127.0.0.1:9/v1/chat/completions"
    assert (target.api_key_env, target.upstream_model) == ("M_KEY", "served-name")


# ---------------------------------------------------------------- the HTTP client, over sockets

OK_BODY = json.dumps({"model": "served-name", "choices": []}).encode()


class RawUpstream:
    """A hand-written HTTP/1.1 upstream on 127.0.0.1, served by an event loop of its own in a
    thread (so that the client's event loop runs nothing but the client).

    ``handle(upstream, connection_number, reader, writer)`` serves one connection; every
    request read with :meth:`read_request` is recorded in ``requests`` (its lower-case headers).
    """

    def __init__(self, handle) -> None:
        self.handle = handle
        self.requests: list[dict[str, str]] = []
        self.connections = 0
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    def __enter__(self) -> RawUpstream:
        self._thread.start()
        assert self._ready.wait(10), "the raw upstream did not start"
        return self

    def __exit__(self, *exc_info) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def url(self, host: str = "127.0.0.1") -> str:
        """The OpenAI base URL of this upstream."""
        return f"http://{host}:{self.port}/v1"

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handle(self, self.connections, reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(connected, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def read_request(self, reader: asyncio.StreamReader) -> dict[str, str] | None:
        """The next request's headers (its body is read and dropped); None at end of input."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")[1:]
        headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines if x)}
        await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(headers)
        return headers


def answer(body: bytes, *extra: str, content_type: str = "application/json") -> bytes:
    """An HTTP/1.1 200 answer with a Content-Length, kept alive, with extra header lines."""
    head = ["HTTP/1.1 200 OK", f"content-type: {content_type}", f"content-length: {len(body)}"]
    return ("\r\n".join([*head, *extra]) + "\r\n\r\n").encode() + body


class AllowAll(EndpointPolicy):
    """An endpoint policy that refuses nothing, to reach what the HTTP client does itself."""

    def __init__(self) -> None:
        super().__init__(())

    def refusal(self, base_url: str) -> str | None:
        """No reason: every URL may be called."""
        return None


def call(base_url: str, *, stream: bool = False, times: int = 1, **settings):
    """Run ``times`` calls of one UpstreamClient to ``base_url``; each result or UpstreamError.

    A streamed call's result is the list of pieces ``chunks()`` gave.
    """
    config = GatewayConfig(**{"connect_retries": 0, "upstream_timeout_s": 5.0, **settings})

    async def run() -> list:
        client = UpstreamClient(config, endpoint_policy=AllowAll())
        target = UpstreamTarget("pool-name", Endpoint(base_url, None, "served-name"))
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": stream}
        results: list = []
        try:
            for _ in range(times):
                try:
                    if not stream:
                        results.append(
                            await client.complete(target, "/chat/completions", body, "r")
                        )
                        continue
                    opened = await client.open_stream(target, "/chat/completions", body, "r")
                    try:
                        results.append([piece async for piece in opened.chunks()])
                    finally:
                        await opened.aclose()
                except UpstreamError as failure:
                    results.append(failure)
        finally:
            await client.aclose()
        return results

    return asyncio.run(run())


def test_a_kept_alive_connection_closed_as_it_is_reused_is_retried_once_on_a_new_one() -> None:
    # Each connection answers its first request and keeps alive, then reads the next request
    # and closes without answering: what an upstream closing an idle connection looks like to
    # the request that was just written on it (the keep-alive race).
    async def handle(upstream, number, reader, writer) -> None:
        await upstream.read_request(reader)
        writer.write(answer(OK_BODY))
        await writer.drain()
        await upstream.read_request(reader)

    with RawUpstream(handle) as upstream:
        results = call(upstream.url(), times=3)
    assert all(isinstance(r, UpstreamAnswer) for r in results), results
    assert json.loads(results[-1].body)["model"] == "pool-name"
    # Calls 2 and 3 each met the race on the connection the call before had opened.
    assert (upstream.connections, len(upstream.requests)) == (3, 5)


def test_a_fresh_connection_closed_without_an_answer_is_not_resent_beyond_connect_retries() -> None:
    async def handle(upstream, number, reader, writer) -> None:
        await upstream.read_request(reader)

    with RawUpstream(handle) as upstream:
        (failure,) = call(upstream.url())
        assert isinstance(failure, UpstreamError) and failure.kind == "connect", failure
        assert len(upstream.requests) == 1
        (failure,) = call(upstream.url(), connect_retries=1, retry_backoff_s=0.0)
        assert isinstance(failure, UpstreamError) and failure.kind == "connect"
        assert len(upstream.requests) == 3


def test_cookies_are_neither_kept_nor_sent_back() -> None:
    async def handle(upstream, number, reader, writer) -> None:
        while await upstream.read_request(reader) is not None:
            cookie = "set-cookie: session=s3cr3t; Path=/; Max-Age=3600"
            writer.write(answer(OK_BODY, cookie, "set-cookie: other=1; Path=/v1"))
            await writer.drain()

    # A host name, not an IP address: cookie jars refuse cookies from IP hosts anyway.
    with RawUpstream(handle) as upstream:
        results = call(upstream.url("localhost"), times=3)
    assert all(isinstance(r, UpstreamAnswer) for r in results), results
    assert len(upstream.requests) == 3
    assert all("cookie" not in request for request in upstream.requests), upstream.requests
    assert all(r["accept-encoding"] == "identity" for r in upstream.requests)


@pytest.mark.parametrize("stream", [False, True])
def test_a_compressed_answer_is_refused_not_inflated(stream: bool) -> None:
    event = b'data: {"model": "served-name", "choices": []}\n\ndata: [DONE]\n\n'
    content_type = "text/event-stream" if stream else "application/json"
    packed = gzip.compress(event if stream else OK_BODY)

    async def handle(upstream, number, reader, writer) -> None:
        await upstream.read_request(reader)
        writer.write(answer(packed, "content-encoding: gzip", content_type=content_type))
        await writer.drain()

    with RawUpstream(handle) as upstream:
        (failure,) = call(upstream.url(), stream=stream)
    assert isinstance(failure, UpstreamError) and failure.kind == "bad_response", failure
    assert "compressed (gzip)" in failure.reason


def test_a_declared_length_over_the_cap_is_refused_before_the_body_is_read() -> None:
    closed = threading.Event()

    async def handle(upstream, number, reader, writer) -> None:
        await upstream.read_request(reader)
        head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 50000000"
        writer.write(head.encode() + b"\r\n\r\n" + b'{"pad": "')
        await writer.drain()
        # The rest of the 50 MB never comes: a client that waited for it would time out.
        await reader.read()
        closed.set()

    with RawUpstream(handle) as upstream:
        started = time.perf_counter()
        (failure,) = call(upstream.url(), max_upstream_body_bytes=1_000, upstream_timeout_s=20.0)
        elapsed = time.perf_counter() - started
        assert closed.wait(5), "the client did not close the connection"
    assert isinstance(failure, UpstreamError) and failure.kind == "too_large", failure
    assert "50000000 bytes; the limit is 1000" in failure.reason
    assert elapsed < 5.0


def test_a_chunked_answer_over_the_cap_is_refused_once_the_cap_is_passed() -> None:
    # No Content-Length: the client must count while it reads, and stop at the cap rather than
    # buffer the whole answer (an upstream could send 100 MB, or never stop).
    sent = []

    async def handle(upstream, number, reader, writer) -> None:
        await upstream.read_request(reader)
        head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked"
        writer.write(head.encode() + b"\r\n\r\n" + _chunk(b'{"pad": "'))
        block = _chunk(b"x" * 65_536)
        try:
            for _ in range(1_600):  # 100 MB, unless the client hangs up first
                writer.write(block)
                await writer.drain()
                sent.append(len(block))
        except ConnectionError:
            pass

    with RawUpstream(handle) as upstream:
        (failure,) = call(upstream.url(), max_upstream_body_bytes=1_000_000)
    assert isinstance(failure, UpstreamError) and failure.kind == "too_large", failure
    assert "more than the limit of 1000000 bytes" in failure.reason
    assert sum(sent) < 20_000_000  # the upstream was cut off long before its 100 MB


def _sse(n_events: int) -> list[bytes]:
    event = b'data: {"model": "pool-name", "choices": [{"delta": {"content": "x"}}]}\n\n'
    return [event] * n_events + [b"data: [DONE]\n\n"]


def _chunked_stream_head() -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_a_stream_arms_no_timer_per_chunk() -> None:
    pieces = _sse(200)

    async def handle(upstream, number, reader, writer) -> None:
        await upstream.read_request(reader)
        writer.write(_chunked_stream_head())
        for piece in pieces:
            writer.write(_chunk(piece))
            await writer.drain()
            await asyncio.sleep(0.001)  # separate reads on the client side
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    timers = []

    async def run(base_url: str) -> list[bytes]:
        loop = asyncio.get_running_loop()
        call_at = loop.call_at

        def counting_call_at(when, callback, *args, **kwargs):
            timers.append(callback)
            return call_at(when, callback, *args, **kwargs)

        client = UpstreamClient(GatewayConfig(), endpoint_policy=AllowAll())
        target = UpstreamTarget("pool-name", Endpoint(base_url, None, "served-name"))
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        try:
            opened = await client.open_stream(target, "/chat/completions", body, "r")
            loop.call_at = counting_call_at  # type: ignore[method-assign,assignment]
            try:
                got = [piece async for piece in opened.chunks()]
            finally:
                loop.call_at = call_at  # type: ignore[method-assign]
                await opened.aclose()
        finally:
            await client.aclose()
        return got

    with RawUpstream(handle) as upstream:
        got = asyncio.run(run(upstream.url()))
    assert b"".join(got) == b"".join(pieces)
    assert len(got) > 50, "the stream arrived in too few reads to tell"
    # The idle watch's first timer (60 s: it never comes due here) and, once the body ended,
    # the pool's sweep of idle connections; none per chunk.
    assert len(timers) <= 2, timers


def test_a_stalled_stream_fails_after_the_idle_timeout_but_a_slow_reader_does_not() -> None:
    async def stall(upstream, number, reader, writer) -> None:
        await upstream.read_request(reader)
        writer.write(_chunked_stream_head() + _chunk(_sse(1)[0]))
        await writer.drain()
        await reader.read()  # then silence, until the client gives up

    with RawUpstream(stall) as upstream:
        started = time.perf_counter()
        (failure,) = call(upstream.url(), stream=True, stream_idle_timeout_s=0.3)
        elapsed = time.perf_counter() - started
    assert isinstance(failure, UpstreamError) and failure.kind == "stream_stalled", failure
    assert 0.25 <= elapsed < 3.0

    async def prompt(upstream, number, reader, writer) -> None:
        await upstream.read_request(reader)
        writer.write(_chunked_stream_head() + b"".join(_chunk(p) for p in _sse(3)) + b"0\r\n\r\n")
        await writer.drain()

    async def slow_reader(base_url: str) -> list[bytes]:
        config = GatewayConfig(stream_idle_timeout_s=0.2)
        client = UpstreamClient(config, endpoint_policy=AllowAll())
        target = UpstreamTarget("pool-name", Endpoint(base_url, None, "served-name"))
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        opened = await client.open_stream(target, "/chat/completions", body, "r")
        got = []
        try:
            async for piece in opened.chunks():
                got.append(piece)
                await asyncio.sleep(0.5)  # a client slower than the idle timeout
        finally:
            await opened.aclose()
            await client.aclose()
        return got

    with RawUpstream(prompt) as upstream:
        got = asyncio.run(slow_reader(upstream.url()))
    assert b"".join(got).endswith(b"data: [DONE]\n\n")


def test_a_url_the_client_cannot_use_is_that_models_failure() -> None:
    (failure,) = call("http://127.0.0.1:99999/v1")
    assert isinstance(failure, UpstreamError) and failure.kind == "http_error", failure


def test_a_body_that_cannot_be_encoded_is_the_requests_fault_not_the_models() -> None:
    async def run() -> UpstreamError:
        client = UpstreamClient(GatewayConfig(connect_retries=0), endpoint_policy=AllowAll())
        target = UpstreamTarget("pool-name", Endpoint("http://127.0.0.1:9/v1", None, None))
        try:
            await client.complete(target, "/chat/completions", {"user": "\ud800"}, "r")
        except UpstreamError as failure:
            return failure
        finally:
            await client.aclose()
        raise AssertionError("no UpstreamError")

    failure = asyncio.run(run())
    assert failure.status == 400 and not failure.counts_against_model
    assert failure.body is not None
    error = json.loads(failure.body)["error"]
    assert error["code"] == "invalid_json" and "cannot be sent as JSON" in error["message"]
