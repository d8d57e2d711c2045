"""Jobs and the answer cache in the registry, on both backends: leases, claims, results."""

from __future__ import annotations

import threading

import pytest

from tests.registry.postgres import RegistryBackend
from uniroute.errors import JobRunningError
from uniroute.registry import Registry
from uniroute.registry.jobs import FAILED, QUEUED, RUNNING, SUCCEEDED

REQUEST = {"record": {"name": "new", "endpoint": "http://127.0.0.1:9/v1"}, "replace": False}


def test_a_job_is_created_running_and_leased_to_its_replica(backend: RegistryBackend) -> None:
    with Registry(backend.new_location()) as registry:
        job = registry.jobs.create("onboard", "new", REQUEST, owner="a", lease_s=30.0)
        assert (job.status, job.owner, job.attempts, job.request) == (RUNNING, "a", 1, REQUEST)
        assert job.lease_expires is not None and job.lease_expires > job.created_at + 29
        assert registry.jobs.get(job.id) == job and registry.jobs.list() == [job]
        assert registry.jobs.get("onboard-missing") is None
        # Jobs are not pool changes: nobody re-reads the pool for them.
        assert registry.pool_version() == 0


def test_one_unfinished_job_per_subject(backend: RegistryBackend) -> None:
    with Registry(backend.new_location()) as registry:
        first = registry.jobs.create("onboard", "new", REQUEST, owner="a", lease_s=30.0)
        with pytest.raises(JobRunningError, match=rf"job {first.id} \(replica a\)"):
            registry.jobs.create("onboard", "new", REQUEST, owner="b", lease_s=30.0)
        registry.jobs.create("onboard", "other", REQUEST, owner="b", lease_s=30.0)
        assert registry.jobs.finish(first.id, "a", result={"scores": 3})
        again = registry.jobs.create("onboard", "new", REQUEST, owner="b", lease_s=30.0)
        assert again.id != first.id


def test_progress_and_results_are_written_only_by_the_owner(backend: RegistryBackend) -> None:
    with Registry(backend.new_location()) as registry:
        job = registry.jobs.create("onboard", "new", REQUEST, owner="a", lease_s=30.0)
        assert registry.jobs.renew(job.id, "a", lease_s=30.0, done=3, total=10, message="asking")
        assert not registry.jobs.renew(job.id, "b", lease_s=30.0, done=9)
        assert not registry.jobs.finish(job.id, "b", result={"stolen": True})
        seen = registry.jobs.get(job.id)
        assert (seen.done, seen.total, seen.message, seen.status) == (3, 10, "asking", RUNNING)
        assert registry.jobs.renew(job.id, "a", lease_s=30.0)  # a bare renewal keeps progress
        assert registry.jobs.get(job.id).done == 3
        assert registry.jobs.finish(job.id, "a", result={"scores": 10}, message="routable")
        done = registry.jobs.get(job.id)
        assert (done.status, done.result, done.message, done.lease_expires) == (
            SUCCEEDED, {"scores": 10}, "routable", None,
        )  # fmt: skip
        assert done.finished and done.to_dict()["progress"]["fraction"] == 0.3
        # A finished job is nobody's: no renewal, no second result.
        assert not registry.jobs.renew(job.id, "a", lease_s=30.0)
        assert not registry.jobs.finish(job.id, "a", error="late")


def test_a_job_whose_lease_ran_out_is_claimed_by_another_replica(
    backend: RegistryBackend,
) -> None:
    with Registry(backend.new_location()) as registry:
        live = registry.jobs.create("onboard", "live", REQUEST, owner="a", lease_s=30.0)
        dead = registry.jobs.create("onboard", "new", REQUEST, owner="a", lease_s=-1.0)
        claimed = registry.jobs.claim_abandoned("b", lease_s=30.0, max_attempts=3)
        assert claimed is not None and claimed.id == dead.id
        assert (claimed.owner, claimed.attempts, claimed.status) == ("b", 2, RUNNING)
        assert "resumed by replica b (was a)" in claimed.message
        assert claimed.started_at == dead.started_at
        # Nothing else is abandoned; the replica that lost the job cannot report on it.
        assert registry.jobs.claim_abandoned("c", lease_s=30.0, max_attempts=3) is None
        assert not registry.jobs.renew(dead.id, "a", lease_s=30.0, done=5)
        assert not registry.jobs.finish(dead.id, "a", error="I was killed")
        assert registry.jobs.finish(dead.id, "b", error="endpoint gone")
        assert registry.jobs.get(dead.id).status == FAILED
        assert registry.jobs.get(live.id).owner == "a"


