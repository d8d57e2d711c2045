"""Routing several prompts with one encoder call, grouped by pool snapshot and policy; short
prompts of a cheap encoder routed inline, without a worker thread."""

from __future__ import annotations

import threading

import anyio
import numpy as np
import pytest

from uniroute.gateway.batching import RouteItem, RoutingBatcher, route_batch

#: Stand-ins for two pool snapshots (route_batch only groups by them and passes them on).
OLD, NEW = object(), object()


class Calls:
    """A tiny embed/route pair that records how it is called."""

    def __init__(self) -> None:
        self.embedded: list[list[str]] = []
        self.routed: list[tuple[list[float], float | None, float | None, object]] = []
        self.risks: list[float] = []

    def embed(self, texts):
        self.embedded.append(list(texts))
        return np.array([[float(len(t))] for t in texts])

    def route_embeddings(self, X, *, lam=None, max_cost=None, risk=0.0, snapshot=None):
        self.routed.append((X[:, 0].tolist(), lam, max_cost, snapshot))
        self.risks.append(risk)
        if max_cost == 0:
            raise ValueError("no model costs at most 0")
        pool = "new" if snapshot is NEW else "old"
        return [f"decision({x:g}, {lam}, {max_cost}, {pool})" for x in X[:, 0]]


def _item(text: str, lam=None, max_cost=None, snapshot=OLD) -> RouteItem:
    return RouteItem(text, lam, max_cost, snapshot)


def test_one_embed_call_and_one_route_call_per_policy() -> None:
    calls = Calls()
    items = [_item("a"), _item("bb", 0.5), _item("ccc"), _item("dddd", 0.5)]
    results = route_batch(calls.embed, calls.route_embeddings, items)
    assert calls.embedded == [["a", "bb", "ccc", "dddd"]]
    assert sorted(calls.routed, key=str) == sorted(
        [([1.0, 3.0], None, None, OLD), ([2.0, 4.0], 0.5, None, OLD)], key=str
    )
    assert results == [
        "decision(1, None, None, old)", "decision(2, 0.5, None, old)",
        "decision(3, None, None, old)", "decision(4, 0.5, None, old)",
    ]  # fmt: skip


def test_each_prompt_is_routed_over_the_snapshot_it_was_sent_with() -> None:
    calls = Calls()
    items = [_item("a"), _item("bb", snapshot=NEW), _item("ccc")]
    results = route_batch(calls.embed, calls.route_embeddings, items)
    assert calls.embedded == [["a", "bb", "ccc"]]
    assert sorted(calls.routed, key=str) == sorted(
        [([1.0, 3.0], None, None, OLD), ([2.0], None, None, NEW)], key=str
    )
    assert results == [
        "decision(1, None, None, old)", "decision(2, None, None, new)",
        "decision(3, None, None, old)",
    ]  # fmt: skip


def test_a_failing_group_fails_only_its_own_items() -> None:
    calls = Calls()
    results = route_batch(calls.embed, calls.route_embeddings, [_item("a", None, 0), _item("b")])
    assert isinstance(results[0], ValueError) and results[1] == "decision(1, None, None, old)"


def test_an_embedding_failure_fails_every_item() -> None:
    def broken(texts):
        raise RuntimeError("encoder crashed")

    results = route_batch(broken, Calls().route_embeddings, [_item("a"), _item("b", 1)])
    assert all(isinstance(r, RuntimeError) for r in results)


def test_risk_levels_are_routed_in_separate_groups() -> None:
    calls = Calls()
    items = [RouteItem("a", None, None, OLD, 0.0), RouteItem("bb", None, None, OLD, 1.64)]
    route_batch(calls.embed, calls.route_embeddings, items)
    assert sorted(calls.risks) == [0.0, 1.64]
    assert len(calls.embedded) == 1


def _decide_all(batcher: RoutingBatcher, items: list[RouteItem]) -> list[object]:
    """Each item's decision (or the exception it raised), asked one after the other."""

    async def main() -> list[object]:
        results: list[object] = []
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(batcher.run_worker)
            for item in items:
                try:
                    results.append(await batcher.decide(item))
                except Exception as exc:
                    results.append(exc)
            tasks.cancel_scope.cancel()
        return results

    return anyio.run(main)


def test_short_prompts_are_routed_inline_and_long_ones_in_a_thread() -> None:
    calls = Calls()
    threads: list[int] = []

    def embed(texts):
        threads.append(threading.get_ident())
        return calls.embed(texts)

    batcher = RoutingBatcher(
        embed, calls.route_embeddings, anyio.CapacityLimiter(1), inline_max_chars=3
    )
    results = _decide_all(batcher, [_item("abc"), _item("abcd"), _item("a", 0.5)])
    assert results == [
        "decision(3, None, None, old)", "decision(4, None, None, old)",
        "decision(1, 0.5, None, old)",
    ]  # fmt: skip
    loop_thread = threading.get_ident()  # anyio.run runs the loop in this thread
    assert threads == [loop_thread, threads[1], loop_thread] and threads[1] != loop_thread
    assert batcher.routed_inline == 2 and batcher.routed_in_threads == 1


def test_an_inline_routing_error_is_raised_to_its_request_only() -> None:
    calls = Calls()
    batcher = RoutingBatcher(
        calls.embed, calls.route_embeddings, anyio.CapacityLimiter(1), inline_max_chars=100
    )
    failed, routed = _decide_all(batcher, [_item("a", None, 0), _item("b")])
    assert isinstance(failed, ValueError) and routed == "decision(1, None, None, old)"


@pytest.mark.parametrize("text", ["", "a"])
def test_without_a_declared_limit_every_prompt_goes_to_a_thread(text: str) -> None:
    calls = Calls()
    threads: list[int] = []

    def embed(texts):
        threads.append(threading.get_ident())
        return calls.embed(texts)

    batcher = RoutingBatcher(embed, calls.route_embeddings, anyio.CapacityLimiter(1))
    _decide_all(batcher, [_item(text)])
    assert threads != [threading.get_ident()]
    assert batcher.routed_inline == 0 and batcher.routed_in_threads == 1
