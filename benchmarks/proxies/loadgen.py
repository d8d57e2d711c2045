"""A small closed-loop HTTP/1.1 load generator on raw asyncio streams, with time to first byte.

    python benchmarks/proxies/loadgen.py URL BODIES_JSONL --concurrency 1 --seconds 10 \
        [--warmup 2] [--header "Authorization: Bearer KEY"]

Each of ``--concurrency`` keep-alive connections POSTs the JSON bodies of BODIES_JSONL (one a
line, cycled) one after another for ``--seconds`` (after an untimed ``--warmup``), and one JSON
object is printed: requests, errors, wall seconds, every latency and every time to the first
body byte (ms), and a few error messages. A request is an error unless it gets a 200 (and, for
a ``"stream": true`` body, an event stream ending with ``data: [DONE]``). wrk cannot time the
first byte of a streamed answer; this client exists for that, and as the load generator when
wrk is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: Seconds one request may take before it counts as an error (wrk is given the same).
REQUEST_TIMEOUT_S = 30.0


@dataclass
class Tally:
    """What the measured requests gave."""

    latency_ms: list[float] = field(default_factory=list)
    ttfb_ms: list[float] = field(default_factory=list)
    errors: int = 0
    samples: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        """Count one error, keeping the first few messages."""
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(message)


class ResponseError(Exception):
    """A response that is not a complete 200 answer of the expected kind."""


async def read_answer(reader: asyncio.StreamReader, sent: float) -> tuple[int, float, bytes, bool]:
    """(status, seconds to the first body byte, body, keep-alive) of one HTTP/1.1 response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    first = 0.0
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
        first = time.perf_counter() - sent
    elif headers.get(b"transfer-encoding") == b"chunked":
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            if not parts:
                first = time.perf_counter() - sent
            parts.append(chunk[:-2])
        body = b"".join(parts)
    else:  # no framing: the body runs to the end of the connection
        body = await reader.read()
        first = time.perf_counter() - sent
        return status, first, body, False
    return status, first, body, headers.get(b"connection") != b"close"


async def worker(
    host: str, port: int, requests: itertools.cycle, until: float, tally: Tally | None
) -> None:
    """Send requests on one keep-alive connection (reopened after an error) until ``until``."""
    reader = writer = None
    while time.perf_counter() < until:
        payload, streamed = next(requests)
        sent = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            writer.write(payload)
            status, first, body, keep = await asyncio.wait_for(
                read_answer(reader, sent), REQUEST_TIMEOUT_S
            )
            if status != 200:
                raise ResponseError(f"HTTP {status}: {body[:200]!r}")
            if streamed and not body.rstrip().endswith(b"data: [DONE]"):
                raise ResponseError(f"stream without data: [DONE]: ...{body[-200:]!r}")
        except (OSError, EOFError, TimeoutError, ValueError, IndexError, ResponseError) as exc:
            if tally is not None:
                tally.fail(f"{type(exc).__name__}: {exc}")
            keep = False
        else:
            if tally is not None:
                tally.latency_ms.append((time.perf_counter() - sent) * 1e3)
                tally.ttfb_ms.append(first * 1e3)
        if not keep and writer is not None:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def prepared_requests(
    url: str, bodies: list[bytes], headers: list[str]
) -> list[tuple[bytes, bool]]:
    """The raw bytes of each request, and whether it asks for a stream."""
    parts = urlsplit(url)
    head = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}"]
    head += ["Content-Type: application/json", *headers]
    out = []
    for body in bodies:
        lines = [*head, f"Content-Length: {len(body)}", "", ""]
        out.append(("\r\n".join(lines).encode() + body, bool(json.loads(body).get("stream"))))
    return out


async def run(args: argparse.Namespace) -> dict:
    """The warm-up, then the measured phase; the printed figures."""
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    with open(args.bodies, "rb") as handle:
        bodies = [line.strip() for line in handle if line.strip()]
    requests = itertools.cycle(prepared_requests(args.url, bodies, args.header))
    if args.warmup > 0:
        until = time.perf_counter() + args.warmup
        await asyncio.gather(*(worker(host, port, requests, until, None) for _ in range(args.c)))
    tally = Tally()
    started = time.perf_counter()
    until = started + args.seconds
    await asyncio.gather(*(worker(host, port, requests, until, tally) for _ in range(args.c)))
    wall = time.perf_counter() - started
    return {
        "requests": len(tally.latency_ms) + tally.errors,
        "errors": tally.errors,
        "seconds": wall,
        "latency_ms": tally.latency_ms,
        "ttfb_ms": tally.ttfb_ms,
        "error_samples": tally.samples,
    }


def main() -> int:
    """Parse the command line, run, print the JSON figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("bodies", help="a file of JSON request bodies, one a line")
    parser.add_argument("--concurrency", "-c", dest="c", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    args = parser.parse_args()
    try:  # the C event loop, when installed, keeps the client's own share of each timing small
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        print(json.dumps(runner.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
