"""The gateway's job tracker over the registry's jobs: run, report, fail, lose, resume, release."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from uniroute.errors import JobRunningError
from uniroute.gateway.admin.jobs import JobProgress, JobTracker, LeaseLostError
from uniroute.registry import Registry
from uniroute.registry.jobs import FAILED, QUEUED, RUNNING, SUCCEEDED


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    with Registry(tmp_path / "pool.db") as opened:
        yield opened


def _tracker(registry: Registry, owner: str, runner, lease_s: float = 30.0) -> JobTracker:
    return JobTracker(
        registry.jobs, owner, lease_s=lease_s, max_attempts=3, runners={"onboard": runner}
    )


def test_a_job_reports_progress_and_its_result_to_the_registry(registry: Registry) -> None:
    def work(request, progress: JobProgress):
        for done in range(1, 4):
            progress.report(done, 3)
        return {"answer": request["question"] * 2}

    tracker = _tracker(registry, "a", work)
    job = tracker.start("onboard", "model-a", {"question": 21})
    tracker.wait(10)
    record = registry.jobs.get(job.id).to_dict()
    assert record["status"] == SUCCEEDED and record["result"] == {"answer": 42}
    assert record["progress"] == {"done": 3, "total": 3, "fraction": 1.0}
    assert record["replica"] == "a" and tracker.running_here() == []
    # Another tracker on the same registry (another replica) sees the same job.
    assert _tracker(registry, "b", work).get(job.id).to_dict() == record


def test_a_failed_job_keeps_the_error(registry: Registry) -> None:
    def work(request, progress):
        raise ValueError("endpoint unreachable")

    tracker = _tracker(registry, "a", work)
    job = tracker.start("onboard", "model-b", {})
    tracker.wait(10)
    failed = registry.jobs.get(job.id)
    assert failed.status == FAILED and failed.error == "ValueError: endpoint unreachable"


def test_a_second_job_for_a_model_being_onboarded_is_refused(registry: Registry) -> None:
    release = threading.Event()

    def work(request, progress):
        release.wait(10)
        return {}

    tracker = _tracker(registry, "a", work)
    tracker.start("onboard", "model-c", {})
    try:
        with pytest.raises(JobRunningError):
            _tracker(registry, "b", work).start("onboard", "model-c", {})
    finally:
        release.set()
        tracker.wait(10)


def test_a_job_whose_lease_was_taken_stops_at_its_next_report(registry: Registry) -> None:
    reached, go_on, stopped = threading.Event(), threading.Event(), []

    def work(request, progress):
        progress.report(1, 10)
        reached.set()
        go_on.wait(10)
        try:
            progress.report(2, 10)
        except LeaseLostError:
            stopped.append(True)
            raise
        return {"finished": "by a"}

    tracker = _tracker(registry, "a", work, lease_s=0.2)
    job = tracker.start("onboard", "model-d", {})
    assert reached.wait(10)
    # A's lease runs out while it is stuck; B claims the job and finishes it.
    threading.Event().wait(0.4)  # past the lease and the progress-write interval
    resumed = []

    def finish_on_b(request, progress):
        resumed.append(progress.resumed)
        return {"finished": "by b"}

    b = _tracker(registry, "b", finish_on_b)
    assert [j.id for j in b.resume_abandoned()] == [job.id]
    b.wait(10)
    go_on.set()
    tracker.wait(10)
    done = registry.jobs.get(job.id)
    assert stopped == [True] and resumed == [True]
    assert (done.status, done.result, done.owner, done.attempts) == (
        SUCCEEDED, {"finished": "by b"}, "b", 2,
    )  # fmt: skip


def test_renewed_leases_keep_a_slow_job_its_own(registry: Registry) -> None:
    go_on = threading.Event()

    def work(request, progress):
        go_on.wait(10)
        return {}

    tracker = _tracker(registry, "a", work, lease_s=0.3)
    job = tracker.start("onboard", "model-e", {})
    other = _tracker(registry, "b", work)
    for _ in range(6):  # 0.6 s, twice the lease, renewed every 0.1 s
        tracker.renew_leases()
        assert other.resume_abandoned() == []
        threading.Event().wait(0.1)
    go_on.set()
    tracker.wait(10)
    assert registry.jobs.get(job.id).status == SUCCEEDED


def test_jobs_released_at_shutdown_are_resumed_at_once(registry: Registry) -> None:
    started, go_on = threading.Event(), threading.Event()

    def work(request, progress):
        started.set()
        go_on.wait(10)
        progress.report(1, 2)  # raises: released
        return {"finished": "by a"}

    tracker = _tracker(registry, "a", work)
    job = tracker.start("onboard", "model-f", {})
    assert started.wait(10)
    assert tracker.release_unfinished() == [job.id]
    assert registry.jobs.get(job.id).status == QUEUED
    go_on.set()
    tracker.wait(10)
    assert registry.jobs.get(job.id).status == QUEUED  # A's thread did not finish it
    b = _tracker(registry, "b", lambda request, progress: {"finished": "by b"})
    assert [j.id for j in b.resume_abandoned()] == [job.id]
    b.wait(10)
    assert registry.jobs.get(job.id).result == {"finished": "by b"}


def test_an_abandoned_job_of_an_unknown_kind_is_failed_not_held(registry: Registry) -> None:
    registry.jobs.create("reindex", "x", {}, owner="newer", lease_s=-1.0)
    tracker = _tracker(registry, "a", lambda request, progress: {})
    [claimed] = tracker.resume_abandoned()
    record = registry.jobs.get(claimed.id)
    assert record.status == FAILED and "no runner for jobs of kind 'reindex'" in record.error
    assert RUNNING not in {j.status for j in registry.jobs.list()}
