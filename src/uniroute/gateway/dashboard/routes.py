"""The web dashboard: its page, its assets and the read-only JSON views it draws.

Off unless ``dashboard: true``. The page and its assets (``/ui``, ``/ui/static/...``) hold no
data and ship in the package, so it works offline; every view is fetched from ``/ui/api/...``
with a bearer token: the admin token, or, with ``dashboard_client_keys: true``, a client key
(read-only: its actions go to the admin API, which needs the admin token).

==============================  ==================================================================
``GET /ui``                     the page (views by hash: ``#pool``, ``#estimates``, ``#tradeoff``,
                                ``#traffic``, ``#jobs``)
``GET /ui/api/session``         who the token is: ``admin`` or ``viewer``
``GET /ui/api/pool``            every registered model with price, state, health and capabilities
``GET /ui/api/estimates``       the cluster x model map of estimated errors and their evidence
``GET /ui/api/tradeoff``        the servable pool's deferral curve with the calibrated point
``GET /ui/api/traffic``         this replica's last ``?window=hour`` (default) or ``day``
``GET /ui/api/jobs``            onboarding jobs and their progress (every replica's)
==============================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from uniroute.deployment.overview import ViewUnavailableError, estimate_map, pool_tradeoff
from uniroute.gateway.dependencies import Gateway, bearer_token, gateway_of, require_admin
from uniroute.gateway.errors import ApiError
from uniroute.gateway.keys import ANONYMOUS, invalid_key
from uniroute.gateway.traffic import WINDOWS
from uniroute.registry import ModelRecord

STATIC_DIR = Path(__file__).parent / "static"
ADMIN, VIEWER = "admin", "viewer"


def _dashboard_gateway(request: Request) -> Gateway:
    gateway = gateway_of(request)
    if not gateway.config.dashboard:
        raise ApiError(
            404, "the dashboard is off: set 'dashboard: true' in the gateway's config",
            code="dashboard_disabled",
        )  # fmt: skip
    return gateway


async def _viewer(request: Request) -> tuple[Gateway, str]:
    """The gateway and the caller's role, once the request carries a token the views accept."""
    gateway = _dashboard_gateway(request)
    try:
        return require_admin(request), ADMIN
    except ApiError:
        if not gateway.config.dashboard_client_keys:
            raise
    caller = await gateway.keys.authenticate(bearer_token(request), gateway.config.client_keys())
    if caller.label == ANONYMOUS:
        # With no client key in existence any caller would pass: the views stay closed.
        raise invalid_key(
            "the dashboard needs the admin token or a client key, and this gateway has no "
            "client key"
        )
    return gateway, VIEWER


