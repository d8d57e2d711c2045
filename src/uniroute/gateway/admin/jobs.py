"""Background jobs of the admin API (endpoint onboarding), kept in the registry.

A job's record lives in the registry (``uniroute.registry.jobs``), so every replica on it lists
and polls the same jobs. The replica that starts a job runs it in a daemon thread of its own (a
slow onboarding, hundreds of upstream calls, neither blocks the event loop nor takes a routing
thread) and renews its lease while it runs; every replica also looks, every third of a lease,
for jobs whose lease ran out (their replica died) and resumes them from their stored request.
An onboarding resumed that way asks its endpoint only the prompts whose answers are not in the
registry's answer cache yet.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from uniroute.gateway.access_log import GATEWAY_LOGGER
from uniroute.registry.jobs import JobRecord, JobStore

logger = logging.getLogger(GATEWAY_LOGGER)

#: Progress is written to the registry at most this often (and at the last step).
_PROGRESS_EVERY_S = 0.25


class LeaseLostError(Exception):
    """The job is no longer this replica's (another claimed it, or it was released): stop."""


class JobProgress:
    """What a running job reports through; ``report`` also notices a lost lease."""

    def __init__(self, tracker: JobTracker, record: JobRecord) -> None:
        self.record = record
        self._tracker = tracker
        self._written = 0.0
        self.lost = False

    @property
    def resumed(self) -> bool:
        """Whether an earlier attempt (on some replica) ran this job before."""
        return self.record.attempts > 1

    def report(self, done: int, total: int | None = None, message: str | None = None) -> None:
        """``done`` of ``total`` steps; raises ``LeaseLostError`` once the job is not ours."""
        if self.lost:
            raise LeaseLostError(self.record.id)
        now = time.monotonic()
        last = total is not None and done >= total
        if message is None and not last and now - self._written < _PROGRESS_EVERY_S:
            return
        self._written = now
        tracker = self._tracker
        if not tracker.store.renew(
            self.record.id, tracker.owner, lease_s=tracker.lease_s, done=done, total=total,
            message=message,
        ):  # fmt: skip
            self.lost = True
            raise LeaseLostError(self.record.id)


#: A kind of job: given its stored request and its progress, does the work and returns the
#: result (JSON-serialisable); raising fails the job with the exception's message.
JobRunner = Callable[[Mapping[str, Any], JobProgress], dict[str, Any]]


class JobTracker:
    """Starts, renews and resumes this replica's jobs; reads every replica's from the registry."""

    def __init__(
        self,
        store: JobStore,
        owner: str,
        *,
        lease_s: float,
        max_attempts: int,
        runners: Mapping[str, JobRunner] | None = None,
    ) -> None:
        self.store = store
        self.owner = owner
        self.lease_s = float(lease_s)
        self.max_attempts = int(max_attempts)
        self.runners: dict[str, JobRunner] = dict(runners or {})
        self._running: dict[str, tuple[JobProgress, threading.Thread]] = {}
        self._lock = threading.Lock()

    def start(self, kind: str, subject: str, request: Mapping[str, Any]) -> JobRecord:
        """Record a new job in the registry and run it here, in a thread of its own.

        Refused with ``JobRunningError`` while a job about ``subject`` is unfinished anywhere.
        """
        if kind not in self.runners:
            raise KeyError(f"no runner for jobs of kind {kind!r}")
        record = self.store.create(kind, subject, request, owner=self.owner, lease_s=self.lease_s)
        self._launch(record)
        return record

    def resume_abandoned(self) -> list[JobRecord]:
        """Claim and run every job whose lease ran out (its replica stopped); returns them."""
        resumed = []
        while (
            claimed := self.store.claim_abandoned(
                self.owner, lease_s=self.lease_s, max_attempts=self.max_attempts
            )
        ) is not None:
            logger.info(
                "resuming an abandoned job",
                extra={"job": claimed.id, "subject": claimed.subject, "attempt": claimed.attempts},
            )
            if claimed.kind in self.runners:
                self._launch(claimed)
            else:  # written by a newer version: fail it rather than claim it forever
                self.store.finish(
                    claimed.id, self.owner, error=f"no runner for jobs of kind {claimed.kind!r}"
                )
            resumed.append(claimed)
        return resumed

    def renew_leases(self) -> None:
        """Extend the lease of every job running here (they may be between progress reports)."""
        with self._lock:
            running = list(self._running.values())
        for progress, _ in running:
            if not progress.lost and not self.store.renew(
                progress.record.id, self.owner, lease_s=self.lease_s
            ):
                progress.lost = True

    def get(self, job_id: str) -> JobRecord | None:
        """A job by id (from any replica), or None."""
        return self.store.get(job_id)

    def recent(self) -> list[JobRecord]:
        """The registry's newest jobs (every replica's), oldest first."""
        return self.store.list()

    def running_here(self) -> list[str]:
        """Ids of the jobs this replica is running."""
        with self._lock:
            return list(self._running)

    def wait(self, timeout: float) -> None:
        """Give the jobs running here up to ``timeout`` seconds in total to finish."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = [thread for _, thread in self._running.values()]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def release_unfinished(self) -> list[str]:
        """Hand the jobs still running here back to the registry, for another replica to take
        at once (at shutdown); their threads stop at their next progress report."""
        with self._lock:
            running = list(self._running.values())
        released = []
        for progress, _ in running:
            progress.lost = True
            if self.store.release(progress.record.id, self.owner):
                released.append(progress.record.id)
        return released

    # ------------------------------------------------------------------ internals
    def _launch(self, record: JobRecord) -> None:
        progress = JobProgress(self, record)
        thread = threading.Thread(
            target=self._run, args=(progress,), daemon=True, name=f"uniroute-job-{record.id}"
        )
        with self._lock:
            self._running[record.id] = (progress, thread)
        thread.start()

    def _run(self, progress: JobProgress) -> None:
        record = progress.record
        try:
            result = self.runners[record.kind](record.request, progress)
            if not self.store.finish(record.id, self.owner, result=result, message="done"):
                logger.warning("job finished after its lease was lost", extra={"job": record.id})
        except LeaseLostError:
            logger.warning("job given up: it is no longer this replica's", extra={"job": record.id})
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            logger.warning(
                "job failed",
                extra={"job": record.id, "error": error, "trace": traceback.format_exc(limit=5)},
            )
            try:
                self.store.finish(record.id, self.owner, error=error)
            except Exception:  # the registry is unreachable: the lease runs out, and it resumes
                logger.exception("job failure could not be recorded", extra={"job": record.id})
        finally:
            with self._lock:
                self._running.pop(record.id, None)
