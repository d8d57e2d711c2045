"""Routing of concurrent requests: inline for a cheap encoder, else in batches off the loop.

An encoder whose class declares prompts cheap to embed (TF-IDF: about 0.1 ms for 200 tokens,
``Encoder``'s ``inline_max_chars``) embeds and routes a prompt up to that length right on the
event loop: the hop to a worker thread and back would cost the request more (a few ms of
thread hand-offs and loop wake-ups) than the work itself, and work this short cannot hold the
loop up noticeably. What the encoder does not declare cheap (MiniLM, any wrapper, longer texts)
never runs on the loop.

That work is batched: an encoder embeds a batch for much less than the sum of single calls
(MiniLM runs one forward pass), and routing a batch of embeddings is vectorised. So requests do
not each take a thread: ``workers`` loops each take every prompt waiting (up to ``max_batch``),
embed them in one call and route them by group (same pool snapshot, same policy), in a worker
thread. A lone request is routed at once; under load, prompts that arrive while a batch is being
embedded form the next batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import anyio.to_thread
import numpy as np

from uniroute.deployment import Decision, Snapshot


class RouteEmbeddings(Protocol):
    """``Router.route_embeddings``: decisions for embedded prompts over one snapshot."""

    def __call__(
        self,
        X: np.ndarray,
        *,
        lam: float | None = None,
        max_cost: float | None = None,
        risk: float = 0.0,
        snapshot: Snapshot | None = None,
    ) -> list[Decision]: ...


Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class RouteItem:
    """One prompt to route: its text, the policy (lambda or max-cost) and the pool snapshot."""

    text: str
    lam: float | None
    max_cost: float | None
    snapshot: Snapshot
    risk: float = 0.0


@dataclass(eq=False)
class _Pending:
    item: RouteItem
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Decision | None = None
    error: Exception | None = None


def route_batch(
    embed: Embed, route_embeddings: RouteEmbeddings, items: Sequence[RouteItem]
) -> list[Decision | Exception]:
    """Decisions for the items: one embed call, one route call per (snapshot, policy) group.

    An item whose routing failed gets the exception in its place instead of a decision.
    """
    try:
        X = embed([item.text for item in items])
    except Exception as exc:
        return [exc] * len(items)
    groups: dict[tuple[Snapshot, float | None, float | None, float], list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault((item.snapshot, item.lam, item.max_cost, item.risk), []).append(index)
    results: list[Decision | Exception] = [Exception("not routed")] * len(items)
    for (snapshot, lam, max_cost, risk), rows in groups.items():
        decisions: Sequence[Decision | Exception]
        try:
            decisions = route_embeddings(
                X[rows], lam=lam, max_cost=max_cost, risk=risk, snapshot=snapshot
            )
        except Exception as exc:
            decisions = [exc] * len(rows)
        for row, decision in zip(rows, decisions, strict=True):
            results[row] = decision
    return results


class RoutingBatcher:
    """Routes prompts inline when the encoder is cheap for them, else in batches off the loop.

    ``inline_max_chars`` is the longest text routed inline (0: none, every prompt goes to the
    worker threads); ``routed_inline`` and ``routed_in_threads`` count the prompts each way.
    """

    def __init__(
        self,
        embed: Embed,
        route_embeddings: RouteEmbeddings,
        limiter: anyio.CapacityLimiter,
        max_batch: int = 32,
        inline_max_chars: int = 0,
    ) -> None:
        self.embed = embed
        self.route_embeddings = route_embeddings
        self.limiter = limiter
        self.max_batch = max_batch
        self.inline_max_chars = inline_max_chars
        self.routed_inline = 0
        self.routed_in_threads = 0
        self._send, self._receive = anyio.create_memory_object_stream[_Pending](math.inf)

    async def decide(self, item: RouteItem) -> Decision:
        """The decision for one prompt (raises what routing it raised)."""
        if self.inline_max_chars > 0 and len(item.text) <= self.inline_max_chars:
            self.routed_inline += 1
            result = route_batch(self.embed, self.route_embeddings, [item])[0]
            if isinstance(result, Exception):
                raise result
            return result
        pending = _Pending(item)
        self._send.send_nowait(pending)
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    async def run_worker(self) -> None:
        """One batching loop; run ``routing_threads`` of them in the app's task group."""
        async with self._receive.clone() as receive:
            async for first in receive:
                batch = [first]
                while len(batch) < self.max_batch:
                    try:
                        batch.append(receive.receive_nowait())
                    except anyio.WouldBlock:
                        break
                await self._process(batch)

    async def _process(self, batch: list[_Pending]) -> None:
        items = [pending.item for pending in batch]
        self.routed_in_threads += len(items)
        results: list[Decision | Exception]
        try:
            results = await anyio.to_thread.run_sync(
                route_batch, self.embed, self.route_embeddings, items, limiter=self.limiter
            )
        except Exception as exc:  # the thread could not run: fail the batch, not the loop
            results = [exc] * len(batch)
        for pending, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                pending.error = result
            else:
                pending.result = result
            pending.done.set()
