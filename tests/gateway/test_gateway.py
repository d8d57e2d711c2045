"""The gateway end to end: `uniroute serve` in a child process in front of replay upstreams.

Requests go through the official `openai` client (and raw httpx for malformed input); the
upstream hit is checked against the routing decision of a Router loaded in the test process
from the same artifact and registry.
"""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.support import (
    CHEAP,
    CLIENT_KEY,
    COSTS,
    EXPENSIVE,
    MID,
    POOL,
    UPSTREAM_KEY,
    chat_body,
    pool_gateway,
)
from uniroute.registry import Registry
from uniroute.testing.harness import recorded_scores, wait_until
from uniroute.testing.replay import recorded_answers

BODY_LIMIT = 100_000


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, artifact_dir, arc_dataset, replays):
    """A registry of three servable models and a gateway over it (client keys on, admin off)."""
    with pool_gateway(
        tmp_path_factory.mktemp("gateway-e2e"), artifact_dir, arc_dataset, replays,
        config={"max_body_bytes": BODY_LIMIT, "registry_poll_s": 0.2},
        env={"UNIROUTE_CLIENT_KEYS": f"other-key,{CLIENT_KEY}"},
    ) as (gateway, router, _):  # fmt: skip
        yield gateway, router


@pytest.fixture(scope="module")
def client(deployment) -> openai.OpenAI:
    """The official OpenAI client pointed at the gateway."""
    gateway, _ = deployment
    return openai.OpenAI(base_url=gateway.v1_url, api_key=CLIENT_KEY, max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def answers(arc_dataset) -> dict[str, dict[str, str]]:
    """Each pool model's recorded answer by prompt text."""
    return {model: recorded_answers(arc_dataset, model) for model in POOL}


@pytest.fixture(scope="module")
def prompts(unique_prompts, answers) -> list[str]:
    """Distinct real ARC prompts that every pool model answered."""
    return [t for t in unique_prompts if all(t in answers[m] for m in POOL)][:40]


def _headers() -> dict[str, str]:
    return {"authorization": f"Bearer {CLIENT_KEY}"}


def _metric_samples(base_url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_routed_requests_reach_the_routed_upstream(deployment, client, prompts, answers, replays):
    gateway, router = deployment
    chosen = prompts[:24]
    expected = [router.route(p).model for p in chosen]
    # The calibrated policy sends these prompts to more than one model, so the check has teeth.
    assert len(set(expected)) >= 2
    before = {m: replays[m].stats()["chat_completions"] for m in POOL}
    for prompt, model in zip(chosen, expected, strict=True):
        raw = client.chat.completions.with_raw_response.create(
            model="uniroute", messages=[{"role": "user", "content": prompt}]
        )
        completion = raw.parse()
        assert raw.headers["x-uniroute-model"] == model
        assert completion.model == model
        assert completion.choices[0].message.content == answers[model][prompt]
        assert raw.headers["x-request-id"]
    after = {m: replays[m].stats()["chat_completions"] for m in POOL}
    assert {m: after[m] - before[m] for m in POOL} == {m: expected.count(m) for m in POOL}


def test_router_embeds_the_last_user_message_after_earlier_user_turns(
    deployment, client, prompts, answers
):
    _, router = deployment
    first, last = prompts[0], prompts[1]
    # The earlier user turn is context (at most 600 characters, its end), the assistant's is not.
    model = router.route(f"{first.strip()[-600:]}\n{last}").model
    completion = client.chat.completions.create(
        model="uniroute",
        messages=[{"role": "system", "content": "Answer with one letter."},
                  {"role": "user", "content": first},
                  {"role": "assistant", "content": "A"},
                  {"role": "user", "content": last}],
    )  # fmt: skip
    assert completion.model == model
    assert completion.choices[0].message.content == answers[model][last]


def test_streamed_answer_is_passed_through(deployment, client, prompts, answers):
    _, router = deployment
    prompt = prompts[2]
    model = router.route(prompt).model
    with client.chat.completions.with_streaming_response.create(
        model="uniroute", messages=[{"role": "user", "content": prompt}], stream=True
    ) as response:
        assert response.headers["x-uniroute-model"] == model
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = list(response.parse())
    assert {chunk.model for chunk in chunks} == {model}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answers[model][prompt]


def test_stream_chunks_arrive_as_the_upstream_sends_them(deployment, replays, prompts):
    gateway, _ = deployment
    replays[CHEAP].set_fault(fixed_answer="one two three four", chunk_delay_ms=200)
    try:
        arrivals = []
        started = time.perf_counter()
        body = chat_body(prompts[3], model=CHEAP, stream=True)
        with httpx.stream("POST", f"{gateway.v1_url}/chat/completions", json=body,
                          headers=_headers(), timeout=30) as response:  # fmt: skip
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data:") and '"content": "' in line and '""' not in line:
                    arrivals.append(time.perf_counter() - started)
    finally:
        replays[CHEAP].set_fault(fixed_answer=None, chunk_delay_ms=0)
    # Four pieces 200 ms apart upstream: a gateway that buffered would deliver them together.
    assert len(arrivals) == 4
    assert arrivals[-1] - arrivals[0] > 0.4


def test_legacy_completions_are_routed(deployment, client, prompts, answers):
    _, router = deployment
    prompt = prompts[4]
    model = router.route(prompt).model
    raw = client.completions.with_raw_response.create(model="uniroute", prompt=prompt)
    assert raw.headers["x-uniroute-model"] == model
    assert raw.parse().choices[0].text == answers[model][prompt]


def test_policies_from_model_field_and_headers(deployment, client, prompts):
    _, router = deployment
    prompt = prompts[5]
    accurate = router.route(prompt, lam=0.0).model
    raw = client.chat.completions.with_raw_response.create(
        model="uniroute:lambda=0", messages=[{"role": "user", "content": prompt}]
    )
    assert raw.headers["x-uniroute-model"] == accurate
    # A huge lambda makes cost dominate: the cheapest model, whatever its error.
    raw = client.chat.completions.with_raw_response.create(
        model="uniroute", messages=[{"role": "user", "content": prompt}],
        extra_headers={"x-uniroute-lambda": "1e9"},
    )  # fmt: skip
    assert raw.headers["x-uniroute-model"] == CHEAP
    # A ceiling between the two cheapest prices leaves only the cheapest model.
    ceiling = (COSTS[CHEAP] + COSTS[MID]) / 2
    raw = client.chat.completions.with_raw_response.create(
        model=f"uniroute:max-cost={ceiling}", messages=[{"role": "user", "content": prompt}]
    )
    assert raw.headers["x-uniroute-model"] == CHEAP
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="uniroute:max-cost=0.00000001", messages=[{"role": "user", "content": prompt}]
        )
    assert info.value.body["code"] == "no_model_within_budget"


def test_a_pool_model_named_directly_is_called_directly(deployment, client, prompts, replays):
    prompt = prompts[6]
    before = replays[EXPENSIVE].stats()["chat_completions"]
    raw = client.chat.completions.with_raw_response.create(
        model=EXPENSIVE, messages=[{"role": "user", "content": prompt}]
    )
    assert raw.headers["x-uniroute-model"] == EXPENSIVE
    assert replays[EXPENSIVE].stats()["chat_completions"] == before + 1


def test_route_endpoint_returns_the_decision_only(deployment, prompts, replays):
    gateway, router = deployment
    prompt = prompts[7]
    before = {m: replays[m].stats()["requests"] for m in POOL}
    response = httpx.post(f"{gateway.v1_url}/route", json={"prompt": prompt}, headers=_headers())
    assert response.status_code == 200
    decision = response.json()
    expected = router.route(prompt)
    assert decision["model"] == expected.model == response.headers["x-uniroute-model"]
    assert decision["ranking"] == expected.ranking
    assert decision["cluster"] == expected.cluster
    assert decision["costs"] == pytest.approx(COSTS)
    # Every pool model has an endpoint: the gateway would call the chosen one.
    assert decision["servable_ranking"] == expected.servable_ranking == expected.ranking
    assert decision["servable_model"] == expected.model
    for model in POOL:
        assert decision["estimated_errors"][model] == pytest.approx(
            expected.estimated_errors[model]
        )
    assert {m: replays[m].stats()["requests"] for m in POOL} == before


def test_models_lists_the_alias_and_servable_models(client):
    ids = [model.id for model in client.models.list()]
    assert ids[0] == "uniroute"
    assert sorted(ids[1:]) == sorted(POOL)


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b"{not json", {}, 400, "invalid_json"),
        (b"\xff\xfe\x00garbage", {}, 400, "invalid_json"),
        (b"[1, 2]", {}, 400, "invalid_json"),
        (b"", {}, 400, "invalid_json"),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(), {}, 400,
         "missing_field"),
        (json.dumps({"model": "uniroute"}).encode(), {}, 400, "missing_field"),
        (json.dumps({"model": "uniroute", "messages": []}).encode(), {}, 400, "empty_messages"),
        (json.dumps(chat_body("hi", model="no-such-model")).encode(), {}, 404, "model_not_found"),
        (json.dumps(chat_body("hi", model="uniroute:lambda=-2")).encode(), {}, 400,
         "invalid_routing_policy"),
        (json.dumps(chat_body("hi", stream="yes")).encode(), {}, 400, "invalid_type"),
        (json.dumps(chat_body("x" * (BODY_LIMIT + 10))).encode(), {}, 413, "request_too_large"),
    ],
)  # fmt: skip
def test_bad_input_gets_an_openai_error(deployment, content, headers, status, code):
    gateway, _ = deployment
    response = httpx.post(
        f"{gateway.v1_url}/chat/completions", content=content,
        headers={**_headers(), "content-type": "application/json", **headers}, timeout=10,
    )  # fmt: skip
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"]