#: The page runs its own script and style sheet only, talks to this gateway only, and may not
#: be framed: a model name or prompt that got into the page as markup could do nothing.
PAGE_HEADERS = {
    "cache-control": "no-cache",
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


async def page(request: Request) -> Response:
    """GET /ui: the dashboard's page."""
    _dashboard_gateway(request)
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


async def session(request: Request) -> Response:
    """GET /ui/api/session: the role the token gives."""
    _, role = await _viewer(request)
    return JSONResponse({"role": role})


async def pool(request: Request) -> Response:
    """GET /ui/api/pool: every registered model, enabled or not, as routing sees it now."""
    gateway, role = await _viewer(request)
    await gateway.refresh()
    router = gateway.router
    registry = router.registry
    records, counts = await anyio.to_thread.run_sync(
        lambda: (registry.list_models(), registry.score_counts())
    )
    snapshot = router.snapshot
    servable = set(snapshot.pool.servable)
    models = []
    for record in records:
        circuit = gateway.breakers.get(record.name).state
        per_1k_in, per_1k_out = record.cost.per_1k_input, record.cost.per_1k_output
        models.append(
            {
                "name": record.name,
                "enabled": record.enabled,
                "servable": record.name in servable,
                "circuit": circuit,
                "health": _health(record, record.name in servable, circuit),
                "endpoint": record.endpoint,
                "upstream_model": record.upstream_model,
                "cost_per_query": record.cost.per_query_cost(router.mean_input_tokens),
                "cost_per_1m_input": None if per_1k_in is None else per_1k_in * 1000,
                "cost_per_1m_output": None if per_1k_out is None else per_1k_out * 1000,
                "capabilities": list(record.capabilities),
                "context_window": record.context_window,
                "max_output_tokens": record.max_output_tokens,
                "latency_s": record.latency_s,
                "source": record.source,
                "tags": list(record.tags),
                "created_at": record.created_at,
                "updated_at": record.updated_at,
                "n_scores": counts.get(record.name, 0),
                "problem": record.problem,
            }
        )
    policy = snapshot.policy
    facts = router.describe()
    if role != ADMIN:  # where the state lives is for operators, not for every key holder
        facts = {k: v for k, v in facts.items() if k not in ("artifact_path", "registry")}
    return JSONResponse(
        {
            **facts,
            "policy": None
            if policy is None
            else {
                "lambda": policy.lam,
                "expected_cost": policy.expected_cost,
                "expected_quality": policy.expected_quality,
                "target": policy.target.describe(),
                "basis": policy.describe_basis(),
            },
            "most_accurate_model": snapshot.pool.most_accurate(),
            "models": models,
        }
    )


def _health(record: ModelRecord, servable: bool, circuit: str) -> str:
    if not record.enabled:
        return "disabled"
    if record.endpoint is None:
        return "no endpoint"
    if not servable:  # an endpoint stored by an older version that today's rules refuse
        return "not served"
    return {"open": "down", "half_open": "recovering"}.get(circuit, "ok")


async def estimates(request: Request) -> Response:
    """GET /ui/api/estimates: per cluster, each enabled model's estimated error and evidence."""
    gateway, _ = await _viewer(request)
    await gateway.refresh()
    router = gateway.router
    return await _view(lambda: estimate_map(router.artifact, router.snapshot).to_dict())


async def tradeoff(request: Request) -> Response:
    """GET /ui/api/tradeoff: the deferral curve of the servable pool, calibrated point marked."""
    gateway, _ = await _viewer(request)
    await gateway.refresh()
    router = gateway.router
    return await _view(lambda: pool_tradeoff(router.artifact, router.snapshot).to_dict())


async def _view(compute: Callable[[], dict[str, Any]]) -> Response:
    # Off the event loop: the first call after a pool change solves a sweep (tens of ms).
    try:
        return JSONResponse(await anyio.to_thread.run_sync(compute))
    except ViewUnavailableError as exc:
        return JSONResponse({"available": False, "reason": str(exc)})


async def traffic(request: Request) -> Response:
    """GET /ui/api/traffic?window=hour|day: this replica's recent traffic, bucketed."""
    gateway, _ = await _viewer(request)
    window = request.query_params.get("window", "hour")
    if window not in WINDOWS:
        raise ApiError(
            400, f"unknown window {window[:40]!r}; use one of {sorted(WINDOWS)}",
            param="window", code="invalid_value",
        )  # fmt: skip
    return JSONResponse(gateway.metrics.history.window(window))


async def jobs(request: Request) -> Response:
    """GET /ui/api/jobs: the registry's onboarding jobs, oldest first (as ``/admin/jobs``)."""
    gateway, _ = await _viewer(request)
    found = await anyio.to_thread.run_sync(gateway.jobs.recent)
    return JSONResponse({"jobs": [job.to_dict() for job in found]})


class _Assets(StaticFiles):
    """The page's assets, served only while the dashboard is on."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        _dashboard_gateway(Request(scope))
        await super().__call__(scope, receive, send)


def dashboard_routes() -> list[BaseRoute]:
    """The dashboard's routes (each answers 404 while ``dashboard`` is off)."""
    return [
        Route("/ui", page, methods=["GET"]),
        Route("/ui/", page, methods=["GET"]),
        Route("/ui/api/session", session, methods=["GET"]),
        Route("/ui/api/pool", pool, methods=["GET"]),
        Route("/ui/api/estimates", estimates, methods=["GET"]),
        Route("/ui/api/tradeoff", tradeoff, methods=["GET"]),
        Route("/ui/api/traffic", traffic, methods=["GET"]),
        Route("/ui/api/jobs", jobs, methods=["GET"]),
        Mount("/ui/static", app=_Assets(directory=STATIC_DIR, check_dir=False), name="ui"),
    ]
