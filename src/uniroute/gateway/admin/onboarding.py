"""The onboarding job: ask a model's endpoint the representative prompts, grade, add the model.

A job's stored request is the ``POST /admin/models`` body that started it, so any replica can
run it again from the registry alone: validated again by ``AddModelRequest``, the endpoint checked
again against that replica's allow-list, and the endpoint's answers taken from the registry's
answer cache where an earlier attempt already got them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from uniroute.deployment import Router, Snapshot, pool_changes
from uniroute.gateway.admin.jobs import JobProgress, JobRunner
from uniroute.gateway.admin.protocol import AddModelRequest
from uniroute.onboarding.upstream_hosts import EndpointPolicy

ONBOARDING_JOB = "onboard"


def onboarding_request(raw_body: Mapping[str, Any]) -> dict[str, Any]:
    """The stored request of an onboarding job started by this ``POST /admin/models`` body."""
    return {"body": dict(raw_body)}


def onboarding_runner(
    router: Router, endpoint_policy: EndpointPolicy, served: Callable[[Snapshot], None]
) -> JobRunner:
    """The function that runs (or resumes) onboarding jobs over ``router``; ``served`` is told
    of the snapshot that serves the new model."""

    def run(request: Mapping[str, Any], progress: JobProgress) -> dict[str, Any]:
        body = AddModelRequest.model_validate(request["body"])
        record = body.record
        replace = body.replace or _added_by_an_earlier_attempt(router, record.name, progress)
        total = len(router.artifact.representative_prompts)
        progress.report(0, total, "asking the endpoint the representative prompts")
        # The answers are cached in the registry (onboard_model's default), for a resumed run.
        onboarded = pool_changes.onboard_model(
            router,
            record,
            replace=replace,
            progress=False,
            on_progress=lambda done, total: progress.report(done, total),
            endpoint_policy=endpoint_policy,
            **body.onboarding.settings(),
        )
        served(router.snapshot)
        result = onboarded.result
        progress.report(total, total, "routable")
        return {
            "model": onboarded.added.record.to_dict(),
            "scores": len(result.scores),
            "per_task_accuracy": {
                task: {"accuracy": accuracy, "n": n}
                for task, (accuracy, n) in result.per_task_accuracy.items()
            },
            "answers_fetched": result.answers_fetched,
            "answers_from_cache": result.answers_from_cache,
            "failures": len(result.failures),
            "answers": onboarded.added.n_answers,
            "answer_keys": onboarded.added.n_answer_keys,
            "evidence_warnings": onboarded.added.evidence_warnings,
            # None: the model's capabilities were declared, so nothing was probed.
            "probes": None if onboarded.probes is None else onboarded.probes.to_dict(),
        }

    return run


def _added_by_an_earlier_attempt(router: Router, name: str, progress: JobProgress) -> bool:
    """Whether a previous attempt of this job already added the model before its replica died
    (between the add and recording the result): then this attempt replaces it, with the same
    answers from the cache, instead of failing on a model that exists."""
    if not progress.resumed or not router.registry.has_model(name):
        return False
    created = datetime.fromisoformat(router.registry.get_model(name).created_at)
    job_began = datetime.fromtimestamp(int(progress.record.created_at), UTC)
    return created >= job_began
