"""The OpenAI-compatible routing gateway (Starlette on uvicorn).

``POST /v1/chat/completions`` and ``POST /v1/completions`` are answered by the model the
router picks (or the pool model named in ``model``), ``POST /v1/route`` returns the decision
only, ``GET /v1/models`` lists the aliases and the servable pool models; ``/admin`` changes the
pool at run time; ``/healthz``, ``/readyz`` and ``/metrics`` serve operators.

Embedding and routing run in worker threads (``routing_threads`` of them), never on the event
loop, so a slow encoder delays only the requests being routed; prompts that arrive together are
embedded in one encoder call (see ``uniroute.gateway.batching``).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uniroute.gateway.access_log import GATEWAY_LOGGER, log_access, new_request_id
from uniroute.gateway.batching import RoutingBatcher
from uniroute.gateway.config import GatewayConfig
from uniroute.gateway.fallback import (
    CLOSED,
    AllModelsFailedError,
    BreakerBoard,
    FallbackResult,
    UpstreamError,
    call_with_fallback,
)
from uniroute.gateway.jobs import JobTracker
from uniroute.gateway.metrics import GatewayMetrics
from uniroute.gateway.openai_api import (
    ROUTED_ALIAS,
    ApiError,
    ModelChoice,
    RoutingPolicy,
    chat_routing_text,
    check_stream_flag,
    completion_routing_text,
    parse_json_object,
    parse_model_choice,
    route_request_text,
)
from uniroute.gateway.pool_view import PoolSnapshot, PoolView
from uniroute.gateway.upstream import UpstreamClient, UpstreamStream

logger = logging.getLogger(GATEWAY_LOGGER)

CHAT_PATH = "/chat/completions"
COMPLETIONS_PATH = "/completions"


class Gateway:
    """Everything a request needs: the pool, the upstream client, breakers, metrics, settings."""

    def __init__(self, pool: PoolView, config: GatewayConfig, metrics: GatewayMetrics) -> None:
        self.pool = pool
        self.config = config
        self.metrics = metrics
        self.breakers = BreakerBoard(config.breaker_failure_threshold, config.breaker_cooldown_s)
        self.routing_limiter = anyio.CapacityLimiter(config.routing_threads)
        self.batcher = RoutingBatcher(
            pool.embed, pool.route_embeddings, self.routing_limiter, config.routing_batch_size
        )
        self.upstream: UpstreamClient | None = None
        self.jobs = JobTracker()
        self.snapshot: PoolSnapshot = pool.snapshot()
        self.metrics.pool_models.set(len(self.snapshot.models))

    def shutdown_jobs(self, timeout: float = 5.0) -> None:
        """Give running admin jobs a moment to finish (they are daemon threads otherwise)."""
        self.jobs.wait(timeout)

    # ------------------------------------------------------------------ pool changes
    async def run_in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run blocking work (embedding, routing, SQLite) off the event loop."""
        return await anyio.to_thread.run_sync(func, *args, limiter=self.routing_limiter)

    async def refresh_pool(self, force: bool = False) -> bool:
        """Re-read the registry if its pool changed; True when the pool was reloaded."""
        # The router may already have refreshed itself (an admin change made through it), so
        # the snapshot is compared with the router's version, not only with refresh()'s answer.
        changed = await self.run_in_thread(self.pool.refresh)
        changed = changed or self.pool.version != self.snapshot.version
        if changed or force:
            self.snapshot = await self.run_in_thread(self.pool.snapshot)
            self.metrics.pool_models.set(len(self.snapshot.models))
            for name in list(self.breakers.states()):
                if name not in self.snapshot.models:
                    self.breakers.forget(name)
        return bool(changed)

    async def poll_registry(self) -> None:
        """Notice changes made by other processes (the CLI) within ``registry_poll_s``."""
        while True:
            await anyio.sleep(self.config.registry_poll_s)
            try:
                await self.refresh_pool()
            except Exception:  # the next poll retries; serving goes on with the last pool
                logger.exception("registry refresh failed")

    # ------------------------------------------------------------------ routing
    async def decide(self, text: str, policy: RoutingPolicy) -> Any:
        """The router's decision for one prompt, computed in a worker thread (batched)."""
        from uniroute.errors import RouterError

        started = time.perf_counter()
        try:
            decision = await self.batcher.decide(text, policy.lam, policy.max_cost)
        except RouterError as exc:
            # With models in the pool, the only routing error a valid ceiling can cause is
            # that no model is cheap enough.
            if policy.max_cost is not None and self.snapshot.all_costs:
                raise ApiError(
                    400, str(exc), param="model", code="no_model_within_budget"
                ) from None
            raise ApiError(
                503, f"cannot route: {exc}", kind="api_error", code="routing_unavailable"
            ) from None
        self.metrics.routing_latency.observe(time.perf_counter() - started)
        return decision

    def servable_candidates(self, ranking: list[str]) -> list[str]:
        """The ranking restricted to enabled models that have an endpoint, order kept."""
        return [name for name in ranking if name in self.snapshot.models]

    def check_direct_model(self, name: str) -> None:
        """A directly named model must be an enabled pool model with an endpoint."""
        if name in self.snapshot.models:
            return
        known = sorted(self.snapshot.models)
        raise ApiError(
            404,
            f"the model {name!r} does not exist or is not served here; use "
            f"'{ROUTED_ALIAS}' to route, or one of {known}",
            param="model",
            code="model_not_found",
            kind="invalid_request_error",
        )

    def update_breaker_gauges(self, models: Iterable[str]) -> None:
        """Mirror the circuit state of these models in the metrics."""
        for model in models:
            state = self.breakers.get(model).state
            self.metrics.breaker_open.labels(model=model).set(0.0 if state == CLOSED else 1.0)


