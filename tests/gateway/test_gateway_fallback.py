"""Upstream failures: timeouts, 500s, a killed upstream, the circuit breaker, streaming fallback.

This module's gateway has short timeouts. It injects faults into the shared upstreams (and
clears them after each test), and kills an upstream of its own.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.support import CHEAP, COSTS, EXPENSIVE, MID, chat_body, pool_gateway
from uniroute.testing.harness import sse_events
from uniroute.testing.replay import start_replays

TIMEOUT_S = 1.0
COOLDOWN_S = 1.0
#: Only CHEAP and MID cost at most this much per query.
CHEAP_OR_MID = (COSTS[MID] + COSTS[EXPENSIVE]) / 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory, artifact_dir, arc_dataset, arc_file, replays):
    """A registry over shared upstreams plus a MID one of its own; a gateway with short timeouts."""
    own = start_replays(arc_file, [MID])
    upstreams = {CHEAP: replays[CHEAP], EXPENSIVE: replays[EXPENSIVE], MID: own[MID]}
    config = {
        "upstream_timeout_s": TIMEOUT_S, "stream_idle_timeout_s": 1.0, "connect_retries": 1,
        "retry_backoff_s": 0.02, "breaker_failure_threshold": 2, "breaker_cooldown_s": COOLDOWN_S,
        "max_models_per_request": 3, "registry_poll_s": 0.2,
    }  # fmt: skip
    try:
        with pool_gateway(
            tmp_path_factory.mktemp("gateway-fallback"),
            artifact_dir,
            arc_dataset,
            upstreams,
            config,
        ) as (gateway, router, _):
            yield gateway, router, upstreams
    finally:
        own[MID].stop()


def _first_choice(router, prompts, model, n, **policy) -> list[str]:
    """Prompts whose first choice under ``policy`` is ``model``."""
    found = []
    for prompt in prompts:
        if router.route(prompt, **policy).model == model:
            found.append(prompt)
            if len(found) == n:
                return found
    raise AssertionError(f"fewer than {n} prompts route to {model} under {policy}")


def _post(gateway, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{gateway.v1_url}/chat/completions", json=body, timeout=30, **kwargs)


def _circuit_open(gateway, model) -> float:
    text = httpx.get(f"{gateway.base_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "uniroute_circuit_open" and sample.labels == {"model": model}:
                return sample.value
    return 0.0


def test_500s_fall_back_then_the_breaker_opens_and_recovers(setup, unique_prompts):
    gateway, router, upstreams = setup
    chosen = _first_choice(router, unique_prompts, EXPENSIVE, 5, lam=0.0)
    upstreams[EXPENSIVE].set_fault(fail_rate=1.0, fail_status=500)
    try:
        for prompt in chosen[:2]:
            response = _post(gateway, chat_body(prompt, model="uniroute:lambda=0"))
            assert response.status_code == 200
            second = router.route(prompt, lam=0.0).ranking[1]
            assert response.headers["x-uniroute-model"] == second
            assert response.headers["x-uniroute-attempts"] == "2"
        # Two consecutive failures: out of rotation, so the next request does not even try it.
        calls = upstreams[EXPENSIVE].stats()["requests"]
        response = _post(gateway, chat_body(chosen[2], model="uniroute:lambda=0"))
        assert response.status_code == 200
        assert response.headers["x-uniroute-model"] != EXPENSIVE
        assert response.headers["x-uniroute-attempts"] == "1"
        assert upstreams[EXPENSIVE].stats()["requests"] == calls
        assert _circuit_open(gateway, EXPENSIVE) == 1.0
        # Named directly while out of rotation: a clear 503, not a hang.
        direct = _post(gateway, chat_body(chosen[2], model=EXPENSIVE))
        assert direct.status_code == 503
        assert direct.json()["error"]["code"] == "models_unavailable"
    finally:
        upstreams[EXPENSIVE].set_fault()
    time.sleep(COOLDOWN_S + 0.2)
    # Half-open: one probe goes through, succeeds, and the model is back in rotation.
    for prompt in chosen[3:5]:
        response = _post(gateway, chat_body(prompt, model="uniroute:lambda=0"))
        assert response.status_code == 200
        assert response.headers["x-uniroute-model"] == EXPENSIVE
    assert _circuit_open(gateway, EXPENSIVE) == 0.0


def test_slow_upstream_times_out_and_falls_back(setup, unique_prompts):
    gateway, router, upstreams = setup
    prompt = _first_choice(router, unique_prompts, EXPENSIVE, 1, lam=0.0)[0]
    upstreams[EXPENSIVE].set_fault(delay_ms=int(TIMEOUT_S * 1000 * 4))
    try:
        started = time.perf_counter()
        response = _post(gateway, chat_body(prompt, model="uniroute:lambda=0"))
        elapsed = time.perf_counter() - started
    finally:
        upstreams[EXPENSIVE].set_fault()
    assert response.status_code == 200
    assert response.headers["x-uniroute-model"] == router.route(prompt, lam=0.0).ranking[1]
    assert TIMEOUT_S <= elapsed < TIMEOUT_S * 3
    # A success puts the consecutive-failure count back to zero for the next tests.
    assert _post(gateway, chat_body(prompt, model=EXPENSIVE)).status_code == 200


def test_streaming_falls_back_before_the_first_byte(setup, unique_prompts):
    gateway, router, upstreams = setup
    prompt = _first_choice(router, unique_prompts, EXPENSIVE, 1, lam=0.0)[0]
    upstreams[EXPENSIVE].set_fault(fail_first=1, fail_status=503)
    try:
        response = _post(gateway, chat_body(prompt, model="uniroute:lambda=0", stream=True))
    finally:
        upstreams[EXPENSIVE].set_fault()
    fallback = router.route(prompt, lam=0.0).ranking[1]
    assert response.status_code == 200
    assert response.headers["x-uniroute-model"] == fallback
    events = sse_events(response.content)
    assert events[-1] == "[DONE]"
    assert {e["model"] for e in events[:-1]} == {fallback}
    assert _post(gateway, chat_body(prompt, model=EXPENSIVE)).status_code == 200


def test_stream_that_stalls_after_the_first_byte_ends_with_an_error_event(setup, unique_prompts):
    gateway, _, upstreams = setup
    upstreams[CHEAP].set_fault(chunk_delay_ms=3000, fixed_answer="too slow")
    try:
        response = _post(gateway, chat_body(unique_prompts[0], model=CHEAP, stream=True))
    finally:
        upstreams[CHEAP].set_fault(fixed_answer=None, chunk_delay_ms=0)
    # The status was sent with the first chunk, so the failure is reported in the stream.
    assert response.status_code == 200
    events = sse_events(response.content)
    assert events[0]["model"] == CHEAP
    assert events[-1]["error"]["code"] == "upstream_stream_broken"
    assert _post(gateway, chat_body(unique_prompts[0], model=CHEAP)).status_code == 200


def test_every_candidate_failing_gives_a_clear_502(setup, unique_prompts):
    gateway, _, upstreams = setup
    ceiling = f"uniroute:max-cost={CHEAP_OR_MID}"
    for model in (CHEAP, MID):
        upstreams[model].set_fault(fail_first=1, fail_status=500)
    try:
        response = _post(gateway, chat_body(unique_prompts[1], model=ceiling))
    finally:
        for model in (CHEAP, MID):
            upstreams[model].set_fault()
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_failed"
    assert "HTTP 500" in error["message"] and CHEAP in error["message"] and MID in error["message"]


def test_killing_an_upstream_mid_traffic_loses_no_request(setup, unique_prompts):
    gateway, router, upstreams = setup
    chosen = _first_choice(router, unique_prompts, MID, 12, max_cost=CHEAP_OR_MID)
    results: list[tuple[int, str]] = []

    def traffic() -> None:
        for prompt in chosen:
            response = _post(gateway, chat_body(prompt, model=f"uniroute:max-cost={CHEAP_OR_MID}"))
            results.append((response.status_code, response.headers.get("x-uniroute-model", "")))

    thread = threading.Thread(target=traffic)
    thread.start()
    deadline = time.monotonic() + 30
    while len(results) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    upstreams[MID].stop()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert [status for status, _ in results] == [200] * len(chosen)
    models = [model for _, model in results]
    assert models[:4] == [MID] * 4
    # Once the process is gone, its requests are answered by the only other model within max-cost.
    assert models[-4:] == [CHEAP] * 4
