"""Background jobs of the admin API (endpoint onboarding), whose progress clients poll.

A job runs in a daemon thread of its own, so a slow onboarding (hundreds of upstream calls)
neither blocks the event loop nor takes a routing thread. Job records live in memory only: a
restarted gateway forgets them, but a finished job's effect is already in the registry.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from uniroute.gateway.access_log import GATEWAY_LOGGER

logger = logging.getLogger(GATEWAY_LOGGER)

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"


@dataclass
class Job:
    """One background job and what is known of its progress."""

    id: str
    kind: str
    subject: str
    status: str = QUEUED
    done: int = 0
    total: int | None = None
    message: str = ""
    error: str | None = None
    result: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None

    def report(self, done: int, total: int | None = None, message: str = "") -> None:
        """Progress callback for the job's function: ``done`` of ``total`` steps."""
        self.done = int(done)
        if total is not None:
            self.total = int(total)
        if message:
            self.message = message

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the admin API."""
        elapsed_end = self.finished_at or time.time()
        return {
            "id": self.id,
            "kind": self.kind,
            "subject": self.subject,
            "status": self.status,
            "progress": {
                "done": self.done,
                "total": self.total,
                "fraction": (self.done / self.total) if self.total else None,
            },
            "message": self.message,
            "error": self.error,
            "result": self.result,
            "seconds": round(elapsed_end - self.started_at, 3) if self.started_at else 0.0,
        }


class JobTracker:
    """Starts jobs in threads and keeps their records (the newest ``keep`` finished ones)."""

    def __init__(self, keep: int = 100) -> None:
        self.keep = keep
        self._jobs: dict[str, Job] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def start(self, kind: str, subject: str, func: Callable[[Job], dict[str, Any]]) -> Job:
        """Run ``func(job)`` in a new thread; its return value becomes the job's result."""
        with self._lock:
            job = Job(id=f"{kind}-{next(self._ids)}-{int(time.time())}", kind=kind, subject=subject)
            self._jobs[job.id] = job
            self._forget_old()
        thread = threading.Thread(
            target=self._run, args=(job, func), daemon=True, name=f"uniroute-job-{job.id}"
        )
        self._threads[job.id] = thread
        thread.start()
        return job

    def _run(self, job: Job, func: Callable[[Job], dict[str, Any]]) -> None:
        job.status, job.started_at = RUNNING, time.time()
        try:
            job.result = func(job)
            job.status = SUCCEEDED
        except Exception as exc:
            job.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            job.status = FAILED
            logger.warning(
                "job failed",
                extra={"job": job.id, "error": job.error, "trace": traceback.format_exc(limit=5)},
            )
        finally:
            job.finished_at = time.time()

    def get(self, job_id: str) -> Job | None:
        """A job by id, or None."""
        with self._lock:
            return self._jobs.get(job_id)

    def list(self) -> list[Job]:
        """Every job still kept, oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def running_for(self, subject: str) -> Job | None:
        """The unfinished job about ``subject`` (a model name), if there is one."""
        with self._lock:
            for job in self._jobs.values():
                if job.subject == subject and job.status in (QUEUED, RUNNING):
                    return job
        return None

    def wait(self, timeout: float) -> None:
        """Give running jobs up to ``timeout`` seconds in total to finish (at shutdown)."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.status in (SUCCEEDED, FAILED)]
        for job in finished[: max(0, len(finished) - self.keep)]:
            self._jobs.pop(job.id, None)
            self._threads.pop(job.id, None)
