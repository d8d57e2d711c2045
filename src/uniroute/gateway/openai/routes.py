"""Handlers of the OpenAI-compatible API under ``/v1``.

``POST /v1/chat/completions`` and ``POST /v1/completions`` are answered by the model the router
picks (or the pool model named in ``model``), trying the next servable model of the decision's
ranking when one fails; ``POST /v1/route`` returns the decision only; ``GET /v1/models`` lists
the routing alias and the servable pool models.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from uniroute.gateway.access_log import GATEWAY_LOGGER, note, request_id_of
from uniroute.gateway.body import json_body, validate
from uniroute.gateway.dependencies import Gateway, check_client_key
from uniroute.gateway.errors import ApiError
from uniroute.gateway.fallback import AllModelsFailedError, UpstreamError, call_with_fallback
from uniroute.gateway.openai.calls import all_failed_error, answer_headers, model_caller
from uniroute.gateway.openai.policy import ROUTED_ALIAS, parse_model_choice
from uniroute.gateway.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    RouteRequest,
)
from uniroute.gateway.openai.verify import answer_verified, refuse_stream
from uniroute.gateway.upstream import UpstreamAnswer, UpstreamStream

CHAT_PATH = "/chat/completions"
COMPLETIONS_PATH = "/completions"

logger = logging.getLogger(GATEWAY_LOGGER)


async def _completion(
    request: Request, path: str, kind: type[ChatCompletionRequest | CompletionRequest]
) -> Response:
    note(request, endpoint="chat" if path == CHAT_PATH else "completions")
    gateway = check_client_key(request)
    body = await json_body(request, gateway.config)
    parsed = validate(kind, body)
    choice = parse_model_choice(parsed.model, request.headers)
    note(request, stream=parsed.stream)
    verify = choice.policy is not None and choice.policy.verify
    if verify and parsed.stream:
        raise refuse_stream()
    # One snapshot for the whole request: decision, candidates, endpoints and costs agree.
    snapshot = gateway.router.snapshot
    verified = None
    if choice.policy is not None:
        if verify:
            verified = await gateway.decide_verified(parsed.routing_text(), choice.policy, snapshot)
            decision = verified.decision
        else:
            decision = await gateway.decide(parsed.routing_text(), choice.policy, snapshot)
        candidates = decision.servable_ranking
        note(request, policy=choice.policy.describe(), routed_to=decision.model, lam=decision.lam)
        if decision.warning:
            note(request, policy_warning=decision.warning)
        if not candidates:
            raise ApiError(
                503,
                "no enabled pool model with an endpoint can take this request",
                code="models_unavailable",
            )
        max_models = gateway.config.max_models_per_request
    else:
        assert choice.direct_model is not None
        gateway.check_direct_model(choice.direct_model, snapshot)
        candidates, max_models = [choice.direct_model], 1
        note(request, policy="direct")

    call = model_caller(gateway, snapshot, path, body, parsed.stream, request_id_of(request))
    if verified is not None:
        try:
            return await answer_verified(
                gateway, request, parsed.routing_text(), verified, snapshot, call
            )
        except UpstreamError as failure:  # the upstream rejected the request itself
            note(request, upstream_status=failure.status)
            return Response(
                failure.body or b"", failure.status or 502, media_type="application/json"
            )
    try:
        result = await call_with_fallback(
            candidates, call, gateway.breakers, max_models, success_on_return=not parsed.stream
        )
    except AllModelsFailedError as exc:
        gateway.update_breaker_gauges(a.model for a in exc.attempts)
        note(request, attempts=[a.__dict__ for a in exc.attempts])
        raise all_failed_error(exc) from None
    except UpstreamError as failure:
        note(request, upstream_status=failure.status)
        return Response(
            failure.body or b"", status_code=failure.status or 502, media_type="application/json"
        )

    model = result.model
    gateway.update_breaker_gauges(a.model for a in result.attempts)
    if model != candidates[0]:
        gateway.metrics.fallbacks.inc()
    note(request, model=model, attempts=[a.__dict__ for a in result.attempts])
    gateway.metrics.record_answer(
        model, snapshot.pool.cost(model), gateway.reference_cost(snapshot)
    )
    headers = answer_headers(
        model, request, len([a for a in result.attempts if a.outcome != "skipped"])
    )
    answer = result.value
    if isinstance(answer, UpstreamAnswer):
        gateway.metrics.observe_upstream_latency(model, answer.seconds)
        return Response(
            answer.body, status_code=200, media_type=answer.content_type, headers=headers
        )
    gateway.metrics.observe_upstream_latency(model, answer.seconds_to_headers)
    return StreamingResponse(
        _relay(gateway, request, answer),
        media_type="text/event-stream",
        headers={**headers, "cache-control": "no-cache"},
    )


async def _relay(
    gateway: Gateway, request: Request, stream: UpstreamStream
) -> AsyncIterator[bytes]:
    """Pass an upstream SSE stream through and settle the model's breaker at its end.

    A stream counts as a success only once it ended with ``data: [DONE]``; a failure after the
    first byte ends it with an in-band error event (as OpenAI does) and counts against the
    model, so a model whose streams keep breaking is taken out of rotation. A client that goes
    away leaves no verdict on the model.
    """
    breaker = gateway.breakers.get(stream.model)
    sent = 0
    settled = False
    try:
        async for chunk in stream.chunks():
            sent += len(chunk)
            yield chunk
        breaker.record_success()
        settled = True
    except Exception as exc:  # the status is already sent: report in-band
        if isinstance(exc, UpstreamError):
            failure = exc
        else:
            failure = UpstreamError(
                f"stream from {stream.model!r} broke off ({type(exc).__name__})",
                kind="stream_broken",
            )
        breaker.record_failure()
        settled = True
        gateway.metrics.count_upstream_error(stream.model, failure.kind)
        note(request, stream_error=failure.reason)
        error = ApiError(502, failure.reason, code="upstream_stream_broken")
        yield b"data: " + json.dumps(error.body()).encode() + b"\n\n"
    finally:
        if not settled:
            breaker.release()
        gateway.update_breaker_gauges([stream.model])
        note(request, bytes_streamed=sent)
        with contextlib.suppress(Exception):
            await stream.aclose()


async def chat_completions(request: Request) -> Response:
    """POST /v1/chat/completions."""
    return await _completion(request, CHAT_PATH, ChatCompletionRequest)


async def completions(request: Request) -> Response:
    """POST /v1/completions (legacy text completions)."""
    return await _completion(request, COMPLETIONS_PATH, CompletionRequest)


async def route(request: Request) -> Response:
    """POST /v1/route: the routing decision for a prompt, without calling any model."""
    note(request, endpoint="route")
    gateway = check_client_key(request)
    parsed = validate(RouteRequest, await json_body(request, gateway.config))
    policy = parse_model_choice(parsed.model, request.headers).policy
    if policy is None:
        raise ApiError(
            400,
            "'model' must be 'uniroute' or 'uniroute:<option>' for /v1/route",
            param="model",
            code="invalid_routing_policy",
        )
    snapshot = gateway.router.snapshot
    verified = None
    if policy.verify:
        verified = await gateway.decide_verified(parsed.routing_text(), policy, snapshot)
        decision = verified.decision
    else:
        decision = await gateway.decide(parsed.routing_text(), policy, snapshot)
    payload: dict[str, Any] = decision.to_dict()
    servable = decision.servable_ranking
    payload["policy"] = policy.describe()
    payload["servable_model"] = servable[0] if servable else None
    if verified is not None:
        payload["verify_plan"] = None if verified.plan is None else verified.plan.to_dict()
        if verified.plan is None:
            payload["verify_unavailable"] = verified.unavailable
    note(request, policy=policy.describe(), routed_to=decision.model)
    return JSONResponse(payload, headers={"x-uniroute-model": decision.model})


async def list_models(request: Request) -> Response:
    """GET /v1/models: the routing alias and every servable pool model."""
    gateway = check_client_key(request)
    snapshot = gateway.router.snapshot
    data: list[dict[str, Any]] = [
        {
            "id": ROUTED_ALIAS,
            "object": "model",
            "created": 0,
            "owned_by": "uniroute",
            "default_lambda": snapshot.default_lambda,
        }
    ]
    for name in sorted(snapshot.pool.servable):
        data.append(
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "uniroute-pool",
                "cost_per_query": snapshot.pool.cost(name),
            }
        )
    return JSONResponse({"object": "list", "data": data})


def direct_endpoints() -> dict[tuple[str, str], Callable[[Request], Awaitable[Response]]]:
    """The completion endpoints, dispatched without the route table (``gateway.dispatch``)."""
    return {
        ("POST", "/v1/chat/completions"): chat_completions,
        ("POST", "/v1/completions"): completions,
    }


def openai_routes() -> list[Route]:
    """The /v1 routes."""
    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/route", route, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
    ]
