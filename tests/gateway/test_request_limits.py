"""No request body can make the gateway answer 500: every hostile body is a 4xx naming the problem.

The gateway and a replay upstream are served in threads of this process. Bodies are sent as raw
bytes, since some of them (a lone surrogate, NaN) are what a careless client library produces
but a strict one refuses to encode.
"""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.support import ADMIN_TOKEN, CHEAP, make_registry
from uniroute.deployment import pool_changes
from uniroute.gateway.app import create_app
from uniroute.gateway.config import GatewayConfig
from uniroute.testing.harness import serve_in_thread
from uniroute.testing.replay import create_replay_app

ADMIN_TOKEN_ENV = "UNIROUTE_TEST_LIMITS_ADMIN_TOKEN"
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json"}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory, artifact_dir, arc_dataset):
    """The URL of a gateway over a one-model pool (CHEAP, replayed)."""
    with (
        serve_in_thread(create_replay_app(arc_dataset, CHEAP)) as upstream_url,
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setenv(ADMIN_TOKEN_ENV, ADMIN_TOKEN)
        router = make_registry(
            artifact_dir, tmp_path_factory.mktemp("limits") / "registry.db", arc_dataset,
            {CHEAP: f"{upstream_url}/v1"}, calibrate=False,
        )  # fmt: skip
        # The bodies sent here use tools, images and JSON mode: the model says it can.
        pool_changes.set_capabilities(router, CHEAP, capabilities=("json", "tools", "vision"))
        config = GatewayConfig(admin_token_env=ADMIN_TOKEN_ENV, max_body_bytes=200_000)
        with serve_in_thread(create_app(router, config)) as url:
            yield url


def _chat(content: bytes = b'"What is 2+2?"', extra: bytes = b"", stream: bool = False) -> bytes:
    flag = b"true" if stream else b"false"
    return (
        b'{"model":"uniroute","stream":' + flag + b',"messages":[{"role":"user","content":'
        + content + b"}]" + extra + b"}"
    )  # fmt: skip


DEEP = b"[" * 1000 + b"]" * 1000
HOSTILE_BODIES = {
    "nested content": (_chat(DEEP), "nested deeper than 64"),
    "nested extra field": (_chat(extra=b',"metadata":' + DEEP), "nested deeper than 64"),
    "nested just past the limit": (
        _chat(extra=b',"m":' + b"[" * 64 + b"]" * 64),
        "nested deeper than 64",
    ),
    "4301-digit integer": (_chat(extra=b',"seed":' + b"7" * 4301), "number of 4301 characters"),
    "huge float": (_chat(extra=b',"temperature":1e999'), "too big for a 64-bit float"),
    "NaN": (_chat(extra=b',"temperature":NaN'), "NaN"),
    "Infinity": (_chat(extra=b',"top_p":-Infinity'), "-Infinity"),
    "lone surrogate in content": (_chat(b'"\\ud800"'), "lone UTF-16 surrogate"),
    "lone surrogate in user": (_chat(extra=b',"user":"x\\udfff"'), "lone UTF-16 surrogate"),
    "lone surrogate streamed": (_chat(b'"hi \\ud800"', stream=True), "lone UTF-16 surrogate"),
    "not UTF-8": (_chat(b'"\xff\xfe"'), "not UTF-8"),
    "surrogate encoded as UTF-8 bytes": (_chat(b'"hi \xed\xa0\x80"'), "not UTF-8"),
    "UTF-16 body": (_chat().decode().encode("utf-16"), "not UTF-8"),
}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/route"])
@pytest.mark.parametrize("case", sorted(HOSTILE_BODIES))
def test_a_hostile_body_is_a_400_naming_the_problem(gateway_url, path, case) -> None:
    raw, message = HOSTILE_BODIES[case]
    response = httpx.post(f"{gateway_url}{path}", content=raw, headers=JSON, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_json" and message in error["message"]


def test_a_hostile_admin_body_is_a_400(gateway_url) -> None:
    raw = b'{"name":"m","cost":1,"scores":' + DEEP + b"}"
    response = httpx.post(f"{gateway_url}/admin/models", content=raw, headers=AUTH, timeout=30)
    assert response.status_code == 400, response.text
    assert "nested deeper" in response.json()["error"]["message"]


def test_a_valid_surrogate_pair_is_accepted(gateway_url) -> None:
    raw = _chat(b'"What is 2+2? \\ud83d\\ude00"')
    response = httpx.post(f"{gateway_url}/v1/chat/completions", content=raw, headers=JSON)
    assert response.status_code == 200, response.text


def test_stream_null_is_not_streamed(gateway_url) -> None:
    raw = _chat().replace(b'"stream":false', b'"stream":null')
    response = httpx.post(f"{gateway_url}/v1/chat/completions", content=raw, headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "chat.completion"


def test_an_image_only_user_message_is_routed_on_the_conversation(gateway_url) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    body = {
        "model": "uniroute",
        "messages": [
            {"role": "system", "content": "Describe pictures of chemistry experiments."},
            {"role": "user", "content": [image]},
        ],
    }
    for path in ("/v1/chat/completions", "/v1/route"):
        response = httpx.post(f"{gateway_url}{path}", json=body, timeout=30)
        assert response.status_code == 200, response.text
