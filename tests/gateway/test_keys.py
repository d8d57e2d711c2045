"""Virtual client keys at the gateway, served in threads of this process with replay upstreams:
the admin API, authentication (static keys still work), allowed models, rpm and budget limits
(429 with retry-after), and spend from the upstream's usage (streams too, and estimated when an
upstream's usage is missing or malformed)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.gateway.support import ADMIN_TOKEN, CHEAP, EXPENSIVE, MID, chat_body, make_registry
from uniroute.deployment import pool_changes
from uniroute.errors import StateError
from uniroute.gateway.app import create_app
from uniroute.gateway.config import GatewayConfig
from uniroute.gateway.keys import KeyGuard
from uniroute.gateway.metrics import GatewayMetrics
from uniroute.registry import ClientKey, ModelCost, ModelRecord
from uniroute.testing.harness import serve_in_thread, sse_events, wait_until
from uniroute.testing.replay import create_replay_app, recorded_answers

ADMIN_ENV = "UNIROUTE_TEST_KEYS_ADMIN_TOKEN"
STATIC_ENV = "UNIROUTE_TEST_KEYS_STATIC"
STATIC_KEY = "static-key-3b1e7d"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
#: Token prices (per 1k input, per 1k output): spend depends on the usage each answer reports.
PRICES = {CHEAP: (0.01, 0.03), MID: (0.05, 0.15), EXPENSIVE: (1.0, 3.0)}
#: A model whose upstream reports a malformed usage (its spend must be estimated).
LIAR = "liar/bad-usage"


def _liar_upstream() -> Starlette:
    """An upstream whose answers report a malformed usage, and whose streams report none."""

    async def chat(request: Request) -> Response:
        if (await request.json()).get("stream"):

            async def events() -> AsyncIterator[bytes]:
                for _ in range(2):
                    delta = {"content": "B" * 200}
                    event = {"id": "x", "model": LIAR, "choices": [{"index": 0, "delta": delta}]}
                    yield f"data: {json.dumps(event)}\n\n".encode()
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse(
            {
                "id": "x",
                "object": "chat.completion",
                "model": LIAR,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "B" * 400}}],
                "usage": {"prompt_tokens": -5, "completion_tokens": "lots"},
            }
        )

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture(scope="module")
def setup(tmp_path_factory, artifact_dir, arc_dataset) -> Iterator[tuple[str, Any]]:
    """(gateway URL, its Router) over CHEAP, MID and EXPENSIVE at token prices, plus LIAR."""
    with ExitStack() as stack, pytest.MonkeyPatch.context() as patch:
        urls = {
            model: stack.enter_context(serve_in_thread(create_replay_app(arc_dataset, model)))
            for model in (CHEAP, MID, EXPENSIVE)
        }
        liar_url = stack.enter_context(serve_in_thread(_liar_upstream()))
        patch.setenv(ADMIN_ENV, ADMIN_TOKEN)
        patch.delenv(STATIC_ENV, raising=False)
        router = make_registry(
            artifact_dir, tmp_path_factory.mktemp("keys") / "registry.db", arc_dataset,
            {m: f"{u}/v1" for m, u in urls.items()},
        )  # fmt: skip
        for model, (per_in, per_out) in PRICES.items():
            pool_changes.set_cost(
                router, model, ModelCost(per_1k_input=per_in, per_1k_output=per_out)
            )
        config = GatewayConfig(
            admin_token_env=ADMIN_ENV, client_keys_env=STATIC_ENV, registry_poll_s=0.1
        )
        app = create_app(router, config)
        yield stack.enter_context(serve_in_thread(app)), router, patch, liar_url


@pytest.fixture(scope="module")
def prompts(arc_dataset) -> list[str]:
    """Prompts every pool model answered."""
    answers = [recorded_answers(arc_dataset, m) for m in (CHEAP, MID, EXPENSIVE)]
    return [p for p in answers[0] if all(p in a for a in answers)][:60]


def _create(url: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{url}/admin/keys", json={"name": "k", **body}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()


def _chat(url: str, secret: str, prompt: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json=chat_body(prompt, **extra),
        headers={"authorization": f"Bearer {secret}"},
        timeout=30,
    )


def _usage(url: str, key_id: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/admin/keys/{key_id}/usage", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def _cost(model: str, usage: dict[str, int]) -> float:
    per_in, per_out = PRICES[model]
    return usage["prompt_tokens"] / 1000 * per_in + usage["completion_tokens"] / 1000 * per_out


def _metrics(url: str) -> dict[tuple[str, tuple], float]:
    samples = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_admin_api_creates_lists_and_revokes_keys(setup) -> None:
    url, router, *_ = setup
    created = _create(url, name="ci", team="red", allowed_models=[CHEAP], rpm_limit=3,
                      daily_spend_limit=2, monthly_spend_limit=30.5)  # fmt: skip
    key, secret = created["key"], created["secret"]
    assert secret.startswith("ur-") and key["allowed_models"] == [CHEAP]
    assert key["daily_spend_limit"] == 2.0 and key["team"] == "red" and not key["revoked"]
    listed = httpx.get(f"{url}/admin/keys", headers=ADMIN)
    assert key in listed.json()["keys"] and secret not in listed.text
    assert router.registry.keys.lookup(secret).id == key["id"]
    revoked = httpx.delete(f"{url}/admin/keys/{key['id']}", headers=ADMIN).json()["key"]
    assert revoked["revoked"] and revoked["revoked_at"]
    usage = _usage(url, key["id"])
    assert usage["today"]["spend"] == 0.0 and usage["usage"] == []
    assert httpx.get(f"{url}/admin/keys", headers={}).status_code == 401


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": ""}, "name"),
        ({"name": "k", "team": "no spaces"}, "team"),
        ({"name": "k", "allowed_models": "gpt"}, "allowed_models"),
        ({"name": "k", "allowed_models": []}, "allowed_models"),
        ({"name": "k", "rpm_limit": 0}, "rpm_limit"),
        ({"name": "k", "rpm_limit": "5"}, "rpm_limit"),
        ({"name": "k", "daily_spend_limit": -1}, "daily_spend_limit"),
        ({"name": "k", "monthly_spend_limit": True}, "monthly_spend_limit"),
        ({"name": "k", "secret": "mine"}, "secret"),
        ({}, "name"),
    ],
)
def test_bad_key_bodies_are_400s_naming_the_field(setup, body, param) -> None:
    url, router, *_ = setup
    before = len(router.registry.keys.list())
    response = httpx.post(f"{url}/admin/keys", json=body, headers=ADMIN)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert len(router.registry.keys.list()) == before


def test_unknown_keys_and_periods(setup) -> None:
    url, *_ = setup
    for response in (
        httpx.delete(f"{url}/admin/keys/key-nope", headers=ADMIN),
        httpx.get(f"{url}/admin/keys/key-nope/usage", headers=ADMIN),
    ):
        assert response.status_code == 404 and response.json()["error"]["code"] == "key_not_found"
    bad = httpx.get(f"{url}/admin/teams", params={"period": "week:1"}, headers=ADMIN)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "period"


def test_once_a_key_exists_v1_needs_one_and_static_keys_still_work(setup, prompts) -> None:
    url, _, patch, _ = setup
    patch.setenv(STATIC_ENV, STATIC_KEY)
    secret = _create(url)["secret"]
    assert httpx.post(f"{url}/v1/chat/completions", json=chat_body(prompts[0])).status_code == 401
    unknown = _chat(url, "ur-" + "x" * 43, prompts[0])
    assert unknown.status_code == 401 and unknown.json()["error"]["code"] == "invalid_api_key"
    assert _chat(url, STATIC_KEY, prompts[0]).status_code == 200
    assert _chat(url, secret, prompts[0]).status_code == 200
    assert httpx.get(f"{url}/v1/models", headers={"api-key": secret}).status_code == 200
    patch.delenv(STATIC_ENV)
    assert _chat(url, STATIC_KEY, prompts[0]).status_code == 401


def test_a_revoked_key_is_refused_at_once(setup, prompts) -> None:
    url, *_ = setup
    created = _create(url)
    assert _chat(url, created["secret"], prompts[1]).status_code == 200
    httpx.delete(f"{url}/admin/keys/{created['key']['id']}", headers=ADMIN)
    refused = _chat(url, created["secret"], prompts[1])
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]


def test_a_key_limited_to_some_models_never_reaches_another(setup, prompts) -> None:
    url, *_ = setup
    secret = _create(url, allowed_models=[MID])["secret"]
    for prompt in prompts[:8]:
        answer = _chat(url, secret, prompt)
        assert answer.status_code == 200 and answer.headers["x-uniroute-model"] == MID
    verified = _chat(url, secret, prompts[9], model="uniroute:verify")
    assert verified.status_code == 200 and verified.headers["x-uniroute-model"] == MID
    direct = _chat(url, secret, prompts[0], model=EXPENSIVE)
    assert direct.status_code == 403
    assert direct.json()["error"]["code"] == "model_not_allowed"
    assert direct.json()["error"]["type"] == "permission_error"


def test_rpm_limit_is_a_429_with_retry_after(setup, prompts) -> None:
    url, *_ = setup
    for _ in range(2):  # a new minute may begin between the requests: then once more
        secret = _create(url, rpm_limit=2)["secret"]
        answers = [_chat(url, secret, prompt) for prompt in prompts[:3]]
        if answers[2].status_code == 429:
            break
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(answers[2].headers["retry-after"]) <= 60


def test_spend_is_the_reported_usage_times_the_price_and_a_budget_holds(setup, prompts) -> None:
    url, *_ = setup
    created = _create(url, daily_spend_limit=0.002, team="blue")
    key_id, secret = created["key"]["id"], created["secret"]
    spent = 0.0
    answers = 0
    for prompt in prompts:
        response = _chat(url, secret, prompt, model=CHEAP)
        if response.status_code == 429:
            error = response.json()["error"]
            assert error["code"] == "budget_exceeded" and "daily" in error["message"]
            assert int(response.headers["retry-after"]) >= 1
            break
        assert response.status_code == 200
        spent += _cost(CHEAP, response.json()["usage"])
        answers += 1
    else:
        pytest.fail("the daily budget never refused a request")
    # Spend is settled before each answer is returned.
    today = _usage(url, key_id)["today"]
    assert today["spend"] == pytest.approx(spent, rel=1e-9)
    assert today["requests"] == answers
    # Admission stops once the spend reached the limit: it is overshot by one answer at most.
    assert 0.002 <= spent < 0.002 + spent / answers * 2
    metrics = _metrics(url)
    spend = metrics[("uniroute_key_spend_total", (("basis", "usage"), ("key", key_id),
                                                  ("team", "blue")))]  # fmt: skip
    assert spend == pytest.approx(spent, rel=1e-9)
    assert metrics[("uniroute_team_spend_total", (("team", "blue"),))] == pytest.approx(spent)
    refusals = (("key", key_id), ("reason", "daily_budget"))
    assert metrics[("uniroute_key_refusals_total", refusals)] == 1
    teams = httpx.get(f"{url}/admin/teams", headers=ADMIN).json()
    blue = next(t for t in teams["teams"] if t["team"] == "blue")
    assert blue[teams["periods"][0]]["spend"] == pytest.approx(spent)


@pytest.mark.parametrize("asked", [False, True], ids=["gateway-asks", "client-asks"])
def test_a_stream_is_charged_from_its_usage_chunk(setup, prompts, asked) -> None:
    url, *_ = setup
    created = _create(url, monthly_spend_limit=100.0)
    key_id = created["key"]["id"]
    extra: dict[str, Any] = {"stream": True, "model": MID}
    if asked:
        extra["stream_options"] = {"include_usage": True}
    response = _chat(url, created["secret"], prompts[20], **extra)
    assert response.status_code == 200
    events = sse_events(response.content)
    assert events[-1] == "[DONE]"
    usage_events = [e for e in events[:-1] if e.get("usage")]
    # Without asking, the client gets the stream it would get from the upstream: no usage chunk.
    assert len(usage_events) == (1 if asked else 0)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])
    prompt_tokens = -(-len(prompts[20]) // 4)
    expected = _cost(MID, {"prompt_tokens": prompt_tokens, "completion_tokens": -(-len(text) // 4)})
    wait_until(
        lambda: _usage(url, key_id)["this_month"]["spend"] == pytest.approx(expected, rel=1e-9),
        10, "the stream's spend never matched its usage",
    )  # fmt: skip


def test_missing_or_malformed_usage_is_estimated_and_counted(setup) -> None:
    url, router, _, liar_url = setup
    # The liar joins the pool as a token-priced model with an endpoint.
    record_cost = ModelCost(per_1k_input=1.0, per_1k_output=2.0)
    scores = {p: 0.5 for p in router.artifact.prompt_ids}
    pool_changes.add_scored_model(
        router, ModelRecord(name=LIAR, cost=record_cost, endpoint=f"{liar_url}/v1"), scores
    )
    try:
        created = _create(url)
        wait_until(
            lambda: LIAR in httpx.get(f"{url}/v1/models",
                                      headers={"authorization": f"Bearer {created['secret']}"})
            .text, 10, "the liar never became servable",
        )  # fmt: skip
        response = _chat(url, created["secret"], "x" * 400, model=LIAR)
        assert response.status_code == 200
        expected = 400 / 4 / 1000 * 1.0 + 400 / 4 / 1000 * 2.0
        wait_until(
            lambda: _usage(url, created["key"]["id"])["today"]["spend"]
            == pytest.approx(expected, rel=1e-9),
            10, "the estimate was not charged",
        )  # fmt: skip
        metrics = _metrics(url)
        counted = (("model", LIAR), ("reason", "malformed"))
        assert metrics[("uniroute_key_estimated_usage_total", counted)] == 1
        # A stream without a usage chunk (the upstream ignored include_usage): estimated too.
        streamed = _chat(url, created["secret"], "y" * 800, model=LIAR, stream=True)
        assert streamed.status_code == 200 and sse_events(streamed.content)[-1] == "[DONE]"
        expected += 800 / 4 / 1000 * 1.0 + 400 / 4 / 1000 * 2.0
        wait_until(
            lambda: _usage(url, created["key"]["id"])["today"]["spend"]
            == pytest.approx(expected, rel=1e-9),
            10, "the stream's estimate was not charged",
        )  # fmt: skip
        missing = (("model", LIAR), ("reason", "missing"))
        assert _metrics(url)[("uniroute_key_estimated_usage_total", missing)] == 1
    finally:
        pool_changes.remove_model(router, LIAR)


def test_a_secret_never_reaches_a_log_or_a_metric(setup, prompts, caplog) -> None:
    url, *_ = setup
    created = _create(url, team="logs")
    with caplog.at_level("DEBUG"):
        assert _chat(url, created["secret"], prompts[5]).status_code == 200
    assert created["secret"] not in caplog.text
    assert created["secret"] not in httpx.get(f"{url}/metrics").text
    assert created["key"]["id"] in httpx.get(f"{url}/metrics").text
    assert (
        json.dumps(created["secret"])[1:-1]
        not in httpx.get(f"{url}/admin/keys", headers=ADMIN).text
    )


class _CountingStore:
    """A key store that counts its reads and can be made to fail (a registry outage)."""

    def __init__(self, key: Any) -> None:
        self.key, self.reads, self.down = key, 0, False

    def _read(self) -> None:
        self.reads += 1
        time.sleep(0.05)
        if self.down:
            raise StateError("registry unreachable")

    def lookup(self, secret: str) -> Any:
        self._read()
        return self.key if secret == "ur-good" else None

    def any_keys(self) -> bool:
        self._read()
        return True


def test_the_guard_reads_once_for_a_burst_and_rides_out_an_outage() -> None:
    key = ClientKey("key-1", "k", None, None, None, None, None, False, "2026-12-02", None)
    store = _CountingStore(key)
    now = [0.0]
    guard = KeyGuard(store, GatewayMetrics(), ttl_s=5.0, clock=lambda: now[0])  # type: ignore[arg-type]

    async def burst() -> list[Any]:
        return await asyncio.gather(*(guard.authenticate("ur-good", ()) for _ in range(50)))

    callers = asyncio.run(burst())
    assert {c.key for c in callers} == {key} and store.reads == 2  # any_keys + one lookup
    now[0] = 10.0  # the cache expired, and the registry is down: what was read is used
    store.down = True
    assert asyncio.run(guard.authenticate("ur-good", ())).key == key
    with pytest.raises(StateError):  # never read: refused rather than let through
        asyncio.run(guard.lookup("ur-other"))
