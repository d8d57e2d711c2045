"""The gateway's server side against slow, flooding, malformed and vanishing clients.

One ``uniroute serve`` child process with short deadlines (headers 0.5 s, body 1 s, keep-alive
1.5 s) and a cap of 50 connections, in front of one model whose replay upstream (in a thread of
this process) streams its answer slowly. The tests talk raw HTTP over sockets, so they control
exactly which bytes arrive and when, and read the gateway's JSON logs from its stderr.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest

from tests.gateway.support import CHEAP, child_env, make_registry
from uniroute.gateway.app import create_app
from uniroute.gateway.config import GatewayConfig
from uniroute.gateway.http_protocol import GatewayHttpProtocol
from uniroute.gateway.serving import uvicorn_server
from uniroute.testing.harness import serve_in_thread, wait_until, write_config
from uniroute.testing.process import GatewayProcess
from uniroute.testing.replay import FaultConfig, create_replay_app

HEADER_S = 0.5
BODY_S = 1.0
KEEPALIVE_S = 1.5
CAP = 50
#: Slack on every deadline: the gateway shares two cores with this test and other jobs.
SLACK_S = 1.5

SLOW_ANSWER = " ".join(f"word{i}" for i in range(80))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, artifact_dir, arc_dataset):
    """The gateway process, over a one-model pool whose upstream streams a chunk every 0.1 s."""
    folder = tmp_path_factory.mktemp("serving-limits")
    faults = FaultConfig(chunk_delay_ms=100, fixed_answer=SLOW_ANSWER)
    upstream = create_replay_app(arc_dataset, CHEAP, faults=faults)
    with serve_in_thread(upstream) as upstream_url:
        registry = folder / "registry.db"
        make_registry(
            artifact_dir, registry, arc_dataset, {CHEAP: f"{upstream_url}/v1"}, calibrate=False
        )
        config = write_config(
            folder / "gateway.json",
            header_read_timeout_s=HEADER_S,
            body_read_timeout_s=BODY_S,
            client_keepalive_s=KEEPALIVE_S,
            max_client_connections=CAP,
        )
        with GatewayProcess(artifact_dir, registry, config=config, env=child_env()) as running:
            yield running


# ---------------------------------------------------------------------------- raw HTTP
def _address(gateway: GatewayProcess) -> tuple[str, int]:
    host, port = gateway.base_url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _connect(gateway: GatewayProcess) -> socket.socket:
    return socket.create_connection(_address(gateway), timeout=10)


def _until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and the seconds until then
    (infinite when it is still open after ``limit_s``)."""
    started = time.monotonic()
    received = b""
    while True:
        left = limit_s - (time.monotonic() - started)
        if left <= 0:
            return received, float("inf")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return received, float("inf")
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return received, time.monotonic() - started
        received += chunk


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one raw HTTP response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length, leaving the connection open."""
    sock.settimeout(10)
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    status, headers, body = _parse(raw)
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return status, headers, body


def _error_of(raw: bytes) -> tuple[int, dict[str, Any]]:
    """Status and ``error`` object of an OpenAI-style error response (a JSON body is asserted)."""
    status, headers, body = _parse(raw)
    assert headers["content-type"] == "application/json", raw
    return status, json.loads(body)["error"]


HEALTH = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"


def _chat_request(request_id: str, body: bytes, declared: int | None = None) -> bytes:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nx-request-id: {request_id}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared or len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _access_line(gateway: GatewayProcess, request_id: str) -> dict[str, Any] | None:
    for line in gateway.log_lines():
        entry = json.loads(line)
        if entry.get("logger") == "uniroute.access" and entry.get("request_id") == request_id:
            return entry
    return None


# ---------------------------------------------------------------------------- the stack
def test_the_gateway_is_served_by_uvloop_and_its_httptools_protocol(artifact_dir, tmp_path):
    from uniroute.deployment import Router

    router = Router.load(artifact_dir, tmp_path / "registry.db")
    server = uvicorn_server(create_app(router), GatewayConfig(max_client_connections=7))
    server.config.load()
    assert server.config.loop == "uvloop" and server.config.ws_protocol_class is None
    protocol = server.config.http_protocol_class
    assert issubclass(protocol, GatewayHttpProtocol)
    assert protocol.limits.max_connections == 7 and protocol.slots.capacity == 7


# ---------------------------------------------------------------------------- deadlines
def test_half_sent_headers_are_closed_within_the_header_deadline(gateway):
    idle = [_connect(gateway) for _ in range(5)]
    partial = [_connect(gateway) for _ in range(5)]
    for sock in partial:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Le")
    try:
        for sock in idle:
            received, seconds = _until_closed(sock, HEADER_S + SLACK_S)
            # Nothing of a request arrived: nothing to answer, the connection is just closed.
            assert seconds < HEADER_S + SLACK_S and received == b""
        for sock in partial:
            received, seconds = _until_closed(sock, HEADER_S + SLACK_S)
            assert seconds < HEADER_S + SLACK_S
            status, error = _error_of(received)
            assert status == 408 and error["code"] == "header_read_timeout"
            assert error["type"] == "invalid_request_error"
    finally:
        for sock in idle + partial:
            sock.close()


def test_a_body_that_stops_halfway_is_answered_408_within_the_body_deadline(gateway):
    with _connect(gateway) as sock:
        sock.sendall(_chat_request("body-stops-halfway", b'{"model": "uniroute", ', 200))
        received, seconds = _until_closed(sock, BODY_S + SLACK_S)
    assert seconds < BODY_S + SLACK_S
    status, error = _error_of(received)
    assert status == 408 and error["code"] == "body_read_timeout"
    # The handler that was reading the body logs the request with the answer the client got.
    entry = wait_until(lambda: _access_line(gateway, "body-stops-halfway"), 10, "no access log")
    assert entry["status"] == 408 and entry["error"] == "body_read_timeout"


def test_an_idle_keep_alive_connection_gets_the_keep_alive_time_then_the_header_deadline(
    gateway,
):
    with _connect(gateway) as sock:
        sock.sendall(HEALTH)
        assert _read_response(sock)[0] == 200
        # Idle for longer than the header deadline but within keep-alive: still served.
        time.sleep(HEADER_S + 0.4)
        sock.sendall(HEALTH)
        assert _read_response(sock)[0] == 200
        # The next request starts but its headers never finish: the header deadline applies.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gate")
        received, seconds = _until_closed(sock, HEADER_S + SLACK_S)
        assert seconds < HEADER_S + SLACK_S
        assert _error_of(received)[0] == 408
    with _connect(gateway) as sock:
        sock.sendall(HEALTH)
        assert _read_response(sock)[0] == 200
        started = time.monotonic()
        received, _ = _until_closed(sock, KEEPALIVE_S + SLACK_S)
        seconds = time.monotonic() - started
        # Silence after a response: closed by the keep-alive timeout, without a word.
        assert received == b"" and KEEPALIVE_S - 0.5 < seconds < KEEPALIVE_S + SLACK_S


# ---------------------------------------------------------------------------- the cap
def test_half_open_connections_beyond_the_cap_do_not_lock_out_a_well_behaved_client(gateway):
    flood = [_connect(gateway) for _ in range(4 * CAP)]
    for sock in flood:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
    started = time.monotonic()
    answers = []
    try:
        while time.monotonic() - started < HEADER_S + SLACK_S + 2:
            with _connect(gateway) as sock:
                sock.sendall(HEALTH.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
                received, _ = _until_closed(sock, 10)
            status, headers, body = _parse(received)
            answers.append(status)
            if status == 200:
                break
            assert status == 503 and headers["content-type"] == "application/json"
            assert json.loads(body)["error"]["code"] == "server_busy"
            time.sleep(0.1)
        served_after = time.monotonic() - started
        # Turned away while the cap was full, served once the flood was closed by its deadline.
        assert answers[0] == 503 and answers[-1] == 200, answers
        assert served_after < HEADER_S + SLACK_S + 1
        for sock in flood:
            assert _until_closed(sock, HEADER_S + SLACK_S)[1] < float("inf")
    finally:
        for sock in flood:
            sock.close()


# ---------------------------------------------------------------------------- malformed HTTP
MALFORMED = {
    "garbage bytes": b"\x00\x01\x02\xff garbage\r\n\r\n",
    "bad request line": b"HELLO\r\n\r\n",
    "invalid header name": b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nBad Header: 1\r\n\r\n",
    "invalid header value": b"GET /healthz HTTP/1.1\r\nHost: \x01\r\n\r\n",
    "two content lengths": (
        b"POST /v1/route HTTP/1.1\r\nHost: g\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    ),
    "bad chunk size": (
        b"POST /v1/route HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n"
    ),
    "protocol upgrade": (
        b"GET /healthz HTTP/1.1\r\nHost: g\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    ),
    "connect": b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_http_is_an_openai_style_400(gateway, request_bytes):
    with _connect(gateway) as sock:
        sock.sendall(request_bytes)
        received, seconds = _until_closed(sock, 10)
    assert seconds < 10
    status, error = _error_of(received)
    assert status == 400 and error["type"] == "invalid_request_error" and error["param"] is None
    assert error["code"] in ("malformed_request", "unsupported_upgrade") and error["message"]


def test_oversized_headers_are_a_431_and_the_server_goes_on(gateway):
    with _connect(gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Big: " + b"a" * 200_000)
        received, _ = _until_closed(sock, 10)
    status, error = _error_of(received)
    assert status == 431 and error["code"] == "request_headers_too_large"
    with _connect(gateway) as sock:
        sock.sendall(HEALTH)
        assert _read_response(sock)[0] == 200


# ---------------------------------------------------------------------------- disconnects
def test_a_client_leaving_mid_request_or_mid_stream_is_one_info_line(gateway):
    with _connect(gateway) as sock:
        sock.sendall(_chat_request("left-mid-request", b'{"model": "uniroute", "mess', 500))
        time.sleep(0.2)
    body = json.dumps(
        {"model": CHEAP, "stream": True, "messages": [{"role": "user", "content": "Hello?"}]}
    ).encode()
    with _connect(gateway) as sock:
        sock.sendall(_chat_request("left-mid-stream", body))
        received = b""
        while b"data:" not in received:
            received += sock.recv(65536)
        assert _parse(received)[0] == 200
    mid_request = wait_until(lambda: _access_line(gateway, "left-mid-request"), 10, "no line")
    mid_stream = wait_until(lambda: _access_line(gateway, "left-mid-stream"), 10, "no line")
    assert mid_request["client_disconnected"] is True and mid_request["status"] == 499
    assert mid_stream["client_disconnected"] is True and mid_stream["status"] == 200
    # The stream was cut short: far fewer bytes than the whole slow answer.
    assert mid_stream["bytes_streamed"] < len(SLOW_ANSWER)
    lines = [json.loads(line) for line in gateway.log_lines()]
    assert not [e for e in lines if e["level"] in ("ERROR", "CRITICAL")]
    assert "Traceback" not in gateway.log_text()
