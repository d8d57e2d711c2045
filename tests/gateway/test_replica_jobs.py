"""An onboarding job on two replicas of one PostgreSQL registry: started on A, polled on B, and
finished by B after A is SIGKILLed mid-job, with no prompt answered twice by the endpoint.

The endpoint (a replay server of this module's own) answers slowly, so the job is seen
half-way; then it hangs every new request, so that the requests A has in flight when it dies
are never answered — every answer the endpoint gave reached A and was committed to the
registry's answer cache before the kill. B resumes the job when A's lease runs out and asks
only the prompts without a cached answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.gateway.support import ADMIN_TOKEN, MID, TO_ONBOARD, child_env, make_registry
from uniroute.registry import Registry
from uniroute.testing.harness import wait_for_job, wait_until, write_config
from uniroute.testing.postgres import ClusterUnavailableError, PostgresCluster
from uniroute.testing.process import GatewayProcess
from uniroute.testing.replay import ReplayServerProcess

pytestmark = pytest.mark.slow

AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}
LEASE_S = 1.5
#: Answers the endpoint gives before it starts hanging, at least (A is killed then).
BEFORE_THE_KILL = 12


@dataclass
class Fleet:
    url: str
    a: GatewayProcess
    b: GatewayProcess
    endpoint: ReplayServerProcess
    n_prompts: int


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, arc_artifact, arc_dataset, arc_file, replays) -> Iterator[Fleet]:
    """Replicas A and B (admin API on, 1.5 s job leases) on one database; the pool holds MID."""
    try:
        cluster = PostgresCluster().start()
    except ClusterUnavailableError as exc:
        pytest.fail(f"no PostgreSQL server for the replica job tests: {exc}", pytrace=False)
    try:
        url = cluster.create_database()
        make_registry(arc_artifact.path, url, arc_dataset, {MID: replays[MID].v1_url},
                      calibrate=False)  # fmt: skip
        config = write_config(tmp_path_factory.mktemp("jobs") / "gw.json", job_lease_s=LEASE_S)
        env = child_env(UNIROUTE_ADMIN_TOKEN=ADMIN_TOKEN)
        with (
            ReplayServerProcess(arc_file, TO_ONBOARD, env=child_env()) as endpoint,
            GatewayProcess(arc_artifact.path, url, config=config, env=env) as a,
            GatewayProcess(arc_artifact.path, url, config=config, env=env) as b,
        ):
            yield Fleet(url, a, b, endpoint, len(arc_artifact.prompt_ids))
    finally:
        cluster.stop()


def _job(gateway: GatewayProcess, job_id: str) -> dict:
    response = httpx.get(f"{gateway.base_url}/admin/jobs/{job_id}", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["job"]


def test_a_job_of_a_killed_replica_is_finished_by_another_asking_nothing_twice(
    fleet: Fleet,
) -> None:
    fleet.endpoint.set_fault(delay_ms=60, reset_stats=True)
    # No capability probes: the endpoint's counts are then the representative prompts alone.
    options = {"concurrency": 2, "timeout": 60, "retries": 0, "probe_capabilities": False}
    body = {"name": TO_ONBOARD, "cost": 0.0004, "endpoint": fleet.endpoint.v1_url,
            "onboard": True, "onboarding": options}  # fmt: skip
    started = httpx.post(f"{fleet.a.base_url}/admin/models", json=body, headers=AUTH, timeout=30)
    assert started.status_code == 202, started.text
    job_id = started.json()["job"]["id"]
    owner_a = started.json()["job"]["replica"]

    # Visible and pollable from B while A runs it; a second start, on either replica, is refused.
    wait_until(lambda: _job(fleet.b, job_id)["progress"]["done"] >= BEFORE_THE_KILL, 60,
               "the job made no progress on A")  # fmt: skip
    seen_on_b = _job(fleet.b, job_id)
    assert (seen_on_b["status"], seen_on_b["replica"]) == ("running", owner_a)
    again = httpx.post(f"{fleet.b.base_url}/admin/models", json=body, headers=AUTH, timeout=30)
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_running"

    # From now on the endpoint answers nothing new; what it answered reaches A first.
    fleet.endpoint.set_fault(hostile="hang")
    time.sleep(0.5)
    fleet.a.process.kill()
    fleet.a.process.wait(10)
    answered_before_kill = fleet.endpoint.stats()["answered"]
    with Registry(fleet.url) as registry:
        assert registry.answer_cache.count(TO_ONBOARD) == answered_before_kill
    assert BEFORE_THE_KILL <= answered_before_kill < fleet.n_prompts
    fleet.endpoint.set_fault(hostile=None)

    job = wait_for_job(fleet.b.base_url, f"/admin/jobs/{job_id}", AUTH, timeout=60)
    assert job["status"] == "succeeded", job
    assert job["replica"] != owner_a and job["attempts"] == 2
    result = job["result"]
    assert result["answers_from_cache"] == answered_before_kill
    assert result["answers_from_cache"] + result["answers_fetched"] == fleet.n_prompts
    stats = fleet.endpoint.stats()
    assert stats["prompts_answered_twice"] == 0, stats
    assert stats["distinct_prompts_answered"] == stats["answered"] == fleet.n_prompts
    print(
        f"\nonboarding job {job_id}: {answered_before_kill} of {fleet.n_prompts} prompts answered "
        f"before replica A was killed, {result['answers_fetched']} asked by replica B after "
        f"it resumed ({job['seconds']:.1f} s in all); prompts answered twice: "
        f"{stats['prompts_answered_twice']}"
    )
    # B serves the model it finished onboarding.
    models = httpx.get(f"{fleet.b.base_url}/v1/models", timeout=10).json()["data"]
    assert TO_ONBOARD in {m["id"] for m in models}
