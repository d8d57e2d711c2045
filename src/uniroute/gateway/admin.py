"""The admin API: change the model pool of a running gateway (behind a bearer token).

Every change is written to the registry (so it persists and other processes see it) and the
gateway reloads its pool at once, so it takes effect without a restart.

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

import hmac
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from uniroute.gateway.openai_api import ApiError, parse_json_object

if TYPE_CHECKING:
    from uniroute.gateway.app import Gateway
    from uniroute.registry.store import ModelRecord

_ADD_FIELDS = {
    "name",
    "cost",
    "cost_per_1k_input",
    "cost_per_1k_output",
    "expected_output_tokens",
    "endpoint",
    "upstream_model",
    "api_key_env",
    "tags",
    "enabled",
    "scores",
    "onboard",
    "onboarding",
    "replace",
}
_ONBOARDING_OPTIONS = {
    "api_style",
    "concurrency",
    "timeout",
    "retries",
    "max_tokens",
    "skip_ungradeable_tasks",
    "max_failure_rate",
}


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def _require_admin(request: Request) -> Gateway:
    gateway = _gateway(request)
    token = gateway.config.admin_token()
    if token is None:
        raise ApiError(
            403,
            f"the admin API is disabled: set the environment variable "
            f"{gateway.config.admin_token_env} before starting the gateway",
            kind="permission_error",
            code="admin_disabled",
        )
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(
            401,
            "admin API: send 'Authorization: Bearer <admin token>'",
            kind="authentication_error",
            code="invalid_admin_token",
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(
            401,
            "admin API: invalid admin token",
            kind="authentication_error",
            code="invalid_admin_token",
        )
    return gateway


async def _json_body(request: Request, gateway: Gateway, *, allow_empty: bool = False) -> dict:
    from uniroute.gateway.app import read_body

    raw = await read_body(request, gateway.config.max_body_bytes)
    if allow_empty and not raw.strip():
        return {}
    return parse_json_object(raw)


async def _blocking(func: Callable[..., Any], *args: Any) -> Any:
    """Registry writes, calibration and Psi computation run in a worker thread."""
    from uniroute.errors import StateError

    try:
        return await anyio.to_thread.run_sync(func, *args)
    except ApiError:
        raise
    except StateError as exc:  # the registry file is locked, unwritable or corrupt
        raise ApiError(503, str(exc), kind="api_error", code="registry_unavailable") from None
    except ValueError as exc:  # DataError, RouterError, RegistryError, CalibrationError
        raise ApiError(400, str(exc), code="invalid_request") from None


def _model_name(request: Request) -> str:
    return request.path_params["name"]


async def _check_known(gateway: Gateway, name: str) -> None:
    """404 unless the registry has the model (read in a thread: a writer may hold the file)."""
    if not await anyio.to_thread.run_sync(gateway.pool.router.registry.has_model, name):
        raise ApiError(
            404, f"no model {name!r} in the registry", param="name", code="model_not_found"
        )


def _number(body: dict, key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(
            400, f"'{key}' must be a finite number, got {value!r}", param=key, code="invalid_type"
        )
    return float(value)


def _cost_from(body: dict) -> Any:
    """A ModelCost from ``cost`` (per query) or ``cost_per_1k_input``/``_output``."""
    from uniroute.registry.costs import DEFAULT_OUTPUT_TOKENS, ModelCost

    per_query = _number(body, "cost")
    per_in, per_out = _number(body, "cost_per_1k_input"), _number(body, "cost_per_1k_output")
    tokens = _number(body, "expected_output_tokens")
    try:
        return ModelCost(
            per_query=per_query,
            per_1k_input=per_in,
            per_1k_output=per_out,
            expected_output_tokens=DEFAULT_OUTPUT_TOKENS if tokens is None else tokens,
        )
    except ValueError as exc:
        raise ApiError(400, f"cost: {exc}", param="cost", code="invalid_cost") from None


def _scores_from(value: Any) -> dict[str, float]:
    """Scores as ``{prompt_id: score}`` or ``[{"prompt_id": ..., "score": ...}, ...]``."""
    if isinstance(value, list):
        scores: dict[str, float] = {}
        for index, row in enumerate(value):
            if not isinstance(row, dict) or "prompt_id" not in row or "score" not in row:
                raise ApiError(
                    400,
                    f"scores[{index}] must be an object with prompt_id and score",
                    param="scores",
                    code="invalid_scores",
                )
            prompt_id = str(row["prompt_id"])
            if prompt_id in scores:
                raise ApiError(
                    400,
                    f"scores[{index}]: prompt_id {prompt_id!r} appears twice",
                    param="scores",
                    code="invalid_scores",
                )
            scores[prompt_id] = row["score"]
        value = scores
    if not isinstance(value, dict) or not value:
        raise ApiError(
            400,
            "'scores' must be a non-empty object {prompt_id: score} or a list "
            "of {prompt_id, score}",
            param="scores",
            code="invalid_scores",
        )
    checked: dict[str, float] = {}
    for prompt_id, score in value.items():
        if score is None:
            continue  # missing, never 0
        if (
            isinstance(score, bool)
            or not isinstance(score, int | float)
            or not (0.0 <= float(score) <= 1.0)
        ):
            raise ApiError(
                400,
                f"score of prompt {prompt_id!r} must be a number in [0, 1], got {score!r}",
                param="scores",
                code="invalid_scores",
            )
        checked[str(prompt_id)] = float(score)
    if not checked:
        raise ApiError(
            400, "every score given is missing (null)", param="scores", code="invalid_scores"
        )
    return checked


def _string_or_none(body: dict, key: str) -> str | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ApiError(400, f"'{key}' must be a non-empty string", param=key, code="invalid_type")
    return value


async def pool_info(request: Request) -> Response:
    """GET /admin/pool."""
    gateway = _require_admin(request)
    await gateway.refresh_pool()
    info = await anyio.to_thread.run_sync(gateway.pool.describe)
    info["servable_models"] = sorted(gateway.snapshot.models)
    info["most_accurate_model"] = gateway.snapshot.most_accurate
    info["circuit_breakers"] = gateway.breakers.states()
    return JSONResponse(info)


async def list_models(request: Request) -> Response:
    """GET /admin/models."""
    gateway = _require_admin(request)
    registry = gateway.pool.router.registry
    records, counts = await anyio.to_thread.run_sync(
        lambda: (registry.list_models(), registry.score_counts())
    )
    models = []
    for record in records:
        entry = record.to_dict()
        entry["n_scores"] = counts.get(record.name, 0)
        entry["servable"] = record.name in gateway.snapshot.models
        entry["circuit"] = gateway.breakers.get(record.name).state
        models.append(entry)
    return JSONResponse({"models": models})


async def add_model(request: Request) -> Response:
    """POST /admin/models: add with scores (201) or start an onboarding job (202)."""
    gateway = _require_admin(request)
    body = await _json_body(request, gateway)
    unknown = sorted(set(body) - _ADD_FIELDS)
    if unknown:
        raise ApiError(
            400,
            f"unknown field(s) {unknown}; accepted: {sorted(_ADD_FIELDS)}",
            param=unknown[0],
            code="unknown_field",
        )
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "'name' must be a non-empty string", param="name", code="missing_field")
    cost = _cost_from(body)
    endpoint = _string_or_none(body, "endpoint")
    upstream_model = _string_or_none(body, "upstream_model")
    api_key_env = _string_or_none(body, "api_key_env")
    tags = body.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ApiError(400, "'tags' must be a list of strings", param="tags", code="invalid_type")
    enabled = body.get("enabled", True)
    replace = body.get("replace", False)
    if not isinstance(enabled, bool) or not isinstance(replace, bool):
        raise ApiError(400, "'enabled' and 'replace' must be true or false", code="invalid_type")
    onboard = body.get("onboard", False)
    if onboard is not True and onboard is not False:
        raise ApiError(400, "'onboard' must be true or false", param="onboard", code="invalid_type")
    if ("scores" in body) == bool(onboard):
        raise ApiError(
            400,
            "give either 'scores' or 'onboard': true (with an 'endpoint')",
            param="scores",
            code="missing_field",
        )
    record = _record_from(
        name=name,
        cost=cost,
        endpoint=endpoint,
        upstream_model=upstream_model,
        api_key_env=api_key_env,
        tags=tuple(tags),
        enabled=enabled,
    )
    router = gateway.pool.router
    if not replace and await anyio.to_thread.run_sync(router.registry.has_model, name):
        raise ApiError(
            409,
            f"model {name!r} is already in the registry; remove it first or send 'replace': true",
            param="name",
            code="model_exists",
        )
    if onboard:
        return await _start_onboarding(gateway, body, record, replace)

    scores = _scores_from(body["scores"])
    started = time.perf_counter()
    added = await _blocking(
        lambda: router.add_record(
            record, scores, replace=replace, source=f"scores of model {name!r}"
        )
    )
    await gateway.refresh_pool(force=True)
    seconds = time.perf_counter() - started
    return JSONResponse(
        {
            "model": added.record.to_dict(),
            "matched_prompts": added.n_matched,
            "representative_prompts": added.n_representative,
            "unknown_prompt_ids": added.unknown_ids[:20],
            "n_unknown_prompt_ids": len(added.unknown_ids),
            "seconds_to_routable": round(seconds, 4),
            "servable": name in gateway.snapshot.models,
        },
        status_code=201,
    )


def _record_from(**fields: Any) -> ModelRecord:
    """The ModelRecord to store; a field the registry refuses is a 400 naming it."""
    from uniroute.registry.store import ModelRecord

    try:
        return ModelRecord(**fields)
    except ValueError as exc:
        raise ApiError(400, str(exc), code="invalid_request") from None


async def _start_onboarding(
    gateway: Gateway, body: dict, record: ModelRecord, replace: bool
) -> Response:
    """Validate an onboarding request and start it as a background job."""
    from dataclasses import replace as with_fields

    from uniroute.onboarding.client import normalise_base_url, onboard_endpoint

    name, endpoint = record.name, record.endpoint
    if endpoint is None:
        raise ApiError(
            400,
            "onboarding needs the model's 'endpoint' (an OpenAI base URL)",
            param="endpoint",
            code="missing_field",
        )
    try:
        endpoint = normalise_base_url(endpoint)
    except ValueError as exc:
        raise ApiError(400, str(exc), param="endpoint", code="invalid_endpoint") from None
    record = with_fields(record, endpoint=endpoint)
    settings = body.get("onboarding", {})
    if not isinstance(settings, dict) or set(settings) - _ONBOARDING_OPTIONS:
        raise ApiError(
            400,
            f"'onboarding' may hold only {sorted(_ONBOARDING_OPTIONS)}",
            param="onboarding",
            code="unknown_field",
        )
    if gateway.jobs.running_for(name) is not None:
        raise ApiError(
            409, f"model {name!r} is already being onboarded", param="name", code="job_running"
        )
    router = gateway.pool.router
    prompts = list(router.artifact.representative_prompts)
    cache_dir = gateway.config.onboarding_cache_dir
    cache_path = None if cache_dir is None else f"{cache_dir.rstrip('/')}/answers.sqlite3"

    loop_token = anyio.lowlevel.current_token()

    def run(job: Any) -> dict[str, Any]:
        job.report(0, len(prompts), "asking the endpoint the representative prompts")
        result = onboard_endpoint(
            name,
            endpoint,
            prompts,
            upstream_model=record.upstream_model,
            api_key_env=record.api_key_env,
            progress=False,
            on_progress=lambda done, total: job.report(done, total),
            cache_path=cache_path,
            **settings,
        )
        job.message = "storing scores"
        added = router.add_record(
            record, result.scores, replace=replace, source=f"onboarding of {name!r}"
        )
        # Reported as done only once the gateway serves the model.
        anyio.from_thread.run(gateway.refresh_pool, True, token=loop_token)
        job.message = "routable"
        return {
            "model": added.record.to_dict(),
            "scores": len(result.scores),
            "per_task_accuracy": {
                task: {"accuracy": acc, "n": n}
                for task, (acc, n) in result.per_task_accuracy.items()
            },
            "answers_fetched": result.answers_fetched,
            "answers_from_cache": result.answers_from_cache,
            "failures": len(result.failures),
        }

    job = gateway.jobs.start("onboard", name, run)
    return JSONResponse({"job": job.to_dict(), "poll": f"/admin/jobs/{job.id}"}, status_code=202)


async def remove_model(request: Request) -> Response:
    """DELETE /admin/models/{name}."""
    gateway = _require_admin(request)
    name = _model_name(request)
    await _check_known(gateway, name)
    await _blocking(gateway.pool.router.remove_model, name)
    await gateway.refresh_pool(force=True)
    return JSONResponse({"removed": name})


def _set_enabled(enabled: bool) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        gateway = _require_admin(request)
        name = _model_name(request)
        await _check_known(gateway, name)
        record = await _blocking(gateway.pool.router.set_enabled, name, enabled)
        await gateway.refresh_pool(force=True)
        return JSONResponse({"model": record.to_dict()})

    handler.__doc__ = f"POST /admin/models/{{name}}/{'enable' if enabled else 'disable'}."
    return handler


async def set_cost(request: Request) -> Response:
    """POST /admin/models/{name}/cost with ``cost`` or ``cost_per_1k_input``/``_output``."""
    gateway = _require_admin(request)
    name = _model_name(request)
    body = await _json_body(request, gateway)
    cost = _cost_from(body)
    await _check_known(gateway, name)
    record = await _blocking(gateway.pool.router.set_cost, name, cost)
    await gateway.refresh_pool(force=True)
    return JSONResponse({"model": record.to_dict()})


async def recalibrate(request: Request) -> Response:
    """POST /admin/recalibrate with one target, or an empty body for the stored target."""
    gateway = _require_admin(request)
    body = await _json_body(request, gateway, allow_empty=True)
    router = gateway.pool.router
    unknown = sorted(set(body) - {"target_cost", "target_quality", "target_share"})
    if unknown:
        raise ApiError(
            400,
            f"unknown field(s) {unknown}; give target_cost, target_quality or "
            "target_share {model, share}",
            param=unknown[0],
            code="unknown_field",
        )
    kwargs: dict[str, Any] = {}
    if "target_cost" in body:
        kwargs["target_cost"] = _number(body, "target_cost")
    if "target_quality" in body:
        kwargs["target_quality"] = _number(body, "target_quality")
    if "target_share" in body:
        share = body["target_share"]
        if not isinstance(share, dict) or set(share) != {"model", "share"}:
            raise ApiError(
                400,
                '\'target_share\' must be {"model": name, "share": p}',
                param="target_share",
                code="invalid_type",
            )
        kwargs["target_share"] = (share["model"], share["share"])
    if not kwargs:
        stored = router.policy
        if stored is None:
            raise ApiError(
                400,
                "no target given and none stored; send target_cost, target_quality or target_share",
                code="missing_field",
            )
        target = stored.target
        key = {"cost": "target_cost", "quality": "target_quality", "share": "target_share"}
        kwargs[key[target.kind]] = (
            (target.model, target.value) if target.kind == "share" else target.value
        )
    policy = await _blocking(lambda: router.calibrate(**kwargs))
    await gateway.refresh_pool(force=True)
    return JSONResponse({"policy": policy.to_dict()})


async def list_jobs(request: Request) -> Response:
    """GET /admin/jobs."""
    gateway = _require_admin(request)
    return JSONResponse({"jobs": [job.to_dict() for job in gateway.jobs.list()]})


async def get_job(request: Request) -> Response:
    """GET /admin/jobs/{id}."""
    gateway = _require_admin(request)
    job = gateway.jobs.get(request.path_params["job_id"])
    if job is None:
        raise ApiError(
            404, f"no job {request.path_params['job_id']!r}", param="id", code="job_not_found"
        )
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
