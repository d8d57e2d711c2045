"""Bodies reach the upstream as the client sent them; refused pool changes keep their status.

The gateway and a recording replay upstream are served in threads of this process, so the test
sees the exact body the upstream received and can make the registry fail on purpose.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.gateway.support import ADMIN_TOKEN, CHEAP, COSTS, chat_body, make_registry
from uniroute.deployment import pool_changes
from uniroute.errors import StateError
from uniroute.gateway.app import create_app
from uniroute.gateway.config import GatewayConfig
from uniroute.registry import Registry
from uniroute.testing.harness import recorded_scores, serve_in_thread, sse_events
from uniroute.testing.replay import create_replay_app

ADMIN_TOKEN_ENV = "UNIROUTE_TEST_FORWARDING_ADMIN_TOKEN"
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}


class RecordingUpstream:
    """ASGI wrapper keeping the parsed JSON body of every POST, then letting the app answer."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bodies: list[Any] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Record the body, then hand the request, body included, to the wrapped app."""
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        self.bodies.append(json.loads(body))
        replayed = False

        async def receive_again() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, receive_again, send)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, artifact_dir, arc_dataset):
    """(gateway URL, the upstream recorder, the gateway's Router) over a one-model pool."""
    upstream = RecordingUpstream(create_replay_app(arc_dataset, CHEAP))
    with serve_in_thread(upstream) as upstream_url, pytest.MonkeyPatch.context() as patch:
        patch.setenv(ADMIN_TOKEN_ENV, ADMIN_TOKEN)
        router = make_registry(
            artifact_dir, tmp_path_factory.mktemp("forwarding") / "registry.db", arc_dataset,
            {CHEAP: f"{upstream_url}/v1"}, calibrate=False,
        )  # fmt: skip
        # The bodies sent here use tools, images and JSON mode: the model says it can.
        pool_changes.set_capabilities(router, CHEAP, capabilities=("json", "tools", "vision"))
        app = create_app(router, GatewayConfig(admin_token_env=ADMIN_TOKEN_ENV))
        with serve_in_thread(app) as gateway_url:
            yield gateway_url, upstream, router


def _post(url: str, body: dict, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, json=body, timeout=30, **kwargs)


EXTRA_FIELDS = {
    "temperature": 0.25,
    "top_p": 1,
    "seed": 12345678901234567890,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "response_format": {"type": "text"},
    "metadata": {"nested": [1, 2.5, None, True, "ünïcode"]},
    "x_vendor_field": "kept as sent",
}


@pytest.mark.parametrize("model", ["uniroute", CHEAP])
def test_an_openai_body_with_extra_fields_is_forwarded_unchanged(setup, unique_prompts, model):
    gateway_url, upstream, _ = setup
    body = chat_body(unique_prompts[0], model=model, **EXTRA_FIELDS)
    response = _post(f"{gateway_url}/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    received = upstream.bodies[-1]
    # The client's object itself (same fields, values and order), only the model set upstream;
    # nothing the request models know is added (no "stream": false), nothing unknown dropped.
    assert received == {**body, "model": CHEAP}
    assert list(received) == list(body)
    assert "stream" not in received


def test_a_streamed_completion_body_is_forwarded_unchanged(setup, unique_prompts):
    gateway_url, upstream, _ = setup
    # The prompt is routed as one string, but forwarded as the one-element list it was sent as.
    body = {
        "model": "uniroute",
        "prompt": [unique_prompts[1]],
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": None,
        **EXTRA_FIELDS,
    }
    response = _post(f"{gateway_url}/v1/completions", body)
    assert response.status_code == 200, response.text
    assert upstream.bodies[-1] == {**body, "model": CHEAP}
    events = sse_events(response.content)
    assert events[-1] == "[DONE]" and events[-2]["usage"]["total_tokens"] > 0


def test_a_model_added_by_another_process_in_the_meantime_is_a_409(setup, arc_dataset, monkeypatch):
    gateway_url, _, router = setup
    before = router.registry.get_model(CHEAP)
    # The pre-check passes, as if another process added the model between it and the write.
    monkeypatch.setattr(router.registry, "has_model", lambda name: False)
    scores = recorded_scores(arc_dataset, CHEAP, router.artifact.prompt_ids)
    response = _post(
        f"{gateway_url}/admin/models",
        {"name": CHEAP, "cost": COSTS[CHEAP] * 2, "scores": scores},
        headers=AUTH,
    )
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "model_exists"
    assert CHEAP in response.json()["error"]["message"]
    with Registry(router.registry.path) as registry:
        assert registry.get_model(CHEAP) == before


def test_a_registry_that_cannot_be_written_is_a_503(setup, monkeypatch):
    gateway_url, _, router = setup

    def locked(*args: Any, **kwargs: Any) -> None:
        raise StateError(f"registry {router.registry.path} is locked by another process")

    monkeypatch.setattr(router.registry, "set_enabled", locked)
    response = _post(f"{gateway_url}/admin/models/{CHEAP}/disable", {}, headers=AUTH)
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("api_error", "state_unavailable")
    assert "locked" in error["message"]
    assert router.snapshot.pool.servable == (CHEAP,)
