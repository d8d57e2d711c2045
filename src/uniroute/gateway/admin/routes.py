"""The admin API: change the model pool of a running gateway (behind a bearer token).

Every change goes through :mod:`uniroute.deployment.pool_changes`, the functions the command line
calls: it is written to the registry (so it persists and other processes see it) and the
router is refreshed before the handler answers, so it takes effect without a restart. A refused
change is answered with its error's status and code (404 unknown model, 409 model exists, 503
registry unavailable, 400 otherwise). An endpoint is checked, before anything is done, by the
endpoint rule (400 naming ``endpoint``) and by the gateway's ``endpoint_policy`` (its
``upstream_allowlist``: 400 ``endpoint_not_allowed``).

==========================================  ===================================================
``GET    /admin/pool``                      artifact, registry, policy and breaker states
``GET    /admin/models``                    every registered model (enabled or not)
``POST   /admin/models``                    add a model with ``scores``, or ``onboard: true``
                                            to start an endpoint-onboarding job (202);
                                            ``upstream_model`` names it for its endpoint
``DELETE /admin/models/{name}``             remove a model
``POST   /admin/models/{name}/enable``      put a model back in rotation
``POST   /admin/models/{name}/disable``     take a model out of rotation (kept in the registry)
``POST   /admin/models/{name}/cost``        change its price
``POST   /admin/recalibrate``               solve a target for the current pool (or the stored
                                            target again, with an empty body)
``GET    /admin/jobs`` / ``/admin/jobs/{id}``  onboarding jobs and their progress
==========================================  ===================================================
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from uniroute.deployment import pool_changes
from uniroute.errors import RegistryError
from uniroute.gateway.admin.jobs import Job
from uniroute.gateway.admin.protocol import AddModelRequest, PriceRequest, RecalibrateRequest
from uniroute.gateway.body import json_body, validate
from uniroute.gateway.dependencies import Gateway, require_admin
from uniroute.gateway.errors import ApiError
from uniroute.registry import ModelRecord

ANSWER_CACHE_FILE = "answers.sqlite3"


def _model_name(request: Request) -> str:
    return request.path_params["name"]


async def pool_info(request: Request) -> Response:
    """GET /admin/pool."""
    gateway = require_admin(request)
    await gateway.refresh()
    snapshot = gateway.router.snapshot
    info = gateway.router.describe()
    info["servable_models"] = sorted(snapshot.pool.servable)
    info["most_accurate_model"] = snapshot.pool.most_accurate()
    info["circuit_breakers"] = gateway.breakers.states()
    # Enabled models an older version stored with an endpoint or key variable refused today.
    info["not_served"] = snapshot.problems
    return JSONResponse(info)


async def list_models(request: Request) -> Response:
    """GET /admin/models."""
    gateway = require_admin(request)
    registry = gateway.router.registry
    records, counts = await anyio.to_thread.run_sync(
        lambda: (registry.list_models(), registry.score_counts())
    )
    servable = set(gateway.router.snapshot.pool.servable)
    models = []
    for record in records:
        entry = record.to_dict()
        entry["n_scores"] = counts.get(record.name, 0)
        entry["servable"] = record.name in servable
        entry["circuit"] = gateway.breakers.get(record.name).state
        models.append(entry)
    return JSONResponse({"models": models})


async def add_model(request: Request) -> Response:
    """POST /admin/models: add with scores (201) or start an onboarding job (202)."""
    gateway = require_admin(request)
    body = validate(AddModelRequest, await json_body(request, gateway.config))
    record, router = body.record, gateway.router
    started = time.perf_counter()
    await anyio.to_thread.run_sync(_check_endpoint_allowed, gateway, record)
    await anyio.to_thread.run_sync(pool_changes.check_can_add, router, record.name, body.replace)
    if body.onboard:
        return _start_onboarding(gateway, body)
    assert body.scores is not None
    added = await gateway.change_pool(
        pool_changes.add_scored_model,
        router,
        record,
        body.scores,
        answers=body.answers,
        replace=body.replace,
        source=f"scores of model {record.name!r}",
        endpoint_policy=gateway.endpoint_policy,
    )
    return JSONResponse(
        {
            "model": added.record.to_dict(),
            "matched_prompts": added.n_matched,
            "representative_prompts": added.n_representative,
            "unknown_prompt_ids": added.unknown_ids[:20],
            "n_unknown_prompt_ids": len(added.unknown_ids),
            "evidence_warnings": added.evidence_warnings,
            "answers": added.n_answers,
            "answer_keys": added.n_answer_keys,
            "seconds_to_routable": round(time.perf_counter() - started, 4),
            "servable": record.name in router.snapshot.pool.servable,
        },
        status_code=201,
    )


def _check_endpoint_allowed(gateway: Gateway, record: ModelRecord) -> None:
    """A 400 ``endpoint_not_allowed`` when the gateway's policy refuses the record's endpoint."""
    try:
        pool_changes.check_endpoint_allowed(record, gateway.endpoint_policy)
    except RegistryError as exc:
        raise ApiError(400, str(exc), param="endpoint", code="endpoint_not_allowed") from None


def _start_onboarding(gateway: Gateway, body: AddModelRequest) -> Response:
    """Start the onboarding of ``body``'s model as a background job (202 with its poll URL)."""
    record, router = body.record, gateway.router
    if gateway.jobs.running_for(record.name) is not None:
        raise ApiError(
            409,
            f"model {record.name!r} is already being onboarded",
            param="name",
            code="job_running",
        )
    cache_dir = gateway.config.onboarding_cache_dir
    cache_path = None if cache_dir is None else f"{cache_dir.rstrip('/')}/{ANSWER_CACHE_FILE}"
    n_prompts = len(router.artifact.representative_prompts)
    loop_token = anyio.lowlevel.current_token()

    def run(job: Job) -> dict[str, Any]:
        job.report(0, n_prompts, "asking the endpoint the representative prompts")
        onboarded = pool_changes.onboard_model(
            router,
            record,
            replace=body.replace,
            cache_path=cache_path,
            progress=False,
            on_progress=lambda done, total: job.report(done, total),
            endpoint_policy=gateway.endpoint_policy,
            **body.onboarding.settings(),
        )
        # Reported as done only once the gateway serves the model.
        anyio.from_thread.run_sync(gateway.observe, router.snapshot, token=loop_token)
        job.message = "routable"
        result = onboarded.result
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
        }

    job = gateway.jobs.start("onboard", record.name, run)
    return JSONResponse({"job": job.to_dict(), "poll": f"/admin/jobs/{job.id}"}, status_code=202)


