"""Operator endpoints: ``/healthz`` (liveness), ``/readyz`` (readiness), ``/metrics``."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from uniroute.gateway.dependencies import gateway_of

#: Longest a readiness probe waits for the registry (a locked or vanished file must not hang it).
REGISTRY_CHECK_S = 5.0


async def healthz(request: Request) -> Response:
    """GET /healthz: the process is up and its event loop answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """GET /readyz: at least one model is servable and the gateway is not shutting down.

    Reports whether the registry is readable now, the registry revision the served pool was read
    at (``pool_version``) and how many of its models are servable. A registry that cannot be
    read (a database restarting, a file being replaced) does not make the gateway unready: it
    routes on the last pool it read, and says so (``serving_last_snapshot``), until the
    registry is back and the next poll reads it. 503 when no model is servable, or while a
    shutdown drains (``draining``).
    """
    gateway = gateway_of(request)
    if gateway.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    checks: dict[str, Any] = {}
    try:
        with anyio.fail_after(REGISTRY_CHECK_S):
            await anyio.to_thread.run_sync(gateway.router.registry_revision, abandon_on_cancel=True)
        await gateway.refresh()
        checks["registry_readable"] = True
    except Exception as exc:
        checks["registry_readable"] = False
        checks["registry_error"] = f"{type(exc).__name__}: {exc}"
        checks["serving_last_snapshot"] = True
    snapshot = gateway.router.snapshot
    checks["replica"] = gateway.config.replica()
    checks["pool_version"] = snapshot.revision
    checks["servable_models"] = len(snapshot.pool.servable)
    ready = checks["servable_models"] > 0
    return JSONResponse(
        {"status": "ready" if ready else "not ready", **checks}, status_code=200 if ready else 503
    )


async def metrics(request: Request) -> Response:
    """GET /metrics: Prometheus text exposition."""
    gateway = gateway_of(request)
    gateway.update_breaker_gauges(gateway.breakers.states())
    return Response(gateway.metrics.render(), media_type=gateway.metrics.content_type)


def health_routes() -> list[Route]:
    """The operator routes."""
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