def _client_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("api-key") or None


def _check_client_key(gateway: Gateway, request: Request) -> None:
    keys = gateway.config.client_keys()
    if not keys:
        return
    key = _client_key(request)
    if key is None:
        raise ApiError(
            401,
            "missing API key: send 'Authorization: Bearer <key>'",
            kind="authentication_error",
            code="invalid_api_key",
        )
    if not any(hmac.compare_digest(key.encode(), accepted.encode()) for accepted in keys):
        raise ApiError(401, "invalid API key", kind="authentication_error", code="invalid_api_key")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes with a 413 before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_size = int(declared)
        except ValueError:
            raise ApiError(400, "invalid Content-Length header", code="invalid_request") from None
        if declared_size > limit:
            raise ApiError(
                413,
                f"the request body is {declared_size} bytes; the limit is {limit}",
                code="request_too_large",
            )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413,
                f"the request body exceeds the limit of {limit} bytes",
                code="request_too_large",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def _note(request: Request, **fields: Any) -> None:
    """Add fields to this request's access-log line."""
    request.scope.setdefault("uniroute_log", {}).update(fields)


def _answer_headers(model: str, request: Request, attempts: int) -> dict[str, str]:
    return {
        "x-uniroute-model": model,
        "x-uniroute-attempts": str(attempts),
        "x-request-id": request.scope.get("uniroute_request_id", ""),
    }


def _all_failed_error(exc: AllModelsFailedError) -> ApiError:
    every_skipped = exc.attempts and all(a.outcome == "skipped" for a in exc.attempts)
    if every_skipped:
        return ApiError(
            503,
            f"every candidate model is out of rotation after repeated failures "
            f"({exc}); retry later",
            kind="api_error",
            code="models_unavailable",
        )
    return ApiError(502, str(exc), kind="api_error", code="upstream_failed")


