"""Capabilities end to end: the official ``openai`` client against a live gateway on loopback,
in front of replay upstreams that can (or cannot) do tools, images and JSON mode.

The gateway and the upstreams are served in threads of this process. A replay refuses (400)
what its model cannot do, and counts every request, so "never reaches" is checked at the
upstream itself, not only in the answer's ``x-uniroute-model``: a refusal followed by a
fallback would otherwise go unseen.

The pool: CHEAP reads images but has a small context window (2,000 tokens); MID does tools and
JSON mode (8,000 tokens); EXPENSIVE does tools and JSON mode (no declared window).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.gateway.support import CHEAP, EXPENSIVE, MID, POOL, make_registry
from uniroute.deployment import Router, pool_changes
from uniroute.gateway.app import create_app
from uniroute.gateway.config import GatewayConfig
from uniroute.testing.harness import serve_in_thread
from uniroute.testing.replay import create_replay_app

CAPABILITIES = {CHEAP: ["vision"], MID: ["tools", "json"], EXPENSIVE: ["tools", "json"]}
WINDOWS = {CHEAP: 2000, MID: 8000, EXPENSIVE: None}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
# Unset in this process, so that a developer's own settings cannot change what the test sees.
KEYS_ENV = "UNIROUTE_TEST_CAPABILITIES_CLIENT_KEYS"
ADMIN_ENV = "UNIROUTE_TEST_CAPABILITIES_ADMIN_TOKEN"


@dataclass
class Live:
    url: str
    upstreams: dict[str, str]
    router: Router

    def requests_seen(self) -> dict[str, int]:
        """How many completion requests each upstream received so far."""
        return {
            model: httpx.get(f"{url}/stats", timeout=10).json()["requests"]
            for model, url in self.upstreams.items()
        }

    def route(self, **body: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/v1/route", json=body, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def live(tmp_path_factory, artifact_dir, arc_dataset) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("capabilities")
    with ExitStack() as stack:
        urls = {
            model: stack.enter_context(
                serve_in_thread(
                    create_replay_app(arc_dataset, model, capabilities=CAPABILITIES[model])
                )
            )
            for model in POOL
        }
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.delenv(KEYS_ENV, raising=False)
        patch.delenv(ADMIN_ENV, raising=False)
        router = make_registry(
            artifact_dir, folder / "registry.db", arc_dataset,
            {model: f"{url}/v1" for model, url in urls.items()}, with_answers=True,
        )  # fmt: skip
        for model in POOL:
            pool_changes.set_capabilities(
                router, model, capabilities=CAPABILITIES[model], context_window=WINDOWS[model]
            )
        config = GatewayConfig(
            client_keys_env=KEYS_ENV, admin_token_env=ADMIN_ENV, registry_poll_s=0.1
        )
        url = stack.enter_context(serve_in_thread(create_app(router, config)))
        yield Live(url, urls, router)


@pytest.fixture(scope="module")
def client(live: Live) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def routed(live: Live, unique_prompts: list[str]) -> dict[str, list[str]]:
    """Prompts by the model the router picks for them when nothing more is needed."""
    by_model: dict[str, list[str]] = {}
    for prompt in unique_prompts[:80]:
        model = live.route(prompt=prompt)["model"]
        by_model.setdefault(model, []).append(prompt)
    assert len(by_model.get(CHEAP, [])) >= 3 and len(by_model.get(MID, [])) >= 3, by_model
    return by_model


def _user(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}]


def test_a_tool_request_never_reaches_a_model_without_tools(live, client, routed) -> None:
    prompts = routed[CHEAP][:5]  # without tools, every one of them goes to CHEAP
    before = live.requests_seen()
    for prompt in prompts:
        raw = client.chat.completions.with_raw_response.create(
            model="uniroute", messages=_user(prompt), tools=[WEATHER]
        )
        assert raw.headers["x-uniroute-model"] in (MID, EXPENSIVE)
        call = raw.parse().choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather"
    after = live.requests_seen()
    assert after[CHEAP] == before[CHEAP]
    assert after[MID] + after[EXPENSIVE] - before[MID] - before[EXPENSIVE] == len(prompts)
    decision = live.route(prompt=prompts[0], tools=[WEATHER])
    assert decision["required"]["capabilities"] == ["tools"]
    assert decision["capability_rule_changed_pick"] is True
    assert decision["unrestricted_model"] == CHEAP and CHEAP in decision["not_capable"]
    assert CHEAP not in decision["servable_ranking"]


def test_an_image_request_goes_only_to_vision_models(live, client, routed) -> None:
    prompts = routed[MID][:3]  # without the image, they go to MID
    before = live.requests_seen()
    for prompt in prompts:
        content = [{"type": "text", "text": prompt}, IMAGE]
        raw = client.chat.completions.with_raw_response.create(
            model="uniroute", messages=[{"role": "user", "content": content}]
        )
        assert raw.headers["x-uniroute-model"] == CHEAP
    after = live.requests_seen()
    assert after[CHEAP] - before[CHEAP] == len(prompts)
    assert after[MID] == before[MID] and after[EXPENSIVE] == before[EXPENSIVE]


def test_a_json_mode_request_goes_only_to_json_models(live, client, routed) -> None:
    prompts = routed[CHEAP][:3]
    before = live.requests_seen()
    for prompt in prompts:
        raw = client.chat.completions.with_raw_response.create(
            model="uniroute",
            messages=_user(f"{prompt}\nAnswer in JSON."),
            response_format={"type": "json_object"},
        )
        assert raw.headers["x-uniroute-model"] in (MID, EXPENSIVE)
        assert isinstance(json.loads(raw.parse().choices[0].message.content), dict)
    assert live.requests_seen()[CHEAP] == before[CHEAP]


def test_a_too_long_prompt_skips_the_small_window_model(live, client, routed) -> None:
    # A prompt repeated past CHEAP's 2,000-token window, for which CHEAP is still the pick
    # when windows are not looked at.
    long_prompt = None
    for prompt in routed[CHEAP]:
        candidate = "\n".join([prompt] * (9000 // len(prompt) + 1))
        decision = live.route(prompt=candidate)
        if decision["unrestricted_model"] == CHEAP:
            long_prompt = candidate
            break
    assert long_prompt is not None, "no long prompt the router would send to CHEAP"
    assert decision["model"] != CHEAP and decision["capability_rule_changed_pick"] is True
    assert decision["required"]["estimated_prompt_tokens"] > WINDOWS[CHEAP]
    before = live.requests_seen()
    raw = client.chat.completions.with_raw_response.create(
        model="uniroute", messages=_user(long_prompt)
    )
    assert raw.headers["x-uniroute-model"] != CHEAP
    assert live.requests_seen()[CHEAP] == before[CHEAP]
    # The answer asked for counts too: a short prompt with max_tokens beyond the window.
    short = routed[CHEAP][0]
    raw = client.chat.completions.with_raw_response.create(
        model="uniroute", messages=_user(short), max_tokens=WINDOWS[CHEAP]
    )
    assert raw.headers["x-uniroute-model"] != CHEAP
    assert live.requests_seen()[CHEAP] == before[CHEAP]


def test_none_capable_is_a_bad_request_naming_the_need_and_the_models(live, client) -> None:
    before = live.requests_seen()
    content = [{"type": "text", "text": "What is the weather where this photo was taken?"}, IMAGE]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="uniroute", messages=[{"role": "user", "content": content}], tools=[WEATHER]
        )
    error = caught.value
    assert error.status_code == 400 and error.code == "no_capable_model"
    message = error.message
    assert "tools" in message and "image input" in message
    assert all(model in message for model in POOL)
    assert live.requests_seen() == before
    # An image with a longer answer than the one vision model has room for, through /v1/route.
    response = httpx.post(
        f"{live.url}/v1/route",
        json={"messages": [{"role": "user", "content": content}], "max_tokens": 5000},
        timeout=30,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "no_capable_model" and error["param"] == "messages"
    assert f"{CHEAP} (context window 2,000 tokens < ~" in error["message"]
    assert f"{MID} (no image input)" in error["message"]


def test_a_named_model_must_be_able_to_take_the_request(live, client) -> None:
    before = live.requests_seen()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=CHEAP, messages=_user("weather?"), tools=[WEATHER])
    assert caught.value.code == "model_not_capable" and "no tools" in caught.value.message
    assert live.requests_seen() == before
    answer = client.chat.completions.create(model=MID, messages=_user("weather?"), tools=[WEATHER])
    assert answer.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_verify_and_escalate_keeps_to_capable_models(live, client, routed) -> None:
    # With answers recorded the pool has verify plans, and some of them ask CHEAP.
    plans = [live.route(model="uniroute:verify", prompt=p)["verify_plan"] for p in routed[CHEAP]]
    assert any(plan and CHEAP in plan["candidates"] for plan in plans), plans
    prompt = next(
        p
        for p, plan in zip(routed[CHEAP], plans, strict=True)
        if plan and CHEAP in plan["candidates"]
    )
    decision = live.route(model="uniroute:verify", prompt=prompt, tools=[WEATHER])
    assert decision["verify_plan"] is None and "cannot take" in decision["verify_unavailable"]
    before = live.requests_seen()
    for prompt in routed[CHEAP][:3]:
        raw = client.chat.completions.with_raw_response.create(
            model="uniroute:verify", messages=_user(prompt), tools=[WEATHER]
        )
        assert raw.headers["x-uniroute-model"] in (MID, EXPENSIVE)
    assert live.requests_seen()[CHEAP] == before[CHEAP]


def test_plain_requests_are_routed_as_before(live, client, routed) -> None:
    prompt = routed[CHEAP][0]
    raw = client.chat.completions.with_raw_response.create(model="uniroute", messages=_user(prompt))
    assert raw.headers["x-uniroute-model"] == CHEAP
    decision = live.route(prompt=prompt)
    assert decision["required"]["capabilities"] == []
    assert decision["not_capable"] == [] and decision["capability_rule_changed_pick"] is False


@pytest.mark.slow
def test_child_processes_replays_with_capabilities_and_uniroute_serve(
    tmp_path, artifact_dir, arc_dataset, arc_file, unique_prompts
) -> None:
    """The same rules with `uniroute serve` and `python -m uniroute.testing.replay
    --capabilities` in child processes."""
    from tests.gateway.support import child_env
    from uniroute.testing.harness import write_config
    from uniroute.testing.process import GatewayProcess
    from uniroute.testing.replay import start_replays

    flags = {model: ["--capabilities", ",".join(CAPABILITIES[model])] for model in POOL}
    servers = start_replays(arc_file, POOL, extra_args=flags, env=child_env())
    try:
        router = make_registry(
            artifact_dir, tmp_path / "registry.db", arc_dataset,
            {model: server.v1_url for model, server in servers.items()},
        )  # fmt: skip
        for model in POOL:
            pool_changes.set_capabilities(
                router, model, capabilities=CAPABILITIES[model], context_window=WINDOWS[model]
            )
        config = write_config(tmp_path / "gateway.json", registry_poll_s=0.2)
        with GatewayProcess(artifact_dir, router.registry.path, config=config,
                            env=child_env()) as gateway:  # fmt: skip
            client = openai.OpenAI(base_url=gateway.v1_url, api_key="x", max_retries=0)
            for prompt in unique_prompts[:10]:
                raw = client.chat.completions.with_raw_response.create(
                    model="uniroute", messages=_user(prompt), tools=[WEATHER]
                )
                assert raw.headers["x-uniroute-model"] in (MID, EXPENSIVE)
            assert servers[CHEAP].stats()["capability_refusals"] == 0
            assert servers[CHEAP].stats()["requests"] == 0
            tool_calls = sum(servers[m].stats()["tool_calls"] for m in (MID, EXPENSIVE))
            assert tool_calls == 10
            content = [{"type": "text", "text": unique_prompts[0]}, IMAGE]
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(
                    model="uniroute", messages=[{"role": "user", "content": content}],
                    tools=[WEATHER],
                )  # fmt: skip
            assert caught.value.code == "no_capable_model"
    finally:
        for server in servers.values():
            server.stop()
