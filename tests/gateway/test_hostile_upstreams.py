"""Upstreams that misbehave after answering 200: each is that model failing, never the gateway.

The model under attack (MID) has a replay upstream of its own that turns hostile on demand (see
``uniroute.testing.replay.HOSTILE_MODES``); routed requests whose first choice it is must still
be answered, by the next model when the failure comes before the first byte, or end with an
in-band error event when a stream breaks after it, and the breaker must take MID out of rotation
after ``breaker_failure_threshold`` such failures.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.gateway.support import (
    CHEAP,
    COSTS,
    EXPENSIVE,
    MID,
    UPSTREAM_KEY,
    chat_body,
    pool_gateway,
)
from uniroute.testing.harness import sse_events
from uniroute.testing.replay import start_replays

THRESHOLD = 2
COOLDOWN_S = 1.0
#: Routing within this price leaves CHEAP and MID as candidates.
CHEAP_OR_MID = (COSTS[MID] + COSTS[EXPENSIVE]) / 2
POLICY = f"uniroute:max-cost={CHEAP_OR_MID}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, artifact_dir, arc_dataset, arc_file, replays):
    """A gateway over the shared CHEAP and EXPENSIVE upstreams and a MID upstream of its own."""
    own = start_replays(arc_file, [MID])
    upstreams = {CHEAP: replays[CHEAP], EXPENSIVE: replays[EXPENSIVE], MID: own[MID]}
    config = {
        "upstream_timeout_s": 1.0, "stream_idle_timeout_s": 0.5, "connect_retries": 0,
        "breaker_failure_threshold": THRESHOLD, "breaker_cooldown_s": COOLDOWN_S,
        "max_models_per_request": 3, "max_upstream_body_bytes": 1_000_000,
        "max_stream_line_bytes": 100_000,
    }  # fmt: skip
    try:
        with pool_gateway(
            tmp_path_factory.mktemp("hostile"), artifact_dir, arc_dataset, upstreams, config
        ) as (gateway, router, _):
            prompts = [
                p
                for p in dict.fromkeys(str(t) for t in arc_dataset.prompts)
                if router.route(p, max_cost=CHEAP_OR_MID).model == MID
            ]
            assert len(prompts) >= 4, "too few prompts route to MID"
            yield gateway, own[MID], prompts
    finally:
        own[MID].stop()


@pytest.fixture
def hostile(setup):
    """Set MID hostile for one test; afterwards calm it and wait until it is back in rotation."""
    gateway, upstream, prompts = setup

    def turn(mode: str) -> None:
        upstream.set_fault(hostile=mode)

    yield turn
    upstream.set_fault()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(COOLDOWN_S / 2)
        response = _post(gateway, prompts[0], stream=False)
        if response.headers.get("x-uniroute-model") == MID:
            return
    raise AssertionError("MID did not come back into rotation after the fault was cleared")


def _post(gateway, prompt: str, *, stream: bool, model: str = POLICY) -> httpx.Response:
    body = chat_body(prompt, model=model, stream=stream)
    return httpx.post(f"{gateway.v1_url}/chat/completions", json=body, timeout=30)


@pytest.mark.parametrize("mode", ["hang", "garbage", "nested_json", "huge", "die", "stall"])
def test_a_hostile_answer_falls_back_to_the_next_model(setup, hostile, mode) -> None:
    gateway, _, prompts = setup
    hostile(mode)
    response = _post(gateway, prompts[0], stream=False)
    assert response.status_code == 200, response.text
    fallback = response.headers["x-uniroute-model"]
    assert fallback != MID and response.headers["x-uniroute-attempts"] == "2"
    assert response.json()["model"] == fallback


@pytest.mark.parametrize("mode", ["hang", "garbage", "nested_json", "huge"])
def test_a_stream_failing_before_its_first_byte_falls_back(setup, hostile, mode) -> None:
    gateway, _, prompts = setup
    hostile(mode)
    response = _post(gateway, prompts[0], stream=True)
    assert response.status_code == 200, response.text
    assert response.headers["x-uniroute-model"] != MID
    events = sse_events(response.content)
    assert events[-1] == "[DONE]"
    assert all("error" not in e for e in events[:-1])


@pytest.mark.parametrize("mode", ["die", "stall", "no_done"])
def test_broken_streams_end_in_band_and_open_the_breaker(setup, hostile, mode) -> None:
    gateway, _, prompts = setup
    hostile(mode)
    for prompt in prompts[:THRESHOLD]:
        response = _post(gateway, prompt, stream=True)
        assert response.headers["x-uniroute-model"] == MID
        events = sse_events(response.content)
        assert events[0]["choices"][0]["delta"]["content"] == "hi "
        assert events[-1]["error"]["code"] == "upstream_stream_broken", events[-1]
    # The breaker is open: the next request whose first choice is MID goes to CHEAP at once.
    response = _post(gateway, prompts[THRESHOLD], stream=True)
    assert response.headers["x-uniroute-model"] != MID
    assert response.headers["x-uniroute-attempts"] == "1"
    assert sse_events(response.content)[-1] == "[DONE]"


def test_an_upstream_refusal_is_relayed_without_its_key(setup, replays) -> None:
    gateway, _, prompts = setup
    replays[EXPENSIVE].set_fault(hostile="echo_auth")
    try:
        for stream in (False, True):
            response = _post(gateway, prompts[0], stream=stream, model=EXPENSIVE)
            assert response.status_code == 400
            assert UPSTREAM_KEY not in response.text
            error = response.json()["error"]
            assert error["message"].startswith("Bad request. You sent Authorization: Bearer ***")
            assert set(error) == {"message", "type", "param", "code"}
            assert "x-upstream-model" not in response.headers
    finally:
        replays[EXPENSIVE].set_fault()


def test_the_gateway_logged_no_crash(setup) -> None:
    gateway, _, _ = setup
    assert httpx.get(f"{gateway.base_url}/healthz", timeout=5).status_code == 200
    # Every hostile answer was an UpstreamError: nothing unexpected, no traceback, no 500.
    text = gateway.log_text()
    assert "unhandled error" not in text and "unexpected failure" not in text
    assert "Traceback" not in text
    statuses = [
        json.loads(line).get("status") for line in gateway.log_lines() if '"status"' in line
    ]
    assert 500 not in statuses
