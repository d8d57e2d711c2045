"""The admin API and capabilities: declared when a model is added, changed with
``POST /admin/models/{name}/capabilities``, probed when a model is onboarded; bad values are a
400 naming the field, with nothing written.

The gateway and the replay upstreams are served in threads of this process.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from tests.gateway.support import ADMIN_TOKEN, CHEAP, HELD_OUT, TO_ONBOARD, make_registry
from uniroute.gateway.app import create_app
from uniroute.gateway.config import GatewayConfig
from uniroute.testing.harness import recorded_scores, serve_in_thread, wait_for_job
from uniroute.testing.replay import create_replay_app

ADMIN_ENV = "UNIROUTE_TEST_ADMIN_CAPABILITIES_TOKEN"
KEYS_ENV = "UNIROUTE_TEST_ADMIN_CAPABILITIES_CLIENT_KEYS"
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, artifact_dir, arc_dataset):
    """(gateway URL, the onboardee's endpoint, the gateway's Router, scores of HELD_OUT, CHEAP's
    endpoint) over a pool of CHEAP (no capability declared)."""
    with ExitStack() as stack:
        cheap = stack.enter_context(serve_in_thread(create_replay_app(arc_dataset, CHEAP)))
        onboardee = stack.enter_context(
            serve_in_thread(
                create_replay_app(arc_dataset, TO_ONBOARD, capabilities=["tools", "json"])
            )
        )
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.setenv(ADMIN_ENV, ADMIN_TOKEN)
        patch.delenv(KEYS_ENV, raising=False)
        router = make_registry(
            artifact_dir, tmp_path_factory.mktemp("admin-capabilities") / "registry.db",
            arc_dataset, {CHEAP: f"{cheap}/v1"}, calibrate=False,
        )  # fmt: skip
        config = GatewayConfig(
            admin_token_env=ADMIN_ENV, client_keys_env=KEYS_ENV, registry_poll_s=0.1
        )
        url = stack.enter_context(serve_in_thread(create_app(router, config)))
        scores = recorded_scores(arc_dataset, HELD_OUT, router.artifact.prompt_ids)
        yield url, f"{onboardee}/v1", router, scores, f"{cheap}/v1"


def _post(url: str, path: str, body: Any) -> httpx.Response:
    return httpx.post(f"{url}/admin{path}", json=body, headers=AUTH, timeout=60)


def _models(url: str) -> dict[str, dict[str, Any]]:
    listed = httpx.get(f"{url}/admin/models", headers=AUTH, timeout=30).json()["models"]
    return {model["name"]: model for model in listed}


@pytest.mark.parametrize(
    "fields, param, words",
    [
        ({"capabilities": "tools"}, "capabilities", "must be a list of names"),
        ({"capabilities": ["tools", "telepathy"]}, "capabilities", "unknown capability"),
        ({"capabilities": [1]}, "capabilities", "must be a list of names"),
        ({"context_window": 0}, "context_window", "whole number of tokens"),
        ({"context_window": "8k"}, "context_window", "whole number of tokens"),
        ({"context_window": True}, "context_window", "whole number of tokens"),
        ({"context_window": 2.5}, "context_window", "whole number of tokens"),
        ({"max_output_tokens": -1}, "max_output_tokens", "whole number of tokens"),
        ({"max_output_tokens": 10**12}, "max_output_tokens", "whole number of tokens"),
    ],
)
def test_bad_capability_fields_are_a_400_naming_the_field(setup, fields, param, words) -> None:
    url, _, router, scores, _ = setup
    version = router.registry.pool_version()
    response = _post(url, "/models", {"name": HELD_OUT, "cost": 0.001, "scores": scores, **fields})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"]
    response = _post(url, f"/models/{CHEAP}/capabilities", fields)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert router.registry.pool_version() == version
    assert not router.registry.has_model(HELD_OUT)


def test_capabilities_declared_when_added_and_changed_later(setup) -> None:
    url, _, router, scores, upstream = setup
    body = {
        "name": HELD_OUT, "cost": 0.00005, "scores": scores, "replace": True,
        "endpoint": upstream,
        "capabilities": ["tools", "json", "tools"], "context_window": 4096.0,
        "max_output_tokens": 512,
    }  # fmt: skip
    response = _post(url, "/models", body)
    assert response.status_code == 201, response.text
    model = response.json()["model"]
    assert model["capabilities"] == ["json", "tools"]
    assert model["context_window"] == 4096 and model["max_output_tokens"] == 512
    assert _models(url)[HELD_OUT]["capabilities"] == ["json", "tools"]
    capabilities = router.snapshot.pool.capabilities_of(HELD_OUT)
    assert capabilities.names == {"json", "tools"} and capabilities.context_window == 4096

    version = router.registry.pool_version()
    response = _post(url, f"/models/{HELD_OUT}/capabilities", {"capabilities": ["vision"]})
    assert response.status_code == 200, response.text
    model = response.json()["model"]
    assert model["capabilities"] == ["vision"] and model["context_window"] == 4096
    assert router.registry.pool_version() > version
    response = _post(url, f"/models/{HELD_OUT}/capabilities", {"context_window": None})
    assert response.json()["model"]["context_window"] is None
    assert response.json()["model"]["capabilities"] == ["vision"]
    assert router.snapshot.pool.capabilities_of(HELD_OUT).context_window is None
    # No model declares tools now: a tool request is refused, saying how to declare one.
    routed = httpx.post(
        f"{url}/v1/route", json={"prompt": "weather?", "tools": [WEATHER]}, timeout=30
    )
    assert routed.status_code == 400 and routed.json()["error"]["code"] == "no_capable_model"
    assert "--capabilities" in routed.json()["error"]["message"]
    # It is routed on at once: an image request only reaches HELD_OUT now.
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "what?"}, image]}]
    routed = httpx.post(f"{url}/v1/route", json={"messages": messages}, timeout=30)
    assert routed.json()["model"] == HELD_OUT and routed.json()["not_capable"] == [CHEAP]
    response = _post(url, f"/models/{HELD_OUT}/capabilities", {"capabilities": ["tools"]})
    routed = httpx.post(
        f"{url}/v1/route", json={"prompt": "weather?", "tools": [WEATHER]}, timeout=30
    )
    assert routed.status_code == 200
    assert routed.json()["required"]["capabilities"] == ["tools"]
    assert routed.json()["not_capable"] == [CHEAP]


def test_the_capabilities_route_refuses_what_it_cannot_use(setup) -> None:
    url, _, router, _, _ = setup
    empty = _post(url, f"/models/{CHEAP}/capabilities", {})
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "missing_field"
    unknown = _post(url, f"/models/{CHEAP}/capabilities", {"tools": True})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_field"
    missing = _post(url, "/models/no-such-model/capabilities", {"capabilities": []})
    assert missing.status_code == 404
    no_token = httpx.post(
        f"{url}/admin/models/{CHEAP}/capabilities", json={"capabilities": []}, timeout=30
    )
    assert no_token.status_code == 401


def test_onboarding_probes_unless_capabilities_are_declared(setup) -> None:
    url, endpoint, router, _, _ = setup
    body = {"name": TO_ONBOARD, "endpoint": endpoint, "onboard": True, "cost": 0.001}
    started = _post(url, "/models", body)
    assert started.status_code == 202, started.text
    job = wait_for_job(url, started.json()["poll"], AUTH, timeout=120)
    assert job["status"] == "succeeded", job
    assert _models(url)[TO_ONBOARD]["capabilities"] == ["json", "tools"]

    declared = {**body, "replace": True, "capabilities": ["vision"]}
    started = _post(url, "/models", declared)
    job = wait_for_job(url, started.json()["poll"], AUTH, timeout=120)
    assert job["status"] == "succeeded", job
    assert _models(url)[TO_ONBOARD]["capabilities"] == ["vision"]
    assert router.snapshot.pool.capabilities_of(TO_ONBOARD).names == {"vision"}