async def remove_model(request: Request) -> Response:
    """DELETE /admin/models/{name}."""
    gateway = require_admin(request)
    name = _model_name(request)
    await gateway.change_pool(pool_changes.remove_model, gateway.router, name)
    return JSONResponse({"removed": name})


def _set_enabled(enabled: bool) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        gateway = require_admin(request)
        record = await gateway.change_pool(
            pool_changes.set_enabled, gateway.router, _model_name(request), enabled
        )
        return JSONResponse({"model": record.to_dict()})

    handler.__doc__ = f"POST /admin/models/{{name}}/{'enable' if enabled else 'disable'}."
    return handler


async def set_cost(request: Request) -> Response:
    """POST /admin/models/{name}/cost with ``cost`` or ``cost_per_1k_input``/``_output``."""
    gateway = require_admin(request)
    body = validate(PriceRequest, await json_body(request, gateway.config))
    record = await gateway.change_pool(
        pool_changes.set_cost, gateway.router, _model_name(request), body.price
    )
    return JSONResponse({"model": record.to_dict()})


async def recalibrate(request: Request) -> Response:
    """POST /admin/recalibrate with one target, or an empty body for the stored target."""
    gateway = require_admin(request)
    raw = await json_body(request, gateway.config, allow_empty=True)
    target = validate(RecalibrateRequest, raw).target
    if target is None:
        stored = gateway.router.snapshot.policy
        if stored is None:
            raise ApiError(
                400,
                "no target given and none stored; send target_cost, target_quality or target_share",
                code="missing_field",
            )
        target = stored.target
    policy = await gateway.change_pool(pool_changes.calibrate, gateway.router, target)
    # The policy says how its figures were measured (out_of_sample, n_folds, n_estimated) and
    # over which models (models, servable_only); the enabled models it left out are named here.
    return JSONResponse(
        {
            "policy": policy.to_dict(),
            "basis": policy.describe_basis(),
            "left_out_no_endpoint": policy.left_out(gateway.router.snapshot.pool.names),
        }
    )


async def list_jobs(request: Request) -> Response:
    """GET /admin/jobs."""
    gateway = require_admin(request)
    return JSONResponse({"jobs": [job.to_dict() for job in gateway.jobs.list()]})


async def get_job(request: Request) -> Response:
    """GET /admin/jobs/{id}."""
    gateway = require_admin(request)
    job_id = request.path_params["job_id"]
    job = gateway.jobs.get(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r}", param="id", code="job_not_found")
    return JSONResponse({"job": job.to_dict()})


def admin_routes() -> list[Route]:
    """The /admin routes (more specific paths first: model names may contain '/')."""
    return [
        Route("/admin/pool", pool_info, methods=["GET"]),
        Route("/admin/models", list_models, methods=["GET"]),
        Route("/admin/models", add_model, methods=["POST"]),
        Route("/admin/models/{name:path}/enable", _set_enabled(True), methods=["POST"]),
        Route("/admin/models/{name:path}/disable", _set_enabled(False), methods=["POST"]),
        Route("/admin/models/{name:path}/cost", set_cost, methods=["POST"]),
        Route("/admin/models/{name:path}", remove_model, methods=["DELETE"]),
        Route("/admin/recalibrate", recalibrate, methods=["POST"]),
        Route("/admin/jobs", list_jobs, methods=["GET"]),
        Route("/admin/jobs/{job_id}", get_job, methods=["GET"]),
    ]