def test_a_job_tried_too_often_fails_instead_of_being_claimed(backend: RegistryBackend) -> None:
    with Registry(backend.new_location()) as registry:
        job = registry.jobs.create("onboard", "new", REQUEST, owner="a", lease_s=-1.0)
        assert registry.jobs.claim_abandoned("b", lease_s=-1.0, max_attempts=2) is not None
        assert registry.jobs.claim_abandoned("c", lease_s=30.0, max_attempts=2) is None
        failed = registry.jobs.get(job.id)
        assert failed.status == FAILED and failed.owner is None
        assert failed.error == (
            "abandoned after 2 attempts (the last by replica b stopped before finishing)"
        )


def test_a_released_job_is_claimed_at_once(backend: RegistryBackend) -> None:
    with Registry(backend.new_location()) as registry:
        job = registry.jobs.create("onboard", "new", REQUEST, owner="a", lease_s=30.0)
        assert registry.jobs.release(job.id, "a")
        queued = registry.jobs.get(job.id)
        assert (queued.status, queued.owner) == (QUEUED, None)
        assert "released by replica a" in queued.message
        with pytest.raises(JobRunningError):  # still unfinished
            registry.jobs.create("onboard", "new", REQUEST, owner="b", lease_s=30.0)
        claimed = registry.jobs.claim_abandoned("b", lease_s=30.0, max_attempts=3)
        assert claimed is not None and claimed.owner == "b"


def test_racing_replicas_claim_an_abandoned_job_once(backend: RegistryBackend) -> None:
    location = backend.new_location()
    with Registry(location) as registry:
        job = registry.jobs.create("onboard", "new", REQUEST, owner="dead", lease_s=-1.0)
    claims: list[object] = []
    start = threading.Barrier(6)

    def claim(owner: str) -> None:
        with Registry(location) as own:
            start.wait()
            claims.append(own.jobs.claim_abandoned(owner, lease_s=30.0, max_attempts=3))

    threads = [threading.Thread(target=claim, args=(f"r{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    won = [c for c in claims if c is not None]
    assert len(claims) == 6 and len(won) == 1 and won[0].id == job.id
    with Registry(location) as registry:
        assert registry.jobs.get(job.id).owner == won[0].owner


def test_only_the_newest_finished_jobs_are_kept(backend: RegistryBackend) -> None:
    with Registry(backend.new_location()) as registry:
        for i in range(103):
            job = registry.jobs.create("onboard", f"m{i}", REQUEST, owner="a", lease_s=30.0)
            registry.jobs.finish(job.id, "a", result={})
        kept = registry.jobs.list()
        # The newest 100 finished ones, and the one created last (running when it was created).
        assert 100 <= len(kept) <= 101 and kept[-1].subject == "m102"
        assert "m0" not in {j.subject for j in kept}


def test_the_answer_cache_is_shared_through_the_registry(backend: RegistryBackend) -> None:
    location = backend.new_location()
    settings = {"api_style": "chat", "max_tokens": 64}
    with Registry(location) as registry:
        registry.answer_cache.put("new", "http://h:1/v1/", "p0", "What?", "A", settings)
        registry.answer_cache.put("new", "http://h:1/v1", "p1", "Why?", "B", settings)
        registry.answer_cache.put("new", "http://h:1/v1", "p1", "Why?", "C", settings)  # replaced
        assert registry.pool_version() == 0
    with Registry(location) as other:
        cache = other.answer_cache
        prompts = [("p0", "What?"), ("p1", "Why?"), ("p2", "Who?")]
        assert cache.get_many("new", "http://h:1/v1", prompts, settings) == {"p0": "A", "p1": "C"}
        # A changed prompt text or changed settings make an entry stale.
        assert cache.get_many("new", "http://h:1/v1", [("p0", "What now?")], settings) == {}
        assert cache.get_many("new", "http://h:1/v1", prompts, {**settings, "max_tokens": 8}) == {}
        assert cache.count() == 2 and cache.count("new", "http://h:1/v1/") == 2
        assert cache.count("other") == 0
        assert cache.clear("new") == 2 and cache.count() == 0
