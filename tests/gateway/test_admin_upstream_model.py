"""A pool model whose endpoint knows it by another name: the gateway sends that name upstream.

The upstream is the replay server for claude-instant-v1 behind a check that, like an
OpenAI-compatible server started with its own served model name, answers 404 to any request
naming another model. The pool calls the model ``acme/chat-small``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.responses import JSONResponse

from tests.gateway.support import ADMIN_TOKEN, COSTS, HELD_OUT, POOL, chat_body, pool_gateway
from uniroute.onboarding.probes import PROBED_CAPABILITIES
from uniroute.registry import Registry
from uniroute.testing.harness import recorded_scores, serve_in_thread, sse_events, wait_for_job
from uniroute.testing.replay import create_replay_app, recorded_answers

SERVED_NAME = HELD_OUT
POOL_NAME = "acme/chat-small"
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}


class ServedNameCheck:
    """ASGI wrapper: records the ``model`` of every POST and refuses all but one name with 404."""

    def __init__(self, app: Any, served_name: str) -> None:
        self.app = app
        self.served_name = served_name
        self.requested: list[str | None] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Check the requested model, then hand the request, body included, to the replay."""
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
        try:
            requested = json.loads(body).get("model")
        except (ValueError, AttributeError):
            requested = None
        self.requested.append(requested)
        if requested != self.served_name:
            error = {
                "message": f"The model {requested!r} does not exist",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
            await JSONResponse({"error": error}, status_code=404)(scope, receive, send)
            return
        replayed = False

        async def receive_again() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, receive_again, send)


@pytest.fixture(scope="module")
def upstream(arc_dataset):
    """The checking replay upstream, served on loopback; yields (checker, its /v1 URL)."""
    checker = ServedNameCheck(create_replay_app(arc_dataset, SERVED_NAME), SERVED_NAME)
    with serve_in_thread(checker) as base_url:
        yield checker, f"{base_url}/v1"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, artifact_dir, arc_dataset, replays):
    """A gateway with the admin API on, over the registry of the shared test pool."""
    folder = tmp_path_factory.mktemp("upstream-model")
    with pool_gateway(
        folder, artifact_dir, arc_dataset, replays,
        config={"registry_poll_s": 0.2},
        env={"UNIROUTE_ADMIN_TOKEN": ADMIN_TOKEN},
    ) as (gateway, router, registry):  # fmt: skip
        yield gateway, router, registry


@pytest.fixture(scope="module")
def answers(arc_dataset) -> dict[str, str]:
    """The served model's recorded answer to each ARC prompt."""
    return recorded_answers(arc_dataset, SERVED_NAME)


def _admin(gateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method, f"{gateway.base_url}/admin{path}", headers=AUTH, timeout=30, **kwargs
    )


def _chat(gateway, prompt: str, model: str, *, stream: bool = False) -> httpx.Response:
    body = chat_body(prompt, model=model, stream=stream)
    return httpx.post(f"{gateway.v1_url}/chat/completions", json=body, timeout=30)


def _streamed_text(response: httpx.Response) -> tuple[set[str], str]:
    """The ``model`` fields and the concatenated content of a streamed chat answer."""
    events = [e for e in sse_events(response.content) if e != "[DONE]"]
    text = "".join(
        choice["delta"].get("content") or "" for e in events for choice in e.get("choices", [])
    )
    return {e["model"] for e in events}, text


