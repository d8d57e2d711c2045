"""Background jobs kept in the registry, so every process on it sees them and any can finish them.

A job (today: the onboarding of a model from its endpoint) is a row of the ``jobs`` table: what
it is about, everything needed to run it again (``request``, JSON), its progress, and who runs
it. The process running a job holds a *lease* on it (``owner``, ``lease_expires``) and renews
it while it works; when the owner dies (killed, its host gone), the lease runs out and another
process claims the job and runs it again from its request, at most ``max_attempts`` times.
Claims, renewals and results are conditional updates inside the registry's write transaction,
so two processes never both hold a job, and a process that lost its lease cannot overwrite
what the new owner reports.

Leases are Unix times written by each process's clock: replicas on several hosts need clocks
that agree to well within a lease (NTP does).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uniroute.errors import JobRunningError, StateError
from uniroute.registry.backend import Backend

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
UNFINISHED = (QUEUED, RUNNING)

#: The columns of the jobs table, in the order ``_record`` reads them.
JOB_COLUMN_NAMES = (
    "id", "kind", "subject", "status", "request", "done", "total", "message", "error", "result",
    "owner", "lease_expires", "attempts", "created_at", "started_at", "finished_at",
    "updated_at",
)  # fmt: skip
_COLUMNS = ", ".join(JOB_COLUMN_NAMES)
_FINISHED_KEPT = 100


@dataclass(frozen=True)
class JobRecord:
    """One job as the registry holds it."""

    id: str
    kind: str
    subject: str
    status: str
    request: dict[str, Any]
    done: int
    total: int | None
    message: str
    error: str | None
    result: dict[str, Any] | None
    owner: str | None
    lease_expires: float | None
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float

    @property
    def finished(self) -> bool:
        """Whether the job has ended (succeeded or failed)."""
        return self.status not in UNFINISHED

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the admin API (the request is left out: it is the caller's own)."""
        end = self.finished_at or time.time()
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
            "replica": self.owner,
            "attempts": self.attempts,
            "seconds": round(end - self.started_at, 3) if self.started_at else 0.0,
        }


