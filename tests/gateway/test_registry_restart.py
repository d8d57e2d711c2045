"""A PostgreSQL restart under traffic: the gateway routes on its last pool and reconnects.

The gateway's registry is a database on its own throwaway cluster. While requests keep coming,
the server is stopped (as an operator's restart does: clients disconnected) and started again:
no client request fails, ``/readyz`` stays 200 and says it serves the last pool while the
database is away, and afterwards a model added by another process is routed to, so the gateway
has reconnected by itself.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.gateway.support import MID, child_env, make_registry
from uniroute.registry import ModelCost, ModelRecord, Registry
from uniroute.testing.harness import recorded_scores, write_config
from uniroute.testing.postgres import ClusterUnavailableError, PostgresCluster
from uniroute.testing.process import GatewayProcess
from uniroute.testing.replay import start_replays

pytestmark = pytest.mark.slow

ADDED = "claude-v2"


@pytest.fixture
def own_cluster():
    """A PostgreSQL server of this test's own (it is restarted: no other test may use it)."""
    try:
        cluster = PostgresCluster().start()
    except ClusterUnavailableError as exc:
        pytest.fail(f"no PostgreSQL server for the restart test: {exc}", pytrace=False)
    yield cluster
    cluster.stop()


def _traffic(base_url: str, prompts: list[str], stop: threading.Event, outcomes: list) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        i = 0
        while not stop.is_set():
            body = {
                "model": MID,
                "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
            }
            try:
                outcomes.append(client.post("/v1/chat/completions", json=body).status_code)
            except httpx.HTTPError as exc:
                outcomes.append(type(exc).__name__)
            i += 1


def test_a_database_restart_under_traffic_fails_no_request(
    own_cluster, arc_file, arc_artifact, arc_dataset, unique_prompts, tmp_path
) -> None:
    url = own_cluster.create_database()
    replays = start_replays(arc_file, [MID], env=child_env())
    try:
        make_registry(arc_artifact.path, url, arc_dataset, {MID: replays[MID].v1_url},
                      calibrate=False)  # fmt: skip
        config = write_config(tmp_path / "gateway.json", registry_poll_s=0.2)
        with GatewayProcess(arc_artifact.path, url, config=config, env=child_env()) as gateway:
            base = gateway.base_url
            stop, outcomes = threading.Event(), []
            worker = threading.Thread(target=_traffic, args=(base, unique_prompts, stop, outcomes))
            worker.start()
            try:
                time.sleep(1.0)
                own_cluster.stop_server()
                time.sleep(1.0)
                down = httpx.get(base + "/readyz", timeout=10)
                served_while_down = len(outcomes)
                time.sleep(1.0)
                served_while_down = len(outcomes) - served_while_down
                own_cluster.start_server()
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    back = httpx.get(base + "/readyz", timeout=10).json()
                    if back["registry_readable"]:
                        break
                    time.sleep(0.2)
                with Registry(url) as registry:  # another process adds a model afterwards
                    scores = recorded_scores(arc_dataset, ADDED, arc_artifact.prompt_ids)
                    record = ModelRecord(name=ADDED, cost=ModelCost(per_query=0.001),
                                         endpoint=replays[MID].v1_url)  # fmt: skip
                    registry.add_model(record, scores)
                seen: set[str] = set()
                while time.monotonic() < deadline + 15 and ADDED not in seen:
                    models = httpx.get(base + "/v1/models", timeout=10).json()["data"]
                    seen = {m["id"] for m in models}
                    time.sleep(0.2)
            finally:
                stop.set()
                worker.join(timeout=30)
    finally:
        for server in replays.values():
            server.stop()
    assert down.status_code == 200, down.text
    assert down.json()["registry_readable"] is False
    assert down.json()["serving_last_snapshot"] is True
    assert back["registry_readable"] is True
    assert ADDED in seen, "the gateway did not read the registry again after the restart"
    assert served_while_down > 10, served_while_down
    failed = [o for o in outcomes if o != 200]
    print(f"database restart: {len(outcomes)} requests, {len(failed)} failed, "
          f"{served_while_down} served in the second the database was down")  # fmt: skip
    assert not failed and len(outcomes) > 50, (failed[:5], len(outcomes))
