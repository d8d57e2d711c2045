"""Routing several prompts with one encoder call, grouped by policy."""

from __future__ import annotations

import numpy as np

from uniroute.gateway.batching import route_batch


class Calls:
    """A tiny embed/route pair that records how it is called."""

    def __init__(self) -> None:
        self.embedded: list[list[str]] = []
        self.routed: list[tuple[list[float], float | None, float | None]] = []

    def embed(self, texts):
        self.embedded.append(list(texts))
        return np.array([[float(len(t))] for t in texts])

    def route_embeddings(self, X, lam, max_cost):
        self.routed.append((X[:, 0].tolist(), lam, max_cost))
        if max_cost == 0:
            raise ValueError("no model costs at most 0")
        return [f"decision({x:g}, {lam}, {max_cost})" for x in X[:, 0]]


def test_one_embed_call_and_one_route_call_per_policy() -> None:
    calls = Calls()
    items = [("a", None, None), ("bb", 0.5, None), ("ccc", None, None), ("dddd", 0.5, None)]
    results = route_batch(calls.embed, calls.route_embeddings, items)
    assert calls.embedded == [["a", "bb", "ccc", "dddd"]]
    assert sorted(calls.routed, key=str) == sorted(
        [([1.0, 3.0], None, None), ([2.0, 4.0], 0.5, None)], key=str
    )
    assert results == [
        "decision(1, None, None)", "decision(2, 0.5, None)",
        "decision(3, None, None)", "decision(4, 0.5, None)",
    ]  # fmt: skip


def test_a_failing_group_fails_only_its_own_items() -> None:
    calls = Calls()
    results = route_batch(calls.embed, calls.route_embeddings, [("a", None, 0), ("b", None, None)])
    assert isinstance(results[0], ValueError) and results[1] == "decision(1, None, None)"


def test_an_embedding_failure_fails_every_item() -> None:
    def broken(texts):
        raise RuntimeError("encoder crashed")

    results = route_batch(broken, Calls().route_embeddings, [("a", None, None), ("b", 1, None)])
    assert all(isinstance(r, RuntimeError) for r in results)