class JobStore:
    """The registry's ``jobs`` table: create, claim, renew, report and finish jobs."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def create(
        self, kind: str, subject: str, request: Mapping[str, Any], *, owner: str, lease_s: float
    ) -> JobRecord:
        """A new job about ``subject``, running and leased to ``owner`` from now on.

        Refused with ``JobRunningError`` while another job about the same subject is unfinished
        (checked in the same write, so two replicas cannot both start one).
        """
        now = time.time()
        job_id = f"{kind}-{uuid.uuid4().hex[:12]}"
        body = json.dumps(dict(request), sort_keys=True)
        with self._backend.write() as connection:
            running = connection.execute(
                "SELECT id, owner FROM jobs WHERE subject = ? AND status IN (?, ?)",
                (subject, *UNFINISHED),
            ).fetchone()
            if running is not None:
                raise JobRunningError(
                    f"{subject!r} is already being worked on by job {running[0]} "
                    f"(replica {running[1] or 'none yet'})"
                )
            connection.execute(
                "INSERT INTO jobs (id, kind, subject, status, request, owner, lease_expires, "
                "attempts, created_at, started_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
                (job_id, kind, subject, RUNNING, body, owner, now + lease_s, now, now, now),
            )
            # Finished jobs beyond the newest ones are forgotten; their effect is in the pool.
            connection.execute(
                "DELETE FROM jobs WHERE status IN (?, ?) AND id NOT IN (SELECT id FROM jobs "
                "WHERE status IN (?, ?) ORDER BY finished_at DESC LIMIT ?)",
                (SUCCEEDED, FAILED, SUCCEEDED, FAILED, _FINISHED_KEPT),
            )
        return self._expect(job_id)

    def claim_abandoned(self, owner: str, *, lease_s: float, max_attempts: int) -> JobRecord | None:
        """Take over the oldest unfinished job whose lease ran out (its owner stopped renewing),
        or None; a job already tried ``max_attempts`` times is failed instead."""
        now = time.time()
        with self._backend.write() as connection:
            while True:
                row = connection.execute(
                    "SELECT id, attempts, owner FROM jobs WHERE status IN (?, ?) "
                    "AND (lease_expires IS NULL OR lease_expires < ?) "
                    "ORDER BY created_at LIMIT 1",
                    (*UNFINISHED, now),
                ).fetchone()
                if row is None:
                    return None
                job_id, attempts, previous = row
                if attempts < max_attempts:
                    break
                connection.execute(
                    "UPDATE jobs SET status = ?, error = ?, owner = NULL, lease_expires = NULL, "
                    "finished_at = ?, updated_at = ? WHERE id = ?",
                    (
                        FAILED,
                        f"abandoned after {attempts} attempts (the last by replica "
                        f"{previous or 'unknown'} stopped before finishing)",
                        now,
                        now,
                        job_id,
                    ),
                )
            connection.execute(
                "UPDATE jobs SET status = ?, owner = ?, lease_expires = ?, "
                "attempts = attempts + 1, message = ?, started_at = COALESCE(started_at, ?), "
                "updated_at = ? WHERE id = ?",
                (
                    RUNNING,
                    owner,
                    now + lease_s,
                    f"resumed by replica {owner} (was {previous or 'unowned'})",
                    now,
                    now,
                    job_id,
                ),
            )
        return self._expect(job_id)

    def renew(
        self,
        job_id: str,
        owner: str,
        *,
        lease_s: float,
        done: int | None = None,
        total: int | None = None,
        message: str | None = None,
    ) -> bool:
        """Extend ``owner``'s lease and record progress; False when the job is no longer its own
        (another process claimed it, or it ended): the owner must then stop working on it."""
        now = time.time()
        with self._backend.write() as connection:
            cursor = connection.execute(
                "UPDATE jobs SET lease_expires = ?, done = COALESCE(?, done), "
                "total = COALESCE(?, total), message = COALESCE(?, message), updated_at = ? "
                "WHERE id = ? AND owner = ? AND status = ?",
                (now + lease_s, done, total, message, now, job_id, owner, RUNNING),
            )
            return cursor.rowcount == 1

    def finish(
        self,
        job_id: str,
        owner: str,
        *,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        message: str | None = None,
    ) -> bool:
        """End ``owner``'s job: succeeded with ``result``, or failed with ``error``; False when
        the job was no longer its own (nothing is written then)."""
        now = time.time()
        status = FAILED if error is not None else SUCCEEDED
        body = None if result is None else json.dumps(dict(result), sort_keys=True)
        with self._backend.write() as connection:
            cursor = connection.execute(
                "UPDATE jobs SET status = ?, result = ?, error = ?, "
                "message = COALESCE(?, message), lease_expires = NULL, finished_at = ?, "
                "updated_at = ? "
                "WHERE id = ? AND owner = ? AND status = ?",
                (status, body, error, message, now, now, job_id, owner, RUNNING),
            )
            return cursor.rowcount == 1

    def release(self, job_id: str, owner: str) -> bool:
        """Give a job back unfinished (its owner is shutting down): queued for another process
        to claim at once, without waiting for the lease to run out."""
        now = time.time()
        with self._backend.write() as connection:
            cursor = connection.execute(
                "UPDATE jobs SET status = ?, owner = NULL, lease_expires = NULL, message = ?, "
                "updated_at = ? WHERE id = ? AND owner = ? AND status = ?",
                (QUEUED, f"released by replica {owner} at shutdown", now, job_id, owner, RUNNING),
            )
            return cursor.rowcount == 1

    def get(self, job_id: str) -> JobRecord | None:
        """A job by id, or None."""
        with self._backend.read() as connection:
            row = connection.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return None if row is None else _record(row)

    def list(self, limit: int = 200) -> list[JobRecord]:
        """The newest ``limit`` jobs, oldest first."""
        with self._backend.read() as connection:
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM jobs ORDER BY created_at DESC, id LIMIT ?", (limit,)
            ).fetchall()
        return [_record(row) for row in reversed(rows)]

    def _expect(self, job_id: str) -> JobRecord:
        record = self.get(job_id)
        if record is None:  # only a concurrent DELETE of a running job could cause it
            raise StateError(f"job {job_id} vanished from the registry")
        return record


def _record(row: tuple) -> JobRecord:
    """The record of a row selected with ``_COLUMNS``."""
    (job_id, kind, subject, status, request, done, total, message, error, result, owner,
     lease, attempts, created, started, finished, updated) = row  # fmt: skip
    return JobRecord(
        id=job_id,
        kind=kind,
        subject=subject,
        status=status,
        request=json.loads(request),
        done=int(done),
        total=None if total is None else int(total),
        message=message,
        error=error,
        result=None if result is None else json.loads(result),
        owner=owner,
        lease_expires=lease,
        attempts=int(attempts),
        created_at=float(created),
        started_at=started,
        finished_at=finished,
        updated_at=float(updated),
    )
