"""The gateway's ASGI application: the proxy endpoints dispatched directly, the rest by Starlette.

A completion request is what the gateway serves all day, and Starlette's generic machinery
around it (its error middleware, its exception middleware, the route table, the per-route
request/response wrapper, a send wrapper per layer) costs about as much CPU as the handler's
own work on a pooled upstream call. :class:`GatewayApplication` sends ``POST
/v1/chat/completions`` and ``POST /v1/completions`` straight to their handlers behind the same
request-context middleware, and turns the errors they raise into responses with the same
exception handlers Starlette would use; everything else (the other routes, 404s and 405s, the
lifespan) goes through Starlette unchanged. Both paths answer a given request identically.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


class DirectEndpoints:
    """An ASGI app answering a few (method, path) pairs with their handlers, no routing table."""

    def __init__(
        self,
        endpoints: Mapping[tuple[str, str], Endpoint],
        exception_handlers: Mapping[type[Exception], ExceptionHandler],
    ) -> None:
        self.endpoints = dict(endpoints)
        self.exception_handlers = dict(exception_handlers)

    def _handler_for(self, exc: Exception) -> ExceptionHandler | None:
        for kind in type(exc).__mro__:
            handler = self.exception_handlers.get(kind)
            if handler is not None:
                return handler
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request with its endpoint (the caller checked it has one)."""
        request = Request(scope, receive, send)
        endpoint = self.endpoints[(scope["method"], scope["path"])]
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise  # the request-context middleware's last resort answers it
            response = await handler(request, exc)
        await response(scope, receive, send)


class GatewayApplication(Starlette):
    """Starlette with a direct path for the proxy endpoints (see the module doc)."""

    def __init__(
        self,
        *,
        direct: Mapping[tuple[str, str], Endpoint],
        wrap_direct: Callable[[ASGIApp], ASGIApp],
        **starlette_options: Any,
    ) -> None:
        super().__init__(**starlette_options)
        handlers = starlette_options.get("exception_handlers") or {}
        self._direct_paths = frozenset(direct)
        self._direct_app = wrap_direct(DirectEndpoints(direct, handlers))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one ASGI event: a proxy request directly, anything else through Starlette."""
        if scope["type"] == "http" and (scope["method"], scope["path"]) in self._direct_paths:
            scope["app"] = self
            await self._direct_app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
