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
``POST   /admin/models/{name}/capabilities``  change its ``capabilities``, ``context_window``
                                            or ``max_output_tokens``
``POST   /admin/recalibrate``               solve a target for the current pool (or the stored
                                            target again, with an empty body)
``GET    /admin/jobs`` / ``/admin/jobs/{id}``  onboarding jobs and their progress, from
                                            the registry (every replica's)
==========================================  ===================================================
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from uniroute.deployment import pool_changes
from uniroute.errors import RegistryError
from uniroute.gateway.admin.keys import key_routes
from uniroute.gateway.admin.onboarding import ONBOARDING_JOB, onboarding_request
from uniroute.gateway.admin.protocol import (
    AddModelRequest,
    CapabilitiesRequest,
    PriceRequest,
    RecalibrateRequest,
)
from uniroute.gateway.body import json_body, validate
from uniroute.gateway.dependencies import Gateway, require_admin
from uniroute.gateway.errors import ApiError
from uniroute.registry import ModelRecord
from uniroute.registry.costs import price_warning


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
    # Per replica, like the breakers: what this replica's own calls showed.
    info["latency"] = gateway.latency.to_dict()
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
    raw_body = await json_body(request, gateway.config)
    body = validate(AddModelRequest, raw_body)
    record, router = body.record, gateway.router
    started = time.perf_counter()
    await anyio.to_thread.run_sync(_check_endpoint_allowed, gateway, record)
    await anyio.to_thread.run_sync(pool_changes.check_can_add, router, record.name, body.replace)
    if body.onboard:
        return await _start_onboarding(gateway, raw_body, record.name)
    assert body.scores is not None
    added = await gateway.change_pool(
        pool_changes.add_scored_model,
        router,
        record,
        body.scores,
        answers=body.answers,
        replace=body.replace,
        source=f"scores of model {record.name!r} sent to the admin API",
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
            **_price_check(gateway, added.record),
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


async def _start_onboarding(gateway: Gateway, raw_body: dict[str, Any], name: str) -> Response:
    """Start the onboarding of a model as a job in the registry (202 with its poll URL); any
    replica can poll it, and another resumes it if this one dies."""
    job = await anyio.to_thread.run_sync(
        gateway.jobs.start, ONBOARDING_JOB, name, onboarding_request(raw_body)
    )
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
    return JSONResponse({"model": record.to_dict(), **_price_check(gateway, record)})


def _price_check(gateway: Gateway, record: ModelRecord) -> dict[str, Any]:
    """A model's cost per query as the router reckons it, and a warning when it is far from
    the rest of the pool's (often a price per 1M tokens given per 1k)."""
    router = gateway.router
    cost = record.cost.per_query_cost(router.mean_input_tokens)
    pool = router.snapshot.pool
    others = dict(zip(pool.names, pool.costs.tolist(), strict=True))
    return {"cost_per_query": cost, "price_warning": price_warning(record.name, cost, others)}


async def set_capabilities(request: Request) -> Response:
    """POST /admin/models/{name}/capabilities with any of ``capabilities``, ``context_window``
    and ``max_output_tokens``."""
    gateway = require_admin(request)
    body = validate(CapabilitiesRequest, await json_body(request, gateway.config))
    record = await gateway.change_pool(
        pool_changes.set_capabilities, gateway.router, _model_name(request), **body.changes()
    )
    return JSONResponse({"model": record.to_dict()})


async def recalibrate(request: Request) -> Response:
    """POST /admin/recalibrate with one target, or an empty body for the stored target."""
    gateway = require_admin(request)
    raw = await json_body(request, gateway.config, allow_empty=True)
    body = validate(RecalibrateRequest, raw)
    target = body.target
    if target is None:
        stored = gateway.router.snapshot.policy
        if stored is None:
            raise ApiError(
                400,
                "no target given and none stored; send target_cost, target_quality or target_share",
                code="missing_field",
            )
        target = stored.target
    policy = await gateway.change_pool(
        pool_changes.calibrate, gateway.router, target, latency_weight=body.latency_weight
    )
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
    jobs = await anyio.to_thread.run_sync(gateway.jobs.recent)
    return JSONResponse({"jobs": [job.to_dict() for job in jobs]})


async def get_job(request: Request) -> Response:
    """GET /admin/jobs/{id}."""
    gateway = require_admin(request)
    job_id = request.path_params["job_id"]
    job = await anyio.to_thread.run_sync(gateway.jobs.get, job_id)
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
        Route("/admin/models/{name:path}/capabilities", set_capabilities, methods=["POST"]),
        Route("/admin/models/{name:path}", remove_model, methods=["DELETE"]),
        Route("/admin/recalibrate", recalibrate, methods=["POST"]),
        Route("/admin/jobs", list_jobs, methods=["GET"]),
        Route("/admin/jobs/{job_id}", get_job, methods=["GET"]),
        *key_routes(),  # /admin/keys and /admin/teams (uniroute.gateway.admin.keys)
    ]
