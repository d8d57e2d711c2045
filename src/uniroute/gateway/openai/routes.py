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
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from uniroute.deployment import Decision, Snapshot
from uniroute.gateway.access_log import GATEWAY_LOGGER, note, request_id_of
from uniroute.gateway.body import json_body, validate
from uniroute.gateway.dependencies import Gateway, check_client_key
from uniroute.gateway.errors import ApiError
from uniroute.gateway.fallback import AllModelsFailedError, UpstreamError, call_with_fallback
from uniroute.gateway.keys import admit, metered, settle_after, settle_stream, tap_usage
from uniroute.gateway.openai.calls import (
    all_failed_error,
    answer_headers,
    decision_headers,
    error_of,
    model_caller,
)
from uniroute.gateway.openai.conversation import Turn, conversation_text, session_turn
from uniroute.gateway.openai.policy import ROUTED_ALIAS, parse_model_choice
from uniroute.gateway.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    RouteRequest,
)
from uniroute.gateway.openai.requirements import Requirements
from uniroute.gateway.openai.verify import answer_verified, refuse_stream
from uniroute.gateway.upstream import UpstreamAnswer, UpstreamStream

CHAT_PATH = "/chat/completions"
COMPLETIONS_PATH = "/completions"

logger = logging.getLogger(GATEWAY_LOGGER)


async def _completion(
    request: Request, path: str, kind: type[ChatCompletionRequest | CompletionRequest]
) -> Response:
    note(request, endpoint="chat" if path == CHAT_PATH else "completions")
    gateway = await check_client_key(request)
    body = await json_body(request, gateway.config)
    parsed = validate(kind, body)
    choice = parse_model_choice(parsed.model, request.headers)
    note(request, stream=parsed.stream)
    verify = choice.policy is not None and choice.policy.verify
    if verify and parsed.stream:
        raise refuse_stream()
    # One snapshot for the whole request: decision, candidates, endpoints and costs agree.
    snapshot = gateway.router.snapshot
    required = Requirements.of(parsed)  # tools, images, JSON mode, context: who can answer
    verified = decision = turn = None
    text = ""  # what a routed request is routed on (a chat: its last user turn after the others)
    if choice.policy is not None:
        text = conversation_text(parsed, gateway.config.routing_context_chars)
        if verify:
            verified = await gateway.decide_verified(text, choice.policy, snapshot, required)
            decision = verified.decision
            candidates = decision.servable_ranking
        else:
            decision = await gateway.decide(text, choice.policy, snapshot, required)
            # A conversation stays on its model unless this turn's pick is clearly better.
            turn = await session_turn(gateway, request.headers, parsed, decision)
            candidates = turn.choice.ranking
            note(request, session=turn.choice.rule)
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
        required.check_model(choice.direct_model, snapshot)
        candidates, max_models = [choice.direct_model], 1
        note(request, policy="direct")

    # A virtual key: only the models it may use, within its limits (its cost reserved).
    direct = choice.policy is None
    candidates, verified, body = await admit(
        request, snapshot, body, candidates, verified, direct=direct
    )
    call = model_caller(gateway, snapshot, path, body, parsed.stream, request_id_of(request))
    call = metered(request, call)  # each answer's cost counted against the key
    if verified is not None:
        try:
            response = await answer_verified(gateway, request, text, verified, snapshot, call)
            answered = response.headers["x-uniroute-model"]
            explained = _explained(gateway, request, verified.decision, answered, snapshot, None)
            response.headers.update(explained)
            return response
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
        gateway.metrics.count_fallback()
    note(request, model=model, attempts=[a.__dict__ for a in result.attempts])
    gateway.metrics.record_answer(
        model, snapshot.pool.cost(model), gateway.reference_cost(snapshot)
    )
    headers = answer_headers(
        model, request, len([a for a in result.attempts if a.outcome != "skipped"])
    )
    if decision is not None:
        headers.update(_explained(gateway, request, decision, model, snapshot, turn))
        if turn is not None and turn.key is not None:
            gateway.sessions.record_soon(turn.key, model, error_of(decision, model))
    answer = result.value
    if isinstance(answer, UpstreamAnswer):
        gateway.metrics.observe_upstream_latency(model, answer.seconds)
        gateway.latency.observe(model, answer.seconds, answer.seconds)
        return Response(
            answer.body, status_code=200, media_type=answer.content_type, headers=headers
        )
    gateway.metrics.observe_upstream_latency(model, answer.seconds_to_headers)
    return StreamingResponse(
        _relay(gateway, request, answer),
        media_type="text/event-stream",
        headers={**headers, "cache-control": "no-cache"},
    )