def test_oversized_chunked_body_is_refused_before_it_is_read(deployment):
    gateway, _ = deployment

    def body():
        for _ in range(50):
            yield b"x" * 10_000

    response = httpx.post(f"{gateway.v1_url}/chat/completions", content=body(), headers=_headers())
    assert response.status_code == 413


def test_garbage_does_not_crash_the_server(deployment, client, prompts):
    gateway, _ = deployment
    with httpx.Client(timeout=10) as raw:
        for content in (
            b"\x00" * 64,
            b'{"model": 5}',
            b'{"model": "uniroute", "messages": [7]}',
            b'{"model": "uniroute", "prompt": ["a", "b"]}',
            b"null",
        ):
            for path in ("/v1/chat/completions", "/v1/completions", "/v1/route"):
                response = raw.post(gateway.base_url + path, content=content, headers=_headers())
                assert 400 <= response.status_code < 500
                assert "error" in response.json()
        assert raw.get(gateway.base_url + "/v1/chat/completions").status_code == 405
        missing = raw.get(gateway.base_url + "/nowhere")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    completion = client.chat.completions.create(
        model="uniroute", messages=[{"role": "user", "content": prompts[8]}]
    )
    assert completion.choices[0].message.content
    assert gateway.process.poll() is None


def test_client_key_is_required(deployment, prompts):
    gateway, _ = deployment
    missing = httpx.post(f"{gateway.v1_url}/chat/completions", json=chat_body(prompts[0]))
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"
    client = openai.OpenAI(base_url=gateway.v1_url, api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(
            model="uniroute", messages=[{"role": "user", "content": prompts[0]}]
        )
    assert info.value.body["code"] == "invalid_api_key"
    other = openai.OpenAI(base_url=gateway.v1_url, api_key="other-key", max_retries=0)
    assert other.models.list().data


def test_admin_api_is_off_without_a_token(deployment):
    gateway, _ = deployment
    response = httpx.get(f"{gateway.base_url}/admin/models",
                         headers={"authorization": "Bearer anything"})  # fmt: skip
    assert response.status_code == 403
    assert "UNIROUTE_ADMIN_TOKEN" in response.json()["error"]["message"]


def test_health_and_readiness(deployment):
    gateway, router = deployment
    assert httpx.get(f"{gateway.base_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.base_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["servable_models"] == len(POOL)
    assert ready.json()["registry_readable"] is True
    # The pool served is the registry's current one.
    with Registry(router.registry.path) as registry:
        assert ready.json()["pool_version"] == registry.pool_version()


def test_metrics_count_requests_cost_and_saving(deployment, client, prompts, arc_dataset):
    gateway, router = deployment
    # The most accurate model by mean score on the representative prompts, computed here.
    ids = router.artifact.prompt_ids
    means = {m: np.mean(list(recorded_scores(arc_dataset, m, ids).values())) for m in POOL}
    reference = max(means, key=means.get)
    chosen = prompts[10:18]
    expected = [router.route(p).model for p in chosen]
    before = _metric_samples(gateway.base_url)
    for prompt in chosen:
        client.chat.completions.create(
            model="uniroute", messages=[{"role": "user", "content": prompt}]
        )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    after = _metric_samples(gateway.base_url)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    for model in POOL:
        n = expected.count(model)
        assert delta("uniroute_requests_total", endpoint="chat", model=model, status="200") == n
        assert delta("uniroute_estimated_cost_total", model=model) == pytest.approx(
            n * COSTS[model]
        )
    assert delta("uniroute_requests_total", endpoint="chat", model="none", status="404") == 1
    saving = sum(COSTS[reference] - COSTS[m] for m in expected)
    assert delta("uniroute_estimated_saving_total") == pytest.approx(saving)
    assert delta("uniroute_routing_latency_seconds_count") == len(chosen)
    assert after[("uniroute_pool_servable_models", ())] == len(POOL)


def test_access_logs_are_json_with_request_ids_and_no_secrets(deployment, client, prompts):
    gateway, _ = deployment
    raw = client.chat.completions.with_raw_response.create(
        model=EXPENSIVE, messages=[{"role": "user", "content": prompts[9]}],
        extra_headers={"x-request-id": "trace-abc-123"},
    )  # fmt: skip
    assert raw.headers["x-request-id"] == "trace-abc-123"
    httpx.get(f"{gateway.base_url}/admin/pool", headers={"authorization": "Bearer guess"})
    wait_until(
        lambda: any("trace-abc-123" in line for line in gateway.log_lines()),
        5,
        "the access log line never appeared",
    )
    records = [json.loads(line) for line in gateway.log_lines() if line.strip()]
    access = [r for r in records if r["logger"] == "uniroute.access"]
    traced = [r for r in access if r.get("request_id") == "trace-abc-123"]
    assert len(traced) == 1
    assert traced[0]["model"] == EXPENSIVE and traced[0]["status"] == 200
    assert all(r["request_id"] and "status" in r and "path" in r for r in access)
    text = gateway.log_text()
    # The upstream key was used (the GPT-4 replay demands it), yet no secret is ever logged.
    for secret in (UPSTREAM_KEY, CLIENT_KEY, "other-key"):
        assert secret not in text
