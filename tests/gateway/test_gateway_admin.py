"""The admin API of a running gateway: pool changes take effect at once and persist."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.gateway.support import (
    ADMIN_TOKEN,
    CHEAP,
    COSTS,
    EXPENSIVE,
    HELD_OUT,
    MID,
    POOL,
    TO_ONBOARD,
    admin_pool_gateway,
    chat_body,
)
from uniroute.deployment import Router
from uniroute.onboarding.probes import PROBED_CAPABILITIES
from uniroute.registry import Registry
from uniroute.testing.harness import (
    free_port,
    recorded_scores,
    sse_events,
    wait_for_job,
    wait_until,
)

AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, artifact_dir, arc_dataset, replays):
    """A gateway with the admin API on, over a registry of three models."""
    folder = tmp_path_factory.mktemp("gateway-admin")
    with admin_pool_gateway(folder, artifact_dir, arc_dataset, replays) as running:
        yield running


def _admin(gateway, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{gateway.base_url}/admin{path}", headers=AUTH, timeout=30,
                         **kwargs)  # fmt: skip


def _served(gateway) -> list[str]:
    data = httpx.get(f"{gateway.v1_url}/models", timeout=10).json()["data"]
    return sorted(entry["id"] for entry in data[1:])


def test_admin_api_needs_the_token(setup):
    gateway, _, _ = setup
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": ADMIN_TOKEN}):
        response = httpx.get(f"{gateway.base_url}/admin/models", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
    listed = _admin(gateway, "GET", "/models").json()["models"]
    assert sorted(m["name"] for m in listed) == sorted(POOL)
    assert all(m["n_scores"] > 0 and m["servable"] for m in listed)


def test_model_added_while_traffic_flows_gets_routed_requests(
    setup, arc_dataset, replays, unique_prompts
):
    gateway, router, registry = setup
    results: list[tuple[str, int, str]] = []
    added_at: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        for prompt in unique_prompts[:150]:
            if stop.is_set():
                return
            response = httpx.post(f"{gateway.v1_url}/chat/completions", json=chat_body(prompt),
                                  timeout=30)  # fmt: skip
            results.append((prompt, response.status_code, response.headers.get("x-uniroute-model")))

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(results) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        scores = recorded_scores(arc_dataset, HELD_OUT, router.artifact.prompt_ids)
        response = _admin(gateway, "POST", "/models", json={
            "name": HELD_OUT, "cost": COSTS[CHEAP] / 2, "endpoint": replays[HELD_OUT].v1_url,
            "scores": scores,
        })  # fmt: skip
        added_at.append(len(results))
        assert response.status_code == 201, response.text
        assert response.json()["servable"] is True
        assert response.json()["matched_prompts"] == len(scores)
        while len(results) < added_at[0] + 40 and time.monotonic() < deadline + 30:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert all(status == 200 for _, status, _ in results)
    before = [model for _, _, model in results[: added_at[0]]]
    after = results[added_at[0] + 1 :]
    assert HELD_OUT not in before
    # The gateway routes exactly as a Router freshly loaded from the changed registry does.
    fresh = Router.load(router.artifact, Registry(registry))
    assert [model for _, _, model in after] == [fresh.route(p).model for p, _, _ in after]
    assert HELD_OUT in [model for _, _, model in after]
    assert replays[HELD_OUT].stats()["chat_completions"] >= 1
    # Persisted: a Registry opened afresh has it with its scores.
    assert Registry(registry).get_model(HELD_OUT).endpoint == replays[HELD_OUT].v1_url


def test_onboarding_job_queries_the_endpoint_and_makes_the_model_routable(setup, replays):
    gateway, router, _ = setup
    n_prompts = len(router.artifact.prompt_ids)
    asked_before = replays[TO_ONBOARD].stats()["chat_completions"]
    response = _admin(gateway, "POST", "/models", json={
        "name": TO_ONBOARD, "cost": COSTS[MID], "endpoint": replays[TO_ONBOARD].v1_url,
        "onboard": True, "onboarding": {"concurrency": 8, "timeout": 10},
    })  # fmt: skip
    assert response.status_code == 202, response.text
    job = wait_for_job(gateway.base_url, response.json()["poll"], AUTH, timeout=60)
    assert job["status"] == "succeeded", job
    assert job["progress"]["total"] == n_prompts and job["progress"]["done"] == n_prompts
    assert job["result"]["scores"] > 0.9 * n_prompts
    asked = replays[TO_ONBOARD].stats()["chat_completions"] - asked_before
    # Every representative prompt once, and one probe per probed capability (none declared).
    assert asked == n_prompts + len(PROBED_CAPABILITIES)
    probed = {outcome["capability"] for outcome in job["result"]["probes"]["outcomes"]}
    assert probed == set(PROBED_CAPABILITIES)
    listed = {m["name"]: m for m in _admin(gateway, "GET", "/models").json()["models"]}
    assert listed[TO_ONBOARD]["n_scores"] == job["result"]["scores"]
    # Its endpoint's median seconds per answer, measured while onboarding, seed its latency.
    assert 0 < listed[TO_ONBOARD]["latency_s"] < 10
    assert TO_ONBOARD in _served(gateway)
    direct = httpx.post(f"{gateway.v1_url}/chat/completions",
                        json=chat_body("What is 2+2?", model=TO_ONBOARD))  # fmt: skip
    assert direct.status_code == 200 and direct.headers["x-uniroute-model"] == TO_ONBOARD


def test_failed_onboarding_leaves_the_registry_unchanged(setup):
    gateway, _, _ = setup
    port = free_port()  # nothing listens there
    response = _admin(gateway, "POST", "/models", json={
        "name": "unreachable-model", "cost": 0.001, "endpoint": f"http://127.0.0.1:{port}/v1",
        "onboard": True, "onboarding": {"timeout": 2, "retries": 0},
    })  # fmt: skip
    assert response.status_code == 202
    job = wait_for_job(gateway.base_url, response.json()["poll"], AUTH, timeout=30)
    assert job["status"] == "failed" and job["error"]
    names = [m["name"] for m in _admin(gateway, "GET", "/models").json()["models"]]
    assert "unreachable-model" not in names


def test_disable_and_enable_take_effect_at_once(setup, unique_prompts):
    gateway, router, _ = setup
    prompt = next(p for p in unique_prompts if router.route(p, lam=0.0).model == EXPENSIVE)
    body = chat_body(prompt, model="uniroute:lambda=0")
    assert _admin(gateway, "POST", f"/models/{EXPENSIVE}/disable").status_code == 200
    assert EXPENSIVE not in _served(gateway)
    response = httpx.post(f"{gateway.v1_url}/chat/completions", json=body, timeout=30)
    assert response.status_code == 200 and response.headers["x-uniroute-model"] != EXPENSIVE
    assert _admin(gateway, "POST", f"/models/{EXPENSIVE}/enable").status_code == 200
    response = httpx.post(f"{gateway.v1_url}/chat/completions", json=body, timeout=30)
    assert response.headers["x-uniroute-model"] == EXPENSIVE


def test_cost_change_moves_traffic(setup, unique_prompts):
    gateway, _, _ = setup
    ceiling = (COSTS[CHEAP] + COSTS[MID]) / 2
    body = {"prompt": unique_prompts[0], "model": f"uniroute:max-cost={ceiling}"}
    decision = httpx.post(f"{gateway.v1_url}/route", json=body).json()
    assert decision["model"] in (CHEAP, HELD_OUT)
    response = _admin(gateway, "POST", f"/models/{CHEAP}/cost", json={"cost": 1.0})
    assert response.status_code == 200 and response.json()["model"]["cost_per_query"] == 1.0
    # $1 a query is far above the rest of the pool: the answer says so.
    assert response.json()["cost_per_query"] == 1.0
    assert "check the unit" in response.json()["price_warning"]
    try:
        decision = httpx.post(f"{gateway.v1_url}/route", json={"prompt": unique_prompts[0]}).json()
        assert decision["costs"][CHEAP] == 1.0
        assert decision["model"] != CHEAP
    finally:
        _admin(gateway, "POST", f"/models/{CHEAP}/cost", json={"cost": COSTS[CHEAP]})


def test_removed_model_is_gone(setup, arc_dataset, replays, unique_prompts):
    gateway, router, _ = setup
    # A pool name of our own for the CHEAP upstream: answers must carry the pool name.
    scores = recorded_scores(arc_dataset, CHEAP, router.artifact.prompt_ids)
    response = _admin(gateway, "POST", "/models", json={
        "name": "team/alias-model", "cost": 0.0002, "endpoint": replays[CHEAP].v1_url,
        "scores": [{"prompt_id": k, "score": v} for k, v in scores.items()],
    })  # fmt: skip
    assert response.status_code == 201, response.text
    for stream in (False, True):
        answer = httpx.post(
            f"{gateway.v1_url}/chat/completions",
            json=chat_body(unique_prompts[1], model="team/alias-model", stream=stream),
        )
        assert answer.headers["x-uniroute-model"] == "team/alias-model"
        payloads = sse_events(answer.content)[:-1] if stream else [answer.json()]
        assert {p["model"] for p in payloads} == {"team/alias-model"}
    assert _admin(gateway, "DELETE", "/models/team/alias-model").status_code == 200
    assert "team/alias-model" not in _served(gateway)
    gone = httpx.post(f"{gateway.v1_url}/chat/completions",
                      json=chat_body(unique_prompts[1], model="team/alias-model"))  # fmt: skip
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
    assert _admin(gateway, "DELETE", "/models/team/alias-model").status_code == 404


def test_recalibrate_sets_the_default_lambda(setup):
    gateway, _, registry = setup
    response = _admin(gateway, "POST", "/recalibrate", json={"target_cost": COSTS[MID]})
    assert response.status_code == 200, response.text
    policy = response.json()["policy"]
    assert policy["expected_cost"] <= COSTS[MID] * (1 + 1e-9)
    # How it was computed: out of sample, over the models the gateway can call.
    assert policy["out_of_sample"] is True and policy["n_folds"] == 5
    assert response.json()["basis"] == "out-of-sample (5-fold cross-fitted)"
    servable = _admin(gateway, "GET", "/pool").json()["servable_models"]
    assert policy["servable_only"] is True and sorted(policy["models"]) == servable
    assert response.json()["left_out_no_endpoint"] == []
    alias = httpx.get(f"{gateway.v1_url}/models").json()["data"][0]
    assert alias["id"] == "uniroute" and alias["default_lambda"] == pytest.approx(policy["lam"])
    assert Registry(registry).get_policy().lam == pytest.approx(policy["lam"])
    again = _admin(gateway, "POST", "/recalibrate")  # the stored target, solved again
    assert again.status_code == 200 and again.json()["policy"]["lam"] == pytest.approx(
        policy["lam"]
    )
    # A latency weight is stored with the policy, kept when the target is solved again.
    weighted = _admin(gateway, "POST", "/recalibrate", json={"latency_weight": 0.5})
    assert weighted.status_code == 200 and weighted.json()["policy"]["latency_weight"] == 0.5
    assert Registry(registry).get_policy().latency_weight == 0.5
    assert _admin(gateway, "POST", "/recalibrate").json()["policy"]["latency_weight"] == 0.5
    refused = _admin(gateway, "POST", "/recalibrate", json={"latency_weight": -1})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "latency_weight"
    _admin(gateway, "POST", "/recalibrate", json={"latency_weight": 0})
    # This replica's latencies, from the answers it relayed in the tests before.
    assert all(v["total_s"] > 0 for v in _admin(gateway, "GET", "/pool").json()["latency"].values())


def test_changes_made_by_another_process_are_noticed(setup):
    gateway, _, registry = setup
    with Registry(registry) as other_process:
        other_process.set_enabled(MID, False)
        try:
            wait_until(lambda: MID not in _served(gateway), 10, "the disabling was never noticed")
        finally:
            other_process.set_enabled(MID, True)
    wait_until(lambda: MID in _served(gateway), 10, "the re-enabling was never noticed")


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/models", {"cost": 1, "scores": {"a": 1}}, 400, "missing_field"),
        ("POST", "/models", {"name": CHEAP, "cost": 1, "scores": {"a": 1}}, 409, "model_exists"),
        ("POST", "/models", {"name": "m", "cost": 1, "scores": {"x": 2}}, 400, "invalid_scores"),
        # A DataError of the registry: its own status and code.
        ("POST", "/models", {"name": "m", "cost": 1, "scores": {"no-such-id": 1}}, 400,
         "invalid_data"),
        ("POST", "/models", {"name": "m", "scores": {"x": 1}}, 400, "invalid_cost"),
        ("POST", "/models", {"name": "m", "cost": 1}, 400, "missing_field"),
        ("POST", "/models", {"name": "m", "cost": 1, "onboard": True}, 400, "missing_field"),
        ("POST", "/models", {"name": "m", "cost": 1, "scores": {"x": 1}, "colour": 1}, 400,
         "unknown_field"),
        ("POST", "/models", {"name": "m", "cost": 1, "scores": {"x": 1},
                             "api_key_env": "sk-live-abcdefghijklmnopqrstuvwxyz0123"}, 400,
         "invalid_request"),
        ("POST", "/models/nobody/disable", None, 404, "model_not_found"),
        ("DELETE", "/models/nobody", None, 404, "model_not_found"),
        ("POST", "/models/nobody/cost", {"cost": 1}, 404, "model_not_found"),
        ("POST", f"/models/{CHEAP}/cost", {"cost": -1}, 400, "invalid_cost"),
        ("POST", "/recalibrate", {"target_quality": 2}, 400, "invalid_request"),
        ("GET", "/jobs/nope", None, 404, "job_not_found"),
    ],
)  # fmt: skip
def test_bad_admin_requests(setup, method, path, body, status, code):
    gateway, _, _ = setup
    response = _admin(gateway, method, path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/models", {"name": "m", "cost": 1, "scores": {"x": 1}, "colour": "red"}, "colour"),
        (f"/models/{CHEAP}/cost", {"cost": 1.0, "currency": "EUR"}, "currency"),
        ("/recalibrate", {"target_cost": COSTS[CHEAP], "target_costs": 1}, "target_costs"),
        ("/models", {"name": "m", "cost": 1, "endpoint": "http://127.0.0.1:9/v1", "onboard": True,
                     "onboarding": {"concurrency": 2, "colour": 1}}, "onboarding"),
    ],
)  # fmt: skip
def test_an_unknown_admin_field_is_refused_by_name_and_changes_nothing(setup, path, body, param):
    gateway, _, registry = setup
    with Registry(registry) as before:
        cost, policy = before.get_model(CHEAP).cost, before.get_policy()
    jobs = _admin(gateway, "GET", "/jobs").json()["jobs"]
    response = _admin(gateway, "POST", path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "unknown_field" and error["param"] == param
    assert param in error["message"]
    with Registry(registry) as after:
        assert not after.has_model("m")
        assert after.get_model(CHEAP).cost == cost
        assert after.get_policy() == policy
    assert _admin(gateway, "GET", "/jobs").json()["jobs"] == jobs
