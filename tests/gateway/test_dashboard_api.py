"""The dashboard's page and JSON views on a live gateway in front of replay upstreams.

The views must agree with the rest of the gateway: the pool with ``/admin/models``, the
estimate map with the registry's scores, the trade-off with calibration (a point stored
through ``/admin/recalibrate`` is the point the curve showed), the traffic with the requests
sent. The browser itself is driven in ``test_dashboard_browser.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

from tests.gateway.support import ADMIN_TOKEN, CLIENT_KEY, COSTS, EXPENSIVE, POOL, make_registry
from uniroute.deployment import Router, pool_changes
from uniroute.gateway.app import create_app
from uniroute.gateway.config import GatewayConfig
from uniroute.gateway.traffic import TrafficHistory
from uniroute.testing.harness import serve_in_thread
from uniroute.testing.replay import create_replay_app

KEYS_ENV = "UNIROUTE_TEST_DASHBOARD_CLIENT_KEYS"
ADMIN_ENV = "UNIROUTE_TEST_DASHBOARD_ADMIN_TOKEN"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
VIEWER = {"authorization": f"Bearer {CLIENT_KEY}"}


@dataclass
class Live:
    router: Router
    on: str  # dashboard on, client keys may view
    off: str  # dashboard off
    admin_only: str  # dashboard on, client keys may not view

    def get(self, path: str, headers: dict[str, str] = ADMIN, base: str | None = None) -> Any:
        response = httpx.get(f"{base or self.on}{path}", headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def live(tmp_path_factory, artifact_dir, arc_dataset) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("dashboard-api")
    with ExitStack() as stack:
        urls = {
            model: stack.enter_context(serve_in_thread(create_replay_app(arc_dataset, model)))
            for model in POOL
        }
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        patch.setenv(KEYS_ENV, CLIENT_KEY)
        patch.setenv(ADMIN_ENV, ADMIN_TOKEN)
        router = make_registry(
            artifact_dir, folder / "registry.db", arc_dataset,
            {model: f"{url}/v1" for model, url in urls.items()},
        )  # fmt: skip
        common = {"client_keys_env": KEYS_ENV, "admin_token_env": ADMIN_ENV}
        servers = [
            stack.enter_context(serve_in_thread(create_app(router, GatewayConfig(**settings))))
            for settings in (
                {**common, "dashboard": True, "dashboard_client_keys": True},
                common,
                {**common, "dashboard": True},
            )
        ]
        yield Live(router, *servers)


def test_the_dashboard_is_off_unless_configured(live) -> None:
    for path in ("/ui", "/ui/static/dashboard.js", "/ui/api/pool"):
        response = httpx.get(f"{live.off}{path}", headers=ADMIN, timeout=10)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "dashboard_disabled"


def test_the_page_and_its_assets_ship_in_the_package(live) -> None:
    page = httpx.get(f"{live.on}/ui", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in ("/ui/static/dashboard.js", "/ui/static/dashboard.css"):
        assert asset in page.text
        response = httpx.get(f"{live.on}{asset}", timeout=10)
        assert response.status_code == 200 and response.content, asset
    # Offline: nothing is fetched from another host; and the page may load nothing else.
    assert "http://" not in page.text and "https://" not in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy


def test_views_need_the_admin_token_or_an_allowed_client_key(live) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}):
        response = httpx.get(f"{live.on}/ui/api/pool", headers=headers, timeout=10)
        assert response.status_code == 401, headers
        assert response.json()["error"]["type"] == "authentication_error"
    assert live.get("/ui/api/session") == {"role": "admin"}
    assert live.get("/ui/api/session", VIEWER) == {"role": "viewer"}
    live.get("/ui/api/traffic", VIEWER)
    # A client key is a viewer: the admin API still refuses it.
    refused = httpx.post(f"{live.on}/admin/models/{POOL[0]}/disable", headers=VIEWER, timeout=10)
    assert refused.status_code == 401
    # Where client keys are not allowed to view, they are refused like any wrong token.
    response = httpx.get(f"{live.admin_only}/ui/api/pool", headers=VIEWER, timeout=10)
    assert response.status_code == 401
    assert live.get("/ui/api/session", base=live.admin_only) == {"role": "admin"}


def test_the_pool_view_lists_every_model_with_its_price_and_state(live) -> None:
    view = live.get("/ui/api/pool")
    models = {m["name"]: m for m in view["models"]}
    assert set(models) == set(POOL)
    for name, model in models.items():
        assert model["enabled"] and model["servable"] and model["health"] == "ok"
        assert model["circuit"] == "closed"
        assert model["cost_per_query"] == pytest.approx(COSTS[name])
        assert model["source"] == f"recorded scores of {name!r}"
        assert model["n_scores"] > 0 and model["created_at"]
    assert view["policy"]["lambda"] == view["default_lambda"] is not None
    assert view["registry"] and view["artifact_path"]
    # A viewer is not told where the state lives.
    seen = live.get("/ui/api/pool", VIEWER)
    assert "registry" not in seen and "artifact_path" not in seen
    assert [m["name"] for m in seen["models"]] == [m["name"] for m in view["models"]]


def test_the_estimate_map_matches_the_registrys_scores(live) -> None:
    view = live.get("/ui/api/estimates")
    artifact = live.router.artifact
    pool = live.router.snapshot.pool
    assert view["available"] and view["models"] == list(pool.names)
    k = artifact.n_clusters
    assert len(view["clusters"]) == len(view["error"]) == len(view["evidence"]) == k
    assert sum(c["n_prompts"] for c in view["clusters"]) == len(artifact.prompt_ids)
    # Evidence: each model's scored representative prompts, cluster by cluster.
    for j, name in enumerate(pool.names):
        column = [row[j] for row in view["evidence"]]
        n_scored = int(np.isfinite(pool.scores[:, j]).sum())
        assert sum(column) == n_scored, name
        assert all(0 <= e <= c["n_prompts"] for e, c in zip(column, view["clusters"], strict=True))
    # The errors are the pool's Psi rows, cluster by cluster.
    assert view["error"][0][0] == pytest.approx(float(pool.features[0, 0]), abs=1e-6)
    texts = {" ".join(p.text.split()) for p in artifact.representative_prompts}
    for cluster in view["clusters"]:
        # A cluster of the training prompts may hold no representative prompt at all.
        assert len(cluster["typical_prompts"]) == min(3, cluster["n_prompts"])
        for typical in cluster["typical_prompts"]:
            assert typical.removeprefix("… ").rstrip("…") in " ".join(texts)
    # RouterBench's ARC prompts open with the same few-shot examples: those are cut ("… "), so
    # each cluster shows its own questions, not the shared preamble.
    shown = [t for c in view["clusters"] for t in c["typical_prompts"]]
    assert shown and all(t.startswith("… ") for t in shown)
    assert len(set(shown)) == len(shown)


def test_a_point_stored_from_the_tradeoff_is_the_point_it_showed(live) -> None:
    view = live.get("/ui/api/tradeoff")
    assert view["available"] and set(view["models"]) == set(POOL)
    points = view["points"]
    assert len(points) >= 3
    costs = [p["cost"] for p in points]
    qualities = [p["quality"] for p in points]
    assert costs == sorted(costs) and all(
        b > a for a, b in zip(qualities, qualities[1:], strict=False)
    )
    for point in points:
        assert sum(point["share"].values()) == pytest.approx(1.0)
    # The calibrated point is on the curve: calibration solved on the same estimates.
    calibrated = view["calibrated"]
    assert any(
        p["cost"] == pytest.approx(calibrated["cost"])
        and p["quality"] == pytest.approx(calibrated["quality"])
        for p in points
    )
    singles = {s["model"]: s for s in view["singles"]}
    assert singles[EXPENSIVE]["cost"] == pytest.approx(COSTS[EXPENSIVE])

    chosen = points[len(points) // 2]
    if chosen["cost"] == pytest.approx(calibrated["cost"]):
        chosen = points[len(points) // 2 + 1]
    stored = httpx.post(
        f"{live.on}/admin/recalibrate", json={"target_cost": chosen["cost"]}, headers=ADMIN
    )
    assert stored.status_code == 200, stored.text
    policy = stored.json()["policy"]
    assert policy["expected_cost"] == pytest.approx(chosen["cost"])
    assert policy["expected_quality"] == pytest.approx(chosen["quality"])
    after = live.get("/ui/api/tradeoff")["calibrated"]
    assert after["cost"] == pytest.approx(chosen["cost"])
    assert live.get("/ui/api/pool")["default_lambda"] == pytest.approx(policy["lam"])


def test_traffic_counts_the_requests_sent(live, unique_prompts) -> None:
    before = live.get("/ui/api/traffic")["totals"]
    answered: dict[str, int] = {}
    for prompt in unique_prompts[:6]:
        response = httpx.post(
            f"{live.on}/v1/chat/completions",
            json={"model": "uniroute", "messages": [{"role": "user", "content": prompt}]},
            headers=VIEWER,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        model = response.headers["x-uniroute-model"]
        answered[model] = answered.get(model, 0) + 1
    bad = httpx.post(f"{live.on}/v1/chat/completions", json={"model": "uniroute"},
                     headers=VIEWER, timeout=30)  # fmt: skip
    assert bad.status_code == 400
    after = live.get("/ui/api/traffic")
    totals = after["totals"]
    assert totals["requests"] - before["requests"] == 7
    assert totals["errors"] - before["errors"] == 1
    for model, count in answered.items():
        assert totals["by_model"][model] - before["by_model"].get(model, 0) == count
    expected_cost = sum(COSTS[m] * n for m, n in answered.items())
    assert totals["cost"] - before["cost"] == pytest.approx(expected_cost)
    assert len(after["buckets"]) == 60 and after["bucket_s"] == 60
    assert sum(b["requests"] for b in after["buckets"]) == totals["requests"]
    day = live.get("/ui/api/traffic?window=day")
    assert day["bucket_s"] == 900 and day["totals"]["requests"] == totals["requests"]
    refused = httpx.get(f"{live.on}/ui/api/traffic?window=week", headers=ADMIN, timeout=10)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "window"


def test_a_disabled_model_stays_in_the_pool_view(live) -> None:
    model = POOL[0]
    pool_changes.set_enabled(live.router, model, False)
    try:
        view = {m["name"]: m for m in live.get("/ui/api/pool")["models"]}
        assert not view[model]["enabled"] and view[model]["health"] == "disabled"
        assert model not in live.get("/ui/api/estimates")["models"]
    finally:
        pool_changes.set_enabled(live.router, model, True)


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_traffic_history_buckets_by_minute_and_forgets_after_a_day() -> None:
    clock = _Clock(1_000_000 * 60.0)
    history = TrafficHistory(clock)
    history.count_request("chat", "a", "200")
    history.count_request("route", "a", "200")  # a decision only: not traffic
    history.add_cost(0.5, 0.25)
    history.count_key("k1", "team-x", requests=1, spend=0.5)
    clock.now += 60 * 30
    history.count_request("completions", "b", "502")
    history.count_fallback()
    hour = history.window("hour")
    assert hour["totals"]["requests"] == 2 and hour["totals"]["errors"] == 1
    assert hour["totals"]["by_model"] == {"a": 1} and hour["totals"]["fallbacks"] == 1
    assert hour["keys"] == [{"key": "k1", "team": "team-x", "requests": 1, "spend": 0.5}]
    assert hour["teams"] == [{"team": "team-x", "requests": 1, "spend": 0.5}]
    assert [b["requests"] for b in hour["buckets"]].count(1) == 2
    clock.now += 60 * 45  # the first minute is now more than an hour old
    assert history.window("hour")["totals"]["requests"] == 1
    assert history.window("day")["totals"]["requests"] == 2
    clock.now += 86_400
    history.count_request("chat", "a", "200")
    assert history.window("day")["totals"]["requests"] == 1
    assert len(history._buckets) == 1
