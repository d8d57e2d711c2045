"""Speed of the gateway's upstream client: the aiohttp one against the httpx one it replaced.

A replay upstream (real RouterBench ARC answers, ``uniroute.testing.replay`` served by uvicorn)
runs in a child process; this process runs both clients on uvloop, as the gateway does, and
sends the same real prompts through each:

* non-streamed calls (``complete``) and streamed ones (``open_stream`` + every chunk),
* one at a time (sequential) and with ``--concurrency`` (64) in flight,
* with the recorded answers (a few words: a handful of events per stream), then streamed with
  ``--long-words`` (300) word answers (one event per word, as an LLM streams tokens),

in ``--rounds`` alternating rounds (baseline, new, baseline, new, ...) so that drift in the
machine's load hits both alike. For each phase it prints p50 and p99 per call, calls/s, and the
CPU time this process spent per call (the client's own cost: the upstream is another process),
then the new client's figures as ratios of the baseline's in the same run.

The baseline is a copy of the former httpx ``UpstreamClient`` hot path (sharded pools,
``send(stream=True)``, bounded raw reads, the SSE stream under an anyio scope whose deadline
moves on every chunk), kept here only to be measured against.

    .venv/bin/python benchmarks/upstream_client_speed.py [--calls 2000] [--stream-calls 600]

Every loop is bounded by its call count and every call by the clients' timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import httpx
import numpy as np
import uvloop

from uniroute._json import dumps_compact
from uniroute._retry import retry
from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_data_dir
from uniroute.gateway.config import GatewayConfig
from uniroute.gateway.fallback import UpstreamError
from uniroute.gateway.upstream import (
    SseModelRewriter,
    UpstreamClient,
    UpstreamTarget,
    rewrite_model_field,
)
from uniroute.pool import Endpoint
from uniroute.testing.replay import ReplayServerProcess

MODEL = "mistralai/mistral-7b-chat"
PATH = "/chat/completions"


# ------------------------------------------------------------ the baseline: the former client


@dataclass
class BaselineStream:
    """The former httpx stream: one anyio scope whose deadline is moved on every chunk."""

    response: httpx.Response
    model: str
    idle_timeout_s: float
    rewriter: SseModelRewriter
    first: bytes
    _iterator: AsyncIterator[bytes] = field(repr=False)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The SSE bytes, as the former client gave them."""
        yield self.first
        with anyio.CancelScope() as idle:
            idle.deadline = anyio.current_time() + self.idle_timeout_s
            async for chunk in self._iterator:
                idle.deadline = anyio.current_time() + self.idle_timeout_s
                out = self.rewriter.feed(chunk)
                if out:
                    yield out
        if idle.cancelled_caught:
            raise UpstreamError("stalled", kind="stream_stalled")
        tail = self.rewriter.flush()
        if tail:
            yield tail
        if not self.rewriter.done:
            raise UpstreamError("no [DONE]", kind="stream_broken")

    async def aclose(self) -> None:
        """Release the connection."""
        await self.response.aclose()


class BaselineClient:
    """The former httpx UpstreamClient's request path (BASELINE, for this benchmark only)."""

    _CONNECTION_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)

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
        """Close every pool."""
        for client in self.clients:
            await client.aclose()

    async def _send(self, target: UpstreamTarget, body: dict[str, Any]) -> httpx.Response:
        headers = {
            "content-type": "application/json",
            "x-request-id": "bench",
            "accept-encoding": "identity",
        }
        payload = dumps_compact({**body, "model": target.upstream_model or target.model})
        url = target.url(PATH)

        async def attempt() -> httpx.Response:
            client = next(self._turn)
            request = client.build_request("POST", url, content=payload, headers=headers)
            return await client.send(request, stream=True)

        response = await retry(
            attempt,
            attempts=self.config.connect_retries + 1,
            backoff=self.config.retry_backoff_s,
            retryable=self._CONNECTION_ERRORS,
            sleep=anyio.sleep,
        )
        if response.status_code != 200:
            await response.aclose()
            raise UpstreamError(f"HTTP {response.status_code}", status=response.status_code)
        return response

    async def complete(self, target: UpstreamTarget, body: dict[str, Any]) -> bytes:
        """A non-streamed answer, read within the size limit and rewritten."""
        response = None
        try:
            with anyio.fail_after(self.config.upstream_timeout_s):
                response = await self._send(target, body)
                limit = self.config.max_upstream_body_bytes
                chunks, size = [], 0
                async for chunk in response.aiter_raw():
                    size += len(chunk)
                    if size > limit:
                        raise UpstreamError("too large", kind="too_large")
                    chunks.append(chunk)
        finally:
            if response is not None:
                await response.aclose()
        return rewrite_model_field(b"".join(chunks), target.model, self.config.max_json_depth)

    async def open_stream(self, target: UpstreamTarget, body: dict[str, Any]) -> BaselineStream:
        """A streamed answer whose first event has arrived."""
        with anyio.fail_after(self.config.upstream_timeout_s):
            response = await self._send(target, body)
            rewriter = SseModelRewriter(target.model, self.config.max_stream_line_bytes)
            iterator = response.aiter_raw().__aiter__()
            first = b""
            while not rewriter.events and not rewriter.done:
                first += rewriter.feed(await iterator.__anext__())
        return BaselineStream(
            response, target.model, self.config.stream_idle_timeout_s, rewriter, first, iterator
        )


# ------------------------------------------------------------ the measurement


