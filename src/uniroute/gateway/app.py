"""The gateway application factory (Starlette, served by uvicorn).

``create_app(router, config)`` assembles the pieces: the :class:`~uniroute.gateway.dependencies.
Gateway` service object, the route table (``/v1`` from :mod:`uniroute.gateway.openai.routes`,
``/admin`` from :mod:`uniroute.gateway.admin.routes`, ``/healthz``, ``/readyz`` and ``/metrics``
from :mod:`uniroute.gateway.health`, ``/openapi.json`` from :mod:`uniroute.gateway.openapi`,
``/ui`` from :mod:`uniroute.gateway.dashboard.routes`),
the request-context middleware, the exception handlers and the lifespan (upstream connection
pools, routing workers, registry polling and, on PostgreSQL, listening for pushed pool
changes). The completion endpoints skip Starlette's routing and middleware stack
(:mod:`uniroute.gateway.dispatch`).

A cheap encoder (TF-IDF) embeds and routes inline on the event loop (a fraction of a
millisecond); an expensive one (MiniLM) runs in worker threads (``routing_threads`` of them),
never on the event loop, so it delays only the requests being routed, and prompts that arrive
together are embedded in one encoder call (see :mod:`uniroute.gateway.batching`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from uniroute.deployment import Router
from uniroute.gateway.admin.routes import admin_routes
from uniroute.gateway.config import GatewayConfig
from uniroute.gateway.dashboard.routes import dashboard_routes
from uniroute.gateway.dependencies import Gateway
from uniroute.gateway.dispatch import GatewayApplication
from uniroute.gateway.errors import EXCEPTION_HANDLERS
from uniroute.gateway.health import health_routes
from uniroute.gateway.middleware import RequestContextMiddleware
from uniroute.gateway.openai.routes import direct_endpoints, openai_routes
from uniroute.gateway.openapi import openapi_routes


def create_app(router: Router, config: GatewayConfig | None = None) -> Starlette:
    """The gateway application over a loaded router (artifact + registry)."""
    gateway = Gateway(router, config or GatewayConfig())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Serve the registry's pool as it is now, however long ago the router was loaded.
        await gateway.refresh()
        gateway.open_upstream()
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(gateway.poll_registry)
                # Pushed changes (PostgreSQL); returns at once on SQLite, where the poll does it.
                tasks.start_soon(gateway.listen_registry)
                tasks.start_soon(gateway.tend_jobs)
                for _ in range(gateway.config.routing_threads):
                    tasks.start_soon(gateway.batcher.run_worker)
                try:
                    yield
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            await gateway.aclose()

    def with_request_context(app: ASGIApp) -> ASGIApp:
        return RequestContextMiddleware(app, metrics=gateway.metrics)

    app = GatewayApplication(
        direct=direct_endpoints(),
        wrap_direct=with_request_context,
        routes=[
            *openai_routes(),
            *health_routes(),
            *admin_routes(),
            *openapi_routes(),
            *dashboard_routes(),
        ],
        middleware=[Middleware(RequestContextMiddleware, metrics=gateway.metrics)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app