def test_added_model_is_called_by_its_upstream_name_and_answers_as_its_pool_name(
    setup, upstream, arc_dataset, answers
):
    gateway, router, registry = setup
    checker, v1_url = upstream
    # Half the cheapest model's price, so a max-cost below all the others' routes to it alone.
    cost = min(COSTS.values()) / 2
    response = _admin(gateway, "POST", "/models", json={
        "name": POOL_NAME, "cost": cost, "endpoint": v1_url, "upstream_model": SERVED_NAME,
        "scores": recorded_scores(arc_dataset, SERVED_NAME, router.artifact.prompt_ids),
    })  # fmt: skip
    assert response.status_code == 201, response.text
    assert response.json()["model"]["upstream_model"] == SERVED_NAME
    assert response.json()["servable"] is True
    listed = {m["name"]: m for m in _admin(gateway, "GET", "/models").json()["models"]}
    assert listed[POOL_NAME]["upstream_model"] == SERVED_NAME
    assert all(listed[model]["upstream_model"] is None for model in POOL)

    prompt, answer = next(iter(answers.items()))
    checker.requested.clear()
    named = _chat(gateway, prompt, POOL_NAME)
    assert named.status_code == 200, named.text
    assert named.headers["x-uniroute-model"] == POOL_NAME
    assert named.json()["model"] == POOL_NAME
    assert named.json()["choices"][0]["message"]["content"] == answer

    streamed = _chat(gateway, prompt, POOL_NAME, stream=True)
    assert streamed.status_code == 200 and streamed.headers["x-uniroute-model"] == POOL_NAME
    models, text = _streamed_text(streamed)
    assert models == {POOL_NAME} and text.strip() == answer.strip()

    routed = _chat(gateway, prompt, f"uniroute:max-cost={cost * 1.5}")
    assert routed.status_code == 200, routed.text
    assert routed.headers["x-uniroute-model"] == POOL_NAME
    assert routed.json()["model"] == POOL_NAME
    # Every request reached the upstream under the name it serves, never the pool name.
    assert checker.requested == [SERVED_NAME] * 3
    with Registry(registry) as reopened:
        assert reopened.get_model(POOL_NAME).upstream_model == SERVED_NAME


def test_without_the_upstream_name_the_endpoint_refuses_and_the_error_says_why(
    setup, upstream, arc_dataset, answers
):
    gateway, router, _ = setup
    checker, v1_url = upstream
    name = "acme/misnamed"
    response = _admin(gateway, "POST", "/models", json={
        "name": name, "cost": 0.001, "endpoint": v1_url,
        "scores": recorded_scores(arc_dataset, SERVED_NAME, router.artifact.prompt_ids),
    })  # fmt: skip
    assert response.status_code == 201, response.text
    try:
        checker.requested.clear()
        refused = _chat(gateway, next(iter(answers)), name)
        assert checker.requested == [name]
        assert refused.status_code == 502
        error = refused.json()["error"]
        assert error["code"] == "upstream_failed"
        assert f"HTTP 404 from {name!r}" in error["message"]
        assert "register that name as the model's upstream_model" in error["message"]
    finally:
        assert _admin(gateway, "DELETE", f"/models/{name}").status_code == 200


def test_onboarding_job_asks_the_endpoint_by_its_upstream_name(setup, upstream):
    gateway, router, registry = setup
    checker, v1_url = upstream
    name = "acme/onboarded"
    n_prompts = len(router.artifact.prompt_ids)
    checker.requested.clear()
    response = _admin(gateway, "POST", "/models", json={
        "name": name, "cost": 0.002, "endpoint": v1_url, "upstream_model": SERVED_NAME,
        "onboard": True, "onboarding": {"concurrency": 8, "timeout": 10},
    })  # fmt: skip
    assert response.status_code == 202, response.text
    job = wait_for_job(gateway.base_url, response.json()["poll"], AUTH, timeout=60)
    assert job["status"] == "succeeded", job
    assert job["result"]["model"]["upstream_model"] == SERVED_NAME
    # The pool name was never sent: the endpoint would have refused it.
    assert checker.requested == [SERVED_NAME] * (n_prompts + len(PROBED_CAPABILITIES))
    with Registry(registry) as reopened:
        assert reopened.get_model(name).upstream_model == SERVED_NAME
        assert len(reopened.get_scores(name)) == job["result"]["scores"]


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        ({"upstream_model": SERVED_NAME}, "invalid_request", "give the endpoint too"),
        (
            {"upstream_model": " padded", "endpoint": "http://127.0.0.1:9/v1"},
            "invalid_request",
            "upstream model name must be a non-empty string",
        ),
        ({"upstream_model": 7, "endpoint": "http://127.0.0.1:9/v1"}, "invalid_type", "non-empty"),
    ],
)
def test_bad_upstream_model_fields_are_refused(setup, extra, code, message):
    gateway, _, registry = setup
    body = {"name": "acme/bad", "cost": 0.001, "scores": {"x": 1}, **extra}
    response = _admin(gateway, "POST", "/models", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code
    assert message in response.json()["error"]["message"]
    with Registry(registry) as reopened:
        assert not reopened.has_model("acme/bad")