def calls_for(client: Any, new: bool, target: UpstreamTarget) -> dict[str, Callable]:
    """``{"complete": f, "stream": g}``: one call each, given a request body."""

    async def complete(body: dict[str, Any]) -> int:
        if new:
            answer = await client.complete(target, PATH, body, "bench")
            return len(answer.body)
        return len(await client.complete(target, body))

    async def stream(body: dict[str, Any]) -> int:
        opened = (
            await client.open_stream(target, PATH, body, "bench")
            if new
            else await client.open_stream(target, body)
        )
        size = 0
        try:
            async for chunk in opened.chunks():
                size += len(chunk)
        finally:
            await opened.aclose()
        return size

    return {"complete": complete, "stream": stream}


@dataclass
class Phase:
    """Per-call seconds, wall seconds, CPU seconds and errors of one client in one phase."""

    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0
    errors: int = 0

    @property
    def calls(self) -> int:
        """Calls made."""
        return len(self.latencies)

    def p(self, q: float) -> float:
        """The q-th percentile of the per-call seconds."""
        return float(np.percentile(np.asarray(self.latencies), q))


async def run_phase(
    call: Callable[[dict[str, Any]], Awaitable[int]],
    bodies: Sequence[dict[str, Any]],
    concurrency: int,
    into: Phase,
) -> None:
    """Make one call per body with ``concurrency`` in flight, adding the figures to ``into``."""
    queue = iter(bodies)
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for body in queue:
            started = time.perf_counter()
            try:
                await call(body)
            except UpstreamError as failure:
                errors += 1
                print(f"    error: {failure.reason}", file=sys.stderr)
            latencies.append(time.perf_counter() - started)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    into.wall += time.perf_counter() - wall
    into.cpu += time.process_time() - cpu
    into.latencies += latencies
    into.errors += errors


def report(name: str, phase: Phase) -> None:
    """One line of figures."""
    print(
        f"  {name:<9} p50 {phase.p(50) * 1000:7.3f} ms  p99 {phase.p(99) * 1000:7.3f} ms"
        f"  {phase.calls / phase.wall:8.1f} calls/s  cpu {phase.cpu / phase.calls * 1e6:6.0f} us"
        f"/call  errors {phase.errors}"
    )


def ratios(base: Phase, new: Phase) -> None:
    """The new client's figures as ratios of the baseline's."""
    print(
        f"  new/baseline: p50 x{new.p(50) / base.p(50):.2f}  p99 x{new.p(99) / base.p(99):.2f}"
        f"  calls/s x{(new.calls / new.wall) / (base.calls / base.wall):.2f}"
        f"  cpu/call x{(new.cpu / new.calls) / (base.cpu / base.calls):.2f}"
    )


async def measure(
    args: argparse.Namespace, upstream: ReplayServerProcess, prompts: list[str]
) -> None:
    """Warm both clients up, then run every phase in alternating rounds."""
    config = GatewayConfig()
    target = UpstreamTarget(MODEL, Endpoint(upstream.v1_url))
    new_client = UpstreamClient(config)
    baseline = BaselineClient(config)
    clients = {
        "baseline": calls_for(baseline, False, target),
        "new": calls_for(new_client, True, target),
    }

    def bodies(n: int, stream: bool) -> list[dict[str, Any]]:
        picked = itertools.islice(itertools.cycle(prompts), n)
        return [{"messages": [{"role": "user", "content": p}], "stream": stream} for p in picked]

    try:
        for calls in clients.values():  # warm-up: connections open, code paths hot
            await run_phase(
                calls["complete"], bodies(args.concurrency, False), args.concurrency, Phase()
            )
            await run_phase(
                calls["stream"], bodies(args.concurrency, True), args.concurrency, Phase()
            )
        long_answer = " ".join(f"word{i}" for i in range(args.long_words))
        phases = (
            ("non-streamed", "complete", args.calls, None),
            ("streamed", "stream", args.stream_calls, None),
            (f"streamed, {args.long_words}-word answers", "stream", args.stream_calls, long_answer),
        )
        for label, kind, n, fixed_answer in phases:
            await anyio.to_thread.run_sync(partial(upstream.set_fault, fixed_answer=fixed_answer))
            for concurrency in (1, args.concurrency):
                figures = {name: Phase() for name in clients}
                per_round = max(1, n // args.rounds)
                for _ in range(args.rounds):
                    for name, calls in clients.items():
                        work = bodies(per_round, kind == "stream")
                        await run_phase(calls[kind], work, concurrency, figures[name])
                print(f"\n{label}, concurrency {concurrency} ({figures['new'].calls} calls each):")
                for name, phase in figures.items():
                    report(name, phase)
                ratios(figures["baseline"], figures["new"])
    finally:
        await new_client.aclose()
        await baseline.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(default_data_dir() / "routerbench"))
    parser.add_argument("--calls", type=int, default=2000, help="non-streamed calls per phase")
    parser.add_argument("--stream-calls", type=int, default=600, help="streamed calls per phase")
    parser.add_argument("--long-words", type=int, default=300, help="words of the long answers")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    data = os.path.join(args.data, "arc_challenge_test.csv")
    prompts = list(dict.fromkeys(str(p) for p in load_dataset(data, "routerbench").prompts))
    print(
        f"cores: {os.cpu_count()}; python {sys.version.split()[0]}; load average at start: "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    print(f"upstream: replay of {MODEL} on RouterBench ARC ({len(prompts)} prompts), child process")
    with ReplayServerProcess(data, MODEL) as upstream:
        uvloop.run(measure(args, upstream, prompts))
    print("\nload average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