def _explained(
    gateway: Gateway,
    request: Request,
    decision: Decision,
    model: str,
    snapshot: Snapshot,
    turn: Turn | None,
) -> dict[str, str]:
    """The decision headers of a routed answer, also written to its access-log line."""
    changed_by = ["capability"] if decision.capability_rule_changed_pick else []
    if turn is not None and turn.choice.changed_pick:
        changed_by.append("session")
    rule = None if turn is None or turn.key is None else turn.choice.rule
    headers = decision_headers(
        decision, model, snapshot, gateway.reference_cost(snapshot), changed_by, rule
    )
    note(
        request,
        estimated_error=error_of(decision, model),
        cluster=decision.cluster,
        evidence=headers.get("x-uniroute-evidence"),
        estimated_saving=headers.get("x-uniroute-saving"),
        changed_by=changed_by,
    )
    return headers


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
    relayed_from = time.perf_counter()
    try:
        async for chunk in tap_usage(request, stream.chunks()):
            sent += len(chunk)
            yield chunk
        breaker.record_success()
        settled = True
        # Only a stream that ended well tells how long the model takes to answer.
        total = stream.seconds_to_headers + time.perf_counter() - relayed_from
        gateway.latency.observe(stream.model, stream.seconds_to_headers, total)
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
        await settle_stream(request)  # the key's spend, from the stream's usage


async def chat_completions(request: Request) -> Response:
    """POST /v1/chat/completions."""
    return await settle_after(request, _completion(request, CHAT_PATH, ChatCompletionRequest))


async def completions(request: Request) -> Response:
    """POST /v1/completions (legacy text completions)."""
    return await settle_after(request, _completion(request, COMPLETIONS_PATH, CompletionRequest))


async def route(request: Request) -> Response:
    """POST /v1/route: the routing decision for a prompt, without calling any model."""
    note(request, endpoint="route")
    gateway = await check_client_key(request)
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
    verified = turn = None
    text = conversation_text(parsed, gateway.config.routing_context_chars)
    required = Requirements.of(parsed)
    if policy.verify:
        verified = await gateway.decide_verified(text, policy, snapshot, required)
        decision = verified.decision
        servable = decision.servable_ranking
    else:
        decision = await gateway.decide(text, policy, snapshot, required)
        # What the session rule would do with this turn (nothing is recorded for a decision).
        turn = await session_turn(gateway, request.headers, parsed, decision)
        servable = turn.choice.ranking
    payload: dict[str, Any] = decision.to_dict()
    payload["policy"] = policy.describe()
    payload["routing_text"] = text
    payload["servable_model"] = servable[0] if servable else None
    payload.update(required=required.describe(), **decision.capability_dict())
    if turn is not None:
        payload["session"] = {"rule": turn.choice.rule, "previous": turn.choice.previous}
    if verified is not None:
        payload["verify_plan"] = None if verified.plan is None else verified.plan.to_dict()
        if verified.plan is None:
            payload["verify_unavailable"] = verified.unavailable
    note(request, policy=policy.describe(), routed_to=decision.model)
    return JSONResponse(payload, headers={"x-uniroute-model": decision.model})


async def list_models(request: Request) -> Response:
    """GET /v1/models: the routing alias and every servable pool model."""
    gateway = await check_client_key(request)
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
