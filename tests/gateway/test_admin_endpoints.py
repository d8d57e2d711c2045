"""The admin API and endpoints: a malformed endpoint or one outside ``upstream_allowlist`` is a
400 with nothing written, and a bad endpoint stored by an older version never stops the gateway.

The gateway and a replay upstream are served in threads of this process.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
import pytest

from tests.gateway.support import ADMIN_TOKEN, CHEAP, HELD_OUT, chat_body, make_registry
from uniroute.deployment import Router
from uniroute.errors import ConfigError
from uniroute.gateway.app import create_app
from uniroute.gateway.config import GatewayConfig
from uniroute.testing.harness import recorded_scores, serve_in_thread, wait_until
from uniroute.testing.replay import create_replay_app

ADMIN_TOKEN_ENV = "UNIROUTE_TEST_ENDPOINTS_ADMIN_TOKEN"
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
#: Loopback, and one link-local address named explicitly (an ECS task metadata address).
ALLOWLIST = ("127.0.0.0/8", "::1", "169.254.170.2")
LEGACY = "legacy/bad-endpoint"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, artifact_dir, arc_dataset):
    """(gateway URL, upstream URL, the gateway's Router, scores of HELD_OUT) over a pool of
    CHEAP, served by a replay upstream, behind ALLOWLIST."""
    upstream = create_replay_app(arc_dataset, CHEAP)
    with serve_in_thread(upstream) as upstream_url, pytest.MonkeyPatch.context() as patch:
        patch.setenv(ADMIN_TOKEN_ENV, ADMIN_TOKEN)
        router = make_registry(
            artifact_dir, tmp_path_factory.mktemp("endpoints") / "registry.db", arc_dataset,
            {CHEAP: f"{upstream_url}/v1"}, calibrate=False,
        )  # fmt: skip
        config = GatewayConfig(
            admin_token_env=ADMIN_TOKEN_ENV, registry_poll_s=0.1, upstream_allowlist=ALLOWLIST
        )
        app = create_app(router, config)
        assert app.state.gateway.endpoint_policy.allowlist == ALLOWLIST
        scores = recorded_scores(arc_dataset, HELD_OUT, router.artifact.prompt_ids)
        with serve_in_thread(app) as gateway_url:
            yield gateway_url, upstream_url, router, scores


def _add(gateway_url: str, **body: Any) -> httpx.Response:
    payload = {"name": HELD_OUT, "cost": 0.00005, **body}
    return httpx.post(f"{gateway_url}/admin/models", json=payload, headers=AUTH, timeout=30)


def _unchanged(router: Router, version: int, gateway_url: str) -> None:
    """Nothing was written, and the gateway is still ready."""
    assert router.registry.pool_version() == version
    assert not router.registry.has_model(HELD_OUT)
    assert httpx.get(f"{gateway_url}/readyz", timeout=10).status_code == 200


@pytest.mark.parametrize(
    "endpoint, problem",
    [
        ("http://127.0.0.1:abc/v1", "port 'abc' is not a number"),
        ("http://127.0.0.1:99999/v1", "port 99999 is out of range 1-65535"),
        ("http://127.0.0.1:8000/v1#/admin", "it has a fragment"),
        ("http://127.0.0.1:8000/v1?x=/admin", "it has a query"),
        ("http://2852039166/v1", "is neither a DNS name nor a dotted-decimal IPv4"),
        ("http://[fe80::1%25eth0]/v1", "IPv6 zone id"),
    ],
)
@pytest.mark.parametrize("onboard", [False, True], ids=["scores", "onboard"])
def test_a_bad_endpoint_is_a_400_naming_the_field_and_nothing_is_written(
    setup, endpoint, problem, onboard
) -> None:
    gateway_url, _, router, scores = setup
    version = router.registry.pool_version()
    body: dict[str, Any] = {"onboard": True} if onboard else {"scores": scores}
    response = _add(gateway_url, endpoint=endpoint, **body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (
        "endpoint", "invalid_request", "invalid_request_error",
    )  # fmt: skip
    assert problem in error["message"]
    _unchanged(router, version, gateway_url)


@pytest.mark.parametrize(
    "endpoint, reason",
    [
        ("http://10.1.2.3:8000/v1", "not in upstream_allowlist"),
        ("http://localhost:8000/v1", "not in upstream_allowlist"),  # network entries: IPs only
        ("http://169.254.169.254/v1", "cloud metadata address"),
        ("http://[::ffff:169.254.169.254]/v1", "it carries 169.254.169.254"),
        ("http://[fe80::1]:8000/v1", "link-local address"),
        ("http://metadata.google.internal/v1", "cloud metadata service"),
    ],
)
@pytest.mark.parametrize("onboard", [False, True], ids=["scores", "onboard"])
def test_an_endpoint_the_allowlist_refuses_is_a_400_and_no_job_starts(
    setup, endpoint, reason, onboard
) -> None:
    gateway_url, _, router, scores = setup
    version = router.registry.pool_version()
    body: dict[str, Any] = {"onboard": True} if onboard else {"scores": scores}
    response = _add(gateway_url, endpoint=endpoint, **body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("endpoint", "endpoint_not_allowed")
    assert reason in error["message"] and f"model {HELD_OUT!r}" in error["message"]
    jobs = httpx.get(f"{gateway_url}/admin/jobs", headers=AUTH, timeout=10).json()["jobs"]
    assert jobs == []
    _unchanged(router, version, gateway_url)


def test_an_address_the_allowlist_names_explicitly_is_accepted(setup) -> None:
    gateway_url, _, router, scores = setup
    response = _add(gateway_url, endpoint="http://169.254.170.2/v1", scores=scores)
    assert response.status_code == 201, response.text
    assert response.json()["model"]["endpoint"] == "http://169.254.170.2/v1"
    removed = httpx.delete(f"{gateway_url}/admin/models/{HELD_OUT}", headers=AUTH, timeout=10)
    assert removed.status_code == 200 and not router.registry.has_model(HELD_OUT)


def test_score_rows_may_carry_answers_that_reach_the_registry_and_the_pool(
    setup, arc_dataset
) -> None:
    from uniroute.data.routerbench import responses_by_prompt

    gateway_url, _, router, scores = setup
    responses = responses_by_prompt(arc_dataset)[HELD_OUT]
    rows = [{"prompt_id": p, "score": s, "answer": responses.get(p)} for p, s in scores.items()]
    response = _add(gateway_url, scores=rows)
    assert response.status_code == 201, response.text
    stored = router.registry.get_answers(HELD_OUT)
    given = {p: responses[p] for p in scores if responses.get(p) is not None}
    assert {p: a.raw for p, a in stored.items()} == given
    assert response.json()["answers"] == len(given) > 0
    assert response.json()["answer_keys"] == sum(a.key is not None for a in stored.values())
    router.refresh()
    pool = router.snapshot.pool
    assert pool.answers is not None
    column = pool.answers[:, pool.index(HELD_OUT)].tolist()
    assert column.count(None) == len(column) - response.json()["answer_keys"]
    removed = httpx.delete(f"{gateway_url}/admin/models/{HELD_OUT}", headers=AUTH, timeout=10)
    assert removed.status_code == 200 and not router.registry.has_model(HELD_OUT)


def test_a_bad_allowlist_entry_stops_the_gateway_from_being_built(setup) -> None:
    _, _, router, _ = setup
    with pytest.raises(ConfigError, match="upstream_allowlist entry '10.0.0.1/8'"):
        create_app(router, GatewayConfig(upstream_allowlist=("10.0.0.0/8", "10.0.0.1/8")))


def _insert_legacy_row(router: Router, endpoint: str) -> None:
    """A model row as an older, laxer version could have written it: straight into the file."""
    with sqlite3.connect(router.registry.path) as connection:
        connection.execute(
            "INSERT INTO models (name, cost_per_query, expected_output_tokens, endpoint,"
            " api_key_env, tags, enabled, revision, created_at, updated_at)"
            " VALUES (?, 0.00001, 256, ?, NULL, '[]', 1, 999,"
            " '2024-01-01T00:00:00+00:00', '2024-01-01T00:00:00+00:00')",
            (LEGACY, endpoint),
        )
        connection.execute(
            "INSERT INTO scores (model, prompt_id, score)"
            " SELECT ?, prompt_id, score FROM scores WHERE model = ?",
            (LEGACY, CHEAP),
        )
        connection.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'pool_version'"
        )


def test_a_bad_row_stored_by_an_older_version_leaves_the_gateway_serving(
    setup, unique_prompts
) -> None:
    gateway_url, upstream_url, router, scores = setup
    _insert_legacy_row(router, "http://127.0.0.1:abc/v1")

    def listed() -> dict[str, Any] | None:
        models = httpx.get(f"{gateway_url}/admin/models", headers=AUTH, timeout=10).json()
        return {m["name"]: m for m in models["models"]}.get(LEGACY)

    legacy = wait_until(listed, 10, "the gateway did not read the new row")
    assert legacy["servable"] is False and "port 'abc' is not a number" in legacy["problem"]
    # Ten times cheaper than CHEAP, yet never sent a request: it has no usable endpoint.
    ready = httpx.get(f"{gateway_url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["pool_version"] == router.registry.pool_version()
    pool = httpx.get(f"{gateway_url}/admin/pool", headers=AUTH, timeout=10).json()
    assert "port 'abc'" in pool["not_served"][LEGACY] and pool["servable_models"] == [CHEAP]
    for prompt in unique_prompts[:3]:
        answer = httpx.post(f"{gateway_url}/v1/chat/completions", json=chat_body(prompt),
                            timeout=30)  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-uniroute-model"] == CHEAP
    # Admin writes still work, and a new server over the same file starts.
    added = _add(gateway_url, endpoint=f"{upstream_url}/v1", scores=scores)
    assert added.status_code == 201, added.text
    assert LEGACY in Router.load(router.artifact, router.registry.path).snapshot.problems
    for name in (LEGACY, HELD_OUT):
        removed = httpx.delete(f"{gateway_url}/admin/models/{name}", headers=AUTH, timeout=10)
        assert removed.status_code == 200, removed.text


def test_the_gateway_never_calls_a_host_its_allowlist_refuses(artifact_dir, arc_dataset, tmp_path):
    # A registry written by a process without this allow-list: its endpoint is on loopback.
    with serve_in_thread(create_replay_app(arc_dataset, CHEAP)) as upstream_url:
        router = make_registry(
            artifact_dir, tmp_path / "registry.db", arc_dataset, {CHEAP: f"{upstream_url}/v1"},
            calibrate=False,
        )  # fmt: skip
        app = create_app(router, GatewayConfig(upstream_allowlist=("10.0.0.0/8",)))
        with serve_in_thread(app) as gateway_url:
            for model in ("uniroute", CHEAP):
                response = httpx.post(
                    f"{gateway_url}/v1/chat/completions", json=chat_body("Hi?", model=model)
                )
                assert response.status_code == 502, response.text
                message = response.json()["error"]["message"]
                assert "may not be called" in message and "allow" in message