async def _completion(request: Request, path: str) -> Response:
    gateway = _gateway(request)
    _note(request, endpoint="chat" if path == CHAT_PATH else "completions")
    _check_client_key(gateway, request)
    body = parse_json_object(await read_body(request, gateway.config.max_body_bytes))
    choice: ModelChoice = parse_model_choice(body.get("model"), request.headers)
    text = chat_routing_text(body) if path == CHAT_PATH else completion_routing_text(body)
    stream = check_stream_flag(body)
    _note(request, stream=stream)

    if choice.routed:
        decision = await gateway.decide(text, choice.policy)
        candidates = gateway.servable_candidates(list(decision.ranking))
        _note(request, policy=choice.policy.describe(), routed_to=decision.model, lam=decision.lam)
        if decision.warning:
            _note(request, policy_warning=decision.warning)
        if not candidates:
            raise ApiError(
                503,
                "no enabled pool model with an endpoint can take this request",
                kind="api_error",
                code="models_unavailable",
            )
        max_models = gateway.config.max_models_per_request
    else:
        gateway.check_direct_model(choice.direct_model)
        candidates, max_models = [choice.direct_model], 1
        _note(request, policy="direct")

    snapshot = gateway.snapshot

    async def call(model: str) -> Any:
        target = snapshot.models[model].target
        try:
            if stream:
                return await gateway.upstream.open_stream(
                    target, path, body, request.scope["uniroute_request_id"]
                )
            return await gateway.upstream.complete(
                target, path, body, request.scope["uniroute_request_id"]
            )
        except UpstreamError as failure:
            if failure.counts_against_model:
                # The breaker is updated by the fallback loop right after this re-raise.
                gateway.metrics.upstream_errors.labels(model=model, kind=failure.kind).inc()
            raise

    try:
        result: FallbackResult = await call_with_fallback(
            candidates, call, gateway.breakers, max_models
        )
    except AllModelsFailedError as exc:
        gateway.update_breaker_gauges(a.model for a in exc.attempts)
        _note(request, attempts=[a.__dict__ for a in exc.attempts])
        raise _all_failed_error(exc) from None
    except UpstreamError as failure:
        _note(request, upstream_status=failure.status)
        return Response(
            failure.body or b"", status_code=failure.status or 502, media_type="application/json"
        )

    model = result.model
    gateway.update_breaker_gauges(a.model for a in result.attempts)
    if model != candidates[0]:
        gateway.metrics.fallbacks.inc()
    _note(request, model=model, attempts=[a.__dict__ for a in result.attempts])
    gateway.metrics.record_answer(model, snapshot.cost(model), snapshot.reference_cost())
    headers = _answer_headers(
        model, request, len([a for a in result.attempts if a.outcome != "skipped"])
    )
    if not stream:
        answer = result.value
        gateway.metrics.upstream_latency.labels(model=model).observe(answer.seconds)
        return Response(
            answer.body, status_code=200, media_type=answer.content_type, headers=headers
        )
    upstream_stream: UpstreamStream = result.value
    gateway.metrics.upstream_latency.labels(model=model).observe(upstream_stream.seconds_to_headers)
    return StreamingResponse(
        _relay(gateway, request, upstream_stream),
        media_type="text/event-stream",
        headers={**headers, "cache-control": "no-cache"},
    )


async def _relay(
    gateway: Gateway, request: Request, stream: UpstreamStream
) -> AsyncIterator[bytes]:
    """Pass an upstream SSE stream through; a failure after the first byte ends it in-band."""
    sent = 0
    try:
        async for chunk in stream.chunks():
            sent += len(chunk)
            yield chunk
    except Exception as exc:  # the status is already sent: report in-band, as OpenAI does
        reason = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        failure = UpstreamError(
            f"stream from {stream.model!r} broke off ({reason})", kind="stream_broken"
        )
        gateway.breakers.get(stream.model).record_failure()
        gateway.metrics.upstream_errors.labels(model=stream.model, kind=failure.kind).inc()
        gateway.update_breaker_gauges([stream.model])
        _note(request, stream_error=failure.reason)
        error = ApiError(502, failure.reason, kind="api_error", code="upstream_stream_broken")
        yield b"data: " + json.dumps(error.body()).encode() + b"\n\n"
    finally:
        _note(request, bytes_streamed=sent)
        with contextlib.suppress(Exception):
            await stream.aclose()


async def chat_completions(request: Request) -> Response:
    """POST /v1/chat/completions."""
    return await _completion(request, CHAT_PATH)


async def completions(request: Request) -> Response:
    """POST /v1/completions (legacy text completions)."""
    return await _completion(request, COMPLETIONS_PATH)


async def route_only(request: Request) -> Response:
    """POST /v1/route: the routing decision for a prompt, without calling any model."""
    gateway = _gateway(request)
    _note(request, endpoint="route")
    _check_client_key(gateway, request)
    body = parse_json_object(await read_body(request, gateway.config.max_body_bytes))
    choice = parse_model_choice(body.get("model", ROUTED_ALIAS), request.headers)
    if not choice.routed:
        raise ApiError(
            400,
            "'model' must be 'uniroute' or 'uniroute:<option>' for /v1/route",
            param="model",
            code="invalid_routing_policy",
        )
    text = route_request_text(body)
    decision = await gateway.decide(text, choice.policy)
    payload = decision.to_dict()
    candidates = gateway.servable_candidates(list(decision.ranking))
    payload["policy"] = choice.policy.describe()
    payload["servable_model"] = candidates[0] if candidates else None
    _note(request, policy=choice.policy.describe(), routed_to=decision.model)
    return JSONResponse(payload, headers={"x-uniroute-model": decision.model})


