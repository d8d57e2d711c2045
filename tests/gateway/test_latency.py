"""Latency as a cost: this replica's moving averages, their seed from onboarding, and routed
requests that weigh it moving off a slow upstream (live gateway, replay upstreams)."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest

from tests.gateway.support import CHEAP, EXPENSIVE, MID, POOL, chat_body, pool_gateway
from uniroute.gateway.latency import LatencyBoard
from uniroute.registry import ModelCost, ModelRecord


def _snapshot(**onboarding: float | None) -> SimpleNamespace:
    records = [
        ModelRecord(name=name, cost=ModelCost(per_query=0.001), latency_s=seconds)
        for name, seconds in onboarding.items()
    ]
    return SimpleNamespace(records=records)


def test_the_board_keeps_moving_averages_seeded_by_onboarding() -> None:
    board = LatencyBoard(alpha=0.5)
    snapshot = _snapshot(a=2.0, b=None, c=0.5)
    assert board.expected(snapshot) == {"a": 2.0, "c": 0.5}  # b: nothing known yet
    board.observe("a", 0.1, 1.0)
    board.observe("a", 0.3, 3.0)  # 1.0 + 0.5 * (3.0 - 1.0)
    board.observe("b", 0.2, 4.0)
    assert board.expected(snapshot) == {"a": 2.0, "b": 4.0, "c": 0.5}
    assert board.to_dict()["a"] == {"first_byte_s": 0.2, "total_s": 2.0}
    board.observe("a", float("nan"), 1.0)  # a broken measurement changes nothing
    assert board.expected(snapshot)["a"] == 2.0


@pytest.mark.slow
def test_a_request_weighing_latency_moves_off_a_slow_upstream(
    tmp_path, artifact_dir, arc_dataset, replays, unique_prompts
) -> None:
    with pool_gateway(tmp_path, artifact_dir, arc_dataset, replays, config={}) as (gw, router, _):
        prompts = [p for p in unique_prompts[:200] if router.route(p, lam=0.0).model == EXPENSIVE]
        assert len(prompts) >= 6
        replays[EXPENSIVE].set_fault(delay_ms=400)
        try:
            # The gateway learns the latencies from its own calls (lambda 0: the best model).
            for model in POOL:
                for prompt in prompts[:2]:
                    body = chat_body(prompt, model=model)
                    response = httpx.post(f"{gw.v1_url}/chat/completions", json=body, timeout=30)
                    assert response.status_code == 200
            body = chat_body(prompts[2], model="uniroute:lambda=0")
            plain = httpx.post(f"{gw.v1_url}/chat/completions", json=body, timeout=30)
            assert plain.headers["x-uniroute-model"] == EXPENSIVE
            assert "x-uniroute-latency-weight" not in plain.headers
            for prompt in prompts[3:6]:
                body = chat_body(prompt, model="uniroute:lambda=0,latency=1")
                answer = httpx.post(f"{gw.v1_url}/chat/completions", json=body, timeout=30)
                assert answer.status_code == 200
                # 0.4 s more, at a weight of 1 per second, outweighs its lower error here.
                assert answer.headers["x-uniroute-model"] in (CHEAP, MID)
                assert answer.headers["x-uniroute-latency-weight"] == "1"
                assert float(answer.headers["x-uniroute-expected-latency"]) < 0.4
        finally:
            replays[EXPENSIVE].set_fault()
