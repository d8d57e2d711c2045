"""Routing of concurrent requests in batches: one encoder call for every prompt waiting.

An encoder embeds a batch for much less than the sum of single calls (MiniLM runs one forward
pass; TF-IDF pays its per-call overhead once), and routing a batch of embeddings is vectorised.
So requests do not each take a thread: ``workers`` loops each take every prompt waiting (up to
``max_batch``), embed them in one call and route them by policy group, in a worker thread. A
lone request is routed at once; under load, prompts that arrive while a batch is being embedded
form the next batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import numpy as np


@dataclass(eq=False)
class _Pending:
    text: str
    lam: float | None
    max_cost: float | None
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Any = None
    error: BaseException | None = None


def route_batch(
    embed: Callable[[Sequence[str]], np.ndarray],
    route_embeddings: Callable[[np.ndarray, float | None, float | None], list[Any]],
    items: Sequence[tuple[str, float | None, float | None]],
) -> list[Any]:
    """Decisions for (text, lam, max_cost) items: one embed call, one route call per policy.

    An item whose routing failed gets the exception in its place instead of a decision.
    """
    try:
        X = embed([text for text, _, _ in items])
    except Exception as exc:
        return [exc] * len(items)
    groups: dict[tuple[float | None, float | None], list[int]] = {}
    for index, (_, lam, max_cost) in enumerate(items):
        groups.setdefault((lam, max_cost), []).append(index)
    results: list[Any] = [None] * len(items)
    for (lam, max_cost), rows in groups.items():
        try:
            decisions = route_embeddings(X[rows], lam, max_cost)
        except Exception as exc:
            decisions = [exc] * len(rows)
        for row, decision in zip(rows, decisions, strict=True):
            results[row] = decision
    return results


class RoutingBatcher:
    """Collects routing requests and computes them in batches off the event loop."""

    def __init__(
        self,
        embed: Callable[[Sequence[str]], np.ndarray],
        route_embeddings: Callable[[np.ndarray, float | None, float | None], list[Any]],
        limiter: anyio.CapacityLimiter,
        max_batch: int = 32,
    ) -> None:
        self.embed = embed
        self.route_embeddings = route_embeddings
        self.limiter = limiter
        self.max_batch = max_batch
        self._send, self._receive = anyio.create_memory_object_stream[_Pending](math.inf)
        self.batch_sizes: list[int] = []

    async def decide(self, text: str, lam: float | None, max_cost: float | None) -> Any:
        """The decision for one prompt (raises what routing it raised)."""
        item = _Pending(text, lam, max_cost)
        self._send.send_nowait(item)
        await item.done.wait()
        if item.error is not None:
            raise item.error
        return item.result

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
        self.batch_sizes.append(len(batch))
        del self.batch_sizes[:-1000]  # a bounded record, for tests and debugging
        items = [(p.text, p.lam, p.max_cost) for p in batch]
        try:
            results = await anyio.to_thread.run_sync(
                route_batch, self.embed, self.route_embeddings, items, limiter=self.limiter
            )
        except Exception as exc:  # the thread could not run: fail the batch, not the loop
            results = [exc] * len(batch)
        for pending, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                pending.error = result
            else:
                pending.result = result
            pending.done.set()