async def list_models(request: Request) -> Response:
    """GET /v1/models: the routing alias and every servable pool model."""
    gateway = _gateway(request)
    _check_client_key(gateway, request)
    snapshot = gateway.snapshot
    data = [
        {
            "id": ROUTED_ALIAS,
            "object": "model",
            "created": 0,
            "owned_by": "uniroute",
            "default_lambda": snapshot.default_lambda,
        }
    ]
    for name, entry in sorted(snapshot.models.items()):
        data.append(
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "uniroute-pool",
                "cost_per_query": entry.cost,
            }
        )
    return JSONResponse({"object": "list", "data": data})


async def healthz(request: Request) -> Response:
    """GET /healthz: the process is up and its event loop answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """GET /readyz: artifact loaded, registry readable, at least one servable model."""
    gateway = _gateway(request)
    checks: dict[str, Any] = {"artifact_loaded": gateway.pool.loaded}
    try:
        # A locked or vanished registry file must not hang the probe: give up after 5 s.
        with anyio.fail_after(5.0):
            await anyio.to_thread.run_sync(gateway.pool.registry_version, abandon_on_cancel=True)
        await gateway.refresh_pool()
        checks["registry_readable"] = True
    except Exception as exc:
        checks["registry_readable"] = False
        checks["registry_error"] = f"{type(exc).__name__}: {exc}"
    checks["servable_models"] = len(gateway.snapshot.models)
    ready = checks["artifact_loaded"] and checks["registry_readable"] and checks["servable_models"]
    return JSONResponse(
        {"status": "ready" if ready else "not ready", **checks}, status_code=200 if ready else 503
    )


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: Prometheus text exposition."""
    gateway = _gateway(request)
    gateway.update_breaker_gauges(gateway.breakers.states())
    return Response(gateway.metrics.render(), media_type=gateway.metrics.content_type)


async def _api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    _note(request, error=exc.message)
    return JSONResponse(
        exc.body(),
        status_code=exc.status,
        headers={"x-request-id": request.scope.get("uniroute_request_id", "")},
    )


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse(
        ApiError(exc.status_code, message, code=code).body(),
        status_code=exc.status_code,
        headers=exc.headers,
    )


class RequestContextMiddleware:
    """Gives each request an id (``x-request-id``), writes its access log, hides crashes.

    An exception that escapes a handler becomes an OpenAI-style 500 (when nothing has been
    sent yet), so no input can take the server down or leak a traceback to the client.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wrap one HTTP request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
        request_id = new_request_id(headers.get("x-request-id"))
        scope["uniroute_request_id"] = request_id
        scope["uniroute_log"] = {}
        started = time.perf_counter()
        status = {"code": 500, "sent": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
                raw = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                raw.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": raw}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            logger.error("unhandled error", exc_info=True, extra={"request_id": request_id})
            scope["uniroute_log"]["error"] = f"internal: {type(exc).__name__}"
            if not status["sent"]:
                error = ApiError(
                    500,
                    f"internal error ({type(exc).__name__}); request id {request_id}",
                    kind="api_error",
                    code="internal_error",
                )
                response = JSONResponse(error.body(), status_code=500)
                await response(scope, receive, send_wrapper)
        finally:
            log_access(
                request_id=request_id,
                method=scope["method"],
                path=scope["path"],
                status=status["code"],
                duration_ms=round((time.perf_counter() - started) * 1e3, 3),
                client=(scope.get("client") or ("", 0))[0],
                **scope["uniroute_log"],
            )
            endpoint = scope["uniroute_log"].get("endpoint")
            if endpoint:
                app_state = scope["app"].state if "app" in scope else None
                gateway = getattr(app_state, "gateway", None)
                if gateway is not None:
                    gateway.metrics.requests.labels(
                        endpoint=endpoint,
                        model=scope["uniroute_log"].get("model", "none"),
                        status=str(status["code"]),
                    ).inc()


def create_app(pool: PoolView, config: GatewayConfig | None = None) -> Starlette:
    """The gateway application over a loaded pool view (router + registry)."""
    from uniroute.gateway.admin import admin_routes

    config = config or GatewayConfig()
    gateway = Gateway(pool, config, GatewayMetrics())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway.upstream = UpstreamClient(config)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(gateway.poll_registry)
            for _ in range(config.routing_threads):
                tasks.start_soon(gateway.batcher.run_worker)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
                await gateway.upstream.aclose()
                await anyio.to_thread.run_sync(gateway.shutdown_jobs)

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/route", route_only, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *admin_routes(),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={ApiError: _api_error_handler, HTTPException: _http_error_handler},
        lifespan=lifespan,
    )
    app.add_middleware(RequestContextMiddleware)
    app.state.gateway = gateway
    return app
